"""Who an agent is: name, role, traits, goals, an optional LoRA adapter and system prompt template."""

from __future__ import annotations

import string

import msgspec

__all__ = ["PLACEHOLDERS", "Persona"]

PLACEHOLDERS = ("name", "role", "traits", "world", "goals", "actions")
ACT_INSTRUCTION = "Stay in character. Each turn, answer with exactly one action as JSON."


class Persona(msgspec.Struct, frozen=True, kw_only=True):
    """A character the base model plays.

    `system_prompt` is a `str.format` template over {name}, {role}, {traits}, {world}, {goals} and {actions}
    (what the actions are and do; appended at the end of a template without it; write literal braces as
    {{ }}); None uses a default. `adapter` names a LoRA adapter registered with the
    engine (None: the base model). `style` names the voice the persona speaks in (a scenario's scripted
    lines are written per style, demonstrations are split by it); a simulation whose model has an adapter
    of that name gives it to personas with no `adapter` of their own. `model` names the simulation's model
    that plays this persona (`Simulation.add_model`; None: the simulation's own `model=`).
    """

    name: str
    role: str = ""
    traits: str = ""
    system_prompt: str | None = None
    adapter: str | None = None
    goals: tuple[str, ...] = ()
    style: str | None = None
    model: str | None = None

    def __post_init__(self):
        if not self.name.strip():
            raise ValueError("a persona needs a non-empty name")
        if isinstance(self.goals, str):
            raise ValueError(f"goals is a tuple of goals, not one string: use goals=({self.goals!r},)")
        if not isinstance(self.goals, tuple):  # a list would make the frozen persona unhashable
            msgspec.structs.force_setattr(self, "goals", tuple(self.goals))
        if self.system_prompt is not None:
            _check_template(self.system_prompt)

    def system_message(self, world: str, instruction: str = ACT_INSTRUCTION, actions: str = "") -> str:
        """The system prompt for this persona in `world` (a description of the setting) with `actions` (what
        the agent can do: `describe_actions`); the default prompt ends with `instruction` (how to answer)."""
        goals = "; ".join(self.goals)
        if self.system_prompt is not None:
            text = self.system_prompt.format(name=self.name, role=self.role, traits=self.traits, world=world,
                                             goals=goals, actions=actions)
            placed = any(field == "actions" for _, field, _, _ in string.Formatter().parse(self.system_prompt))
            return text if placed or not actions else f"{text}\n\n{actions}"
        lines = [f"You are {self.name}" + (f", {self.role}" if self.role else "") + "."]
        if self.traits:
            lines.append(f"Traits: {self.traits}.")
        if goals:
            lines.append(f"Goals: {goals}.")
        if world:
            lines += ["", world]
        if actions:
            lines += ["", actions]
        lines += ["", instruction]
        return "\n".join(lines)


def _check_template(template: str) -> None:
    """Plain {field} placeholders only: a format spec or conversion ({name:>50000000}, {name!r}) could make a
    short template render to megabytes, and attribute or index access ({name.__class__}) could read more than
    the fields; both are refused, as is any unknown field."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as e:  # unbalanced braces
        raise ValueError(f"system_prompt is not a valid template ({e}); write literal braces as {{{{ }}}}") from None
    allowed = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
    for _, field, spec, conversion in parts:
        if field is None:
            continue
        if field not in PLACEHOLDERS:
            raise ValueError(f"unknown placeholder {{{field}}} in system_prompt; use {allowed}, "
                             "and write literal braces as {{ }}")
        if spec or conversion:
            shown = "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise ValueError(f"{shown} in system_prompt: placeholders take no format spec or conversion; "
                             f"write {{{field}}}")
