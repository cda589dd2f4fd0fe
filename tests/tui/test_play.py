"""Playing an agent yourself: the form read from a turn's schema, `Simulation.play` with a `Player`, and the TUI's
take-control driven by Textual's Pilot (the form's answer goes into the world and into the demonstrations)."""

import threading

import msgspec
import pytest
from textual.widgets import Input, Select

from swarm import ScriptedModel
from swarm.agents.actions import Say, Wait
from swarm.demonstrations import read_demos
from swarm.model import NoAction, Player, wire_schema
from swarm.runtime.grammar import Narrowed
from swarm.tui.play import GIVEN_BACK, PlayScreen, actions_of, value_of
from swarm.tui.widgets import Roster
from tests.tui.test_app import close, idle, make_app, tavern, until


def auction_schema():
    from typing import Annotated

    from swarm.runtime.grammar import CHOICE_KEY

    class Bid(msgspec.Struct, tag="bid", tag_field="type", frozen=True, kw_only=True):
        """Bid for a lot on sale."""

        lot: Annotated[str, msgspec.Meta(description="a lot on sale", extra_json_schema={CHOICE_KEY: "lot"})]
        price: Annotated[int, msgspec.Meta(ge=1, le=100, description="coins")]
        note: str | None = None

    constraint = Narrowed(Bid | Say | Wait, {"lot": ["wool", "salt"], "person": ["Bob"]})
    return constraint, wire_schema(constraint)


def test_the_form_reads_actions_fields_and_choices_from_the_schema():
    _, schema = auction_schema()
    actions = {a.tag: a for a in actions_of(schema)}
    assert set(actions) == {"bid", "say", "wait"}
    bid = {f.name: f for f in actions["bid"].fields}
    assert bid["lot"].kind == "choice" and bid["lot"].options == ("wool", "salt") and bid["lot"].required
    assert (bid["price"].kind, bid["price"].minimum, bid["price"].maximum) == ("integer", 1, 100)
    assert bid["note"].kind == "text" and not bid["note"].required
    say = {f.name: f for f in actions["say"].fields}
    assert say["to"].kind == "choice" and say["to"].options == ("Bob",) and not say["to"].required
    assert actions["wait"].fields == ()
    assert actions["bid"].description == "Bid for a lot on sale."


def test_values_are_checked_as_a_models_answer_would_be():
    constraint, schema = auction_schema()
    bid = next(a for a in actions_of(schema) if a.tag == "bid")
    value = value_of(bid, {"lot": "salt", "price": "12", "note": ""}, constraint)
    assert msgspec.to_builtins(value) == {"type": "bid", "lot": "salt", "price": 12, "note": None}
    with pytest.raises(ValueError, match="lot: choose one"):
        value_of(bid, {"lot": Select.NULL, "price": "12"}, constraint)
    with pytest.raises(ValueError, match="not one of the choices"):
        value_of(bid, {"lot": "iron", "price": "12"}, constraint)
    with pytest.raises(ValueError, match="price: 'lots' is not an integer"):
        value_of(bid, {"lot": "salt", "price": "lots"}, constraint)
    with pytest.raises(ValueError, match="<= 100"):
        value_of(bid, {"lot": "salt", "price": "500"}, constraint)
    wait = next(a for a in actions_of(schema) if a.tag == "wait")
    assert value_of(wait, {}, constraint) == Wait()


def test_plans_are_one_step_a_line():
    from swarm.agents import PlanUpdate

    (plan,) = actions_of(wire_schema(PlanUpdate))
    (steps,) = plan.fields
    assert steps.kind == "lines"
    value = value_of(plan, {"steps": "buy salt\n\n sell wool \n"}, PlanUpdate)
    assert value == PlanUpdate(steps=["buy salt", "sell wool"])
    with pytest.raises(ValueError, match="steps: required"):
        value_of(plan, {"steps": "  "}, PlanUpdate)


def test_a_player_decides_an_agents_turns_and_they_are_recorded_as_a_persons(tmp_path):
    sim = tavern()
    seen = []

    def ask(turn):
        seen.append((turn.agent.id, turn.request.kind))
        return Say(text="I play Ann") if turn.request.kind == "act" else None

    sim.play("Ann", Player(ask))
    sim.record_demos(tmp_path / "demos.jsonl", kinds=["act"])
    events = []
    for _ in range(2):
        events += sim.tick()
    assert ("Ann", "act") in seen and all(agent == "Ann" for agent, _ in seen)
    assert any(e.kind == "say" and e.actor == "Ann" and "I play Ann" in e.text for e in events)
    demos = read_demos(tmp_path / "demos.jsonl")
    mine = [d for d in demos if d.agent == "Ann"]
    assert mine and {d.source for d in mine} == {"person"} and {d.model for d in mine} == {"player"}
    assert mine[0].messages[-1] == {"role": "assistant", "content": '{"type":"say","text":"I play Ann","to":null}'}
    assert {d.source for d in demos if d.agent != "Ann"} == {"scripted"}
    sim.play("Ann", None)  # given back: the scripted policy waits for Ann again
    assert not sim.players
    sim.close()


def test_a_player_that_raises_or_passes_gives_the_turn_up():
    sim = tavern()

    def ask(turn):
        if turn.agent.id == "Mira":
            raise RuntimeError("keyboard on fire")
        if turn.agent.id == "Ann":
            return {"type": "say"}  # no text: not a Say
        return NoAction("I pass")

    player = Player(ask)
    sim.play("Mira", player)
    sim.play("Bob", player)
    sim.play("Ann", player)
    events = sim.tick()
    fails = {e.actor: e.text for e in events if e.kind == "fail"}
    assert "keyboard on fire" in fails["Mira"] and "I pass" in fails["Bob"]
    assert "missing required field `text`" in fails["Ann"]
    with pytest.raises(ValueError, match="unknown agent"):
        sim.play("Zed", player)
    with pytest.raises(TypeError, match="TurnModel"):
        sim.play("Ann", ask)  # a bare function is not a player
    with pytest.raises(ValueError, match="already exists"):
        sim.add_model("player", ScriptedModel(lambda t: Wait()))
    sim.close()


async def _take(pilot, app, agent):
    """Select `agent` on the roster and press c: the person plays it from its next turn."""
    await idle(pilot, app)
    roster = app.query_one(Roster)
    await until(pilot, lambda: agent in roster.rows)
    roster.move_cursor(row=roster.get_row_index(agent))
    await until(pilot, lambda: roster.selected == agent)
    await pilot.press("c")
    await until(pilot, lambda: agent in app.source.sim.players)


async def test_take_control_in_the_tui_answers_with_the_form(tmp_path):
    sim = tavern()
    sim.record_demos(tmp_path / "demos.jsonl", kinds=["act"])
    seen = []
    sim.every_tick(lambda sim, events: seen.extend(events))
    app = make_app(sim, paused=True)
    async with app.run_test(size=(140, 50)) as pilot:
        await _take(pilot, app, "Bob")
        await until(pilot, lambda: any(r.played for r in app.latest.rows if r.name == "Bob"))
        await pilot.pause(0.1)
        assert app.query_one(Roster).get_cell("Bob", "latency") == "you"
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, PlayScreen))
        screen = app.screen
        assert screen.asked.agent == "Bob" and screen.asked.kind == "act"
        assert "Bob" in screen.asked.messages[0]["content"]
        tags = [a.tag for a in screen.actions]
        screen.query_one("#play-action", Select).value = tags.index("say")
        await pilot.pause(0.1)
        await pilot.click("#play-act")  # nothing written yet: the form says so and stays
        await pilot.pause(0.1)
        assert isinstance(app.screen, PlayScreen) and "text: required" in str(screen.query_one("#play-error").render())
        screen.query_one("#field-text", Input).value = "fresh bread, two coins"
        await pilot.pause(0.3)  # a button ignores clicks while it shows the last one (0.2 s)
        await pilot.click("#play-act")
        await idle(pilot, app)
        assert not isinstance(app.screen, PlayScreen)
        assert any(e.kind == "say" and e.actor == "Bob" and "fresh bread" in e.text for e in seen)
        # the next turn: give the agent back from the form; that turn waits, and the model plays on
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, PlayScreen))
        await pilot.click("#play-release")
        await idle(pilot, app)
        await until(pilot, lambda: "Bob" not in sim.players)
        assert "Bob" not in app.control.played
        assert any(e.kind == "fail" and e.actor == "Bob" and GIVEN_BACK in e.text for e in seen)
        await pilot.press("q")
    await close(app)
    demos = [d for d in read_demos(tmp_path / "demos.jsonl") if d.agent == "Bob"]
    assert [d.source for d in demos] == ["person"]
    assert '"fresh bread, two coins"' in demos[0].messages[-1]["content"]


async def test_quitting_while_the_form_is_open_gives_the_turn_up():
    sim = tavern()
    app = make_app(sim, paused=True)
    async with app.run_test(size=(140, 50)) as pilot:
        await _take(pilot, app, "Bob")
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, PlayScreen))
        await app.action_quit()
    done = threading.Event()
    threading.Thread(target=lambda: (app.source.control.done.wait(10), done.set())).start()
    assert done.wait(10), "the worker did not end after the app quit with a turn waiting"
    await close(app)


@pytest.mark.parametrize("args, message", [
    (["--play", "Mira", "--headless"], "--play needs the TUI"),
    (["--play", "Zed,Mira"], "--play: no agent called Zed; agents: "),
])
def test_play_on_the_command_line_checks_its_agents_before_running(capsys, tmp_path, args, message):
    from swarm.cli import main

    assert main(["run", "village", "--model", "scripted", "--ticks", "1", "--agents", "3", *args]) == 2
    assert message in capsys.readouterr().err


def test_run_tui_plays_the_agents_asked_for_from_the_start(monkeypatch):
    """`run_tui(sim, play=[...])` (what `swarm run --play` calls) has the person play them from the first tick."""
    import swarm.tui.app as app_module
    from swarm.tui import run_tui

    sim = tavern()
    started = {}

    class Headless(app_module.SwarmApp):
        def run(self):  # no terminal here: only check what the app would start with
            started["played"] = set(self.control.played)

    monkeypatch.setattr(app_module, "SwarmApp", Headless)
    run_tui(sim, 1, play=["Mira"])
    assert started["played"] == {"Mira"}
    with pytest.raises(ValueError, match="no agent called 'Zed'"):
        run_tui(sim, 1, play=["Zed"])
    sim.close()
