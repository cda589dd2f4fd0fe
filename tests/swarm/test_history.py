"""The per-tick history of a run (`Report.history`): a row per tick with the loop's counts for that tick and
the scenario's numeric metrics, computed once a tick, kept by checkpoints and written to the event log."""

import msgspec
import pytest

from swarm import ScriptedModel, Simulation
from swarm.agents.actions import Move, Say, Wait
from swarm.recorder import read_history, read_log, read_records
from tests.swarm.test_simulation import tavern


def policy(turn):
    """Mira walks to the moon (a fail) on even ticks and talks on odd ones; the others wait."""
    if turn.agent.id != "Mira":
        return Wait()
    return Move(to="moon") if turn.world.tick % 2 == 0 else Say(text="ale?")


def measured(calls: list | None = None, **kw) -> Simulation:
    """The tavern with metrics of every kind: numbers, a bool, a string and a dict."""
    sim = tavern(ScriptedModel(policy, ref="scripted"), **kw)
    sim.state["said"] = 0

    @sim.every_tick
    def count(sim, events):
        sim.state["said"] += sum(e.kind == "say" for e in events)

    @sim.metric("said")
    def said(sim):
        if calls is not None:
            calls.append(sim.world.tick)
        return sim.state["said"]

    sim.metric("talky")(lambda sim: sim.state["said"] > 1)
    sim.metric("share")(lambda sim: sim.state["said"] / len(sim.agents))
    sim.metric("people")(lambda sim: len(sim.agents))
    sim.metric("mood")(lambda sim: "merry")
    sim.metric("by_agent")(lambda sim: {"Mira": sim.state["said"]})
    return sim


def test_a_row_per_tick_holds_the_ticks_counts_and_the_numeric_metrics():
    sim = measured()
    report = sim.run(4)
    sim.close()
    assert [row["tick"] for row in report.history] == [0, 1, 2, 3]
    first, second = report.history[0], report.history[1]
    # tick 0: everyone has just arrived and acts; Mira's walk to the moon fails
    assert {k: v for k, v in first.items() if k != "events"} == {
        "tick": 0, "agents": 3, "turns": 3, "no_action": 0, "fails": 1, "said": 0, "talky": False, "share": 0.0,
        "people": 3}
    assert second["turns"] == 1 and second["fails"] == 0 and second["said"] == 1  # only Mira acts again
    assert "mood" not in first and "by_agent" not in first  # strings and dicts are not a history
    # a count's column sums to its total
    assert sum(row["turns"] for row in report.history) == report.metrics["turns"]
    assert sum(row["events"] for row in report.history) == report.events
    assert sum(row["fails"] for row in report.history) == report.metrics["events_by_kind"]["fail"]
    assert report.history[-1]["said"] == report.metrics["said"] and report.metrics["mood"] == "merry"
    assert msgspec.json.decode(report.to_json())["history"] == report.history


def test_metrics_are_computed_once_a_tick():
    calls = []
    sim = measured(calls)
    sim.run(5)  # five ticks, and the report at the end
    sim.close()
    assert calls == [0, 1, 2, 3, 4, 5]


def test_a_resumed_run_reports_the_whole_history(tmp_path):
    whole = measured()
    expected = whole.run(5).history
    whole.close()

    sim = measured()
    sim.run(3)
    sim.save(tmp_path / "ckpt")
    sim.run(1)  # a branch the checkpoint does not hold
    sim.close()
    resumed = measured()
    resumed.restore(tmp_path / "ckpt")
    assert [row["tick"] for row in resumed.report().history] == [0, 1, 2]
    report = resumed.run(2)
    resumed.close()
    assert report.ticks == 2 and report.history == expected


def checkpoint_after(ticks: int, path, **changes):
    """A checkpoint of `measured()` after `ticks` ticks, at `path`, with `changes` to its state (None: left out)."""
    sim = measured()
    sim.run(ticks)
    sim.save(path)
    sim.close()
    state = msgspec.msgpack.decode(path.read_bytes())
    for key, value in changes.items():
        if value is None:
            del state[key]
        else:
            state[key] = value
    path.write_bytes(msgspec.msgpack.encode(state))
    return path


def test_a_checkpoint_from_before_the_history_still_loads_and_counts_per_tick(tmp_path):
    old = measured()
    old.restore(checkpoint_after(2, tmp_path / "old", history=None))  # as an older swarm wrote it
    assert old.report().history == []
    [row] = old.run(1).history
    old.close()
    # this tick's counts (Bob answers Mira), not the run's totals
    assert row["tick"] == 2 and row["turns"] == 1 and row["events"] == 1 and row["fails"] == 0


def test_a_checkpoint_with_a_damaged_history_is_refused(tmp_path):
    bad = checkpoint_after(1, tmp_path / "bad", history="not rows")
    with pytest.raises(ValueError, match=r"damaged swarm checkpoint.*history"):
        Simulation.load(bad, model=ScriptedModel(policy))


def test_the_log_holds_a_metrics_row_after_each_ticks_events(tmp_path):
    log = tmp_path / "run.jsonl"
    sim = measured(record=log)
    seen = [e for _ in range(3) for e in sim.tick()]
    report = sim.report()
    sim.close()
    header, events = read_log(log)
    assert header["swarm_log"] == 2 and list(events) == seen  # readers of events see events only
    assert read_history(log) == report.history
    records = list(read_records(log)[1])
    ends = [i for i, r in enumerate(records) if isinstance(r, dict)]
    assert [records[i]["tick"] for i in ends] == [0, 1, 2]
    assert all(e.tick == records[end]["tick"] for end, before in zip(ends, [-1, *ends], strict=False)
               for e in records[before + 1 : end])  # each row closes its tick's events
    assert log.read_text().splitlines()[-1] == msgspec.json.encode({"metrics": report.history[-1]}).decode()


def test_logs_without_metrics_rows_still_read_and_newer_formats_are_refused(tmp_path):
    log = tmp_path / "run.jsonl"
    sim = measured(record=log)
    sim.run(2)
    sim.close()
    lines = log.read_text().splitlines()
    header = msgspec.json.decode(lines[0])
    old = tmp_path / "old.jsonl"  # as format 1 wrote it
    old.write_text("\n".join([msgspec.json.encode({**header, "swarm_log": 1}).decode(),
                              *(line for line in lines[1:] if not line.startswith('{"metrics":'))]) + "\n")
    assert list(read_log(old)[1]) == list(read_log(log)[1]) and read_history(old) == []
    newer = tmp_path / "newer.jsonl"
    newer.write_text("\n".join([msgspec.json.encode({**header, "swarm_log": 3}).decode(), *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match=r"newer swarm \(log format 3; this one reads formats 1 to 2\)"):
        read_log(newer)
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join([lines[0], '{"metrics": 3}', *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match="line 2: not an event or a metrics row"):
        list(read_log(broken)[1])


def test_the_report_on_the_bus_carries_the_ticks_row():
    sim = measured()
    reports = sim._loop.run_until_complete(sim.bus.subscribe(f"swarm/{sim.name}/report", type=dict))
    sim.run(2)
    payloads = [m.payload for m in reports.drain()]
    sim.close()
    assert [p["row"]["tick"] for p in payloads] == [0, 1]
    assert payloads[-1]["row"] == sim.report().history[-1]
