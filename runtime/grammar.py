"""Constrained decoding: a completion shaped by a msgspec type, a JSON schema, a regex or a choice of strings.

`GrammarCompiler.compile` turns a constraint into an llguidance matcher in its
start state, once per constraint (an LRU cache, also keyed by the grammar text
so equal schemas built anew each tick share one compilation). Each request
gets a copy of that matcher (`GrammarState`) and advances it with every token
it samples; `swarm.runtime.token_mask` masks a whole step's logits with the
matchers at once. Each request also carries a closing path that fits the tokens it
has left (`swarm.runtime.closing`), so its value is complete by `max_tokens`.
"""

from __future__ import annotations

import functools
import json
import types
import typing
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import llguidance as llg
import msgspec

from swarm.runtime.closing import START_SEARCH, Budget, ClosingPlan, ClosingTokens
from swarm.runtime.errors import SchemaError

if TYPE_CHECKING:
    from swarm.runtime.tokenizer import Tokenizer

__all__ = ["CHOICE_KEY", "Choice", "GrammarCompiler", "GrammarState", "JsonSchema", "Narrowed", "Regex",
           "choice_kinds", "closed_json_schema", "narrow_schema"]

# Compact JSON (no whitespace between tokens): the bytes `msgspec.json.encode` writes, so
# examples in a prompt look like the output, and no tokens go to layout.
_JSON_OPTIONS = {"whitespace_flexible": False}
# The punctuation each kind of JSON value is written with, for the spelling check.
_SYNTAX = {"object": ("{", "}", ":", ",", '"'), "array": ("[", "]", ","), "string": ('"',)}
# Without this llguidance puts the whole grammar and parser state in its error messages.
_LIMITS = llg.LLParserLimits(verbose_errors=False)
# A string schema carrying this key names a kind of choice ("person", "place", ...): `Narrowed` limits it to the
# names valid for one request. msgspec puts it there from `Meta(extra_json_schema=...)` (swarm.agents.actions.one_of).
CHOICE_KEY = "x-choice"


@dataclass(frozen=True)
class Regex:
    """Constrain a completion to match `pattern` as a whole (Rust `regex` syntax); `.value` is the text."""

    pattern: str

    def __post_init__(self):
        if not isinstance(self.pattern, str):
            raise SchemaError(f"Regex takes a pattern string, got {type(self.pattern).__name__}")


@dataclass(frozen=True)
class Choice:
    """Constrain a completion to exactly one of `options`; `.value` is the chosen string."""

    options: tuple[str, ...]

    def __post_init__(self):
        if isinstance(self.options, str):
            raise SchemaError(f"Choice takes a list of strings, not one string ({self.options!r})")
        object.__setattr__(self, "options", tuple(self.options))
        if not self.options:
            raise SchemaError("Choice needs at least one option")
        bad = [o for o in self.options if not isinstance(o, str) or not o]
        if bad:
            raise SchemaError(f"Choice options must be non-empty strings, got {bad[:3]!r}")


class JsonSchema:
    """Constrain a completion to a JSON value of a JSON schema given as data (a dict, or its JSON text);
    `.value` is the decoded JSON (dicts, lists, scalars). `schema=` also takes the dict itself.

    For clients that have no msgspec types, e.g. requests over the bus. Unlike a msgspec type's schema,
    this one is used as written: an object without `"additionalProperties": false` may grow extra keys.
    """

    __slots__ = ("schema", "text")

    def __init__(self, schema: dict | str, *, keep_order: bool = False):
        """`keep_order`: properties are written in the schema's order (as a msgspec type writes its fields)
        rather than sorted, so `JsonSchema(closed_json_schema(T), keep_order=True)` generates what `T` does."""
        if isinstance(schema, (str, bytes)):
            try:
                schema = json.loads(schema)
            except ValueError as e:
                raise SchemaError(f"a JSON schema must be valid JSON: {e}") from None
        if not isinstance(schema, dict):
            raise SchemaError(f"a JSON schema is an object, got {type(schema).__name__}")
        try:
            # a cache key: equal schemas, one grammar
            self.text = json.dumps(schema, sort_keys=not keep_order, ensure_ascii=False)
        except (TypeError, ValueError) as e:
            raise SchemaError(f"a JSON schema must be plain JSON data: {e}") from None
        self.schema = json.loads(self.text)  # our own copy: the caller may change theirs

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JsonSchema) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"JsonSchema({self.text if len(self.text) <= 80 else self.text[:77] + '...'})"


class Narrowed:
    """A msgspec type whose choice fields (strings marked with `CHOICE_KEY`) are limited to `choices[kind]`:
    `.value` decodes into the type, and the grammar lets through only the names valid now. A kind with no
    names left makes an optional field null and a list empty; a required field with none is a SchemaError
    (leave such an action out of the union instead). Equal arguments are equal constraints (one grammar)."""

    __slots__ = ("choices", "type")

    def __init__(self, type: Any, choices: dict[str, Iterable[str]]):
        self.type = type
        self.choices = tuple(sorted((kind, tuple(names)) for kind, names in choices.items()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Narrowed) and other.type == self.type and other.choices == self.choices

    def __hash__(self) -> int:
        return hash((self.type, self.choices))

    def __repr__(self) -> str:
        kinds = ", ".join(f"{kind}: {len(names)}" for kind, names in self.choices)
        return f"Narrowed({_type_name(self.type)}, {{{kinds}}})"

    def json_schema(self) -> dict:
        """The narrowed JSON schema (objects closed, fields in order): what a remote engine needs, as
        `JsonSchema(narrowed.json_schema(), keep_order=True)`."""
        return narrow_schema(closed_json_schema(self.type), dict(self.choices))


@dataclass(frozen=True)
class Grammar:
    """A compiled constraint: the matcher in its start state, how finished text becomes `.value`, and
    how a value is closed within a token budget."""

    matcher: llg.LLMatcher
    decode: Callable[[str], Any]
    closing: ClosingPlan


class GrammarState:
    """One request's position in its grammar; the engine masks its logits with `matcher`.

    Its value completes within `max_tokens`: the constructor raises SchemaError when no value of the
    grammar fits (saying how many tokens the shortest one found takes), and `advance` keeps a closing
    path that fits the tokens left (see `swarm.runtime.closing`).
    """

    __slots__ = ("budget", "decode", "matcher")

    def __init__(self, grammar: Grammar, max_tokens: int, constraint: Any = None):
        """`constraint` (what `grammar` was compiled from) names it in errors."""
        what = "the constraint" if constraint is None else _describe(
            JsonSchema(constraint) if isinstance(constraint, dict) else constraint)
        path = grammar.closing.start_path(grammar.matcher, max_tokens)
        if path is None:
            raise SchemaError(f"no complete value of {what} was found within {max(max_tokens, START_SEARCH)} "
                              "tokens: the tokenizer may be unable to finish one; check the schema")
        if len(path) > max_tokens:
            raise SchemaError(f"{what} does not fit max_tokens={max_tokens}: its shortest value takes {len(path)} "
                              f"tokens; raise max_tokens to at least {len(path)} (or allow shorter values)")
        self.matcher = grammar.matcher.deep_copy()  # ~5 us, where building a matcher takes a millisecond or more
        self.decode = grammar.decode
        self.budget = Budget(grammar.closing, path)

    def advance(self, token: int, left: int) -> tuple[int, str | None]:
        """Advance past a sampled token, or past the token that closes the value in time in its place
        (when `token` would leave too few of the `left` tokens, this one included, to complete it).
        Returns (the token taken, None), or (token, why) if the grammar does not allow it."""
        taken = self.budget.take(self.matcher, token, left)
        if taken is not None:
            return taken, None
        return token, _error(self.matcher) or f"token {token} does not continue the value"

    @property
    def budget_closed(self) -> bool:
        """A sampled token was replaced so that the value would close within max_tokens."""
        return self.budget.closed

    def stuck(self) -> str | None:
        """Why no token can come next, if none can; ask after the step's mask was computed."""
        return _error(self.matcher) if self.matcher.is_error() else None

    @property
    def done(self) -> bool:
        """The value is complete and nothing can follow it (or the end-of-sequence token was taken)."""
        return self.matcher.is_stopped()

    @property
    def accepting(self) -> bool:
        """The value is complete (more may follow it, as digits may follow a number's)."""
        return self.matcher.is_accepting()

    def result(self, text: str) -> tuple[Any, str | None]:
        """The finished text's value: (value, None), or (None, why) if it is not a complete value."""
        if not self.matcher.is_accepting():
            return None, f"the grammar stopped before the value was complete ({self.matcher.stop_reason()})"
        try:
            return self.decode(text), None
        except msgspec.MsgspecError as e:  # a schema feature the grammar enforces more loosely than msgspec
            return None, f"msgspec does not accept the constrained text {text!r}: {e}"


class GrammarCompiler:
    """Compiles constraints against one tokenizer and vocabulary; at most `cache_size` stay compiled."""

    def __init__(self, tokenizer: Tokenizer, vocab_size: int, eos_token_ids: Iterable[int], cache_size: int = 256):
        self._tokenizer, self._vocab_size = tokenizer, vocab_size
        self._eos = sorted(eos_token_ids)
        self._cache_size = cache_size
        self._lltok: llg.LLTokenizer | None = None
        self._pieces: frozenset[bytes] | None = None  # every token's bytes; None when each single byte is a token
        self._longest = 0  # bytes in the longest token
        self._closing: ClosingTokens | None = None
        self._by_constraint: OrderedDict[Hashable, Grammar] = OrderedDict()
        self._by_text: OrderedDict[str, tuple[llg.LLMatcher, ClosingPlan]] = OrderedDict()

    def compile(self, constraint: Any) -> Grammar:
        """A msgspec type, `JsonSchema` (or its dict), `Regex` or `Choice` -> its grammar; raises SchemaError
        if it cannot be used."""
        if isinstance(constraint, dict):
            constraint = JsonSchema(constraint)
        key = _cache_key(constraint)
        if key is not None and key in self._by_constraint:
            self._by_constraint.move_to_end(key)
            return self._by_constraint[key]
        text, literals, decode = _translate(constraint)
        built = self._by_text.get(text)
        if built is None:
            matcher = self._build(text, literals, constraint)
            built = matcher, ClosingPlan(self._closing, json=not isinstance(constraint, (Regex, Choice)))
            _put(self._by_text, text, built, self._cache_size)
        else:
            self._by_text.move_to_end(text)
        grammar = Grammar(built[0], decode, built[1])
        if key is not None:
            _put(self._by_constraint, key, grammar, self._cache_size)
        return grammar

    def _build(self, text: str, literals: list[str], constraint: Any) -> llg.LLMatcher:
        tok = self._llg_tokenizer()
        self._check_spellable(literals, constraint)
        matcher = llg.LLMatcher(tok, text, log_level=0, limits=_LIMITS)
        if matcher.is_error():
            raise SchemaError(f"llguidance rejects {_describe(constraint)}: {matcher.get_error()}")
        # A dead end at the start means the tokenizer cannot spell any value of it.
        if not any(matcher.compute_bitmask()) or matcher.is_error():
            raise SchemaError(f"the tokenizer has no token that can start a value of {_describe(constraint)}")
        return matcher

    def _llg_tokenizer(self) -> llg.LLTokenizer:
        if self._lltok is None:
            try:
                self._lltok = llg.LLTokenizer(self._tokenizer.to_str(), n_vocab=self._vocab_size,
                                              eos_token=self._eos or None)
            except ValueError as e:
                raise SchemaError(f"this tokenizer cannot be used for constrained decoding: {e} "
                                  f"(model vocabulary {self._vocab_size})") from None
            tok = self._lltok
            every = [b"" if tok.is_special_token(i) else tok.decode_bytes([i]) for i in range(tok.vocab_size)]
            pieces = frozenset(every) - {b""}
            self._pieces = None if all(bytes([b]) in pieces for b in range(256)) else pieces
            self._longest = max(map(len, pieces), default=0)
            self._closing = ClosingTokens.of(every, tok.eos_token if self._eos else None)
        return self._lltok

    def _check_spellable(self, literals: list[str], constraint: Any) -> None:
        if self._pieces is None:
            return
        for s in literals:
            if not _spellable(s.encode(), self._pieces, self._longest):
                raise SchemaError(f"the tokenizer cannot spell {s!r}, which {_describe(constraint)} requires")


def _translate(constraint: Any) -> tuple[str, list[str], Callable[[str], Any]]:
    """-> the llguidance grammar, the literal strings every use of it may need, and the value decoder."""
    if isinstance(constraint, Regex):
        return llg.LLMatcher.grammar_from_regex(constraint.pattern), [], str
    if isinstance(constraint, Choice):
        # Lark string literals take JSON escapes, so any option text is safe inside one.
        lark = "start: " + " | ".join(json.dumps(o) for o in constraint.options)
        return llg.LLMatcher.grammar_from_lark(lark), list(constraint.options), str
    if isinstance(constraint, JsonSchema):
        return (*_from_json_schema(constraint.schema, constraint), _json_decode)
    if isinstance(constraint, Narrowed):
        return (*_from_json_schema(constraint.json_schema(), constraint), _decoder(constraint.type).decode)
    if isinstance(constraint, str):
        raise SchemaError(f"schema= takes a msgspec type, JSON schema dict, Regex or Choice, not the string "
                          f"{constraint!r} (for a regex write Regex(...))")
    schema = closed_json_schema(constraint)
    return (*_from_json_schema(schema, constraint), _decoder(constraint).decode)


def _decoder(constraint: Any) -> msgspec.json.Decoder:
    try:
        return _cached_decoder(constraint)
    except (TypeError, ValueError) as e:
        raise SchemaError(f"msgspec cannot decode into {constraint!r}: {e}") from None


@functools.lru_cache(maxsize=1024)
def _cached_decoder(constraint: Any) -> msgspec.json.Decoder:
    return msgspec.json.Decoder(constraint)


def closed_json_schema(constraint: Any) -> dict:
    """The JSON schema a msgspec type is decoded under, objects closed as `compile` closes them: as a
    `JsonSchema(..., keep_order=True)` (say, on another machine's engine) it gives the grammar the type gives.
    A fresh copy each call (the caller may change it); the schema itself is built once per type."""
    try:
        text = _closed_schema_text(constraint)
    except TypeError:  # unhashable: not cached
        text = _closed_schema_text.__wrapped__(constraint)
    return json.loads(text)


@functools.lru_cache(maxsize=1024)
def _closed_schema_text(constraint: Any) -> str:
    try:
        schema = msgspec.json.schema(constraint)
    except (TypeError, ValueError) as e:
        raise SchemaError(f"msgspec cannot describe {constraint!r} as a JSON schema: {e}") from None
    # msgspec ignores unknown fields, so extra ones would only waste tokens (and never end): close objects.
    for node in _subschemas(schema):
        if isinstance(node.get("properties"), dict):
            node.setdefault("additionalProperties", False)
    return json.dumps(schema, ensure_ascii=False)


def choice_kinds(schema: dict) -> tuple[frozenset[str], frozenset[str]]:
    """(every choice kind in a JSON schema, the kinds a required field of some object needs)."""
    kinds, required = set(), set()
    for node in _subschemas(schema):
        if isinstance(node.get(CHOICE_KEY), str):
            kinds.add(node[CHOICE_KEY])
        props = node.get("properties")
        if isinstance(props, dict):
            for name in _list(node.get("required")):
                kind = props.get(name, {}).get(CHOICE_KEY) if isinstance(props.get(name), dict) else None
                if isinstance(kind, str):
                    required.add(kind)
    return frozenset(kinds), frozenset(required)


def narrow_schema(schema: dict, choices: dict[str, Iterable[str]]) -> dict:
    """`schema` (changed in place and returned) with each string marked `CHOICE_KEY: kind` made an enum of
    `choices[kind]`. A kind missing from `choices` stays a free string; a kind with no names makes an optional
    field null only and a list empty, and a required field with none raises SchemaError."""
    choices = {kind: list(names) for kind, names in choices.items()}
    for node in list(_subschemas(schema)):
        kind = node.get(CHOICE_KEY)
        if kind in choices and choices[kind]:
            description = node.get("description")
            node.clear()
            node["enum"] = choices[kind]
            if description:
                node["description"] = description
    for node in _subschemas(schema):  # what an empty kind leaves: no value can be written
        for key in ("anyOf", "oneOf"):
            options = node.get(key)
            if isinstance(options, list) and any(_empty_choice(o, choices) for o in options):
                node[key] = [o for o in options if not _empty_choice(o, choices)]
                if not node[key]:
                    raise SchemaError(f"no names left to choose from for {_kinds_in(options)}")
        if _empty_choice(node.get("items"), choices):
            if node.get("minItems", 0) > 0:
                raise SchemaError(f"a list needs at least {node['minItems']} {node['items'][CHOICE_KEY]} name(s), "
                                  "and there are none to choose from")
            node["items"], node["maxItems"] = {}, 0
        props = node.get("properties")
        if isinstance(props, dict):
            for name in _list(node.get("required")):
                if _empty_choice(props.get(name), choices):
                    raise SchemaError(f"field {name!r} needs a {props[name][CHOICE_KEY]} name, and there are none "
                                      "to choose from: leave that action out of the union")
            for name in [n for n, sub in props.items() if _empty_choice(sub, choices)]:
                del props[name]  # an optional field that cannot be written is left out
    return schema


def _empty_choice(node: Any, choices: dict[str, list[str]]) -> bool:
    return isinstance(node, dict) and node.get(CHOICE_KEY) in choices and not choices[node[CHOICE_KEY]]


def _kinds_in(options: list) -> str:
    return ", ".join(sorted({o[CHOICE_KEY] for o in options if isinstance(o, dict) and CHOICE_KEY in o}))


def _from_json_schema(schema: dict, constraint: Any) -> tuple[str, list[str]]:
    """-> the llguidance grammar of a JSON schema and the literal strings its values may need."""
    literals = []  # what the output must spell exactly: JSON-encoded names and constants, punctuation
    for node in _subschemas(schema):
        for kind in _list(node.get("type")) or [node.get("type")]:
            literals += _SYNTAX.get(kind, ()) if isinstance(kind, str) else ()
        if isinstance(node.get("properties"), dict):
            literals += _SYNTAX["object"]
            literals += [json.dumps(name, ensure_ascii=False) for name in node["properties"]]
        for v in [*_list(node.get("enum")), *([node["const"]] if "const" in node else [])]:
            literals.append(json.dumps(v, ensure_ascii=False))
    try:
        text = llg.LLMatcher.grammar_from_json_schema(schema, defaults=_JSON_OPTIONS)
    except (ValueError, TypeError) as e:
        what = repr(constraint) if isinstance(constraint, JsonSchema) else f"the JSON schema of {constraint!r}"
        raise SchemaError(f"llguidance rejects {what}: {e}") from None
    return text, literals


def _json_decode(text: str) -> Any:
    return msgspec.json.decode(text)


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


_SCHEMA_KEYS = ("items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")


def _subschemas(node: Any) -> Iterator[dict]:
    """Every schema object inside a JSON schema (not the values of `default`, `examples` and the like)."""
    if not isinstance(node, dict):
        return
    yield node
    for key in _SCHEMA_KEYS:
        yield from _subschemas(node.get(key))
    for key in _SCHEMA_LISTS:  # a malformed schema (a dict where a list goes) is for llguidance to reject
        for sub in _list(node.get(key)):
            yield from _subschemas(sub)
    for key in ("properties", "$defs", "definitions"):
        subs = node.get(key)
        for sub in subs.values() if isinstance(subs, dict) else ():
            yield from _subschemas(sub)


@functools.lru_cache(maxsize=65536)  # the same names and keys come back in every narrowed schema
def _spellable(data: bytes, pieces: frozenset[bytes], longest: int) -> bool:
    """Whether `data` splits into token byte strings (reach[i]: the first i bytes can be spelled)."""
    reach = [True] + [False] * len(data)
    for i in range(len(data)):
        if reach[i]:
            for j in range(i + 1, min(len(data), i + longest) + 1):
                if data[i:j] in pieces:
                    reach[j] = True
    return reach[-1]


def _error(matcher: llg.LLMatcher) -> str:
    error = matcher.get_error().replace("\n<non-verbose/>", "")
    if error.startswith("NoExtension"):  # llguidance's word for a dead end: no token spells what must follow
        return "no token can continue the value: the tokenizer cannot spell what the grammar requires next"
    return error


def _cache_key(constraint: Any) -> Hashable | None:
    try:
        hash(constraint)
    except TypeError:
        return None
    return constraint


def _describe(constraint: Any) -> str:
    if isinstance(constraint, (Regex, Choice, JsonSchema, Narrowed)):
        return repr(constraint)
    return f"the schema {_type_name(constraint)}"


def _type_name(t: Any) -> str:
    """`Say | Move | Wait` for a union (its `__name__` is only 'Union'), a type's own name otherwise."""
    members = typing.get_args(t) if typing.get_origin(t) in (typing.Union, types.UnionType) else ()
    if members:
        return " | ".join(_type_name(m) for m in members)
    return getattr(t, "__name__", None) or repr(t)


def _put(cache: OrderedDict, key: Hashable, value: Any, size: int) -> None:
    cache[key] = value
    if len(cache) > size:
        cache.popitem(last=False)
