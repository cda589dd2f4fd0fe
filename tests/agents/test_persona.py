"""Persona: validation at construction and the system message it renders."""

import msgspec
import pytest

from swarm.agents import Persona

WORLD = "A village with a tavern and a square."


def test_default_system_message():
    p = Persona(name="Mira", role="the innkeeper", traits="gossips, kind", goals=("keep the tavern full", "learn"))
    text = p.system_message(WORLD)
    assert text.startswith("You are Mira, the innkeeper.\n")
    for part in ("Traits: gossips, kind.", "Goals: keep the tavern full; learn.", WORLD, "JSON"):
        assert part in text
    bare = Persona(name="Tomas").system_message("")
    assert bare.startswith("You are Tomas.\n") and "Traits" not in bare and "Goals" not in bare


def test_custom_template_renders_every_placeholder_and_literal_braces():
    p = Persona(name="Mira", role="innkeeper", traits="sly", goals=("sell ale",),
                system_prompt="{name} ({role}, {traits}) in {world}; wants {goals}. Reply {{json}}.")
    assert p.system_message("Oakvale") == "Mira (innkeeper, sly) in Oakvale; wants sell ale. Reply {json}."


@pytest.mark.parametrize("template, named", [("Hi {nme}", "{nme}"), ("{name} {0}", "{0}"), ("{}", "{}"),
                                             ("{name.upper}", "{name.upper}")])
def test_unknown_placeholders_are_named(template, named):
    with pytest.raises(ValueError, match=named.replace("{", r"\{").replace("}", r"\}").replace(".", r"\.")):
        Persona(name="Mira", system_prompt=template)


@pytest.mark.parametrize("template", ["{name:>50000000}", "{name!r}", "{goals:{role}}", "{world!s:^9}"])
def test_format_specs_and_conversions_are_refused(template):
    # a 17-byte template must not render to 50 MB (it stalled the server for 80 s)
    with pytest.raises(ValueError, match="no format spec or conversion"):
        Persona(name="Mira", system_prompt=template)


def test_malformed_template_and_empty_name():
    with pytest.raises(ValueError, match="not a valid template"):
        Persona(name="Mira", system_prompt="You are {name")
    for name in ("", "   "):
        with pytest.raises(ValueError, match="non-empty name"):
            Persona(name=name)


def test_goals_are_a_tuple():
    p = Persona(name="Mira", goals=["a", "b"])
    assert p.goals == ("a", "b") and hash(p) == hash(Persona(name="Mira", goals=("a", "b")))
    with pytest.raises(ValueError, match="not one string"):
        Persona(name="Mira", goals="sell ale")


def test_round_trip_through_builtins_and_validation_on_decode():
    p = Persona(name="Mira", role="innkeeper", adapter="innkeeper", goals=("x",), system_prompt="{name}: {world}")
    assert msgspec.convert(msgspec.to_builtins(p), Persona) == p
    with pytest.raises(msgspec.ValidationError, match="unknown placeholder"):
        msgspec.convert({"name": "Mira", "system_prompt": "{who}"}, Persona)
    with pytest.raises(AttributeError):
        p.name = "Tomas"
