"""Actions a model can read and choices valid by construction: the action section of the system message,
choice fields narrowed per agent and tick, actions left out when they cannot be written, a scenario's own
kinds (`@sim.choices`), and a real engine writing only valid names."""

import typing
from typing import Annotated

import msgspec
import pytest

from swarm import Persona, Simulation
from swarm.agents.actions import Action, Give, Say, Wait, describe_actions, one_of
from swarm.model import ScriptedModel
from swarm.scenario import ScenarioError

Lot = one_of("lot", "a lot on sale now")


class Bid(Action, tag="bid"):
    """Offer a price for a lot."""

    lot: Lot
    price: Annotated[int, msgspec.Meta(ge=1, le=100, description="coins")]


class Seen(ScriptedModel):
    """Waits, and keeps every act request it is asked."""

    def __init__(self):
        super().__init__(lambda turn: Wait(), ref="seen")
        self.acts = []

    def decide(self, turns):
        self.acts += [t.request for t in turns if t.request.kind == "act"]
        return super().decide(turns)


def market(model, **kw) -> Simulation:
    sim = Simulation(model, **kw)
    for place in ("hall", "yard", "road"):
        sim.world.add_place(place)
    sim.world.connect("hall", "yard", minutes=1)  # the road leads nowhere: it cannot be reached
    for name, at in (("Ada", "hall"), ("Bo", "hall"), ("Cy", "yard")):
        sim.add_agent(Persona(name=name), at=at)
    sim.world.add_thing("bell", holder="Ada")
    return sim  # each agent acts at tick 0 on where it is, and then has nothing new


def types_of(schema) -> set[str]:
    return {t.__name__ for t in typing.get_args(schema) or (schema,)}


def test_the_system_message_describes_every_action_and_field():
    text = describe_actions([Say, Give, Wait, Bid])
    assert "- say(text, to?): Say something aloud: everyone here hears it." in text
    assert "- give(item, to): Hand something you carry to someone here. (item: something you carry; to: someone here)" \
        in text
    assert "- wait(): Do nothing this turn." in text and "(lot: a lot on sale now; price: coins)" in text
    model = Seen()
    sim = market(model)
    sim.tick()
    system = model.acts[0].messages[0]["content"]
    assert describe_actions(sim.action_types) in system  # the same bytes every turn: a cached prefix
    sim.close()


def test_choice_fields_are_narrowed_to_what_each_agent_can_name_now():
    model = Seen()
    sim = market(model)
    sim.tick()
    by_agent = {r.agent_id: r for r in model.acts}
    ada, bo, cy = by_agent["Ada"], by_agent["Bo"], by_agent["Cy"]
    assert ada.choices["person"] == ("Bo",) and bo.choices["person"] == ("Ada",) and cy.choices["person"] == ()
    assert ada.choices["place"] == ("yard",) and cy.choices["place"] == ("hall",)  # not the road: no route
    assert ada.choices["item"] == ("bell",) and bo.choices["item"] == ()
    # an action whose required field has no name to take is not offered, and the prompt says what is
    assert types_of(ada.schema) == {"Say", "Move", "Give", "Use", "Wait"}
    assert types_of(bo.schema) == {"Say", "Move", "Wait"}
    assert "You can now: say, move, wait." in bo.messages[-1]["content"]
    assert "You can now" not in ada.messages[-1]["content"]
    # the constraint the engine compiles limits the JSON schema's names
    narrowed = ada.constraint.json_schema()["$defs"]["Give"]["properties"]
    assert narrowed["to"]["enum"] == ["Bo"] and narrowed["item"]["enum"] == ["bell"]
    sim.close()


def test_a_scenario_gives_the_names_of_its_own_kinds():
    model = Seen()
    sim = market(model)
    sim.add_actions(Bid)
    lots = {"Ada": ["wool", "grain"], "Bo": [], "Cy": ["salt"]}
    sim.choices(lambda sim, agent: {"lot": lots[agent.id]})
    sim.on(Bid)(lambda world, actor, action: None)
    sim.tick()
    by_agent = {r.agent_id: r for r in model.acts}
    assert by_agent["Ada"].choices["lot"] == ("wool", "grain") and "Bid" in types_of(by_agent["Ada"].schema)
    assert "Choices of lot: wool, grain." in by_agent["Ada"].messages[-1]["content"]
    assert "Bid" not in types_of(by_agent["Bo"].schema)  # nothing on sale to Bo, and no empty list shown
    assert "Choices of lot" not in by_agent["Bo"].messages[-1]["content"]
    sim.close()


def test_a_kind_nobody_gives_names_for_is_a_clear_error():
    sim = market(Seen())
    sim.add_actions(Bid)
    with pytest.raises(ScenarioError, match=r"name a 'lot' .*@sim.choices"):
        sim.tick()
    sim.close()
    sim = market(Seen())
    sim.add_actions(Bid)
    sim.choices(lambda sim, agent: {"lot": "wool"})
    with pytest.raises(ScenarioError, match="a list of non-empty names"):
        sim.tick()
    sim.close()


def test_an_agent_with_nothing_it_can_do_is_a_clear_error():
    sim = market(Seen())
    sim.actions_for(lambda sim, agent: [Give])
    with pytest.raises(ScenarioError, match="can take none of its actions"):
        sim.tick()
    sim.close()


def test_a_custom_template_gets_the_actions_where_it_asks_or_at_the_end():
    text = "ACTIONS"
    assert Persona(name="A", system_prompt="I am {name}.").system_message("w", actions=text) == "I am A.\n\nACTIONS"
    assert Persona(name="A", system_prompt="{actions}\nI am {name}.").system_message("w", actions=text) \
        == "ACTIONS\nI am A."
    assert Persona(name="A", system_prompt="I am {name}.").system_message("w") == "I am A."


def test_the_bundled_model_writes_only_valid_names():
    """swarm-tiny under the narrowed grammar: every Move, Say and Tell names a place or a person it may."""
    sim = Simulation.from_scenario("village", seed=5)
    fails = [e for _ in range(4) for e in sim.tick() if e.kind == "fail"]
    sim.close()
    wrong_name = ("nobody called", "is not here", "no place called", "is you", "already at the")
    assert not [e.text for e in fails if any(w in e.text for w in wrong_name)]


def test_an_idle_agent_is_asked_again_so_a_quiet_world_does_not_stall():
    def run(**kw):
        model = Seen()
        sim = market(model, **kw)
        asked = []
        for _ in range(9):
            before = len(model.acts)
            sim.tick()
            asked.append(len(model.acts) - before)
        sim.close()
        return asked

    # everyone waits after tick 0: nothing new ever happens again
    assert run(wake_after=None) == [3, 0, 0, 0, 0, 0, 0, 0, 0]
    assert run(wake_after=3) == [3, 0, 0, 3, 0, 0, 3, 0, 0]
    with pytest.raises(ValueError, match="wake_after"):
        Simulation(None, wake_after=0)


def test_an_agent_woken_with_nothing_it_can_do_but_wait_costs_no_call():
    model = Seen()
    sim = market(model, wake_after=2)
    sim.actions_for(lambda sim, agent: [Wait] if agent.id == "Cy" else sim.action_types)
    counts = []
    for _ in range(5):
        sim.tick()
        counts.append(sum(r.agent_id == "Cy" for r in model.acts))
    sim.close()
    assert counts == [1, 1, 1, 1, 1]  # asked at tick 0, then never for nothing


def test_hints_count_the_wake_up():
    model = Seen()
    sim = market(model, wake_after=4)
    hints = {}
    model.hint = lambda persona, when: hints.__setitem__(persona, when)
    sim.tick()
    sim.close()
    assert hints["Ada"] == 4  # acted at tick 0, so woken at tick 4
