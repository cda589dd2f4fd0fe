"""The tavern of the TUI tests played by the deterministic fake engine instead of a scripted policy."""

from swarm.model import EngineModel
from tests.fake_engine import FakeEngine
from tests.tui.test_app import tavern


def engine_tavern(record=None, **engine_options):
    """(sim, engine): Mira, Bob and Ann, every turn written by a `FakeEngine(**engine_options)`;
    `record`: a path for the run's log."""
    engine = FakeEngine(**engine_options)
    sim = tavern(record=record)
    sim.model = EngineModel(engine, ref="fake-engine", clock=engine.clock)
    return sim, engine
