"""The world: building it, the base actions, travel, who observes what, state round trips."""

import random

import msgspec
import pytest

from swarm.agents.actions import Action, Give, Move, Say, Use, Wait
from swarm.events import Event
from swarm.world import World


def village(minutes_per_tick=1.0) -> World:
    w = World(minutes_per_tick=minutes_per_tick)
    for p in ("tavern", "square", "well", "island"):
        w.add_place(p)
    w.connect("tavern", "square", minutes=1)
    w.connect("square", "well", minutes=5)
    for a, p in (("mira", "tavern"), ("bob", "tavern"), ("ann", "square")):
        w.place_agent(a, p)
    w.add_thing("coin", holder="mira")
    w.add_thing("bucket", at="well")
    return w


def resolve(w: World, *actions):
    return w.resolve(list(actions), random.Random(0))


def test_building_errors_name_the_valid_choices():
    w = village()
    with pytest.raises(ValueError, match="unknown place 'tavrn'; places: island, square, tavern, well"):
        w.connect("tavrn", "square")
    with pytest.raises(ValueError, match="already exists"):
        w.add_place("tavern")
    with pytest.raises(ValueError, match="exactly one of"):
        w.add_thing("hat")
    with pytest.raises(ValueError, match="unknown agent 'zed'"):
        w.add_thing("hat", holder="zed")
    with pytest.raises(ValueError, match="itself"):
        w.connect("well", "well")
    with pytest.raises(ValueError, match="positive"):
        World(minutes_per_tick=0)


def test_say_is_heard_by_everyone_at_the_place_but_the_speaker():
    w = village()
    [e] = resolve(w, ("mira", Say(text="hello")))
    assert (e.kind, e.actor, e.place, e.text) == ("say", "mira", "tavern", 'mira says: "hello"')
    assert w.observers(e) == ["bob"]


def test_say_to_someone_elsewhere_fails_privately_with_the_reason():
    w = village()
    [e] = resolve(w, ("mira", Say(text="hi", to="ann")))
    assert e.kind == "fail" and "ann is not here" in e.text and "bob" in e.text
    assert w.observers(e) == ["mira"]
    [e] = resolve(w, ("mira", Say(text="hi", to="nobody")))
    assert e.kind == "fail" and "nobody called 'nobody'" in e.text


def test_short_move_arrives_the_same_tick_long_move_travels():
    w = village()
    leave, arrive = resolve(w, ("bob", Move(to="square")))
    assert (leave.kind, arrive.kind) == ("move", "arrive")
    assert w.place_of("bob") == "square" and w.observers(arrive) == ["ann"]
    [leave] = resolve(w, ("bob", Move(to="well")))  # 5 minutes at 1 minute per tick
    assert w.place_of("bob") is None and not w.can_act("bob")
    assert "on your way to well" in w.describe_for("bob")
    [fail] = resolve(w, ("bob", Say(text="still walking")))
    assert fail.kind == "fail" and "travelling" in fail.text
    for _ in range(4):
        w.tick += 1
        assert w.arrivals() == []
    w.tick += 1
    [arrive] = w.arrivals()
    assert arrive.kind == "arrive" and w.place_of("bob") == "well" and arrive.tick == 5


def test_move_takes_the_shortest_route_and_fails_clearly():
    w = village(minutes_per_tick=10)
    events = resolve(w, ("mira", Move(to="well")))  # via the square, 6 minutes: within one 10-minute tick
    assert [e.kind for e in events] == ["move", "arrive"] and events[0].data["minutes"] == 6
    [e] = resolve(w, ("bob", Move(to="island")))
    assert e.kind == "fail" and "no route" in e.text
    [e] = resolve(w, ("bob", Move(to="moon")))
    assert e.kind == "fail" and "no place called 'moon'" in e.text
    [e] = resolve(w, ("bob", Move(to="tavern")))
    assert e.kind == "fail" and "already at the tavern" in e.text


def test_give_moves_the_thing_only_when_both_are_there():
    w = village()
    [e] = resolve(w, ("mira", Give(item="coin", to="ann")))
    assert e.kind == "fail" and w.things["coin"].holder == "mira"
    [e] = resolve(w, ("bob", Give(item="coin", to="mira")))
    assert e.kind == "fail" and "do not carry 'coin'" in e.text
    [e] = resolve(w, ("mira", Give(item="coin", to="bob")))
    assert e.kind == "give" and w.inventory("bob") == ["coin"] and w.observers(e) == ["bob"]


def test_use_needs_the_thing_at_hand():
    w = village()
    [e] = resolve(w, ("mira", Use(item="bucket")))
    assert e.kind == "fail" and "at hand: coin" in e.text
    [e] = resolve(w, ("mira", Use(item="coin", target="bob")))
    assert e.kind == "use" and e.text == "mira uses the coin on bob."


def test_wait_is_private_and_custom_actions_need_a_handler():
    w = village()
    [e] = resolve(w, ("mira", Wait()))
    assert w.observers(e) == []

    class Dance(Action, tag="dance"):
        style: str

    with pytest.raises(TypeError, match="no handler for action Dance"):
        resolve(w, ("mira", Dance(style="jig")))

    @w.on(Dance)
    def dance(world, actor, action):
        return world.event("dance", f"{actor} dances a {action.style}.", actor=actor, place=world.place_of(actor),
                           audience=["ann"])

    [e] = resolve(w, ("mira", Dance(style="jig")))
    assert e.text == "mira dances a jig." and w.observers(e) == ["ann"]  # the event's own audience wins
    # a scenario written before `audience` was a field still whispers: warned, and moved to the field
    with pytest.warns(DeprecationWarning, match="Event\\(audience=...\\)"):
        old = w.event("whisper", "mira whispers.", actor="mira", place="square", data={"audience": ["bob"], "x": 1})
    assert old.audience == ["bob"] and old.data == {"x": 1} and w.observers(old) == ["bob"]
    # and an event of an older log (its audience in data) is read the same way
    logged = msgspec.json.decode(b'{"tick":0,"seq":9,"kind":"whisper","text":"t","data":{"audience":["ann"]}}',
                                 type=Event)
    assert logged.heard_by == ["ann"]


def test_resolution_order_is_seeded_and_sequence_numbers_increase():
    def run(seed):
        w = village()
        w.add_thing("pie", holder="bob")
        acts = [("mira", Give(item="coin", to="bob")), ("bob", Give(item="pie", to="mira")),
                ("ann", Say(text="anyone?"))]
        return [(e.actor, e.seq) for e in w.resolve(acts, random.Random(seed))]

    assert run(1) == run(1)
    orders = {tuple(a for a, _ in run(s)) for s in range(10)}
    assert len(orders) > 1  # the seed decides who goes first
    assert [s for _, s in run(3)] == [1, 2, 3]


def test_state_round_trip_and_snapshot():
    w = village()
    resolve(w, ("bob", Move(to="well")))
    w.tick = 2
    w2 = World()
    w2.load_state(w.to_state())
    assert w2.to_state() == w.to_state()
    assert w2.describe_for("mira") == w.describe_for("mira")
    snap = w.snapshot()
    assert snap["travelling"] == {"bob": "well"} and snap["things"]["coin"] == "mira"
    assert snap["places"]["tavern"] == ["mira"]


def test_describe_for_lists_company_things_and_exits():
    w = village()
    text = w.describe_for("mira")
    assert "day 1, 08:00" in text and "at the tavern" in text
    assert "Here with you: bob." in text and "You carry: coin." in text and "square (1 min)" in text


def test_observers_are_taken_when_the_event_happens():
    w = village()
    [say] = resolve(w, ("mira", Say(text="psst")))
    resolve(w, ("bob", Move(to="square")))
    assert w.observers(say) == ["bob"]  # heard in the tavern; where bob is now does not matter


def test_departures_resolve_after_the_other_actions_of_the_tick():
    class Sail(Action, tag="sail"):  # a scenario's own travel action says it departs
        departs = True
        to: str

    for seed in range(8):  # whatever the shuffle: bob is still here for what happens this tick
        w = village()
        w.on(Sail)(lambda world, actor, a: world.event("sail", f"{actor} sails", actor=actor))
        w.add_thing("pie", holder="bob")
        events = w.resolve([("bob", Move(to="square")), ("mira", Say(text="wait!", to="bob")),
                            ("ann", Sail(to="island")), ("bob", Give(item="pie", to="mira"))], random.Random(seed))
        kinds = [e.kind for e in events]
        assert "fail" not in kinds and set(kinds[-3:]) >= {"move", "sail"}, kinds
        say = next(e for e in events if e.kind == "say")
        assert w.observers(say) == ["bob"] and w.inventory("mira") == ["coin", "pie"]
