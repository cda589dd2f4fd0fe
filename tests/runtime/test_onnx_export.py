"""ONNX export: onnxruntime (CPU) runs the exported decoder and reproduces the engine's logits and greedy tokens."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from swarm.cli import main
from swarm.kernels.moe import expert_ffn
from swarm.runtime import ConfigError, Engine, SamplingParams
from swarm.runtime.loader import load_model
from swarm.runtime.model import MoE
from swarm.runtime.onnx_decoder import DenseMoE, dense_experts
from swarm.runtime.onnx_export import check_exportable, export_model, export_onnx, gather_external_data, input_names
from swarm.runtime.quant import quantize_blocks
from swarm.runtime.random_model import tiny_config, write_random_model
from tests.runtime.adapters import random_adapter

TOL = 1e-4
VOCAB = 320


def session(folder) -> ort.InferenceSession:
    s = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    assert s.get_providers() == ["CPUExecutionProvider"]  # the provider it really got
    return s


def run_batch(s: ort.InferenceSession, prompts: list[list[int]], steps, pick=None):
    """Left-pad `prompts` into one batch, prefill with a zero-length past, then decode one token per row per step.

    `steps` is a list of tokens to feed per row (teacher forcing) or a number of greedy steps (`pick`: argmax).
    Returns, per row, the logits of its real tokens [n, V] and the tokens fed after the prompt.
    """
    G, d = s.get_inputs()[3].shape[1], s.get_inputs()[3].shape[3]
    B, width = len(prompts), max(map(len, prompts))
    ids = np.array([[0] * (width - len(p)) + p for p in prompts])  # [B, S]
    mask = (np.arange(width)[None] >= width - np.array([len(p) for p in prompts])[:, None]).astype(np.int64)
    pos = np.maximum(mask.cumsum(1) - 1, 0)
    past = {n.name: np.zeros((B, G, 0, d), np.float32) for n in s.get_inputs()[3:]}
    assert all(v.shape[2] == 0 for v in past.values())
    rows, fed = [[] for _ in prompts], [[] for _ in prompts]
    n_steps = steps if isinstance(steps, int) else len(steps[0])
    for step in range(n_steps + 1):
        logits, *present = s.run(None, {"input_ids": ids, "attention_mask": mask, "position_ids": pos, **past})
        assert present[0].shape[2] == mask.shape[1]  # present = past + new
        for b in range(B):
            rows[b].append(logits[b][mask[b, -ids.shape[1]:] == 1])
        if step == n_steps:
            break
        nxt = logits[:, -1].argmax(-1) if isinstance(steps, int) else np.array([s_[step] for s_ in steps])
        for b in range(B):
            fed[b].append(int(nxt[b]))
        past = dict(zip(past, present, strict=True))
        ids, pos = nxt[:, None], pos[:, -1:] + 1
        mask = np.concatenate([mask, np.ones((B, 1), np.int64)], axis=1)
    return [np.concatenate(r) for r in rows], fed


def assert_matches_engine(engine: Engine, folder, prompts, continuations):
    rows, _ = run_batch(session(folder), prompts, continuations)
    for p, c, got in zip(prompts, continuations, rows, strict=True):
        want = engine.logits(p + c).numpy()
        err = np.abs(got - want).max()
        assert err <= TOL, f"max |logit diff| {err:.2e}"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A Qwen3-MoE model (per-head q/k norm, renormalised top-k), exported; and its engine."""
    folder = write_random_model(tmp_path_factory.mktemp("m"), tiny_config(vocab_size=VOCAB))
    out = tmp_path_factory.mktemp("onnx")
    done = export_onnx(folder, out)
    assert done.provider == "CPUExecutionProvider" and done.max_abs_error <= TOL
    return Engine.from_pretrained(folder), out


def test_writes_the_optimum_and_genai_layout(tiny):
    engine, out = tiny
    cfg = engine.config
    assert {"model.onnx", "genai_config.json", "config.json", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in out.iterdir()}
    s = session(out)
    ins = {i.name: i for i in s.get_inputs()}
    assert list(ins)[:3] == ["input_ids", "attention_mask", "position_ids"]
    assert ins["past_key_values.1.value"].shape == ["batch_size", cfg.num_kv_heads, "past_sequence_length",
                                                    cfg.head_dim]
    assert ins["input_ids"].type == "tensor(int64)" and ins["past_key_values.0.key"].type == "tensor(float)"
    outs = [o.name for o in s.get_outputs()]
    assert outs == ["logits"] + [f"present.{i}.{kv}" for i in range(cfg.num_layers) for kv in ("key", "value")]
    genai = json.loads((out / "genai_config.json").read_text())["model"]
    assert genai["decoder"]["num_key_value_heads"] == cfg.num_kv_heads and genai["vocab_size"] == VOCAB
    assert genai["decoder"]["inputs"]["past_key_names"] % 3 == "past_key_values.3.key"
    assert genai["eos_token_id"] == sorted(engine.eos_token_ids)  # what the engine stops on


def test_batched_padded_prefill_and_decode_match_the_engine(tiny):
    engine, out = tiny
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(5, VOCAB, (n,), generator=g).tolist() for n in (9, 4, 6)]
    continuations = [torch.randint(5, VOCAB, (5,), generator=g).tolist() for _ in prompts]
    assert_matches_engine(engine, out, prompts, continuations)


def test_greedy_tokens_match_the_engine(tiny):
    engine, out = tiny
    prompts = [engine.tokenizer.encode(t) for t in ("The baker sells bread at the", "Once upon a time")]
    _, fed = run_batch(session(out), prompts, 10)
    want = engine.generate(prompts, SamplingParams(max_tokens=10, temperature=0.0, ignore_eos=True))
    assert fed == [c.token_ids for c in want]


FAMILIES = {  # family -> config changes that exercise its quirks
    "llama": dict(num_key_value_heads=4, attention_bias=True,
                  rope_scaling={"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 16}),
    "qwen2": dict(use_sliding_window=True, sliding_window=4, max_window_layers=1),
    "qwen3": dict(rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 512}),
    "mixtral": dict(sliding_window=4),
    "qwen2_moe": dict(shared_expert_intermediate_size=48, norm_topk_prob=False, mlp_only_layers=[1]),
    "olmoe": dict(clip_qkv=0.3),
    "granitemoe": dict(embedding_multiplier=2.0, residual_multiplier=0.6, logits_scaling=1.5,
                       attention_multiplier=0.2),
    "mistral": dict(sliding_window=4),
    "phi3": dict(partial_rotary_factor=0.5, sliding_window=5),
    "gemma2": dict(sliding_window=4, attn_logit_softcapping=2.0, final_logit_softcapping=3.0),
    "gemma3_text": dict(sliding_window=4, rope_local_base_freq=100.0, rope_scaling={"rope_type": "linear",
                                                                                    "factor": 2.0}),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_matches_the_engine(family, tmp_path):
    cfg = tiny_config(family, vocab_size=VOCAB, hidden_size=32, intermediate_size=64)
    folder = write_random_model(tmp_path / "m", {**cfg, **FAMILIES[family]}, seed=3)
    engine = Engine.from_pretrained(folder)
    export_model(engine.model, tmp_path / "model.onnx")
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(5, VOCAB, (n,), generator=g).tolist() for n in (7, 3)]
    assert_matches_engine(engine, tmp_path, prompts, [torch.randint(5, VOCAB, (3,), generator=g).tolist()] * 2)


def test_dense_experts_equal_the_grouped_ffn_and_are_put_back(tiny):
    engine, _ = tiny
    moe = next(m for m in engine.model.modules() if isinstance(m, MoE))
    g = torch.Generator().manual_seed(2)
    T, K, E, D = 7, moe.top_k, moe.gate_up.shape[0], moe.gate_up.shape[2]
    x = torch.randn(T, D, generator=g)
    ids = torch.stack([torch.randperm(E, generator=g)[:K] for _ in range(T)])  # [T, K]
    weights = torch.rand(T, K, generator=g)
    with dense_experts(engine.model):
        assert type(moe) is DenseMoE
        dense = moe.experts(x, weights, ids)
    assert type(moe) is MoE
    assert (dense - expert_ffn(x, moe.gate_up, moe.down, weights, ids)).abs().max() <= 1e-5


def test_a_merged_adapter_matches_the_engine_serving_it(tiny, tmp_path):
    engine, _ = tiny
    base = engine.source
    adapter = random_adapter(tmp_path / "crier", engine.config)
    with_adapter = Engine.from_pretrained(base)
    with_adapter.add_adapter("crier", adapter)
    export_onnx(base, tmp_path / "out", adapter=adapter)
    ids = list(range(10, 22))
    [got], _ = run_batch(session(tmp_path / "out"), [ids[:8]], [ids[8:]])
    want = with_adapter.logits(ids, adapter="crier").numpy()
    assert np.abs(got - want).max() <= TOL
    assert np.abs(got - with_adapter.logits(ids).numpy()).max() > 1e-2  # the adapter really is in there


def test_unsupported_models_fail_loudly(tmp_path):
    cfg = tiny_config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64)
    folder = write_random_model(tmp_path / "dyn", {**cfg, "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}})
    with pytest.raises(ConfigError, match="rope scaling 'dynamic'"):
        export_onnx(folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    plain = write_random_model(tmp_path / "plain", cfg)
    with pytest.raises(ValueError, match="BlockLinear, BlockMoE"):
        check_exportable(quantize_blocks(load_model(plain), "int8"))
    engine = Engine.from_pretrained(plain)
    engine.add_adapter("a", random_adapter(tmp_path / "a", engine.config))
    with pytest.raises(ValueError, match="LoRALinear"):
        check_exportable(engine.model)
    with pytest.raises(ValueError, match="float32"):
        check_exportable(load_model(plain, dtype=torch.float16))


def test_cli_export_onnx(tiny, tmp_path, capsys):
    engine, _ = tiny
    assert main(["export-onnx", "--model", engine.source, "--out", str(tmp_path / "x")]) == 0
    said = capsys.readouterr().out
    assert "onnxruntime (CPUExecutionProvider) matches the model's logits within" in said
    assert [i.name for i in session(tmp_path / "x").get_inputs()] == input_names(engine.config)
    assert main(["export-onnx", "--model", engine.source, "--out", str(tmp_path / "y"), "--adapter", "nope"]) == 2
    assert "adapter 'nope' is neither a folder" in capsys.readouterr().err


def test_weights_stored_one_file_per_tensor_are_gathered_into_one(tiny, tmp_path):
    import onnx

    engine, out = tiny
    # what the exporter writes past protobuf's 2 GB limit: every weight in a file of its own beside the model
    onnx.save_model(onnx.load(str(out / "model.onnx")), str(tmp_path / "model.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=False, size_threshold=0)
    assert len(list(tmp_path.iterdir())) > 10
    gather_external_data(tmp_path / "model.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.onnx.data"]
    assert (tmp_path / "model.onnx").stat().st_size < 2**20 < (tmp_path / "model.onnx.data").stat().st_size
    ids = [[7, 8, 9, 10, 11]]
    [got], _ = run_batch(session(tmp_path), ids, [[12]])
    assert np.abs(got - engine.logits(ids[0] + [12]).numpy()).max() <= TOL
