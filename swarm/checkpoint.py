"""Checkpoints: a simulation's whole state in one file, written atomically, and a simulation rebuilt from one.

`Simulation.save`, `load`, `restore`, `checkpoint_info` and `autosave` are the API; this module holds how. A
checkpoint is msgpack: world, agents (memories, plans), the scenario's state, the random generator,
counters, the per-tick history, the model references and where the event log stands.
"""

from __future__ import annotations

import logging
import os
import random
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from swarm.agents import Agent
from swarm.events import Event
from swarm.model_names import named_model
from swarm.recorder import Recorder
from swarm.scenario import ScenarioError, ScenarioRef, run_build

if TYPE_CHECKING:
    from swarm.simulation import Simulation

log = logging.getLogger("swarm.simulation")

FORMAT = 1


class Autosave:
    """`Simulation.autosave`'s settings, and the state from before the tick in progress."""

    def __init__(self, path: Path, every: int, run: dict | None):
        self.path, self.every, self.run = path, every, run
        self.before: bytes | None = None  # the state at the start of the tick in progress
        self.written = False  # whether this run wrote the checkpoint yet


def write_atomically(path: Path, data: bytes) -> Path:
    """`path` holds either its old bytes or `data`, whatever moment the process dies: a temporary file
    beside it is written and synced, then renamed over it, and the rename is synced with the folder."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:
        folder = os.open(path.parent, os.O_RDONLY)
    except OSError:  # a platform whose folders cannot be opened (Windows): the rename is as durable as it gets
        return path
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
    return path


def encode(sim: Simulation) -> bytes:
    """The simulation's state as a checkpoint's bytes (see `Simulation.save`)."""
    if sim.recorder is not None:
        sim.recorder.flush()  # the log holds every byte up to the offset the checkpoint records
    state = {
        "format": FORMAT, "name": sim.name, "seed": sim.seed,
        "model": sim.model.ref if sim.model is not None else None, "bus": sim.bus_url,
        "models": {name: m.ref for name, m in sim._more_models.items()},
        "scenario": None if sim.scenario is None else {"spec": sim.scenario.spec,
                                                        "options": sim.scenario.options},
        "action_types": [t.__name__ for t in sim.action_types],
        "world": sim.world.to_state(), "agents": [a.to_state() for a in sim.agents.values()],
        "state": sim.state, "rng": _rng_state(sim.rng), "counters": dict(sim.counters),
        "history": sim.history, "pending": sim._pending, "hinted": sim.planner.hinted,
        "record": None if sim.recorder is None else {"path": str(sim.recorder.path.resolve()),
                                                      "offset": sim.recorder.tell()},
        "run": None if sim._autosave is None else sim._autosave.run,
    }
    return msgspec.msgpack.encode(state)


def info(path: str | Path) -> dict:
    """`Simulation.checkpoint_info`: what the checkpoint at `path` holds, without loading it."""
    state = read(path)
    return {"name": state["name"], "tick": state["world"]["tick"], "scenario": state["scenario"],
            "model": state["model"], "models": state.get("models", {}), "bus": state["bus"],
            "record": state["record"], "run": state.get("run")}


def load(cls: type[Simulation], path: str | Path, model: Any = None, bus: str | None = None,
         engine_config: Any = None) -> Simulation:
    """`Simulation.load`: a `cls` built from the checkpoint at `path` (its scenario rebuilt, then restored)."""
    state = read(path)
    if state["scenario"] is not None:
        log.info("checkpoint %s: rebuilding its scenario runs %s", path, _scenario_code(state["scenario"]["spec"]))
    model = model if model is not None else state["model"]
    if model is None:
        raise ValueError(f"checkpoint {path} does not name a model folder; pass model=")
    if state["scenario"] is not None:
        model = named_model(model, state["scenario"]["spec"])
    sim = cls(model, seed=state["seed"], bus=bus or state["bus"], name=state["name"], engine_config=engine_config)
    if state["scenario"] is not None:
        sim.scenario = ScenarioRef(state["scenario"]["spec"], state["scenario"]["options"])
        run_build(sim, sim.scenario)
    for name, ref in state.get("models", {}).items():  # those the scenario's build did not add again
        if name not in sim._more_models:
            if ref is None:
                raise ValueError(f"checkpoint {path} does not say where model {name!r} is; rebuild the "
                                 f"simulation, add_model({name!r}, ...), and restore() the checkpoint into it")
            sim.add_model(name, ref)
    try:
        sim.restore(state)
    except (KeyError, TypeError, IndexError, msgspec.ValidationError) as e:  # deeper than the top level
        raise ValueError(f"{path} is a damaged swarm checkpoint: {type(e).__name__}: {e}") from None
    return sim


def _restore_state(sim: Simulation, saved: dict) -> None:
    """The scenario's state, in place: a scenario's code may hold the object build() made. A plain dict is
    refilled; a typed state (a msgspec Struct) takes the saved fields, converted to its type."""
    if isinstance(sim.state, msgspec.Struct):
        typed = msgspec.convert(saved, type(sim.state))
        for name in type(sim.state).__struct_fields__:
            setattr(sim.state, name, getattr(typed, name))
        return
    sim.state.clear()
    sim.state.update(saved)


def restore(sim: Simulation, state: dict | str | Path) -> None:
    """`Simulation.restore`: a checkpoint's state (or the checkpoint file at a path) into `sim`."""
    if not isinstance(state, dict):
        state = read(state)
    known = {t.__name__ for t in sim.action_types}
    missing = sorted(set(state["action_types"]) - known)
    if missing:
        raise ScenarioError(f"the checkpoint's agents can take {', '.join(missing)}, which this simulation "
                            "does not define: build it with the same scenario before restoring")
    named = {a["persona"].get("model") for a in state["agents"]} - {None} - set(sim._more_models)
    if named:
        raise ScenarioError(f"the checkpoint's agents are played by model(s) {', '.join(sorted(named))}, which "
                            "this simulation does not have: add_model them before restoring")
    sim.world.load_state(state["world"])
    sim.agents = {}
    for a in state["agents"]:
        agent = Agent.from_state(a)
        sim.agents[agent.id] = agent
    _restore_state(sim, state["state"])
    sim.rng.setstate(_rng_tuple(state["rng"]))
    sim.counters = Counter(state["counters"])
    sim.history = list(state.get("history", []))  # checkpoints from before it was kept have none
    sim._pending = [msgspec.convert(e, Event) for e in state["pending"]]
    sim.planner.hinted = {}  # a fresh model has no hints yet: send them all again
    if sim.recorder is not None:
        sim.recorder.close()
        sim.recorder = None
    if state["record"] is not None:
        rec = state["record"]
        sim._record_path = Path(rec["path"])
        sim.recorder = Recorder(sim._record_path, sim._header(), offset=rec["offset"])


def _rng_state(rng: random.Random) -> list:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def _rng_tuple(state: list) -> tuple:
    return state[0], tuple(state[1]), state[2]


def read(path: str | Path) -> dict:
    """A checkpoint file's state, its top level checked (ValueError naming what is wrong)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no checkpoint at {path}")
    try:
        state = msgspec.msgpack.decode(path.read_bytes())
    except msgspec.DecodeError as e:
        raise ValueError(f"{path} is not a swarm checkpoint ({e}; truncated, or not written by sim.save?)") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a swarm checkpoint (format {FORMAT})")
    try:
        msgspec.convert(state, _CheckpointFields)
    except msgspec.ValidationError as e:  # e.g. "Object missing required field `world`", "... - at `$.seed`"
        raise ValueError(f"{path} is a damaged swarm checkpoint: {e}") from None
    return state


class _ScenarioFields(msgspec.Struct):
    spec: str
    options: dict[str, Any]


class _RecordFields(msgspec.Struct):
    path: str
    offset: int


class _CheckpointFields(msgspec.Struct):
    """The top level of a checkpoint as `load` and `restore` read it, checked before either touches it (so a
    damaged file is a ValueError naming the field, not a KeyError halfway through). Fields it does not list
    pass: a newer writer may add some."""

    name: str
    seed: int
    model: str | None
    bus: str | None
    scenario: _ScenarioFields | None
    action_types: list[str]
    world: dict[str, Any]
    agents: list[dict[str, Any]]
    state: dict[str, Any]
    rng: tuple[int, list[int], float | None]
    counters: dict[str, int | float]
    pending: list[dict[str, Any]]
    record: _RecordFields | None
    history: list[dict[str, Any]] = []  # not in checkpoints written before the history was kept


def _scenario_code(spec: str) -> str:
    """What rebuilding scenario `spec` runs, for the log: a file's path, or the bundled module."""
    # the test swarm.scenario.load_module makes to tell a file from a bundled name
    if spec.endswith(".py") or Path(spec).suffix or "/" in spec:
        return f"the scenario file {Path(spec).resolve()}"
    return f"the bundled scenario swarm.scenarios.{spec}"
