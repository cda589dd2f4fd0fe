"""Constrained decoding on a random-weight model with a byte-level BPE tokenizer (the worst case:
the model puts its probability anywhere, so every valid output depends on the mask)."""

import re
from typing import Annotated, Literal

import msgspec
import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models

from swarm.runtime import Choice, Engine, EngineConfig, JsonSchema, Regex, SamplingParams, SchemaError
from swarm.runtime.random_model import tiny_config, write_random_model
from swarm.runtime.tokenizer import Tokenizer

PLAYERS = ("Mira", "Tomas", "Zoë", 'O"Hara')  # a non-ASCII name and one JSON must escape


class Vote(msgspec.Struct, tag="vote"):
    target: Literal[PLAYERS]


class Say(msgspec.Struct, tag="say"):
    to: Literal[PLAYERS]
    text: Annotated[str, msgspec.Meta(max_length=12)]


class Move(msgspec.Struct, tag="move"):
    place: Literal["tavern", "square", "mill"]
    minutes: Annotated[int, msgspec.Meta(ge=0, le=90)]
    running: bool = False


Action = Vote | Say | Move


def sampled(n: int, first_seed: int = 0, max_tokens: int = 160) -> list[SamplingParams]:
    return [SamplingParams(max_tokens=max_tokens, temperature=1.0, seed=first_seed + i) for i in range(n)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_random_model(tmp_path_factory.mktemp("m"), tiny_config(vocab_size=384))


@pytest.fixture(scope="module")
def engine(folder):
    return Engine.from_pretrained(folder, config=EngineConfig(kv_cache_tokens=16384))


def assert_valid(outs, schema=Action):
    for o in outs:
        assert o.finish_reason == "stop", (o.finish_reason, o.text, o.error)
        assert msgspec.json.decode(o.text, type=schema) == o.value
        assert o.error is None


def test_every_sampled_action_decodes_in_a_mixed_batch(engine):
    prompts = ["The guard", "Mira says", "Once upon a time there was a village", "<|im_start|>user\nvote"]
    n = 96
    constrained = [prompts[i % len(prompts)] for i in range(n)]
    free = ["The baker sells bread"] * 8
    params = sampled(n) + [SamplingParams(max_tokens=24, temperature=1.0, seed=s, ignore_eos=True) for s in range(8)]
    outs = engine.generate(constrained + free, params, schema=[Action] * n + [None] * 8)
    assert_valid(outs[:n])
    assert {type(o.value) for o in outs[:n]} == {Vote, Say, Move}  # temperature 1.0 explores every branch
    for o in outs[:n]:
        v = o.value
        assert (v.target if isinstance(v, Vote) else v.to if isinstance(v, Say) else v.place) in (
            *PLAYERS, "tavern", "square", "mill")
    assert all(o.value is None and len(o.token_ids) == 24 for o in outs[n:])


def test_unconstrained_requests_are_unchanged_by_constrained_neighbours(engine):
    p = SamplingParams(max_tokens=16, temperature=1.0, seed=3, ignore_eos=True)
    alone = engine.generate("The smith", p)[0].token_ids
    mixed = engine.generate(["The smith", "The guard", "A child"], [p] + sampled(2), schema=[None, Action, Action])
    assert mixed[0].token_ids == alone
    # and the same seed under the same schema gives the same action alone or in a batch
    assert mixed[1].value == engine.generate("The guard", sampled(1), schema=Action)[0].value


def test_prefix_cache_hits_keep_actions_valid(folder):
    engine = Engine.from_pretrained(folder, config=EngineConfig(kv_cache_tokens=16384, block_size=8))
    preamble = "Once upon a time there was a village with a tavern, a square and a mill. "
    first = engine.generate([preamble + "The guard"] * 4, sampled(4), schema=Action)
    again = engine.generate([preamble + f"Agent {i} acts." for i in range(16)], sampled(16, 100), schema=Action)
    assert_valid(first + again)
    assert all(o.cached_tokens > 0 for o in again)


def test_preempted_constrained_requests_stay_valid(folder):
    tight = Engine.from_pretrained(folder, config=EngineConfig(kv_cache_tokens=160, block_size=8))
    outs = tight.generate([f"The guard number {i} walks to the square and says" for i in range(8)],
                          sampled(8, 7, max_tokens=90), schema=Action)
    assert_valid(outs)
    assert tight.stats()["preemptions"] > 0


def test_top_level_values_end_with_eos_only_when_complete(engine):
    Count = Annotated[int, msgspec.Meta(ge=0, le=9999)]
    outs = engine.generate(["Count"] * 16, sampled(16), schema=Count)
    assert_valid(outs, Count)
    for schema in (Annotated[list[Literal["a", "b"]], msgspec.Meta(max_length=5)], tuple[Literal["a", "b"], bool]):
        assert_valid(engine.generate(["x"] * 8, sampled(8, 50), schema=schema), schema)


def test_regex_constraint(engine):
    pattern = r"[a-z]{2,5}-[0-9]{1,2}( \(ok\))?"
    outs = engine.generate(["Code:"] * 24, sampled(24), schema=Regex(pattern))
    for o in outs:
        assert o.finish_reason == "stop" and re.fullmatch(pattern, o.text) and o.value == o.text


def test_choice_constraint(engine):
    options = ("yes", "no", "maybe so", 'say "hi"', "x|y.*", "Zoë", "yes!")
    outs = engine.generate(["Answer:"] * 32, sampled(32), schema=Choice(options))
    assert all(o.finish_reason == "stop" and o.value == o.text and o.text in options for o in outs)
    assert len({o.text for o in outs}) > 2


def test_a_value_that_cannot_fit_max_tokens_is_refused_at_submit(engine):
    # (tests/runtime/test_budget_close.py: every value that fits is closed within max_tokens)
    with pytest.raises(SchemaError, match=r"does not fit max_tokens=3: its shortest value takes \d+ tokens"):
        engine.submit("The guard", sampled(1, max_tokens=3)[0], schema=Say)
    assert not engine.scheduler.has_work
    assert_valid(engine.generate("The guard", sampled(1), schema=Action))  # the engine goes on as before


MOOD = {  # a JSON schema as a client in another language sends it: plain data, no msgspec type
    "type": "object",
    "properties": {"mood": {"enum": ["calm", "wary", "Zoë"]}, "n": {"type": "integer", "minimum": 0, "maximum": 9},
                   "tags": {"type": "array", "items": {"type": "string", "maxLength": 4}, "maxItems": 2}},
    "required": ["mood", "n"],
    "additionalProperties": False,
}


def test_a_json_schema_dict_constrains_like_a_type(engine):
    before = msgspec.json.encode(MOOD)
    outs = engine.generate(["Mood:"] * 24, sampled(24, max_tokens=60), schema=MOOD)
    for o in outs:
        assert o.finish_reason == "stop" and o.error is None, (o.text, o.error)
        assert o.value == msgspec.json.decode(o.text) and isinstance(o.value, dict)
        assert o.value["mood"] in ("calm", "wary", "Zoë") and 0 <= o.value["n"] <= 9
        assert set(o.value) <= {"mood", "n", "tags"} and all(len(t) <= 4 for t in o.value.get("tags", []))
    assert len({o.value["n"] for o in outs}) > 1
    assert msgspec.json.encode(MOOD) == before  # the caller's dict is left as it was
    # the same schema as a dict, as JSON text, or rebuilt: one compilation
    g = engine.grammars.compile(MOOD)
    assert engine.grammars.compile(JsonSchema(msgspec.json.encode(MOOD).decode())).matcher is g.matcher
    assert JsonSchema(dict(reversed(MOOD.items()))) == JsonSchema(MOOD)


def test_a_json_schema_is_used_as_written(engine):
    # without "additionalProperties": false a JSON object may have more keys (a msgspec type's would not)
    open_object = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    outs = engine.generate(["x"] * 16, sampled(16, max_tokens=40), schema=open_object)
    assert any(o.text.startswith('{"a":') and o.text.count(":") > 1 for o in outs)
    closed = {**open_object, "additionalProperties": False}
    closed = engine.generate(["x"] * 16, sampled(16, max_tokens=40), schema=closed)
    assert all(o.text.count(":") == 1 for o in closed)


@pytest.mark.parametrize("schema, message", [
    ({"type": "object", "properties": [1]}, "properties must be an object"),
    ({"type": "nonsense"}, "nonsense"),
    ({"$ref": "#/definitions/missing"}, "does not exist"),
    ({"type": "array", "uniqueItems": True}, "uniqueItems"),
    ({"type": "string", "pattern": "(?=a)b"}, "look-around"),
    ({"type": "object", "properties": {"a": {"type": ["string", 7]}}}, "llguidance rejects"),
])
def test_rejected_json_schemas_fail_at_submit(engine, schema, message):
    with pytest.raises(SchemaError, match=re.escape(message)):
        engine.submit("x", schema=schema)
    assert not engine.scheduler.has_work


def test_json_schema_arguments():
    with pytest.raises(SchemaError, match="valid JSON"):
        JsonSchema("{not json")
    with pytest.raises(SchemaError, match="is an object, got list"):
        JsonSchema("[1]")
    with pytest.raises(SchemaError, match="plain JSON data"):
        JsonSchema({"const": {1, 2}})


async def test_stream_with_a_schema(engine):
    pieces = [p async for p in engine.stream("The guard", sampled(1, 5)[0], schema=Action)]
    ref = engine.generate("The guard", sampled(1, 5), schema=Action)[0]
    assert len(pieces) > 1 and "".join(pieces) == ref.text
    assert msgspec.json.decode("".join(pieces), type=Action) == ref.value


async def test_agenerate_with_a_schema(engine):
    outs = await engine.agenerate(["The guard", "A child"], sampled(2), schema=Action)
    assert_valid(outs)


def test_cancel_a_constrained_request(engine):
    h = engine.submit("The guard", sampled(1)[0], schema=Say)
    other = engine.submit("A child", sampled(1, 9)[0], schema=Action)
    engine.step()
    engine.step()
    h.cancel()
    out = h.result()
    assert out.finish_reason == "cancelled" and out.value is None
    assert_valid([other.result()])
    assert not engine.scheduler.has_work


def test_compiled_once_per_schema(engine):
    g = engine.grammars.compile(Action)
    assert engine.grammars.compile(Action) is g
    # equal schemas built anew (e.g. each tick) share the compiled matcher but decode to their own type
    a = msgspec.defstruct("Ballot", [("target", Literal["Mira", "Tomas"])])
    b = msgspec.defstruct("Ballot", [("target", Literal["Mira", "Tomas"])])
    ga, gb = engine.grammars.compile(a), engine.grammars.compile(b)
    assert ga.matcher is gb.matcher
    assert type(engine.generate("x", sampled(1), schema=b)[0].value) is b


@pytest.mark.parametrize("schema, message", [
    (set[int], "uniqueItems"),  # msgspec writes a keyword llguidance does not implement
    (Annotated[str, msgspec.Meta(pattern="(?=a)b")], "look-around"),
    (Regex("a(b"), "unclosed group"),
    (object, "msgspec cannot describe"),
    ("[0-9]+", "Regex"),
])
def test_rejected_schemas_fail_at_submit(engine, schema, message):
    with pytest.raises(SchemaError, match=re.escape(message)):
        engine.submit("x", schema=schema)
    assert not engine.scheduler.has_work


def test_bad_constraints_and_params():
    with pytest.raises(SchemaError, match="at least one"):
        Choice([])
    with pytest.raises(SchemaError, match="not one string"):
        Choice("yes")
    with pytest.raises(SchemaError, match="non-empty"):
        Choice(["a", ""])


def test_stop_strings_with_a_schema_are_refused(engine):
    with pytest.raises(SchemaError, match="stop"):
        engine.submit("x", SamplingParams(stop=["}"]), schema=Action)
    with pytest.raises(SchemaError, match="stop"):
        engine.submit("x", SamplingParams(stop_token_ids=[7]), schema=Action)


# -- tokenizers that cannot spell everything ------------------------------------------------


def engine_with(folder, tokenizer: HFTokenizer) -> Engine:
    model = Engine.from_pretrained(folder, config=EngineConfig(kv_cache_tokens=1024)).model
    return Engine(model, Tokenizer(tokenizer, {"eos_token": "<eos>"}), EngineConfig(kv_cache_tokens=1024))


def letters_only() -> HFTokenizer:
    """A BPE without byte tokens: it can write `{}[]":,` and ten letters (enough for the ballot below)."""
    # the ids of the special tokens are the random model's (config.json: bos 1, eos 2)
    vocab = {t: i for i, t in enumerate(["<pad>", "<bos>", "<eos>", *'{}[]":,', *"abegoprtvy"])}
    tok = HFTokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.add_special_tokens(["<pad>", "<bos>", "<eos>"])
    tok.decoder = decoders.ByteFallback()
    return tok


def test_schema_the_tokenizer_cannot_spell(folder):
    engine = engine_with(folder, letters_only())
    with pytest.raises(SchemaError, match=re.escape("""cannot spell '"c"'""")):
        engine.submit([1], schema=Literal["a", "c"])
    with pytest.raises(SchemaError, match=re.escape("""cannot spell '"Mira"'""")):
        engine.submit([1], schema=Vote)
    with pytest.raises(SchemaError, match="no token that can start"):
        engine.submit([1], schema=Regex("[0-9]+"))
    with pytest.raises(SchemaError, match="no token that can start"):
        engine.submit([1], schema=int)  # no digits
    ballot = msgspec.defstruct("Ballot", [("target", Literal["a", "b"])], tag_field="type", tag="vote")
    outs = engine.generate([[1]] * 4, sampled(4, max_tokens=64), schema=ballot)
    assert_valid(outs, ballot)


def test_a_dead_end_mid_value_is_never_entered(folder):
    engine = engine_with(folder, letters_only())
    # "a" can be written, then no token spells "c": no value of Regex("ac") can be finished at all
    with pytest.raises(SchemaError, match="no complete value of Regex"):
        engine.submit([1], sampled(1)[0], schema=Regex("ac"))
    # where another branch can be finished, a sampled "a" is replaced by the start of that branch
    outs = engine.generate([[1]] * 16, sampled(16), schema=Regex("ac|bb"))
    assert all(o.finish_reason == "stop" and o.value == "bb" for o in outs)
    assert any(o.budget_closed for o in outs)  # some samples began with "a"


def test_a_tokenizer_llguidance_cannot_read(folder):
    tok = HFTokenizer(models.WordLevel({"<unk>": 0, "<bos>": 1, "<eos>": 2, "a": 3}, unk_token="<unk>"))
    engine = engine_with(folder, tok)
    with pytest.raises(SchemaError, match="cannot be used for constrained decoding"):
        engine.submit([1], schema=Action)


# -- choice fields narrowed per request ------------------------------------------------------------------

Someone = Annotated[str, msgspec.Meta(min_length=1, max_length=40, extra_json_schema={"x-choice": "person"})]


class Greet(msgspec.Struct, tag="greet"):
    to: Someone
    also: Someone | None = None
    crowd: list[Someone] = []


class Rest(msgspec.Struct, tag="rest"):
    pass


def test_narrowed_choice_fields_take_only_the_names_given(engine):
    from swarm.runtime import Narrowed

    names = ("Mira", "Zoë", 'O"Hara')
    schema = Narrowed(Greet | Rest, {"person": names})
    outs = engine.generate(["Say hello"] * 40, sampled(40), schema=schema)
    assert_valid(outs, Greet | Rest)
    greets = [o.value for o in outs if isinstance(o.value, Greet)]
    assert greets and all({g.to, g.also, *g.crowd} <= {*names, None} for g in greets)
    # equal narrowings share one grammar; the decoded value is the type, not a dict
    assert Narrowed(Greet | Rest, {"person": list(names)}) == schema and hash(schema) == hash(
        Narrowed(Greet | Rest, {"person": names}))


def test_a_kind_with_no_names_leaves_optional_fields_empty_and_refuses_required_ones(engine):
    from swarm.runtime import Narrowed
    from swarm.runtime.grammar import narrow_schema

    class Lonely(msgspec.Struct, tag="lonely"):
        also: Someone | None = None
        crowd: list[Someone] = []

    outs = engine.generate(["Alone"] * 12, sampled(12), schema=Narrowed(Lonely, {"person": ()}))
    assert_valid(outs, Lonely)
    assert all(o.value.also is None and o.value.crowd == [] for o in outs)
    with pytest.raises(SchemaError, match="'to' needs a person name"):
        engine.submit("Say hello", SamplingParams(max_tokens=40), schema=Narrowed(Greet, {"person": ()}))
    # a kind not given stays a free string; the marker itself is harmless to llguidance
    free = narrow_schema(msgspec.json.schema(Greet), {"place": ["mill"]})
    assert free["$defs"]["Greet"]["properties"]["to"]["x-choice"] == "person"
    outs = engine.generate(["Hello"] * 4, sampled(4), schema=Greet)
    assert_valid(outs, Greet)


def test_errors_name_a_union_by_its_members(engine):
    with pytest.raises(SchemaError, match=r"the schema Vote \| Say \| Move does not fit max_tokens=2"):
        engine.submit("The guard", SamplingParams(max_tokens=2), schema=Action)
