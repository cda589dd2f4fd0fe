"""The inference runtime: model family, checkpoint and tokenizer loading, sampling and the engine."""

from swarm.runtime.bundled import DEFAULT_MODEL, bundled_models, model_path
from swarm.runtime.config import ModelConfig, RopeConfig
from swarm.runtime.engine import Completion, Engine, EngineConfig, RequestHandle
from swarm.runtime.errors import CheckpointError, ConfigError, PromptTooLongError, SchemaError, SwarmError
from swarm.runtime.grammar import Choice, Regex
from swarm.runtime.sampling import SamplingParams
from swarm.runtime.tokenizer import Tokenizer

__all__ = [
    "DEFAULT_MODEL",
    "bundled_models",
    "model_path",
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
