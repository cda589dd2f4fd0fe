"""The inference runtime: model family, checkpoint and tokenizer loading, sampling and the engine."""

from swarm.runtime.config import ModelConfig, RopeConfig
from swarm.runtime.engine import Completion, Engine, EngineConfig, RequestHandle
from swarm.runtime.errors import CheckpointError, ConfigError, PromptTooLongError, SchemaError, SwarmError
from swarm.runtime.grammar import Choice, Regex
from swarm.runtime.sampling import SamplingParams
from swarm.runtime.tokenizer import Tokenizer

__all__ = [
    "CheckpointError",
    "Choice",
    "Completion",
    "ConfigError",
    "Engine",
    "EngineConfig",
    "ModelConfig",
    "PromptTooLongError",
    "Regex",
    "RequestHandle",
    "RopeConfig",
    "SamplingParams",
    "SchemaError",
    "SwarmError",
    "Tokenizer",
]
