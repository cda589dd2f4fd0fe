"""What a simulation asks of a model: one batched decision for every agent turn of a tick.

`TurnModel` is the contract; `EngineModel` serves it with the runtime engine (all turns
submitted together, so they share batched forward passes and the persona prefix cache),
`ScriptedModel` with a plain Python policy (scenario baselines, demonstrations for
training, fast tests of the loop), `Player` with whoever answers one turn at a time (a
person in the TUI). `open_model` turns what a user passes as `model=` into one of them.
"""

from __future__ import annotations

import hashlib
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from swarm.agents import Agent, TurnKind, TurnRequest
from swarm.runtime.chat import fit_prompt


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
    prompt repeats the generated tokens and their cached KV), and the model time the turn took."""

    value: Any
    text: str
    seconds: float | None = None  # from the batch's submission to this turn's last token


@dataclass(frozen=True)
class NoAction:
    """A turn that produced no usable value (the model ran out of tokens, the prompt did not fit, ...)."""

    reason: str
    seconds: float | None = None  # model time spent on it (None: it never ran)


class TurnModel(ABC):
    """Decides turns in batches. Invariants: `decide` returns one value per turn, in order (the
    schema's type, an `Answer` holding one, or `NoAction`), and never raises for one bad turn; a model given the same
    turns and seeds returns the same values. `ref` names the model in checkpoints."""

    ref: str | None = None
    device: str | None = None  # where it computes ("cpu", "cuda:0"; None: no device), shown in the TUI header

    @abstractmethod
    def decide(self, turns: Sequence[Turn]) -> list[Any]: ...

    @abstractmethod
    def embed(self, texts: list[str]) -> np.ndarray:
        """texts -> [n, dim] float32 unit vectors, for memory relevance."""

    def hint(self, persona: str, next_use: float) -> None:  # noqa: B027 (optional: models without a cache)
        """The tick at which `persona` is next expected to act (a KV cache keeps the soonest)."""

    def prefetch(self) -> None:  # noqa: B027 (optional: models without a cache tier)
        """The hints of a tick are all in: bring back what the next turns need (a KV cache's second tier)."""

    def stats(self) -> dict:
        return {}

    def adapters(self) -> set[str]:
        """Names of the LoRA adapters this model can serve."""
        return set()


Progress = Callable[[str, str, bool], None]  # (agent id, the text of its act turn so far, whether it is done)


class EngineModel(TurnModel):
    """Every turn of a tick goes to the engine at once; the engine batches them step by step.

    `progress(agent, text, done)` (optional) is called from the thread running `decide`, after each engine
    step that added to an act turn's text (`done`: the turn is complete, `text` is final), for the agents
    `streams(agent)` accepts (all by default): decoding partial text costs, so a UI asks only for the
    agent it shows. `clock` times the turns.
    """

    def __init__(self, engine, temperature: float = 0.7, top_p: float = 0.95, ref: str | None = None,
                 clock: Callable[[], float] = time.perf_counter):
        check_sampling(temperature, top_p)
        self.engine, self.temperature, self.top_p = engine, temperature, top_p
        self.ref, self.clock = ref, clock
        self.progress: Progress | None = None
        self.streams: Callable[[str], bool] | None = None

    @property
    def device(self) -> str | None:
        d = getattr(self.engine, "device", None)
        return None if d is None else str(d)

    def fit(self, messages: list[dict[str, str]], max_tokens: int) -> list[int]:
        return fit_prompt(self.engine, messages, max_tokens)

    def decide(self, turns: Sequence[Turn]) -> list[Any]:
        from swarm.runtime import SamplingParams, SwarmError

        t0 = self.clock()
        handles: list[Any] = []
        for t in turns:
            r = t.request
            params = SamplingParams(max_tokens=r.max_tokens, temperature=self.temperature, top_p=self.top_p,
                                    seed=t.seed)
            try:
                handles.append(self.engine.submit(self.fit(r.messages, r.max_tokens), params, persona=r.persona,
                                                  adapter=r.adapter, schema=r.constraint))
            except SwarmError as e:  # e.g. a prompt past the context: this turn fails, the tick goes on
                handles.append(NoAction(str(e)))
        seconds: list[float | None] = [None] * len(handles)
        pending = [i for i, h in enumerate(handles) if not isinstance(h, NoAction)]
        while pending:
            self.engine.step()
            now = self.clock() - t0
            left = []
            for i in pending:
                if handles[i].done:
                    seconds[i] = now
                else:
                    left.append(i)
            if self.progress is not None:
                self._report(turns, handles, pending)
            pending = left
        return [h if isinstance(h, NoAction) else answer_of(h.result(), seconds[i]) for i, h in enumerate(handles)]

    def _report(self, turns: Sequence[Turn], handles: list[Any], stepped: list[int]) -> None:
        """Tell `progress` about the act turns of the step just run whose text grew since last told."""
        for i in stepped:
            r = turns[i].request
            if r.kind != TurnKind.ACT or (self.streams is not None and not self.streams(r.agent_id)):
                continue
            h = handles[i]
            if h.done:
                self.progress(r.agent_id, h.result().text, True)
            elif h.new_text():
                self.progress(r.agent_id, h.partial_text(), False)

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.engine.embed(texts).numpy()

    def hint(self, persona: str, next_use: float) -> None:  # noqa: B027 (optional: models without a cache)
        self.engine.hint(persona, next_use=next_use)

    def prefetch(self) -> None:
        if hasattr(self.engine, "prefetch"):
            self.engine.prefetch()

    def stats(self) -> dict:
        return self.engine.stats()

    def adapters(self) -> set[str]:
        return set(self.engine.adapters())


def check_sampling(temperature: float | None = None, top_p: float | None = None) -> None:
    """A ValueError now for sampling settings every turn would refuse later: temperature >= 0 (0 is greedy),
    top_p in (0, 1] (None: not given)."""
    from swarm.runtime import SamplingParams

    SamplingParams(**{k: v for k, v in (("temperature", temperature), ("top_p", top_p)) if v is not None})


def wire_schema(constraint: Any) -> dict:
    """A turn's constraint (an action type, or one `Narrowed` to this tick's choices) as the JSON schema that
    another engine compiles into the same grammar (`JsonSchema(..., keep_order=True)`, or a server's strict
    `response_format`)."""
    from swarm.runtime.grammar import Narrowed, closed_json_schema

    return constraint.json_schema() if isinstance(constraint, Narrowed) else closed_json_schema(constraint)


def wire_schemas(turns: Sequence[Turn]) -> list[dict]:
    """Each turn's `wire_schema`, made once per distinct constraint (a tick's agents share most of them)."""
    made: dict[Any, dict] = {}
    for t in turns:
        if t.request.constraint not in made:
            made[t.request.constraint] = wire_schema(t.request.constraint)
    return [made[t.request.constraint] for t in turns]


def answer_of(completion, seconds: float | None = None) -> Answer | NoAction:
    """A constrained completion as a turn's answer: its decoded value and text, or why there is none."""
    if completion.value is not None:
        return Answer(completion.value, completion.text, seconds)
    if completion.error:
        return NoAction(f"the model's answer broke off: {completion.error}", seconds)
    return NoAction(f"the model's answer was cut off ({completion.finish_reason}) before it was complete", seconds)


class ScriptedModel(TurnModel):
    """A Python policy `policy(turn) -> value` in place of a language model. Relevance embeddings are
    hashed bags of words (no model to ask)."""

    def __init__(self, policy: Callable[[Turn], Any], ref: str | None = None, dim: int = 256):
        self.policy, self.ref, self.dim = policy, ref, dim

    def decide(self, turns: Sequence[Turn]) -> list[Any]:
        return [self.policy(t) for t in turns]

    def embed(self, texts: list[str]) -> np.ndarray:
        return hashed_bag_of_words(texts, self.dim)


class Player(TurnModel):
    """Turns decided one at a time by `ask(turn)`: a person at a UI (the TUI's take-control), a test, a bot.
    `ask` may block until the answer is in; it returns a value of the turn's schema type, or a `NoAction`
    to give the turn up (the agent waits, and a `fail` event says why). An `ask` that raises, or answers with
    something the schema's type does not decode, gives its turn up the same way: one bad answer never stops
    the tick. Give an agent to a player with `Simulation.play`;
    its memory stays embedded by its own model (`embed` here is only the contract's bag of words)."""

    def __init__(self, ask: Callable[[Turn], Any], ref: str = "player", clock: Callable[[], float] = time.monotonic):
        self.ask, self.ref, self.clock = ask, ref, clock

    def decide(self, turns: Sequence[Turn]) -> list[Any]:
        out: list[Any] = []
        for t in turns:
            t0 = self.clock()
            try:
                value = self.ask(t)
                if not isinstance(value, NoAction):  # checked as a model's answer is: the schema's type decodes it
                    value = msgspec.convert(msgspec.to_builtins(value), getattr(t.request.constraint, "type",
                                                                                t.request.constraint))
            except Exception as e:  # the contract: one bad turn never raises out of decide
                value = NoAction(f"the player's answer failed: {type(e).__name__}: {e}")
            seconds = self.clock() - t0
            out.append(value if isinstance(value, NoAction) else Answer(value, msgspec.json.encode(value).decode(),
                                                                       seconds))
        return out

    def embed(self, texts: list[str]) -> np.ndarray:
        return hashed_bag_of_words(texts)


def hashed_bag_of_words(texts: list[str], dim: int = 256) -> np.ndarray:
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for i, text in enumerate(texts):
        for word in re.findall(r"[a-z0-9']+", text.lower()):
            out[i, int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little") % dim] += 1.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-12)


def open_model(model: Any, engine_config: Any = None, **sampling: float) -> TurnModel:
    """`model=` as users pass it: a TurnModel, an Engine, a checkpoint folder path (loaded with
    `engine_config`, an EngineConfig, when given), `mqtt://host:port/POOL` (a pool's workers), or
    `openai:BASE_URL#MODEL` (an OpenAI-compatible server; the key from OPENAI_API_KEY).
    `sampling` (`temperature`, `top_p`) goes to the model it makes (default 0.7 and 0.95)."""
    if engine_config is not None and not isinstance(model, (str, Path)):
        raise ValueError("engine_config applies to a model the simulation loads (a folder or a bundled name), "
                         f"not to a {type(model).__name__}: configure that engine where it is made")
    unknown = sorted(set(sampling) - {"temperature", "top_p"})
    if unknown:
        raise TypeError(f"open_model takes temperature= and top_p=, not {', '.join(unknown)}")
    check_sampling(**sampling)  # before a model folder takes its time to load
    if isinstance(model, TurnModel):
        if sampling:
            raise ValueError(f"temperature and top_p apply to a model open_model makes, not to a "
                             f"{type(model).__name__}: set them where that model is made")
        return model
    if model is None:
        raise ValueError("no model: pass model= a checkpoint folder, an Engine, or a ScriptedModel")
    if isinstance(model, str) and model.startswith("openai:"):
        if engine_config is not None:
            raise ValueError("engine_config applies to a model the simulation loads; an OpenAI-compatible server "
                             "configures its own engine")
        from swarm.openai_model import OpenAIModel, parse_spec

        return OpenAIModel(*parse_spec(model), **sampling)
    if isinstance(model, str) and model.startswith(("mqtt://", "mqtts://")):
        if engine_config is not None:
            raise ValueError("engine_config applies to a model the simulation loads; a pool's workers configure "
                             "their own engines (swarm worker --kv-memory ...)")
        from swarm.pool import PoolModel

        return PoolModel(model, **sampling)
    if isinstance(model, (str, Path)):
        from swarm.runtime import Engine, model_path

        try:
            path = model_path(model)
        except Exception as e:
            raise ValueError(f"{e} (pass a local Hugging Face model folder or a .gguf file)") from None
        # a bundled model is referred to by name, so a checkpoint names it wherever swarm is installed
        ref = str(model) if Path(str(model)).name == str(model) and not Path(str(model)).exists() else str(path)
        return EngineModel(Engine.from_pretrained(path, config=engine_config), ref=ref, **sampling)
    if hasattr(model, "submit") and hasattr(model, "step"):
        return EngineModel(model, ref=getattr(model, "source", None), **sampling)
    raise TypeError(f"cannot use {type(model).__name__} as a model")
