"""The feature catalogue: what users ask for, of which objects, the parts each feature always needs, the titles of
its tasks, the words that say a part is needed, and how a request reaches the team (`draw`, one per seed). `say`
and `series` expand a grammar's templates for the request's wording and the scripted team's lines alike."""

from __future__ import annotations

import random
import re

from swarm.scenarios._phrasing import Grammar
from swarm.scenarios.software_team.actions import PARTS
from swarm.scenarios.software_team.state import Feature

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


def draw(rng: random.Random) -> Feature:
    """The run's feature: a catalogue entry and an object, sometimes with parts beyond those it always needs
    (a help article more often than the rest), and the request's wording, its clauses in a random order."""
    verb = rng.choice(list(FEATURES))
    obj = rng.choice(OBJECTS)
    what, parts = FEATURES[verb][0].format(obj=obj), list(FEATURES[verb][1])
    extras = [p for p in PARTS if p not in parts]
    parts += [p for p in extras if rng.random() < (0.5 if p == "docs" else 0.2)]
    parts = [p for p in PARTS if p in parts]
    request = say(REQUEST, "{request}", rng, {"clauses": series(rng.sample(parts, len(parts)))}, what=what, obj=obj)
    return Feature(verb, obj, what, parts, request)


def say(lines: Grammar, template: str, rng: random.Random, rules: dict[str, str] | None = None, **slots) -> str:
    """`template` expanded with one-off rules, each a template itself (e.g. "did": "{did_api}")."""
    return (lines.extend({name: [t] for name, t in rules.items()}) if rules else lines).say(template, rng, **slots)


def series(rules: list[str]) -> str:
    """A template naming each rule: "{a}", "{a} and {b}", "{a}, {b} and {c}"."""
    items = ["{" + r + "}" for r in rules] or ["{" + PARTS[0] + "}"]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
