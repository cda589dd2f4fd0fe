"""The support desk's state (checkpointed with the simulation): the open tickets and where each one is (a triage
inbox, a queue, someone's hands), who works which pool, and the counts the metrics read; with the moves of a
ticket that the rules share: dealt to triage when it arrives, handed out from a queue to free staff."""

from __future__ import annotations

from typing import Literal

import msgspec

from swarm.scenarios.support_desk.tickets import RANK, Category, Priority

Role = Literal["triage", "specialist", "senior"]


class Ticket(msgspec.Struct):
    """A customer's ticket: its hidden truth, where it stands, and what the staff said of it so far."""

    id: str  # "T-0001"
    customer: str
    text: str
    category: Category  # the truth, which the staff must read from the text
    priority: Priority
    senior: bool  # whether it needs a senior
    arrived: int  # the tick
    triage: str  # the triage agent it was dealt to, who gets it back when the customer writes again
    queue: Category | None = None  # where it was routed, and with what priority and note
    routed_priority: Priority | None = None
    note: str = ""
    holder: str | None = None  # the specialist or senior it is handed to
    breached: bool = False  # its SLA is past
    escalated_by: str | None = None  # the specialist who escalated it, and why
    reason: str = ""
    reopened: int = 0  # how many times the customer wrote back


class Stats(msgspec.Struct):
    """Counts the metrics read: tickets created, Routes made (and how many had the queue and the priority
    right), tickets resolved (and their ticks to resolution, summed), SLA breaches, escalations, reopens."""

    created: int = 0
    routed: int = 0
    route_correct: int = 0
    priority_correct: int = 0
    resolved: int = 0
    resolution_ticks: int = 0
    breaches: int = 0
    escalated: int = 0
    reopened: int = 0


class SupportDesk(msgspec.Struct):
    """`sim.state` of a support desk: each agent's role, each specialist's queue and each pool's staff (in the
    order the desk hands them tickets); each triage agent's inbox (oldest first) and what each specialist and
    senior holds; the open tickets, and the tickets waiting in each queue (the four and "senior"). The fields
    are the keys of the plain dict it once was, so checkpoints from then load into it."""

    rate: float  # new tickets per agent per tick
    roles: dict[str, Role] = {}
    desk: dict[str, Category] = {}  # specialist -> its desk: the queue it answers
    staff: dict[str, list[str]] = {}  # pool (triage, a queue, senior) -> its agents
    inbox: dict[str, list[str]] = {}  # triage agent -> ticket ids
    holding: dict[str, str | None] = {}  # specialist or senior -> the ticket id in hand, or None
    tickets: dict[str, Ticket] = {}  # the open ones, by id
    queues: dict[str, list[str]] = {}
    next_id: int = 1
    rr: int = 0  # tickets dealt round the triage agents so far (the next goes to the next of them)
    stats: Stats = msgspec.field(default_factory=Stats)

    def expected(self) -> float:
        """New tickets a tick: in proportion to the size of the team."""
        return self.rate * len(self.roles)

    def in_hand(self, who: str) -> str | None:
        """The ticket `who` must deal with now: a triage agent's oldest waiting, anyone else's the one held."""
        if self.roles.get(who) == "triage":
            waiting = self.inbox[who]
            return waiting[0] if waiting else None
        return self.holding.get(who)


def hire(st: SupportDesk, name: str, role: Role, pool: str) -> None:
    """`name` joins `pool` in `role`: a triage agent with an empty inbox, anyone else with empty hands."""
    st.roles[name] = role
    st.staff[pool].append(name)
    if role == "triage":
        st.inbox[name] = []
    else:
        st.holding[name] = None
    if role == "specialist":
        st.desk[name] = pool


def file_ticket(st: SupportDesk, tick: int, category: Category, priority: Priority, senior: bool, text: str,
                customer: str) -> Ticket:
    """A new ticket, in the inbox of the next triage agent in turn."""
    tid = f"T-{st.next_id:04d}"
    st.next_id += 1
    triage = st.staff["triage"][st.rr % len(st.staff["triage"])]
    st.rr += 1
    t = st.tickets[tid] = Ticket(tid, customer, text, category, priority, senior, tick, triage)
    st.inbox[triage].append(tid)
    st.stats.created += 1
    return t


def hand_out(st: SupportDesk, pool: str) -> list[tuple[str, Ticket]]:
    """The queue's most urgent, oldest tickets into the hands of its free staff, one each: (who, ticket)."""
    queue = st.queues[pool]
    if not queue:
        return []
    free = [s for s in st.staff[pool] if st.holding[s] is None]
    queue.sort(key=lambda tid: (RANK[st.tickets[tid].routed_priority], st.tickets[tid].arrived, tid))
    taken, queue[:] = queue[: len(free)], queue[len(free) :]
    out = []
    for who, tid in zip(free, taken, strict=False):  # as many as there are free hands
        t = st.tickets[tid]
        t.holder = who
        st.holding[who] = tid
        out.append((who, t))
    return out
