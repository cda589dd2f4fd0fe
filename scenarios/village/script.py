"""The scripted villager (`--model scripted`): keeps to the timetable in its plan step, passes the news on
to people who have not heard it, answers whoever speaks to it, and otherwise works, chats or rests."""

from __future__ import annotations

import random
import re

import msgspec

from swarm.agents.actions import Insight, Move, PlanUpdate, Say, Wait
from swarm.scenarios._phrasing import Grammar
from swarm.scenarios.village.actions import Tell, Work
from swarm.scenarios.village.state import EVENING, Gathering

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
    agent, g = turn.agent, turn.sim.state.gathering
    style = agent.persona.style if agent.persona.style in VOICES else "plain"
    lines = VOICES[style]
    step = agent.plan.get(turn.request.step).text if turn.request.step in agent.plan.graph else ""
    here = turn.world.place_of(agent.id)
    minute = int(turn.world.minutes) % (24 * 60)
    daypart = "morning" if minute < 12 * 60 else "afternoon" if minute < EVENING else "evening"
    slots = {"topic": g.topic, "gplace": g.place, "time": g.time, "place": here or "town", "name": "",
             "daypart": daypart, "hello": daypart.capitalize()}
    knows = g.topic in step
    if turn.request.kind == "reflect":
        rule = "{insight_news}" if knows and rng.random() < 0.5 else "{insight}"
        return Insight(text=_say(lines, rule, rng, **slots))
    if turn.request.kind == "plan":
        return PlanUpdate(steps=[step[:80] or "get through the day"])
    return _act(turn, rng, lines, step, style, slots)


def _act(turn, rng, lines, step, style, slots):
    me, world, g = turn.agent.id, turn.world, turn.sim.state.gathering
    here = world.place_of(me)
    m = _STEP_PLACE.match(step)
    if m and m[1] != here and m[1] in world.graph:
        return Move(to=m[1])
    others = [a for a in world.agents_at(here) if a != me]
    heard = turn.agent.new_observations[-12:]  # what the prompt lists
    to_me = [o for o in heard if o.source in others and (f" to {me}:" in o.text or f"tells {me}:" in o.text)]
    if to_me and rng.random() < 0.7:
        o = to_me[-1]
        rule = "{thanks}" if g.topic in step and g.mentioned_in(o.text) else "{reply}"
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
    if f"the {g.topic}" in step:  # at the gathering
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


def _aware(turn, g: Gathering) -> set[str]:
    """Who, as far as this agent's prompt shows, already knows of the gathering: whoever it saw mention it,
    whoever was told of it in its hearing, and whoever it told itself."""
    aware = set()
    for message in turn.request.messages[1:]:
        if message["role"] == "assistant":
            action = msgspec.json.decode(message["content"])
            if isinstance(action, dict) and g.mentioned_in(str(action.get("text") or action.get("news") or "")):
                aware.add(action.get("to"))
            continue
        for line in message["content"].splitlines():
            m = _SPEAKER.match(line)
            if m and g.mentioned_in(line):
                aware.update(n for n in m.groups() if n)
    return aware
