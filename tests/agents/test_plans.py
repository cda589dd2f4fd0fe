"""Plan graphs: step order, due ticks, status propagation, re-planning and checkpoints."""

import msgspec
import pytest

from swarm.agents import Plan


def bakery() -> tuple[Plan, dict[str, int]]:
    p = Plan()
    ids = {"open": p.add_goal("open the bakery")}
    ids["flour"] = p.add_goal("buy flour", parent=ids["open"])
    ids["bake"] = p.add_goal("bake bread", parent=ids["open"], due=10)
    ids["sell"] = p.add_goal("sell bread", parent=ids["open"], due=20)
    ids["rest"] = p.add_goal("rest", due=30)
    return p, ids


def test_next_step_is_the_first_open_leaf_in_order_that_is_not_scheduled_later():
    p, ids = bakery()
    assert p.next_step(0).id == ids["flour"] and p.next_step(0).parent == ids["open"]
    p.set_status(ids["flour"], "done")
    assert p.next_step(5) is None  # bake is due at 10, sell at 20, rest at 30
    assert p.next_step(10).text == "bake bread"
    p.set_status(ids["bake"], "active")
    assert p.next_step(10).status == "active"


def test_due_and_next_due_tick():
    p, ids = bakery()
    assert p.next_due_tick() == 10 and not p.due(9) and p.due(10)
    p.set_status(ids["bake"], "active")  # started: no longer pending
    assert p.next_due_tick() == 20 and not p.due(15)
    p.set_status(ids["sell"], "failed")
    assert p.next_due_tick() == 30
    assert Plan().next_due_tick() is None and not Plan().due(10**9)


def test_done_on_every_child_marks_the_parent_done_up_the_tree():
    p, ids = bakery()
    fire = p.add_goal("light the oven", parent=ids["bake"])
    for step in ("flour", "sell"):
        p.set_status(ids[step], "done")
    assert p.get(ids["open"]).status == "pending"
    p.set_status(fire, "done")  # the last open leaf under "open": bake, then open, are done
    assert p.get(ids["bake"]).status == "done" and p.get(ids["open"]).status == "done"
    assert p.top_goal() == ids["rest"] and p.next_step(100).text == "rest"
    p.add_goal("bake cake", parent=ids["open"])  # new work re-opens the goal
    assert p.get(ids["open"]).status == "active" and p.top_goal() == ids["open"]


def test_a_failed_step_asks_for_a_replan_that_replace_steps_answers():
    p, ids = bakery()
    p.set_status(ids["flour"], "done")
    p.set_status(ids["bake"], "failed")
    assert p.needs_replan and "bake bread" in p.replan_reason
    new = p.replace_steps(ids["open"], ["borrow an oven", "bake bread there"])
    assert not p.needs_replan and p.replan_reason is None
    children = [p.get(n).text for n in p.graph.successors(ids["open"])]
    assert children == ["buy flour", "borrow an oven", "bake bread there"]  # done steps stay
    assert p.next_step(0).id == new[0]
    p.invalidate("the baker moved away")
    assert p.needs_replan and p.replan_reason == "the baker moved away"
    for n in new:
        p.set_status(n, "done")
    assert p.get(ids["open"]).status == "done"


def test_finishing_a_goal_skips_its_open_steps():
    p, ids = bakery()
    p.set_status(ids["open"], "done")
    assert p.next_step(100).text == "rest" and p.next_due_tick() == 30


def test_bad_ids_and_statuses():
    p, ids = bakery()
    with pytest.raises(ValueError, match="unknown goal id 99"):
        p.set_status(99, "done")
    with pytest.raises(ValueError, match="unknown goal id"):
        p.add_goal("x", parent=99)
    with pytest.raises(ValueError, match="unknown goal id"):
        p.replace_steps(99, ["x"])
    with pytest.raises(ValueError, match="unknown status 'finished'"):
        p.set_status(ids["flour"], "finished")
    with pytest.raises(ValueError, match="non-empty"):
        p.add_goal(" ")


def test_describe():
    p, ids = bakery()
    p.set_status(ids["flour"], "done")
    p.set_status(ids["bake"], "active")
    assert p.describe() == ("[ ] open the bakery\n  [x] buy flour\n  [>] bake bread (due tick 10)\n"
                            "  [ ] sell bread (due tick 20)\n[ ] rest (due tick 30)")
    assert p.describe(max_lines=3).splitlines()[-1] == "... (3 more)"
    assert Plan().describe() == "(no plan)"


def test_prune_keeps_the_newest_finished_goals():
    p = Plan()
    goals = [p.add_goal(f"goal {i}") for i in range(5)]
    for g in goals[:4]:
        p.add_goal("step", parent=g)
        p.set_status(g, "done")
    p.prune(keep=2)
    assert sorted(p.get(n).text for n in p.graph if p.graph.in_degree(n) == 0) == ["goal 2", "goal 3", "goal 4"]
    assert len(p) == 5


def test_state_round_trip_through_msgpack():
    p, ids = bakery()
    p.set_status(ids["flour"], "done")
    p.set_status(ids["sell"], "failed")
    state = msgspec.msgpack.decode(msgspec.msgpack.encode(p.to_state()))
    r = Plan.from_state(state)
    assert r.describe() == p.describe() and r.replan_reason == p.replan_reason
    assert r.next_step(10) == p.next_step(10) and r.next_due_tick() == p.next_due_tick()
    assert r.add_goal("later") == p.add_goal("later")
    state["nodes"][0]["status"] = "maybe"
    with pytest.raises(ValueError, match="unknown status"):
        Plan.from_state(state)
