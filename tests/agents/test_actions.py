"""Action types: the tagged union, its validation, JSON round trips, and that the runtime compiles it."""

import typing

import msgspec
import pytest

from swarm.agents.actions import (
    BASE_ACTIONS,
    Action,
    Give,
    Insight,
    Move,
    Name,
    PlanUpdate,
    Say,
    Use,
    Wait,
    action_union,
)


class Vote(Action, tag="vote"):
    target: Name


class Shout(Action, tag="say"):  # clashes with Say
    text: str


class Plain(msgspec.Struct, tag="plain"):
    x: int = 0


EXAMPLES = [Say(text="Hello, Tomas!", to="Tomas"), Say(text="Anyone?"), Move(to="square"),
            Give(item="bread", to="Mira"), Use(item="key", target="door"), Use(item="lute"), Wait()]


def test_every_base_action_round_trips_through_the_union_as_tagged_json():
    union = action_union(*BASE_ACTIONS)
    for action in EXAMPLES:
        data = msgspec.json.encode(action)
        assert msgspec.json.decode(data)["type"] == msgspec.inspect.type_info(type(action)).tag
        assert msgspec.json.decode(data, type=union) == action
    assert msgspec.json.decode(b'{"type":"wait"}', type=union) == Wait()


def test_string_fields_are_bounded_so_generation_terminates():
    union = action_union(*BASE_ACTIONS)
    with pytest.raises(msgspec.ValidationError, match="length"):
        msgspec.json.decode(msgspec.json.encode({"type": "say", "text": "x" * 201}), type=union)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"type":"move","to":""}', type=union)
    schema = msgspec.json.schema(union)
    for name in ("Say", "Move", "Give", "Use"):
        for prop in schema["$defs"][name]["properties"].values():
            strings = [prop] if prop.get("type") == "string" else [p for p in prop.get("anyOf", [])
                                                                    if p.get("type") == "string"]
            assert all("maxLength" in s for s in strings)


def test_actions_are_frozen():
    with pytest.raises(AttributeError):
        Say(text="hi").text = "bye"


def test_action_union_takes_scenario_actions():
    union = action_union(*BASE_ACTIONS, Vote)
    assert typing.get_args(union) == (*BASE_ACTIONS, Vote)
    assert msgspec.json.decode(b'{"type":"vote","target":"Mira"}', type=union) == Vote(target="Mira")
    assert action_union(Vote) is Vote


@pytest.mark.parametrize("bad, why", [
    ((), "at least one"),
    ((Say, Shout), "share the tag 'say'"),
    ((Say, Say), "share the tag"),
    ((Action,), "not a subclass"),
    ((Plain,), "not a subclass"),
    ((Say, "move"), "not a subclass"),
    ((Say(text="hi"),), "not a subclass"),
])
def test_action_union_rejects_bad_members(bad, why):
    with pytest.raises(TypeError, match=why):
        action_union(*bad)


def test_insight_and_plan_update_bounds():
    assert msgspec.json.decode(b'{"text":"Mira trusts Tomas"}', type=Insight) == Insight(text="Mira trusts Tomas")
    assert msgspec.json.decode(b'{"steps":["bake","sell"]}', type=PlanUpdate).steps == ["bake", "sell"]
    for steps in ([], ["a"] * 5, ["x" * 81]):
        with pytest.raises(msgspec.ValidationError):
            msgspec.json.decode(msgspec.json.encode({"steps": steps}), type=PlanUpdate)


def test_the_runtime_compiles_the_schemas_and_every_sample_decodes(tmp_path):
    from swarm.runtime import Engine, EngineConfig, SamplingParams
    from swarm.runtime.random_model import tiny_config, write_random_model

    engine = Engine.from_pretrained(write_random_model(tmp_path, tiny_config(vocab_size=384)),
                                    config=EngineConfig(kv_cache_tokens=16384))
    union = action_union(*BASE_ACTIONS, Vote)
    schemas = [union] * 6 + [Insight, PlanUpdate]
    # worst case on a random model: every character of a 200-character string as up to four byte tokens
    params = [SamplingParams(max_tokens=1200, temperature=1.0, seed=s) for s in range(len(schemas))]
    outs = engine.generate(["<|im_start|>user\nact<|im_end|>\n<|im_start|>assistant\n"] * len(schemas), params,
                           schema=schemas)
    for out, schema in zip(outs, schemas, strict=True):
        assert out.finish_reason == "stop", (out.finish_reason, out.text, out.error)
        assert msgspec.json.decode(out.text, type=schema) == out.value
        assert isinstance(out.value, typing.get_args(schema) or schema)


def test_narrow_limits_a_field_to_the_choices_of_the_moment():
    from swarm.agents.actions import Give, narrow

    g = narrow(Give, "to", ("Mira", "Bob"))
    assert narrow(Give, "to", ("Mira", "Bob")) is g  # cached: unions and grammars are reused
    assert [f.name for f in msgspec.structs.fields(g)] == [f.name for f in msgspec.structs.fields(Give)]
    assert msgspec.json.decode(b'{"type":"give","item":"coin","to":"Bob"}', type=g) == g(item="coin", to="Bob")
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"type":"give","item":"coin","to":"Zed"}', type=g)
    with pytest.raises(ValueError, match="no field 'target'"):
        narrow(Give, "target", ("x",))
    with pytest.raises(ValueError, match="at least one choice"):
        narrow(Give, "to", ())
