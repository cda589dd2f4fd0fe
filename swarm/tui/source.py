"""Where the TUI's ticks come from: a live Simulation driven from a worker thread.

The worker owns the simulation while it runs: only it calls `sim.tick()` and reads agents, and it
hands the UI plain data (`TickData`), never the simulation's objects. The UI steers it through a
`Control` (pause, step, speed, the selected agent, messages to inject, the agents a person plays), which
is safe to call from the UI thread. Later sources (a replay file, an MQTT bus) produce the same `TickData`.

A played agent's turns go to the UI: the tick waits on the model's thread (as it would for a model) while
the UI shows an `Asked` and puts the person's answer on its `reply` queue.

While a tick runs, a model that can stream (`EngineModel.progress`) reports the selected agent's
action as it is written; the worker keeps only the newest text and has at most one `Partial` on
its way to the UI, however fast the engine steps.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from swarm.events import Event, InboxMessage
from swarm.model import NoAction, Player, Turn, wire_schema
from swarm.model_names import DEFAULT
from swarm.tui.data import TREND_TICKS, AgentDetail, AgentRow, Asked, Partial, TickData, model_label

__all__ = ["SPEEDS", "AgentDetail", "AgentRow", "Asked", "Control", "LiveSource", "Partial", "TickData"]

SPEEDS = (0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)  # seconds between ticks
MEMORIES_SHOWN = 5


@dataclass
class Control:
    """The UI's handle on the worker: every method is safe from any thread."""

    paused: bool = False
    delay: float = 0.0
    selected: str | None = None
    _wake: threading.Condition = field(default_factory=threading.Condition)
    _steps: int = 0
    _stop: bool = False
    _detail_wanted: bool = False
    inbox: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    played: set[str] = field(default_factory=set)  # the agents a person plays (as the UI asked)
    seats: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)  # (agent, played?) for the worker
    done: threading.Event = field(default_factory=threading.Event)
    idle: threading.Event = field(default_factory=threading.Event)  # set while the worker waits, paused

    def _poke(self, **changes: Any) -> None:
        with self._wake:
            for k, v in changes.items():
                setattr(self, k, v)
            self._wake.notify_all()

    def pause(self, paused: bool) -> None:
        self._poke(paused=paused)

    def step(self) -> None:
        with self._wake:
            self._steps += 1
            self._wake.notify_all()

    def set_delay(self, delay: float) -> None:
        self._poke(delay=delay)

    def select(self, agent: str | None) -> None:
        self._poke(selected=agent, _detail_wanted=True)

    def inject(self, agent: str, text: str, sender: str = "tui") -> None:
        self.inbox.put((agent, InboxMessage(text=text, sender=sender)))
        self._poke()

    def take(self, agent: str) -> None:
        """Play `agent` from its next turn on (its turns come to the UI as `Asked`)."""
        self.played.add(agent)
        self.seats.put((agent, True))
        self._poke(_detail_wanted=True)  # the worker applies it now (or before the next tick) and shows it

    def give_back(self, agent: str) -> None:
        """`agent`'s turns go to its model again from the next tick on."""
        self.played.discard(agent)
        self.seats.put((agent, False))
        self._poke(_detail_wanted=True)

    def stop(self) -> None:
        self._poke(_stop=True)

    @property
    def stopped(self) -> bool:
        return self._stop

    def _next(self) -> str:
        """Block until there is something to do: "tick", "detail" or "stop"."""
        with self._wake:
            while True:
                if self._stop:
                    return "stop"
                if self._detail_wanted:
                    self._detail_wanted = False
                    return "detail"
                if not self.paused:
                    self.idle.clear()
                    return "tick"
                if self._steps:
                    self._steps -= 1
                    self.idle.clear()
                    return "tick"
                self.idle.set()
                self._wake.wait()

    def _sleep(self, seconds: float) -> None:
        """Wait between ticks; a stop, a step or a pause change cuts it short."""
        deadline = time.monotonic() + seconds
        with self._wake:
            while not self._stop and not self.paused and not self._detail_wanted:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._wake.wait(left)


class LiveSource:
    """Ticks from a live Simulation. `run` is the worker's body (a thread, never the UI's)."""

    no_stats = "no runtime stats: the model is scripted"

    def __init__(self, sim, ticks: int | None = None, control: Control | None = None):
        self.sim, self.ticks = sim, ticks
        self.control = control or Control()
        self.ticks_run = 0
        self.seconds = 0.0
        self.error: BaseException | None = None
        self.started = False  # the worker began (then `control.done` is set when it ends)
        self._told = False  # the UI has heard that the run had its ticks
        self._partial: Partial | None = None  # the newest streamed text, until the UI takes it
        self._partial_sent = False  # a notice is on its way to the UI (it has not taken the text yet)
        self._partial_lock = threading.Lock()
        self.player = Player(self._ask, ref="tui")  # decides the played agents' turns
        self._asked: Callable[[Asked], None] | None = None  # hands a played turn to the UI (set by `run`)

    @property
    def scenario(self) -> str:
        spec = self.sim.scenario.spec if self.sim.scenario is not None else self.sim.name
        return spec.rsplit("/", 1)[-1].removesuffix(".py")

    @property
    def model(self) -> str:
        m = self.sim.model
        more = {name: o.ref or type(o).__name__ for name, o in self.sim.models.items() if name != DEFAULT}
        return model_label("none" if m is None else str(m.ref or type(m).__name__), getattr(m, "device", None), more)

    def run(self, post: Callable[[Any], None], finished: Callable[[str], None],
            streamed: Callable[[], None] | None = None, asked: Callable[[Asked], None] | None = None) -> None:
        """Tick until stopped or `ticks` ran; `post(TickData)` after every tick, `finished(why)` at the end,
        `streamed()` when the selected agent's action has new text to `take_partial()` (if the model streams),
        `asked(Asked)` when a played agent's turn waits for the person's answer (without it, such turns wait)."""
        c = self.control
        self.started = True
        self._asked = asked
        self._stream_to(streamed)
        try:
            if not c.stopped:
                post(self.snapshot([]))
            while True:
                todo = c._next()
                if todo == "stop":
                    break
                if todo == "detail":
                    self._seat()
                    post(self.snapshot([]))
                    continue
                if self._over(finished):
                    continue
                self._seat()
                self._deliver()
                t0 = time.perf_counter()
                events = self.sim.tick()
                self.seconds += time.perf_counter() - t0
                self.ticks_run += 1
                post(self.snapshot(events))
                if not self._over(finished):
                    c._sleep(c.delay)
        except Exception as e:  # shown in the UI; the simulation stops
            self.error = e
            finished(f"error: {type(e).__name__}: {e}")
        finally:
            self._stream_to(None)
            c.done.set()
            c.idle.set()

    def _stream_to(self, streamed: Callable[[], None] | None) -> None:
        """Ask the model for the selected agent's text as it is written (a model without `progress` cannot)."""
        model = self.sim.model
        if not hasattr(model, "progress"):
            return
        if streamed is None:
            model.progress = model.streams = None
            return

        def progress(agent: str, text: str, done: bool) -> None:  # on the model's thread
            with self._partial_lock:
                self._partial = Partial(agent, text, done)
                if self._partial_sent:
                    return
                self._partial_sent = True
            streamed()

        model.streams = lambda agent: agent == self.control.selected
        model.progress = progress

    def take_partial(self) -> Partial | None:
        """The newest streamed text (the UI calls this when told; later text brings a new notice)."""
        with self._partial_lock:
            self._partial_sent = False
            return self._partial

    def _over(self, finished: Callable[[str], None]) -> bool:
        """Whether the run has had its ticks; the first time, pause (the UI stays to be looked at) and say so."""
        if self.ticks is None or self.ticks_run < self.ticks:
            return False
        if not self._told:
            self._told = True
            self.control.pause(True)
            finished(f"finished {self.ticks} ticks")
        return True

    def _seat(self) -> None:
        """Who plays whom, as the UI last asked: the person (`player`) or the agent's own model."""
        while not self.control.seats.empty():
            agent, played = self.control.seats.get_nowait()
            if agent in self.sim.agents:
                self.sim.play(agent, self.player if played else None)

    def _ask(self, turn: Turn) -> Any:
        """A played agent's turn (on the model's thread, during a tick): hand it to the UI and wait for the
        answer. A UI that is gone, or closes meanwhile, gives the turn up."""
        if self._asked is None:
            return NoAction("the agent is played, and no one is at the TUI to answer")
        r = turn.request
        asked = Asked(r.agent_id, r.kind, turn.world.tick, [dict(m) for m in r.messages], wire_schema(r.constraint),
                      r.constraint)
        self._asked(asked)
        while True:
            try:
                return asked.reply.get(timeout=0.1)
            except queue.Empty:
                if self.control.stopped:
                    return NoAction("the TUI closed before the player answered")

    def _deliver(self) -> None:
        """Messages the UI injected go on the simulation's bus, on its own loop, before the tick."""
        sim = self.sim
        msgs = []
        while not self.control.inbox.empty():
            msgs.append(self.control.inbox.get_nowait())
        if not msgs:
            return

        for agent, msg in msgs:
            sim.inject(agent, msg.text, msg.sender, msg.importance)

    def snapshot(self, events: list[Event]) -> TickData:
        sim = self.sim
        stats = sim.model.stats() if sim.model is not None else {}
        selected = self.control.selected
        with self._partial_lock:
            self._partial = None  # a tick ended: its texts are final (the rows and detail hold them)
        rows = [_row(sim, a) for a in sim.agents.values()]
        return TickData(scenario=self.scenario, model=self.model, tick=sim.world.tick, clock=sim.world.clock(),
                        events=list(events), rows=rows, metrics=sim.report().metrics, stats=dict(stats),
                        detail=_detail(sim.agents[selected], _place(sim, selected)) if selected in sim.agents else None,
                        world=sim.world.snapshot(), history=sim.history[-TREND_TICKS:])


def _place(sim, agent: str) -> str:
    pos = sim.world.positions.get(agent)
    return "-" if pos is None else pos.place if pos.place is not None else f"-> {pos.dest}"


def _row(sim, agent) -> AgentRow:
    action = readable(agent.history[-1]["content"]) if agent.history else ""
    step = agent.plan.next_step(math.inf)
    return AgentRow(agent.id, _place(sim, agent.id), action, step.text if step is not None else "", agent.last_latency,
                    agent.id in sim.players)


def readable(action: str) -> str:
    """An action as the model wrote it (JSON with a "type" tag), shortened for a table cell:
    `{"type":"say","text":"hi"}` -> `say "hi"`. Anything else is left as it is."""
    try:
        fields = msgspec.json.decode(action)
    except msgspec.DecodeError:
        return action
    if not isinstance(fields, dict) or not isinstance(fields.get("type"), str):
        return action
    kind = fields.pop("type")
    return " ".join([kind, *(f'"{v}"' if k == "text" else f"{k}={v}" for k, v in fields.items() if v is not None)])


def _detail(agent, place: str) -> AgentDetail:
    p = agent.persona
    persona = {"role": p.role, "traits": p.traits, "goals": "; ".join(p.goals), "style": p.style or "",
               "model": p.model or ""}
    memories = [f"(tick {m.tick}, {m.kind}) {m.text}" for m in list(agent.memory)[-MEMORIES_SHOWN:]]
    nodes = agent.plan.graph.nodes(data=True)
    plan = [(a["status"], a["text"]) for _, a in sorted(nodes, key=lambda n: n[1]["order"])]
    prompt = agent.history[-2]["content"] if len(agent.history) >= 2 else ""
    action = agent.history[-1]["content"] if agent.history else ""
    return AgentDetail(agent.id, persona, p.adapter, memories, plan, prompt, action, place, agent.last_latency)
