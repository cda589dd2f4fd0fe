"""An engine on an int8 KV cache (EngineConfig(kv_dtype="int8")): about 3.8x the tokens of float32 in the same
bytes, the fused decode blocks on it equal the modules bit for bit, and on the bundled model it decodes the
bundled scenarios' first ticks to the same greedy tokens as the float32 cache, with a measured logit error."""

import pytest
import torch

from swarm import EngineModel, Simulation
from swarm.kernels.native import build
from swarm.runtime import Engine, EngineConfig, SamplingParams
from swarm.runtime.block_pool import KVPool
from swarm.runtime.random_model import tiny_config, write_random_model
from tests.runtime.test_fused import _decode_logits

GREEDY = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
needs_native = pytest.mark.skipif(not build.available(), reason="the native CPU kernels cannot be built here")


def test_kv_dtype_is_validated_and_sizes_the_pool(tmp_path):
    with pytest.raises(ValueError, match="kv_dtype 'int4'.*int8"):
        EngineConfig(kv_dtype="int4")
    folder = write_random_model(tmp_path, tiny_config("qwen3_moe", vocab_size=384, hidden_size=64))
    with pytest.raises(ValueError, match="model's dtype"):
        Engine.from_pretrained(folder, config=EngineConfig(kv_dtype="bfloat16"))
    budget = 2**20
    f32 = Engine.from_pretrained(folder, config=EngineConfig(kv_cache_bytes=budget))
    i8 = Engine.from_pretrained(folder, config=EngineConfig(kv_cache_bytes=budget, kv_dtype="int8"))
    assert f32.stats()["kv_dtype"] == "float32" and i8.stats()["kv_dtype"] == "int8" and i8.pool.quantized
    cfg = f32.config
    ratio = KVPool.bytes_per_token(cfg.num_layers, cfg.num_kv_heads, cfg.head_dim, "float32") / \
        KVPool.bytes_per_token(cfg.num_layers, cfg.num_kv_heads, cfg.head_dim, "int8")
    d = cfg.head_dim
    assert ratio == pytest.approx(4 * d / (d + 4))  # d floats against d bytes + a float scale: 3.2 at d = 16
    assert i8.pool.num_blocks == pytest.approx(f32.pool.num_blocks * ratio, rel=0.05)


@needs_native
@pytest.mark.parametrize("family,changes", [("qwen3_moe", {}), ("mixtral", {"sliding_window": 7}),
                                            ("qwen2_moe", {"shared_expert_intermediate_size": 96})])
def test_fused_decode_on_int8_equals_the_modules(tmp_path, monkeypatch, family, changes):
    cfg = tiny_config(family, vocab_size=384, hidden_size=64, num_heads=4, num_kv_heads=2, num_experts=4)
    folder = write_random_model(tmp_path, {**cfg, **changes})
    plain = Engine.from_pretrained(folder, config=EngineConfig(fused_decode=False, kv_dtype="int8"))
    fused = Engine.from_pretrained(folder, config=EngineConfig(kv_dtype="int8"))
    assert plain.fused is None and fused.fused is not None
    tokens, logits, calls = _decode_logits(fused, monkeypatch)
    ref_tokens, ref_logits, ref_calls = _decode_logits(plain, monkeypatch)
    assert not any(ref_calls.values())
    steps, layers = len(logits), fused.config.num_layers  # a shared expert's layers run the MoE modules
    assert calls == ({"attention": 0, "moe": 0, "whole": steps} if fused.fused.whole is not None
                     else {"attention": steps * layers, "moe": 0, "whole": 0})
    assert tokens == ref_tokens and len(logits) == len(ref_logits) > 0
    for a, b in zip(logits, ref_logits, strict=True):
        assert torch.equal(a, b)


class Recording(EngineModel):
    """The engine model at temperature 0, keeping every turn's text and every step's logits."""

    def __init__(self, engine):
        super().__init__(engine, temperature=0.0)
        self.texts, self.logits = [], []
        real = engine._postprocess

        def post(batch, logits):
            self.logits.append(logits.clone())
            return real(batch, logits)

        engine._postprocess = post  # this engine only: the two runs below share the process

    def decide(self, turns):
        out = super().decide(turns)
        self.texts += [getattr(v, "text", repr(v)) for v in out]
        return out


# Measured on both scenarios' first two ticks (logits span about +-20): the largest |logit int8 - logit float32|
# of a step has median 0.023 (support_desk, 39 steps) and 0.038 (village, 23 steps up to its near tie); single
# rows reach 1.45 and 1.65 (village: the first decode token after a 225-token prompt, on a token 15 below the
# row's top; torch's int8 kernel gives the same, so it is the format's error, not a kernel's). The bounds leave
# margin over those figures.
STEP_MEDIAN_BOUND, MAX_BOUND = 0.1, 2.5


@pytest.fixture(scope="module")
def tiny_pair():
    return (Engine.from_pretrained("swarm-tiny"),
            Engine.from_pretrained("swarm-tiny", config=EngineConfig(kv_dtype="int8")))


@pytest.mark.parametrize("scenario", ["village", "support_desk"])
def test_bundled_model_decodes_the_same_turns_on_int8(tiny_pair, scenario):
    """Greedy turns on int8 equal float32's, except after a step where float32's own choice and int8's lie
    closer than the logit error (measured: support_desk's two ticks all equal; village's first 7 turns, then
    two candidates 0.0015 apart in float32 go the other way)."""
    cfg = tiny_pair[0].config  # head dim 64: 3.76x the tokens per byte
    assert KVPool.bytes_per_token(cfg.num_layers, cfg.num_kv_heads, cfg.head_dim, "float32") >= \
        3.5 * KVPool.bytes_per_token(cfg.num_layers, cfg.num_kv_heads, cfg.head_dim, "int8")
    runs = []
    for engine in tiny_pair:
        model = Recording(engine)
        sim = Simulation.from_scenario(scenario, model=model, seed=0)
        events = [(e.kind, e.actor, e.text) for _ in range(2) for e in sim.tick()]
        runs.append((model, events))
        del engine._postprocess
    (f32, f32_events), (i8, i8_events) = runs
    assert len(f32.texts) > 0
    errs = []
    for a, b in zip(f32.logits, i8.logits, strict=False):
        if a.shape != b.shape:
            break
        errs.append((a - b).abs().max().item())
        flipped = (a.argmax(1) != b.argmax(1)).nonzero().flatten()
        if len(flipped):  # the turns part here: float32 rated int8's pick nearly as high as its own
            r = flipped[0]
            assert a[r].max() - a[r, b[r].argmax()] < 2 * errs[-1], "greedy tokens flipped at no near tie"
            break
    else:
        assert i8.texts == f32.texts and i8_events == f32_events
    print(f"{scenario}: {len(errs)} steps equal, max |logit int8 - float32| per step: median "
          f"{sorted(errs)[len(errs) // 2]:.4f}, max {max(errs):.4f}")
    assert sorted(errs)[len(errs) // 2] < STEP_MEDIAN_BOUND and max(errs) < MAX_BOUND
