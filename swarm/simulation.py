"""The simulation loop: `tick()` = deliver -> plan -> act (one batched model call) -> resolve -> record.

Planning is the planner's (swarm/planner.py): only agents with something new to react to (an observation, a
due plan step) act, so idle agents cost no model call, except that an agent idle for `wake_after` ticks (5) is
asked again, so that a world where everyone waits does not stall. Every turn of a tick goes to its model in one
call; afterwards each agent's "ticks until it acts again" goes to the model as a cache hint.
The loop is asyncio inside (the bus is), driven from plain code by `tick()` and `run()`
on the simulation's own event loop; the model runs in a worker thread so the bus stays
live while it computes.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import random
import sys
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import msgspec

from swarm import bus as busmod
from swarm import checkpoint
from swarm.agents import Agent, Observation, Persona, TurnKind
from swarm.agents.actions import BASE_ACTIONS, Action, Wait
from swarm.bus import BusError, topics
from swarm.bus.ratelog import RateLimitedLog
from swarm.bus.url import strip_password
from swarm.demonstrations import DemoWriter
from swarm.events import Event, InboxMessage, Report
from swarm.model import Answer, NoAction, Turn, TurnModel, open_model
from swarm.model_names import DEFAULT, PLAYER, model_name, named_model
from swarm.planner import Planner
from swarm.recorder import Recorder
from swarm.runtime.bundled import DEFAULT_MODEL
from swarm.scenario import ScenarioError, ScenarioRef, run_build
from swarm.world import World

log = logging.getLogger("swarm.simulation")

WAKE_AFTER = 5  # ticks an agent with nothing new waits before it is asked again (None: never)
Hook = Callable[["Simulation", list[Event]], "Event | Iterable[Event] | None"]

# the loop's counts a history row gives for its tick alone: the row's name -> the counter that totals it
TICK_COUNTS = {"events": "events", "turns": "turns", "no_action": "no_action", "fails": "events.fail"}
# the token totals a model's stats() may keep: the report's name -> the stats' name
MODEL_TOKENS = {"prompt_tokens": "prompt_tokens", "prompt_tokens_cached": "cached_tokens",
                "recomputed_tokens": "recomputed_tokens", "generated_tokens": "tokens_generated",
                "budget_closed": "budget_closed"}  # answers the engine closed to fit max_tokens
# the model's rates and ratios the report passes on: the stats' name -> the report's name
MODEL_RATES = {"tokens_per_s": "generated_tokens_per_s", "computed_tokens_per_s": "computed_tokens_per_s",
               "prefix_cache_hit_rate": "prefix_cache_hit_rate", "preemptions": "preemptions"}


class Simulation:
    """A world, its agents, a model that decides their turns, a bus that carries what happens.

    `model` is the bundled "swarm-tiny" by default, a model folder, an Engine, a TurnModel (e.g. a
    ScriptedModel), or None for a simulation that is only built and inspected, never run. A model it loads
    itself (a name or a folder) gets `engine_config` (an EngineConfig: KV memory, KV dtype, batch sizes).

    >>> sim = Simulation(model="swarm-tiny", seed=7)
    >>> sim.world.add_place("tavern")
    >>> sim.add_agent(Persona(name="Mira", role="innkeeper"), at="tavern")
    >>> report = sim.run(ticks=10)
    """

    def __init__(self, model: Any = DEFAULT_MODEL, *, seed: int = 0, bus: str | None = "local", name: str = "sim",
                 record: str | Path | None = None, minutes_per_tick: float = 1.0, max_action_tokens: int = 96,
                 retrieve: int = 3, history_turns: int = 2, wake_after: int | None = WAKE_AFTER,
                 engine_config: Any = None):
        if not isinstance(name, str) or not name:
            raise ValueError(f"a simulation needs a non-empty name, got {name!r}")
        self.name, self.seed = name, seed
        self.model: TurnModel | None = open_model(model, engine_config) if model is not None else None
        self.rng = random.Random(seed)
        self.world = World(minutes_per_tick)
        self.agents: dict[str, Agent] = {}
        # a scenario's own state (checkpointed): plain data, or a msgspec Struct its build() puts here
        self.state: Any = {}
        self.action_types: list[type] = list(BASE_ACTIONS)
        # the exchanges each agent's prompt repeats: more gives a model more context, and a small model's
        # window fills fast (the engine model also drops the oldest ones when a prompt would not fit)
        self.max_action_tokens, self.retrieve, self.history_turns = max_action_tokens, retrieve, history_turns
        # an agent with nothing new is asked again after this many ticks: a world where everyone waits goes on
        if wake_after is not None and (isinstance(wake_after, bool) or not isinstance(wake_after, int)
                                       or wake_after < 1):
            raise ValueError(f"wake_after is a number of ticks >= 1 (or None), got {wake_after!r}")
        self.wake_after = wake_after
        self.scenario: ScenarioRef | None = None
        self.counters: Counter[str] = Counter()
        self.history: list[dict[str, Any]] = []  # a row per tick (see Report.history), checkpointed
        self._tallied: dict[str, int] = {}  # the TICK_COUNTS counters as the last history row left them
        # the model's own token totals at the last tick's end (a model counts all its work, any simulation's)
        self._more_models: dict[str, TurnModel] = {}  # add_model's, by name
        # each model's own token totals at the last tick's end, by name (a model counts all its work, any
        # simulation's): (the model they were read from, the totals)
        self._model_tokens: dict[str, tuple[TurnModel, dict[str, int]]] = {}
        if self.model is not None:
            self._model_tokens[DEFAULT] = (self.model, _token_totals(self.model.stats()))
        self._metrics: dict[str, Callable[[Simulation], Any]] = {}
        self._hooks: list[Hook] = []
        self._pending: list[Event] = []  # events made between ticks (agents joining), recorded with the next tick
        self.planner = Planner(self)  # who acts each tick, their turns in one batch, the cache hints
        self._loop = asyncio.new_event_loop()
        self.bus_url = strip_password(bus)  # what a checkpoint keeps: a resumed run reads SWARM_MQTT_PASSWORD
        self.bus = busmod.open_bus(bus, client_id=f"{name}-sim", presence=topics.presence(name, f"{name}-sim"))
        self._inbox = None
        self._inbox_log = RateLimitedLog(log, "dropped inbox messages")
        self._bus_loop: asyncio.AbstractEventLoop | None = None  # the loop the bus was connected on
        self._left_open: weakref.finalize | None = None  # closes the bus if close() is never called
        self._record_path = Path(record) if record is not None else None
        self.recorder: Recorder | None = None
        self._autosave: checkpoint.Autosave | None = None
        self.demos: DemoWriter | None = None  # record_demos's writer (its `path`, how many it has `written`)
        self.players: dict[str, TurnModel] = {}  # agent -> who plays it instead of its model (`play`)
        self.stopped = False  # set by stop(): run() returns after the tick in progress

    # -- building ------------------------------------------------------------------------

    @classmethod
    def from_scenario(cls, spec: str, model: Any = DEFAULT_MODEL, **kwargs: Any) -> Simulation:
        """A simulation built by a bundled scenario (by name) or a scenario file; keyword arguments the
        constructor does not take are the scenario's options (e.g. `agents=12`)."""
        own = {"seed", "bus", "name", "record", "minutes_per_tick", "max_action_tokens", "retrieve", "history_turns",
               "wake_after", "engine_config"}
        options = {k: kwargs.pop(k) for k in list(kwargs) if k not in own}
        if "name" not in kwargs:
            kwargs["name"] = Path(spec).stem if spec.endswith(".py") else spec
        model = named_model(model, spec)
        sim = cls(model, **kwargs)
        sim.scenario = ScenarioRef(str(Path(spec).resolve()) if spec.endswith(".py") else spec, options)
        run_build(sim, sim.scenario)
        return sim

    @property
    def models(self) -> dict[str, TurnModel]:
        """The simulation's models by name: its own `model=` as "default" (when it has one), then each
        `add_model` added."""
        own = {DEFAULT: self.model} if self.model is not None else {}
        return {**own, **self._more_models}

    def add_model(self, name: str, model: Any, *, engine_config: Any = None, temperature: float | None = None,
                  top_p: float | None = None) -> TurnModel:
        """Another model, for the agents whose persona names it: `Persona(model=name)`. `model` is what
        `model=` takes (a bundled name, a folder, an Engine, `openai:BASE_URL#MODEL`, a pool's
        `mqtt://host:port/POOL`, a TurnModel; in a scenario also `scripted` or `random`), with its own
        `engine_config` and sampling. Each model's turns of a tick go to it in one batch, and all models of a
        tick decide at once."""
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"a model needs a non-empty name, got {name!r}")
        if name in (DEFAULT, PLAYER) or name in self._more_models:
            why = {DEFAULT: " (the simulation's own model=)", PLAYER: " (the agents' players)"}.get(name, "")
            raise ValueError(f"a model called {name!r} already exists{why}")
        if self.scenario is not None:
            model = named_model(model, self.scenario.spec)
        sampling = {k: v for k, v in (("temperature", temperature), ("top_p", top_p)) if v is not None}
        opened = open_model(model, engine_config, **sampling)
        self._more_models[name] = opened
        self._model_tokens[name] = (opened, _token_totals(opened.stats()))
        return opened

    def use_model(self, agent: str, name: str) -> None:
        """From the next tick on, `agent` is played by model `name` ("default": the simulation's own). Its
        adapter follows: the one it had, or the one of its style, if the new model serves it; else none."""
        a = self._agent(agent)
        if name not in self.models:
            raise ValueError(f"no model called {name!r}: add it with sim.add_model({name!r}, ...); models: "
                             f"{', '.join(self.models) or 'none'}")
        served = self.models[name].adapters()
        adapter = next((x for x in (a.persona.adapter, a.persona.style) if x is not None and x in served), None)
        a.persona = msgspec.structs.replace(a.persona, model=None if name == DEFAULT else name, adapter=adapter)

    def use_adapter(self, agent: str, adapter: str | None) -> None:
        """From the next tick on, `agent`'s turns run with the LoRA adapter `adapter` (None: the base model), which
        the agent's model must serve (`engine.add_adapter(name, folder)` registers one). A checkpoint keeps it:
        the resumed model must serve it too."""
        a = self._agent(agent)
        if adapter is not None:
            name = model_name(a.persona)
            served = self._model(name).adapters()
            if adapter not in served:
                raise ValueError(f"model {name!r} of {agent} serves no adapter {adapter!r}; it serves: "
                                 f"{', '.join(sorted(served)) or 'none'} (register one with engine.add_adapter)")
        a.persona = msgspec.structs.replace(a.persona, adapter=adapter)

    def record_demos(self, path: str | Path, *, successful_only: bool = False, agents: Iterable[str] | None = None,
                     kinds: Iterable[str] | None = None, actions: Iterable[str] | None = None,
                     append: bool = False) -> DemoWriter:
        """From the next tick on, write every answered turn to `path` as chat fine-tuning data (JSON lines, see
        `swarm.demonstrations`): the messages the model was given and the answer, with the scenario, agent,
        tick, persona, adapter, model and the answer's schema. `successful_only` leaves out act turns whose
        action failed; `agents` and `kinds` ("act", "reflect", "plan") keep only those, `actions` only the act
        turns that chose those actions ("say", "bid", ...). An existing file is refused unless `append`."""
        if self.demos is not None:
            self.demos.close()
        self.demos = DemoWriter(path, successful_only=successful_only, agents=agents, kinds=kinds, actions=actions,
                                 append=append)
        return self.demos

    def play(self, agent: str, player: TurnModel | None) -> None:
        """From the next tick on, `player` (a `Player`: a person in the TUI, or any TurnModel) decides `agent`'s
        turns in place of its model; `None` gives them back. The persona is unchanged (its memory stays embedded
        by its own model), so nothing of this is checkpointed; demonstrations record such turns with the
        source "person" for a `Player`."""
        self._agent(agent)
        if player is None:
            self.players.pop(agent, None)
        elif not isinstance(player, TurnModel):
            raise TypeError(f"play takes a TurnModel (say, a Player) or None, got {type(player).__name__}")
        else:
            self.players[agent] = player

    def _agent(self, agent: str) -> Agent:
        """The agent called `agent`; ValueError when there is none."""
        if agent not in self.agents:
            raise ValueError(f"unknown agent {agent!r}")
        return self.agents[agent]

    def _model_of(self, turn: Turn) -> tuple[str, TurnModel]:
        """(the model's name, the model) that decides `turn`: the agent's player ("player") when it has one."""
        player = self.players.get(turn.agent.id)
        if player is not None:
            return PLAYER, player
        name = model_name(turn.agent.persona)
        return name, self._model(name)

    def _model(self, name: str) -> TurnModel:
        if name == DEFAULT:
            return self._require_model()
        return self._more_models[name]

    def add_agent(self, persona: Persona, at: str, *, goals: Iterable[str] = ()) -> Agent:
        """Place a new agent (its id is the persona's name) at place `at`."""
        if not isinstance(persona, Persona):
            raise TypeError(f"add_agent takes a Persona, got {type(persona).__name__}")
        if persona.name in self.agents:
            raise ValueError(f"an agent called {persona.name!r} already exists")
        self.world.check_place(at)
        if persona.model is not None and persona.model not in self._more_models:
            raise ValueError(f"{persona.name}'s persona names model {persona.model!r}, which this simulation does "
                             f"not have: add it first, sim.add_model({persona.model!r}, ...); models: "
                             f"{', '.join(self.models) or 'none'}")
        model = self.models.get(model_name(persona))
        if persona.adapter is None and persona.style is not None and model is not None \
                and persona.style in model.adapters():
            persona = msgspec.structs.replace(persona, adapter=persona.style)
        agent = Agent(persona.name, persona, history_turns=self.history_turns, wake_after=self.wake_after,
                      idle_since=self.world.tick)
        for goal in (*persona.goals, *goals):
            agent.plan.add_goal(goal)
        self.agents[agent.id] = agent
        self.world.place_agent(agent.id, at)
        # the persona's public side goes with the event, for viewers of a log or a bus (goals stay private:
        # a scenario may hide a secret role in them)
        public = {k: v for k, v in (("role", persona.role), ("traits", persona.traits), ("style", persona.style),
                                    ("adapter", persona.adapter), ("model", persona.model)) if v}
        self._emit([self.world.event("join", f"{agent.id} ({persona.role or 'a newcomer'}) is at the {at}.",
                                     actor=agent.id, place=at, importance=3.0, data={"persona": public})])
        agent.observe(Observation(tick=self.world.tick, text=f"You are at the {at}.", importance=3.0))
        return agent

    def add_actions(self, *types: type) -> None:
        """Let agents take these Action types too (each needs a handler: `@sim.on(Type)`)."""
        for t in types:
            if not (isinstance(t, type) and issubclass(t, Action)):
                raise TypeError(f"add_actions takes Action subclasses, got {t!r}")
            if t not in self.action_types:
                self.action_types.append(t)

    def remove_actions(self, *types: type) -> None:
        self.action_types = [t for t in self.action_types if t not in types]

    def on(self, action_type: type, *, state: bool = False) -> Callable:
        """Decorator: `@sim.on(Vote) def vote(world, actor, action) -> events`. With `state=True` the handler
        takes the scenario's state first, `vote(state, world, actor, action)`, read from `sim.state` each time it
        runs (loading a checkpoint refills it), so a scenario's rules can be plain module-level functions."""
        register = self.world.on(action_type)
        if not state:
            return register

        def with_state(fn: Callable) -> Callable:
            register(lambda world, actor, action: fn(self.state, world, actor, action))
            return fn

        return with_state

    def every_tick(self, fn: Hook) -> Hook:
        """Decorator: `fn(sim, events)` runs after each tick's actions resolve, with the tick's events so far,
        and may return more events."""
        self._hooks.append(fn)
        return fn

    def metric(self, name: str) -> Callable:
        """Decorator: `fn(sim) -> value` goes into the report's metrics under `name`."""
        def register(fn: Callable[[Simulation], Any]) -> Callable[[Simulation], Any]:
            self._metrics[name] = fn
            return fn

        return register

    def actions_for(self, fn: Callable[[Simulation, Agent], list[type]]) -> Callable:
        """Decorator: `fn(sim, agent)` gives the action types `agent` may take this tick (default: all of
        `sim.action_types`). Scenarios narrow choices with it, e.g. a Vote whose target is a Literal of
        the living players, rebuilt each phase."""
        self.planner.actions_for = fn
        return fn

    def choices(self, fn: Callable[[Simulation, Agent], dict[str, Iterable[str]]]) -> Callable:
        """Decorator: `fn(sim, agent)` gives the names of the scenario's own choice kinds (fields typed
        `one_of("lot")`) that `agent` may name this tick, e.g. `{"lot": ["wool", "grain"]}`; it may also
        replace the world's kinds (person, place, item, thing). The grammar offers only these names; an
        action whose required field has none is left out for the tick."""
        self.planner.choices = fn
        return fn

    def focus(self, fn: Callable[[Simulation, Agent], str | None]) -> Callable:
        """Decorator: `fn(sim, agent)` gives what `agent` must deal with now (a line of text, or None), and
        its act prompt ends with it, right before the question: e.g. the ticket in a support agent's hands.
        Small models read best what stands nearest their answer; memories and older news come before it."""
        self.planner.focus = fn
        return fn

    def next_act(self, fn: Callable[[Simulation, Agent], float | None]) -> Callable:
        """Decorator: `fn(sim, agent)` gives how many ticks `agent` will stay idle before its next turn (0:
        it acts in the coming tick; inf: not until something wakes it), or None for no idea. Scenarios
        that know their routines (a timetable, a queue, a phase that ends) say so, and the engine's KV
        cache keeps and fetches personas by it. Asked between ticks, only for agents with nothing to act
        on now (and only then); a plan step due sooner, or a journey that ends later, still wins. Without
        it (or on None) the guess is the agent's usual interval between turns."""
        self.planner.next_act = fn
        return fn

    @property
    def schema(self):
        """The union of every action type (before `@sim.actions_for` and the narrowing of choice fields)."""
        return self.planner.menu.union(tuple(self.action_types))

    @property
    def tick_count(self) -> int:
        return self.world.tick

    # -- the loop ------------------------------------------------------------------------

    def tick(self) -> list[Event]:
        """Run one tick; returns its events."""
        return self._drive(self.atick())

    def _drive(self, coro) -> Any:
        """Run `coro` on the simulation's loop. An interrupt (Ctrl-C lands in the loop, not in the tick's
        code) leaves the autosave checkpoint at the state from before the tick it cut short."""
        try:
            return self._loop.run_until_complete(coro)
        except BaseException:
            self._save_before_tick()
            raise

    async def atick(self) -> list[Event]:
        await self._start()
        saver = self._autosave
        if saver is not None:
            saver.before = checkpoint.encode(self)  # what a failed or interrupted tick leaves to resume from
            if not saver.written:  # from the first tick on there is always a checkpoint to resume from
                checkpoint.write_atomically(saver.path, saver.before)
                saver.written = True
        try:
            events = await self._tick()
        except BaseException:
            self._save_before_tick()
            raise
        if saver is not None:
            saver.before = None
            if self.counters["ticks"] % saver.every == 0:
                self.save(saver.path)
        return events

    async def _tick(self) -> list[Event]:
        t0 = time.perf_counter()
        events = self._deliver()
        turns = self.planner.plan()
        values = await self.planner.act(turns)
        events += self._resolve(turns, values)
        events += self._run_hooks(events)
        if self.demos is not None:
            self.demos.write(self, turns, values, events, self._model_of)
        self._observe(events)
        events, self._pending = self._pending + events, []  # those made between ticks were observed then
        await self._record(events)
        self.planner.hint()
        self.world.tick += 1
        self.counters["ticks"] += 1
        self.counters["loop_seconds"] += time.perf_counter() - t0
        return events

    def _deliver(self) -> list[Event]:
        """Travellers who arrive now, and messages outside clients sent to agents' inboxes."""
        events = self.world.arrivals()
        for msg in self._inbox.drain() if self._inbox is not None else []:
            agent = topics.levels(msg.topic)[3]  # swarm/<sim>/agents/<agent>/inbox
            if agent not in self.agents:
                self._inbox_log.warn("inbox message for unknown agent %r on %s dropped", agent[:100], msg.topic[:200])
                continue
            m: InboxMessage = msg.payload
            if m.sender in self.agents:
                self._inbox_log.warn("inbox message to %r claiming to come from agent %r dropped: outside clients "
                                     "cannot speak as an agent", agent, m.sender)
                continue
            events.append(self.world.event("inbox", f"{m.sender} tells {agent}: {m.text}", actor=m.sender,
                                           target=agent, importance=m.importance,
                                           audience=[agent], data={"sender": m.sender}))
        return events

    def _resolve(self, turns: list[Turn], values: list[Any]) -> list[Event]:
        events, actions = [], []
        for turn, value in zip(turns, values, strict=True):
            agent, kind = turn.agent, turn.request.kind
            # a measurement for the UI, not state: checkpoints leave it out
            agent.last_latency = value.seconds if isinstance(value, (Answer, NoAction)) else None
            if isinstance(value, NoAction):
                self.counters["no_action"] += 1
                if kind == TurnKind.ACT:  # the agent waits this tick and learns why
                    agent.receive(turn.request, Wait(), self.world.tick)
                    events.append(self.world.fail(agent.id, Wait(), value.reason))
                continue
            text = None
            if isinstance(value, Answer):
                value, text = value.value, value.text
            result = agent.receive(turn.request, value, self.world.tick, text=text)
            if kind == TurnKind.ACT:
                actions.append((agent.id, result))
            elif kind == TurnKind.REFLECT:
                events.append(self.world.event("reflect", f"{agent.id} reflects: {value.text}", actor=agent.id,
                                               place=self.world.place_of(agent.id), data=msgspec.to_builtins(value)))
            elif kind == TurnKind.PLAN:
                events.append(self.world.event("plan", f"{agent.id} plans: {'; '.join(value.steps)}",
                                               actor=agent.id, place=self.world.place_of(agent.id),
                                               data=msgspec.to_builtins(value)))
        try:
            return events + self.world.resolve(actions, self.rng)
        except (TypeError, ValueError, KeyError) as e:
            raise ScenarioError(f"resolving the actions of tick {self.world.tick} failed: "
                                f"{type(e).__name__}: {e}") from e
        except ScenarioError:
            raise
        except Exception as e:  # a scenario handler raised
            raise ScenarioError(f"an action handler raised at tick {self.world.tick}: {type(e).__name__}: {e}") from e

    def _run_hooks(self, so_far: list[Event]) -> list[Event]:
        events = []
        for hook in self._hooks:
            try:
                out = hook(self, so_far)
            except Exception as e:
                raise ScenarioError(f"the every_tick hook {getattr(hook, '__name__', hook)} raised at tick "
                                    f"{self.world.tick}: {type(e).__name__}: {e}") from e
            if isinstance(out, Event):
                events.append(out)
            elif out is not None:
                events.extend(out)
        return events

    def _observe(self, events: list[Event]) -> None:
        for e in events:
            for who in self.world.observers(e):
                if who in self.agents:
                    self.agents[who].observe(Observation(tick=e.tick, text=e.text, importance=e.importance,
                                                         source=e.actor))

    def _emit(self, events: list[Event]) -> None:
        """Events made outside a tick: observed now, recorded and published with the next tick."""
        self._observe(events)
        self._pending += events

    async def _record(self, events: list[Event]) -> None:
        self.counters["events"] += len(events)
        self.counters.update(f"events.{e.kind}" for e in events)
        models = self.models
        stats_of = {name: model.stats() for name, model in models.items()}  # each model asked once a tick
        stats = stats_of.get(DEFAULT, {})
        tokens = self._count_tokens(models, stats_of)
        metrics = self._metrics_now(stats)  # once a tick: the history row, the bus and the TUI's report share it
        row = self._history_row(metrics, tokens)
        self.history.append(row)
        if self.recorder is not None:
            self.recorder.write(events)
            # the token counts stay out of the log: they depend on what the prefix cache held (a resumed run
            # starts cold, another worker holds other personas), and a run's log is the same wherever it ran
            self.recorder.write_metrics({k: v for k, v in row.items() if k not in tokens})
            self.recorder.flush()
        for e in events:
            await self.bus.publish(topics.events(self.name), e)
            if e.place is not None and e.audience is None:
                await self.bus.publish(topics.place(self.name, e.place), e)
        await self.bus.publish(topics.world(self.name), self.world.snapshot(), retain=True)
        await self.bus.publish(topics.report(self.name), {
            "tick": self.world.tick, "metrics": metrics, "row": row, **self._model_label(), "stats": stats},
            retain=True)

    def _count_tokens(self, models: dict[str, TurnModel], stats_of: dict[str, dict]) -> dict[str, int]:
        """This tick's token counts (the report's names), all models together, from each model's running
        totals in `stats_of`; added to the counters (also per model), so the report's totals cover this
        simulation's ticks, across checkpoints."""
        tick: dict[str, int] = {}
        for name, model in models.items():
            totals = _token_totals(stats_of[name])
            was, seen = self._model_tokens.get(name, (None, {}))
            if was is not model:  # a model put in place since: everything it counted is this simulation's
                seen = {}
            self._model_tokens[name] = (model, totals)
            for k, v in totals.items():
                tick[k] = tick.get(k, 0) + v - seen.get(k, 0)
                self.counters[f"model.{name}.{k}"] += v - seen.get(k, 0)
        tick = {k: tick[k] for k in MODEL_TOKENS if k in tick}
        self.counters.update(tick)
        return _with_computed(tick)

    def _history_row(self, metrics: dict[str, Any], tokens: dict[str, int]) -> dict[str, Any]:
        """The tick's row of Report.history: the loop's counts for this tick, then the scenario's numeric
        metrics as they stand (a scenario's metric of the same name wins, as in the report)."""
        c, before = self.counters, self._tallied
        row: dict[str, Any] = {"tick": self.world.tick, "agents": len(self.agents)}
        for name, counter in TICK_COUNTS.items():
            row[name] = c[counter] - before.get(counter, 0)
        self._tallied = {counter: c[counter] for counter in TICK_COUNTS.values()}
        row.update(tokens)
        for name in self._metrics:
            value = _number(metrics[name])
            if value is not None:
                row[name] = value
        return row

    def inject(self, agent: str, text: str, sender: str = "outside", importance: float = 5.0) -> None:
        """Send `agent` a message the way an outside client does (through its inbox topic on the bus);
        the agent observes it on the next tick."""
        self._loop.run_until_complete(self.ainject(agent, text, sender, importance))

    async def ainject(self, agent: str, text: str, sender: str = "outside", importance: float = 5.0) -> None:
        self._agent(agent)
        await self._start()
        await self.bus.publish(topics.inbox(self.name, agent),
                               InboxMessage(text=text, sender=sender, importance=importance))

    def _require_model(self) -> TurnModel:
        if self.model is None:
            raise ValueError("this simulation has no model: pass model= a checkpoint folder, an Engine or a "
                             "ScriptedModel")
        return self.model

    async def _start(self) -> None:
        """Connect the bus and open the log, once, before the first tick."""
        if self._inbox is None:
            self._bus_loop = asyncio.get_running_loop()
            await self.bus.connect()
            if self._bus_loop is self._loop:
                self._close_if_left_open()
            self._inbox = await self.bus.subscribe(topics.inbox(self.name, topics.ANY), type=InboxMessage)
        if self.recorder is None and self._record_path is not None:
            self.recorder = Recorder(self._record_path, self._header())

    def _model_label(self) -> dict:
        """The model (its reference and device) for a log's header and the bus's report; with `add_model`'s,
        `models`: each one's name and reference."""
        m = self.model
        label = {"model": m.ref if m is not None else None, "device": m.device if m is not None else None}
        if self._more_models:
            label["models"] = {name: model.ref for name, model in self._more_models.items()}
        return label

    def _header(self) -> dict:
        return {"sim": self.name, "seed": self.seed, **self._model_label(),
                "scenario": self.scenario.spec if self.scenario else None,
                "minutes_per_tick": self.world.minutes_per_tick, "start_minute": self.world.start_minute,
                "places": self.world.places}

    def run(self, ticks: int, *, tui: bool = False,
            progress: Callable[[Simulation, list[Event]], None] | None = None) -> Report:
        """Run `ticks` ticks and report. `progress(sim, events)` is called after every tick."""
        if tui:  # the UI runs the ticks in its worker and returns when the user quits
            from swarm.tui import run_tui

            return run_tui(self, ticks)
        return self._drive(self.arun(ticks, progress=progress))

    async def arun(self, ticks: int, *, progress: Callable[[Simulation, list[Event]], None] | None = None) -> Report:
        """`run` for code that already has an event loop (a game, a server, the TUI). `stop()` (from a signal
        handler or another thread) ends it after the tick in progress."""
        if ticks < 0:
            raise ValueError(f"ticks must be >= 0, got {ticks}")
        start = self.counters["ticks"]
        t0 = time.perf_counter()
        self.stopped = False
        for _ in range(ticks):
            events = await self.atick()
            if progress is not None:
                progress(self, events)
            if self.stopped:
                break
        return self.report(ticks=self.counters["ticks"] - start, seconds=time.perf_counter() - t0)

    def report(self, ticks: int | None = None, seconds: float | None = None) -> Report:
        """The metrics now, the per-tick history, and `ticks` and `seconds` (default: the whole simulation's).

        Besides the scenario's metrics and the loop's counts, a model that counts tokens gives their totals
        over this simulation's ticks: `prompt_tokens` (the prompts sent, every token), of those
        `prompt_tokens_cached` (served from the prefix cache) and `prompt_tokens_computed` (run through the
        model), `recomputed_tokens` (computed again after a preemption) and `generated_tokens`; and its own
        rates: `generated_tokens_per_s` and `computed_tokens_per_s` (prompt and generated tokens through the
        model) per second of model time, and the prefix cache's hit rate. A model without some of these
        (a scripted one has none) leaves them out."""
        stats = self.model.stats() if self.model is not None else {}
        c = self.counters
        return Report(ticks=c["ticks"] if ticks is None else ticks, events=c["events"],
                      metrics=self._metrics_now(stats), history=list(self.history),
                      seconds=round(c["loop_seconds"] if seconds is None else seconds, 4),
                      models={name: self._model_report(name, m) for name, m in self.models.items()})

    def _model_report(self, name: str, model: TurnModel) -> dict[str, Any]:
        """One model's share of the run: its reference, the turns it decided and the tokens it counted."""
        c = self.counters
        tokens = {k: c[f"model.{name}.{k}"] for k in MODEL_TOKENS if f"model.{name}.{k}" in c}
        return {"ref": model.ref, "turns": c[f"model.{name}.turns"], **_with_computed(tokens)}

    def _metrics_now(self, stats: dict) -> dict[str, Any]:
        """The loop's metrics, the model's token counts and rates (from `stats`), then the scenario's."""
        c = self.counters
        metrics: dict[str, Any] = {
            "agents": len(self.agents),
            "turns": c["turns"],
            "turns_per_tick": c["turns"] / max(c["ticks"], 1),
            "no_action": c["no_action"],
            "model_seconds": round(c["model_seconds"], 4),
            "loop_seconds": round(c["loop_seconds"] - c["model_seconds"], 4),
            "events_by_kind": {k.split(".", 1)[1]: v for k, v in sorted(c.items()) if k.startswith("events.")},
        }
        metrics.update(_with_computed({name: c[name] for name in MODEL_TOKENS if name in c}))
        for key, name in MODEL_RATES.items():
            if key in stats:
                metrics[name] = stats[key]
        for name, fn in self._metrics.items():
            try:
                metrics[name] = fn(self)
            except Exception as e:
                raise ScenarioError(f"metric {name!r} raised: {type(e).__name__}: {e}") from e
        return metrics

    # -- checkpoints ---------------------------------------------------------------------

    def stop(self) -> None:
        """Make `run` return after the tick in progress (safe from a signal handler or another thread)."""
        self.stopped = True

    def autosave(self, path: str | Path, every: int = 1, run: dict | None = None) -> None:
        """Keep a checkpoint at `path`: written every `every` ticks and, when a tick fails or is
        interrupted, with the state from before that tick (so it is always one to resume from). `run` is
        kept in it for whoever resumes (the CLI stores the run's length there). Costs an in-memory copy of
        the state each tick (about 0.1 ms per agent); the file is written every `every` ticks."""
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"checkpoints are written every N >= 1 ticks, got {every!r}")
        path = Path(path)
        if not path.parent.is_dir():
            raise ValueError(f"cannot keep a checkpoint at {path}: folder {path.parent} does not exist")
        self._autosave = checkpoint.Autosave(path, every, run)

    def _save_before_tick(self) -> None:
        saver = self._autosave
        if saver is not None and saver.before is not None:
            checkpoint.write_atomically(saver.path, saver.before)
            saver.before = None
            log.warning("tick %d did not finish; checkpoint %s holds the state before it", self.world.tick,
                        saver.path)

    def save(self, path: str | Path) -> Path:
        """Checkpoint everything a run needs to go on: world, agents (memories, plans), the scenario's
        state, the random generator, counters, the model reference and where the log stands. Written
        atomically: a crash mid-save leaves the previous checkpoint whole."""
        return checkpoint.write_atomically(Path(path), checkpoint.encode(self))

    @staticmethod
    def checkpoint_info(path: str | Path) -> dict:
        """What a checkpoint holds, without loading it: name, tick, scenario (spec and options), model,
        bus, the log it continues and the `run` data its autosave kept."""
        return checkpoint.info(path)

    @classmethod
    def load(cls, path: str | Path, model: Any = None, bus: str | None = None,
             engine_config: Any = None) -> Simulation:
        """A simulation from a checkpoint: the scenario is rebuilt (its handlers, hooks, metrics), then
        every piece of state is restored; recording continues in the same log.

        Rebuilding the scenario runs its code: a bundled scenario by name, or the Python file whose path the
        checkpoint holds, whoever wrote that file. Load a checkpoint from someone else only if it names a
        bundled scenario or a file you trust. Which one it runs is logged (INFO, logger swarm.simulation)
        before it runs. A damaged or truncated checkpoint raises ValueError naming the problem."""
        return checkpoint.load(cls, path, model, bus, engine_config)

    def restore(self, state: dict | str | Path) -> None:
        """Put a checkpoint's state into this simulation (built the same way: same actions and handlers)."""
        checkpoint.restore(self, state)
        self._tallied = {counter: self.counters[counter] for counter in TICK_COUNTS.values()}

    def close(self) -> None:
        """Flush and close the log, disconnect the bus (after `arun`/`atick` on your own loop: `aclose`).

        Raises BusError when messages published on the bus never reached the broker (see `MqttBus.close`).
        A simulation run by `run` or `tick` and never closed is closed when it is garbage collected or
        the interpreter exits, so a script that ends without calling this still delivers its events.
        """
        if self._bus_loop is not None and self._bus_loop is not self._loop:
            raise RuntimeError("this simulation ran on another event loop: await sim.aclose() there")
        if self._left_open is not None:
            self._left_open.detach()
        _OPEN.discard(self)
        if not self._loop.is_closed():
            try:
                self._loop.run_until_complete(self.aclose())
            finally:
                self._loop.close()

    async def aclose(self) -> None:
        if self.recorder is not None:
            self.recorder.close()
        if self.demos is not None:
            self.demos.close()
            self.demos = None
        await self.bus.close()

    def _close_if_left_open(self) -> None:
        # The bus's tasks live on this simulation's own loop: left pending at exit they are destroyed
        # mid-flight (tracebacks, and buffered events never sent). The finalizer holds the loop and the
        # bus, not the simulation, so it runs when the simulation is collected, or at exit.
        self._left_open = weakref.finalize(self, _close_left_open, self._loop, self.bus)
        self._left_open.atexit = False  # at exit, _close_open_simulations runs it, earlier than atexit would
        _OPEN.add(self)
        _register_exit_hook()

    def __enter__(self) -> Simulation:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_OPEN: weakref.WeakSet[Simulation] = weakref.WeakSet()  # connected on their own loop, not closed yet
_exit_hook_registered = False


def _register_exit_hook() -> None:
    """Close the open simulations' buses when the interpreter exits, while threads still run: a bus that
    must reconnect to flush uses the loop's thread pool, which the interpreter shuts down before plain
    atexit functions run. Registered after that pool's own hook (the bus has connected, so the pool
    exists), it runs before it."""
    global _exit_hook_registered
    if not _exit_hook_registered:
        _exit_hook_registered = True
        getattr(threading, "_register_atexit", atexit.register)(_close_open_simulations)


def _close_open_simulations() -> None:
    for sim in list(_OPEN):
        if sim._left_open is not None:
            sim._left_open()


def _close_left_open(loop: asyncio.AbstractEventLoop, bus: busmod.Bus) -> None:
    """Close `bus` on `loop`, its own (not running), then the loop; report undelivered messages on stderr."""
    if loop.is_closed() or loop.is_running():
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # the usual case: no loop runs in this thread
        pass
    else:  # collected while another loop runs in this thread: a loop runs on one thread at a time
        thread = threading.Thread(target=_close_left_open, args=(loop, bus), name="swarm-close")
        thread.start()
        thread.join()
        return
    try:
        loop.run_until_complete(bus.close())
    except BusError as e:
        print(f"swarm: {e}", file=sys.stderr)
    finally:
        loop.close()


def _token_totals(stats: dict) -> dict[str, int]:
    """The token totals a model's stats hold, by the report's names (the counts it does not keep left out)."""
    return {name: int(stats[key]) for name, key in MODEL_TOKENS.items() if key in stats}


def _with_computed(tokens: dict[str, int]) -> dict[str, int]:
    """Token counts in the report's order, with the prompt tokens computed (those not served from the cache)."""
    out = {}
    for name, value in tokens.items():
        out[name] = value
        if name == "prompt_tokens_cached" and "prompt_tokens" in tokens:
            out["prompt_tokens_computed"] = tokens["prompt_tokens"] - value
    return out


def _number(value: Any) -> int | float | bool | None:
    """A metric's value as a history cell: a number or a bool, else None (left out)."""
    return value if isinstance(value, (bool, int, float)) else None


