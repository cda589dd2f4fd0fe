"""The model runner (runtime/runner.py): which decode strategy takes a step, how many slices a pass has, and what a
LoRA change rebuilds. The CUDA graphs are stood in for by a fake here (their replay is tested on a GPU, in
test_cuda.py); the CPU strategies run the real model."""

import pytest
import torch

from swarm.kernels.native import build
from swarm.runtime import Engine, EngineConfig, SamplingParams
from swarm.runtime.random_model import tiny_config, write_random_model
from swarm.runtime.runner import GraphReplay, ModelRunner, Slices, WholeDecode

native = pytest.mark.skipif(not build.available(), reason="the native CPU kernels cannot be built here")


class FakeGraphs:
    """Takes every decode step whose rows all sample; its logits are a marker."""

    def __init__(self, vocab: int):
        self.vocab, self.replays, self.cleared = vocab, 0, 0

    def accepts(self, batch) -> bool:
        return all(s.num_tokens == 1 and s.samples for s in batch)

    def run(self, batch) -> torch.Tensor:
        self.replays += 1
        return torch.full((len(batch), self.vocab), 7.0)

    def clear(self) -> None:
        self.cleared += 1


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    cfg = tiny_config("qwen3_moe", vocab_size=256, hidden_size=64, num_heads=4, num_kv_heads=2, num_experts=4)
    return write_random_model(tmp_path_factory.mktemp("runner"), cfg)


def _pass(runner, batch, sliced):
    """(the slices the pass yielded None after, its logits), run as the engine runs it (in inference mode)"""
    with torch.inference_mode():
        p, pauses = runner.run(batch, sliced), 0
        while True:
            try:
                assert next(p) is None
                pauses += 1
            except StopIteration as done:
                return pauses, done.value


def _decode_batch(engine, n=2):
    handles = [engine.submit([5 + i, 9, 11, 13], SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True))
               for i in range(n)]
    while not all(h.token_ids for h in handles):
        engine.step()
    batch = engine.scheduler.schedule()
    assert all(s.num_tokens == 1 for s in batch)
    return batch


@native
def test_each_step_goes_to_the_first_strategy_that_takes_it(folder):
    engine = Engine.from_pretrained(folder, EngineConfig(kv_cache_tokens=512))
    runner = engine.runner
    assert [type(s) for s in runner.strategies] == [WholeDecode, Slices]
    batch = _decode_batch(engine)
    L = engine.config.num_layers
    whole_pauses, whole = _pass(runner, batch, sliced=False)  # decode, unsliced: every layer in one native call
    sliced_pauses, sliced = _pass(runner, batch, sliced=True)  # pump: each attention and each MLP a slice
    assert (whole_pauses, sliced_pauses) == (1, 2 * L) and runner.num_slices == 2 * L + 1
    assert whole.shape == (2, engine.config.vocab_size) and torch.equal(whole, sliced)  # same kernels, same bits

    runner.graphs = FakeGraphs(engine.config.vocab_size)  # a GPU's graphs come first and need no step inputs
    runner.strategies = [GraphReplay(runner.graphs), *runner.strategies]
    built = []
    runner.inputs = lambda b: built.append(b)  # (would fail the fused strategies if called)
    pauses, logits = _pass(runner, batch, sliced=True)
    assert (pauses, runner.graphs.replays, built) == (1, 1, []) and bool((logits == 7.0).all())


@native
def test_a_lora_change_rebuilds_the_fused_blocks_and_drops_the_graphs(folder, tmp_path):
    engine = Engine.from_pretrained(folder, EngineConfig(kv_cache_tokens=512))
    graphs = FakeGraphs(engine.config.vocab_size)
    runner = ModelRunner(engine.model, engine.pool, engine.lora, engine.device, graphs=graphs, fused=True)
    first = runner.fused
    batch = _decode_batch(engine)
    _pass(runner, batch, sliced=False)
    assert graphs.cleared == 0 and runner.fused is first
    engine.lora.version += 1  # what wrapping a projection for an adapter does
    _pass(runner, batch, sliced=False)
    assert graphs.cleared == 1 and runner.fused is not first and runner.fused is not None
