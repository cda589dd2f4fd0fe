"""The software team's state (checkpointed with the simulation) and what is read from it: who holds which role,
the feature, its tasks and artifacts, the queues of work; the tracker's reminders, and how long a member with
nothing to do waits for the handoff that gives it work."""

from __future__ import annotations

import math
from typing import Literal

import msgspec

Role = Literal["pm", "architect", "qa", "engineer"]
Status = Literal["open", "claimed", "review", "changes", "approved"]


class Feature(msgspec.Struct):
    """The feature request the run is about, drawn per seed from the catalogue."""

    verb: str  # "export": its entry in the catalogue
    obj: str  # "invoices"
    what: str  # "export invoices as CSV": what users want to do
    parts: list[str]  # the parts it needs, in the canonical order
    request: str  # how it reaches the team: its wording names the parts


class Task(msgspec.Struct):
    """One task of the task list: a part of the feature, and where its change stands."""

    id: str  # "T1"
    part: str
    title: str
    status: Status = "open"
    owner: str | None = None  # the engineer who claimed it
    reviewer: str | None = None  # the QA engineer its latest change went to
    round: int = 0  # changes submitted so far
    change: str = ""  # the latest change note
    notes: str = ""  # the latest review's notes


class Artifact(msgspec.Struct):
    """A document in the wiki (spec, design, task list, release notes) or a change or review in the repo: its
    text is here, the thing of the same name in the world."""

    kind: str  # one of KINDS
    author: str
    tick: int
    text: str
    task: str | None = None  # a change's or a review's
    verdict: str | None = None  # a review's


class Team(msgspec.Struct):
    """`sim.state` of a software team: the feature; each member's role (and each engineer's area); whether the
    request is out; the artifacts and tasks by name; the changes waiting for each QA engineer, oldest first; the
    tasks each engineer holds, claimed or sent back by review, in the order they came; the tick of the last
    approval; whether the release notes are out; the reviews so far and how many asked for changes."""

    feature: Feature
    roles: dict[str, Role] = {}
    area: dict[str, str] = {}  # engineer -> "backend", "frontend" or "full-stack"
    announced: bool = False
    artifacts: dict[str, Artifact] = {}
    tasks: dict[str, Task] = {}
    reviews: dict[str, list[str]] = {}
    active: dict[str, list[str]] = {}
    done_tick: int | None = None
    released: bool = False
    review_rounds: int = 0
    changes_requested: int = 0


def join(team: Team, who: str, role: Role, area: str | None) -> None:
    """`who` joins the team in `role` (an engineer in `area`), with empty queues of work."""
    team.roles[who] = role
    if role == "engineer":
        team.area[who] = area
        team.active[who] = []
    if role == "qa":
        team.reviews[who] = []


def of_role(team: Team, *roles: str) -> list[str]:
    return [a for a, r in team.roles.items() if r in roles]


def open_tasks(team: Team) -> list[str]:
    return [t for t, task in team.tasks.items() if task.status == "open"]


def listing(team: Team, ids: list[str]) -> str:
    """Tasks as the tracker lists them: "T1 (api): API endpoint to ...; T2 (ui): ..." ("none" for none)."""
    tasks = team.tasks
    return "; ".join(f"{t} ({tasks[t].part}): {tasks[t].title}" for t in ids) or "none"


def publish(team: Team, world, kind: str, author: str, text: str, name: str | None = None,
            task: str | None = None, verdict: str | None = None) -> str:
    """An artifact: a thing in the wiki (documents) or the repo (changes, reviews), its text in the state."""
    name = name or kind
    world.add_thing(name, at="repo" if kind in ("change", "review") else "wiki", description=kind, portable=False)
    team.artifacts[name] = Artifact(kind, author, world.tick, text, task, verdict)
    return name


def reminder(team: Team, me: str) -> str | None:
    """What `me` still has to do, as the tracker would remind them (None: nothing)."""
    role, tasks, arts, feature = team.roles[me], team.tasks, team.artifacts, team.feature
    if role == "pm" and "spec" not in arts:
        return f"The request still needs a spec: {feature.request}"
    if role == "pm" and team.done_tick is not None and not team.released:
        return f"Every task for '{feature.what}' is approved; the release notes are yours."
    if role == "architect" and "spec" in arts and "design" not in arts:
        return f'The spec waits for your design: "{arts["spec"].text}"'
    if role == "architect" and "design" in arts and not tasks:
        return f"Break your design into tasks, one per part the request needs: {feature.request}"
    if role == "engineer":
        mine = team.active[me]
        if mine:
            t = tasks[mine[0]]
            asked = f' Review notes: "{t.notes}"' if t.status == "changes" else ""
            return f"{t.id} is yours: {t.title}.{asked}"
        open_ = open_tasks(team)
        return f"Open tasks: {listing(team, open_)}." if open_ else None
    if role == "qa" and team.reviews[me]:
        waiting = team.reviews[me]
        t = tasks[waiting[0]]
        more = f" ({len(waiting) - 1} more after it)" if len(waiting) > 1 else ""
        return f'Waiting for your review: {t.id} by {t.owner}: "{t.change}"{more}'
    return None


def until_handoff(team: Team, me: str) -> float | None:
    """Idle ticks of a member with nothing to do now, until the handoff it waits for, if every step on the
    way is taken on the first tick it can be (the tracker reminds whoever holds the next step, so they act
    the tick after): the spec, the design and the task list one tick each; a task claimed, implemented and
    reviewed (QA reviews one change a tick); the last approval wakes everyone. Nobody acts after the
    release. A lower bound where a review sends work back."""
    if team.released:
        return math.inf
    role, arts, tasks = team.roles.get(me), team.artifacts, team.tasks
    if not tasks:  # the breakdown comes after the spec and the design, and every engineer hears of it
        listed = 2 - ("spec" in arts) - ("design" in arts)  # ticks from the coming one to the task list
        return {"architect": 1, "engineer": listed + 1, "qa": listed + 3}.get(role)  # the PM specs it first
    if role == "qa" and any(team.active.values()):
        return 1  # an engineer holding work submits it in the coming tick
    if role == "qa" and any(t.status == "open" for t in tasks.values()):
        return 3  # claimed, implemented, then here
    if role == "engineer":
        queued = [k for waiting in team.reviews.values() for k, tid in enumerate(waiting) if tasks[tid].owner == me]
        if queued:
            return 1 + min(queued)  # the review of its change tells it the verdict
    return _last_approval(team) + 1


def _last_approval(team: Team) -> int:
    """Ticks from the coming tick to the tick of the last approval, if every review passes."""
    ready = sorted([0] * sum(map(len, team.reviews.values())) +  # waiting for review now
                   [{"open": 2, "claimed": 1, "changes": 1}[t.status] for t in team.tasks.values()
                    if t.status in ("open", "claimed", "changes")])
    per_tick, tick, used = max(1, len(team.reviews)), 0, 0
    for at in ready:  # reviews in the order changes arrive, `per_tick` a tick
        if at > tick:
            tick, used = at, 0
        elif used == per_tick:
            tick, used = tick + 1, 0
        used += 1
    return tick
