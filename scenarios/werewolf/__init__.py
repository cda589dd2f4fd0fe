"""werewolf: social deduction on the village green, 5 to 12 players (default 7).

What happens. Roles are dealt by the seed: 1 to 3 werewolves (1 for 5-6 players, 2 for 7-9, 3 for
10-12), a seer (unless `seer=False`) and villagers. Each player knows only its own role (the wolves
know their pack). The game runs in phases, one clock day a round, kept in `sim.state.phase` (the typed
state, `Game` in `state.py`) by an every-tick hook:

    dusk   tick 0            players meet: Say, Wait
    night  1 tick            werewolves Kill (a living non-wolf); the seer Inspects (another living
                             player); the rest Wait. Kill choices are seen only by the wolves, the
                             inspection only by the seer. The victim is the wolves' most chosen.
    day    day_ticks (3)     Say, Accuse(target, reason), Wait
    vote   1 tick            Vote(target): the most voted is hanged and their role shown; a tie
                             hangs nobody

Each agent is offered only the actions valid for its role, the phase and whether it lives
(`offered`, its `sim.actions_for`): the targets are Literals of the living players, rebuilt each phase, so a
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
from collections import Counter

import msgspec

from swarm import Persona
from swarm.agents.actions import Give, Move, Say, Use, Wait
from swarm.agents.actions import narrow as narrow_field
from swarm.scenarios.werewolf.actions import Accuse, Inspect, Kill, Vote
from swarm.scenarios.werewolf.people import CAST, WOLVES, deal, goal
from swarm.scenarios.werewolf.script import LINES, policy
from swarm.scenarios.werewolf.state import Game, accused_today, bury, others, outcome, pack, prey, victim

__all__ = ["MAIN_METRIC", "Accuse", "Game", "Inspect", "Kill", "LINES", "Vote", "build", "policy"]

MAIN_METRIC = "finished"  # the figure benchmarks/scenarios.py compares across policies
GREEN, CHURCHYARD = "green", "churchyard"
_SEER_CLAIM = re.compile(r"\bI(?: am|'m) the seer\b", re.IGNORECASE)


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
    world = sim.world
    # one clock day per round (night, the day's ticks, the vote), starting at 20:00 on day 1
    world.minutes_per_tick, world.start_minute = 24 * 60 / (day_ticks + 2), 20 * 60
    world.preamble = (f"Werewolf. {agents} villagers meet on the green; {wolves} of them "
                      f"{'is a werewolf' if wolves == 1 else 'are werewolves'} in disguise"
                      f"{', and one is a seer' if seer else ''}. Each night the wolves kill; each day all vote "
                      "to hang a suspect. Villagers win when no wolf lives; wolves win when they equal the rest.")
    world.add_place(GREEN, "dusk: the players meet")
    world.add_place(CHURCHYARD, "where the dead rest")

    names = [n for n, _, _ in CAST[:agents]]
    roles = deal(names, wolves, seer, rng)
    for name, trade, traits in CAST[:agents]:
        sim.add_agent(Persona(name=name, role=trade, traits=traits, goals=(goal(name, roles),), style="player"),
                      at=GREEN)
    sim.state = Game(roles, alive=list(names))

    sim.remove_actions(Move, Give, Use)  # everyone stays on the green; the dead are carried off
    sim.add_actions(Accuse, Kill, Inspect, Vote)
    sim.actions_for(offered)
    for action, rule in ((Kill, kill), (Inspect, inspect), (Accuse, accuse), (Vote, vote)):
        sim.on(action, state=True)(rule)
    sim.every_tick(lambda sim, events: phases(sim, events, day_ticks))
    sim.next_act(next_phase)
    for name, metric in METRICS.items():
        sim.metric(name)(metric)


# -- the rules -------------------------------------------------------------------------------------


def offered(sim, agent):
    """Only the actions valid for the player's role, the phase and whether it lives, with the targets narrowed
    to the living players it may name: a model under the grammar cannot name the dead, itself, or (for a
    wolf's kill) a wolf."""
    game, me = sim.state, agent.id
    if game.phase == "over" or me not in game.alive:
        return [Wait]
    if game.phase == "dusk":
        return [Say, Wait]
    if game.phase == "night":
        if game.roles[me] == "werewolf":
            return [_narrow(Kill, prey(game))]
        return [_narrow(Inspect, others(game, me))] if game.roles[me] == "seer" else [Wait]
    if game.phase == "day":
        return [Say, _narrow(Accuse, others(game, me)), Wait]
    return [_narrow(Vote, others(game, me))]


def _narrow(base: type, targets: list[str]) -> type:  # one class per (action, targets): unions cache
    return narrow_field(base, "target", tuple(targets))


def kill(game: Game, world, actor: str, action: Kill):
    if game.phase != "night" or game.roles.get(actor) != "werewolf" or actor not in game.alive:
        return world.fail(actor, action, "only a living werewolf kills, and only at night")
    if action.target not in game.alive or game.roles[action.target] == "werewolf":
        return world.fail(actor, action, f"choose a living villager: {', '.join(prey(game))}")
    game.kills[actor] = action.target
    return world.event("kill", f"{actor} chooses to kill {action.target} tonight.", actor=actor, place=GREEN,
                       target=action.target, importance=7.0,
                       audience=pack(game), data={"target": action.target})


def inspect(game: Game, world, actor: str, action: Inspect):
    if game.phase != "night" or game.roles.get(actor) != "seer" or actor not in game.alive:
        return world.fail(actor, action, "only the living seer inspects, and only at night")
    if action.target not in game.alive or action.target == actor:
        return world.fail(actor, action, f"choose another living player: {', '.join(others(game, actor))}")
    wolf = game.roles[action.target] == "werewolf"
    game.inspected[action.target] = wolf
    return world.event("inspect", f"{actor}, the seer, sees that {action.target} is "
                       f"{'a werewolf' if wolf else 'not a werewolf'}.", actor=actor, place=GREEN,
                       target=action.target, importance=7.0,
                       audience=[actor], data={"target": action.target, "werewolf": wolf})


def accuse(game: Game, world, actor: str, action: Accuse):
    if game.phase != "day" or actor not in game.alive:
        return world.fail(actor, action, "accusations are made by the living, by day")
    if action.target not in game.alive or action.target == actor:
        return world.fail(actor, action, f"accuse another living player: {', '.join(others(game, actor))}")
    game.accusations.append((game.day, actor, action.target))
    if _SEER_CLAIM.search(action.reason):
        game.claims.append((actor, action.target))
    return world.event("accuse", f'{actor} accuses {action.target}: "{action.reason}"', actor=actor,
                       place=GREEN, target=action.target, importance=6.0, data=msgspec.to_builtins(action))


def vote(game: Game, world, actor: str, action: Vote):
    game.votes_cast += 1
    if game.phase != "vote" or actor not in game.alive:
        return world.fail(actor, action, "only the living vote, and only at the vote")
    if action.target not in game.alive or action.target == actor:
        return world.fail(actor, action, f"vote for another living player: {', '.join(others(game, actor))}")
    game.votes_valid += 1
    game.votes[actor] = action.target
    game.ballots.append((game.day, actor, action.target))
    return world.event("vote", f"{actor} votes to hang {action.target}.", actor=actor, place=GREEN,
                       target=action.target, importance=5.0, data=msgspec.to_builtins(action))


def phases(sim, events, day_ticks: int):
    """The next phase, once the current one's last tick is over (a day lasts `day_ticks`)."""
    game = sim.state
    if game.phase == "over" or sim.world.tick < game.phase_end:
        return None
    if game.phase == "dusk":
        return _nightfall(sim)
    if game.phase == "night":
        return _dawn(sim, day_ticks)
    if game.phase == "day":
        return _call_vote(sim)
    return _hang(sim)


def next_phase(sim, agent):
    """The living act when the next phase is announced on the green (talk may wake them sooner); the
    dead, and everyone once the game is over, only if something wakes them."""
    game = sim.state
    if game.phase == "over" or agent.id not in game.alive:
        return math.inf
    return game.phase_end - sim.world.tick  # it changes at the end of tick phase_end


def _vote_validity(sim):
    game = sim.state
    return round(game.votes_valid / game.votes_cast, 4) if game.votes_cast else None


METRICS = {
    "finished": lambda sim: sim.state.winner is not None,
    "winner": lambda sim: sim.state.winner,
    "rounds": lambda sim: sim.state.rounds,
    "votes": lambda sim: sim.state.votes_cast,
    "vote_validity": _vote_validity,
    "survivors": lambda sim: len(sim.state.alive),
    "ended_at_tick": lambda sim: sim.state.ended_at,
}


# -- the phases ---------------------------------------------------------------------------------


def _scene(sim, phase: str, description: str, ticks: int = 1) -> None:
    """Enter `phase` for the next `ticks` ticks; the green's description tells every prompt which phase it is."""
    sim.state.phase, sim.state.phase_end = phase, sim.world.tick + ticks
    sim.world.graph.nodes[GREEN]["description"] = description


def _announce(sim, kind: str, text: str, importance: float = 6.0, audience: list[str] | None = None):
    return sim.world.event(kind, text, place=GREEN, importance=importance, audience=audience)


def _nightfall(sim) -> list:
    game = sim.state
    game.rounds += 1
    game.kills = {}
    _scene(sim, "night", f"night {game.day}: the werewolves hunt, the seer watches, the rest sleep")
    return [_announce(sim, "night", f"Night {game.day} falls. Everyone sleeps; the werewolves wake.")]


def _dawn(sim, day_ticks: int) -> list:
    game = sim.state
    game.day += 1
    dead = victim(game)
    out = []
    if dead is not None and dead in game.alive:
        out.append(_die(sim, dead, "You were killed in the night. Your game is over."))
        news = f"{dead} was found dead; {dead} was {_article(game.roles[dead])}."
    else:
        news = "Nobody died in the night."
    out.append(_announce(sim, "dawn", f"Day {game.day} dawns. {news} Alive: {', '.join(game.alive)}."))
    end = _game_over(sim)
    if end:
        return out + end
    _scene(sim, "day", f"day {game.day}: talk, accuse, find the werewolves", day_ticks)
    return out


def _call_vote(sim) -> list:
    game = sim.state
    game.votes = {}
    accused = ", ".join(f"{p} ({n})" for p, n in accused_today(game).most_common()) or "nobody"
    _scene(sim, "vote", f"day {game.day}, the vote: choose who to hang")
    return [_announce(sim, "call", f"Day {game.day}: time to vote. Accused today: {accused}.")]


def _hang(sim) -> list:
    game = sim.state
    tally = Counter(game.votes.values()).most_common()
    out = []
    if tally and (len(tally) == 1 or tally[0][1] > tally[1][1]):
        hanged, n = tally[0]
        out.append(_die(sim, hanged, "The village hanged you. Your game is over."))
        out.append(_announce(sim, "hang", f"{hanged} is hanged by {n} of {len(game.votes)} votes. "
                             f"{hanged} was {_article(game.roles[hanged])}.", importance=7.0))
    else:
        tied = " and ".join(p for p, n in tally if n == tally[0][1]) if tally else "nobody"
        out.append(_announce(sim, "hang", f"The vote is tied between {tied}: nobody is hanged."))
    return out + (_game_over(sim) or _nightfall(sim))


def _die(sim, who: str, text: str):
    bury(sim.state, who)
    sim.world.place_agent(who, CHURCHYARD)  # off the green: the dead see nothing more of the game
    return sim.world.event("death", text, place=CHURCHYARD, target=who, importance=7.0, audience=[who])


def _game_over(sim) -> list:
    game = sim.state
    winner = outcome(game)
    if winner is None:
        return []
    game.winner, game.ended_at = winner, sim.world.tick
    wolves = [p for p, r in game.roles.items() if r == "werewolf"]
    _scene(sim, "over", f"the game is over: the {winner} won")
    return [_announce(sim, "end", f"The game is over: the {winner} win. The werewolves were "
                      f"{' and '.join(wolves)}.", importance=7.0, audience=list(game.roles))]


def _article(role: str) -> str:
    return "the seer" if role == "seer" else f"a {role}"
