"""Memory stream: retrieval scoring, reflection bookkeeping, the cap, batched embedding and checkpoints."""

import re
import zlib

import msgspec
import numpy as np
import pytest
import torch

from swarm.agents import Memory, MemoryStream, embed_pending


def bag_of_words(texts: list[str], dim: int = 64) -> np.ndarray:
    """A fake sentence embedding: hashed word counts (texts sharing words point the same way)."""
    out = np.zeros((len(texts), dim), np.float32)
    for i, text in enumerate(texts):
        for word in re.findall(r"\w+", text.lower()):
            out[i, zlib.crc32(word.encode()) % dim] += 1
    return out


def query(text: str) -> np.ndarray:
    return bag_of_words([text])[0]


def texts(memories: list[Memory]) -> list[str]:
    return [m.text for m in memories]


def test_memory_validation():
    with pytest.raises(ValueError, match="importance"):
        Memory(id=0, tick=0, text="x", importance=11)
    with pytest.raises(ValueError, match="kind"):
        MemoryStream().add(0, "x", 3, kind="dream")
    assert Memory(id=0, tick=4, text="x", importance=1).last_access == 4
    with pytest.raises(ValueError):
        MemoryStream(weights=(1, 1))


def three_memories(weights) -> MemoryStream:
    s = MemoryStream(weights=weights)
    s.add(0, "the old king died long ago", 10)  # important
    s.add(50, "the smith sells nails", 4)  # relevant to the query below
    s.add(99, "a cloud passed", 0)  # recent
    embed_pending([s], bag_of_words)
    return s


@pytest.mark.parametrize("weights, first", [((5, 1, 1), "a cloud passed"), ((1, 5, 1), "the old king died long ago"),
                                            ((1, 1, 5), "the smith sells nails")])
def test_each_term_can_dominate_with_its_weight(weights, first):
    s = three_memories(weights)
    assert s.retrieve(query("who sells nails, smith?"), tick=100, k=1)[0].text == first


def test_orderings_by_one_term():
    s = MemoryStream(weights=(1, 0, 0))
    for tick, imp in enumerate([5, 9, 1, 7]):
        s.add(tick, f"m{tick}", imp)
    assert texts(s.retrieve(None, 10, k=4)) == ["m3", "m2", "m1", "m0"]
    s.weights = (0, 1, 0)
    assert texts(s.retrieve(None, 10, k=2)) == ["m1", "m3"]


def test_retrieval_refreshes_last_access():
    s = MemoryStream(weights=(0, 0, 1))
    for tick in range(5):
        s.add(tick, f"m{tick}", 3)
    s.set_embeddings(s.pending(), np.eye(5, 8))
    assert texts(s.retrieve(np.eye(8)[0], 30, k=1)) == ["m0"]
    assert s.get(0).last_access == 30 and s.get(4).last_access == 4
    s.weights = (1, 0, 0)
    assert texts(s.retrieve(None, 31, k=2)) == ["m0", "m4"]  # m0 was accessed last


def test_unembedded_memories_score_zero_relevance():
    s = MemoryStream(weights=(0, 0, 1))
    a, b, c = s.add(0, "a", 1), s.add(0, "b", 1), s.add(0, "c", 1)
    s.set_embeddings([a, c], np.array([[1.0, 0.0], [-1.0, 0.0]]))
    assert s.pending() == [b]
    assert np.allclose(s.scores(np.array([2.0, 0.0]), 0), [1.0, 0.5, 0.0])  # cosines 1, 0, -1 min-max normalised
    assert texts(s.retrieve(np.array([1.0, 0.0]), 0, k=3)) == ["a", "b", "c"]


def test_exclude_and_k():
    s = MemoryStream()
    ms = [s.add(t, f"m{t}", 3) for t in range(4)]
    assert len(s.retrieve(None, 5, k=10)) == 4 and s.retrieve(None, 5, k=0) == []
    got = s.retrieve(None, 5, k=10, exclude=[ms[3].id, ms[1].id, 999])
    assert texts(got) == ["m2", "m0"]
    assert s.retrieve(None, 5, exclude=[m.id for m in ms]) == []


def test_reflection_threshold_and_sources():
    s = MemoryStream(reflect_threshold=25)
    s.add(0, "a", 9)
    s.add(1, "b", 9)
    assert not s.needs_reflection()
    s.add(2, "c", 7)
    assert s.needs_reflection()
    s.add_reflection(3, "people are busy")
    assert not s.needs_reflection() and s.get(3).kind == "reflection"
    for t, imp in enumerate([1, 6, 2, 8, 5], start=4):
        s.add(t, f"n{t}", imp)
    assert texts(s.reflection_sources(n=3, recent=5)) == ["n5", "n7", "n8"]  # most important, oldest first
    assert texts(s.reflection_sources(n=2)) == ["a", "b"]


def test_the_cap_forgets_low_scoring_observations_and_never_reflections():
    s = MemoryStream(max_memories=40, decay=0.9)
    reflections = []
    for t in range(200):
        s.add(t, f"{'vital' if t % 10 == 0 else 'dull'} {t}", 9 if t % 10 == 0 else 1)
        if t % 20 == 5:
            reflections.append(s.add_reflection(t, f"r{t}", 1).id)  # unimportant, yet kept
        assert len(s) <= 40
    kept = list(s)
    assert all(r in [m.id for m in kept] for r in reflections)
    assert kept[-1].text == "dull 199" and [m.id for m in kept] == sorted(m.id for m in kept)
    assert all(f"vital {t}" in texts(kept) for t in range(0, 200, 10))  # important beats merely recent
    assert set(texts(s.pending())) <= set(texts(kept))
    embed_pending([s], bag_of_words)  # the forgotten are not embedded
    assert s.pending() == []


def test_forgotten_memories_are_skipped_by_set_embeddings():
    s = MemoryStream(max_memories=2)
    first = s.add(0, "first", 0)
    waiting = s.pending()
    s.add(1, "second", 5)
    s.add(2, "third", 5)
    assert s.get(first.id) is None
    s.set_embeddings(waiting, bag_of_words(texts(waiting)))
    assert texts(s.pending()) == ["second", "third"]


def test_embed_pending_embeds_each_text_once_in_one_call():
    calls = []

    def embed(batch):
        calls.append(list(batch))
        return torch.from_numpy(bag_of_words(batch))  # the engine hands back a torch tensor

    streams = [MemoryStream() for _ in range(3)]
    for i, s in enumerate(streams):
        s.add(0, "the bell rings", 3)
        s.add(0, f"private {i}", 3)
    q = embed_pending(streams, embed, queries=["the bell rings", "who rang?"])
    assert len(calls) == 1 and sorted(calls[0]) == sorted(
        ["the bell rings", "who rang?", "private 0", "private 1", "private 2"])
    v = bag_of_words(["the bell rings", "who rang?"])
    assert np.allclose(q, v / np.linalg.norm(v, axis=1, keepdims=True))  # a query vector is a unit vector
    assert all(s.pending() == [] for s in streams)
    assert streams[1].retrieve(q[0], 1, k=1)[0].text == "the bell rings"
    assert embed_pending(streams, embed).shape == (0, 0) and len(calls) == 1
    with pytest.raises(ValueError, match="size"):
        streams[0].retrieve(np.ones(3), 1)


def test_a_query_of_several_texts_is_the_mean_of_their_vectors_and_costs_no_embedding_of_its_own():
    calls = []

    def embed(batch):
        calls.append(list(batch))
        return bag_of_words(batch)

    s = MemoryStream()
    seen = [s.add(1, "the bell rings", 3), s.add(1, "smoke over the mill", 3)]
    s.add(0, "the mill burned once", 5)
    s.add(0, "the baker sells bread", 5)
    q = embed_pending([s], embed, queries=[[m.text for m in seen], [], "bread"])
    assert len(calls) == 1 and len(calls[0]) == 5  # the query texts are the pending memories' own, plus "bread"
    v = bag_of_words([m.text for m in seen])
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    mean = v.mean(0) / np.linalg.norm(v.mean(0))
    assert np.allclose(q[0], mean) and np.isclose(np.linalg.norm(q[0]), 1)
    assert not q[1].any()  # no texts: no relevance
    assert s.retrieve(q[0], 1, k=1, exclude=[m.id for m in seen])[0].text == "the mill burned once"


def test_state_round_trip_through_msgpack():
    s = MemoryStream(decay=0.99, weights=(1, 2, 3), reflect_threshold=12, max_memories=50)
    for t in range(30):
        s.add(t, f"event {t % 7} at the {'mill' if t % 3 else 'tavern'}", t % 10)
    s.add_reflection(30, "the mill is busy")
    embed_pending([s], bag_of_words)
    s.add(31, "not embedded yet", 4)
    s.retrieve(query("mill"), 31, k=3)
    state = msgspec.msgpack.decode(msgspec.msgpack.encode(s.to_state()))
    r = MemoryStream.from_state(state)
    assert list(r) == list(s) and r.pending() == s.pending() and r.needs_reflection() == s.needs_reflection()
    assert np.array_equal(r.scores(query("tavern event"), 40), s.scores(query("tavern event"), 40))
    assert r.retrieve(query("tavern"), 40, k=5) == s.retrieve(query("tavern"), 40, k=5)
    assert r.add(41, "next", 1).id == s.add(41, "next", 1).id
    empty = MemoryStream.from_state(msgspec.msgpack.decode(msgspec.msgpack.encode(MemoryStream().to_state())))
    assert len(empty) == 0 and empty.retrieve(None, 0) == []
