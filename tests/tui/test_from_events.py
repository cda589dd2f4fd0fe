"""Views rebuilt from events alone (replay, watch): one agent's detail and the world's places."""

from swarm.events import Event
from swarm.tui.data import AgentRow
from swarm.tui.from_events import detail, world


def ev(seq, kind, text, **fields):
    return Event(tick=fields.pop("tick", 0), seq=seq, kind=kind, text=text, **fields)


EVENTS = [
    ev(1, "join", "Mira (innkeeper) is at the tavern.", actor="Mira", place="tavern",
       data={"persona": {"role": "innkeeper", "adapter": "gossip"}}),
    ev(2, "join", "Bob (smith) is at the square.", actor="Bob", place="square"),
    ev(3, "plan", "Mira plans: sweep; pour", actor="Mira", place="tavern", data={"steps": ["sweep", "pour"]}),
    ev(4, "say", 'Bob says: "anyone?"', actor="Bob", place="square", tick=1),
    ev(5, "wait", "Bob waits.", actor="Bob", place="square", tick=1),
    ev(6, "whisper", "Bob whispers to Mira", actor="Bob", place="square", audience=["Mira"], tick=1),
    ev(7, "inbox", "tui tells Mira: hello", actor="tui", target="Mira", tick=1),
    ev(8, "move", "Mira leaves the tavern for the square.", actor="Mira", place="tavern", target="square", tick=2),
    ev(9, "fail", "Mira cannot give", actor="Mira", tick=2),
]


def test_detail_from_events():
    d = detail(EVENTS, "Mira")
    assert d.recorded and d.persona == {"role": "innkeeper"} and d.adapter == "gossip"
    assert d.plan == [("pending", "sweep"), ("pending", "pour")]
    assert d.place == "-> square" and d.action == "Mira leaves the tavern for the square."  # a fail is no action
    seen = "\n".join(d.memories)
    assert "whispers to Mira" in seen and "tells Mira" in seen  # addressed to her
    assert "anyone?" not in seen  # said in the square while she was in the tavern
    bob = detail(EVENTS, "Bob")
    assert bob.persona == {"role": "smith"}  # an older log: the role from the join's text
    assert not any("Mira plans" in m or "cannot give" in m for m in bob.memories)  # private to Mira
    assert detail(EVENTS, "Nobody") is None


def test_world_from_the_roster():
    rows = [AgentRow("Mira", "-> square", "", ""), AgentRow("Bob", "square", "", ""), AgentRow("Cy", "-", "", "")]
    assert world(["tavern", "square"], rows) == {"places": {"tavern": [], "square": ["Bob"]},
                                                 "travelling": {"Mira": "square"}}
