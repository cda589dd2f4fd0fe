"""Software team: one feature request goes from spec to design to tasks to reviewed, approved changes.

What happens: a feature request (drawn per seed from a generated list, e.g. "export invoices as CSV")
reaches the team. Its wording says which parts the feature needs (an API endpoint, a screen or button,
stored history, a background job, a help article). The product manager writes a spec, the architect a
design and then a task list (one task per part, ids T1, T2, ...); engineers claim tasks (backend engineers
prefer API, database and job work, frontend engineers screens and docs) and implement them, each change
with a change note; a QA engineer reviews every change and approves it or requests changes (missing
tests, an unhandled case, ...), which sends it back to its engineer for another round. When every task
is approved the feature is done and the PM writes the release notes. Documents (spec, design, task list,
release notes) are things in the wiki, change notes and reviews things in the repo; their text is in
`sim.state.artifacts`.

Actions: WriteSpec(text), Design(text), Breakdown(parts), Claim(task), Implement(task, change),
Review(task, verdict, notes), Release(notes) and Wait. Each agent is offered only what its role and the
state of the work allow this tick, with task ids narrowed to the ones it may name, and its prompt closes
with its next step as the tracker would remind it (`@sim.focus`; the breakdown's quotes the request).

Metrics: tasks_total, tasks_completed, review_rounds, changes_requested, artifacts (count by kind), done,
ticks_to_done (the tick of the last approval), scope_coverage (the share of the parts the feature needs
that the task list covers), released.

    swarm run software_team --model scripted --ticks 60 --seed 1 --headless --json
    swarm run software_team --model random --ticks 60 --agents 8 --headless

    sim = Simulation.from_scenario("software_team", model="scripted", agents=7)

Options: `agents` (5 to 20: a PM, an architect, one QA engineer per six people or so, the rest engineers).
"""

from __future__ import annotations

import random

from swarm.agents.actions import Give, Move, Say, Use, Wait, narrow
from swarm.scenarios.software_team.actions import PARTS, Breakdown, Claim, Design, Implement, Release, Review, WriteSpec
from swarm.scenarios.software_team.feature import REQUEST, TASK_TITLES, draw, parts_in
from swarm.scenarios.software_team.people import roster
from swarm.scenarios.software_team.script import ENGINEER, GAPS, MANAGER, ask_in, gap_in, policy
from swarm.scenarios.software_team.state import (
    Task,
    Team,
    join,
    listing,
    of_role,
    open_tasks,
    publish,
    reminder,
    until_handoff,
)

__all__ = ["ENGINEER", "GAPS", "KINDS", "MAIN_METRIC", "MANAGER", "PARTS", "REQUEST", "Breakdown", "Claim", "Design",
           "Implement", "Release", "Review", "Team", "WriteSpec", "ask_in", "build", "gap_in", "parts_in", "policy"]

MAIN_METRIC = "tasks_completed"  # the figure benchmarks/scenarios.py compares across policies
KINDS = ("spec", "design", "task list", "change", "review", "release notes")
PREAMBLE = ("A product team ships one feature. The PM writes a spec, the architect a design and a task list; "
            "engineers claim and implement tasks; QA approves each change or requests changes. Docs live in the "
            "wiki, code in the repo.")
PLACES = {"team room": "desks and a whiteboard", "wiki": "specs and designs", "repo": "code and reviews"}


def build(sim, agents: int = 5):
    sim.wake_after = None  # handoffs wake the agents that have something to do; no need to ask the rest
    if not 5 <= agents <= 20:
        raise ValueError(f"the software team takes 5 to 20 agents (PM, architect, QA, 2+ engineers), not {agents}")
    sim.world.preamble = PREAMBLE
    for place, about in PLACES.items():
        sim.world.add_place(place, about)
    sim.world.connect("team room", "wiki", minutes=1)
    sim.world.connect("team room", "repo", minutes=1)
    team = sim.state = Team(draw(random.Random(f"software_team:{sim.seed}")))
    for persona, role, area in roster(agents):
        sim.add_agent(persona, at="team room")
        join(team, persona.name, role, area)
    sim.remove_actions(Say, Move, Give, Use)
    sim.add_actions(WriteSpec, Design, Breakdown, Claim, Implement, Review, Release)
    for action, handler in HANDLERS.items():
        sim.on(action, state=True)(handler)
    sim.every_tick(tracker)
    sim.actions_for(offered)
    sim.focus(next_step)
    sim.next_act(handoff)
    for name, metric in METRICS.items():
        sim.metric(name)(metric)


# -- the rules: a handler per action (a fail event where the role or the state of the work does not allow it) --


def write_spec(team: Team, world, actor: str, a: WriteSpec):
    arts = team.artifacts
    why = _refuse(team, world, actor, a, "pm", team.announced and "spec" not in arts,
                  "the spec is already written" if "spec" in arts else "no request yet")
    if why:
        return why
    publish(team, world, "spec", actor, a.text)
    return _tell(world, "spec", f'{actor} wrote the spec: "{a.text}"', of_role(team, "architect"), actor)


def design(team: Team, world, actor: str, a: Design):
    arts = team.artifacts
    why = _refuse(team, world, actor, a, "architect", "spec" in arts and "design" not in arts,
                  "the design is already written" if "design" in arts else "there is no spec yet")
    if why:
        return why
    publish(team, world, "design", actor, a.text)
    return _tell(world, "design", f'{actor} posted the design: "{a.text}" Next: break it into tasks.', [actor], actor)


def breakdown(team: Team, world, actor: str, a: Breakdown):
    tasks, feature = team.tasks, team.feature
    why = _refuse(team, world, actor, a, "architect", "design" in team.artifacts and not tasks,
                  "the tasks are already listed" if tasks else "write the design first")
    if why:
        return why
    what = {"what": feature.what, "obj": feature.obj, "verb": feature.verb}
    for part in dict.fromkeys(a.parts):  # each part once, in the order given
        tid = f"T{len(tasks) + 1}"
        tasks[tid] = Task(tid, part, TASK_TITLES[part].format(**what))
    text = listing(team, list(tasks))
    publish(team, world, "task list", actor, text)
    return _tell(world, "tasks", f"{actor} listed the tasks: {text}. All open.", of_role(team, "engineer"), actor)


def claim(team: Team, world, actor: str, a: Claim):
    task, mine = team.tasks.get(a.task), team.active.get(actor)
    why = _refuse(team, world, actor, a, "engineer", task is not None and task.status == "open" and not mine,
                  f"finish {mine[0]} first" if mine else
                  f"{a.task} is not open; open tasks: {', '.join(open_tasks(team)) or 'none'}")
    if why:
        return why
    task.status, task.owner = "claimed", actor
    mine.append(a.task)
    return _tell(world, "claim", f"{actor} claims {a.task}: {task.title}.", [actor], actor)


def implement(team: Team, world, actor: str, a: Implement):
    task, mine = team.tasks.get(a.task), team.active.get(actor)
    why = _refuse(team, world, actor, a, "engineer", mine is not None and a.task in mine,
                  f"{a.task} is not yours to implement; yours: {', '.join(mine or []) or 'none'}")
    if why:
        return why
    task.round += 1
    reviewer = min(team.reviews, key=lambda q: (len(team.reviews[q]), q))  # the least busy QA
    task.status, task.reviewer, task.change = "review", reviewer, a.change
    team.reviews[reviewer].append(a.task)
    mine.remove(a.task)
    publish(team, world, "change", actor, a.change, f"change {a.task} r{task.round}", task=a.task)
    return _tell(world, "change", f'{actor} submits {a.task} ({task.part}) for review: "{a.change}"', [reviewer],
                 actor)


def review(team: Team, world, actor: str, a: Review):
    tasks = team.tasks
    task, waiting = tasks.get(a.task), team.reviews.get(actor, [])
    why = _refuse(team, world, actor, a, "qa", task is not None and a.task in waiting,
                  f"{a.task} is not waiting for your review; yours: {', '.join(waiting) or 'none'}")
    if why:
        return why
    waiting.remove(a.task)
    team.review_rounds += 1
    publish(team, world, "review", actor, a.notes, f"review {a.task} r{task.round}", task=a.task, verdict=a.verdict)
    owner = task.owner
    if a.verdict == "request_changes":
        team.changes_requested += 1
        task.status, task.notes = "changes", a.notes
        team.active[owner].append(a.task)
        return _tell(world, "review", f'{actor} requests changes on {a.task}: "{a.notes}"', [owner], actor)
    task.status, task.notes = "approved", a.notes
    events = [_tell(world, "review", f'{actor} approves {a.task}: "{a.notes}" Open tasks: '
                                     f"{listing(team, open_tasks(team))}.", [owner], actor)]
    if all(t.status == "approved" for t in tasks.values()):
        team.done_tick = world.tick
        events.append(_tell(world, "done", f"All {len(tasks)} tasks for '{team.feature.what}' are approved. Ready "
                                           "to release.", list(team.roles), importance=8.0))
    return events


def release(team: Team, world, actor: str, a: Release):
    why = _refuse(team, world, actor, a, "pm", team.done_tick is not None and not team.released,
                  "already released" if team.released else "not every task is approved yet")
    if why:
        return why
    team.released = True
    publish(team, world, "release notes", actor, a.notes)
    return _tell(world, "release", f'{actor} releases the feature: "{a.notes}"', [], actor)


HANDLERS = {WriteSpec: write_spec, Design: design, Breakdown: breakdown, Claim: claim, Implement: implement,
            Review: review, Release: release}


def tracker(sim, events):
    """The request on the first tick; then a reminder to whoever has work that nothing this tick told them
    about (an agent acts only when it observes something)."""
    team, world = sim.state, sim.world
    if not team.announced:
        team.announced = True
        return _tell(world, "request", f"New feature request. {team.feature.request}", list(team.roles),
                     importance=7.0)
    told = {a for e in events for a in e.audience or ()}
    return [_tell(world, "reminder", text, [who], importance=4.0) for who in team.roles
            if who not in told and (text := reminder(team, who)) is not None]


def offered(sim, agent) -> list[type]:
    """What `agent` may do now: what its role and the state of the work allow, and Wait."""
    return [*_allowed(sim.state, agent.id), Wait]


def _allowed(team: Team, me: str) -> list[type]:
    """The actions `me` may take now (besides Wait), task ids narrowed to those it may name."""
    role, tasks, arts = team.roles.get(me), team.tasks, team.artifacts
    if role == "pm":
        if team.announced and "spec" not in arts:
            return [WriteSpec]
        return [Release] if team.done_tick is not None and not team.released else []
    if role == "architect":
        if "spec" in arts and "design" not in arts:
            return [Design]
        return [Breakdown] if "design" in arts and not tasks else []
    if role == "engineer":
        mine = team.active[me]
        if mine:
            return [narrow(Implement, "task", tuple(mine))]
        open_ = tuple(open_tasks(team))
        return [narrow(Claim, "task", open_)] if open_ else []
    if role == "qa" and team.reviews[me]:
        return [narrow(Review, "task", tuple(team.reviews[me]))]
    return []


def next_step(sim, agent):
    """What the agent has to do now, as the tracker would remind them: it closes the agent's prompt."""
    return reminder(sim.state, agent.id) if agent.id in sim.state.roles else None


def handoff(sim, agent):
    """Work with nothing to do now waits for a handoff: see `until_handoff`."""
    return until_handoff(sim.state, agent.id)


def _tell(world, kind: str, text: str, audience: list[str], actor: str | None = None, importance: float = 6.0):
    return world.event(kind, text, actor=actor, place=world.place_of(actor) if actor else None,
                       audience=audience, importance=importance)


def _refuse(team: Team, world, actor: str, action, role: str, ok: bool, why: str):
    """A fail event if `actor` is not the `role` or the action is not `ok` now (saying `why`), else None."""
    if team.roles.get(actor) != role:
        return world.fail(actor, action, f"only the {role} can do that")
    return None if ok else world.fail(actor, action, why)


def _coverage(team: Team) -> float:
    """The share of the parts the feature needs that the task list covers."""
    listed = {t.part for t in team.tasks.values()}
    needed = team.feature.parts
    return round(sum(p in listed for p in needed) / len(needed), 4)


METRICS = {
    "tasks_total": lambda sim: len(sim.state.tasks),
    "tasks_completed": lambda sim: sum(t.status == "approved" for t in sim.state.tasks.values()),
    "review_rounds": lambda sim: sim.state.review_rounds,
    "changes_requested": lambda sim: sim.state.changes_requested,
    "artifacts": lambda sim: {k: sum(a.kind == k for a in sim.state.artifacts.values()) for k in KINDS},
    "done": lambda sim: sim.state.done_tick is not None,
    "ticks_to_done": lambda sim: sim.state.done_tick,  # the tick of the last approval (None before)
    "scope_coverage": lambda sim: _coverage(sim.state),
    "released": lambda sim: sim.state.released,
}
