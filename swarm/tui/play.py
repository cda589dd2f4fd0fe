"""Playing an agent yourself: its turn's prompt and a form built from the turn's JSON schema.

`actions_of(schema)` reads a turn's schema (`wire_schema`: the action union narrowed to this tick's choices)
as the actions a person may take and their fields: a field with a fixed set of values (an enum: the names
valid now) is a menu, a string a text box, a number a number box, a list of strings one line per item.
`value_of` turns what the form holds into the turn's value, checked as the model's answer would be: the
schema's type decodes it (lengths, ranges, required fields), and a menu's value must be one of its options.
`PlayScreen` shows the prompt and the form, and closes with the value, or with a `NoAction` when the person
gives the agent back to its model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

import msgspec
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Select, SelectionList, Static, TextArea

from swarm.model import NoAction
from swarm.tui.data import Asked

GIVEN_BACK = "the player gave the agent back to its model"


@dataclass(frozen=True)
class FieldSpec:
    """One field of an action. `kind`: choice (one of `options`), choices (several of them), text, integer,
    number, flag (true/false), lines (a list of strings, one per line) or json (anything else, typed as JSON)."""

    name: str
    kind: str
    required: bool
    description: str = ""
    options: tuple[Any, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None


@dataclass(frozen=True)
class ActionSpec:
    """One action a turn may answer with: its `tag` (the JSON "type" value; None when the schema has no tag),
    a name to show, what it does, and its fields (the tag left out)."""

    tag: str | None
    name: str
    description: str
    fields: tuple[FieldSpec, ...]


def actions_of(schema: dict) -> list[ActionSpec]:
    """The actions of a turn's JSON schema: one per option of a union, or the one object it describes."""
    defs = schema.get("$defs", {})
    root = _resolve(schema, defs)
    options = root.get("anyOf") or root.get("oneOf") or [root]
    return [_action(_resolve(o, defs), defs) for o in options]


def _resolve(node: Any, defs: dict) -> dict:
    while isinstance(node, dict) and "$ref" in node:
        node = defs[node["$ref"].rsplit("/", 1)[-1]]
    return node if isinstance(node, dict) else {}


def _action(node: dict, defs: dict) -> ActionSpec:
    props = node.get("properties", {})
    tag_node = _resolve(props.get("type"), defs)
    tag = (tag_node.get("enum") or [tag_node.get("const")])[0] if tag_node else None
    required = set(node.get("required", ()))
    fields = tuple(_field(name, _resolve(p, defs), name in required, defs)
                   for name, p in props.items() if not (name == "type" and tag is not None))
    return ActionSpec(tag, str(tag or node.get("title", "answer")), node.get("description", ""), fields)


def _field(name: str, node: dict, required: bool, defs: dict) -> FieldSpec:
    description = node.get("description", "")
    options = [_resolve(o, defs) for o in node.get("anyOf", ())]
    if options and any(o.get("type") == "null" for o in options):  # an optional value: the non-null part
        rest = [o for o in options if o.get("type") != "null"]
        if len(rest) == 1:
            inner = _field(name, rest[0], False, defs)
            return inner if inner.description or not description else replace(inner, description=description)
    if "enum" in node:
        return FieldSpec(name, "choice", required, description, tuple(node["enum"]))
    kind = node.get("type")
    if kind == "string":
        return FieldSpec(name, "text", required, description, max_length=node.get("maxLength"))
    if kind in ("integer", "number"):
        return FieldSpec(name, kind, required, description, minimum=node.get("minimum"),
                         maximum=node.get("maximum"))
    if kind == "boolean":
        return FieldSpec(name, "flag", required, description)
    if kind == "array":
        items = _resolve(node.get("items", {}), defs)
        if "enum" in items:
            return FieldSpec(name, "choices", required, description, tuple(items["enum"]))
        if items.get("type") == "string":
            return FieldSpec(name, "lines", required, description, max_length=items.get("maxLength"))
    return FieldSpec(name, "json", required, description)


def value_of(action: ActionSpec, raw: dict[str, Any], constraint: Any) -> Any:
    """The turn's value from the form: `raw` holds each field as its widget gives it (text, a chosen option or
    None, a list of options, a bool). Raises ValueError saying what is wrong, for the form to show."""
    plain: dict[str, Any] = {} if action.tag is None else {"type": action.tag}
    for f in action.fields:
        value = _parse(f, raw.get(f.name))
        if value is None:
            if f.required:
                raise ValueError(f"{f.name}: {'choose one' if f.kind == 'choice' else 'required'}")
            continue
        plain[f.name] = value
    target = getattr(constraint, "type", constraint)  # a Narrowed constraint decodes into its type
    try:
        return msgspec.convert(plain, target)
    except msgspec.ValidationError as e:
        raise ValueError(str(e).replace("Object", action.name, 1)) from None


def _parse(f: FieldSpec, raw: Any) -> Any:
    """One field's value from its widget, None when it is left empty."""
    if f.kind == "flag":
        return bool(raw)
    if f.kind == "choice":
        if raw is None or raw is Select.NULL:
            return None
        if raw not in f.options:
            raise ValueError(f"{f.name}: {raw!r} is not one of the choices")
        return raw
    if f.kind == "choices":
        chosen = list(raw or [])
        if any(c not in f.options for c in chosen):
            raise ValueError(f"{f.name}: only the listed choices")
        return chosen or None
    text = "" if raw is None else str(raw).strip()
    if not text:
        return None
    if f.kind == "text":
        return text
    if f.kind == "lines":
        return [line.strip() for line in text.splitlines() if line.strip()]
    parse, what = {"integer": (int, "an integer"), "number": (float, "a number")}.get(f.kind, (json.loads, "JSON"))
    try:
        return parse(text)
    except ValueError:
        raise ValueError(f"{f.name}: {text!r} is not {what}") from None


def hint(f: FieldSpec) -> str:
    """A field's label: its name, what it is, and its limits."""
    limits = []
    if f.minimum is not None or f.maximum is not None:
        limits.append(f"{_num(f.minimum)}..{_num(f.maximum)}")
    if f.max_length is not None and f.kind in ("text", "lines"):
        limits.append(f"at most {f.max_length} characters" + (" a line" if f.kind == "lines" else ""))
    if f.kind == "lines":
        limits.append("one per line")
    if not f.required:
        limits.append("optional")
    text = f.name + (f": {f.description}" if f.description else "")
    return text + (f" ({', '.join(limits)})" if limits else "")


def _num(x: float | None) -> str:
    return "" if x is None else f"{x:g}"


class PlayScreen(ModalScreen[Any]):
    """A played agent's turn: the prompt, and a form for the answer. Closes with the turn's value (Act), or a
    `NoAction` (Give back: the agent returns to its model, this turn waits)."""

    BINDINGS = [Binding("ctrl+s", "act", "Act"), Binding("escape", "scroll_prompt", "Prompt", show=False)]

    def __init__(self, asked: Asked) -> None:
        super().__init__()
        self.asked = asked
        self.actions = actions_of(asked.schema)
        self.current = self.actions[0]

    def compose(self) -> ComposeResult:
        a = self.asked
        with Vertical(id="play"):
            yield Label(f"You play {a.agent}: its {a.kind} turn at tick {a.tick}", id="play-title")
            with VerticalScroll(id="play-prompt"):
                yield Static(_prompt_text(a.messages), markup=False)
            if len(self.actions) > 1:
                yield Select([(f"{x.name}: {x.description}" if x.description else x.name, i)
                              for i, x in enumerate(self.actions)], value=0, allow_blank=False, id="play-action")
            else:
                yield Label(f"{self.current.name}: {self.current.description}", id="play-action-only")
            yield Vertical(id="play-fields")
            yield Static("", id="play-error")
            with Horizontal(id="play-buttons"):
                yield Button("Act", id="play-act", variant="primary")
                yield Button("Give back", id="play-release")

    def on_mount(self) -> None:
        self._show_fields()
        self.query_one("#play-prompt").scroll_end(animate=False)  # the newest situation is at the end
        self.query_one("#play-action" if len(self.actions) > 1 else "#play-act").focus()

    def _show_fields(self) -> None:
        box = self.query_one("#play-fields", Vertical)
        box.remove_children()
        widgets = []
        for f in self.current.fields:
            widgets += [Label(hint(f), classes="play-label"), _widget(f)]
        box.mount_all(widgets)
        self.query_one("#play-error", Static).update("")

    @on(Select.Changed, "#play-action")
    def _chose(self, event: Select.Changed) -> None:
        if isinstance(event.value, int) and self.actions[event.value] is not self.current:
            self.current = self.actions[event.value]
            self._show_fields()

    def raw(self) -> dict[str, Any]:
        """What each of the current action's fields holds, as `value_of` takes it."""
        out: dict[str, Any] = {}
        for f in self.current.fields:
            w = self.query_one(f"#field-{f.name}")
            out[f.name] = (w.selected if isinstance(w, SelectionList) else w.text if isinstance(w, TextArea)
                           else w.value)
        return out

    @on(Button.Pressed, "#play-act")
    @on(Input.Submitted)
    def action_act(self) -> None:
        try:
            value = value_of(self.current, self.raw(), self.asked.constraint)
        except ValueError as e:
            self.query_one("#play-error", Static).update(f"not yet: {e}")
            return
        self.dismiss(value)

    @on(Button.Pressed, "#play-release")
    def give_back(self) -> None:
        self.dismiss(NoAction(GIVEN_BACK))

    def action_scroll_prompt(self) -> None:
        self.query_one("#play-prompt").focus()


def _widget(f: FieldSpec):
    wid = f"field-{f.name}"
    if f.kind == "choice":
        return Select([(str(o), o) for o in f.options], allow_blank=True, prompt=f"choose {f.name}", id=wid)
    if f.kind == "choices":
        return SelectionList(*((str(o), o) for o in f.options), id=wid)
    if f.kind == "flag":
        return Checkbox(f.name, id=wid)
    if f.kind == "lines":
        return TextArea(id=wid, classes="play-lines")
    kind = {"integer": "integer", "number": "number"}.get(f.kind, "text")
    return Input(placeholder=f.description or f.name, type=kind, id=wid,
                 max_length=f.max_length if f.kind == "text" and f.max_length else 0)


def _prompt_text(messages: list[dict[str, str]]) -> str:
    return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in messages)
