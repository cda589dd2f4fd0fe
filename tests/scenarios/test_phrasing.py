import random

import pytest

from swarm.scenarios._phrasing import Grammar


def test_rules_expand_recursively_and_slots_fill_in():
    g = Grammar({"greet": ["hello", "good {time}"], "time": ["morning", "evening"]})
    lines = {g.say("{greet}, {name}!", random.Random(i), name="Mira") for i in range(50)}
    assert lines == {"Hello, Mira!", "Good morning, Mira!", "Good evening, Mira!"}


def test_variety_multiplies_and_errors_are_clear():
    g = Grammar({"a": [str(i) for i in range(10)], "b": [str(i) for i in range(10)]})
    assert len({g.say("{a}{b}{a}", random.Random(i)) for i in range(400)}) > 300
    with pytest.raises(KeyError, match="no rule or slot called 'c'"):
        g.say("{c}", random.Random(0))
    with pytest.raises(ValueError, match="too deep"):
        Grammar({"x": ["{x}"]}).say("{x}", random.Random(0))
    with pytest.raises(ValueError, match="no alternatives: y"):
        Grammar({"y": []})
