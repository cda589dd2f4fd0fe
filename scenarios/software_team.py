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
`sim.state["artifacts"]`.

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

import math
import random
import re
import typing
from collections import Counter
from typing import Annotated, Literal

import msgspec

from swarm import Persona
from swarm.agents.actions import Action, Give, Insight, Move, PlanUpdate, Say, Use, Wait, narrow
from swarm.scenarios._phrasing import Grammar

MAIN_METRIC = "tasks_completed"  # the figure benchmarks/scenarios.py compares across policies
PARTS = ("api", "ui", "database", "worker", "docs")
AREAS = {"backend": ("api", "database", "worker"), "frontend": ("ui", "docs"), "full-stack": PARTS}
KINDS = ("spec", "design", "task list", "change", "review", "release notes")

Part = Literal["api", "ui", "database", "worker", "docs"]
TaskId = Annotated[str, msgspec.Meta(min_length=1, max_length=8)]
Doc = Annotated[str, msgspec.Meta(min_length=1, max_length=240)]
Note = Annotated[str, msgspec.Meta(min_length=1, max_length=160)]


class WriteSpec(Action, tag="write_spec"):
    """The PM's spec of the requested feature: what it must do."""

    text: Annotated[Doc, msgspec.Meta(description="the spec")]


class Design(Action, tag="design"):
    """The architect's design: the components the feature is built from."""

    text: Annotated[Doc, msgspec.Meta(description="the design")]


class Breakdown(Action, tag="breakdown"):
    """The architect's task list: one task per part of the design."""

    parts: Annotated[list[Part], msgspec.Meta(min_length=1, max_length=5, description="one line per task")]


class Claim(Action, tag="claim"):
    """Take an open task to implement it."""

    task: Annotated[TaskId, msgspec.Meta(description="the task's id")]


class Implement(Action, tag="implement"):
    """Submit the change for a claimed task, with a change note for the reviewer."""

    task: Annotated[TaskId, msgspec.Meta(description="your task's id")]
    change: Annotated[Note, msgspec.Meta(description="what you changed")]


class Review(Action, tag="review"):
    """QA: approve a submitted change, or ask for changes."""

    task: Annotated[TaskId, msgspec.Meta(description="the task under review")]
    verdict: Literal["approve", "request_changes"]
    notes: Annotated[Note, msgspec.Meta(description="what is good or missing")]


class Release(Action, tag="release"):
    """The PM's release notes, once every task is approved."""

    notes: Annotated[Note, msgspec.Meta(description="what the release brings")]


# -- the feature --------------------------------------------------------------------------------

FEATURES = {  # verb: (what users want to do with the object, the parts it always needs)
    "export": ("export {obj} as CSV", ("api", "worker", "ui")),
    "search": ("search {obj} by keyword", ("api", "database", "ui")),
    "bulk-edit": ("bulk-edit {obj}", ("api", "database", "ui")),
    "archive": ("archive old {obj} automatically", ("worker", "database", "ui")),
    "share": ("share {obj} by link", ("api", "database", "ui")),
    "digest": ("get a weekly email digest of {obj}", ("worker", "database")),
    "tag": ("tag {obj} with labels", ("database", "api", "ui")),
    "import": ("import {obj} from spreadsheets", ("api", "worker", "ui")),
    "alerts": ("get alerts when {obj} change", ("worker", "api", "database")),
}
OBJECTS = ("invoices", "orders", "customer notes", "products", "support tickets", "projects", "contacts", "shipments",
           "calendars")
TASK_TITLES = {"api": "API endpoint to {what}", "ui": "UI on the {obj} page to {what}",
               "database": "store the history of {obj} {verb} runs", "worker": "background job to {what}",
               "docs": "help article on how to {what}"}
LABELS = {"api": "API", "ui": "UI", "database": "Database", "worker": "Background-job", "docs": "Docs"}
PART_CUES = {  # the words that say a part is needed, in requests, specs and designs alike
    "api": r"\bAPI\b|endpoint", "ui": r"button|\bpage\b|\bscreen\b",
    "database": r"history|saved|stored|database|table", "worker": r"background|nightly|\bjob\b",
    "docs": r"help article|documented|\bdocs\b",
}
PART_RE = {p: re.compile(c, re.I) for p, c in PART_CUES.items()}


def parts_in(text: str) -> list[str]:
    """The parts a request, spec or design asks for, in the canonical order."""
    return [p for p in PARTS if PART_RE[p].search(text)]


REQUEST = Grammar({  # how a request reaches the team: its clauses carry the part cues
    "request": ["{who} asks to {what}: {clauses}.", "{who} wants to {what}, {clauses}.",
                "Users want to {what}. {who} says {clauses}.", "{who} keeps hearing users want to {what}, {clauses}."],
    "who": ["Sales", "Support", "Our biggest customer", "The enterprise team", "A trial customer", "Customer success"],
    "api": ["their scripts need an API for it", "with an endpoint their tools can call",
            "and it must work through the API"],
    "ui": ["with a button on the {obj} page", "from a new screen in the app", "right on the {obj} page"],
    "database": ["keeping a history of past runs", "with results saved for later", "stored so people can find them"],
    "worker": ["running in the background for big accounts", "as a nightly job", "without blocking anyone (a job)"],
    "docs": ["and a help article explaining it", "documented for admins", "with docs for new users"],
})

MANAGER = Grammar({  # the PM: outcomes, scope, plain words
    "spec": ["{open} {what}. {must} {clauses}. {done}", "{open} users can {what}. {must} {clauses}. {done}"],
    "open": ["Spec:", "Goal:", "Feature:", "What we ship:", "Spec for v1:"],
    "must": ["Needs", "Scope:", "It must have", "In scope:", "Must include"],
    "api": ["a public API endpoint", "API access for scripts", "an endpoint integrators can call"],
    "ui": ["a button on the {obj} page", "a clear screen in the app", "an entry point on the {obj} page"],
    "database": ["a saved history of each run", "results stored for 90 days", "a history users can revisit"],
    "worker": ["big runs in the background", "a nightly job for large accounts", "background processing"],
    "docs": ["a help article for admins", "docs for the support team", "documented steps for new users"],
    "done": ["Done when a customer can do it end to end.", "Success: fewer tickets asking for this.",
             "Ship behind a flag first.", "Keep v1 small.", "Measure adoption after two weeks."],
    "release": ["Shipped: users can now {what}. {thanks}", "{what_cap} is live for everyone. {thanks}",
                "Released {what_short}: {count} tasks, all reviewed. {thanks}",
                "Now live: {what}. {count} changes, every one approved. {thanks}"],
    "thanks": ["Thanks, team!", "Great work, everyone.", "Tell customers!", "Nice job on the reviews.", ""],
    "insight": ["We ship faster when the spec names every part up front.",
                "Reviews catch gaps early; worth the extra round.",
                "Small tasks move; the {stuck} ones wait on review.",
                "The team is busy on {count} tasks; keep scope fixed."],
    "step_pm": ["write a spec that names every part", "keep scope fixed until release",
                "write the release notes once all is approved", "answer questions fast"],
})

ENGINEER = Grammar({  # architect, engineers and QA: terse, concrete, technical
    "design": ["{open} {components}. {risk}", "{open} {components}, {risk_tail}"],
    "open": ["Design:", "Plan:", "Approach:", "Architecture:", "Proposal:"],
    "api": ["a REST endpoint behind auth", "one new API endpoint, paginated", "an endpoint on the public API"],
    "ui": ["a button plus a status screen", "a new screen reusing our grid component", "a page section with progress"],
    "database": ["a history table keyed by user", "a new database table plus an index", "run history in one table"],
    "worker": ["a background job on the existing queue", "a nightly job with retries", "a job worker that batches"],
    "docs": ["a help article with screenshots", "docs generated from the schema", "a short help article"],
    "risk": ["Main risk: large accounts.", "Watch the query cost.", "Keep it behind a feature flag.",
             "Rate-limit it from day one.", "No new services."],
    "risk_tail": ["minding large accounts.", "watching the query cost.", "all behind a feature flag.",
                  "rate-limited from day one.", "with no new services."],
    # change notes: what was done, then either the tests or a gap the reviewer will catch
    "change": ["{task}: {did}{tail}{end}", "{task} ready: {did}{tail}{end}", "{task} done: {did}{tail}{end}",
               "PR for {task}: {did}{tail}{end}", "{task} up for review: {did}{tail}{end}"],
    "end": ["", "", " Small diff.", " Behind a flag.", " Perf unchanged.", " Changelog updated.", " One file."],
    "did_api": ["added the {path} endpoint {api_how}", "wired {path} into the public API {api_how}",
                "shipped {path} behind auth", "exposed {path} {api_how}"],
    "api_how": ["with paging", "with cursor paging", "returning JSON", "with rate limits", "behind auth"],
    "did_ui": ["added the button and a {ui_bit}", "built the screen with our grid component",
               "put the entry point on the {obj} page", "added a {ui_bit} on the {obj} page"],
    "ui_bit": ["progress bar", "status screen", "confirmation dialog", "help tooltip"],
    "did_database": ["added the history table {db_how}", "migrated the schema for saved runs",
                     "stored each run with its owner", "added a {obj} history table {db_how}"],
    "db_how": ["and an index", "with a rollback script", "keyed by user", "with a retention policy"],
    "did_worker": ["moved the heavy work to a background job", "added a nightly job {job_how}",
                   "queued the work in batches of {batch}", "added a job worker {job_how}"],
    "job_how": ["with retries", "with backoff", "with a dead-letter queue", "that resumes after a crash"],
    "batch": ["100", "250", "500", "1000"],
    "did_docs": ["wrote the help article {doc_how}", "documented the steps for admins", "added docs and an FAQ entry",
                 "wrote a how-to {doc_how}"],
    "doc_how": ["with screenshots", "with a short video", "with examples", "for new users"],
    "tested": ["; unit tests included.", ", with tests for the main and edge cases.", "; tests green.",
               ", covered by new tests.", "; added integration tests.", "; tests pass locally and in CI.",
               ", plus a regression test."],
    "gap_tests": ["; tests to follow.", "; no tests yet.", ", no tests yet, will add.", "; tests to follow tomorrow."],
    "gap_empty": [". TODO: handle the empty case.", "; empty input is a TODO for now.", ". TODO: an empty {obj} list."],
    "gap_scale": ["; untested on large accounts.", ", untested past a few hundred rows.",
                  "; untested with big {obj} sets."],
    "gap_errors": ["; skipped the error path for now.", ", error handling skipped for now.",
                   "; skipped retries on failure."],
    "revision": ["{task}: addressed review, {fix}.", "{task} again: {fix}.", "{task} updated: {fix}, please re-check.",
                 "{task} v2: {fix}.", "Fixed {task}: {fix}; thanks for the catch."],
    "fix_tests": ["added the missing tests", "tests added for the main and edge cases", "wrote the tests QA asked for",
                  "added unit and integration tests"],
    "fix_empty": ["handled the empty case", "empty input now shows a friendly message", "guarded the empty case",
                  "an empty {obj} list now works"],
    "fix_scale": ["load-tested with 100k rows", "batched it and tested on a large account", "checked it at scale",
                  "profiled it on our biggest account"],
    "fix_errors": ["covered the error path with retries", "errors now surface to the user", "handled the failures",
                   "failures now retry and log"],
    # QA: approve with what was checked, or ask for exactly the gap the change note admits
    "approve": ["{ok}: {checked} {check}{extra}.", "{checked} {check}{extra}; {ok_tail}."],
    "ok": ["Approved", "LGTM", "Looks good", "Ship it", "Good to merge", "Nice work"],
    "ok_tail": ["approving", "good to merge", "ship it", "LGTM", "approved"],
    "checked": ["checked", "tried", "verified", "ran through", "poked at", "exercised"],
    "extra": ["", " and the happy path", ", all green", " on staging", ", no regressions", " twice"],
    "check_api": ["the endpoint with bad input", "paging and auth on the endpoint", "the API with a real token",
                  "the endpoint under load"],
    "check_ui": ["the screen on mobile and desktop", "the button with a slow network", "the page with a screen reader",
                 "the flow in three browsers"],
    "check_database": ["the migration on a copy of prod", "the index with a big table", "the history after a rollback",
                       "the schema change both ways"],
    "check_worker": ["the job with a killed worker", "retries on the job", "the job on a large account",
                     "the job's backoff"],
    "check_docs": ["the steps on a fresh account", "every screenshot against the app", "the article's links",
                   "the how-to as a new user"],
    "lead": ["", "Changes requested: ", "Not yet: ", "Blocking: ", "One thing: ", "Almost: "],
    "after": ["", " Then I'll re-check.", " Happy to pair on it.", " Ping me when done.", " Otherwise solid."],
    "ask_tests": ["{lead}{body_tests}{after}"],
    "body_tests": ["please add tests before this merges.", "add unit tests for {task}.", "needs tests first.",
                   "no tests yet, so I can't sign off."],
    "ask_empty": ["{lead}{body_empty}{after}"],
    "body_empty": ["the empty case is still a TODO; handle it.", "handle empty input before merge.",
                   "an empty {obj} list breaks it."],
    "ask_scale": ["{lead}{body_scale}{after}"],
    "body_scale": ["please try it on a large account first.", "untried at scale: run it with 100k rows.",
                   "try it with a large {obj} set first."],
    "ask_errors": ["{lead}{body_errors}{after}"],
    "body_errors": ["the error path is skipped; cover it.", "handle the error path, please.",
                    "what happens on an error? cover that path."],
    "insight": ["Changes without tests come back; write them first.", "{part} tasks are moving fastest.",
                "Review notes name the gap; fix exactly that.", "Claim work in my area first, then help elsewhere."],
    "step_architect": ["design with the parts the spec names", "split the design into one task per part",
                       "keep the design small"],
    "step_engineer": ["claim an open task in my area", "ship each change with tests", "fix review notes quickly"],
    "step_qa": ["review the oldest change first", "send back changes without tests", "approve complete, tested work"],
})
GAPS = {  # how a change note admits a gap (what QA looks for)
    "tests": re.compile(r"tests to follow|no tests yet"), "empty": re.compile(r"TODO"),
    "scale": re.compile(r"untested"), "errors": re.compile(r"skipped"),
}
ASKS = {  # how QA's notes name it (what the engineer fixes)
    "tests": re.compile(r"tests", re.I), "empty": re.compile(r"empty", re.I),
    "scale": re.compile(r"scale|large", re.I), "errors": re.compile(r"error", re.I),
}
GAP_ODDS = 0.4  # a first change with a gap in it


def gap_in(change: str) -> str | None:
    return next((g for g, r in GAPS.items() if r.search(change)), None)


def ask_in(notes: str) -> str:
    return next((g for g, r in ASKS.items() if r.search(notes)), "tests")


# -- the team ---------------------------------------------------------------------------------

ENGINEERS = ("Bo", "Chen", "Dara", "Emil", "Fatou", "Goran", "Hiro", "Ines", "Jett", "Kofi", "Lior", "Maya", "Nils",
             "Oona", "Pia", "Ravi", "Sol")
QAS = ("Quinn", "Rui", "Sade")
TRAITS = ("careful, likes small diffs", "fast, pragmatic", "thorough, writes tests first", "quiet, precise",
          "curious, asks good questions")


def build(sim, agents: int = 5):
    sim.wake_after = None  # handoffs wake the agents that have something to do; no need to ask the rest
    if not 5 <= agents <= 20:
        raise ValueError(f"the software team takes 5 to 20 agents (PM, architect, QA, 2+ engineers), not {agents}")
    sim.world.preamble = ("A product team ships one feature. The PM writes a spec, the architect a design and a "
                          "task list; engineers claim and implement tasks; QA approves each change or requests "
                          "changes. Docs live in the wiki, code in the repo.")
    for place, about in (("team room", "desks and a whiteboard"), ("wiki", "specs and designs"),
                         ("repo", "code and reviews")):
        sim.world.add_place(place, about)
    sim.world.connect("team room", "wiki", minutes=1)
    sim.world.connect("team room", "repo", minutes=1)
    qa_count = max(1, (agents - 2) // 6)
    st = sim.state
    st.update(feature=_feature(random.Random(f"software_team:{sim.seed}")), roles={}, area={}, announced=False,
              artifacts={}, tasks={}, reviews={}, active={}, done_tick=None, released=False,
              stats={"review_rounds": 0, "changes_requested": 0})
    team = [("Priya", "pm"), ("Arjun", "architect"), *((q, "qa") for q in QAS[:qa_count]),
            *((e, "engineer") for e in ENGINEERS[: agents - 2 - qa_count])]
    for i, (name, role) in enumerate(team):
        area = tuple(AREAS)[(i - 2 - qa_count) % len(AREAS)] if role == "engineer" else None
        sim.add_agent(_persona(name, role, TRAITS[i % len(TRAITS)], area), at="team room")
        st["roles"][name] = role
        if role == "engineer":
            st["area"][name] = area
            st["active"][name] = []  # tasks claimed, or sent back by review, in the order they came
        if role == "qa":
            st["reviews"][name] = []
    sim.remove_actions(Say, Move, Give, Use)
    sim.add_actions(WriteSpec, Design, Breakdown, Claim, Implement, Review, Release)
    # Handlers, hooks and metrics read sim.state when they run: loading a checkpoint replaces it.

    @sim.on(WriteSpec)
    def write_spec(world, actor, a):
        st = sim.state
        why = _refuse(st, world, actor, a, "pm", st["announced"] and "spec" not in st["artifacts"],
                      "the spec is already written" if "spec" in st["artifacts"] else "no request yet")
        if why:
            return why
        _publish(st, world, "spec", actor, a.text)
        return _tell(world, "spec", f'{actor} wrote the spec: "{a.text}"', _of_role(st, "architect"), actor)

    @sim.on(Design)
    def design(world, actor, a):
        st = sim.state
        arts = st["artifacts"]
        why = _refuse(st, world, actor, a, "architect", "spec" in arts and "design" not in arts,
                      "the design is already written" if "design" in arts else "there is no spec yet")
        if why:
            return why
        _publish(st, world, "design", actor, a.text)
        return _tell(world, "design", f'{actor} posted the design: "{a.text}" Next: break it into tasks.',
                     [actor], actor)

    @sim.on(Breakdown)
    def breakdown(world, actor, a):
        st = sim.state
        tasks, feature = st["tasks"], st["feature"]
        why = _refuse(st, world, actor, a, "architect", "design" in st["artifacts"] and not tasks,
                      "the tasks are already listed" if tasks else "write the design first")
        if why:
            return why
        what = {"what": feature["what"], "obj": feature["obj"], "verb": feature["verb"]}
        for part in dict.fromkeys(a.parts):  # each part once, in the order given
            tid = f"T{len(tasks) + 1}"
            tasks[tid] = {"id": tid, "part": part, "title": TASK_TITLES[part].format(**what), "status": "open",
                          "owner": None, "reviewer": None, "round": 0, "change": "", "notes": ""}
        text = _listing(st, list(tasks))
        _publish(st, world, "task list", actor, text)
        return _tell(world, "tasks", f"{actor} listed the tasks: {text}. All open.", _of_role(st, "engineer"), actor)

    @sim.on(Claim)
    def claim(world, actor, a):
        st = sim.state
        task, mine = st["tasks"].get(a.task), st["active"].get(actor)
        why = _refuse(st, world, actor, a, "engineer", task is not None and task["status"] == "open" and not mine,
                      f"finish {mine[0]} first" if mine else
                      f"{a.task} is not open; open tasks: {', '.join(_open_tasks(st)) or 'none'}")
        if why:
            return why
        task.update(status="claimed", owner=actor)
        mine.append(a.task)
        return _tell(world, "claim", f"{actor} claims {a.task}: {task['title']}.", [actor], actor)

    @sim.on(Implement)
    def implement(world, actor, a):
        st = sim.state
        task, mine = st["tasks"].get(a.task), st["active"].get(actor)
        why = _refuse(st, world, actor, a, "engineer", mine is not None and a.task in mine,
                      f"{a.task} is not yours to implement; yours: {', '.join(mine or []) or 'none'}")
        if why:
            return why
        task["round"] += 1
        reviewer = min(st["reviews"], key=lambda q: (len(st["reviews"][q]), q))  # the least busy QA
        task.update(status="review", reviewer=reviewer, change=a.change)
        st["reviews"][reviewer].append(a.task)
        mine.remove(a.task)
        _publish(st, world, "change", actor, a.change, f"change {a.task} r{task['round']}", task=a.task)
        return _tell(world, "change", f'{actor} submits {a.task} ({task["part"]}) for review: "{a.change}"',
                     [reviewer], actor)

    @sim.on(Review)
    def review(world, actor, a):
        st = sim.state
        tasks = st["tasks"]
        task, waiting = tasks.get(a.task), st["reviews"].get(actor, [])
        why = _refuse(st, world, actor, a, "qa", task is not None and a.task in waiting,
                      f"{a.task} is not waiting for your review; yours: {', '.join(waiting) or 'none'}")
        if why:
            return why
        waiting.remove(a.task)
        st["stats"]["review_rounds"] += 1
        _publish(st, world, "review", actor, a.notes, f"review {a.task} r{task['round']}", task=a.task,
                 verdict=a.verdict)
        owner = task["owner"]
        if a.verdict == "request_changes":
            st["stats"]["changes_requested"] += 1
            task.update(status="changes", notes=a.notes)
            st["active"][owner].append(a.task)
            return _tell(world, "review", f'{actor} requests changes on {a.task}: "{a.notes}"', [owner], actor)
        task.update(status="approved", notes=a.notes)
        events = [_tell(world, "review", f'{actor} approves {a.task}: "{a.notes}" Open tasks: '
                                         f"{_listing(st, _open_tasks(st))}.", [owner], actor)]
        if all(t["status"] == "approved" for t in tasks.values()):
            st["done_tick"] = world.tick
            events.append(_tell(world, "done", f"All {len(tasks)} tasks for '{st['feature']['what']}' are "
                                               "approved. Ready to release.", list(st["roles"]), importance=8.0))
        return events

    @sim.on(Release)
    def release(world, actor, a):
        st = sim.state
        why = _refuse(st, world, actor, a, "pm", st["done_tick"] is not None and not st["released"],
                      "already released" if st["released"] else "not every task is approved yet")
        if why:
            return why
        st["released"] = True
        _publish(st, world, "release notes", actor, a.notes)
        return _tell(world, "release", f'{actor} releases the feature: "{a.notes}"', [], actor)

    @sim.every_tick
    def tracker(sim, events):
        """The request on the first tick; then a reminder to whoever has work that nothing this tick told them
        about (an agent acts only when it observes something)."""
        st, world = sim.state, sim.world
        if not st["announced"]:
            st["announced"] = True
            return _tell(world, "request", f"New feature request. {st['feature']['request']}", list(st["roles"]),
                         importance=7.0)
        told = {a for e in events for a in e.audience or ()}
        return [_tell(world, "reminder", text, [who], importance=4.0) for who in st["roles"]
                if who not in told and (text := _reminder(st, who)) is not None]

    @sim.actions_for
    def choices(sim, agent):
        return [*_choices(sim.state, agent.id), Wait]

    @sim.focus
    def next_step(sim, agent):
        """What the agent has to do now, as the tracker would remind them: it closes the agent's prompt."""
        return _reminder(sim.state, agent.id) if agent.id in sim.state["roles"] else None

    @sim.next_act
    def handoff(sim, agent):
        """Work with nothing to do now waits for a handoff: see `_handoff`."""
        return _handoff(sim.state, agent.id)

    for name, fn in METRICS.items():
        sim.metric(name)(fn)


def _handoff(st: dict, me: str) -> float | None:
    """Idle ticks of a member with nothing to do now, until the handoff it waits for, if every step on the
    way is taken on the first tick it can be (the tracker reminds whoever holds the next step, so they act
    the tick after): the spec, the design and the task list one tick each; a task claimed, implemented and
    reviewed (QA reviews one change a tick); the last approval wakes everyone. Nobody acts after the
    release. A lower bound where a review sends work back."""
    if st["released"]:
        return math.inf
    role, arts, tasks = st["roles"].get(me), st["artifacts"], st["tasks"]
    if not tasks:  # the breakdown comes after the spec and the design, and every engineer hears of it
        listed = 2 - ("spec" in arts) - ("design" in arts)  # ticks from the coming one to the task list
        return {"architect": 1, "engineer": listed + 1, "qa": listed + 3}.get(role)  # the PM specs it first
    if role == "qa" and any(st["active"].values()):
        return 1  # an engineer holding work submits it in the coming tick
    if role == "qa" and any(t["status"] == "open" for t in tasks.values()):
        return 3  # claimed, implemented, then here
    if role == "engineer":
        queued = [k for waiting in st["reviews"].values() for k, tid in enumerate(waiting)
                  if tasks[tid]["owner"] == me]
        if queued:
            return 1 + min(queued)  # the review of its change tells it the verdict
    return _last_approval(st) + 1


def _last_approval(st: dict) -> int:
    """Ticks from the coming tick to the tick of the last approval, if every review passes."""
    ready = sorted([0] * sum(map(len, st["reviews"].values())) +  # waiting for review now
                   [{"open": 2, "claimed": 1, "changes": 1}[t["status"]] for t in st["tasks"].values()
                    if t["status"] in ("open", "claimed", "changes")])
    per_tick, tick, used = max(1, len(st["reviews"])), 0, 0
    for at in ready:  # reviews in the order changes arrive, `per_tick` a tick
        if at > tick:
            tick, used = at, 0
        elif used == per_tick:
            tick, used = tick + 1, 0
        used += 1
    return tick


def _of_role(st: dict, *roles: str) -> list[str]:
    return [a for a, r in st["roles"].items() if r in roles]


def _publish(st: dict, world, kind: str, author: str, text: str, name: str | None = None, **data) -> str:
    """An artifact: a thing in the wiki (documents) or the repo (changes, reviews), its text in the state."""
    name = name or kind
    world.add_thing(name, at="repo" if kind in ("change", "review") else "wiki", description=kind, portable=False)
    st["artifacts"][name] = {"kind": kind, "author": author, "tick": world.tick, "text": text, **data}
    return name


def _tell(world, kind: str, text: str, audience: list[str], actor: str | None = None, importance: float = 6.0):
    return world.event(kind, text, actor=actor, place=world.place_of(actor) if actor else None,
                       audience=audience, importance=importance)


def _refuse(st: dict, world, actor: str, action, role: str, ok: bool, why: str):
    """A fail event if `actor` is not the `role` or the action is not `ok` now (saying `why`), else None."""
    if st["roles"].get(actor) != role:
        return world.fail(actor, action, f"only the {role} can do that")
    return None if ok else world.fail(actor, action, why)


def _open_tasks(st: dict) -> list[str]:
    return [t for t, task in st["tasks"].items() if task["status"] == "open"]


def _listing(st: dict, ids: list[str]) -> str:
    tasks = st["tasks"]
    return "; ".join(f"{t} ({tasks[t]['part']}): {tasks[t]['title']}" for t in ids) or "none"


def _coverage(sim) -> float:
    listed = {t["part"] for t in sim.state["tasks"].values()}
    needed = sim.state["feature"]["parts"]
    return round(sum(p in listed for p in needed) / len(needed), 4)


METRICS = {
    "tasks_total": lambda sim: len(sim.state["tasks"]),
    "tasks_completed": lambda sim: sum(t["status"] == "approved" for t in sim.state["tasks"].values()),
    "review_rounds": lambda sim: sim.state["stats"]["review_rounds"],
    "changes_requested": lambda sim: sim.state["stats"]["changes_requested"],
    "artifacts": lambda sim: {k: sum(a["kind"] == k for a in sim.state["artifacts"].values()) for k in KINDS},
    "done": lambda sim: sim.state["done_tick"] is not None,
    "ticks_to_done": lambda sim: sim.state["done_tick"],  # the tick of the last approval (None before)
    "scope_coverage": _coverage,  # the share of the parts the feature needs that the task list covers
    "released": lambda sim: sim.state["released"],
}


def _feature(rng: random.Random) -> dict:
    verb = rng.choice(list(FEATURES))
    obj = rng.choice(OBJECTS)
    what, parts = FEATURES[verb][0].format(obj=obj), list(FEATURES[verb][1])
    extras = [p for p in PARTS if p not in parts]
    parts += [p for p in extras if rng.random() < (0.5 if p == "docs" else 0.2)]
    parts = [p for p in PARTS if p in parts]
    request = _say(REQUEST, "{request}", rng, {"clauses": _series(rng.sample(parts, len(parts)))}, what=what, obj=obj)
    return {"verb": verb, "obj": obj, "what": what, "parts": parts, "request": request}


def _persona(name: str, role: str, traits: str, area: str | None) -> Persona:
    if role == "pm":
        return Persona(name=name, role="product manager", traits=traits, style="manager",
                       goals=("turn the request into a clear spec", "release the feature once it is approved"))
    if role == "architect":
        return Persona(name=name, role="software architect", traits=traits, style="engineer",
                       goals=("design the feature simply and split it into tasks",))
    if role == "qa":
        return Persona(name=name, role="QA engineer", traits=traits, style="engineer",
                       goals=("approve only complete, tested changes",))
    return Persona(name=name, role=f"{area} engineer", traits=traits, style="engineer",
                   goals=("implement tasks cleanly, with tests",))


def _choices(st: dict, me: str) -> list[type]:
    """The actions `me` may take now (besides Wait), task ids narrowed to those it may name."""
    role, tasks, arts = st["roles"].get(me), st["tasks"], st["artifacts"]
    if role == "pm":
        if st["announced"] and "spec" not in arts:
            return [WriteSpec]
        return [Release] if st["done_tick"] is not None and not st["released"] else []
    if role == "architect":
        if "spec" in arts and "design" not in arts:
            return [Design]
        return [Breakdown] if "design" in arts and not tasks else []
    if role == "engineer":
        mine = st["active"][me]
        if mine:
            return [narrow(Implement, "task", tuple(mine))]
        open_ = tuple(t for t, task in tasks.items() if task["status"] == "open")
        return [narrow(Claim, "task", open_)] if open_ else []
    if role == "qa" and st["reviews"][me]:
        return [narrow(Review, "task", tuple(st["reviews"][me]))]
    return []


def _reminder(st: dict, me: str) -> str | None:
    """What `me` still has to do, as the tracker would remind them (None: nothing)."""
    role, tasks, arts, feature = st["roles"][me], st["tasks"], st["artifacts"], st["feature"]
    if role == "pm" and "spec" not in arts:
        return f"The request still needs a spec: {feature['request']}"
    if role == "pm" and st["done_tick"] is not None and not st["released"]:
        return f"Every task for '{feature['what']}' is approved; the release notes are yours."
    if role == "architect" and "spec" in arts and "design" not in arts:
        return f'The spec waits for your design: "{arts["spec"]["text"]}"'
    if role == "architect" and "design" in arts and not tasks:
        return f'Break your design into tasks, one per part the request needs: {feature["request"]}'
    if role == "engineer":
        mine = st["active"][me]
        if mine:
            t = tasks[mine[0]]
            asked = f' Review notes: "{t["notes"]}"' if t["status"] == "changes" else ""
            return f"{t['id']} is yours: {t['title']}.{asked}"
        open_ = [t for t, task in tasks.items() if task["status"] == "open"]
        return f"Open tasks: {_listing(st, open_)}." if open_ else None
    if role == "qa" and st["reviews"][me]:
        t = tasks[st["reviews"][me][0]]
        more = f" ({len(st['reviews'][me]) - 1} more after it)" if len(st["reviews"][me]) > 1 else ""
        return f'Waiting for your review: {t["id"]} by {t["owner"]}: "{t["change"]}"{more}'
    return None


# -- the scripted team (the teacher for demonstrations) -------------------------------------------


def policy(turn):
    """Each role does the next thing its prompt asks for: the PM specs the request's parts, the architect
    designs them and lists one task per part, engineers claim open tasks in their area and implement them
    (sometimes leaving a gap), QA requests changes for a change note that admits a gap and approves the
    rest, engineers fix exactly what the review notes name, and the PM writes the release notes."""
    rng = random.Random(turn.seed)
    st, me, kind = turn.sim.state, turn.agent.id, turn.request.kind
    role, feature, tasks, arts = st["roles"].get(me), st["feature"], st["tasks"], st["artifacts"]
    lines = MANAGER if role == "pm" else ENGINEER
    if kind == "reflect":
        return Insight(text=_insight(st, lines, rng))
    if kind == "plan":
        rule = lines.rules[f"step_{role}"]
        return PlanUpdate(steps=[lines.say(s, rng) for s in rng.sample(rule, min(len(rule), rng.randint(2, 3)))])
    types = {t.__struct_config__.tag: t for t in typing.get_args(turn.request.schema) or (turn.request.schema,)}
    slots = {"obj": feature["obj"], "what": feature["what"]}
    if "write_spec" in types:
        clauses = _series(parts_in(feature["request"]))
        return WriteSpec(text=_fit(MANAGER, "{spec}", 240, rng, {"clauses": clauses}, **slots))
    if "design" in types:
        components = _series(parts_in(arts["spec"]["text"]))
        return Design(text=_fit(ENGINEER, "{design}", 240, rng, {"components": components}))
    if "breakdown" in types:
        return Breakdown(parts=parts_in(arts["design"]["text"]) or ["api"])
    if "claim" in types:
        open_ = [t for t, task in tasks.items() if task["status"] == "open"]
        preferred = [t for t in open_ if tasks[t]["part"] in AREAS[st["area"][me]]] or open_
        return types["claim"](task=rng.choice(preferred))
    if "implement" in types:
        t = tasks[st["active"][me][0]]
        return types["implement"](task=t["id"], change=_change(t, feature, rng))
    if "review" in types:
        t = tasks[st["reviews"][me][0]]
        gap = gap_in(t["change"])
        if gap:
            return types["review"](task=t["id"], verdict="request_changes",
                                   notes=ENGINEER.say("{ask_" + gap + "}", rng, task=t["id"], obj=feature["obj"]))
        return types["review"](task=t["id"], verdict="approve",
                               notes=_say(ENGINEER, "{approve}", rng, {"check": f"{{check_{t['part']}}}"}))
    if "release" in types:
        what = feature["what"]
        return Release(notes=_fit(MANAGER, "{release}", 160, rng, None, what=what, what_cap=what[0].upper() + what[1:],
                                  what_short=what.split(" ")[0] + " " + feature["obj"], count=str(len(tasks))))
    return Wait()


def _change(t: dict, feature: dict, rng: random.Random) -> str:
    """A change note: a revision fixes what the review asked for; a first change has a gap now and then."""
    slots = {"task": t["id"], "obj": feature["obj"],
             "path": f"/{feature['obj'].replace(' ', '-')}/{feature['verb']}"}
    if t["status"] == "changes":
        return _say(ENGINEER, "{revision}", rng, {"fix": f"{{fix_{ask_in(t['notes'])}}}"}, **slots)[:160]
    tail = "{tested}" if rng.random() >= GAP_ODDS else f"{{gap_{rng.choice(list(GAPS))}}}"
    return _say(ENGINEER, "{change}", rng, {"did": f"{{did_{t['part']}}}", "tail": tail}, **slots)[:160]


def _say(lines: Grammar, template: str, rng: random.Random, rules: dict[str, str] | None = None, **slots) -> str:
    """`template` expanded with one-off rules, each a template itself (e.g. "did": "{did_api}")."""
    return (lines.extend({name: [t] for name, t in rules.items()}) if rules else lines).say(template, rng, **slots)


def _insight(st: dict, lines: Grammar, rng: random.Random) -> str:
    tasks = st["tasks"].values()
    parts = Counter(t["part"] for t in tasks if t["status"] == "approved").most_common(1)
    stuck = Counter(t["part"] for t in tasks if t["status"] == "review").most_common(1)
    return lines.say("{insight}", rng, part=LABELS[parts[0][0]] if parts else "API",
                     stuck=LABELS[stuck[0][0]].lower() if stuck else "big", count=str(len(tasks)))[:200]


def _series(rules: list[str]) -> str:
    """A template naming each rule: "{a}", "{a} and {b}", "{a}, {b} and {c}"."""
    items = ["{" + r + "}" for r in rules] or ["{" + PARTS[0] + "}"]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _fit(lines: Grammar, template: str, limit: int, rng: random.Random, rules: dict[str, str] | None = None,
         **slots) -> str:
    """A line from `template` within `limit` characters (a few tries, then cut at a word)."""
    for _ in range(4):
        text = _say(lines, template, rng, rules, **slots).strip()
        if len(text) <= limit:
            return text
    return text[:limit].rsplit(" ", 1)[0]
