"""An agent: a persona with memory, a plan and a conversation history, turned into model requests.

The simulation drives it in three verbs: `observe` what happened, build
`requests` for the agents that act (one batch for the engine), and
`receive` each answer. Prompts are laid out for the prefix cache: the
persona's system message is the same bytes every turn, and the history
only grows between trims, so consecutive turns share a long prefix.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from swarm.agents.actions import Insight, PlanUpdate
from swarm.agents.memory import KINDS, Memory, MemoryStream
from swarm.agents.persona import Persona
from swarm.agents.plans import Plan

__all__ = ["Agent", "Observation", "TurnKind", "TurnRequest"]

class TurnKind(enum.StrEnum):
    """What a turn asks of the model: an action, a reflection (an `Insight`) or a plan (a `PlanUpdate`). A str:
    `kind == "act"` holds, and it is written as its value in JSON."""

    ACT = "act"
    REFLECT = "reflect"
    PLAN = "plan"


ACT_TOKENS, REFLECT_TOKENS, PLAN_TOKENS = 200, 160, 200  # above the longest JSON the schemas allow, in practice
MAX_LISTED_OBSERVATIONS = 12  # per prompt; older unanswered ones stay in memory
EMA_ALPHA = 0.3  # weight of the newest interval in the acting-interval estimate
REPLAN_IMPORTANCE = 8.0  # an observation this important (0-10) makes the agent re-plan
_BREAKS = re.compile(r"\s*[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]\s*")  # what str.splitlines() splits on


class Observation(msgspec.Struct, frozen=True):
    """Something an agent perceives at `tick` (importance 0..10; `kind` is a memory kind)."""

    tick: int
    text: str
    importance: float = 3.0
    kind: str = "observation"
    source: str | None = None

    def __post_init__(self):
        if not 0 <= self.importance <= 10:
            raise ValueError(f"importance must be within 0..10, got {self.importance}")
        if self.kind not in KINDS:
            raise ValueError(f"unknown observation kind {self.kind!r}; expected one of {KINDS}")


@dataclass(frozen=True)
class TurnRequest:
    """One model call an agent wants: chat `messages` answered with one value of `schema`.

    `persona` is the engine's prefix-cache key (the agent id); `adapter` the persona's LoRA adapter.
    `choices` narrows the schema's choice fields (`one_of` kinds) to the names valid now (see `constraint`).
    `step` (the plan step shown) and `observed` (how many new observations the prompt holds) tell
    `Agent.receive` what the answer settles.
    """

    agent_id: str
    kind: TurnKind
    messages: list[dict[str, str]]
    schema: Any
    max_tokens: int
    persona: str
    adapter: str | None = None
    step: int | None = None
    observed: int = 0
    choices: dict[str, tuple[str, ...]] | None = None

    @property
    def constraint(self) -> Any:
        """What a model constrains the answer with: the schema, narrowed to `choices` when there are any."""
        if not self.choices:
            return self.schema
        from swarm.runtime.grammar import Narrowed

        return Narrowed(self.schema, self.choices)


def add_exchange(history: list[dict[str, str]], user: str, answer: str, turns: int) -> list[dict[str, str]]:
    """`history` (alternating user / assistant messages) with one exchange more, kept to `turns` exchanges.
    Past the limit it is cut to half at once rather than by one exchange a turn: the prompt prefix (and
    its cached KV) then stays the same for several turns between cuts."""
    history = [*history, {"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    if len(history) > 2 * turns:
        keep = (turns + 1) // 2
        history = history[len(history) - 2 * keep :] if keep else []
    return history


class Agent:
    """A persona in the simulation. `history_turns` bounds the (user, assistant) exchanges kept in prompts;
    `wake_after` ticks without a turn make the agent act even with nothing new (None: only when something
    happens), so a world where everyone waits does not stall; `idle_since` is the tick it last acted (or
    joined)."""

    def __init__(self, id: str, persona: Persona, memory: MemoryStream | None = None, plan: Plan | None = None,
                 history_turns: int = 6, wake_after: int | None = None, idle_since: int = 0):
        if not isinstance(id, str) or not id:
            raise ValueError("an agent needs a non-empty string id")
        if history_turns < 0:
            raise ValueError(f"history_turns must be >= 0, got {history_turns}")
        if wake_after is not None and (isinstance(wake_after, bool) or not isinstance(wake_after, int)
                                       or wake_after < 1):
            raise ValueError(f"wake_after is a number of ticks >= 1 (or None), got {wake_after!r}")
        self.id, self.persona, self.history_turns = id, persona, history_turns
        self.wake_after, self.idle_since = wake_after, idle_since
        self.memory = memory if memory is not None else MemoryStream()
        self.plan = plan if plan is not None else Plan()
        self.history: list[dict[str, str]] = []  # alternating user / assistant messages
        self.new_observations: list[Observation] = []  # since the last answered act request
        self._new_memory_ids: list[int] = []  # their memories, left out of retrieval (the prompt lists them)
        self.last_acted: int | None = None
        self.act_interval: float | None = None  # moving average of the ticks between turns
        self.last_latency: float | None = None  # model seconds of its last turn (None: scripted, or none yet)

    # -- the simulation's questions (O(1)) -------------------------------------------------

    def observe(self, obs: Observation) -> None:
        self._new_memory_ids.append(self.memory.add(obs.tick, obs.text, obs.importance, obs.kind).id)
        self.new_observations.append(obs)
        if obs.importance >= REPLAN_IMPORTANCE and self.plan.has_open_steps():
            self.plan.invalidate(f"something important happened: {obs.text}")

    def wants_to_act(self, tick: int) -> bool:
        """Something new was observed, a plan step is due, the plan needs re-planning, or the agent has been
        idle for `wake_after` ticks."""
        return self.has_news(tick) or self.woken(tick)

    def has_news(self, tick: int) -> bool:
        """Something new was observed, a plan step is due, or the plan needs re-planning."""
        return bool(self.new_observations) or self.plan.needs_replan or self.plan.due(tick)

    def woken(self, tick: int) -> bool:
        """Idle for `wake_after` ticks: asked to act even with nothing new."""
        return self.wake_after is not None and tick - self.idle_since >= self.wake_after

    def needs_plan(self) -> bool:
        return self.plan.needs_replan or (bool(self.persona.goals) and not self.plan.has_open_steps())

    def ticks_until_next_act(self, tick: int, *, arrives: int | None = None,
                             expect: Callable[[], float | None] | None = None) -> float:
        """Ticks from `tick` until the agent is expected to act (a cache hint for the engine): 0 if it
        wants to act now; else the sooner of its next due plan step and a guess, inf if it has neither.

        The guess is `expect()` (what the scenario knows, e.g. its timetable; asked only when the agent
        has nothing to act on now) unless that is missing or None, then the usual interval between its
        turns. An agent travelling until tick `arrives` acts no sooner than that.
        """
        wait = 0.0 if arrives is None else max(0.0, float(arrives - tick))
        if self.wants_to_act(tick):
            return wait  # what it wants to act on waits for it
        guess = expect() if expect is not None else None
        if guess is None and self.last_acted is not None and self.act_interval is not None:
            guess = max(1.0, self.last_acted + self.act_interval - tick)
        for due in (self.plan.next_due_tick(),
                    None if self.wake_after is None else self.idle_since + self.wake_after):
            if due is not None and (guess is None or due - tick < guess):
                guess = float(due - tick)
        return math.inf if guess is None else max(wait, float(guess))

    def query_texts(self) -> list[str]:
        """What to retrieve memories for: the new observations, else the current plan step (none if neither).
        The query vector is the mean of their embeddings (`embed_pending`): the observations are memories
        embedded anyway, so a query costs no embedding of its own."""
        if self.new_observations:
            return [o.text for o in self.new_observations]
        step = self.plan.next_step(math.inf)
        return [step.text] if step else []

    # -- requests ---------------------------------------------------------------------------

    def requests(self, tick: int, world_text: str, situation: str, schema: Any, query_vector: Any = None,
                 max_tokens: int = ACT_TOKENS, k_memories: int = 5, focus: str | None = None, *,
                 actions: str = "", options: str | None = None,
                 choices: dict[str, tuple[str, ...]] | None = None) -> list[TurnRequest]:
        """The act request, then a reflect request if enough happened, then a plan request if the plan
        needs one. `query_vector` (from `query_texts()`) turns on memory retrieval; `focus` (what
        the scenario says the agent must deal with now) closes the act prompt, right before the question.
        `actions` (`describe_actions`) goes into the system message, the same every turn; `options` (what can
        be done now, when that is less than `actions` lists) into the act prompt; `choices` narrows the act's
        schema to the names valid now."""
        system = {"role": "system", "content": self.persona.system_message(world_text, actions=actions)}
        out = [self._act(system, tick, situation, schema, query_vector, max_tokens, k_memories, focus, options,
                         choices)]
        if self.memory.needs_reflection():
            out.append(self._reflect(system))
        if self.needs_plan():
            out.append(self._plan(system))
        return out

    def _request(self, kind: TurnKind, messages: list[dict[str, str]], schema: Any, max_tokens: int,
                 **extra: Any) -> TurnRequest:
        return TurnRequest(self.id, kind, messages, schema, max_tokens, self.id, self.persona.adapter, **extra)

    def _act(self, system: dict, tick: int, situation: str, schema: Any, query_vector: Any, max_tokens: int,
             k: int, focus: str | None = None, options: str | None = None,
             choices: dict[str, tuple[str, ...]] | None = None) -> TurnRequest:
        sections = [f"Tick {tick}. {situation}".rstrip()]
        if self.new_observations:
            listed = self.new_observations[-MAX_LISTED_OBSERVATIONS:]
            sections.append("New observations:\n" + _bullets(o.text for o in listed))
        if query_vector is not None:
            listed_ids = self._new_memory_ids[-MAX_LISTED_OBSERVATIONS:]
            recalled = self.memory.retrieve(query_vector, tick, k, exclude=listed_ids)
            if recalled:
                sections.append("You remember:\n" + _memories(recalled))
        step = self.plan.next_step(tick)
        if step is not None:
            sections.append(f"Your current step: {one_line(step.text)}")
        if options:
            sections.append(options)
        if focus:  # right before the question: a small model reads best what stands nearest its answer
            sections.append(f"Now: {focus}")
        sections.append("Answer with one action as JSON.")
        user = {"role": "user", "content": "\n\n".join(sections)}
        return self._request(TurnKind.ACT, [system, *self.history, user], schema, max_tokens,
                             step=step.id if step else None, observed=len(self.new_observations), choices=choices)

    def _reflect(self, system: dict) -> TurnRequest:
        user = ("Your recent memories:\n" + _memories(self.memory.reflection_sources()) + "\n\n"
                "What is the most important conclusion you draw from them? Answer as JSON with one \"text\".")
        return self._request(TurnKind.REFLECT, [system, {"role": "user", "content": user}], Insight, REFLECT_TOKENS)

    def _plan(self, system: dict) -> TurnRequest:
        sections = []
        if self.persona.goals:
            sections.append("Your goals:\n" + _bullets(self.persona.goals))
        sections.append("Your plan:\n" + self.plan.describe())
        if self.plan.replan_reason:
            sections.append(f"The plan must change: {self.plan.replan_reason}")
        sources = self.memory.reflection_sources(n=5)
        if sources:
            sections.append("Your recent memories:\n" + _memories(sources))
        sections.append("Answer with your next steps (at most 4) as JSON with a \"steps\" list.")
        user = {"role": "user", "content": "\n\n".join(sections)}
        return self._request(TurnKind.PLAN, [system, user], PlanUpdate, PLAN_TOKENS)

    # -- answers ------------------------------------------------------------------------------

    def receive(self, request: TurnRequest, value: Any, tick: int, text: str | None = None) -> Any:
        """Take the model's answer to one of this agent's requests; returns `value`.

        `text` is the completion's JSON as generated (kept in the history so the next prompt repeats the
        exact tokens); by default `value` is encoded again.
        """
        if request.agent_id != self.id:
            raise ValueError(f"request of agent {request.agent_id!r} given to agent {self.id!r}")
        text = text if text is not None else msgspec.json.encode(value).decode()
        if request.kind == TurnKind.ACT:
            self._acted(request, text, tick)
        elif request.kind == TurnKind.REFLECT:
            self.memory.add_reflection(tick, value.text)
        elif request.kind == TurnKind.PLAN:
            self.plan.prune()
            goal = self.plan.top_goal()
            if goal is None:
                goal = self.plan.add_goal("; ".join(self.persona.goals) or "live your life in character")
            steps = [one_line(step) for step in value.steps]  # the plan prompt lists one step a line
            self.plan.replace_steps(goal, steps)
            self.memory.add(tick, "I plan to: " + "; ".join(steps), 3.0, kind="plan")
        else:
            raise ValueError(f"unknown request kind {request.kind!r}")
        return value

    def _acted(self, request: TurnRequest, text: str, tick: int) -> None:
        self.memory.add(tick, f"I did: {text}", 2.0, kind="action")
        self.history = add_exchange(self.history, request.messages[-1]["content"], text, self.history_turns)
        del self.new_observations[: request.observed], self._new_memory_ids[: request.observed]
        if request.step is not None and request.step in self.plan.graph:
            if self.plan.get(request.step).status == "pending":
                self.plan.set_status(request.step, "active")
        if self.last_acted is not None and tick > self.last_acted:
            interval = tick - self.last_acted
            self.act_interval = interval if self.act_interval is None else (
                EMA_ALPHA * interval + (1 - EMA_ALPHA) * self.act_interval)
        self.last_acted = self.idle_since = tick

    # -- checkpoints ----------------------------------------------------------------------------

    def to_state(self) -> dict:
        """Plain data for msgpack checkpoints; `Agent.from_state` rebuilds an agent that continues the same."""
        return {
            "id": self.id, "persona": msgspec.to_builtins(self.persona), "history_turns": self.history_turns,
            "wake_after": self.wake_after, "idle_since": self.idle_since,
            "memory": self.memory.to_state(), "plan": self.plan.to_state(),
            "history": [dict(m) for m in self.history],
            "new_observations": msgspec.to_builtins(self.new_observations),
            "new_memory_ids": list(self._new_memory_ids),
            "last_acted": self.last_acted, "act_interval": self.act_interval,
        }

    @classmethod
    def from_state(cls, state: dict) -> Agent:
        agent = cls(state["id"], msgspec.convert(state["persona"], Persona), MemoryStream.from_state(state["memory"]),
                    Plan.from_state(state["plan"]), state["history_turns"], state.get("wake_after"),
                    state.get("idle_since", state["last_acted"] or 0))  # older checkpoints: no waking
        agent.history = [dict(m) for m in state["history"]]
        agent.new_observations = msgspec.convert(state["new_observations"], list[Observation])
        agent._new_memory_ids = list(state["new_memory_ids"])
        agent.last_acted, agent.act_interval = state["last_acted"], state["act_interval"]
        return agent


def one_line(text: str) -> str:
    """`text` with every line break (and the spaces around it) made one space. What others said, a message from
    outside or a model's own plan enters prompts as one bullet each: none can start a line that reads as a
    new observation or instruction."""
    return _BREAKS.sub(" ", text)


def _bullets(lines) -> str:
    return "\n".join(f"- {one_line(line)}" for line in lines)


def _memories(memories: list[Memory]) -> str:
    return "\n".join(f"- (tick {m.tick}) {one_line(m.text)}" for m in memories)
