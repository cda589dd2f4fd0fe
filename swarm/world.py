"""The world: places joined by routes (a networkx graph weighted in travel minutes), things and who
holds them, where every agent is, a clock, who observes what, and how actions resolve into events.

The world owns the clock (`tick`) and numbers events (`seq`); the simulation owns the
random generator and passes it in, so one seed fixes a whole run. Resolution never
raises for a bad action: an unknown place, agent or item becomes a "fail" event that
only the actor observes, with the reason and the valid choices, so the model can learn
from it and the run goes on.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import msgspec
import networkx as nx

from swarm.agents.actions import Action, Give, Move, Say, Use, Wait
from swarm.events import Event

Handler = Callable[["World", str, Any], "Event | Iterable[Event] | None"]

# Kinds nobody else perceives: the actor's own bookkeeping.
_PRIVATE = {"wait", "reflect", "plan"}


class Thing(msgspec.Struct, kw_only=True):
    name: str
    description: str = ""
    place: str | None = None  # where it lies, or
    holder: str | None = None  # who carries it
    portable: bool = True
    data: dict[str, Any] = {}


class Position(msgspec.Struct, kw_only=True):
    place: str | None  # None while travelling
    dest: str | None = None
    arrive_tick: int | None = None


def _choices(names: Iterable[str], limit: int = 12) -> str:
    names = sorted(names)
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more if names else "none"


class World:
    """Places, routes, things, positions and the clock. `minutes_per_tick` game minutes pass per tick."""

    def __init__(self, minutes_per_tick: float = 1.0, start_minute: int = 8 * 60, preamble: str = ""):
        if minutes_per_tick <= 0:
            raise ValueError(f"minutes_per_tick must be positive, got {minutes_per_tick}")
        self.minutes_per_tick, self.start_minute, self.preamble = minutes_per_tick, start_minute, preamble
        self.graph = nx.Graph()
        self.things: dict[str, Thing] = {}
        self.positions: dict[str, Position] = {}
        self._order: dict[str, int] = {}
        self._at: dict[str, set[str]] = {}  # place -> its agents (an index: agents_at is hot at 1,000 agents)
        self.tick = 0
        self.seq = 0
        self._seen: dict[int, list[str]] = {}  # observers of this tick's events, fixed when each happened
        self._parts: dict[str, list[str]] = {}  # place -> the places reachable from it (see _reachable)
        self._parts_key: int | None = None  # the _map_version they were found at
        self._map_version = 0  # changes with every place and route added
        # by tag, so an action type a scenario rebuilds each phase (say, a Vote over the living players)
        # keeps its handler
        self.handlers: dict[str, Handler] = {_type_tag(t): fn for t, fn in
                                             ((Say, _say), (Move, _move), (Give, _give), (Use, _use), (Wait, _wait))}

    # -- building ----------------------------------------------------------------------

    def add_place(self, name: str, description: str = "") -> None:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"a place needs a non-empty name, got {name!r}")
        if name in self.graph:
            raise ValueError(f"place {name!r} already exists")
        self.graph.add_node(name, description=description)
        self._map_version += 1

    def connect(self, a: str, b: str, minutes: float = 1.0) -> None:
        """A two-way route between places `a` and `b` taking `minutes` game minutes to walk."""
        self.check_place(a)
        self.check_place(b)
        if a == b:
            raise ValueError(f"cannot connect {a!r} to itself")
        if minutes < 0:
            raise ValueError(f"a route cannot take negative time ({minutes} minutes)")
        self.graph.add_edge(a, b, minutes=float(minutes))
        self._map_version += 1

    def add_thing(self, name: str, *, at: str | None = None, holder: str | None = None, description: str = "",
                  portable: bool = True, **data: Any) -> Thing:
        """A thing lying at place `at` or carried by agent `holder` (exactly one of the two)."""
        if name in self.things:
            raise ValueError(f"thing {name!r} already exists")
        if (at is None) == (holder is None):
            raise ValueError(f"thing {name!r} needs exactly one of at= (a place) or holder= (an agent)")
        if at is not None:
            self.check_place(at)
        if holder is not None:
            self.check_agent(holder)
        thing = Thing(name=name, description=description, place=at, holder=holder, portable=portable, data=data)
        self.things[name] = thing
        return thing

    def place_agent(self, agent: str, place: str) -> None:
        self.check_place(place)
        self.set_position(agent, Position(place=place))

    def set_position(self, agent: str, pos: Position) -> None:
        old = self.positions.get(agent)
        if old is not None and old.place is not None:
            self._at[old.place].discard(agent)
        self.positions[agent] = pos
        self._order.setdefault(agent, len(self._order))
        if pos.place is not None:
            self._at.setdefault(pos.place, set()).add(agent)

    def on(self, action_type: type) -> Callable[[Handler], Handler]:
        """Decorator: resolve `action_type` with `fn(world, actor, action)` returning events (or None)."""
        if not (isinstance(action_type, type) and issubclass(action_type, Action)):
            raise TypeError(f"world.on takes an Action subclass, got {action_type!r}")

        def register(fn: Handler) -> Handler:
            self.handlers[_type_tag(action_type)] = fn
            return fn

        return register

    # -- looking -----------------------------------------------------------------------

    @property
    def places(self) -> list[str]:
        return list(self.graph.nodes)

    def check_place(self, name: str) -> None:
        if name not in self.graph:
            raise ValueError(f"unknown place {name!r}; places: {_choices(self.graph.nodes)}")

    def check_agent(self, name: str) -> None:
        if name not in self.positions:
            raise ValueError(f"unknown agent {name!r}; agents: {_choices(self.positions)}")

    def place_of(self, agent: str) -> str | None:
        return self.positions[agent].place

    def agents_at(self, place: str) -> list[str]:
        """In the order the agents joined the world (the same after a checkpoint is loaded)."""
        order = self._order
        return sorted(self._at.get(place, ()), key=order.__getitem__)

    def inventory(self, agent: str) -> list[str]:
        return [t.name for t in self.things.values() if t.holder == agent]

    def things_at(self, place: str) -> list[str]:
        return [t.name for t in self.things.values() if t.place == place]

    def absent(self, actor: str, other: str) -> str | None:
        """Why `actor` cannot deal with `other` face to face (unknown, elsewhere, themself), or None if
        `other` is here: the check a handler makes before acting on a name the model wrote."""
        here = self.place_of(actor)
        company = _choices(set(self.agents_at(here)) - {actor})
        if other not in self.positions:
            return f"there is nobody called {other!r}; here: {company}"
        if other == actor:
            return f"{other} is you; here: {company}"
        if self.place_of(other) != here:
            return f"{other} is not here; here: {company}"
        return None

    def choices_for(self, agent: str,
                    kinds: Iterable[str] = ("person", "place", "item", "thing")) -> dict[str, list[str]]:
        """The names an agent's choice fields may take now, by kind: `person` everyone else here, `place` every
        other place a route leads to, `item` what it carries, `thing` what it carries or what lies here.
        Only the `kinds` asked for (a scenario adds its own with `@sim.choices`)."""
        here = self.positions[agent].place
        out: dict[str, list[str]] = {}
        for kind in kinds:
            if kind == "person":
                out[kind] = [] if here is None else [a for a in self.agents_at(here) if a != agent]
            elif kind == "place":
                out[kind] = [] if here is None else [p for p in self._reachable(here) if p != here]
            elif kind == "item":
                out[kind] = self.inventory(agent)
            elif kind == "thing":
                out[kind] = self.inventory(agent) + ([] if here is None else self.things_at(here))
        return out

    def _reachable(self, place: str) -> list[str]:
        """The places in `place`'s part of the map, in the order they were added (cached until the map changes)."""
        if self._parts_key != self._map_version:
            self._parts, self._parts_key = {}, self._map_version
        part = self._parts.get(place)
        if part is None:
            members = nx.node_connected_component(self.graph, place)
            part = [p for p in self.graph.nodes if p in members]
            for p in part:
                self._parts[p] = part
        return part

    def can_act(self, agent: str) -> bool:
        return self.positions[agent].place is not None

    @property
    def minutes(self) -> float:
        return self.start_minute + self.tick * self.minutes_per_tick

    def clock(self) -> str:
        m = int(self.minutes)
        return f"day {m // 1440 + 1}, {m % 1440 // 60:02d}:{m % 60:02d}"

    def describe_for(self, agent: str) -> str:
        """The agent's situation in a few plain sentences: time, place, company, things, exits."""
        pos = self.positions[agent]
        if pos.place is None:
            return f"It is {self.clock()}. You are on your way to {pos.dest}."
        here = pos.place
        desc = self.graph.nodes[here].get("description")
        others = [a for a in self.agents_at(here) if a != agent]
        exits = [f"{n} ({self.graph.edges[here, n]['minutes']:g} min)" for n in self.graph.neighbors(here)]
        lines = [f"It is {self.clock()}. You are at the {here}" + (f" ({desc})." if desc else "."),
                 f"Here with you: {_choices(others)}.",
                 f"Things here: {_choices(self.things_at(here))}. You carry: {_choices(self.inventory(agent))}.",
                 f"From here you can go to: {', '.join(exits) or 'nowhere'}."]
        return "\n".join(lines)

    def observers(self, event: Event) -> list[str]:
        """Who perceives `event`: its `audience` when the event names one, else everyone at its
        place but the actor; fail events only the actor; waits, reflections and plans nobody.
        Taken when the event happened: who left the tavern later in the same tick still heard it."""
        seen = self._seen.get(event.seq)
        return list(seen) if seen is not None else self._observers(event)

    def _observers(self, event: Event) -> list[str]:
        audience = event.heard_by
        if audience is not None:
            return [a for a in audience if a in self.positions]
        if event.kind == "fail":
            return [event.actor] if event.actor else []
        if event.kind in _PRIVATE or event.place is None:
            return []
        return [a for a in self.agents_at(event.place) if a != event.actor]

    # -- changing ----------------------------------------------------------------------

    def event(self, kind: str, text: str, **fields: Any) -> Event:
        """A new event at the current tick with the next sequence number (`fields`: Event's)."""
        data = fields.get("data") or {}
        if "audience" in data and fields.get("audience") is None:  # scenarios written before it was a field
            warnings.warn('data={"audience": ...} is now Event(audience=...): pass world.event(..., audience=...)',
                          DeprecationWarning, stacklevel=2)
            fields["data"] = {k: v for k, v in data.items() if k != "audience"}
            fields["audience"] = list(data["audience"])
        self.seq += 1
        event = Event(tick=self.tick, seq=self.seq, kind=kind, text=text, **fields)
        self._seen[event.seq] = self._observers(event)
        return event

    def fail(self, actor: str, action: Any, reason: str) -> Event:
        return self.event("fail", f"{actor} could not {_tag(action)}: {reason}", actor=actor,
                          place=self.place_of(actor), data={"action": msgspec.to_builtins(action)}, importance=5.0)

    def resolve(self, actions: list[tuple[str, Any]], rng: random.Random) -> list[Event]:
        """Apply one tick's actions in a seeded random order (fair when two agents want the same thing),
        departures (`Action.departs`) last, and return their events. An action type with no handler is a
        programming error: TypeError."""
        order = list(actions)
        rng.shuffle(order)
        order.sort(key=lambda pair: getattr(pair[1], "departs", False))  # stable: the shuffle holds within each
        events: list[Event] = []
        for actor, action in order:
            handler = self.handlers.get(_tag(action))
            if handler is None:
                raise TypeError(f"no handler for action {type(action).__name__}: register one with world.on(...)")
            if not self.can_act(actor):
                events.append(self.fail(actor, action, "you are travelling"))
                continue
            out = handler(self, actor, action)
            if isinstance(out, Event):
                events.append(out)
            elif out is not None:
                events.extend(out)
        return events

    def arrivals(self) -> list[Event]:
        """Land every traveller whose arrival tick has come (the simulation calls this as a tick begins)."""
        self._seen.clear()
        return [self._arrive(agent, pos.dest) for agent, pos in self.positions.items()
                if pos.place is None and pos.arrive_tick is not None and pos.arrive_tick <= self.tick]

    def _arrive(self, agent: str, place: str) -> Event:
        self.set_position(agent, Position(place=place))
        return self.event("arrive", f"{agent} arrives at the {place}.", actor=agent, place=place)

    def travel_minutes(self, a: str, b: str) -> float | None:
        try:
            return nx.shortest_path_length(self.graph, a, b, weight="minutes")
        except nx.NetworkXNoPath:
            return None

    # -- state -------------------------------------------------------------------------

    def to_state(self) -> dict:
        return {
            "minutes_per_tick": self.minutes_per_tick, "start_minute": self.start_minute, "preamble": self.preamble,
            "tick": self.tick, "seq": self.seq,
            "places": [[n, d.get("description", "")] for n, d in self.graph.nodes(data=True)],
            "routes": [[a, b, d["minutes"]] for a, b, d in self.graph.edges(data=True)],
            "things": [msgspec.to_builtins(t) for t in self.things.values()],
            "positions": {a: msgspec.to_builtins(p) for a, p in self.positions.items()},
        }

    def load_state(self, state: dict) -> None:
        """Replace everything but the handlers with a `to_state()` snapshot."""
        self.minutes_per_tick, self.start_minute = state["minutes_per_tick"], state["start_minute"]
        self.preamble, self.tick, self.seq = state["preamble"], state["tick"], state["seq"]
        self.graph, self._parts_key = nx.Graph(), None  # a new map: reachability is found again
        for name, desc in state["places"]:
            self.graph.add_node(name, description=desc)
        for a, b, minutes in state["routes"]:
            self.graph.add_edge(a, b, minutes=minutes)
        self.things = {t["name"]: msgspec.convert(t, Thing) for t in state["things"]}
        self.positions, self._at, self._order = {}, {}, {}
        for agent, pos in state["positions"].items():
            self.set_position(agent, msgspec.convert(pos, Position))

    def snapshot(self) -> dict:
        """Who is where and what lies where: the retained world topic's payload."""
        return {"tick": self.tick, "clock": self.clock(),
                "places": {p: self.agents_at(p) for p in self.graph.nodes},
                "travelling": {a: p.dest for a, p in self.positions.items() if p.place is None},
                "things": {t.name: t.holder or t.place for t in self.things.values()}}


def _tag(action: Any) -> str:
    return _type_tag(type(action))


def _type_tag(t: type) -> str:
    tag = getattr(getattr(t, "__struct_config__", None), "tag", None)
    return tag if isinstance(tag, str) else t.__name__


# -- the base actions ---------------------------------------------------------------------


def _say(world: World, actor: str, a: Say) -> Event:
    here = world.place_of(actor)
    why = None if a.to is None else world.absent(actor, a.to)
    if why:
        return world.fail(actor, a, why)
    text = f'{actor} says to {a.to}: "{a.text}"' if a.to else f'{actor} says: "{a.text}"'
    return world.event("say", text, actor=actor, place=here, target=a.to, data=msgspec.to_builtins(a),
                       importance=6.0 if a.to else 4.0)


def _move(world: World, actor: str, a: Move) -> list[Event] | Event:
    here = world.place_of(actor)
    if a.to not in world.graph:
        return world.fail(actor, a, f"there is no place called {a.to!r}; places: {_choices(world.graph.nodes)}")
    if a.to == here:
        return world.fail(actor, a, f"you are already at the {here}")
    minutes = world.travel_minutes(here, a.to)
    if minutes is None:
        return world.fail(actor, a, f"no route leads from the {here} to the {a.to}")
    ticks = math.ceil(minutes / world.minutes_per_tick - 1e-9)
    leave = world.event("move", f"{actor} leaves the {here} for the {a.to}.", actor=actor, place=here,
                        target=a.to, data={**msgspec.to_builtins(a), "minutes": minutes}, importance=2.0)
    if ticks <= 1:  # arrives within this tick
        return [leave, world._arrive(actor, a.to)]
    world.set_position(actor, Position(place=None, dest=a.to, arrive_tick=world.tick + ticks))
    return leave


def _give(world: World, actor: str, a: Give) -> Event:
    here = world.place_of(actor)
    thing = world.things.get(a.item)
    if thing is None or thing.holder != actor:
        return world.fail(actor, a, f"you do not carry {a.item!r}; you carry: {_choices(world.inventory(actor))}")
    why = world.absent(actor, a.to)
    if why:
        return world.fail(actor, a, why)
    thing.holder = a.to
    return world.event("give", f"{actor} gives the {a.item} to {a.to}.", actor=actor, place=here, target=a.to,
                       data=msgspec.to_builtins(a), importance=5.0)


def _use(world: World, actor: str, a: Use) -> Event:
    here = world.place_of(actor)
    thing = world.things.get(a.item)
    if thing is None or not (thing.holder == actor or thing.place == here):
        near = world.inventory(actor) + world.things_at(here)
        return world.fail(actor, a, f"there is no {a.item!r} at hand; at hand: {_choices(near)}")
    on = f" on {a.target}" if a.target else ""
    return world.event("use", f"{actor} uses the {a.item}{on}.", actor=actor, place=here, target=a.target,
                       data=msgspec.to_builtins(a), importance=3.0)


def _wait(world: World, actor: str, a: Wait) -> Event:
    return world.event("wait", f"{actor} waits.", actor=actor, place=world.place_of(actor), importance=0.0)
