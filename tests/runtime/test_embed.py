"""Engine.embed: mean-pooled, normalised final hidden states, batched without touching the KV cache."""

import pytest
import torch

from swarm.kernels.attention import causal_attention
from swarm.runtime import Engine, EngineConfig, SamplingParams
from swarm.runtime.kv import DenseBatch
from swarm.runtime.random_model import tiny_config, write_random_model

TEXTS = ["The baker sells bread at the market.", "Mira", "A quiet night at the tavern, and the guard waits.",
         "old smith", "The bard sings to the curious child by the fire on a cold evening."]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_random_model(tmp_path_factory.mktemp("m"), tiny_config(vocab_size=384, max_position_embeddings=64))


@pytest.fixture(scope="module")
def engine(folder):
    return Engine.from_pretrained(folder)


def reference(engine: Engine, ids: list[int]) -> torch.Tensor:
    """The normalised mean of the final hidden states of the ordinary paged forward pass (`engine.logits`)."""
    captured = []
    hook = engine.model.norm.register_forward_hook(lambda module, args, out: captured.append(out.float()))
    try:
        engine.logits(ids)
    finally:
        hook.remove()
    return torch.nn.functional.normalize(captured[0].mean(0), dim=-1)


def test_shape_and_normalisation(engine):
    out = engine.embed(TEXTS)
    assert out.shape == (len(TEXTS), engine.config.hidden_size) and out.dtype == torch.float32
    assert torch.allclose(out.norm(dim=-1), torch.ones(len(TEXTS)), atol=1e-5)
    assert engine.embed([]).shape == (0, engine.config.hidden_size)
    assert not torch.allclose(out[0], out[2], atol=1e-3)  # different texts, different vectors


def test_matches_the_paged_forward_pass(engine):
    out = engine.embed(TEXTS)
    for text, row in zip(TEXTS, out, strict=True):
        assert torch.allclose(row, reference(engine, engine.tokenizer.encode(text)), atol=1e-5)


def test_a_text_is_embedded_the_same_alone_or_among_others(engine):
    together = engine.embed(TEXTS)
    for i, text in enumerate(TEXTS):
        assert (engine.embed([text])[0] - together[i]).abs().max() <= 1e-5


def test_chunking_gives_the_same_vectors(folder, engine):
    small = Engine.from_pretrained(folder, config=EngineConfig(max_batched_tokens=8))
    chunks = small._embed_chunks([len(small.tokenizer.encode(t)) for t in TEXTS])
    assert len(chunks) > 2  # the small budget really splits the batch
    assert (small.embed(TEXTS) - engine.embed(TEXTS)).abs().max() <= 1e-5


def test_long_texts_are_truncated_to_the_context(engine):
    long = " ".join(["the village road to the river and the mill"] * 40)
    assert len(engine.tokenizer.encode(long)) > engine.max_context
    out = engine.embed([long, "Mira"])
    assert torch.isfinite(out).all()
    assert torch.allclose(out[0], reference(engine, engine.tokenizer.encode(long)[: engine.max_context]), atol=1e-5)


def test_empty_text_gets_a_zero_row(engine):
    out = engine.embed(["", "Mira"])
    assert torch.equal(out[0], torch.zeros(engine.config.hidden_size))
    assert torch.allclose(out[1], engine.embed(["Mira"])[0], atol=1e-6)


def test_the_kv_pool_and_prefix_cache_are_untouched(engine):
    engine.generate("The innkeeper sells ale", SamplingParams(max_tokens=4, temperature=0.0))  # fill the cache
    free, nodes = engine.pool.num_free, engine.cache.num_nodes
    k0 = [k.clone() for k in engine.pool.k]
    engine.embed(TEXTS * 4)
    assert nodes > 0 and engine.pool.num_free == free and engine.cache.num_nodes == nodes
    assert all(torch.equal(a, b) for a, b in zip(k0, engine.pool.k, strict=True))


@pytest.mark.parametrize("window, softcap", [(None, None), (3, None), (3, 1.5)])
def test_dense_batch_attends_within_each_sequence(window, softcap):
    lens, H, G, d = [5, 1, 9, 4], 4, 2, 8
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(sum(lens), h, d, generator=gen) for h in (H, G, G))
    out = DenseBatch(lens, torch.device("cpu")).attend(0, q, k, v, 0.3, window, softcap)
    s = 0
    for n in lens:
        expect = causal_attention(q[s : s + n], k[s : s + n], v[s : s + n], 0.3, window, softcap)
        assert torch.allclose(out[s : s + n], expect, atol=1e-6)
        s += n
