"""werewolf: social deduction on the village green, 5 to 12 players (default 7).

What happens. Roles are dealt by the seed: 1 to 3 werewolves (1 for 5-6 players, 2 for 7-9, 3 for
10-12), a seer (unless `seer=False`) and villagers. Each player knows only its own role (the wolves
know their pack). The game runs in phases, one clock day a round, kept in `sim.state["phase"]` by an
every-tick hook:

    dusk   tick 0            players meet: Say, Wait
    night  1 tick            werewolves Kill (a living non-wolf); the seer Inspects (another living
                             player); the rest Wait. Kill choices are seen only by the wolves, the
                             inspection only by the seer. The victim is the wolves' most chosen.
    day    day_ticks (3)     Say, Accuse(target, reason), Wait
    vote   1 tick            Vote(target): the most voted is hanged and their role shown; a tie
                             hangs nobody

Each agent is offered only the actions valid for its role, the phase and whether it lives
(`@sim.actions_for`): the targets are Literals of the living players, rebuilt each phase, so a
model under the grammar cannot name the dead, itself, or (for a wolf's kill) a wolf. The dead
rest in the churchyard and only Wait. The game ends when no werewolf lives (the villagers win) or
the werewolves are as many as the rest (the werewolves win); after that everyone only Waits.

Options: `agents` (players, default 7), `wolves` (default by the number of players), `seer` (True) and
`day_ticks` (3), e.g. `Simulation.from_scenario("werewolf", model="scripted", agents=10, seer=False)`.

Metrics: `finished`, `winner` ("villagers", "werewolves" or None), `rounds` (nights played),
`votes` (cast), `vote_validity` (votes naming a living player other than the voter / votes cast),
`survivors`, `ended_at_tick`.

    swarm run werewolf --model scripted --ticks 40 --seed 1 --headless --json
    swarm run werewolf --model random --ticks 40 --seed 1 --headless --json     # the floor
    swarm run werewolf --model scripted --agents 10 --ticks 60 --headless
"""

from __future__ import annotations

import math
import random
import re
import typing
from collections import Counter
from typing import Annotated

import msgspec

from swarm import Persona
from swarm.agents.actions import Action, Give, Insight, Move, Name, PlanUpdate, Say, Use, Wait
from swarm.agents.actions import narrow as narrow_field
from swarm.scenarios._phrasing import Grammar

GREEN, CHURCHYARD = "green", "churchyard"
# name, trade, traits. The trade is the persona's public `role` (everyone sees it when a player joins);
# the secret role is told in the persona's goals, which only its own prompt shows.
MAIN_METRIC = "finished"  # the figure benchmarks/scenarios.py compares across policies
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
_SEER_CLAIM = re.compile(r"\bI(?: am|'m) the seer\b", re.IGNORECASE)
Reason = Annotated[str, msgspec.Meta(min_length=1, max_length=120)]


# The action types, with a free `target`: each phase narrows `target` to a Literal of the players it may
# name (see `narrow` in `build`). Handlers are keyed by tag, so they serve every narrowed build.


class Kill(Action, tag="kill"):
    """Werewolves, at night: the villager you want dead."""

    target: Annotated[Name, msgspec.Meta(description="a living villager")]


class Inspect(Action, tag="inspect"):
    """The seer, at night: learn whether a player is a werewolf."""

    target: Annotated[Name, msgspec.Meta(description="a living player")]


class Accuse(Action, tag="accuse"):
    """By day: name a suspect, and say why."""

    target: Annotated[Name, msgspec.Meta(description="a living player")]
    reason: Annotated[Reason, msgspec.Meta(description="why you suspect them")]


class Vote(Action, tag="vote"):
    """At the vote: the player you want hanged."""

    target: Annotated[Name, msgspec.Meta(description="a living player")]


def build(sim, agents: int = 7, wolves: int | None = None, seer: bool = True, day_ticks: int = 3):
    sim.wake_after = None  # the phases wake the agents that have something to do; no need to ask the rest
    if agents not in WOLVES:
        raise ValueError(f"werewolf takes 5 to 12 players, not {agents}")
    wolves = WOLVES[agents] if wolves is None else wolves
    if not 1 <= wolves < (agents - int(seer)) / 2:
        raise ValueError(f"{wolves} werewolves among {agents} players cannot make a game")
    if not 1 <= day_ticks <= 10:
        raise ValueError(f"day_ticks must be 1 to 10, not {day_ticks}")
    rng = random.Random(sim.seed)
    world, s = sim.world, sim.state
    # one clock day per round (night, the day's ticks, the vote), starting at 20:00 on day 1
    world.minutes_per_tick, world.start_minute = 24 * 60 / (day_ticks + 2), 20 * 60
    world.preamble = (f"Werewolf. {agents} villagers meet on the green; {wolves} of them "
                      f"{'is a werewolf' if wolves == 1 else 'are werewolves'} in disguise"
                      f"{', and one is a seer' if seer else ''}. Each night the wolves kill; each day all vote "
                      "to hang a suspect. Villagers win when no wolf lives; wolves win when they equal the rest.")
    world.add_place(GREEN, "dusk: the players meet")
    world.add_place(CHURCHYARD, "where the dead rest")

    names = [n for n, _, _ in CAST[:agents]]
    dealt = ["werewolf"] * wolves + ["seer"] * int(seer)
    dealt += ["villager"] * (agents - len(dealt))
    rng.shuffle(dealt)
    roles = dict(zip(names, dealt, strict=True))
    pack = [n for n in names if roles[n] == "werewolf"]
    for name, trade, traits in CAST[:agents]:
        goal = GOALS[roles[name]]
        if roles[name] == "werewolf":
            mates = [w for w in pack if w != name]
            goal += f"; {'your pack: ' + ', '.join(mates) if mates else 'you hunt alone'}"
        sim.add_agent(Persona(name=name, role=trade, traits=traits, goals=(goal,), style="player"), at=GREEN)
    # public record: accusations [day, by, target], ballots [day, voter, target], seer claims [by, target],
    # the dead with their revealed roles; private: the pack's kill choices, the seer's inspections
    s.update(roles=roles, alive=list(names), dead={}, phase="dusk", phase_end=0, day=1, rounds=0, kills={},
             votes={}, accusations=[], ballots=[], claims=[], inspected={}, winner=None, ended_at=None,
             votes_cast=0, votes_valid=0)

    sim.remove_actions(Move, Give, Use)  # everyone stays on the green; the dead are carried off
    sim.add_actions(Accuse, Kill, Inspect, Vote)
    def narrow(base: type, targets: list[str]) -> type:  # one class per (action, targets): unions cache
        return narrow_field(base, "target", tuple(targets))

    @sim.actions_for
    def allowed(sim, agent):
        s, me = sim.state, agent.id
        if s["phase"] == "over" or me not in s["alive"]:
            return [Wait]
        others = [p for p in s["alive"] if p != me]
        if s["phase"] == "dusk":
            return [Say, Wait]
        if s["phase"] == "night":
            if s["roles"][me] == "werewolf":
                return [narrow(Kill, [p for p in s["alive"] if s["roles"][p] != "werewolf"])]
            return [narrow(Inspect, others)] if s["roles"][me] == "seer" else [Wait]
        if s["phase"] == "day":
            return [Say, narrow(Accuse, others), Wait]
        return [narrow(Vote, others)]

    @sim.on(Kill)
    def kill(world, actor, action):
        s = sim.state
        if s["phase"] != "night" or s["roles"].get(actor) != "werewolf" or actor not in s["alive"]:
            return world.fail(actor, action, "only a living werewolf kills, and only at night")
        if action.target not in s["alive"] or s["roles"][action.target] == "werewolf":
            return world.fail(actor, action, f"choose a living villager: {', '.join(_prey(s))}")
        s["kills"][actor] = action.target
        return world.event("kill", f"{actor} chooses to kill {action.target} tonight.", actor=actor, place=GREEN,
                           target=action.target, importance=7.0,
                           audience=_pack(s), data={"target": action.target})

    @sim.on(Inspect)
    def inspect(world, actor, action):
        s = sim.state
        if s["phase"] != "night" or s["roles"].get(actor) != "seer" or actor not in s["alive"]:
            return world.fail(actor, action, "only the living seer inspects, and only at night")
        if action.target not in s["alive"] or action.target == actor:
            return world.fail(actor, action, f"choose another living player: {', '.join(_others(s, actor))}")
        wolf = s["roles"][action.target] == "werewolf"
        s["inspected"][action.target] = wolf
        return world.event("inspect", f"{actor}, the seer, sees that {action.target} is "
                           f"{'a werewolf' if wolf else 'not a werewolf'}.", actor=actor, place=GREEN,
                           target=action.target, importance=7.0,
                           audience=[actor], data={"target": action.target, "werewolf": wolf})

    @sim.on(Accuse)
    def accuse(world, actor, action):
        s = sim.state
        if s["phase"] != "day" or actor not in s["alive"]:
            return world.fail(actor, action, "accusations are made by the living, by day")
        if action.target not in s["alive"] or action.target == actor:
            return world.fail(actor, action, f"accuse another living player: {', '.join(_others(s, actor))}")
        s["accusations"].append([s["day"], actor, action.target])
        if _SEER_CLAIM.search(action.reason):
            s["claims"].append([actor, action.target])
        return world.event("accuse", f'{actor} accuses {action.target}: "{action.reason}"', actor=actor,
                           place=GREEN, target=action.target, importance=6.0, data=msgspec.to_builtins(action))

    @sim.on(Vote)
    def vote(world, actor, action):
        s = sim.state
        s["votes_cast"] += 1
        if s["phase"] != "vote" or actor not in s["alive"]:
            return world.fail(actor, action, "only the living vote, and only at the vote")
        if action.target not in s["alive"] or action.target == actor:
            return world.fail(actor, action, f"vote for another living player: {', '.join(_others(s, actor))}")
        s["votes_valid"] += 1
        s["votes"][actor] = action.target
        s["ballots"].append([s["day"], actor, action.target])
        return world.event("vote", f"{actor} votes to hang {action.target}.", actor=actor, place=GREEN,
                           target=action.target, importance=5.0, data=msgspec.to_builtins(action))

    @sim.every_tick
    def phases(sim, events):
        s = sim.state
        if s["phase"] == "over" or sim.world.tick < s["phase_end"]:
            return None
        if s["phase"] == "dusk":
            return _nightfall(sim)
        if s["phase"] == "night":
            return _dawn(sim, day_ticks)
        if s["phase"] == "day":
            return _call_vote(sim)
        return _hang(sim)

    @sim.next_act
    def next_phase(sim, agent):
        """The living act when the next phase is announced on the green (talk may wake them sooner); the
        dead, and everyone once the game is over, only if something wakes them."""
        s = sim.state
        if s["phase"] == "over" or agent.id not in s["alive"]:
            return math.inf
        return s["phase_end"] - sim.world.tick  # it changes at the end of tick phase_end

    @sim.metric("finished")
    def finished(sim):
        return sim.state["winner"] is not None

    @sim.metric("winner")
    def winner(sim):
        return sim.state["winner"]

    @sim.metric("rounds")
    def rounds(sim):
        return sim.state["rounds"]

    @sim.metric("votes")
    def votes(sim):
        return sim.state["votes_cast"]

    @sim.metric("vote_validity")
    def vote_validity(sim):
        s = sim.state
        return round(s["votes_valid"] / s["votes_cast"], 4) if s["votes_cast"] else None

    @sim.metric("survivors")
    def survivors(sim):
        return len(sim.state["alive"])

    @sim.metric("ended_at_tick")
    def ended_at(sim):
        return sim.state["ended_at"]


# -- the phases ---------------------------------------------------------------------------------


def _pack(s: dict) -> list[str]:
    return [p for p in s["alive"] if s["roles"][p] == "werewolf"]


def _prey(s: dict) -> list[str]:
    return [p for p in s["alive"] if s["roles"][p] != "werewolf"]


def _others(s: dict, me: str) -> list[str]:
    return [p for p in s["alive"] if p != me]


def _scene(sim, phase: str, description: str, ticks: int = 1) -> None:
    """Enter `phase` for the next `ticks` ticks; the green's description tells every prompt which phase it is."""
    sim.state["phase"], sim.state["phase_end"] = phase, sim.world.tick + ticks
    sim.world.graph.nodes[GREEN]["description"] = description


def _announce(sim, kind: str, text: str, importance: float = 6.0, audience: list[str] | None = None):
    return sim.world.event(kind, text, place=GREEN, importance=importance, audience=audience)


def _nightfall(sim) -> list:
    s = sim.state
    s["rounds"] += 1
    s["kills"] = {}
    _scene(sim, "night", f"night {s['day']}: the werewolves hunt, the seer watches, the rest sleep")
    return [_announce(sim, "night", f"Night {s['day']} falls. Everyone sleeps; the werewolves wake.")]


def _dawn(sim, day_ticks: int) -> list:
    s = sim.state
    s["day"] += 1
    chosen = Counter(s["kills"].values())  # the pack's most chosen victim; a tie goes to the first choice
    victim = max(chosen, key=chosen.get) if chosen else None
    out = []
    if victim is not None and victim in s["alive"]:
        out.append(_die(sim, victim, "You were killed in the night. Your game is over."))
        news = f"{victim} was found dead; {victim} was {_article(s['roles'][victim])}."
    else:
        news = "Nobody died in the night."
    out.append(_announce(sim, "dawn", f"Day {s['day']} dawns. {news} Alive: {', '.join(s['alive'])}."))
    end = _game_over(sim)
    if end:
        return out + end
    _scene(sim, "day", f"day {s['day']}: talk, accuse, find the werewolves", day_ticks)
    return out


def _call_vote(sim) -> list:
    s = sim.state
    s["votes"] = {}
    tally = Counter(t for day, _, t in s["accusations"] if day == s["day"] and t in s["alive"])
    accused = ", ".join(f"{p} ({n})" for p, n in tally.most_common()) or "nobody"
    _scene(sim, "vote", f"day {s['day']}, the vote: choose who to hang")
    return [_announce(sim, "call", f"Day {s['day']}: time to vote. Accused today: {accused}.")]


def _hang(sim) -> list:
    s = sim.state
    tally = Counter(s["votes"].values()).most_common()
    out = []
    if tally and (len(tally) == 1 or tally[0][1] > tally[1][1]):
        hanged, n = tally[0]
        out.append(_die(sim, hanged, "The village hanged you. Your game is over."))
        out.append(_announce(sim, "hang", f"{hanged} is hanged by {n} of {len(s['votes'])} votes. "
                             f"{hanged} was {_article(s['roles'][hanged])}.", importance=7.0))
    else:
        tied = " and ".join(p for p, n in tally if n == tally[0][1]) if tally else "nobody"
        out.append(_announce(sim, "hang", f"The vote is tied between {tied}: nobody is hanged."))
    return out + (_game_over(sim) or _nightfall(sim))


def _die(sim, who: str, text: str):
    sim.state["alive"].remove(who)
    sim.state["dead"][who] = sim.state["roles"][who]
    sim.world.place_agent(who, CHURCHYARD)  # off the green: the dead see nothing more of the game
    return sim.world.event("death", text, place=CHURCHYARD, target=who, importance=7.0, audience=[who])


def _game_over(sim) -> list:
    s = sim.state
    wolves, others = len(_pack(s)), len(_prey(s))
    if wolves and wolves < others:
        return []
    s["winner"], s["ended_at"] = ("villagers" if not wolves else "werewolves"), sim.world.tick
    pack = [p for p, r in s["roles"].items() if r == "werewolf"]
    _scene(sim, "over", f"the game is over: the {s['winner']} won")
    return [_announce(sim, "end", f"The game is over: the {s['winner']} win. The werewolves were "
                      f"{' and '.join(pack)}.", importance=7.0, audience=list(s["roles"]))]


def _article(role: str) -> str:
    return "the seer" if role == "seer" else f"a {role}"


# -- the scripted player -------------------------------------------------------------------------

LINES = Grammar({
    "hello": ["Evening", "Well met", "Good evening", "Hello", "Right then", "Greetings"],
    "about": ["I keep my axe sharp and my eyes open", "I've nothing to hide", "I sleep light these days",
              "I've known most of you since we were children", "I'll be watching every one of you",
              "I just want to see the morning", "I trust nobody tonight", "my door stays barred after dark"],
    "wary": ["Lock your doors.", "Sleep with one eye open.", "Stay close to the fire.", "Trust nobody.",
             "Keep your wits about you.", "Pray for the morning.", ""],
    "intro": ["{hello}. I'm {me}; {about}. {wary}", "{hello}. {about_cap}. {wary}",
              "{hello}, everyone. {wary} {about_cap}.", "Evening, neighbours. {about_cap}.",
              "{me} here. {about_cap}, and {about}.",
              "{hello}. Something's wrong in this village. {wary}"],
    "about_cap": ["I keep my axe sharp", "Nothing to hide here", "I sleep light", "I'll be watching",
                  "I just want to live", "I trust nobody", "My door stays barred"],
    "sus": ["has been far too quiet", "keeps changing the subject", "was quick to blame others",
            "hasn't said one word about the killing", "looked relieved this morning", "can't look me in the eye",
            "talks a lot and says nothing", "defends everyone but themself", "smiled when the body was found",
            "was out late, I'd swear it", "had mud on their boots at dawn", "asked too much about the seer",
            "changed their story twice", "is trying too hard to be liked", "stayed silent while we argued"],
    "why_open": ["Think about it:", "Mark me:", "I've watched closely.", "Listen.", "It's plain to me:",
                 "Nobody else will say it:", "Look at the facts:", "My gut says it:", ""],
    "accuse": ["{why_open} {target} {sus}.", "{target} {sus}, and {sus_too}.",
               "I don't trust {target}. {target} {sus}.",
               "{why_open} {target} {sus}. That's a wolf.", "It's {target}. {target} {sus}.",
               "{target}, you {sus_you}. Explain yourself."],
    "sus_too": ["that's no accident", "I don't like it", "we all saw it", "that's how a wolf acts",
                "nobody honest does that"],
    "sus_you": ["have been far too quiet", "keep changing the subject", "were quick to blame others",
                "haven't said a word about the killing", "looked relieved this morning", "won't look at me",
                "changed your story twice", "smiled at the graveside"],
    "follow": ["{others_say} {target} {sus}.", "{target} again. {why_open} {target} {sus}.",
               "I'm with the others on {target}. {target} {sus}.", "Yes, {target}. {target} {sus}.",
               "Enough talk. It's {target}: {target} {sus}."],
    "others_say": ["I agree:", "They're right:", "Same as I thought:", "I said it first:", "Aye:"],
    "seer_claim": ["I am the seer. Last night I looked into {target}'s soul: a werewolf.",
                   "Hear me: I'm the seer, and {target} is a werewolf. I saw it.",
                   "I'm the seer. {target} is a wolf; I'd stake my life on it.",
                   "No more hiding: I am the seer. {target} is one of them.",
                   "{why_open} I'm the seer, and my vision showed {target} as a werewolf."],
    "believe": ["{believe_core} {resolve}", "{believe_core}", "{why_open} {believe_core}"],
    "believe_core": ["The seer saw {target}. That's enough for me.", "We have the seer's word: {target} is the wolf.",
                     "{claimer} saw it in a vision. {target} it is.", "Trust {claimer}. Hang {target}.",
                     "If {claimer} is the seer, {target} must hang.", "I believe {claimer}: {target} is one of them.",
                     "{claimer} named {target}. I'll follow the seer."],
    "counter": ["{counter_core} {counter_tail}", "{counter_core}", "{why_open} {counter_core}"],
    "counter_core": ["{target} is no seer.", "A false seer! {target} is the wolf.",
                     "Convenient, {target}. Too convenient.",
                     "{target} claims visions to save their own skin.", "{target} is lying about being the seer.",
                     "Seer? {target} is a liar.", "Don't trust {target}'s visions."],
    "counter_tail": ["A real seer would have spoken sooner.", "Don't fall for it.", "That's what a wolf would say.",
                     "Hang the liar, not the accused.", "Ask yourselves who gains."],
    "defend": ["I'm no wolf, {name}! {alibi}", "Me? {alibi} Look at someone else.", "{name}, you're wrong. {alibi}",
               "Why me, {name}? {alibi} The wolf wants us fighting.", "Not me. {alibi}"],
    "alibi": ["I was home all night with the door barred.", "Ask anyone, I've been here all along.",
              "I've lost kin to these beasts too.", "You're wasting the day on me.", "I'd swear it on my mother.",
              "Accusing me is just what a wolf would do.", "I barely sleep, let alone hunt."],
    "mourn": ["Poor {victim}. {resolve}", "{victim}, of all people. {resolve}", "Another one gone. {resolve}",
              "I liked {victim}. {resolve}", "They took {victim}. {resolve}"],
    "resolve": ["We find the wolf today.", "Someone here did this.", "No more deaths.", "We must be smarter.",
                "Think hard before you vote.", "I won't rest until they hang."],
    "chat": ["{question} {nudge}", "{observe} {nudge}", "{observe} {question}", "{question}"],
    "question": ["Who was awake last night?", "Who has stayed quiet all day?", "Who spoke up for the dead?",
                 "Who benefits from {victim_or_someone} being gone?", "Who was first to point a finger?",
                 "Has anyone heard a howl?", "Who voted strangely yesterday?", "Who hasn't looked anyone in the eye?",
                 "Who's trying hardest to be liked?", "What did everyone hear in the night?"],
    "observe": ["Somebody here is lying.", "I'm watching all of you.", "We can't just guess again.",
                "The wolves are counting on us to argue.", "Someone's story doesn't hold.", "I've been counting votes.",
                "The quiet ones worry me.", "Fear makes fools of us.", "A wolf always blames the loudest.",
                "Mud on boots tells a story."],
    "nudge": ["Speak up, or be suspected.", "Let's hear from everyone.", "We need to talk before the vote.",
              "Think before you point.", "Don't let them split us.", "Every word counts today.",
              "Answer plainly.", "No more guessing.", "Remember who said what."],
    "victim_or_someone": ["the dead", "the last victim", "them", "our neighbour"],
    "insight": ["{target} {sus}.", "The wolves are hiding behind the loudest voices.", "{target} is worth watching.",
                "Whoever accuses first may be steering us.", "Trust is the wolves' best weapon.",
                "{target} keeps making mistakes."],
})


def policy(turn):
    """A scripted player. Everyone weighs the public record (who accused and voted for players later shown
    innocent, who spoke against a seer, what a believable seer said); villagers hang the most suspect, the
    seer inspects the most suspect unknown player and names a wolf it finds, wolves kill whoever threatens
    them and push suspicion onto villagers."""
    rng = random.Random(turn.seed)
    me, s = turn.agent.id, turn.sim.state
    kind = turn.request.kind
    if kind == "reflect":
        suspects = _ranked(s, me, _others(s, me), rng) or [me]
        return Insight(text=_say("{insight}", rng, target=suspects[0]))
    if kind == "plan":
        return PlanUpdate(steps=[GOALS[s["roles"][me]].split(": ", 1)[1][:80]])
    options = {msgspec.inspect.type_info(t).tag: t for t in typing.get_args(turn.request.schema)}
    if not options:
        options = {msgspec.inspect.type_info(turn.request.schema).tag: turn.request.schema}
    if "kill" in options:
        return options["kill"](target=_hunt(s, _targets(options["kill"]), rng))
    if "inspect" in options:
        targets = _targets(options["inspect"])
        unknown = [t for t in targets if t not in s["inspected"]] or targets
        return options["inspect"](target=_ranked(s, me, unknown, rng)[0])
    if "vote" in options:
        return options["vote"](target=_ranked(s, me, _targets(options["vote"]), rng)[0])
    if "accuse" in options:
        return _day(turn, rng, options["accuse"])
    if "say" in options and rng.random() < 0.7:
        return Say(text=_say("{intro}", rng, me=me))
    return Wait()


def _say(template: str, rng: random.Random, **slots: str) -> str:
    """A line from the grammar, with the spaces that empty alternatives leave squeezed out."""
    text = " ".join(LINES.say(template, rng, **slots).split())
    return text[:1].upper() + text[1:]


def _targets(t: type) -> list[str]:
    return list(next(f.type.values for f in msgspec.inspect.type_info(t).fields if f.name == "target"))


def _trusted_claims(s: dict, me: str) -> list[tuple[str, str]]:
    """Seer claims worth believing: by a player still alive, or one the dead showed to be the seer."""
    return [(by, t) for by, t in s["claims"] if by != me and (by in s["alive"] or s["dead"].get(by) == "seer")]


def _ranked(s: dict, me: str, targets: list[str], rng: random.Random) -> list[str]:
    """`targets`, most suspect first, as `me` sees them (ties in a seeded random order)."""
    role, dead = s["roles"][me], s["dead"]
    score = {t: rng.random() * 0.1 for t in targets}
    for day, by, t in s["accusations"]:
        if by in score and t in dead:  # accused someone since shown innocent (or a wolf)
            score[by] += -3.0 if dead[t] == "werewolf" else 3.0
        if t in score and day == s["day"]:  # the day's talk
            score[t] += 0.5
    for _, voter, t in s["ballots"]:
        if voter in score and t in dead:
            score[voter] += -2.0 if dead[t] == "werewolf" else 2.0
    for by, t in _trusted_claims(s, me):
        if t in score:
            score[t] += 10.0
        for _, accuser, accused in s["accusations"]:
            if accused == by and accuser in score:  # spoke against a seer
                score[accuser] += 4.0
    if role == "seer":
        for t, wolf in s["inspected"].items():
            if t in score:
                score[t] += 100.0 if wolf else -100.0
    if role == "werewolf":  # a wolf steers the village: the claimed seer, else whoever the village already doubts
        for t in score:
            score[t] += -1000.0 if s["roles"][t] == "werewolf" else 0.0
        for by, _ in s["claims"]:
            if by in score:
                score[by] += 20.0
    return sorted(targets, key=lambda t: -score[t])


def _hunt(s: dict, targets: list[str], rng: random.Random) -> str:
    """A wolf's prey: a claimed seer first, then whoever accused the pack, else anyone."""
    for by, _ in reversed(s["claims"]):
        if by in targets:
            return by
    pack = set(_pack(s))
    accusers = [by for _, by, t in s["accusations"] if t in pack and by in targets]
    return accusers[-1] if accusers else rng.choice(targets)


def _day(turn, rng: random.Random, accuse_type: type) -> Action:
    me, s = turn.agent.id, turn.sim.state
    role, others = s["roles"][me], _targets(accuse_type)
    heard = turn.agent.new_observations[-12:]  # what the prompt lists
    accusers = [o.source for o in heard if f" accuses {me}:" in o.text and o.source in others]
    deaths = [o for o in heard if o.text.startswith(f"Day {s['day']} dawns") and "found dead" in o.text]

    def accuse(target: str, rule: str, **slots: str) -> Action:
        return accuse_type(target=target, reason=_say(rule, rng, target=target, **slots)[:120])

    if role == "seer":
        found = [t for t in others if s["inspected"].get(t)]
        if found and rng.random() < 0.8:
            return accuse(found[0], "{seer_claim}")
    if role == "werewolf":
        pack = set(_pack(s))
        against_us = [by for by, t in s["claims"] if t in pack and by in others]
        if against_us and rng.random() < 0.7:
            return accuse(against_us[-1], "{counter}")
    if accusers and rng.random() < 0.6:
        return Say(text=_say("{defend}", rng, name=accusers[-1]), to=accusers[-1])
    if deaths and rng.random() < 0.5:
        victim = deaths[-1].text.split(" was found dead")[0].split(". ")[-1]
        return Say(text=_say("{mourn}", rng, victim=victim))
    claims = [(by, t) for by, t in _trusted_claims(s, me) if t in others]
    if claims and role != "werewolf" and rng.random() < 0.6:
        return accuse(claims[-1][1], "{believe}", claimer=claims[-1][0])
    suspect = _ranked(s, me, others, rng)[0]
    if _today(s)[suspect] and rng.random() < 0.45:
        return accuse(suspect, "{follow}")
    if rng.random() < 0.3:
        return accuse(suspect, "{accuse}")
    if rng.random() < 0.5:
        return Say(text=_say("{chat}", rng))
    return Wait()


def _today(s: dict) -> Counter:
    return Counter(t for day, _, t in s["accusations"] if day == s["day"] and t in s["alive"])
