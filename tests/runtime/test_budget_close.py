"""Every constrained answer closes within its token budget (runtime/closing.py), on a random-weight model
with a byte-level BPE tokenizer: it rambles inside strings until max_tokens runs out, the case that
used to end with finish_reason "length" and no value."""

import re
from dataclasses import replace
from functools import reduce
from typing import Annotated, Literal

import msgspec
import pytest

from swarm.runtime import Choice, Engine, EngineConfig, Regex, SamplingParams, SchemaError
from swarm.runtime.random_model import tiny_config, write_random_model

NAMES = ("Mira", "Tomas", "Zoë")


class Note(msgspec.Struct, tag="note"):
    to: Literal[NAMES]
    text: str  # no length bound: the model may write until its budget is spent
    tags: list[str] = []


class Wait(msgspec.Struct, tag="wait"):
    pass


Action = Note | Wait
PROMPTS = ("The guard", "Mira says", "Once upon a time there was a village", "<|im_start|>user\nnote")
# A JSON schema as data: a required free string and an unbounded array of free strings
LOG = {"type": "object", "additionalProperties": False, "required": ["who", "lines"],
       "properties": {"who": {"type": "string"}, "lines": {"type": "array", "items": {"type": "string"}}}}


def sampled(n: int, max_tokens: int, first_seed: int = 0) -> list[SamplingParams]:
    return [SamplingParams(max_tokens=max_tokens, temperature=1.0, seed=first_seed + i) for i in range(n)]


def prompts(n: int) -> list[str]:
    return [PROMPTS[i % len(PROMPTS)] for i in range(n)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_random_model(tmp_path_factory.mktemp("m"), tiny_config(vocab_size=384))


@pytest.fixture(scope="module")
def engine(folder):
    return Engine.from_pretrained(folder, config=EngineConfig(kv_cache_tokens=16384))


def lost(outs) -> list:
    return [o for o in outs if o.finish_reason != "stop" or o.value is None]


def assert_closed_in_time(outs, schema, max_tokens: int) -> None:
    assert not lost(outs), [(o.finish_reason, o.text) for o in lost(outs)]
    for o in outs:
        assert len(o.token_ids) <= max_tokens and o.error is None
        assert msgspec.json.decode(o.text, type=schema) == o.value


def test_no_answer_is_lost_to_max_tokens(engine):
    n, max_tokens = 48, 48
    before = engine.stats().get("budget_closed", 0)
    outs = engine.generate(prompts(n), sampled(n, max_tokens), schema=Note)
    assert_closed_in_time(outs, Note, max_tokens)
    closed = [o for o in outs if o.budget_closed]
    assert len(closed) > n // 4  # the random model rambles: many answers needed closing
    assert all(isinstance(o.value, Note) and o.value.to in NAMES for o in outs)
    assert engine.stats()["budget_closed"] - before == len(closed)
    # the model's own text is kept up to the cut: a closed note still says something
    assert any(o.value.text for o in closed)


@pytest.mark.parametrize("max_tokens", [16, 40, 64])
def test_a_union_closes_on_any_budget_it_fits(engine, max_tokens):
    outs = engine.generate(prompts(32), sampled(32, max_tokens, first_seed=100), schema=Action)
    assert_closed_in_time(outs, Action, max_tokens)
    if max_tokens >= 40:  # room for a note: the model's choice of one is kept, and closed in time
        assert any(isinstance(o.value, Note) for o in outs)
    else:  # too few tokens for any note: every sampled note was steered to the value that fits
        assert all(isinstance(o.value, Wait) for o in outs)


def test_a_json_schema_with_unbounded_strings_and_arrays(engine):
    outs = engine.generate(prompts(32), sampled(32, 24, first_seed=200), schema=LOG)
    assert not lost(outs), [(o.finish_reason, o.text) for o in lost(outs)]
    for o in outs:
        assert len(o.token_ids) <= 24 and o.value == msgspec.json.decode(o.text)
        assert set(o.value) == {"who", "lines"} and all(isinstance(s, str) for s in o.value["lines"])
    assert any(o.budget_closed for o in outs)


def test_regex_and_choice_close_in_time(engine):
    pattern = r"[a-z ]+\."  # unbounded: a sentence the model may never end
    outs = engine.generate(["Say:"] * 32, sampled(32, 6, first_seed=300), schema=Regex(pattern))
    assert not lost(outs)
    assert all(re.fullmatch(pattern, o.text) and o.value == o.text and len(o.token_ids) <= 6 for o in outs)
    assert any(o.budget_closed for o in outs)
    options = ("no", "a rather long answer that the model starts and cannot finish in time", "yes")
    outs = engine.generate(["Answer:"] * 32, sampled(32, 4, first_seed=400), schema=Choice(options))
    assert not lost(outs) and all(o.value in options and len(o.token_ids) <= 4 for o in outs)
    assert options[1] not in {o.value for o in outs} and any(o.budget_closed for o in outs)


def test_a_schema_that_cannot_fit_is_refused_at_submit(engine):
    with pytest.raises(SchemaError, match=r"does not fit max_tokens=8: its shortest value takes (\d+) tokens") as e:
        engine.submit("The guard", SamplingParams(max_tokens=8), schema=Note)
    shortest = int(re.search(r"takes (\d+) tokens", str(e.value)).group(1))
    assert not engine.scheduler.has_work
    # no longer than the tokenizer's own spelling of the shortest notes
    assert shortest <= min(len(engine.tokenizer.encode(f'{{"type":"note","to":"{n}","text":""}}')) for n in NAMES)
    # exactly the budget it names is enough, for every sampled answer; one token less is refused
    assert_closed_in_time(engine.generate(prompts(16), sampled(16, shortest), schema=Note), Note, shortest)
    with pytest.raises(SchemaError, match=f"max_tokens={shortest - 1}"):
        engine.submit("The guard", SamplingParams(max_tokens=shortest - 1), schema=Note)
    with pytest.raises(SchemaError, match="does not fit max_tokens=1"):
        engine.submit("x", SamplingParams(max_tokens=1), schema=Choice(["maybe", "perhaps"]))
    with pytest.raises(SchemaError, match="does not fit max_tokens=2"):
        engine.submit("x", SamplingParams(max_tokens=2), schema=Regex("[a-z]{40}"))
    assert not engine.scheduler.has_work


def test_requests_without_a_constraint_are_unchanged(engine):
    free = SamplingParams(max_tokens=24, temperature=1.0, seed=5, ignore_eos=True)
    alone = engine.generate("The smith", free)[0]
    mixed = engine.generate(["The smith", *prompts(8)], [free, *sampled(8, 40)], schema=[None] + [Note] * 8)
    assert mixed[0].token_ids == alone.token_ids and mixed[0].finish_reason == "length"
    assert not mixed[0].budget_closed and mixed[0].value is None
    assert any(o.budget_closed for o in mixed[1:])


def test_answers_that_end_well_inside_the_budget_are_unchanged(engine):
    params = [SamplingParams(max_tokens=300, temperature=0.0)] * 4 + sampled(28, 300, first_seed=500)
    roomy = engine.generate(prompts(32), params, schema=Action)
    ended = [i for i, o in enumerate(roomy) if not o.budget_closed]  # the model ended these itself
    assert len(ended) > 16 and 0 in ended and not lost(roomy)  # request 0 is greedy
    # the same requests, each with a budget of its answer's length plus a margin: the same answers
    margin = 12
    tight = [replace(params[i], max_tokens=len(roomy[i].token_ids) + margin) for i in ended]
    again = engine.generate([prompts(32)[i] for i in ended], tight, schema=Action)
    assert [o.token_ids for o in again] == [roomy[i].token_ids for i in ended]
    assert not any(o.budget_closed for o in again)


def run_all(engine: Engine, n: int, max_tokens: int, schema=Note, texts=None) -> list:
    return engine.generate(texts or prompts(n), sampled(n, max_tokens, first_seed=600), schema=schema)


def test_fused_and_eager_decode_close_alike(folder, engine):
    eager = Engine.from_pretrained(folder, config=EngineConfig(kv_cache_tokens=16384, fused_decode=False))
    assert engine.fused is not None and eager.fused is None
    fused_outs, eager_outs = run_all(engine, 24, 40), run_all(eager, 24, 40)
    assert_closed_in_time(fused_outs, Note, 40)
    assert [o.text for o in fused_outs] == [o.text for o in eager_outs]
    assert any(o.budget_closed for o in fused_outs)


def test_prefix_cache_hits_and_preemption_keep_answers_in_time(folder):
    cached = Engine.from_pretrained(folder, config=EngineConfig(kv_cache_tokens=16384, block_size=8))
    preamble = "Once upon a time there was a village with a tavern, a square and a mill. "
    run_all(cached, 4, 40, texts=[preamble + "The guard"] * 4)
    outs = run_all(cached, 16, 40, texts=[preamble + f"Agent {i} acts." for i in range(16)])
    assert_closed_in_time(outs, Note, 40)
    assert all(o.cached_tokens > 0 for o in outs) and any(o.budget_closed for o in outs)
    tight = Engine.from_pretrained(folder, config=EngineConfig(kv_cache_tokens=160, block_size=8))
    outs = run_all(tight, 8, 56, texts=[f"The guard number {i} walks to the square and says" for i in range(8)])
    assert_closed_in_time(outs, Note, 56)
    assert tight.stats()["preemptions"] > 0 and any(o.budget_closed for o in outs)


def test_pump_closes_answers_in_time(folder, engine):
    pumped = Engine.from_pretrained(folder, config=EngineConfig(kv_cache_tokens=16384))
    handles = [pumped.submit(p, sp, schema=Note) for p, sp in zip(prompts(16), sampled(16, 40, 600), strict=True)]
    while not all(h.done for h in handles):
        pumped.pump(max_ms=2)
    outs = [h.result() for h in handles]
    assert_closed_in_time(outs, Note, 40)
    assert [o.text for o in outs] == [o.text for o in run_all(engine, 16, 40)]
    assert pumped.stats()["budget_closed"] == sum(o.budget_closed for o in outs) > 0


def test_a_number_still_growing_at_max_tokens_ends_with_its_value(engine):
    # a complete number may go on (more digits): at max_tokens the request ends with the number it has
    Count = Annotated[int, msgspec.Meta(ge=0)]
    outs = engine.generate(["Count:"] * 24, sampled(24, 3, first_seed=700), schema=Count)
    assert_closed_in_time(outs, Count, 3)
    assert any(o.budget_closed and len(o.token_ids) == 3 for o in outs)


def test_a_cached_path_that_does_not_complete_the_value_is_never_used(engine):
    grammar = engine.grammars.compile(Note)
    matcher = grammar.matcher.deep_copy()
    assert matcher.consume_tokens(engine.tokenizer.encode('{"type":"note","to":"Mira","text":"abc'))
    key = 12345
    grammar.closing._paths[key] = []  # as if another state, whose value was complete, had the same key
    path = grammar.closing.path_after(matcher, key, limit=8)
    assert path and matcher.consume_tokens(path) and matcher.is_accepting()
    assert grammar.closing._paths[key] == path  # the right one replaces it


def test_paths_are_remembered_by_text_however_it_was_split_into_tokens(engine):
    tokens = engine.grammars.compile(Note).closing.tokens
    whole = engine.tokenizer.encode("village")
    letters = [engine.tokenizer.encode(c)[0] for c in "village"]
    assert len(whole) < len(letters)

    def key(ids):
        return reduce(tokens.follow, ids, 0)

    assert key(whole) == key(letters) != key(letters[:-1])
