"""The village scenario: a timetable that moves people, news that spreads by word of mouth and draws a
crowd, a random floor that does worse, determinism, checkpoints, the CLI and a 1,000-agent town."""

import random
import re
import subprocess
import sys

import msgspec
import pytest

from swarm import ScenarioError, ScriptedModel, Simulation
from swarm.agents.actions import Move, Say, Wait
from swarm.scenarios import village
from swarm.scenarios.village import script
from swarm.scenarios.village.state import next_change
from tests.checkpoints import assert_resumes_exactly
from tests.scenarios.hints import hit_rates


def run(model="scripted", seed=1, ticks=40, **options):
    sim = Simulation.from_scenario("village", model=model, seed=seed, **options)
    report = sim.run(ticks)
    sim.close()
    return report.metrics


def test_the_news_spreads_and_the_informed_gather():
    for seed in (1, 2, 3):
        m = run(seed=seed)
        assert m["informed"] > 1  # beyond the villager the runner told
        assert 0 < m["attendance"] <= m["informed"]
        assert m["attendance_share"] == pytest.approx(m["attendance"] / m["agents"], abs=1e-4)
        assert m["conversations"] > 20


def test_random_floor_spreads_less_and_gathers_fewer():
    seeds = (1, 2, 3)
    scripted = [run(seed=s) for s in seeds]
    floor = [run("random", seed=s) for s in seeds]
    assert sum(m["informed_share"] for m in floor) < sum(m["informed_share"] for m in scripted)
    assert sum(m["attendance"] for m in floor) < sum(m["attendance"] for m in scripted)


def test_each_villager_goes_where_its_plan_step_says():
    sim = Simulation.from_scenario("village", model="scripted", seed=2)
    sim.run(19)  # ticks 0-18: at 17:00 (tick 18) work ends and the evening begins
    for agent in sim.agents.values():
        step = agent.plan.next_step(sim.tick_count)
        assert step.text == sim.state.step[agent.id]
        place = re.match(r"Be at the (.+?): ", step.text)[1]
        assert sim.world.place_of(agent.id) == place, (agent.id, step.text)
    assert sum("evening" in s for s in sim.state.step.values()) > 6
    sim.close()


def test_the_gathering_happens_at_its_place_and_time():
    sim = Simulation.from_scenario("village", model="scripted", seed=3, gathering="16:00")
    g = sim.state.gathering
    assert g.tick == 12 and g.time == "16:00"
    events = [e for _ in range(20) for e in sim.tick()]
    [begins, ends] = [e for e in events if e.kind == "gathering"]
    assert (begins.tick, ends.tick) == (12, 17) and begins.place == ends.place == g.place
    [news] = [e for e in events if e.kind == "news"]
    assert sim.world.observers(news) == [g.first] and g.first in sim.state.informed
    assert set(sim.state.attended) <= set(sim.state.informed)
    sim.close()


def test_nonsense_from_a_model_fails_softly():
    def nonsense(turn):
        if turn.request.kind != "act":
            return village.policy(turn)
        if turn.world.tick == 0:  # away from work, to the square (where nobody works)
            return Move(to="square")
        return [village.Work(task="juggle"), village.Tell(to="Nobody", news="hi"), Say(text="x", to="Ghost"),
                Move(to="the moon"), Wait()][turn.seed % 5]

    sim = Simulation.from_scenario("village", model=ScriptedModel(nonsense), seed=4)
    events = [e for _ in range(3) for e in sim.tick()]
    fails = [e.text for e in events if e.kind == "fail"]
    assert any("you work at the" in f for f in fails)
    assert any("nobody called 'Nobody'" in f for f in fails)
    assert any("no place called 'the moon'" in f for f in fails)
    sim.close()


def test_same_seed_same_events():
    def events(seed):
        sim = Simulation.from_scenario("village", model="scripted", seed=seed)
        out = [(e.kind, e.actor, e.text) for _ in range(25) for e in sim.tick()]
        sim.close()
        return out

    assert events(5) == events(5)
    assert events(5) != events(6)


def test_saved_loaded_and_continued_run_logs_the_same_events(tmp_path):
    def loaded(sim):
        assert sim.state.informed

    assert_resumes_exactly(tmp_path, "village", seed=7, before=15, after=17, abandoned=4, on_load=loaded)


def test_cli_prints_a_report_with_the_metrics():
    out = subprocess.run([sys.executable, "-m", "swarm.cli", "run", "village", "--model", "scripted", "--ticks", "30",
                          "--seed", "1", "--headless", "--json"], capture_output=True, text=True, check=True)
    report = msgspec.json.decode(out.stdout.splitlines()[-1])
    m = report["metrics"]
    assert report["ticks"] == 30 and m["agents"] == 12
    assert m["informed"] > 1 and m["attendance"] > 0 and 0 < m["informed_share"] <= 1
    assert {"attendance_share", "conversations", "gathering"} <= set(m)


def test_a_town_of_1000_runs():
    sim = Simulation.from_scenario("village", model="scripted", seed=1, agents=1000)
    assert len(sim.agents) == 1000 and len(sim.world.places) > 100
    sim.run(2)
    assert sim.counters["turns"] >= 1000 and sim.counters["ticks"] == 2
    sim.close()


def test_scripted_lines_vary_and_stay_short():
    lines = []
    for seed in (1, 2):
        sim = Simulation.from_scenario("village", model="scripted", seed=seed)
        lines += [e.data["text"] for _ in range(40) for e in sim.tick() if e.kind in ("say", "tell")]
        sim.close()
    assert len(lines) > 200
    assert len(set(lines)) > 0.8 * len(lines)
    assert max(map(len, lines)) <= 120


def test_every_rule_of_each_voice_expands():
    slots = {"name": "Mira", "topic": "harvest supper", "gplace": "square", "time": "18:30", "place": "mill",
             "daypart": "evening", "hello": "Evening"}
    for voice in village.VOICES.values():
        for rule in voice.rules:
            for seed in range(30):
                assert isinstance(script._say(voice, "{" + rule + "}", random.Random(seed), **slots), str)


def test_bad_options_are_clear_errors():
    with pytest.raises(ScenarioError, match="2 to 5000 agents"):
        Simulation.from_scenario("village", model="scripted", agents=1)
    with pytest.raises(ScenarioError, match="HH:MM"):
        Simulation.from_scenario("village", model="scripted", gathering="dusk")
    with pytest.raises(ScenarioError, match="later on day 1"):
        Simulation.from_scenario("village", model="scripted", gathering="09:00")


def test_hints_foresee_the_timetable():
    sim = Simulation.from_scenario("village", model="scripted", seed=1)
    sim.tick()
    s = sim.state
    idle = next(a for a in sim.agents if a not in s.informed)
    assert next_change(sim, idle, 1) == 18  # 17:00, ten minutes a tick from 14:00
    told = s.gathering.first
    assert next_change(sim, told, 1) == 18  # to the evening place first, telling people on the way
    sim.run(17)
    assert next_change(sim, told, 18) == s.informed[told] < s.gathering.tick  # then set off
    sim.close()
    # measured: hints name the next act 0.94-0.98 of the time, the moving average 0.09-0.22 (seeds 1-5)
    for seed in (1, 2, 3):
        new, old = hit_rates("village", ticks=60, seed=seed)
        assert new >= 0.85 and new >= old + 0.5, (seed, new, old)
