"""A deterministic stand-in for `runtime.Engine`: the calls `EngineModel` makes, answered from a script.

Tokens are characters (`CharTokenizer`), each answer is written `chars_per_step` characters per
`step()`, and `clock()` advances `step_s` per step, so what a model layer or a UI sees of a turn
(its partial text, its latency, the engine's stats) is exact and the same on every run. While
`gated` is true every step waits for a `release()`, so a test can walk a generation one step at a time.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any

import msgspec
import torch

from swarm.agents.actions import Insight, PlanUpdate, Say
from swarm.model import hashed_bag_of_words
from swarm.runtime.request import Completion


class CharTokenizer:
    chat_template = None

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(map(chr, ids))


def chatter(persona: Hashable, schema: Any, n: int) -> Any:
    """The default script: plan one step, reflect briefly, and otherwise say a line (turn `n` of `persona`)."""
    if schema is PlanUpdate:
        return PlanUpdate(steps=[f"talk to everyone at turn {n}"])
    if schema is Insight:
        return Insight(text="people here like to talk")
    return Say(text=f"{persona} says hello, turn {n}")


class FakeHandle:
    def __init__(self, engine: FakeEngine, id: int, persona: Hashable, value: Any, text: str, prompt: list[int]):
        self.id, self._engine, self.persona = id, engine, persona
        self.value, self.text = value, text
        self.out = Completion(prompt_token_ids=list(prompt))
        self._sent = 0  # characters new_text handed out

    @property
    def done(self) -> bool:
        return self.out.finish_reason is not None

    @property
    def token_ids(self) -> list[int]:
        return list(self.out.token_ids)

    def partial_text(self) -> str:
        return self.out.text if self.done else self._engine.tokenizer.decode(self.out.token_ids)

    def new_text(self) -> str:
        text = self.partial_text()
        piece, self._sent = text[self._sent :], max(self._sent, len(text))
        return piece

    def result(self) -> Completion:
        while not self.done:
            self._engine.step()
        return self.out

    def cancel(self) -> None:
        if not self.done:
            self.out.finish_reason = "cancelled"
            self._engine._running.remove(self)

    def _write(self, n: int) -> bool:
        """Generate `n` more characters; whether the answer is complete."""
        have = len(self.out.token_ids)
        self.out.token_ids += [ord(c) for c in self.text[have : have + n]]
        if len(self.out.token_ids) < len(self.text):
            return False
        self.out.text, self.out.value, self.out.finish_reason = self.text, self.value, "stop"
        return True


class FakeEngine:
    """`answer(persona, schema, n) -> value` scripts the n-th answer (from 0) of each persona."""

    max_context = 1 << 20

    def __init__(self, answer: Callable[[Hashable, Any, int], Any] = chatter, *, chars_per_step: int = 8,
                 step_s: float = 0.05, gated: bool = False, layers: int = 2, experts: int = 8):
        self.answer, self.chars_per_step, self.step_s = answer, chars_per_step, step_s
        self.tokenizer = CharTokenizer()
        self.source = "fake-engine"
        self.now = 0.0
        self.steps = 0
        self.submitted = 0
        self.generated = 0
        self.hints: dict[Hashable, float | None] = {}
        self._turns: dict[Hashable, int] = {}
        self._running: list[FakeHandle] = []
        self.gated = gated
        self._gate = threading.Semaphore(0)
        self._batches: deque[int] = deque(maxlen=64)
        self._generated: deque[int] = deque(maxlen=64)  # tokens written per step
        self._load = [[0] * experts for _ in range(layers)]

    def clock(self) -> float:
        return self.now

    def release(self, steps: int = 1) -> None:
        """Let `steps` more steps run while gated."""
        self._gate.release(steps)

    def ungate(self) -> None:
        """Let every step run from now on (and the one waiting, if any)."""
        self.gated = False
        self._gate.release(1)

    def submit(self, prompt: list[int], params=None, persona: Hashable = None, adapter: Hashable = None,
               schema: Any = None) -> FakeHandle:
        n = self._turns.get(persona, 0)
        self._turns[persona] = n + 1
        value = self.answer(persona, schema, n)
        handle = FakeHandle(self, self.submitted, persona, value, msgspec.json.encode(value).decode(), prompt)
        self.submitted += 1
        self._running.append(handle)
        return handle

    def step(self) -> list[FakeHandle]:
        if self.gated and not self._gate.acquire(timeout=30):
            raise TimeoutError("nobody released the fake engine's next step")
        batch, self._running = self._running, []
        finished, generated = [], self.generated
        for h in batch:
            before = len(h.out.token_ids)
            (finished if h._write(self.chars_per_step) else self._running).append(h)
            self.generated += len(h.out.token_ids) - before
            for layer, load in enumerate(self._load):  # a skewed, deterministic routing
                load[(h.id + layer) % len(load)] += 2
                load[(h.id * 3 + self.steps) % len(load)] += 1
        self.steps += 1
        self.now += self.step_s
        self._batches.append(len(batch))
        self._generated.append(self.generated - generated)
        return finished

    def embed(self, texts: list[str]) -> torch.Tensor:
        return torch.from_numpy(hashed_bag_of_words(texts))

    def hint(self, persona: Hashable, next_use: float | None = None) -> None:
        self.hints[persona] = next_use

    def adapters(self) -> list[str]:
        return []

    def stats(self) -> dict:
        busy = self.steps * self.step_s
        return {
            "steps": self.steps,
            "tokens_per_s": self.generated / busy if busy else 0.0,
            "recent_tokens_per_s": self.generated / busy if busy else 0.0,
            "tokens_generated": self.generated,
            "last_batch_seqs": self._batches[-1] if self._batches else 0,
            "recent_batch_seqs": list(self._batches),
            "recent_step_tokens_per_s": [n / self.step_s for n in self._generated],
            "mean_batch_seqs": sum(self._batches) / len(self._batches) if self._batches else 0.0,
            "prefix_cache_hit_rate": 0.75,
            "kv_pool_use": 0.125,
            "preemptions": 0,
            "expert_load": [list(load) for load in self._load],
        }
