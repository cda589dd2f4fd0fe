"""The game API's old name: `swarm.embed.Runtime` is `swarm.game.GameRuntime` (kept as an alias)."""

from swarm.game import ACT_INSTRUCTION, CHAT_INSTRUCTION, Character, GameRuntime, Line

Runtime = GameRuntime

__all__ = ["ACT_INSTRUCTION", "CHAT_INSTRUCTION", "Character", "GameRuntime", "Line", "Runtime"]
