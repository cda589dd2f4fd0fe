"""What a simulation asks of a model: one batched decision for every agent turn of a tick.

`TurnModel` is the contract; `EngineModel` serves it with the runtime engine (all turns
submitted together, so they share batched forward passes and the persona prefix cache),
`ScriptedModel` with a plain Python policy (scenario baselines, demonstrations for
training, fast tests of the loop). `open_model` turns what a user passes as `model=`
into one of them.
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from swarm.agents import Agent, TurnRequest


@dataclass(frozen=True)
class Turn:
    """One request of one agent this tick, with what a scripted policy may look at."""

    request: TurnRequest
    agent: Agent
    world: Any  # swarm.world.World (typed loosely: the model layer must not need the world)
    seed: int  # sampling seed drawn from the simulation's generator: a run is fixed by its seed
    sim: Any = None  # the Simulation, for scripted policies that read the scenario's state


@dataclass(frozen=True)
class Answer:
    """A value with the exact text the model wrote for it (kept in the agent's history, so the next
    prompt repeats the generated tokens and their cached KV)."""

    value: Any
    text: str


@dataclass(frozen=True)
class NoAction:
    """A turn that produced no usable value (the model ran out of tokens, the prompt did not fit, ...)."""

    reason: str


class TurnModel(ABC):
    """Decides turns in batches. Invariants: `decide` returns one value per turn, in order (the
    schema's type, an `Answer` holding one, or `NoAction`), and never raises for one bad turn; a model given the same
    turns and seeds returns the same values. `ref` names the model in checkpoints."""

    ref: str | None = None

    @abstractmethod
    def decide(self, turns: Sequence[Turn]) -> list[Any]: ...

    @abstractmethod
    def embed(self, texts: list[str]) -> np.ndarray:
        """texts -> [n, dim] float32 unit vectors, for memory relevance."""

    def hint(self, persona: str, next_use: float) -> None:  # noqa: B027 (optional: models without a cache)
        """The tick at which `persona` is next expected to act (a KV cache keeps the soonest)."""

    def stats(self) -> dict:
        return {}

    def adapters(self) -> set[str]:
        """Names of the LoRA adapters this model can serve."""
        return set()


class EngineModel(TurnModel):
    """Every turn of a tick goes to the engine at once; the engine batches them step by step."""

    def __init__(self, engine, temperature: float = 0.7, top_p: float = 0.95, ref: str | None = None):
        self.engine, self.temperature, self.top_p = engine, temperature, top_p
        self.ref = ref

    def render(self, messages: list[dict[str, str]]) -> str:
        tok = self.engine.tokenizer
        if tok.chat_template:
            return tok.apply_chat_template(messages, add_generation_prompt=True)
        return "".join(f"{m['role']}: {m['content']}\n\n" for m in messages) + "assistant: "

    def fit(self, messages: list[dict[str, str]], max_tokens: int) -> list[int]:
        """The prompt's token ids, leaving out the oldest exchanges of the history (never the system
        message or the newest turn) until the prompt and its answer fit the model's context."""
        ids = self.engine.tokenizer.encode(self.render(messages))
        while len(ids) + max_tokens > self.engine.max_context and len(messages) > 3:
            messages = [messages[0], *messages[3:]]  # one (user, assistant) exchange less
            ids = self.engine.tokenizer.encode(self.render(messages))
        return ids

    def decide(self, turns: Sequence[Turn]) -> list[Any]:
        from swarm.runtime import SamplingParams, SwarmError

        handles: list[Any] = []
        for t in turns:
            r = t.request
            params = SamplingParams(max_tokens=r.max_tokens, temperature=self.temperature, top_p=self.top_p,
                                    seed=t.seed)
            try:
                handles.append(self.engine.submit(self.fit(r.messages, r.max_tokens), params, persona=r.persona,
                                                  adapter=r.adapter, schema=r.schema))
            except SwarmError as e:  # e.g. a prompt past the context: this turn fails, the tick goes on
                handles.append(NoAction(str(e)))
        while not all(isinstance(h, NoAction) or h.done for h in handles):
            self.engine.step()
        return [h if isinstance(h, NoAction) else _value(h.result()) for h in handles]

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.engine.embed(texts).numpy()

    def hint(self, persona: str, next_use: float) -> None:  # noqa: B027 (optional: models without a cache)
        self.engine.hint(persona, next_use=next_use)

    def stats(self) -> dict:
        return self.engine.stats()

    def adapters(self) -> set[str]:
        return set(self.engine.adapters())


def _value(completion) -> Any:
    if completion.value is not None:
        return Answer(completion.value, completion.text)
    if completion.error:
        return NoAction(f"the model's answer broke off: {completion.error}")
    return NoAction(f"the model's answer was cut off ({completion.finish_reason}) before it was complete")


class ScriptedModel(TurnModel):
    """A Python policy `policy(turn) -> value` in place of a language model. Relevance embeddings are
    hashed bags of words (no model to ask)."""

    def __init__(self, policy: Callable[[Turn], Any], ref: str | None = None, dim: int = 256):
        self.policy, self.ref, self.dim = policy, ref, dim

    def decide(self, turns: Sequence[Turn]) -> list[Any]:
        return [self.policy(t) for t in turns]

    def embed(self, texts: list[str]) -> np.ndarray:
        return hashed_bag_of_words(texts, self.dim)


def hashed_bag_of_words(texts: list[str], dim: int = 256) -> np.ndarray:
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for i, text in enumerate(texts):
        for word in re.findall(r"[a-z0-9']+", text.lower()):
            out[i, int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little") % dim] += 1.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-12)


def open_model(model: Any) -> TurnModel:
    """`model=` as users pass it: a TurnModel, an Engine, or a checkpoint folder path."""
    if isinstance(model, TurnModel):
        return model
    if model is None:
        raise ValueError("no model: pass model= a checkpoint folder, an Engine, or a ScriptedModel")
    if isinstance(model, (str, Path)):
        from swarm.runtime import Engine, model_path

        try:
            path = model_path(model)
        except Exception as e:
            raise ValueError(f"{e} (pass a local Hugging Face model folder)") from None
        # a bundled model is referred to by name, so a checkpoint names it wherever swarm is installed
        ref = str(model) if Path(str(model)).name == str(model) and not Path(str(model)).is_dir() else str(path)
        return EngineModel(Engine.from_pretrained(path), ref=ref)
    if hasattr(model, "submit") and hasattr(model, "step"):
        return EngineModel(model, ref=getattr(model, "source", None))
    raise TypeError(f"cannot use {type(model).__name__} as a model")
