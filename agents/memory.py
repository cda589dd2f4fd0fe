"""An agent's memory stream, after Generative Agents (Park et al. 2023).

Memories are retrieved by a weighted sum of recency (exponential decay since
last access), importance and relevance (cosine similarity to a query
embedding), each min-max normalised over the candidates. Importance piles up
as memories arrive; past a threshold the agent reflects, and the reflection
becomes a memory too.

The scores are computed with numpy over columns kept next to the memories
(last access, importance, unit embedding rows), grown in place, so retrieving
from hundreds of memories costs tens of microseconds. Embeddings are filled
in batches: `embed_pending` collects every stream's new texts, embeds them in
one call (deduplicated, since many agents observe the same event) and hands
the vectors back.

Legend: N memories, M dimension of the embeddings.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from typing import Any, Literal

import msgspec
import numpy as np

__all__ = ["KINDS", "Memory", "MemoryStream", "embed_pending"]

KINDS = ("observation", "action", "reflection", "plan")


class Memory(msgspec.Struct, kw_only=True):
    """One record of the stream. The stream owns it: read it, don't change it (`last_access` is the stream's)."""

    id: int
    tick: int
    text: str
    importance: float
    kind: Literal["observation", "action", "reflection", "plan"] = "observation"
    last_access: int | None = None  # None: the tick it was made

    def __post_init__(self):
        if not 0 <= self.importance <= 10:
            raise ValueError(f"importance must be within 0..10, got {self.importance}")
        if self.kind not in KINDS:
            raise ValueError(f"unknown memory kind {self.kind!r}; expected one of {KINDS}")
        if self.last_access is None:
            self.last_access = self.tick


class MemoryStream:
    """Memories of one agent, with retrieval, reflection bookkeeping and a cap on their number.

    `weights` = (recency, importance, relevance). `reflect_threshold` 150 is Generative Agents' value on the
    same 0-10 importance scale: an agent in a busy place reflects every dozen ticks or so, not every other.
    Past `max_memories`, the lowest-scoring older memories (recency and importance) are forgotten, never
    reflections while anything else is left to forget.
    """

    def __init__(self, decay: float = 0.995, weights: Sequence[float] = (1.0, 1.0, 1.0),
                 reflect_threshold: float = 150.0, max_memories: int = 1000):
        weights = tuple(float(w) for w in weights)
        if not 0 < decay <= 1:
            raise ValueError(f"decay must be within (0, 1], got {decay}")
        if len(weights) != 3 or min(weights) < 0:
            raise ValueError(f"weights are three non-negative numbers (recency, importance, relevance), got {weights}")
        if reflect_threshold <= 0 or max_memories < 1:
            raise ValueError("reflect_threshold and max_memories must be positive")
        self.decay, self.weights = float(decay), weights
        self.reflect_threshold, self.max_memories = float(reflect_threshold), int(max_memories)
        self._memories: list[Memory] = []  # oldest first; row i of every column below
        self._row: dict[int, int] = {}  # memory id -> row
        self._access = np.zeros(16)  # [capacity] last access tick
        self._importance = np.zeros(16, np.float32)
        self._reflection = np.zeros(16, bool)
        self._vectors: np.ndarray | None = None  # [capacity, M] unit rows; zeros until embedded
        self._pending: dict[int, Memory] = {}  # memories without an embedding yet
        self._next_id = 0
        self._since_reflection = 0.0

    def __len__(self) -> int:
        return len(self._memories)

    def __iter__(self) -> Iterator[Memory]:
        return iter(self._memories)

    def get(self, memory_id: int) -> Memory | None:
        row = self._row.get(memory_id)
        return None if row is None else self._memories[row]

    # -- adding ---------------------------------------------------------------------------

    def add(self, tick: int, text: str, importance: float, kind: str = "observation") -> Memory:
        """Record a memory (importance 0..10); it has no embedding until `set_embeddings`."""
        m = Memory(id=self._next_id, tick=tick, text=text, importance=float(importance), kind=kind)
        self._next_id += 1
        n = len(self._memories)
        if n == len(self._access):
            self._grow(2 * n)
        self._access[n], self._importance[n], self._reflection[n] = tick, m.importance, kind == "reflection"
        self._memories.append(m)
        self._row[m.id] = n
        self._pending[m.id] = m
        if kind != "reflection":
            self._since_reflection += m.importance
        if n + 1 > self.max_memories:
            self._forget(tick)
        return m

    def _grow(self, capacity: int) -> None:
        n = len(self._memories)
        for name in ("_access", "_importance", "_reflection", "_vectors"):
            old = getattr(self, name)
            if old is not None:
                new = np.zeros((capacity, *old.shape[1:]), old.dtype)
                new[:n] = old[:n]
                setattr(self, name, new)

    def _forget(self, tick: int) -> None:
        # Drop a twentieth of the cap at once, so the columns are compacted once per many additions.
        n = len(self._memories)
        count = n - self.max_memories + self.max_memories // 20
        rows = np.arange(n - 1)  # the newest memory always stays
        score = self._base_score(tick, n)[: n - 1]
        order = np.lexsort((rows, score, self._reflection[: n - 1]))  # non-reflections first, lowest score, oldest
        keep = np.ones(n, bool)
        keep[order[:count]] = False
        self._compact(keep)

    def _compact(self, keep: np.ndarray) -> None:
        n, kept = len(self._memories), int(keep.sum())
        for column in (self._access, self._importance, self._reflection, self._vectors):
            if column is not None:
                column[:kept] = column[:n][keep]
        for m, k in zip(self._memories, keep, strict=True):
            if not k:
                self._pending.pop(m.id, None)
        self._memories = [m for m, k in zip(self._memories, keep, strict=True) if k]
        self._row = {m.id: i for i, m in enumerate(self._memories)}

    # -- embeddings -----------------------------------------------------------------------

    def pending(self) -> list[Memory]:
        """Memories still waiting for an embedding, oldest first."""
        return list(self._pending.values())

    def set_embeddings(self, memories: Sequence[Memory], vectors: Any) -> None:
        """Attach one vector (a row of `vectors`, [len(memories), M]) to each memory; forgotten ones are skipped."""
        vectors = _matrix(vectors)
        if len(vectors) != len(memories):
            raise ValueError(f"got {len(vectors)} vectors for {len(memories)} memories")
        if not len(memories):
            return
        if self._vectors is None:
            self._vectors = np.zeros((len(self._access), vectors.shape[1]), np.float32)
        elif vectors.shape[1] != self._vectors.shape[1]:
            raise ValueError(f"embeddings of size {vectors.shape[1]}; this stream holds size {self._vectors.shape[1]}")
        live = [i for i, m in enumerate(memories) if self._row.get(m.id) is not None]
        rows = [self._row[memories[i].id] for i in live]
        self._vectors[rows] = _unit(vectors[live])
        for i in live:
            self._pending.pop(memories[i].id, None)

    # -- retrieval ------------------------------------------------------------------------

    def _base_score(self, tick: int, n: int) -> np.ndarray:
        w_recency, w_importance, _ = self.weights
        score = _minmax(np.power(self.decay, tick - self._access[:n]), w_recency)  # [N]
        score += _minmax(self._importance[:n].astype(np.float64), w_importance)
        return score

    def scores(self, query_vector: Any, tick: int) -> np.ndarray:
        """The retrieval score of every memory, oldest first [N] (what `retrieve` ranks by)."""
        n = len(self._memories)
        score = self._base_score(tick, n)
        if self.weights[2] and query_vector is not None and self._vectors is not None:
            q = _matrix(query_vector).reshape(-1)
            if q.shape[0] != self._vectors.shape[1]:
                raise ValueError(f"query of size {q.shape[0]}; the memories' embeddings have {self._vectors.shape[1]}")
            score += _minmax(self._vectors[:n] @ q, self.weights[2])  # cosine up to a positive factor; 0 if pending
        return score

    def retrieve(self, query_vector: Any, tick: int, k: int = 5, exclude: Collection[int] = ()) -> list[Memory]:
        """The `k` best memories for a query embedding (None: recency and importance only), best first.

        Retrieved memories count as accessed at `tick`. `exclude` holds memory ids to leave out (say, the
        observations already in the prompt).
        """
        n = len(self._memories)
        if n == 0 or k <= 0:
            return []
        score = self.scores(query_vector, tick)
        skip = [self._row[i] for i in exclude if i in self._row]
        score[skip] = -np.inf
        k = min(k, n - len(skip))
        if k <= 0:
            return []
        top = np.argpartition(-score, k - 1)[:k] if k < n else np.arange(n)
        top = top[np.lexsort((-top, -score[top]))]  # best first; ties: newest first
        self._access[top] = tick
        out = [self._memories[i] for i in top]
        for m in out:
            m.last_access = tick
        return out

    # -- reflection -----------------------------------------------------------------------

    def needs_reflection(self) -> bool:
        """True once the importance of the memories since the last reflection reaches `reflect_threshold`."""
        return self._since_reflection >= self.reflect_threshold

    def reflection_sources(self, n: int = 10, recent: int = 100) -> list[Memory]:
        """The `n` most important of the `recent` newest memories, oldest first: what to reflect on."""
        start = max(0, len(self._memories) - recent)
        importance = self._importance[start : len(self._memories)]
        top = np.sort(np.argsort(-importance, kind="stable")[:n])
        return [self._memories[start + i] for i in top]

    def add_reflection(self, tick: int, text: str, importance: float = 8.0) -> Memory:
        """Record a reflection and start accumulating importance towards the next one."""
        m = self.add(tick, text, importance, kind="reflection")
        self._since_reflection = 0.0
        return m

    # -- checkpoints ----------------------------------------------------------------------

    def to_state(self) -> dict:
        """Plain data (lists, dicts, numbers, strings, bytes) for msgpack checkpoints."""
        n = len(self._memories)
        return {
            "decay": self.decay, "weights": list(self.weights), "reflect_threshold": self.reflect_threshold,
            "max_memories": self.max_memories, "next_id": self._next_id, "since_reflection": self._since_reflection,
            "memories": msgspec.to_builtins(self._memories),
            "pending": list(self._pending),
            "dim": None if self._vectors is None else int(self._vectors.shape[1]),
            "vectors": b"" if self._vectors is None else self._vectors[:n].astype("<f4").tobytes(),
        }

    @classmethod
    def from_state(cls, state: dict) -> MemoryStream:
        s = cls(state["decay"], state["weights"], state["reflect_threshold"], state["max_memories"])
        memories = msgspec.convert(state["memories"], list[Memory])
        n = len(memories)
        s._grow(max(16, n))
        s._memories = memories
        s._row = {m.id: i for i, m in enumerate(memories)}
        s._access[:n] = [m.last_access for m in memories]
        s._importance[:n] = [m.importance for m in memories]
        s._reflection[:n] = [m.kind == "reflection" for m in memories]
        if state["dim"] is not None:
            s._vectors = np.zeros((len(s._access), state["dim"]), np.float32)
            s._vectors[:n] = np.frombuffer(state["vectors"], "<f4").reshape(n, state["dim"])
        s._pending = {i: memories[s._row[i]] for i in state["pending"]}
        s._next_id, s._since_reflection = state["next_id"], state["since_reflection"]
        return s


def embed_pending(streams: Iterable[MemoryStream], embed: Callable[[list[str]], Any],
                  queries: Sequence[str | Sequence[str]] = ()) -> np.ndarray:
    """Embed every stream's pending memories and the `queries` in one call of `embed` (texts -> [n, M]).

    A query is one text or several: then its vector is the normalised mean of theirs (zeros for none). Equal
    texts are embedded once, so a query made of new observations, which are pending memories too, adds
    nothing to embed. Returns the query vectors [len(queries), M] (shape (0, 0) if there was nothing to
    embed at all).
    """
    queries = [[q] if isinstance(q, str) else list(q) for q in queries]
    work = [(s, s.pending()) for s in streams]
    index: dict[str, int] = {}
    for texts in queries:
        for text in texts:
            index.setdefault(text, len(index))
    for _, memories in work:
        for m in memories:
            index.setdefault(m.text, len(index))
    if not index:
        return np.zeros((0, 0), np.float32)
    vectors = _matrix(embed(list(index)))
    if vectors.ndim != 2 or len(vectors) != len(index):
        raise ValueError(f"embed returned shape {vectors.shape} for {len(index)} texts; expected [texts, dim]")
    for stream, memories in work:
        if memories:
            stream.set_embeddings(memories, vectors[[index[m.text] for m in memories]])
    out = np.zeros((len(queries), vectors.shape[1]), np.float32)
    for i, texts in enumerate(queries):
        if texts:
            out[i] = _unit(_unit(vectors[[index[t] for t in texts]]).mean(0))
    return out


def _matrix(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor (the engine's embeddings), without importing torch here
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norm > 0, norm, 1)


def _minmax(x: np.ndarray, weight: float = 1.0) -> np.ndarray:
    """`weight` times x scaled to [0, 1] (zeros if x is constant), in place: x must be a fresh array."""
    lo, hi = x.min(), x.max()
    if hi <= lo:
        return np.zeros(x.shape)
    x -= lo
    x *= weight / (hi - lo)
    return x
