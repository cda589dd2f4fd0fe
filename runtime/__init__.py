"""The inference runtime: model family, checkpoint and tokenizer loading, sampling and the engine.

The names load on first use: `from swarm.runtime.errors import SwarmError` (the simulation's
error types, `swarm replay`) must not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "DEFAULT_MODEL": "bundled", "bundled_models": "bundled", "model_path": "bundled",
    "ModelConfig": "config", "RopeConfig": "config",
    "Completion": "engine", "Engine": "engine", "EngineConfig": "engine", "RequestHandle": "engine",
    "CheckpointError": "errors", "ConfigError": "errors", "PromptTooLongError": "errors", "SchemaError": "errors",
    "SwarmError": "errors",
    "Choice": "grammar", "JsonSchema": "grammar", "Narrowed": "grammar", "Regex": "grammar",
    "SamplingParams": "sampling",
    "Tokenizer": "tokenizer",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'swarm.runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"swarm.runtime.{module}"), name)
    globals()[name] = value
    return value
