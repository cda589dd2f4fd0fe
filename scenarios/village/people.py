"""The village's layout and people: quarters of 24 villagers with their own square, tavern, mill and market,
lanes of 8 homes, and the cast (the default twelve, then generated villagers)."""

from __future__ import annotations

import random

PLACES = {"square": "the well, the notice board, geese", "tavern": "low beams, an ale cask, a fire",
          "mill": "the millstone turning, flour dust", "market": "stalls under awnings"}
ROUTES = [("square", "tavern", 2), ("square", "market", 1), ("square", "mill", 5), ("tavern", "market", 2)]
QUARTERS = ["", "riverside", "hillside", "east end", "west end", "northgate", "southgate", "old town", "bridgefoot"]
LANES = ["elm lane", "oak row", "ash court", "willow walk", "birch close", "rowan lane", "hazel row", "alder yard",
         "thorn lane", "yew court", "pine row", "beech walk", "maple close", "linden lane", "holly row", "cedar yard"]
QUARTER, LANE = 24, 8  # villagers per quarter (its own square, tavern, mill, market), per lane of homes

# name, role, traits, style: the default town (12). Bigger towns add generated villagers.
CAST = [("Mira", "innkeeper", "warm, hears everything", "gossip"),
        ("Bram", "miller", "proud, tight-lipped", "plain"),
        ("Tova", "baker", "kind, curious", "gossip"),
        ("Ilse", "weaver", "sharp-eyed, dry", "plain"),
        ("Oren", "farmer", "slow to speak, steady", "plain"),
        ("Pell", "porter", "young, eager, loud", "gossip"),
        ("Wren", "herbalist", "quiet, observant", "plain"),
        ("Cato", "merchant", "talks business, likes a deal", "gossip"),
        ("Hedda", "cook", "bossy, generous", "gossip"),
        ("Jory", "carter", "cheerful, always late", "plain"),
        ("Sabe", "potter", "dreamy, patient", "plain"),
        ("Lune", "fiddler", "merry, a little vain", "gossip")]
WORKPLACE = {"innkeeper": "tavern", "cook": "tavern", "fiddler": "tavern", "miller": "mill", "porter": "mill",
             "farmer": "mill", "carter": "mill", "baker": "market", "weaver": "market", "herbalist": "market",
             "merchant": "market", "potter": "market", "cheesemaker": "market", "cobbler": "market",
             "fishmonger": "market", "chandler": "market"}
GOALS = {"tavern": "keep the tavern full and merry", "mill": "keep the mill turning",
         "market": "sell my wares at a fair price"}
FIRST = ["Ada", "Bren", "Cass", "Dell", "Edda", "Finn", "Greta", "Hal", "Ivo", "Jana", "Kit", "Lars", "Maud", "Nell",
         "Odo", "Pia", "Quin", "Rolf", "Sela", "Tam", "Ulla", "Vik", "Wynn", "Yara", "Zeb", "Agna", "Bo", "Cleo",
         "Dag", "Elin", "Fern", "Gil", "Hilde", "Ines", "Jot", "Kasia", "Lio", "Mads", "Nora", "Otto"]
FAMILY = ["Holt", "Fenn", "Marsh", "Brook", "Thatch", "Cooper", "Reed", "Wick", "Stone", "Ashby", "Fallow", "Hay",
          "Moss", "Penn", "Rowe", "Sedge", "Tarn", "Vane", "Weir", "Yarrow", "Birch", "Crane", "Dale", "Ember",
          "Flint"]
TRAITS = ["chatty", "shy", "nosy", "grumpy", "cheerful", "careful", "lazy", "hard-working", "pious", "boastful",
          "kind", "sly", "absent-minded", "honest", "anxious", "stubborn"]


def in_quarter(quarter: int, place: str) -> str:
    if quarter == 0:
        return place
    name = QUARTERS[quarter] if quarter < len(QUARTERS) else f"ward {quarter + 1}"
    return f"{name} {place}"


def lane(i: int) -> str:
    return LANES[i] if i < len(LANES) else f"{LANES[i % len(LANES)]} {i // len(LANES) + 1}"


def cast(n: int, rng: random.Random) -> list[tuple[str, str, str, str]]:
    out = CAST[:n]
    roles = [r for r in WORKPLACE if r != "innkeeper"]
    for i in range(n - len(out)):
        name = f"{FIRST[i % len(FIRST)]} {FAMILY[i // len(FIRST) % len(FAMILY)]}"
        if i >= len(FIRST) * len(FAMILY):
            name += f" {i // (len(FIRST) * len(FAMILY)) + 1}"
        traits = ", ".join(rng.sample(TRAITS, 2))
        out.append((name, rng.choice(roles), traits, rng.choice(("gossip", "plain"))))
    return out
