"""The scripted team (`--model scripted`, the teacher for demonstrations): each member does the next thing its
prompt asks for, in its role's words (the PM's plain outcomes, the engineers' terse technical notes); a first
change admits a gap now and then, QA asks for exactly that gap, and the revision fixes it."""

from __future__ import annotations

import random
import re
import typing
from collections import Counter

from swarm.agents.actions import Insight, PlanUpdate, Wait
from swarm.scenarios._phrasing import Grammar
from swarm.scenarios.software_team.actions import Breakdown, Design, Release, WriteSpec
from swarm.scenarios.software_team.feature import parts_in, say, series
from swarm.scenarios.software_team.people import AREAS
from swarm.scenarios.software_team.state import Feature, Task, Team, open_tasks

LABELS = {"api": "API", "ui": "UI", "database": "Database", "worker": "Background-job", "docs": "Docs"}

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


def policy(turn):
    """Each role does the next thing its prompt asks for: the PM specs the request's parts, the architect
    designs them and lists one task per part, engineers claim open tasks in their area and implement them
    (sometimes leaving a gap), QA requests changes for a change note that admits a gap and approves the
    rest, engineers fix exactly what the review notes name, and the PM writes the release notes."""
    rng = random.Random(turn.seed)
    team, me, kind = turn.sim.state, turn.agent.id, turn.request.kind
    role, feature, tasks, arts = team.roles.get(me), team.feature, team.tasks, team.artifacts
    lines = MANAGER if role == "pm" else ENGINEER
    if kind == "reflect":
        return Insight(text=_insight(team, lines, rng))
    if kind == "plan":
        rule = lines.rules[f"step_{role}"]
        return PlanUpdate(steps=[lines.say(s, rng) for s in rng.sample(rule, min(len(rule), rng.randint(2, 3)))])
    types = {t.__struct_config__.tag: t for t in typing.get_args(turn.request.schema) or (turn.request.schema,)}
    slots = {"obj": feature.obj, "what": feature.what}
    if "write_spec" in types:
        clauses = series(parts_in(feature.request))
        return WriteSpec(text=_fit(MANAGER, "{spec}", 240, rng, {"clauses": clauses}, **slots))
    if "design" in types:
        components = series(parts_in(arts["spec"].text))
        return Design(text=_fit(ENGINEER, "{design}", 240, rng, {"components": components}))
    if "breakdown" in types:
        return Breakdown(parts=parts_in(arts["design"].text) or ["api"])
    if "claim" in types:
        open_ = open_tasks(team)
        preferred = [t for t in open_ if tasks[t].part in AREAS[team.area[me]]] or open_
        return types["claim"](task=rng.choice(preferred))
    if "implement" in types:
        t = tasks[team.active[me][0]]
        return types["implement"](task=t.id, change=_change(t, feature, rng))
    if "review" in types:
        t = tasks[team.reviews[me][0]]
        gap = gap_in(t.change)
        if gap:
            return types["review"](task=t.id, verdict="request_changes",
                                   notes=ENGINEER.say("{ask_" + gap + "}", rng, task=t.id, obj=feature.obj))
        return types["review"](task=t.id, verdict="approve",
                               notes=say(ENGINEER, "{approve}", rng, {"check": f"{{check_{t.part}}}"}))
    if "release" in types:
        what = feature.what
        return Release(notes=_fit(MANAGER, "{release}", 160, rng, None, what=what, what_cap=what[0].upper() + what[1:],
                                  what_short=what.split(" ")[0] + " " + feature.obj, count=str(len(tasks))))
    return Wait()


def _change(t: Task, feature: Feature, rng: random.Random) -> str:
    """A change note: a revision fixes what the review asked for; a first change has a gap now and then."""
    slots = {"task": t.id, "obj": feature.obj, "path": f"/{feature.obj.replace(' ', '-')}/{feature.verb}"}
    if t.status == "changes":
        return say(ENGINEER, "{revision}", rng, {"fix": f"{{fix_{ask_in(t.notes)}}}"}, **slots)[:160]
    tail = "{tested}" if rng.random() >= GAP_ODDS else f"{{gap_{rng.choice(list(GAPS))}}}"
    return say(ENGINEER, "{change}", rng, {"did": f"{{did_{t.part}}}", "tail": tail}, **slots)[:160]


def _insight(team: Team, lines: Grammar, rng: random.Random) -> str:
    tasks = team.tasks.values()
    parts = Counter(t.part for t in tasks if t.status == "approved").most_common(1)
    stuck = Counter(t.part for t in tasks if t.status == "review").most_common(1)
    return lines.say("{insight}", rng, part=LABELS[parts[0][0]] if parts else "API",
                     stuck=LABELS[stuck[0][0]].lower() if stuck else "big", count=str(len(tasks)))[:200]


def _fit(lines: Grammar, template: str, limit: int, rng: random.Random, rules: dict[str, str] | None = None,
         **slots) -> str:
    """A line from `template` within `limit` characters (a few tries, then cut at a word)."""
    for _ in range(4):
        text = say(lines, template, rng, rules, **slots).strip()
        if len(text) <= limit:
            return text
    return text[:limit].rsplit(" ", 1)[0]
