"""Varied lines for scripted characters: a small grammar expander in the manner of Tracery.

A grammar maps rule names to alternatives; `{rule}` inside an alternative expands that rule,
`{slot}` names passed to `say` fill in directly. A few rules with a handful of alternatives each
multiply into thousands of distinct lines, so demonstrations written from them rarely repeat.

    lines = Grammar({"greet": ["hello", "good {time}"], "time": ["morning", "evening"]})
    lines.say("{greet}, {name}!", rng, name="Mira")     # e.g. "good evening, Mira!"
"""

from __future__ import annotations

import random
import re

_SLOT = re.compile(r"\{(\w+)\}")


class Grammar:
    def __init__(self, rules: dict[str, list[str]]):
        empty = [k for k, v in rules.items() if not v]
        if empty:
            raise ValueError(f"rules with no alternatives: {', '.join(empty)}")
        self.rules = rules

    def say(self, template: str, rng: random.Random, depth: int = 0, **slots: str) -> str:
        """Expand `template`: rules pick a random alternative (recursively), slots fill in as given."""
        if depth > 12:
            raise ValueError(f"the grammar recurses too deep expanding {template!r}")

        def fill(m: re.Match) -> str:
            name = m.group(1)
            if name in slots:
                return str(slots[name])
            if name in self.rules:
                return self.say(rng.choice(self.rules[name]), rng, depth + 1, **slots)
            raise KeyError(f"no rule or slot called {name!r} in {template!r}")

        text = _SLOT.sub(fill, template)
        return text[:1].upper() + text[1:] if depth == 0 else text

    def extend(self, rules: dict[str, list[str]]) -> Grammar:
        """A copy with more (or replaced) rules: a persona style's voice over a scenario's common words."""
        return Grammar({**self.rules, **rules})
