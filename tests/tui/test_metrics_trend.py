"""The metrics panel's trends: each metric the run's history keeps gets its value and a sparkline of its
recent ticks, updated every tick, live (Pilot), in a replay (from the log's metrics rows, following seeks)
and when watching (from the report's rows on the bus)."""

import re

import pytest

from swarm.tui.bars import trend
from swarm.tui.watch import WatchSource
from swarm.tui.widgets import MetricsPanel
from tests.tui.test_app import close, idle, make_app, tavern, until
from tests.tui.test_replay import make_app as replay_app

LINE = re.compile(r"^\[dim\](?P<name>[^\[]+)\[/dim\] +(?P<value>\S+) \[\$accent\](?P<spark>[^\[]*)\[/\]$")


def trends(panel: MetricsPanel) -> dict[str, tuple[str, str]]:
    """The panel's trend lines: name -> (value, sparkline)."""
    lines = (LINE.match(line) for line in str(panel.render()).splitlines())
    return {m["name"].strip(): (m["value"], m["spark"]) for m in lines if m}


async def step(pilot, app) -> None:
    at = app.source.ticks_run
    await pilot.press("s")
    await until(pilot, lambda: app.source.ticks_run == at + 1)
    await idle(pilot, app)


async def test_each_metric_shows_its_value_and_recent_ticks_updated_every_tick():
    sim = tavern()
    sim.metric("said")(lambda sim: sim.counters["events.say"])
    sim.metric("host")(lambda sim: "Mira")  # text: no trend
    app = make_app(sim, paused=True)
    async with app.run_test(size=(140, 40)) as pilot:
        panel = app.query_one(MetricsPanel)
        for ticks in (1, 2, 3):
            await step(pilot, app)
            assert [row["tick"] for row in panel.history] == list(range(ticks))
            shown = trends(panel)
            # what was said as it stood after each tick (Mira and Bob speak every tick); turns per tick (3 on the
            # first, 2 since) beside their total
            assert shown["said"] == (str(2 * ticks), trend([2.0 * (t + 1) for t in range(ticks)], 100))
            assert shown["turns"] == (str(3 + 2 * (ticks - 1)), trend([3.0] + [2.0] * (ticks - 1), 100))
            assert len(shown["turns"][1]) == ticks
        assert {"agents", "events", "fails", "no action"} <= set(shown) and "host" not in shown
        assert "host" in str(panel.render())  # still shown, as a value
        await pilot.press("q")
    await close(app)


@pytest.fixture
def log(tmp_path):
    path = tmp_path / "run.jsonl"
    sim = tavern(record=path)
    sim.run(ticks=4)
    sim.close()
    return path


async def test_a_replay_shows_the_logged_metrics_and_their_trend_up_to_where_it_is(log):
    app = replay_app(log)
    async with app.run_test(size=(140, 40)) as pilot:
        panel = app.query_one(MetricsPanel)
        await pilot.press("end")
        await until(pilot, lambda: len(panel.history) == 4 and not app._dirty)
        assert panel.metrics["replay"] == "tick 4 of 4" and panel.metrics["turns"] == 2  # the last tick's row
        assert trends(panel)["turns"][1] == trend([3.0, 2.0, 2.0, 2.0], 100)
        await pilot.press("left", "left")
        await until(pilot, lambda: len(panel.history) == 2 and not app._dirty)
        assert trends(panel)["turns"] == ("2", trend([3.0, 2.0], 100))
        await pilot.press("q")


def test_a_watcher_keeps_each_ticks_row_once_and_starts_over_with_the_simulation():
    source = WatchSource("mqtt://127.0.0.1:1883", "tavern")
    for tick in (0, 1, 1, 2):  # a retained report comes again on reconnecting
        source._add_row({"tick": tick, "turns": tick})
    source._add_row({"turns": 9})  # not a row
    source._add_row("garbage")
    assert [row["tick"] for row in source.trend] == [0, 1, 2]
    source._add_row({"tick": 0, "turns": 5})  # the simulation started over
    assert list(source.trend) == [{"tick": 0, "turns": 5}]
    assert source._data([]).history == [{"tick": 0, "turns": 5}]


@pytest.mark.parametrize("values, drawn", [
    ([0, 4, 8], "▁▄█"),
    ([-4, 0, 4], "▁▄█"),  # scaled from the lowest when one is negative
    ([True, False, True], "█▁█"),
    ([float("nan"), 2.0], "▁█"),  # a value that is not finite draws as the floor
    ([], ""),
])
def test_trend_scales_a_metrics_values(values, drawn):
    assert trend(values, 10) == drawn
    assert trend([1, 2, 3, 4, 8], 2) == "▄█"  # the newest, as many as fit
