"""Demonstrations recorded from a run: every answered turn as one line of chat fine-tuning data.

`sim.record_demos("demos.jsonl")` (`swarm run ... --record-demos FILE`) writes, after each tick, one JSON
line per turn that got an answer, in the layout chat fine-tuning tools read (`{"messages": [...]}`: the
system and user turns as the simulation built them for the model, then the assistant turn with the exact
text answered), with what the turn was:

  scenario, sim, seed, tick   where and when
  agent, persona, style       who (`persona` is the persona's name)
  kind                        act, reflect or plan
  adapter, model              the persona's LoRA adapter and the model's name in the simulation
  source                      "model" (a language model wrote it), "scripted" (a Python policy chose it) or
                              "person" (someone played the agent: `Simulation.play` with a `Player`)
  schema                      the JSON schema the answer had to follow (narrowed to that tick's choices)

A model's answer is its text as generated; a scripted policy's or a person's is the value as compact JSON, the
text the agent's history keeps either way. The messages are the ones the simulation built: a model whose context
cannot hold them drops the oldest exchanges of the history first (see `fit_prompt`). Turns that produced
no answer are never written.

Filters: `successful_only` leaves out the act turns of agents whose action failed that tick (a `fail`
event: not there, not allowed, ...), `agents` and `kinds` keep only those agents and turn kinds, and
`actions` only the act turns that chose those actions (their JSON "type": say, bid, ...), to balance data
where one action (often `wait`) would drown the rest.
The file is written line by line and flushed every tick, so a run cut short keeps every finished tick.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from swarm.agents import TurnKind
from swarm.events import Event
from swarm.model import Answer, NoAction, Player, ScriptedModel, Turn, wire_schema

KINDS = tuple(TurnKind)


class Demonstration(msgspec.Struct, kw_only=True):
    """One answered turn (see the module docstring)."""

    messages: list[dict[str, str]]
    scenario: str | None
    sim: str
    seed: int
    tick: int
    agent: str
    persona: str
    style: str | None
    kind: str
    adapter: str | None
    model: str
    source: str
    schema: dict[str, Any]


class DemoWriter:
    """Appends a run's demonstrations to `path` (a new file: one that exists is refused unless `append`)."""

    def __init__(self, path: str | Path, *, successful_only: bool = False, agents: Iterable[str] | None = None,
                 kinds: Iterable[str] | None = None, actions: Iterable[str] | None = None, append: bool = False):
        self.path = Path(path)
        self.successful_only = successful_only
        self.agents = None if agents is None else frozenset(agents)
        self.kinds = None if kinds is None else frozenset(kinds)
        self.actions = None if actions is None else frozenset(actions)
        if self.kinds is not None and not self.kinds <= set(KINDS):
            raise ValueError(f"unknown turn kinds {sorted(self.kinds - set(KINDS))}; choose from {', '.join(KINDS)}")
        if self.path.exists() and not append:
            raise FileExistsError(f"{self.path} exists: demonstrations are not written over another run's "
                                  "(pick a new file, or pass append=True)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab")
        self._enc = msgspec.json.Encoder()
        self._schemas: dict[Any, dict] = {}  # a tick's agents share most constraints: each made once
        self.written = 0

    def write(self, sim: Any, turns: Sequence[Turn], values: Sequence[Any], events: Sequence[Event],
              model_of: Callable[[Turn], tuple[str, Any]]) -> None:
        """One tick's answered turns. `model_of(turn)`: (the model's name, the model) that decided it."""
        failed = {e.actor for e in events if e.kind == "fail"} if self.successful_only else set()
        lines = []
        for turn, value in zip(turns, values, strict=True):
            r, agent = turn.request, turn.agent
            if isinstance(value, NoAction) or (self.agents is not None and agent.id not in self.agents):
                continue
            if (self.kinds is not None and r.kind not in self.kinds) or (r.kind == TurnKind.ACT and agent.id in failed):
                continue
            chosen = value.value if isinstance(value, Answer) else value
            if self.actions is not None and r.kind == TurnKind.ACT and _action(chosen) not in self.actions:
                continue
            text = value.text if isinstance(value, Answer) else msgspec.json.encode(value).decode()
            name, model = model_of(turn)
            if r.constraint not in self._schemas:
                self._schemas[r.constraint] = wire_schema(r.constraint)
            lines.append(self._enc.encode(Demonstration(
                messages=[*(dict(m) for m in r.messages), {"role": "assistant", "content": text}],
                scenario=sim.scenario.spec if sim.scenario is not None else None, sim=sim.name, seed=sim.seed,
                tick=turn.world.tick, agent=agent.id, persona=agent.persona.name, style=agent.persona.style,
                kind=r.kind, adapter=r.adapter, model=name,
                source=_source(model),
                schema=self._schemas[r.constraint])))
        if lines:
            self._file.write(b"\n".join(lines) + b"\n")
            self._file.flush()
            self.written += len(lines)

    def close(self) -> None:
        self._file.close()


def _source(model: Any) -> str:
    return "person" if isinstance(model, Player) else "scripted" if isinstance(model, ScriptedModel) else "model"


def _action(value: Any) -> str | None:
    """The action an act turn chose: its JSON "type" tag."""
    plain = msgspec.to_builtins(value)
    return plain.get("type") if isinstance(plain, dict) else None


def read_demos(path: str | Path) -> list[Demonstration]:
    """The demonstrations of a file `DemoWriter` wrote."""
    dec = msgspec.json.Decoder(Demonstration)
    with open(path, "rb") as f:
        return [dec.decode(line) for line in f if line.strip()]
