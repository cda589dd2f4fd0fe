"""Errors the runtime raises for bad input. Each message names what is wrong and where."""


class SwarmError(Exception):
    """Base class of every error swarm raises on purpose."""


class CheckpointError(SwarmError):
    """A checkpoint folder or file is missing, corrupt, or does not match the config."""


class ConfigError(CheckpointError, ValueError):
    """A model config is missing a field, names an unsupported family, or holds an invalid value (a bad
    config.json is a bad checkpoint, so this is a CheckpointError too)."""


class PromptTooLongError(SwarmError, ValueError):
    """A prompt (plus the tokens asked for) does not fit in the model's context."""


class SchemaError(SwarmError, ValueError):
    """A schema, regex or choice cannot constrain decoding: msgspec cannot describe it, llguidance
    rejects it, or the tokenizer cannot spell what it requires."""
