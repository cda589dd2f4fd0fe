"""The werewolf game's state (checkpointed with the simulation) and what the rules and the scripted players read
from it: the pack and its prey among the living, the day's accusations, the night's victim, the winner."""

from __future__ import annotations

from collections import Counter
from typing import Literal

import msgspec

Phase = Literal["dusk", "night", "day", "vote", "over"]


class Game(msgspec.Struct):
    """`sim.state` of a werewolf game. The secret roles and the night's private choices (the pack's kills, the
    seer's inspections) sit beside the public record: accusations and ballots (day, by, target), seer claims
    (by, target), and the dead with their revealed roles."""

    roles: dict[str, str]  # player -> "werewolf", "seer" or "villager"
    alive: list[str]
    dead: dict[str, str] = {}  # player -> their role, shown when they died
    phase: Phase = "dusk"
    phase_end: int = 0  # the phase's last tick: the next phase begins at its end
    day: int = 1
    rounds: int = 0  # nights played
    kills: dict[str, str] = {}  # tonight: wolf -> the player it chose
    votes: dict[str, str] = {}  # this vote: voter -> the player they want hanged
    accusations: list[tuple[int, str, str]] = []
    ballots: list[tuple[int, str, str]] = []
    claims: list[tuple[str, str]] = []  # accusations whose reason claims the accuser is the seer
    inspected: dict[str, bool] = {}  # player -> a werewolf, as the seer saw
    winner: str | None = None  # "villagers" or "werewolves" once the game is over
    ended_at: int | None = None
    votes_cast: int = 0
    votes_valid: int = 0  # naming a living player other than the voter, at the vote


def pack(game: Game) -> list[str]:
    """The living werewolves."""
    return [p for p in game.alive if game.roles[p] == "werewolf"]


def prey(game: Game) -> list[str]:
    """The living players who are not werewolves."""
    return [p for p in game.alive if game.roles[p] != "werewolf"]


def others(game: Game, me: str) -> list[str]:
    return [p for p in game.alive if p != me]


def accused_today(game: Game) -> Counter:
    """How often each living player has been accused today."""
    return Counter(t for day, _, t in game.accusations if day == game.day and t in game.alive)


def victim(game: Game) -> str | None:
    """The pack's most chosen victim tonight; a tie goes to the first choice."""
    chosen = Counter(game.kills.values())
    return max(chosen, key=chosen.get) if chosen else None


def bury(game: Game, who: str) -> None:
    """`who` is dead, and their role known to all."""
    game.alive.remove(who)
    game.dead[who] = game.roles[who]


def outcome(game: Game) -> str | None:
    """Who has won: the villagers when no werewolf lives, the werewolves when they are as many as the rest."""
    wolves, rest = len(pack(game)), len(prey(game))
    if wolves and wolves < rest:
        return None
    return "werewolves" if wolves else "villagers"
