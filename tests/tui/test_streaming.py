"""The selected agent's action streams into the detail pane while the model writes it (a gated fake
engine walks the generation one step at a time), the UI keeps running meanwhile, and however fast
the model writes, one notice at a time is on its way to the UI."""

import time

from swarm.tui import LiveSource
from swarm.tui.data import Partial
from swarm.tui.widgets import AgentDetailPane
from tests.tui.fakes import engine_tavern
from tests.tui.test_app import close, idle, make_app, until


async def test_the_detail_shows_the_action_as_it_is_written_then_the_final_one(frozen_heap):
    sim, engine = engine_tavern(chars_per_step=8, gated=True)
    app = make_app(sim, paused=True)
    beats = []
    async with app.run_test() as pilot:
        pane = app.query_one(AgentDetailPane)
        await until(pilot, lambda: app.control.selected == "Mira")  # the roster is filled: a key now moves it
        await pilot.press("down")  # Bob
        await until(pilot, lambda: pane.detail is not None and pane.detail.name == "Bob")
        app.set_interval(0.05, lambda: beats.append(time.monotonic()))
        await pilot.press("s")  # the tick starts; the engine waits for each step
        texts = []
        for k in range(1, 5):
            engine.release()
            await until(pilot, lambda k=k: pane.partial is not None and len(pane.partial.text) == 8 * k)
            assert pane.partial.agent == "Bob" and not pane.partial.done
            assert "the model is writing it" in str(pane.render()) and pane.partial.text in str(pane.render())
            texts.append(pane.partial.text)
        assert app.source.ticks_run == 0  # all of that while the tick was still running
        await pilot.pause(0.5)  # the model is stuck mid-turn: the UI goes on
        gaps = [b - a for a, b in zip(beats, beats[1:], strict=False)]
        assert len(gaps) > 5 and max(gaps) < 0.5, "the UI stalled while the model wrote"
        engine.release(1000)
        await until(pilot, lambda: app.source.ticks_run == 1)
        await idle(pilot, app)
        final = sim.agents["Bob"].history[-1]["content"]
        assert pane.partial is None and pane.detail.action == final  # the stream gave way to the result
        assert all(final.startswith(t) for t in texts) and texts[-1] != final
        assert "next action" not in str(pane.render())
        await pilot.press("q")
    await close(app)


async def test_only_the_selected_agent_streams():
    sim, engine = engine_tavern(chars_per_step=8)
    app = make_app(sim, paused=True)
    async with app.run_test() as pilot:
        await until(pilot, lambda: app.control.selected == "Mira")
        streamed = []
        real = sim.model.progress
        sim.model.progress = lambda agent, text, done: (streamed.append(agent), real(agent, text, done))
        await pilot.press("s")
        await until(pilot, lambda: app.source.ticks_run == 1)
        await idle(pilot, app)
        assert streamed and set(streamed) == {"Mira"}
        await pilot.press("q")
    await close(app)
    assert sim.model.progress is None  # the source let go of the model when its worker ended


def test_a_burst_of_progress_is_one_notice_and_the_newest_text():
    sim, _ = engine_tavern()
    source = LiveSource(sim)
    source.control.select("Bob")
    notices = []
    source._stream_to(lambda: notices.append(1))
    assert sim.model.streams("Bob") and not sim.model.streams("Mira")
    for n in range(1, 6):
        sim.model.progress("Bob", "x" * n, False)
    assert len(notices) == 1  # the UI has not taken the first yet: no second notice
    assert source.take_partial() == Partial("Bob", "xxxxx", False)
    sim.model.progress("Bob", "xxxxxx", True)
    assert len(notices) == 2 and source.take_partial() == Partial("Bob", "xxxxxx", True)
    source.snapshot([])  # a tick ended: nothing partial is left to show
    assert source.take_partial() is None
    sim.close()


async def test_the_header_names_the_model_and_its_device_live_and_in_a_replay(tmp_path):
    from swarm.tui.replay import ReplayControl, ReplaySource
    from swarm.tui.widgets import SimHeader

    sim, engine = engine_tavern(record=tmp_path / "run.jsonl")
    engine.device = "cuda:0"  # as an Engine built with device="cuda" reports it
    app = make_app(sim, ticks=2)
    async with app.run_test() as pilot:
        await until(pilot, lambda: app.source.ticks_run == 2)
        assert app.query_one(SimHeader).model == "fake-engine on cuda:0"
        await pilot.press("q")
    await close(app)
    replay = ReplaySource(tmp_path / "run.jsonl", ReplayControl())
    assert replay.model == "fake-engine on cuda:0"
