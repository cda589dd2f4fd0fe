"""Closing paths: every constrained completion ends with a complete value within its `max_tokens`.

A closing path is a list of tokens that completes the value from a matcher's state: consumed in
order, they leave the matcher accepting (the value is whole; a request that runs out of tokens there
ends with it). Each constrained request carries one no longer than the tokens it has left, and keeps
that true token by token (`Budget.take`):

- at submit, a path from the constraint's start state (`ClosingPlan.start_path`, computed once per
  grammar: the greedy one, or the shortest one `shortest_path` finds when that does not fit) must
  fit `max_tokens`, or the request is refused, so a schema that cannot fit fails before anything runs;
- after a sampled token the request needs a path that fits the tokens left after it: the rest of
  its path when the token was the path's head (the model wrote what closing would have); the same
  path when it still completes the value from the new state (one `validate_tokens` call, a
  microsecond or two: the common case, text inside a string); else the path its grammar's other
  requests found after the same tokens (a cache: requests mostly part ways at the same choices, an
  action's kind or a name), checked the same way; else a new one (`greedy_path`, on a copy of the
  matcher, tens of microseconds). When none fits, the sampled token is replaced by the head of the
  path held before it, which fitted one token earlier: the value is then closed along it, and the
  completion says so (`Completion.budget_closed`).

So a request never reaches `max_tokens` with its value unfinished, and never walks into a dead end
(a state no token sequence can complete, such as a literal the tokenizer cannot finish). The model
keeps every token it picks up to the point where keeping it would leave too few tokens to close.

Why every token is checked, not only those near the end of the budget: one token can lengthen the
shortest completion by any amount (it may open an object whose required fields must all be
written), so no bound on the closing length holds for every state, and a check that waited for
the tokens left to come within such a bound could start too late. The check is made cheap instead:
a sampled token that the path begins with costs nothing, and one that leaves the path valid costs a
`validate_tokens` call.
"""

from __future__ import annotations

from dataclasses import dataclass

import llguidance as llg
import numpy as np

__all__ = ["Budget", "ClosingPlan", "ClosingTokens", "greedy_path", "shortest_path"]

# JSON closers: an optional quote, then brackets and braces (`"`, `}`, `"}`, `"]}`, `}}`, ...). A compact
# JSON value is closed by writing these, once its required parts are there.
_QUOTE, _BRACE, _BRACKET = b'"}]'
LOOKAHEAD = 12  # `shortest_path` rolls out this many of the longest allowed tokens at a choice
SEARCH_STEPS = 20_000  # tokens `shortest_path`'s rollouts may consume before it settles for the best path found
START_SEARCH = 1024  # the longest start path looked for when max_tokens is shorter (to report the length)
PATH_CACHE = 4096  # paths a grammar remembers by the text they follow (then it forgets them all)
# The text a request has written is remembered as a hash of its bytes, the same however the model split
# it into tokens: the bytes read as one big-endian number modulo a prime (a polynomial hash in base 256),
# so a token's bytes add their own number and multiply what came before by 256**len.
_PRIME = (1 << 61) - 1


@dataclass(frozen=True)
class ClosingTokens:
    """What closing paths are built from, for one tokenizer: end-of-sequence, each token's length in
    bytes (0 for special tokens, which never close anything), the JSON closer tokens by their first
    byte (`"`, `}` or `]`), longest first, the single-byte token of each of those bytes, and each
    token's bytes' hash and the power of the base its length gives (see `Budget.key`)."""

    eos: int | None
    lengths: list[int]  # bytes per token
    closers: dict[int, tuple[int, ...]]
    singles: dict[int, int]
    hashes: list[int]
    powers: list[int]

    @classmethod
    def of(cls, pieces: list[bytes], eos: int | None) -> ClosingTokens:
        """From every token's bytes (b"" for special tokens) and the end-of-sequence token."""
        closers: dict[int, list[int]] = {first: [] for first in (_QUOTE, _BRACE, _BRACKET)}
        for i in sorted((i for i, p in enumerate(pieces) if _is_closer(p)), key=lambda i: (-len(pieces[i]), i)):
            closers[pieces[i][0]].append(i)
        singles = {first: ids[-1] for first, ids in closers.items() if ids and len(pieces[ids[-1]]) == 1}
        return cls(eos, [len(p) for p in pieces],
                   {first: tuple(ids) for first, ids in closers.items()}, singles,
                   [int.from_bytes(p, "big") % _PRIME for p in pieces], [pow(256, len(p), _PRIME) for p in pieces])

    def follow(self, key: int, token: int) -> int:
        """The hash of the text hashed to `key` followed by `token`'s bytes."""
        return (key * self.powers[token] + self.hashes[token]) % _PRIME


def _is_closer(piece: bytes) -> bool:
    return piece[-1:] in (b'"', b"}", b"]") and not (piece[1:] if piece[:1] == b'"' else piece).strip(b"]}")


class ClosingPlan:
    """How values of one grammar are closed: its tokens, whether it writes JSON (closers apply), its
    start state's path (searched for lazily), and the greedy paths found after given tokens. One per
    grammar text, shared by the constraints that compile to it."""

    __slots__ = ("_paths", "_refined", "_searched", "_start", "json", "tokens")

    def __init__(self, tokens: ClosingTokens, json: bool):
        self.tokens, self.json = tokens, json
        self._start: list[int] | None = None
        self._searched = 0  # how long a path was looked for (a longer budget looks again if none was found)
        self._refined = False  # `shortest_path` has run
        self._paths: dict[int, list[int]] = {}  # hash of the text written from the start -> greedy path after it

    def start_path(self, matcher: llg.LLMatcher, limit: int) -> list[int] | None:
        """A path from the start state `matcher` (left as it is), looked for up to max(`limit`,
        START_SEARCH) tokens long, so a caller can say how far over its limit it is: the greedy one
        while it fits `limit` (closing needs a path that fits, not the shortest), else the shortest
        `shortest_path` finds. None when there is none that long (or none at all: a value the
        tokenizer cannot finish). Computed once per grammar, mostly."""
        depth = max(limit, START_SEARCH)
        if self._start is None and depth > self._searched:
            self._start, self._searched, self._refined = greedy_path(matcher.deep_copy(), self, depth), depth, False
        if not self._refined and (self._start is None or len(self._start) > limit):
            self._refined = True
            found = shortest_path(matcher.deep_copy(), self, self._searched)
            if found is not None and (self._start is None or len(found) < len(self._start)):
                self._start = found
        return self._start

    def path_after(self, matcher: llg.LLMatcher, key: int, limit: int) -> list[int] | None:
        """A path of at most `limit` tokens from `matcher`'s state, which the text hashed to `key` led
        to: one found after that text before, if it still completes the value (hashes can collide),
        else a greedy one."""
        known = self._paths.get(key)
        if known is not None and len(known) <= limit and completes(matcher, known, self.tokens.eos):
            return known
        path = greedy_path(matcher.deep_copy(), self, limit)
        if path is not None:
            if len(self._paths) >= PATH_CACHE:
                self._paths.clear()
            self._paths[key] = path
        return path


class Budget:
    """One request's closing path. Invariant: consuming `path` from the request's matcher completes
    the value, and the path is no longer than the tokens the request has left."""

    __slots__ = ("closed", "key", "path", "plan")

    def __init__(self, plan: ClosingPlan, path: list[int]):
        self.plan, self.path = plan, path
        self.key = 0  # a hash of the text written so far (the cache key of `ClosingPlan.path_after`)
        self.closed = False  # a sampled token was replaced to close the value in time

    def take(self, matcher: llg.LLMatcher, token: int, left: int) -> int | None:
        """Consume `token` (sampled from the allowed tokens), or the path's head in its place when no
        path of at most `left - 1` tokens would follow `token`; `left` counts this token. Returns the
        token consumed, or None when the matcher refused it (it is then in an error state)."""
        path = self.path
        if not matcher.consume_token(token):
            return None
        key = self.plan.tokens.follow(self.key, token)
        if path and token == path[0]:
            self.path, self.key = path[1:], key
            return token
        fits = [] if matcher.is_stopped() else self._path_after(matcher, key, left - 1)
        if fits is not None:
            self.path, self.key = fits, key
            return token
        # nothing closes in time after `token`: take the path's head instead (it fitted one token ago); an
        # empty path means the value was complete, and end-of-sequence ends it there
        head = path[0] if path else self.plan.tokens.eos
        matcher.rollback(1)
        if head is None or not matcher.consume_token(head):
            return None  # unreachable while the invariant holds (a path is checked where it is made)
        self.path, self.key, self.closed = path[1:], self.plan.tokens.follow(self.key, head), True
        return head

    def _path_after(self, matcher: llg.LLMatcher, key: int, left: int) -> list[int] | None:
        """A path of at most `left` tokens from the matcher's state: the held one if it still completes
        the value, else the plan's. None when none fits."""
        path = self.path
        if len(path) <= left and completes(matcher, path, self.plan.tokens.eos):
            return path
        return self.plan.path_after(matcher, key, left)


def completes(m: llg.LLMatcher, path: list[int], eos: int | None) -> bool:
    """Whether consuming `path` from `m`'s state leaves the value complete, checked without consuming it:
    end-of-sequence is valid after it only then."""
    return eos is not None and m.validate_tokens([*path, eos]) == len(path) + 1


def greedy_path(m: llg.LLMatcher, plan: ClosingPlan, limit: int) -> list[int] | None:
    """Complete the value from `m`'s state (consuming into `m`: pass a copy) by a fixed rule: the forced
    tokens, else a JSON closer, else an allowed token that moves on (`_next_token`). Returns the path,
    or None if it would be longer than `limit` or meets a dead end. The step that completes the value
    is checked, not consumed: ending a value is the costliest step for llguidance (tens of
    microseconds against one or two)."""
    path: list[int] = []
    eos = plan.tokens.eos
    seen: set[bytes] = set()  # the token masks of the states where `_next_token` chose
    while not m.is_accepting():
        if m.is_stopped():  # stopped and not accepting: an error
            return None
        step = m.compute_ff_tokens()
        if not step:
            token = _next_token(m, plan, seen)
            if token is None:
                return None
            step = [token]
        if len(path) + len(step) > limit:
            return None
        if completes(m, step, eos):
            return path + step
        if not m.consume_tokens(step):
            return None
        path += step
    return path


def shortest_path(m: llg.LLMatcher, plan: ClosingPlan, limit: int) -> list[int] | None:
    """A path from `m`'s state (consumed into `m`: pass a copy) no longer than the greedy one: at each
    choice the candidates (every allowed token when there are few, else the longest ones and the
    greedy pick) are rolled out greedily and the shortest rollout's first token is taken. Settles for
    the best path found once the rollouts have cost `SEARCH_STEPS` tokens."""
    best = greedy_path(m.deep_copy(), plan, limit)
    path: list[int] = []
    work = 0
    while not m.is_accepting() and work <= SEARCH_STEPS:
        forced = m.compute_ff_tokens()
        if forced:
            if not m.consume_tokens(forced):
                break
            path += forced
            continue
        bound = (len(best) if best is not None else limit + 1) - len(path) - 1  # what a rollout must beat
        choice, rest = None, None
        for token in _candidates(m, plan):
            child = m.deep_copy()
            if bound < 0 or not child.consume_token(token):
                continue
            found = greedy_path(child, plan, bound)
            work += 1 + (len(found) if found is not None else bound)
            if found is not None:
                choice, rest, bound = token, found, len(found) - 1
        if choice is None:
            break
        m.consume_token(choice)
        path.append(choice)
        if best is None or len(path) + len(rest) < len(best):
            best = path + rest
    return best


def _candidates(m: llg.LLMatcher, plan: ClosingPlan) -> list[int]:
    """The tokens `shortest_path` rolls out at a choice: the greedy pick and the longest allowed ones."""
    out = _longest(_allowed(m.compute_bitmask(), plan.tokens), plan.tokens)
    greedy = _next_token(m, plan, set())
    return out if greedy is None or greedy in out else [greedy, *out]


def _longest(allowed: list[int], t: ClosingTokens) -> list[int]:
    """The LOOKAHEAD longest of `allowed`, longest first (the lower id first among equals)."""
    return sorted(allowed, key=lambda i: -t.lengths[i])[:LOOKAHEAD]


def _next_token(m: llg.LLMatcher, plan: ClosingPlan, seen: set[bytes]) -> int | None:
    """The greedy rule's token where nothing is forced and the value is not complete: a JSON closer;
    else (grammars other than JSON) one of the longest allowed tokens or the single-byte ones that
    completes the value; else the longest allowed token, unless this state's token mask was `seen`
    before on this path: then a run of the longest is going nowhere (digits that cannot end a
    number, letters where a pattern needs a dash), and the first candidate that leads to an unseen
    mask is taken."""
    t = plan.tokens
    if plan.json:
        closer = _json_closer(m, t)
        if closer is not None:
            return closer
    mask = m.compute_bitmask()
    looping = mask in seen
    seen.add(mask)
    allowed = _allowed(mask, t)
    if not allowed:
        return None
    if plan.json and not looping:
        return max(allowed, key=t.lengths.__getitem__)  # the first of the longest
    candidates = list(dict.fromkeys(_longest(allowed, t) + [i for i in allowed if t.lengths[i] == 1]))
    if not plan.json:
        done = next((c for c in candidates if completes(m, [c], t.eos)), None)
        if done is not None or not looping:
            return candidates[0] if done is None else done
    for c in candidates:
        child = m.deep_copy()
        if child.consume_token(c) and child.compute_bitmask() not in seen:
            return c
    return candidates[0]


def _json_closer(m: llg.LLMatcher, t: ClosingTokens) -> int | None:
    """The longest closer token that goes on from here, starting with the byte that closes what is
    open: `"` inside a string (where `}` and `]` would only be text, and are allowed as such), else
    `}` or `]`, else `"` (a string value to open and close). None if none is allowed."""
    def allowed(byte: int) -> bool:
        return byte in t.singles and m.validate_tokens([t.singles[byte]]) == 1

    brace, bracket = allowed(_BRACE), allowed(_BRACKET)
    if brace != bracket:
        first = _BRACE if brace else _BRACKET
    elif allowed(_QUOTE):  # a string's end (where `}` and `]` are text), or a string value to write
        first = _QUOTE
    else:
        return None  # nothing to close yet (a string too short to end, a value still to begin)
    # longest first (one token that closes several levels is cheapest); the single byte, allowed, is last
    return next(tok for tok in t.closers[first] if m.validate_tokens([tok]) == 1)


def _allowed(mask: bytes, t: ClosingTokens) -> list[int]:
    """The ids of the tokens a matcher's `compute_bitmask()` allows (special tokens left out), in order.
    Only the mask's nonzero words are read, in Python where they are few (a choice among names), with
    numpy where they are many (text)."""
    words = np.frombuffer(mask, dtype=np.uint32)  # 32 tokens a word, little-endian (as the mask is written)
    nonzero = words.nonzero()[0]
    if len(nonzero) > 8:
        bits = np.unpackbits(words[nonzero].view(np.uint8), bitorder="little").reshape(-1, 32).astype(bool)
        ids = (nonzero[:, None] * 32 + np.arange(32))[bits].tolist()
    else:
        ids = []
        for w in nonzero.tolist():
            bits = int(words[w])
            while bits:
                low = bits & -bits
                ids.append(32 * w + low.bit_length() - 1)
                bits ^= low
    n = len(t.lengths)
    return [i for i in ids if i < n and t.lengths[i]]
