"""village: an afternoon and evening in a small river town, and a piece of news passed by word of mouth.

What happens. The clock starts at 14:00, ten minutes a tick. Villagers work at the mill, the market
or the tavern until 17:00, spend the evening at the tavern or on the square, and go home to their
lane at 21:00 (and back to work at 08:00 the next day). Each villager's day is a timetable of plan
steps with due ticks ("Be at the mill: work until 17:00."), so the prompt always says where to be.
At tick 0 a runner tells one villager of an evening gathering: what, where and when. Whoever knows
may pass it on, aloud (Say, everyone here hears) or privately (Tell); whoever hears it from someone
who knows learns it too, finds "Spread the word: ..." in their plan, and gets a step to be at the
gathering in time.

Actions: Say, Move, Wait (the framework's), Work(task) at one's own workplace, and Tell(to, news)
to someone here (only they hear it).

Metrics: `informed` (villagers who know of the gathering) and `informed_share`; `attendance`
(villagers who knew and were at the place while it lasted) and `attendance_share`; `conversations`
(Say and Tell events); `gathering` (what, where, when).

Options: `agents` (default 12, up to 5,000) and `gathering` (its time, "18:30"), e.g.
`Simulation.from_scenario("village", model="scripted", agents=30, gathering="19:00")`.

Scale: every 24 villagers make a quarter with its own square, tavern, mill and market; every 8 share a
lane of homes; the quarters' squares join in one road (so a place holds tens of villagers, not hundreds).

    swarm run village --model scripted --ticks 40 --seed 1 --headless --json
    swarm run village --model random --ticks 40 --seed 1 --headless --json      # the floor
    swarm run village --model scripted --agents 1000 --ticks 3 --headless
"""

from __future__ import annotations

import math
import random
import re
from typing import Annotated

import msgspec

from swarm import Persona
from swarm.agents.actions import Action, Give, Insight, Move, Person, PlanUpdate, Say, Use, Wait
from swarm.agents.plans import OPEN
from swarm.scenarios._phrasing import Grammar

MAIN_METRIC = "informed_share"  # the figure benchmarks/scenarios.py compares across policies
PREAMBLE = ("A small town by a river. People work at the mill and the market by day, meet at the tavern or "
            "on the square in the evening, and sleep at home. News travels by word of mouth.")
START, MINUTES_PER_TICK = 14 * 60, 10  # the run starts at 14:00
MORNING, EVENING, NIGHT = 8 * 60, 17 * 60, 21 * 60
QUARTER, LANE = 24, 8  # villagers per quarter (its own square, tavern, mill, market), per lane of homes
GATHERING_MINUTES = 60
MAX_AGENTS = 5000

# what the gathering is, and the word that marks talk of it (no other line the villagers say uses it)
GATHERINGS = [("harvest supper", "harvest"), ("lantern walk", "lantern"), ("wedding dance", "wedding"),
              ("bonfire night", "bonfire"), ("mummers' play", "mummers"), ("flood council", "flood")]
GATHERING_PLACES = ("square", "mill", "market")

PLACES = {"square": "the well, the notice board, geese", "tavern": "low beams, an ale cask, a fire",
          "mill": "the millstone turning, flour dust", "market": "stalls under awnings"}
ROUTES = [("square", "tavern", 2), ("square", "market", 1), ("square", "mill", 5), ("tavern", "market", 2)]
QUARTERS = ["", "riverside", "hillside", "east end", "west end", "northgate", "southgate", "old town", "bridgefoot"]
LANES = ["elm lane", "oak row", "ash court", "willow walk", "birch close", "rowan lane", "hazel row", "alder yard",
         "thorn lane", "yew court", "pine row", "beech walk", "maple close", "linden lane", "holly row", "cedar yard"]

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


class Work(Action, tag="work"):
    """Do your trade, at your own workplace (the mill, the market or the tavern)."""

    task: Annotated[str, msgspec.Meta(min_length=1, max_length=60, description="what you do")]


class Tell(Action, tag="tell"):
    """Tell someone here something in private: only they hear it."""

    to: Person
    news: Annotated[str, msgspec.Meta(min_length=1, max_length=160, description="what you tell them")]


def build(sim, agents: int = 12, gathering: str = "18:30"):
    if not 2 <= agents <= MAX_AGENTS:
        raise ValueError(f"the village takes 2 to {MAX_AGENTS} agents, not {agents}")
    begins = _minute_of(gathering)
    if not START < begins < 24 * 60:
        raise ValueError(f"the gathering must be later on day 1 than the 14:00 start, not {gathering!r}")
    rng = random.Random(sim.seed)
    world, state = sim.world, sim.state
    world.preamble, world.minutes_per_tick, world.start_minute = PREAMBLE, MINUTES_PER_TICK, START
    sim.wake_after = None  # the timetable wakes villagers; asking sleepers every few ticks would cost 20% more turns
    quarters = math.ceil(agents / QUARTER)
    for q in range(quarters):
        for place, description in PLACES.items():
            world.add_place(_in(q, place), description)
        for a, b, minutes in ROUTES:
            world.connect(_in(q, a), _in(q, b), minutes=minutes)
        if q:
            world.connect(_in(q - 1, "square"), _in(q, "square"), minutes=8)
    for lane in range(math.ceil(agents / LANE)):
        world.add_place(_lane(lane), "homes")
        world.connect(_lane(lane), _in(lane * LANE // QUARTER, "square"), minutes=3)

    # where each villager works, spends the evening and sleeps; who knows of the gathering (and the tick to
    # set off for it); who attended (and when they were first seen there); each villager's current plan step
    state.update(home={}, work={}, evening={}, informed={}, attended={}, step={}, conversations=0)
    for i, (name, role, traits, style) in enumerate(_cast(agents, rng)):
        q, kind = i // QUARTER, WORKPLACE[role]
        state["home"][name], state["work"][name] = _lane(i // LANE), _in(q, kind)
        state["evening"][name] = _in(q, "tavern" if kind == "tavern" or rng.random() < 0.65 else "square")
        sim.add_agent(Persona(name=name, role=role, traits=traits, goals=(GOALS[kind],), style=style),
                      at=state["work"][name])
    topic, keyword = rng.choice(GATHERINGS)
    tick = math.ceil((begins - START) / MINUTES_PER_TICK)
    state["gathering"] = {"topic": topic, "keyword": keyword, "place": rng.choice(GATHERING_PLACES),
                          "time": gathering, "tick": tick, "end": tick + GATHERING_MINUTES // MINUTES_PER_TICK,
                          "first": rng.choice(list(sim.agents)[:QUARTER])}
    for agent in sim.agents.values():
        _keep_timetable(sim, agent, 0)

    sim.remove_actions(Give, Use)  # nothing in this town is carried about
    sim.add_actions(Work, Tell)

    @sim.actions_for
    def offered(sim, agent):
        """Work only at one's own workplace: the rule is in the choices, not in a fail after the fact."""
        if sim.world.place_of(agent.id) == sim.state["work"][agent.id]:
            return sim.action_types
        return [t for t in sim.action_types if t is not Work]

    @sim.on(Work)
    def work(world, actor, action):
        here, mine = world.place_of(actor), sim.state["work"].get(actor)
        if here != mine:
            return world.fail(actor, action, f"you work at the {mine}, and this is the {here}")
        # nobody else is woken by someone at their work: only talk wakes people
        return world.event("work", f"{actor} works at the {here}: {action.task}.", actor=actor, place=here,
                           audience=[], data={"task": action.task}, importance=1.0)

    @sim.on(Tell)
    def tell(world, actor, action):
        why = world.absent(actor, action.to)
        if why:
            return world.fail(actor, action, why)
        return world.event("tell", f'{actor} tells {action.to}: "{action.news}"', actor=actor,
                           place=world.place_of(actor), target=action.to, importance=6.0,
                           audience=[action.to], data={"text": action.news})

    @sim.every_tick
    def town(sim, events):
        world, s = sim.world, sim.state
        g, tick, out = s["gathering"], sim.world.tick, []
        if tick == 0:
            first = g["first"]
            out.append(world.event("news", f"A runner from the reeve tells {first}: the {g['topic']} is at the "
                                   f"{g['place']} at {g['time']} tonight. Pass it on!", actor="runner",
                                   place=world.place_of(first), target=first, importance=7.0,
                                   audience=[first]))
            _learn(sim, first)
        for e in events:
            if e.kind in ("say", "tell"):
                s["conversations"] += 1
                if e.actor in s["informed"] and _mentions(e.data.get("text", ""), g):
                    for who in world.observers(e):
                        _learn(sim, who)
        if tick == g["tick"]:
            out.append(world.event("gathering", f"The {g['topic']} begins at the {g['place']}.", place=g["place"],
                                   importance=5.0))
        if g["tick"] <= tick < g["end"]:
            for who in world.agents_at(g["place"]):
                if who in s["informed"]:
                    s["attended"].setdefault(who, tick)
        if tick == g["end"] - 1:
            out.append(world.event("gathering", f"The {g['topic']} at the {g['place']} is over.", place=g["place"],
                                   importance=3.0))
        for agent in sim.agents.values():
            _keep_timetable(sim, agent, tick + 1)
        return out

    @sim.next_act
    def timetable(sim, agent):
        """A villager with nothing to answer next acts when its timetable step changes (talk may wake it
        sooner): in ticks from the coming one."""
        coming = sim.world.tick + 1
        return _next_change(sim, agent.id, coming) - coming

    @sim.metric("informed")
    def informed(sim):
        return len(sim.state["informed"])

    @sim.metric("informed_share")
    def informed_share(sim):
        return round(len(sim.state["informed"]) / len(sim.agents), 4)

    @sim.metric("attendance")
    def attendance(sim):
        return len(sim.state["attended"])

    @sim.metric("attendance_share")
    def attendance_share(sim):
        return round(len(sim.state["attended"]) / len(sim.agents), 4)

    @sim.metric("conversations")
    def conversations(sim):
        return sim.state["conversations"]

    @sim.metric("gathering")
    def gathering_is(sim):
        g = sim.state["gathering"]
        return f"{g['topic']} at the {g['place']}, {g['time']} (tick {g['tick']})"


# -- the town's layout and people -----------------------------------------------------------


def _in(quarter: int, place: str) -> str:
    if quarter == 0:
        return place
    name = QUARTERS[quarter] if quarter < len(QUARTERS) else f"ward {quarter + 1}"
    return f"{name} {place}"


def _lane(i: int) -> str:
    return LANES[i] if i < len(LANES) else f"{LANES[i % len(LANES)]} {i // len(LANES) + 1}"


def _cast(n: int, rng: random.Random) -> list[tuple[str, str, str, str]]:
    cast = CAST[:n]
    roles = [r for r in WORKPLACE if r != "innkeeper"]
    for i in range(n - len(cast)):
        name = f"{FIRST[i % len(FIRST)]} {FAMILY[i // len(FIRST) % len(FAMILY)]}"
        if i >= len(FIRST) * len(FAMILY):
            name += f" {i // (len(FIRST) * len(FAMILY)) + 1}"
        traits = ", ".join(rng.sample(TRAITS, 2))
        cast.append((name, rng.choice(roles), traits, rng.choice(("gossip", "plain"))))
    return cast


def _minute_of(clock: str) -> int:
    m = re.fullmatch(r"(\d{1,2}):(\d\d)", clock)
    if not m or int(m[1]) > 23 or int(m[2]) > 59:
        raise ValueError(f"a time of day is HH:MM, not {clock!r}")
    return int(m[1]) * 60 + int(m[2])


# -- who knows, and where each villager should be --------------------------------------------


def _mentions(text: str, g: dict) -> bool:
    return g["keyword"] in text.lower() or g["time"] in text


def _learn(sim, who: str) -> None:
    """`who` now knows of the gathering: they set off in time to walk there from their evening place."""
    s, g = sim.state, sim.state["gathering"]
    if who in s["informed"] or who not in sim.agents:
        return
    walk = sim.world.travel_minutes(s["evening"][who], g["place"]) or 0.0
    s["informed"][who] = max(sim.world.tick + 1, g["tick"] - math.ceil(walk / sim.world.minutes_per_tick))


def _step_text(sim, who: str, tick: int) -> str:
    """The timetable: where `who` should be at `tick`, and what for."""
    s, g = sim.state, sim.state["gathering"]
    minute = (sim.world.start_minute + tick * sim.world.minutes_per_tick) % (24 * 60)
    go = s["informed"].get(who)
    if go is not None and go <= tick < g["end"]:
        return f"Be at the {g['place']}: the {g['topic']} at {g['time']}."
    if MORNING <= minute < EVENING:
        text = f"Be at the {s['work'][who]}: work until 17:00."
    elif EVENING <= minute < NIGHT:
        text = f"Be at the {s['evening'][who]}: spend the evening there."
    else:
        text = f"Be at the {s['home'][who]}: go home and sleep."
    if go is not None and tick < g["tick"]:
        text += f" Spread the word: {g['topic']}, {g['place']}, {g['time']}."
    return text


def _next_change(sim, who: str, tick: int) -> float:
    """The first tick after `tick` at which `who`'s timetable step differs from the one it holds: where the
    clock passes 08:00, 17:00 or 21:00, or (for those who know) the gathering's hours."""
    now, s = sim.state["step"].get(who), sim.state
    w = sim.world
    minute = w.start_minute + tick * w.minutes_per_tick
    turns = []
    for at in (MORNING, EVENING, NIGHT):
        at += minute - minute % (24 * 60)
        if at <= minute:
            at += 24 * 60
        turns.append(math.ceil((at - w.start_minute) / w.minutes_per_tick - 1e-9))
    go, g = s["informed"].get(who), s["gathering"]
    if go is None:
        return min(turns)  # without the gathering every turn of the clock changes the step
    for t in sorted({*turns, go, g["tick"], g["end"]}):
        if t > tick and _step_text(sim, who, t) != now:
            return t
    return math.inf


def _keep_timetable(sim, agent, tick: int) -> None:
    """Make the agent's current plan step the timetable's for `tick`: a new step due then (which wakes the
    agent), and every other open step done."""
    text = _step_text(sim, agent.id, tick)
    if sim.state["step"].get(agent.id) == text:
        return
    plan = agent.plan
    root = plan.top_goal()
    if root is None:
        root = plan.add_goal(agent.persona.goals[0] if agent.persona.goals else "get through the day")
    new = plan.add_goal(text, parent=root, due=tick)
    for step in list(plan.graph.successors(root)):
        if step != new and plan.get(step).status in OPEN:
            plan.set_status(step, "done")
    sim.state["step"][agent.id] = text


# -- the scripted villager ----------------------------------------------------------------------

COMMON = {
    "grain": ["rye", "barley", "wheat", "oats", "spelt", "buckwheat"],
    "ware": ["bread", "apples", "wool", "pots", "cheese", "candles", "onions", "eels", "boots", "honey", "cabbages",
             "rope", "plums", "leeks"],
    "stew": ["mutton", "bean", "eel", "turnip", "barley", "rabbit", "leek"],
    "task_mill": ["grind the {grain}", "haul {grain} sacks up to the loft", "sweep up the flour", "grease the axle",
                  "mend a split sack", "weigh out the {grain}", "clear weed from the sluice", "dress the millstone",
                  "load the cart with {grain} flour", "tally the {grain} sacks", "sift the {grain} meal"],
    "task_market": ["set out the {ware}", "count the takings", "haggle over {ware}", "stack crates of {ware}",
                    "sweep the stall", "sell a basket of {ware}", "bundle {ware} for a customer", "fix the awning",
                    "price the {ware}", "shoo pigeons off the {ware}", "polish the {ware}"],
    "task_tavern": ["pour ale for the regulars", "wipe down the tables", "stir the {stew} stew", "roll in a cask",
                    "bring in wood for the fire", "wash the mugs", "scrub the floor", "tune the fiddle",
                    "chop onions for the {stew} stew", "trim the lamp wicks", "bake {stew} pies"],
    "weather": ["the rain's holding off", "it's turned cold", "the wind's up off the river", "it's warm for once",
                "clouds are piling over the hill", "there's fog on the water", "the sun's out at last",
                "there's thunder about", "the river's running high", "a frost is coming", "it's close and muggy",
                "the swallows are flying low"],
    "subject": ["the price of {ware}", "the new ferry", "the miller's dog", "the autumn fair", "{grain} prices",
                "the old well", "the priest's sermon", "the smith's temper", "the geese on the square", "the tax man",
                "the leak in the chapel roof", "the cooper's new cart", "the {stew} stew", "the road to the city",
                "the reeve's new hat", "the goat that ate the notice"],
    "who": ["the miller's wife", "the new cooper", "the priest", "old widow Hask", "the smith's boy", "the tanner",
            "the bailiff", "the ferryman", "the goose girl", "the candlemaker", "the reeve", "the tinker"],
    "doing": ["sneaking about after dark", "singing to the geese", "counting coins behind the chapel",
              "buying ribbons", "arguing with a goat", "poking about the old well", "walking out before dawn",
              "whistling at the bailiff", "hiding a barrel in the reeds", "asking after the {ware} seller",
              "talking to the river", "wearing two hats"],
}

VOICES = {
    "gossip": Grammar({**COMMON,
        "open": ["Oh, {name},", "Well now,", "Listen,", "Darling,", "You'll never guess,", "Between you and me,",
                 "Ooh,", "Mark my words,", "Lean in,", "{name}, dear,", "Goodness,", "Now then,",
                 "Good {daypart}, {name},"],
        "wow": ["Can you believe it?", "I nearly dropped my basket!", "Not a word to anyone!", "Well I never!",
                "The cheek of it!", "I'm all aflutter.", "Fancy that!", "And in broad daylight!", ""],
        "chat": ["{open} {who} was {doing}! {wow}", "{open} I hear {who} has been {doing}. {wow}",
                 "{open} what do you make of {subject}?", "{open} {weather}, and {who} out {doing}!",
                 "{open} everyone's talking about {subject}. {wow}", "{open} {weather}. And {subject}, {wow_low}",
                 "{open} have you seen {who}? {doing_cap}, {wow_low}"],
        "wow_low": ["can you believe it?", "of all things!", "I ask you!", "the scandal of it!", "honestly!"],
        "doing_cap": ["Out {doing}", "Caught {doing}", "Seen {doing}", "Off {doing}"],
        "reply": ["{agree}, {name}! {chat}", "Oh, {name}, {agree_low}, and {weather}, too!", "{agree}! And {subject}?",
                  "You don't say, {name}! {wow}", "{agree}. I heard {who} was {doing}!"],
        "agree": ["True, true", "Oh, I know", "Isn't it just", "You're so right", "Exactly what I said", "Ha"],
        "agree_low": ["you're so right", "I know, I know", "don't I know it", "it's the talk of the town"],
        "news": ["{open} the {topic} is on at the {gplace}, {time} tonight! {urge}",
                 "{open} did nobody tell you? The {topic}, the {gplace}, {time}! {urge}",
                 "The {topic}! At the {gplace}, {time}! {urge}",
                 "{open} {time} at the {gplace}: the {topic}. {urge}",
                 "{open} guess what's on tonight: the {topic}, at the {gplace} at {time}! {urge}"],
        "urge": ["Everyone's going!", "Don't you dare miss it.", "Tell your neighbours!", "Wear something nice.",
                 "I wouldn't miss it for the world.", "Bring the little ones!", "Pass it on, quick!",
                 "It'll be the talk of the year.", "The whole town will be there."],
        "thanks": ["Ooh, the {topic}? At {time}? {excited}", "The {gplace} at {time}! {excited}",
                   "{name}, you angel! The {topic}, {time}. {excited}", "The {topic}! {excited} See you at {time}.",
                   "Oh my, the {topic}! I'll be at the {gplace} by {time}. {excited}"],
        "excited": ["I'll be there!", "I must find my good shawl.", "I'll tell everyone!", "How thrilling!",
                    "What a night it'll be!", "Wild horses couldn't stop me.", "Save me a spot!"],
        "gathering": ["What a crowd for the {topic}! {wow}", "{open} look who came to the {topic}!",
                      "Isn't the {topic} lovely? And {who} is here!", "I told half the town about the {topic}!",
                      "{open} {who} came to the {topic}! {wow}"],
        "night": ["Sleep tight, {name}! {nightcap}", "Night night, all! {nightcap}", "{open} off to bed with you!",
                  "Sweet dreams, {name}. {nightcap}"],
        "nightcap": ["Don't let the bedbugs bite!", "Tomorrow I'll tell you about {who}.", "Mind the owls!", ""],
        "insight": ["Everyone in this town talks, and I hear all of it.", "{who_cap} is up to something, I'm sure.",
                    "News is only worth something while it's fresh.", "People tell me things; I can't help it.",
                    "{subject_cap} is all anyone talks about at the {place}.", "The {place} is where news starts."],
        "insight_news": ["The whole town should hear of the {topic} before {time}.",
                         "I must tell everyone at the {place} about the {topic}.",
                         "Not everyone knows about the {topic} yet: that won't do!"],
        "who_cap": ["The miller's wife", "The new cooper", "Old widow Hask", "The tanner", "The ferryman"],
        "subject_cap": ["The price of {ware}", "The autumn fair", "The old well", "The reeve's new hat"],
    }),
    "plain": Grammar({**COMMON,
        "open": ["{name}.", "{hello}.", "{hello}, {name}.", "Right.", "Hm.", "Well.", "Aye.", ""],
        "chat": ["{open} {weather_cap}.", "{open} {subject_cap} again.", "{open} Busy with the {ware} today.",
                 "{open} Seen {who}?", "{open} {weather_cap}. Good for the {grain}.", "{open} Any word on {subject}?",
                 "{open} {subject_cap}: costs too much.", "{open} {weather_cap}. Long day."],
        "weather_cap": ["Rain's holding off", "Turned cold", "Wind's up", "Warm today", "Clouds over the hill",
                        "Fog on the river", "Sun's out", "Thunder about", "River's high", "Frost coming"],
        "subject_cap": ["The price of {ware}", "The new ferry", "The miller's dog", "The autumn fair",
                        "{grain_cap} prices", "The old well", "The tax man", "The chapel roof", "The ferry toll"],
        "grain_cap": ["Rye", "Barley", "Wheat", "Oat", "Spelt"],
        "reply": ["{agree}, {name}. {weather_cap}.", "{agree}. {subject_cap}, though.", "{agree}.", "{agree}, {name}.",
                  "Maybe. {weather_cap}.", "{agree}. Back to the {ware}."],
        "agree": ["Aye", "True", "Right enough", "Could be", "Hm", "If you say so", "Fair", "No doubt"],
        "news": ["{topic_cap} at the {gplace}, {time}. {plain_urge}",
                 "There's a {topic} tonight. The {gplace}, {time}.",
                 "{open} {topic_cap}, {time}, at the {gplace}. {plain_urge}",
                 "Word from the reeve: {topic}, {gplace}, {time}. {plain_urge}",
                 "{open} The {gplace} at {time}. It's the {topic}. {plain_urge}"],
        "topic_cap": ["The {topic}", "{topic}"],
        "plain_urge": ["Pass it on.", "Come if you can.", "Tell your lane.", "Don't be late.", "Worth going.",
                       "Bring a lamp.", "Everyone's asked.", ""],
        "thanks": ["Right. The {gplace} at {time}.", "Thanks, {name}. I'll be there.", "{topic_cap}, {time}. Noted.",
                   "{agree}. {time} at the {gplace}.", "Good to know, {name}. {time}, then."],
        "gathering": ["{open} Good turnout for the {topic}.", "{agree}. Decent crowd.", "{open} Glad I came. {crowd}",
                      "{open} Fine night for the {topic}.", "{weather_cap}, but a good {topic}.",
                      "{crowd} {weather_cap}.", "{open} {crowd}"],
        "crowd": ["Half the town's here.", "Even the {who_short} came.", "Busier than market day.",
                  "More here than I thought.", "Quiet lot tonight.", "Someone fetch a lamp."],
        "who_short": ["miller's wife", "tanner", "priest", "ferryman", "bailiff", "tinker", "goose girl"],
        "night": ["Night, {name}.", "Off to bed.", "Long day. Night.", "{open} Sleep well.", "Night, all."],
        "insight": ["Work first, talk later.", "{subject_cap} matters more than gossip.", "The {place} is busy today.",
                    "Most talk is just noise.", "Keep your head down and the {grain} dry."],
        "insight_news": ["People should know about the {topic} at {time}.", "Tell folk at the {place}: {topic}.",
                         "The {topic} is at the {gplace}. Worth passing on."],
    }),
}
SPREAD = {"gossip": 0.6, "plain": 0.3}  # how keen each style is to pass news on
_STEP_PLACE = re.compile(r"Be at the (.+?): ")
_SPEAKER = re.compile(r"^(?:- )?(?:\(tick \d+\) )?(.+?) (?:says(?: to (.+?))?|tells (.+?)): ")


def policy(turn):
    """A villager who keeps to the timetable in its plan step, passes news on to people who have not
    heard it, answers whoever speaks to it, and otherwise works, chats or rests."""
    rng = random.Random(turn.seed)
    agent, g = turn.agent, turn.sim.state["gathering"]
    style = agent.persona.style if agent.persona.style in VOICES else "plain"
    lines = VOICES[style]
    step = agent.plan.get(turn.request.step).text if turn.request.step in agent.plan.graph else ""
    here = turn.world.place_of(agent.id)
    minute = int(turn.world.minutes) % (24 * 60)
    daypart = "morning" if minute < 12 * 60 else "afternoon" if minute < EVENING else "evening"
    slots = {"topic": g["topic"], "gplace": g["place"], "time": g["time"], "place": here or "town", "name": "",
             "daypart": daypart, "hello": daypart.capitalize()}
    knows = g["topic"] in step
    if turn.request.kind == "reflect":
        rule = "{insight_news}" if knows and rng.random() < 0.5 else "{insight}"
        return Insight(text=_say(lines, rule, rng, **slots))
    if turn.request.kind == "plan":
        return PlanUpdate(steps=[step[:80] or "get through the day"])
    return _act(turn, rng, lines, step, style, slots)


def _act(turn, rng, lines, step, style, slots):
    me, world, g = turn.agent.id, turn.world, turn.sim.state["gathering"]
    here = world.place_of(me)
    m = _STEP_PLACE.match(step)
    if m and m[1] != here and m[1] in world.graph:
        return Move(to=m[1])
    others = [a for a in world.agents_at(here) if a != me]
    heard = turn.agent.new_observations[-12:]  # what the prompt lists
    to_me = [o for o in heard if o.source in others and (f" to {me}:" in o.text or f"tells {me}:" in o.text)]
    if to_me and rng.random() < 0.7:
        o = to_me[-1]
        rule = "{thanks}" if g["topic"] in step and _mentions(o.text, g) else "{reply}"
        return Say(text=_say(lines, rule, rng, **{**slots, "name": o.source}),
                   to=o.source if rng.random() < 0.6 else None)
    if "Spread the word" in step and others and rng.random() < SPREAD[style]:
        fresh = [a for a in others if a not in _aware(turn, g)]
        if fresh:
            to = rng.choice(fresh)
            news = _say(lines, "{news}", rng, **{**slots, "name": to})
            if rng.random() < 0.5:
                return Tell(to=to, news=news)
            return Say(text=news, to=to if rng.random() < 0.5 else None)
    roll, name = rng.random(), rng.choice(others) if others else ""
    talk = {**slots, "name": name}
    if f"the {g['topic']}" in step:  # at the gathering
        return Say(text=_say(lines, "{gathering}", rng, **talk)) if others and roll < 0.25 else Wait()
    if "work until" in step:
        if roll < 0.45:
            return Work(task=lines.say("{task_" + here.rsplit(" ", 1)[-1] + "}", rng).lower())
        if others and roll < 0.7:
            return Say(text=_say(lines, "{chat}", rng, **talk), to=name if rng.random() < 0.5 else None)
        return Wait()
    if "sleep" in step:
        return Say(text=_say(lines, "{night}", rng, **talk)) if others and roll < 0.08 else Wait()
    if others and roll < 0.45:
        return Say(text=_say(lines, "{chat}", rng, **talk), to=name if rng.random() < 0.4 else None)
    return Wait()


def _say(lines: Grammar, template: str, rng: random.Random, **slots: str) -> str:
    """A line from the voice's grammar, with the spaces that empty alternatives leave squeezed out."""
    text = " ".join(lines.say(template, rng, **slots).split())
    return text[:1].upper() + text[1:]


def _aware(turn, g: dict) -> set[str]:
    """Who, as far as this agent's prompt shows, already knows of the gathering: whoever it saw mention it,
    whoever was told of it in its hearing, and whoever it told itself."""
    aware = set()
    for message in turn.request.messages[1:]:
        if message["role"] == "assistant":
            action = msgspec.json.decode(message["content"])
            if isinstance(action, dict) and _mentions(str(action.get("text") or action.get("news") or ""), g):
                aware.add(action.get("to"))
            continue
        for line in message["content"].splitlines():
            m = _SPEAKER.match(line)
            if m and _mentions(line, g):
                aware.update(n for n in m.groups() if n)
    return aware
