"""The werewolf game's players and their secret roles: the cast of twelve, how many werewolves a game of each
size deals, and what each role is told."""

from __future__ import annotations

import random

# name, trade, traits. The trade is the persona's public `role` (everyone sees it when a player joins);
# the secret role is told in the persona's goals, which only its own prompt shows.
CAST = [("Ansel", "woodcutter", "blunt, strong"), ("Brin", "shepherd", "nervous, honest"),
        ("Corra", "midwife", "sharp-tongued"), ("Dunstan", "reeve", "old, slow, stubborn"),
        ("Elsbeth", "alewife", "cheerful, nosy"), ("Fenwick", "pedlar", "sly, charming"),
        ("Gisela", "widow", "pious, severe"), ("Hob", "ploughman", "simple, loyal"),
        ("Isolde", "weaver", "proud, clever"), ("Jasper", "hunter", "young, quick to anger"),
        ("Katrin", "herbwife", "watchful, quiet"), ("Leof", "tinker", "talkative, restless")]
WOLVES = {5: 1, 6: 1, 7: 2, 8: 2, 9: 2, 10: 3, 11: 3, 12: 3}
GOALS = {"werewolf": "you are secretly a werewolf: kill a villager each night and escape suspicion by day",
         "seer": "you are secretly the seer: inspect one player each night, and lead the vote against the wolves",
         "villager": "you are a plain villager: find the werewolves and hang them"}


def deal(names: list[str], wolves: int, seer: bool, rng: random.Random) -> dict[str, str]:
    """Each player's secret role, shuffled by the seed: `wolves` werewolves, a seer if `seer`, the rest
    villagers."""
    dealt = ["werewolf"] * wolves + ["seer"] * int(seer)
    dealt += ["villager"] * (len(names) - len(dealt))
    rng.shuffle(dealt)
    return dict(zip(names, dealt, strict=True))


def goal(name: str, roles: dict[str, str]) -> str:
    """What `name`'s own prompt says of its role: a werewolf also learns its pack."""
    text = GOALS[roles[name]]
    if roles[name] == "werewolf":
        mates = [w for w in roles if roles[w] == "werewolf" and w != name]
        text += f"; {'your pack: ' + ', '.join(mates) if mates else 'you hunt alone'}"
    return text
