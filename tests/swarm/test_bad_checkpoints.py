"""Damaged simulation checkpoints are refused with a ValueError naming the problem, and loading one says which
scenario code it runs before running it."""

import logging
from pathlib import Path

import msgspec
import pytest

from swarm import ScenarioError, Simulation

SCENARIO = str(Path(__file__).resolve().parents[2] / "examples" / "scenario_from_scratch.py")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A checkpoint of a short scripted run, as plain data (and the file it was read from)."""
    path = tmp_path_factory.mktemp("ckpt") / "sim.ckpt"
    sim = Simulation.from_scenario(SCENARIO, model="scripted", seed=3)
    sim.run(3)
    sim.save(path)
    sim.close()
    return path, msgspec.msgpack.decode(path.read_bytes())


def _write(tmp_path, state) -> Path:
    path = tmp_path / "damaged.ckpt"
    path.write_bytes(msgspec.msgpack.encode(state))
    return path


def _without(state, key):
    return {k: v for k, v in state.items() if k != key}


DAMAGE = {  # name -> (change to the saved state, what the error says)
    "no world": (lambda s: _without(s, "world"), "missing required field `world`"),
    "no scenario": (lambda s: _without(s, "scenario"), "missing required field `scenario`"),
    "seed a string": (lambda s: {**s, "seed": "3"}, r"Expected `int`, got `str` - at `\$\.seed`"),
    "spec a number": (lambda s: {**s, "scenario": {"spec": 5, "options": {}}}, r"at `\$\.scenario\.spec`"),
    "agents an object": (lambda s: {**s, "agents": {"Mira": {}}}, r"Expected `array`, got `object` - at `\$\.agents`"),
    "rng cut short": (lambda s: {**s, "rng": [3, [1, 2]]}, r"at `\$\.rng`"),
    "record without offset": (lambda s: {**s, "record": {"path": "run.jsonl"}},
                              r"missing required field `offset` - at `\$\.record`"),
    "counters a list": (lambda s: {**s, "counters": [1, 2]}, r"at `\$\.counters`"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_checkpoint_is_a_value_error_naming_the_field(saved, tmp_path, damage):
    change, message = DAMAGE[damage]
    path = _write(tmp_path, change(saved[1]))
    with pytest.raises(ValueError, match=f"{path} is a damaged swarm checkpoint: .*{message}"):
        Simulation.load(path, model="scripted")


def test_a_truncated_checkpoint_or_another_file_is_refused(saved, tmp_path):
    path = tmp_path / "cut.ckpt"
    path.write_bytes(saved[0].read_bytes()[:-100])
    with pytest.raises(ValueError, match="is not a swarm checkpoint .*truncated"):
        Simulation.load(path, model="scripted")
    for other in ([1, 2], {"format": 99}, "text"):
        with pytest.raises(ValueError, match="is not a swarm checkpoint"):
            Simulation.load(_write(tmp_path, other), model="scripted")


def test_unknown_fields_are_let_through(saved, tmp_path):
    # a newer writer may add fields; the ones this reader knows are what it checks
    sim = Simulation.load(_write(tmp_path, {**saved[1], "resume": {"ticks": 10}}), model="scripted")
    assert sim.counters["ticks"] == 3
    sim.close()


def test_loading_logs_the_scenario_file_it_runs_before_running_it(saved, tmp_path, caplog):
    stranger = tmp_path / "stranger.py"
    stranger.write_text("raise RuntimeError('a stranger ran code here')\n")
    state = saved[1]
    path = _write(tmp_path, {**state, "scenario": {**state["scenario"], "spec": str(stranger)}})
    with caplog.at_level(logging.INFO, logger="swarm.simulation"), pytest.raises(ScenarioError, match="stranger"):
        Simulation.load(path, model="scripted")
    assert f"runs the scenario file {stranger}" in caplog.text


@pytest.mark.parametrize("change", [
    lambda s: {**s, "agents": [{k: v for k, v in s["agents"][0].items() if k != "persona"}]},
    lambda s: {**s, "world": {k: v for k, v in s["world"].items() if k != "tick"}},
    lambda s: {**s, "rng": [3]},
])
def test_damage_deeper_than_the_top_level_is_a_value_error_too(tmp_path, saved, change):
    _, state = saved
    with pytest.raises(ValueError, match="damaged swarm checkpoint"):
        Simulation.load(_write(tmp_path, change(state)), model="scripted")
