"""The software team: the scripted team takes a feature from request to approved tasks within the limit, with
every kind of artifact; the random floor completes less; request, spec and design wording name the parts;
runs are deterministic and continue exactly from a checkpoint; the CLI reports the metrics; lines vary."""

import random
import re
import subprocess
import sys

import msgspec
import pytest

from swarm import ScenarioError, ScriptedModel, Simulation
from swarm.scenario import load_module
from swarm.scenarios.software_team.feature import draw, say
from swarm.scenarios.software_team.state import reminder
from tests.checkpoints import assert_resumes_exactly
from tests.scenarios.hints import hit_rates

team = load_module("software_team")


def run(model="scripted", seed=1, ticks=60, **options) -> Simulation:
    sim = Simulation.from_scenario("software_team", model=model, seed=seed, **options)
    sim.run(ticks)
    return sim


def test_scripted_team_ships_the_feature_within_the_limit():
    for seed in (1, 2, 3, 4):
        sim = run(seed=seed)
        m = sim.report().metrics
        assert m["done"] and m["released"] and m["ticks_to_done"] <= 60
        assert m["tasks_total"] >= 3 and m["tasks_completed"] == m["tasks_total"] and m["scope_coverage"] == 1.0
        assert m["review_rounds"] == m["tasks_total"] + m["changes_requested"]  # every request is one more round
        assert all(m["artifacts"][kind] >= 1 for kind in team.KINDS)
        assert m["artifacts"]["change"] == m["artifacts"]["review"] == m["review_rounds"]
        assert sorted(team.parts_in(sim.state.feature.request)) == sorted(sim.state.feature.parts)
        # artifacts are things in the world, their text in the state
        for name, art in sim.state.artifacts.items():
            assert sim.world.things[name].place == ("repo" if art.kind in ("change", "review") else "wiki")
    assert sum(run(seed=s).report().metrics["changes_requested"] for s in (1, 2, 3, 4)) > 0


def test_bigger_teams_ship_too_and_sizes_are_checked():
    m = run(seed=2, agents=20).report().metrics
    assert m["agents"] == 20 and m["done"] and m["tasks_completed"] == m["tasks_total"]
    for bad in (4, 21):
        with pytest.raises(ScenarioError, match="5 to 20 agents"):
            Simulation.from_scenario("software_team", model="scripted", agents=bad)


def test_the_random_floor_completes_less():
    for seed in (1, 2, 3):
        good = run(seed=seed).report().metrics
        bad = run("random", seed=seed).report().metrics
        assert bad["tasks_completed"] < good["tasks_completed"]
        assert bad["scope_coverage"] < good["scope_coverage"]


def test_request_spec_and_design_phrases_name_exactly_their_part():
    for lines in (team.REQUEST, team.MANAGER, team.ENGINEER):
        for part in team.PARTS:
            for phrase in lines.rules[part]:
                assert team.parts_in(phrase.replace("{obj}", "support tickets")) == [part], phrase
    for rule in ("request", "who", "spec", "open", "must", "done", "design", "risk", "risk_tail"):
        for lines in (team.REQUEST, team.MANAGER, team.ENGINEER):
            for phrase in lines.rules.get(rule, []):
                assert team.parts_in(phrase) == [], phrase


def test_review_notes_name_the_gap_the_change_note_admits():
    rng = random.Random(0)
    for gap in team.GAPS:
        for _ in range(10):
            change = team.ENGINEER.say("{gap_" + gap + "}", rng, obj="orders")
            asked = team.ENGINEER.say("{ask_" + gap + "}", rng, task="T1", obj="orders")
            assert team.gap_in(change) == gap and team.ask_in(asked) == gap
    for _ in range(20):
        assert team.gap_in(team.ENGINEER.say("{tested}", rng)) is None
        fix = rng.choice(["{fix_tests}", "{fix_empty}", "{fix_scale}", "{fix_errors}"])
        revision = say(team.ENGINEER, "{revision}", rng, {"fix": fix}, task="T1", obj="orders")
        assert team.gap_in(revision) is None and revision.startswith(("T1", "Fixed T1"))


def test_handlers_survive_nonsense():
    def nonsense(turn):
        kind, me = turn.request.kind, turn.agent.id
        if kind != "act":
            return team.policy(turn)
        role = turn.sim.state.roles[me]
        if role == "pm":
            return team.Review(task="T1", verdict="approve", notes="looks fine")
        if role == "architect":
            return team.Breakdown(parts=["api"])
        if role == "qa":
            return team.Review(task="T7", verdict="approve", notes="ok")
        return team.Implement(task="T42", change="did it") if turn.seed % 2 else team.Claim(task="nope")

    sim = Simulation.from_scenario("software_team", model=ScriptedModel(nonsense), seed=1)
    fails = [e.text for _ in range(5) for e in sim.tick() if e.kind == "fail"]
    assert any("only the qa can do that" in f for f in fails)
    assert any("write the design first" in f for f in fails)
    assert any("'T42' is not yours" in f or "T42 is not yours to implement; yours: none" in f for f in fails)
    assert any("nope is not open; open tasks: none" in f for f in fails)
    assert sim.report().metrics["tasks_total"] == 0


def test_same_seed_same_events_and_another_seed_differs():
    def events(seed):
        sim = Simulation.from_scenario("software_team", model="scripted", seed=seed)
        return [(e.kind, e.text) for _ in range(15) for e in sim.tick()]

    assert events(6) == events(6)
    assert events(6) != events(7)


def test_saved_loaded_and_continued_run_logs_the_same_events(tmp_path):
    def loaded(sim):
        assert isinstance(sim.state, team.Team) and sim.state.tasks and "spec" in sim.world.things

    assert_resumes_exactly(tmp_path, "software_team", seed=5, before=6, after=14, on_load=loaded)


def test_cli_prints_a_report_with_the_metrics():
    out = subprocess.run([sys.executable, "-m", "swarm.cli", "run", "software_team", "--model", "scripted", "--ticks",
                          "40", "--seed", "1", "--headless", "--json"], capture_output=True, text=True, check=True)
    report = msgspec.json.decode(out.stdout.splitlines()[-1])
    m = report["metrics"]
    assert report["ticks"] == 40 and m["agents"] == 5
    for key in ("tasks_total", "tasks_completed", "review_rounds", "artifacts", "done", "ticks_to_done"):
        assert key in m
    assert m["done"] is True and m["artifacts"]["spec"] == 1


def test_policy_answers_reflect_and_plan_requests():
    sim = run(seed=3, ticks=5)
    for agent in sim.agents.values():
        agent.plan.invalidate("the deadline moved")
    events = sim.tick()
    assert sorted(e.actor for e in events if e.kind == "plan") == sorted(sim.agents)
    agent = sim.agents["Quinn"]
    agent.memory._since_reflection = agent.memory.reflect_threshold  # as if a lot had happened
    agent.plan.invalidate("again")
    events = sim.tick()
    [insight] = [e for e in events if e.kind == "reflect"]
    assert 0 < len(insight.data["text"]) <= 200


def test_scripted_lines_vary():
    requests = [draw(random.Random(f"software_team:{s}")).request for s in range(300)]
    assert len(set(requests)) > 0.8 * len(requests)
    notes = {"spec": [], "design": [], "change": [], "review": []}
    for seed in range(12):
        sim = run(seed=seed, ticks=30)
        for art in sim.state.artifacts.values():
            if art.kind in notes:
                notes[art.kind].append(re.sub(r"T\d", "T#", art.text))
    for kind, texts in notes.items():
        assert len(set(texts)) > 0.75 * len(texts), kind
        assert max(map(len, texts)) <= (240 if kind in ("spec", "design") else 160)


def test_each_prompt_closes_with_the_next_step_and_the_breakdown_quotes_the_request():
    seen = []

    class Watch(ScriptedModel):
        def decide(self, turns):
            for t in turns:
                if t.request.kind == "act":
                    due = reminder(t.sim.state, t.agent.id)
                    seen.append((t.sim.state.roles[t.agent.id], due, t.request.messages[-1]["content"]))
            return super().decide(turns)

    sim = Simulation.from_scenario("software_team", model=Watch(team.policy), seed=2)
    sim.run(30)
    assert {role for role, due, _ in seen if due} == {"pm", "architect", "engineer", "qa"}
    assert any(due and due.startswith("Break your design into tasks") for _, due, _ in seen)
    for _, due, text in seen:
        if due is None:
            assert "\nNow: " not in text
            continue
        assert text.split("\n\n")[-2] == f"Now: {due}"
        if due.startswith("Break your design into tasks"):
            assert due.endswith(sim.state.feature.request)


def test_hints_foresee_the_handoffs():
    # measured: hints name the next act 0.70-0.84 of the time, the moving average 0.10-0.14 (seeds 1-5)
    for seed in (1, 2, 3):
        new, old = hit_rates("software_team", ticks=30, seed=seed)
        assert new >= 0.6 and new >= old + 0.4, (seed, new, old)
