"""The support desk: scripted triage routes accurately and tickets get resolved, the random floor routes at
about chance, SLA breaches pile up when specialists are few, runs are deterministic and continue exactly
from a checkpoint, the CLI reports the metrics, 1,000 agents run, and the scripted lines vary."""

import random
import re
import subprocess
import sys
from collections import Counter

import msgspec
import pytest

from swarm import ScenarioError, ScriptedModel, Simulation
from swarm.agents.actions import Wait
from swarm.scenario import load_module
from tests.checkpoints import assert_resumes_exactly
from tests.scenarios.hints import hit_rates

desk = load_module("support_desk")


def run(model="scripted", seed=1, ticks=30, **options) -> Simulation:
    sim = Simulation.from_scenario("support_desk", model=model, seed=seed, **options)
    sim.run(ticks)
    return sim


def test_scripted_staff_route_accurately_and_resolve_tickets():
    sim = run(seed=1, ticks=30)
    m = sim.report().metrics
    assert m["tickets"] >= 20 and m["routing_accuracy"] >= 0.9 and m["priority_accuracy"] >= 0.9
    assert m["resolved"] >= 0.8 * m["tickets"] and m["open"] == m["tickets"] - m["resolved"]
    assert m["escalated"] > 0 and m["reopened"] == 0 and m["sla_breaches"] == 0
    assert 2 <= m["mean_ticks_to_resolution"] <= 4  # route next tick, answer the tick after (a senior: one more)
    kinds = m["events_by_kind"]
    assert kinds["ticket"] == m["tickets"] and kinds["resolved"] == m["resolved"] and "fail" not in kinds


def test_the_random_floor_routes_at_about_chance_and_resolves_less():
    scripted = [run(seed=s).report().metrics for s in (1, 2, 3)]
    floor = [run("random", seed=s).report().metrics for s in (1, 2, 3)]
    for good, bad in zip(scripted, floor, strict=True):
        assert bad["routing_accuracy"] < good["routing_accuracy"] - 0.4
        assert bad["resolved"] < good["resolved"] and bad["reopened"] > 0
    mean = sum(m["routing_accuracy"] for m in floor) / len(floor)
    assert 0.1 < mean < 0.45  # four queues: chance is 0.25


def test_sla_breaches_pile_up_when_specialists_are_few():
    calm = run(seed=1, ticks=25, agents=20)
    swamped = run(seed=1, ticks=25, agents=20, rate=0.35, specialists=4)
    assert calm.report().metrics["sla_breaches"] == 0
    m = swamped.report().metrics
    assert m["sla_breaches"] > 0 and m["events_by_kind"]["sla"] == m["sla_breaches"]
    st = swamped.state
    # the specialists are the bottleneck: triage keeps up, the queues grow
    assert max(len(v) for v in st.inbox.values()) <= 1
    assert sum(len(q) for q in st.queues.values()) > 20


def test_tickets_read_true_to_a_careful_reader_but_not_to_a_naive_one():
    rng = random.Random(0)
    careful = naive = 0
    n = 400
    for _ in range(n):
        category, priority = rng.choice(desk.CATEGORIES), rng.choice(desk.PRIORITIES)
        senior = rng.random() < 0.2
        text, customer = desk.write_ticket(rng, category, priority, senior)
        assert customer in text and len(text) <= 190
        r = desk.read_ticket(text)
        careful += (r.category, r.priority, r.senior) == (category, priority, senior)
        hits = Counter({c: len(r.findall(text)) for c, r in desk.CUE_RE.items()})
        naive += hits.most_common(1)[0][0] == category and ("urgent" in text.lower()) == (priority == "urgent")
    assert careful == n
    assert naive < 0.8 * n  # the distractors ("fine, but", side remarks, "not urgent") fool a keyword count


def test_every_agent_is_offered_only_what_fits_and_handlers_survive_nonsense():
    schemas = {}

    def nonsense(turn):
        """Names tickets nobody holds, routes as a senior, answers as triage; the base types, not the narrowed."""
        kind, me = turn.request.kind, turn.agent.id
        if kind != "act":
            return desk.policy(turn)
        role = turn.sim.state.roles[me]
        schemas[role] = turn.request.schema
        if role == "triage":
            return desk.Answer(ticket="T-0001", text="hi") if turn.seed % 2 else desk.Route(
                ticket="T-9999", queue="billing", priority="low", note="x")
        if role == "senior":
            return desk.Route(ticket="T-0001", queue="moon", priority="low", note="x")
        return desk.Escalate(ticket="nope", reason="because")

    sim = Simulation.from_scenario("support_desk", model=ScriptedModel(nonsense), seed=2)
    fails = [e.text for _ in range(6) for e in sim.tick() if e.kind == "fail"]
    assert any("is not next in your inbox; next: T-" in f for f in fails)
    assert any("triage routes tickets; only specialists answer them" in f for f in fails)
    assert any("you do not hold 'nope'" in f for f in fails)
    m = sim.report().metrics
    assert m["routing_accuracy"] == 0.0 and m["resolved"] == 0 and m["open"] == m["tickets"] > 0
    # the narrowed choice: a triage agent may route only the oldest ticket waiting for it
    route = next(t for t in schemas["triage"].__args__ if t is not Wait)
    ids = msgspec.inspect.type_info(route).fields[0].type.values
    assert len(ids) == 1 and re.fullmatch(r"T-\d{4}", ids[0]) and route.__struct_config__.tag == "route"


def test_same_seed_same_events_and_another_seed_differs():
    def events(seed):
        sim = Simulation.from_scenario("support_desk", model="scripted", seed=seed)
        return [(e.kind, e.text) for _ in range(12) for e in sim.tick()]

    assert events(4) == events(4)
    assert events(4) != events(5)


def test_saved_loaded_and_continued_run_logs_the_same_events(tmp_path):
    def loaded(sim):
        assert sim.state.tickets and all(isinstance(t, desk.Ticket) for t in sim.state.tickets.values())

    resumed = assert_resumes_exactly(tmp_path, "support_desk", seed=5, before=7, after=9, on_load=loaded)
    assert resumed.report().metrics["resolved"] > 0


def test_cli_prints_a_report_with_the_metrics():
    out = subprocess.run([sys.executable, "-m", "swarm.cli", "run", "support_desk", "--model", "scripted", "--ticks",
                          "12", "--seed", "1", "--headless", "--json"], capture_output=True, text=True, check=True)
    report = msgspec.json.decode(out.stdout.splitlines()[-1])
    m = report["metrics"]
    assert report["ticks"] == 12 and m["agents"] == 8
    for key in ("routing_accuracy", "priority_accuracy", "mean_ticks_to_resolution", "sla_breaches", "resolved",
                "open"):
        assert key in m
    assert m["routing_accuracy"] >= 0.9 and m["resolved"] > 0


def test_a_thousand_agents_run():
    sim = Simulation.from_scenario("support_desk", model="scripted", seed=1, agents=1000)
    sim.run(2)
    m = sim.report().metrics
    assert m["agents"] == 1000 and m["turns"] >= 1000 and m["tickets"] >= 100
    assert max(len(sim.world.agents_at(p)) for p in sim.world.places) <= desk.POD


def test_scripted_lines_vary():
    sim = Simulation.from_scenario("support_desk", model="scripted", seed=3, agents=40)
    events = [e for _ in range(60) for e in sim.tick()]

    def distinct(texts: list[str]) -> float:  # numbers and names masked: the wording itself must vary
        masked = [re.sub(r"\d+", "#", re.sub("|".join(desk.CUSTOMER_NAMES), "X", t)) for t in texts]
        return len(set(masked)) / len(masked)

    tickets = [e.text for e in events if e.kind == "ticket"]
    answers = [e.data["text"] for e in events if e.kind == "answer"]
    notes = [e.data["note"] for e in events if e.kind == "route"]
    assert len(tickets) >= 250 and len(answers) >= 200
    assert distinct(tickets) > 0.9 and distinct(answers) > 0.5 and distinct(notes) > 0.5
    assert max(map(len, answers)) <= 160 and max(map(len, notes)) <= 100


def test_policy_answers_reflect_and_plan_requests():
    sim = run(seed=1, ticks=12, agents=12, rate=0.4)
    for agent in sim.agents.values():
        agent.plan.invalidate("the queue is on fire")
    events = sim.tick()  # an agent whose plan must change asks for a new one on its next turn
    assert sorted(e.actor for e in events if e.kind == "plan") == sorted(sim.agents)
    plans = [e.data["steps"] for e in events if e.kind == "plan"]
    assert all(1 <= len(steps) <= 4 and all(len(s) <= 80 for s in steps) for steps in plans)
    sim.run(20)
    assert sim.report().metrics["events_by_kind"].get("reflect", 0) > 0


def test_bad_options_are_clear_errors():
    with pytest.raises(ScenarioError, match="at least 6 agents"):
        Simulation.from_scenario("support_desk", model="scripted", agents=3)
    with pytest.raises(ScenarioError, match="specialists must be within 4..10"):
        Simulation.from_scenario("support_desk", model="scripted", agents=12, specialists=2)


def test_the_ticket_in_hand_closes_each_prompt_and_is_the_only_one_a_triage_agent_may_route():
    from swarm.baselines import random_policy

    seen = []

    class Watch(ScriptedModel):  # random staff: misroutes, reopens and backlogs, the hard cases
        def decide(self, turns):
            for t in turns:
                st, me = t.sim.state, t.agent.id
                if t.request.kind == "act":
                    mine = st.inbox[me][0] if me in st.inbox and st.inbox[me] else st.holding.get(me)
                    seen.append((mine, len(st.inbox.get(me, ())), t.request.messages[-1]["content"],
                                 t.request.schema))
            return super().decide(turns)

    sim = Simulation.from_scenario("support_desk", model=Watch(random_policy), seed=3)
    sim.run(20)
    held = [(tid, n, text, schema) for tid, n, text, schema in seen if tid is not None]
    assert any(n > 2 for _, n, _, _ in held)  # triage backlogs happened
    for tid, n, text, schema in held:
        t = sim.state.tickets.get(tid)
        last = text.split("\n\n")[-2]
        assert last.startswith(("Now: Route " if n else "Now: In your hands: ") + tid + " from ")
        assert t is None or f'"{t.text}"' in last
        routes = [a for a in getattr(schema, "__args__", (schema,)) if a.__struct_config__.tag == "route"]
        assert all(msgspec.inspect.type_info(r).fields[0].type.values == (tid,) for r in routes)
    assert not any("Now:" in text for tid, _, text, _ in seen if tid is None)


def test_hints_foresee_arrivals_and_queues():
    # measured: hints name the next act 0.57-0.60 of the time, the moving average 0.44-0.53 (seeds 1-5)
    for seed in (1, 2, 3):
        new, old = hit_rates("support_desk", ticks=60, seed=seed)
        assert new >= 0.5 and new >= old + 0.05, (seed, new, old)
