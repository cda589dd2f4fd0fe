"""The engine on a CUDA GPU, where the registry picks the Triton kernels: the same answers as on the CPU.

The kernels are checked one by one against their torch references in tests/kernels/test_triton.py; these
tests run whole engines on the GPU (paged KV pool, prefix cache, mixed LoRA batches, constrained decoding)
and compare them with the CPU engine, whose kernels are the torch references. Skipped without a GPU.
"""

from __future__ import annotations

import random

import pytest
import torch

from swarm.runtime import Engine, EngineConfig, SamplingParams
from swarm.runtime.random_model import tiny_config, write_random_model
from tests.runtime.test_grammar import Action, assert_valid, sampled

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the engine's Triton path)"),
]

GREEDY = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
SEEDED = SamplingParams(max_tokens=16, temperature=0.9, top_p=0.95, seed=4, ignore_eos=True)
TOL = 1e-4  # relative to the largest logit: fp32 everywhere, only the order of additions differs


def close(got: torch.Tensor, want: torch.Tensor) -> None:
    got, want = got.float().cpu(), want.float().cpu()
    err = (got - want).abs().max().item()
    assert err <= TOL * (1 + want.abs().max().item()), f"max |diff| {err}"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_random_model(tmp_path_factory.mktemp("m"), tiny_config(vocab_size=384, max_position_embeddings=1024))


def prompts(n: int, shared: int = 40, own: int = 20, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    preamble = [rng.randrange(5, 384) for _ in range(shared)]
    return [preamble + [rng.randrange(5, 384) for _ in range(own + 3 * i)] for i in range(n)]


def test_the_engine_runs_the_triton_kernels_on_cuda(folder):
    engine = Engine.from_pretrained(folder, device="cuda")
    engine.generate([prompts(1)[0]], SamplingParams(max_tokens=2, temperature=0.0))
    moe = engine._moe[0]
    assert moe._ffn.__module__ == "swarm.kernels.triton.moe_ffn"
    assert moe._route.__module__ == "swarm.kernels.triton.moe_route"
    assert engine.pool.k[0].is_cuda and engine.pool.v[0].is_cuda


def test_logits_and_greedy_tokens_match_the_cpu_engine(folder):
    cpu, gpu = Engine.from_pretrained(folder), Engine.from_pretrained(folder, device="cuda")
    ps = prompts(6)
    for p in ps[:2]:
        close(gpu.logits(p), cpu.logits(p))
    assert [o.token_ids for o in gpu.generate(ps, GREEDY)] == [o.token_ids for o in cpu.generate(ps, GREEDY)]


def test_batch_invariance_and_cached_prefixes_on_cuda(folder):
    ps = prompts(6)

    def make():
        return Engine.from_pretrained(folder, config=EngineConfig(kv_cache_tokens=4096), device="cuda")

    for params in (GREEDY, SEEDED):
        alone = [make().generate([p], params)[0].token_ids for p in ps]
        assert [o.token_ids for o in make().generate(ps, params)] == alone
        warm = make()
        warm.generate(ps[:3], params)
        assert [o.token_ids for o in warm.generate(ps, params)] == alone
        assert warm.stats()["cached_tokens"] > 0


def test_a_small_pool_preempts_without_corrupting_requests_on_cuda(folder):
    ps = prompts(8, shared=30, own=40, seed=3)
    want = [o.token_ids for o in Engine.from_pretrained(folder, device="cuda").generate(ps, GREEDY)]
    tight = Engine.from_pretrained(folder, config=EngineConfig(kv_cache_tokens=256, block_size=16), device="cuda")
    assert [o.token_ids for o in tight.generate(ps, GREEDY)] == want
    assert tight.stats()["preemptions"] > 0


def test_mixed_adapter_batch_on_cuda_matches_each_adapter_on_cpu():
    """The bundled model's LoRA personas in one batch on the GPU (gather and segment kernels), in float32 (the
    checkpoint is float16, the GPU's default for it) so the logits can match the CPU's closely."""
    cpu = Engine.from_pretrained("swarm-tiny")
    gpu = Engine.from_pretrained("swarm-tiny", device="cuda", dtype="float32")
    names = gpu.adapters()[:3]
    assert len(names) == 3
    text = "The innkeeper looks up from the counter and says"
    ids = cpu.tokenizer.encode(text)
    for name in names:
        close(gpu.logits(ids, adapter=name), cpu.logits(ids, adapter=name))
    adapters = [names[0], None, names[1], names[2], names[0], None]
    texts = [f"{text} ({i})" for i in range(len(adapters))]
    mixed = gpu.generate(texts, GREEDY, adapter=adapters)
    for t, a, out in zip(texts, adapters, mixed, strict=True):
        assert out.token_ids == cpu.generate([t], GREEDY, adapter=a)[0].token_ids


def test_schema_constrained_actions_on_cuda(folder):
    gpu = Engine.from_pretrained(folder, config=EngineConfig(kv_cache_tokens=16384), device="cuda")
    outs = gpu.generate(["Act:"] * 16, sampled(16), schema=Action)
    assert_valid(outs)
    assert all(isinstance(o.value, Action) for o in outs)


def test_constrained_answers_close_within_max_tokens_on_cuda_graphs(folder):
    from tests.runtime import test_budget_close as budget

    gpu = Engine.from_pretrained(folder, config=EngineConfig(kv_cache_tokens=16384), device="cuda")
    outs = gpu.generate(budget.prompts(24), budget.sampled(24, 40), schema=budget.Note)
    budget.assert_closed_in_time(outs, budget.Note, 40)
    assert any(o.budget_closed for o in outs) and gpu.stats()["cuda_graph_replays"] > 0


@pytest.mark.parametrize("params", [GREEDY, SEEDED], ids=["greedy", "seeded"])
def test_decode_steps_replayed_as_cuda_graphs_change_no_token(folder, params):
    ps = prompts(11, seed=5)  # 11 requests: padded to a bucket of 16
    eager = Engine.from_pretrained(folder, config=EngineConfig(cuda_graphs=False), device="cuda")
    graphs = Engine.from_pretrained(folder, device="cuda")
    want = [o.token_ids for o in eager.generate(ps, params)]
    assert [o.token_ids for o in graphs.generate(ps, params)] == want
    assert graphs.stats()["cuda_graph_replays"] > 0 and eager.graphs is None
    assert graphs.stats()["expert_load"] == eager.stats()["expert_load"]
    # requests finishing at different steps shrink the batch across buckets
    short = [SamplingParams(**{**params.__dict__, "max_tokens": 4 + 2 * i}) for i in range(len(ps))]
    assert ([o.token_ids for o in graphs.generate(ps, short)] == [o.token_ids for o in eager.generate(ps, short)])


@pytest.mark.parametrize("family, changes", [
    ("mistral", {"sliding_window": 24}),  # the Triton kernels' windows
    ("phi3", {"partial_rotary_factor": 0.5}),  # rope over part of each head
    ("gemma2", {"attn_logit_softcapping": 2.0, "final_logit_softcapping": 5.0}),  # torch's soft-capped attention
    ("gemma3_text", {"rope_local_base_freq": 100.0}),  # two rope tables, each read by its layers
])
def test_dense_families_on_cuda_graphs_match_the_cpu_engine(tmp_path, family, changes):
    cfg = {**tiny_config(family, vocab_size=384, max_position_embeddings=1024), **changes}
    path = write_random_model(tmp_path / family, cfg)
    cpu, gpu = Engine.from_pretrained(path), Engine.from_pretrained(path, device="cuda")
    ps = prompts(11, seed=7)
    close(gpu.logits(ps[0]), cpu.logits(ps[0]))
    assert [o.token_ids for o in gpu.generate(ps, GREEDY)] == [o.token_ids for o in cpu.generate(ps, GREEDY)]
    assert gpu.stats()["cuda_graph_replays"] > 0


def test_int8_kv_on_cuda_graphs_and_eager_agree(folder):
    """An int8 pool is captured like a float one (its write is torch ops, its scales go to the Triton kernels)."""
    ps = prompts(11, seed=6)
    config = EngineConfig(kv_dtype="int8")
    eager = Engine.from_pretrained(folder, config=EngineConfig(kv_dtype="int8", cuda_graphs=False), device="cuda")
    graphs = Engine.from_pretrained(folder, config=config, device="cuda")
    cpu = Engine.from_pretrained(folder, config=config)
    want = [o.token_ids for o in eager.generate(ps, GREEDY)]
    assert [o.token_ids for o in graphs.generate(ps, GREEDY)] == want
    assert graphs.stats()["cuda_graph_replays"] > 0 and graphs.pool.quantized
    assert [o.token_ids for o in cpu.generate(ps, GREEDY)] == want


def test_an_adapter_added_after_capture_is_applied():
    """Graphs captured before an adapter wrapped its projections are dropped, not replayed without it."""
    from swarm.runtime.bundled import model_path
    from swarm.runtime.loader import load_model
    from swarm.runtime.tokenizer import Tokenizer

    path = model_path("swarm-tiny")
    gpu = Engine(load_model(path).to("cuda"), Tokenizer.from_folder(path), device="cuda")
    cpu = Engine.from_pretrained("swarm-tiny")
    text = "The guard at the gate says"
    gpu.generate([text], GREEDY)  # captures the base model's decode graphs
    captured = gpu.graphs.captures
    name = cpu.adapters()[0]
    gpu.add_adapter(name, path / "adapters" / name)
    got = gpu.generate([text, text], GREEDY, adapter=[name, None])
    assert got[0].token_ids == cpu.generate([text], GREEDY, adapter=name)[0].token_ids
    assert got[1].token_ids == cpu.generate([text], GREEDY)[0].token_ids
    assert gpu.graphs.captures > captured
