"""Support desk: customer tickets are triaged into specialist queues, answered, escalated and resolved.

What happens: customers write in at a steady rate (in proportion to the size of the team). Every ticket
has a hidden category (billing, technical, account, shipping), priority (low, normal, urgent) and a hidden
need for a senior, and its wording gives all three away to a careful reader: past the greeting, past
openers such as "the payment went through fine, but ...", and past side remarks about other topics.
Triage agents route each ticket to a queue with a priority and a short note. The desk hands queued
tickets, most urgent first, to free specialists of that queue (one ticket each at a time). A specialist
answers it (which resolves it), sends a misrouted ticket on to the right queue, or escalates it to a
senior when the customer needs one (a repeat contact, a legal threat, a request for a manager); seniors
resolve escalations. An answer from the wrong desk, or a plain answer where a senior was needed, gets the
ticket reopened and sent back to its triage agent. Every ticket has an SLA by its true priority.

Actions: Route(ticket, queue, priority, note), Answer(ticket, text), Escalate(ticket, reason) and Wait.
Each agent is offered only what fits its role and what it holds this tick, with the ticket field narrowed
to the one ticket in its hands: triage agents work their inbox one ticket at a time, oldest first (as a
ticket queue hands them out), and Route that one; specialists Answer, Escalate or Route the ticket they
hold; seniors Answer theirs. The ticket in an agent's hands closes its prompt (`sim.focus`), and it hears
of it again each tick until it is dealt with.

Metrics: routing_accuracy and priority_accuracy (of every Route), mean_ticks_to_resolution, sla_breaches
(urgent 4 ticks, normal 10, low 20), resolved, open, tickets, escalated, reopened.

    swarm run support_desk --model scripted --ticks 40 --seed 1 --headless --json
    swarm run support_desk --model random --ticks 40 --agents 20 --headless
    swarm run support_desk --model scripted --agents 1000 --ticks 3 --headless

    sim = Simulation.from_scenario("support_desk", model="scripted", agents=12, rate=0.3, specialists=4)

Options: `agents` (at least 6; a quarter triage, an eighth seniors, the rest specialists spread over the four
queues), `rate` (new tickets per agent per tick), `specialists` (how many of the agents are specialists).
"""

from __future__ import annotations

import random
from functools import partial

import msgspec

from swarm.agents.actions import Give, Move, Say, Use, Wait, narrow
from swarm.scenarios.support_desk.actions import Answer, Escalate, Route
from swarm.scenarios.support_desk.forecast import forecast
from swarm.scenarios.support_desk.people import PLACES, POD, THINGS, persona, pods, pools, staff_name
from swarm.scenarios.support_desk.script import policy
from swarm.scenarios.support_desk.state import SupportDesk, Ticket, file_ticket, hand_out, hire
from swarm.scenarios.support_desk.tickets import (
    CATEGORIES,
    CUE_RE,
    CUSTOMER_NAMES,
    FOLLOW_UP,
    PRIORITIES,
    SLA,
    arrivals,
    read_ticket,
    write_ticket,
)

__all__ = ["CATEGORIES", "CUE_RE", "CUSTOMER_NAMES", "MAIN_METRIC", "POD", "PRIORITIES", "Answer", "Escalate", "Route",
           "SupportDesk", "Ticket", "build", "policy", "read_ticket", "write_ticket"]

MAIN_METRIC = "routing_accuracy"  # the figure benchmarks/scenarios.py compares across policies
PREAMBLE = ("A customer support desk. Triage agents route each new ticket to a queue (billing, technical, account, "
            "shipping) with a priority (low, normal, urgent); specialists answer or escalate; seniors resolve "
            "escalations.")


def build(sim, agents: int = 8, rate: float = 0.12, specialists: int | None = None):
    sim.wake_after = None  # arriving and moving tickets wake those with something to do; no need to ask the rest
    if agents < 6:
        raise ValueError(f"the support desk needs at least 6 agents (triage, 4 specialists, a senior), not {agents}")
    if not 0 < rate <= 2:
        raise ValueError(f"rate is new tickets per agent per tick, within (0, 2]; got {rate}")
    staffing = pools(agents, specialists)
    sim.world.preamble = PREAMBLE
    sim.state = st = SupportDesk(rate, staff={p: [] for p in staffing},
                                 queues={p: [] for p in (*CATEGORIES, "senior")})
    n = 0
    for pool, count in staffing.items():
        places = pods(pool, count)
        for place in places:
            sim.world.add_place(place, PLACES[pool][1])
        sim.world.add_thing(THINGS[pool][0], at=places[0], description=THINGS[pool][1], portable=False)
        role = pool if pool in ("triage", "senior") else "specialist"
        for i in range(count):
            name = staff_name(n)
            n += 1
            sim.add_agent(persona(name, role, pool, n), at=places[i // POD])
            hire(st, name, role, pool)
    sim.remove_actions(Say, Move, Give, Use)
    sim.add_actions(Route, Answer, Escalate)
    for action, rule in ((Route, route), (Answer, answer), (Escalate, escalate)):
        sim.on(action, state=True)(partial(on_ticket, rule=rule))
    sim.every_tick(desk_tick)
    sim.actions_for(choices)
    sim.focus(in_hand)
    forecasts: dict[int, dict[str, float]] = {}  # made once a tick, for every idle agent
    sim.next_act(lambda sim, agent: queue_position(forecasts, sim, agent))
    for name, metric in METRICS.items():
        sim.metric(name)(metric)


# -- the rules -------------------------------------------------------------------------------------


def on_ticket(st: SupportDesk, world, actor: str, action, rule):
    """What every action on a ticket checks first: that it names the ticket in the actor's hands (a triage
    agent's is the oldest in its inbox, which it may only route; an action's tag is its verb). If it does,
    `rule` takes it from there; if not, the actor is told what it may name."""
    t, mine, verb = st.tickets.get(action.ticket), st.in_hand(actor), action.__struct_config__.tag
    if st.roles.get(actor) == "triage":
        if t is None or action.ticket != mine:
            return world.fail(actor, action, f"{action.ticket!r} is not next in your inbox; next: {mine or 'none'}")
        if verb != "route":
            return world.fail(actor, action, f"triage routes tickets; only specialists {verb} them")
    elif t is None or action.ticket != mine:
        return world.fail(actor, action, f"you do not hold {action.ticket!r}; you hold: {mine or 'nothing'}")
    return rule(st, world, actor, action, t)


def route(st: SupportDesk, world, actor: str, a: Route, t: Ticket):
    if st.roles[actor] == "senior":
        return world.fail(actor, a, "seniors answer escalations; they do not route")
    if a.queue not in CATEGORIES:
        return world.fail(actor, a, f"there is no {a.queue!r} queue; queues: {', '.join(CATEGORIES)}")
    stats = st.stats
    stats.routed += 1
    stats.route_correct += a.queue == t.category
    stats.priority_correct += a.priority == t.priority
    events = [world.event("route", f"{actor} routes {t.id} to {a.queue} ({a.priority}).", actor=actor,
                          place=world.place_of(actor), data=msgspec.to_builtins(a), audience=[])]
    if st.roles[actor] == "triage":
        st.inbox[actor].remove(t.id)
    else:  # a specialist passing a misrouted ticket on: its triage agent hears why
        st.holding[actor] = None
        events.append(world.event("rerouted", f'{actor} moved {t.id} from {t.queue} to {a.queue}: "{a.note}"',
                                  actor=actor, audience=[t.triage], data={"ticket": t.id}, importance=6.0))
    t.queue, t.routed_priority, t.note, t.holder = a.queue, a.priority, a.note, None
    st.queues[a.queue].append(t.id)
    return events


def answer(st: SupportDesk, world, actor: str, a: Answer, t: Ticket):
    st.holding[actor] = None
    said = world.event("answer", f'{actor} answers {t.id}: "{a.text}"', actor=actor, place=world.place_of(actor),
                       data=msgspec.to_builtins(a), audience=[])
    if st.roles[actor] == "senior" or (st.desk[actor] == t.category and not t.senior):
        ticks = world.tick - t.arrived
        st.stats.resolved += 1
        st.stats.resolution_ticks += ticks
        del st.tickets[t.id]
        return [said, world.event("resolved", f"{t.id} is resolved after {ticks} ticks.", audience=[])]
    # the wrong desk, or a plain answer where a senior was needed: the customer writes back
    st.stats.reopened += 1
    t.queue = t.holder = t.routed_priority = None
    t.reopened += 1
    st.inbox[t.triage].append(t.id)
    follow = random.Random(f"{t.id}:{world.tick}").choice(FOLLOW_UP)
    back = world.event("reopen", f'{t.id} is back: {t.customer} replied to {actor}: "{follow}" Original: "{t.text}"',
                       actor=t.customer, audience=[t.triage], data={"ticket": t.id}, importance=6.0)
    return [said, back]


def escalate(st: SupportDesk, world, actor: str, a: Escalate, t: Ticket):
    if st.roles[actor] == "senior":
        return world.fail(actor, a, "you are the senior: answer it")
    st.holding[actor] = None
    st.stats.escalated += 1
    t.holder, t.escalated_by, t.reason = None, actor, a.reason
    st.queues["senior"].append(t.id)
    return world.event("escalate", f"{actor} escalates {t.id}: {a.reason}", actor=actor, place=world.place_of(actor),
                       data=msgspec.to_builtins(a), audience=[])


def desk_tick(sim, events):
    """SLA breaches, the tick's new tickets, queued tickets handed to free staff, and reminders of the tickets
    still in hand."""
    st, world, tick = sim.state, sim.world, sim.world.tick
    out = _breaches(world, st, tick) + _arrivals(sim, st, tick) + _dispatch(world, st)
    return out + _reminders(world, st, tick, [*events, *out])


def choices(sim, agent):
    """Only what fits the agent's role and the ticket in its hands, the ticket field narrowed to that one."""
    st = sim.state
    role, mine = st.roles.get(agent.id), st.in_hand(agent.id)
    if mine is None:
        return [Wait]
    if role == "triage":
        return [narrow(Route, "ticket", (mine,)), Wait]
    if role == "senior":
        return [narrow(Answer, "ticket", (mine,)), Wait]
    return [narrow(t, "ticket", (mine,)) for t in (Answer, Escalate, Route)] + [Wait]


def in_hand(sim, agent):
    """The ticket the agent must deal with now, text and all: it closes the agent's prompt."""
    st = sim.state
    mine = st.in_hand(agent.id)
    if mine is None:
        return None
    return _shown(st.tickets[mine], "Route" if st.roles.get(agent.id) == "triage" else "In your hands:")


def queue_position(forecasts: dict, sim, agent):
    """Triage agents act the tick after their next ticket arrives; free specialists and seniors when a
    ticket bound for their desk reaches them through the queue. Anything in hand is reminded every
    tick, so its holder acts at once (the framework sees that) and is never asked. `forecasts` keeps the
    tick's forecast for every idle agent, made once."""
    tick = sim.world.tick
    if tick not in forecasts:
        forecasts.clear()
        forecasts[tick] = forecast(sim.state, sim.seed, tick)
    return forecasts[tick].get(agent.id)


def _share(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


METRICS = {
    # of every Route, the share with the queue right (and with the priority right)
    "routing_accuracy": lambda sim: _share(sim.state.stats.route_correct, sim.state.stats.routed),
    "priority_accuracy": lambda sim: _share(sim.state.stats.priority_correct, sim.state.stats.routed),
    "mean_ticks_to_resolution": lambda sim: _share(sim.state.stats.resolution_ticks, sim.state.stats.resolved),
    "sla_breaches": lambda sim: sim.state.stats.breaches,
    "resolved": lambda sim: sim.state.stats.resolved,
    "open": lambda sim: len(sim.state.tickets),
    "tickets": lambda sim: sim.state.stats.created,
    "escalated": lambda sim: sim.state.stats.escalated,
    "reopened": lambda sim: sim.state.stats.reopened,
}


def _breaches(world, st: SupportDesk, tick: int) -> list:
    out = []
    for t in st.tickets.values():
        if not t.breached and tick >= t.arrived + SLA[t.priority]:
            t.breached = True
            st.stats.breaches += 1
            who = [t.holder] if t.holder else [t.triage] if t.id in st.inbox[t.triage] else []
            out.append(world.event("sla", f"{t.id} breached its {SLA[t.priority]}-tick SLA.", audience=who,
                                   data={"ticket": t.id}, importance=8.0))
    return out


def _arrivals(sim, st: SupportDesk, tick: int) -> list:
    """New tickets, as many as the team's size calls for, dealt round the triage agents."""
    out = []
    for category, priority, senior, text, customer in arrivals(sim.seed, tick, st.expected()):
        t = file_ticket(st, tick, category, priority, senior, text, customer)
        out.append(_event(sim.world, "ticket", _shown(t, "New ticket"), [t.triage], t.id,
                          7.0 if priority == "urgent" else 5.0, actor=customer))
    return out


def _dispatch(world, st: SupportDesk) -> list:
    """Each queue's most urgent, oldest tickets go to its free staff, one ticket each."""
    out = []
    for pool in st.queues:
        for who, t in hand_out(st, pool):
            out.append(_event(world, "assign", _assignment(t, pool), [who], t.id,
                              7.0 if t.routed_priority == "urgent" else 6.0))
    return out


def _assignment(t: Ticket, pool: str) -> str:
    if pool == "senior":
        return f'{t.id} is escalated to you by {t.escalated_by}: "{t.reason}" {t.customer} wrote: "{t.text}"'
    return (f'{t.id} ({t.routed_priority}) from the {pool} queue is yours. Triage note: "{t.note}" '
            f'{t.customer} wrote: "{t.text}"')


SHOWN = ("ticket", "assign", "reopen")  # the events that show a ticket's text


def _reminders(world, st: SupportDesk, tick: int, events: list) -> list:
    """Whoever has a ticket in hand (a triage agent: the oldest in its inbox) hears of it again, text and
    all, unless the last thing told to them this tick already showed it: an agent acts only when it observes
    something, and the ticket to act on is then the last thing it was told."""
    last = {}  # agent -> the last event addressed to them this tick
    for e in events:
        for who in e.audience or ():
            last[who] = e

    def shown(who: str, tid: str) -> bool:
        e = last.get(who)
        return e is not None and e.kind in SHOWN and e.data.get("ticket") == tid

    out = []
    for who, waiting in st.inbox.items():
        if waiting and not shown(who, waiting[0]):
            t = st.tickets[waiting[0]]
            more = f" ({len(waiting) - 1} more waiting)" if len(waiting) > 1 else ""
            out.append(_event(world, "reminder", _shown(t, "Still to route:") + more, [who], t.id, 4.0))
    for who, tid in st.holding.items():
        if tid is not None and not shown(who, tid):
            t = st.tickets[tid]
            out.append(_event(world, "reminder", f'{tid} is still yours ({tick - t.arrived} ticks old). '
                                                 f'{t.customer} wrote: "{t.text}"', [who], tid, 4.0))
    return out


def _shown(t: Ticket, lead: str) -> str:
    """A ticket as agents see it: id, customer and text, after `lead`."""
    return f'{lead} {t.id} from {t.customer}: "{t.text}"'


def _event(world, kind: str, text: str, audience: list, ticket: str, importance: float, actor=None):
    return world.event(kind, text, actor=actor, audience=audience, data={"ticket": ticket}, importance=importance)
