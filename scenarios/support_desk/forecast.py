"""When idle staff act next (the hints a KV cache keeps personas by): read from the tickets already in the
building, and for triage agents with an empty inbox from the arrivals, which are seeded by tick alone."""

from __future__ import annotations

import math
from collections import Counter

from swarm.scenarios.support_desk.state import SupportDesk
from swarm.scenarios.support_desk.tickets import CATEGORIES, SENIOR_ODDS, arriving

FORESEE = 64  # ticks of arrivals looked ahead for triage agents with an empty inbox


def forecast(st: SupportDesk, seed: int, tick: int) -> dict[str, float]:
    """After this tick's desk work: how many ticks each idle agent waits before its next turn, where the
    tickets already in the building (or the arrivals) say. A ticket waits in a triage inbox one tick per
    ticket ahead of it, is routed to its true queue (a careful reader's choice) and reaches the queue's
    first free hands the same tick; they act the tick after."""
    out = _arrivals_for_triage(st, seed, tick)
    ready: dict[str, list[int]] = {pool: [] for pool in st.queues}  # pool -> ticks its tickets get dispatched
    for waiting in st.inbox.values():
        for k, tid in enumerate(waiting):  # routed in tick +1+k, dispatched then
            t = st.tickets[tid]
            ready[t.category].append(1 + k)
            if t.senior:
                ready["senior"].append(2 + k)  # its specialist escalates the tick after
    for who, tid in st.holding.items():
        if tid is not None and st.roles[who] == "specialist":
            t = st.tickets[tid]
            if t.category != st.desk[who]:  # passed on next tick
                ready[t.category].append(1)
            if t.senior:
                ready["senior"].append(1 if t.category == st.desk[who] else 2)
    expected = st.expected()
    for pool, ticks in ready.items():
        counts = Counter(ticks)
        # beyond the tickets in the building: the first of the pool waits for the next new ticket of its
        # kind (routed, then escalated for a senior), the others for a tick that brings two at once
        share = SENIOR_ODDS if pool == "senior" else 1 / len(CATEGORIES)
        later = (2 if pool == "senior" else 1) + math.ceil(1 / (expected * share))
        # the desk hands tickets to free staff in their order, so the n-th of a pool gets one only in a tick
        # that brings more than n
        for n, who in enumerate(st.staff[pool]):
            if st.holding[who] is None:
                out[who] = min((d for d, c in counts.items() if c > n), default=later if n == 0 else math.inf)
    return out


def _arrivals_for_triage(st: SupportDesk, seed: int, tick: int) -> dict[str, float]:
    """Idle ticks of each triage agent with an empty inbox: its next ticket arrives in tick +1+d (dealt
    round the triage agents, as many a tick as `arrivals` brings), and it acts the tick after."""
    staff, out = st.staff["triage"], {}
    waiting = {who for who in staff if not st.inbox[who]}
    expected, rr = st.expected(), st.rr
    for d in range(FORESEE):
        if not waiting:
            break
        count = arriving(seed, tick + 1 + d, expected)
        for k in range(rr, rr + min(count, len(staff))):
            who = staff[k % len(staff)]
            if who in waiting:
                waiting.discard(who)
                out[who] = d + 1
        rr += count
    return out
