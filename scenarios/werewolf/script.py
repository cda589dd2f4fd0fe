"""The scripted player (`--model scripted`): weighs the public record to rank suspects, and plays its role:
villagers hang the most suspect, the seer inspects and names the wolves it finds, wolves kill whoever
threatens them and push suspicion onto villagers."""

from __future__ import annotations

import random
import typing

import msgspec

from swarm.agents.actions import Action, Insight, PlanUpdate, Say, Wait
from swarm.scenarios._phrasing import Grammar
from swarm.scenarios.werewolf.people import GOALS
from swarm.scenarios.werewolf.state import Game, accused_today, others, pack

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
    me, game = turn.agent.id, turn.sim.state
    kind = turn.request.kind
    if kind == "reflect":
        suspects = _ranked(game, me, others(game, me), rng) or [me]
        return Insight(text=_say("{insight}", rng, target=suspects[0]))
    if kind == "plan":
        return PlanUpdate(steps=[GOALS[game.roles[me]].split(": ", 1)[1][:80]])
    options = {msgspec.inspect.type_info(t).tag: t for t in typing.get_args(turn.request.schema)}
    if not options:
        options = {msgspec.inspect.type_info(turn.request.schema).tag: turn.request.schema}
    if "kill" in options:
        return options["kill"](target=_hunt(game, _targets(options["kill"]), rng))
    if "inspect" in options:
        targets = _targets(options["inspect"])
        unknown = [t for t in targets if t not in game.inspected] or targets
        return options["inspect"](target=_ranked(game, me, unknown, rng)[0])
    if "vote" in options:
        return options["vote"](target=_ranked(game, me, _targets(options["vote"]), rng)[0])
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
    """The players a narrowed action type may name."""
    return list(next(f.type.values for f in msgspec.inspect.type_info(t).fields if f.name == "target"))


def _trusted_claims(game: Game, me: str) -> list[tuple[str, str]]:
    """Seer claims worth believing: by a player still alive, or one the dead showed to be the seer."""
    return [(by, t) for by, t in game.claims if by != me and (by in game.alive or game.dead.get(by) == "seer")]


def _ranked(game: Game, me: str, targets: list[str], rng: random.Random) -> list[str]:
    """`targets`, most suspect first, as `me` sees them (ties in a seeded random order)."""
    role, dead = game.roles[me], game.dead
    score = {t: rng.random() * 0.1 for t in targets}
    for day, by, t in game.accusations:
        if by in score and t in dead:  # accused someone since shown innocent (or a wolf)
            score[by] += -3.0 if dead[t] == "werewolf" else 3.0
        if t in score and day == game.day:  # the day's talk
            score[t] += 0.5
    for _, voter, t in game.ballots:
        if voter in score and t in dead:
            score[voter] += -2.0 if dead[t] == "werewolf" else 2.0
    for by, t in _trusted_claims(game, me):
        if t in score:
            score[t] += 10.0
        for _, accuser, accused in game.accusations:
            if accused == by and accuser in score:  # spoke against a seer
                score[accuser] += 4.0
    if role == "seer":
        for t, wolf in game.inspected.items():
            if t in score:
                score[t] += 100.0 if wolf else -100.0
    if role == "werewolf":  # a wolf steers the village: the claimed seer, else whoever the village already doubts
        for t in score:
            score[t] += -1000.0 if game.roles[t] == "werewolf" else 0.0
        for by, _ in game.claims:
            if by in score:
                score[by] += 20.0
    return sorted(targets, key=lambda t: -score[t])


def _hunt(game: Game, targets: list[str], rng: random.Random) -> str:
    """A wolf's prey: a claimed seer first, then whoever accused the pack, else anyone."""
    for by, _ in reversed(game.claims):
        if by in targets:
            return by
    wolves = set(pack(game))
    accusers = [by for _, by, t in game.accusations if t in wolves and by in targets]
    return accusers[-1] if accusers else rng.choice(targets)


def _day(turn, rng: random.Random, accuse_type: type) -> Action:
    me, game = turn.agent.id, turn.sim.state
    role, targets = game.roles[me], _targets(accuse_type)
    heard = turn.agent.new_observations[-12:]  # what the prompt lists
    accusers = [o.source for o in heard if f" accuses {me}:" in o.text and o.source in targets]
    deaths = [o for o in heard if o.text.startswith(f"Day {game.day} dawns") and "found dead" in o.text]

    def accuse(target: str, rule: str, **slots: str) -> Action:
        return accuse_type(target=target, reason=_say(rule, rng, target=target, **slots)[:120])

    if role == "seer":
        found = [t for t in targets if game.inspected.get(t)]
        if found and rng.random() < 0.8:
            return accuse(found[0], "{seer_claim}")
    if role == "werewolf":
        wolves = set(pack(game))
        against_us = [by for by, t in game.claims if t in wolves and by in targets]
        if against_us and rng.random() < 0.7:
            return accuse(against_us[-1], "{counter}")
    if accusers and rng.random() < 0.6:
        return Say(text=_say("{defend}", rng, name=accusers[-1]), to=accusers[-1])
    if deaths and rng.random() < 0.5:
        victim = deaths[-1].text.split(" was found dead")[0].split(". ")[-1]
        return Say(text=_say("{mourn}", rng, victim=victim))
    claims = [(by, t) for by, t in _trusted_claims(game, me) if t in targets]
    if claims and role != "werewolf" and rng.random() < 0.6:
        return accuse(claims[-1][1], "{believe}", claimer=claims[-1][0])
    suspect = _ranked(game, me, targets, rng)[0]
    if accused_today(game)[suspect] and rng.random() < 0.45:
        return accuse(suspect, "{follow}")
    if rng.random() < 0.3:
        return accuse(suspect, "{accuse}")
    if rng.random() < 0.5:
        return Say(text=_say("{chat}", rng))
    return Wait()
