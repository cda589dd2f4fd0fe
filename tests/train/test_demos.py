"""Demonstrations: exploration plays random actions in training runs while keeping the scripted answers."""

import msgspec

from swarm.train.demos import DemoPlan, run_demos


def demos(explore: float) -> list:
    plan = DemoPlan(("support_desk",), seeds=2, ticks=8, heldout_every=2, explore=explore)
    return list(run_demos(plan))


def test_explored_turns_play_a_random_action_and_keep_the_scripted_answer():
    plain, explored = demos(0.0), demos(0.5)
    assert all(d.played is None for _, d in plain)
    train = [d for split, d in explored if split == "train"]
    held = [d for split, d in explored if split == "heldout"]
    played = [d for d in train if d.played is not None]
    assert 0.2 < len(played) / sum(d.kind == "act" for d in train) < 0.8
    assert all(d.kind == "act" for d in played)  # reflections and plans are never explored
    assert all(d.played is None for d in held)  # held-out runs are the teacher's alone
    assert sum(d.played != d.completion for d in played) > len(played) // 2
    for d in played:  # both are whole actions of the turn's kinds
        assert msgspec.json.decode(d.played)["type"] and msgspec.json.decode(d.completion)["type"]
    # the teacher's answer is what a plain run would record; the world then goes its own way
    assert [d.messages for s, d in explored if s == "heldout"] == [d.messages for s, d in plain if s == "heldout"]
    assert [d.messages for s, d in explored if s == "train"] != [d.messages for s, d in plain if s == "train"]
