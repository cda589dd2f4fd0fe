"""Multi-LoRA: PEFT adapters made on transformers reference models, served together in one batch."""

import json
import shutil

import pytest
import torch

from swarm.runtime import CheckpointError, Engine, EngineConfig, SamplingParams
from tests.runtime.hf_models import VOCAB, build

transformers = pytest.importorskip("transformers", reason="transformers builds the reference models (dev extra)")
peft = pytest.importorskip("peft", reason="peft writes the adapters (dev extra)")

GREEDY = SamplingParams(max_tokens=10, temperature=0.0, ignore_eos=True)
ADAPTERS = {  # name -> LoraConfig kwargs
    "qv": dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    "all": dict(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                     "up_proj", "down_proj"], use_rslora=True),
    "mlp": dict(r=2, lora_alpha=4, target_modules=["down_proj", "up_proj"],
                alpha_pattern={"down_proj": 1.0}),
}


def _make_adapter(base_folder, out, seed, **lora_kwargs):
    """Save a PEFT adapter with random A and B, and the same model with it merged in."""
    model = transformers.AutoModelForCausalLM.from_pretrained(base_folder).eval()
    pm = peft.get_peft_model(model, peft.LoraConfig(**lora_kwargs))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    pm.save_pretrained(out / "adapter")
    merged = pm.merge_and_unload()
    merged.save_pretrained(out / "merged")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(base_folder / f, out / "merged" / f)
    return out / "adapter", out / "merged"


@pytest.fixture(scope="module", params=["llama", "qwen2_moe"])
def family(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    build(root / "base", request.param)
    made = {name: _make_adapter(root / "base", root / name, i, **kw) for i, (name, kw) in enumerate(ADAPTERS.items())}
    return root / "base", made


def _ids(n, seed):
    return torch.randint(0, VOCAB, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def _engine(base, made, **kw):
    engine = Engine.from_pretrained(base, config=EngineConfig(**kw))
    for name, (adapter, _) in made.items():
        engine.add_adapter(name, adapter)
    return engine


def test_adapter_logits_match_the_merged_model(family):
    base, made = family
    engine = _engine(base, made)
    ids = _ids(21, 1)
    for name, (_, merged) in made.items():
        want = Engine.from_pretrained(merged).logits(ids)
        err = (engine.logits(ids, adapter=name) - want).abs().max().item()
        assert err <= 1e-4, f"{name}: max |logit diff| {err:.2e}"
        assert (engine.logits(ids) - want).abs().max() > 1e-2  # the adapter really changes the model
    assert (engine.logits(ids) - Engine.from_pretrained(base).logits(ids)).abs().max() <= 1e-5


def assert_same_greedy(got: list[int], want: list[int], ref: Engine, prompt: list[int], tol: float = 1e-4) -> None:
    """Greedy tokens equal the reference's, except that where the reference's best two logits lie within
    `tol` (the logit tolerance: an adapter applied in the batch and one merged into the weights round
    differently) either may come first; the sequences part there, so the comparison stops."""
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        if a != b:
            logits = ref.logits(prompt + want[:i])[-1]
            assert logits[a] >= logits.max() - tol, f"token {i}: {a} is not within {tol} of the best ({b})"
            return


def test_mixed_batch_matches_merged_models_alone(family, monkeypatch):
    base, made = family
    engine = _engine(base, made)
    names = [None, "qv", "all", "mlp", "qv", None, "all"]
    prompts = [_ids(9 + 3 * i, 10 + i) for i in range(len(names))]
    first = {}
    real = Engine._postprocess

    def spy(self, batch, logits):  # each request's logits the first time it samples
        for s, row in zip([s for s in batch if s.samples], logits, strict=True):
            first.setdefault(id(s.request.sampler), row.clone())
        return real(self, batch, logits)

    monkeypatch.setattr(Engine, "_postprocess", spy)
    handles = [engine.submit(p, GREEDY, adapter=a) for p, a in zip(prompts, names, strict=True)]
    while not all(h.done for h in handles):
        engine.step()
    monkeypatch.setattr(Engine, "_postprocess", real)
    assert engine.stats()["mean_batch_seqs"] > 3  # they really shared steps
    for p, name, h in zip(prompts, names, handles, strict=True):
        ref = Engine.from_pretrained(made[name][1] if name else base)
        assert_same_greedy(h.result().token_ids, ref.generate([p], GREEDY)[0].token_ids, ref, p)
        err = (first[id(h._request.sampler)] - ref.logits(p)[-1]).abs().max().item()
        assert err <= 1e-4, f"{name}: first-token logits differ by {err:.2e}"


def test_adapters_beyond_the_resident_count_load_on_demand(family):
    base, made = family
    engine = _engine(base, made, max_adapters=1)
    names = ["qv", "all", "mlp", None, "qv"]
    prompts = [_ids(8 + i, 30 + i) for i in range(len(names))]
    outs = engine.generate(prompts, GREEDY, adapter=names)
    for p, name, out in zip(prompts, names, outs, strict=True):
        ref = Engine.from_pretrained(made[name][1] if name else base)
        assert out.token_ids == ref.generate([p], GREEDY)[0].token_ids


def test_prefix_cache_never_shares_kv_across_adapters(family):
    base, made = family
    engine = _engine(base, made)
    p = _ids(40, 5)
    assert engine.generate([p], GREEDY)[0].cached_tokens == 0
    assert engine.generate([p], GREEDY, adapter="qv")[0].cached_tokens == 0
    assert engine.generate([p], GREEDY, adapter="qv")[0].cached_tokens > 0
    assert engine.generate([p], GREEDY, adapter="all")[0].cached_tokens == 0
    engine.remove_adapter("qv")
    assert "qv" not in engine.cache.roots
    with pytest.raises(ValueError, match="unknown adapter 'qv'"):
        engine.submit(p, GREEDY, adapter="qv")


def _edit_adapter(src, dst, edit):
    shutil.copytree(src, dst)
    from safetensors.torch import load_file, save_file

    tensors = load_file(dst / "adapter_model.safetensors")
    cfg = json.loads((dst / "adapter_config.json").read_text())
    edit(tensors, cfg)
    save_file(tensors, dst / "adapter_model.safetensors")
    (dst / "adapter_config.json").write_text(json.dumps(cfg))
    return dst


def test_bad_adapters_get_clear_errors(family, tmp_path):
    base, made = family
    engine = Engine.from_pretrained(base)
    good = made["qv"][0]

    def mis_shape(t, c):
        k = next(k for k in t if "lora_B" in k)
        t[k] = torch.zeros(t[k].shape[0] + 1, t[k].shape[1])

    with pytest.raises(CheckpointError, match="rank/shape mismatch"):
        engine.add_adapter("x", _edit_adapter(good, tmp_path / "shape", mis_shape))

    def lm_head(t, c):
        t["base_model.model.model.layers.0.lm_head.lora_A.weight"] = torch.zeros(4, 64)
        t["base_model.model.model.layers.0.lm_head.lora_B.weight"] = torch.zeros(VOCAB, 4)

    with pytest.raises(CheckpointError, match="unknown LoRA target module 'lm_head'"):
        engine.add_adapter("x", _edit_adapter(good, tmp_path / "target", lm_head))

    def other_model(t, c):
        k = next(k for k in t if "lora_A" in k)
        t[k.replace("layers.0.", "layers.7.")] = t.pop(k)

    with pytest.raises(CheckpointError, match="another base model"):
        engine.add_adapter("x", _edit_adapter(good, tmp_path / "layers", other_model))
    with pytest.raises(CheckpointError, match="does not exist"):
        engine.add_adapter("x", tmp_path / "missing")
    small = Engine.from_pretrained(base, config=EngineConfig(max_lora_rank=4))
    with pytest.raises(CheckpointError, match="max_lora_rank"):
        small.add_adapter("all", made["all"][0])
    engine.add_adapter("qv", good)
    with pytest.raises(ValueError, match="already loaded"):
        engine.add_adapter("qv", good)


def test_an_adapter_in_use_cannot_be_removed(family):
    base, made = family
    engine = _engine(base, made)
    h = engine.submit(_ids(10, 3), GREEDY, adapter="all")
    engine.step()
    with pytest.raises(ValueError, match="used by 1 running"):
        engine.remove_adapter("all")
    h.result()
    engine.remove_adapter("all")


def test_cli_generates_with_an_adapter(family, capsys):
    from swarm.cli import main

    base, made = family
    assert main(["generate", "--model", str(base), "--adapter", str(made["qv"][0]), "--max-tokens", "4", "Hi"]) == 0
    assert "4 new tokens" in capsys.readouterr().err
