"""Models shipped inside the package (`swarm-tiny`), found by name.

`model_path("swarm-tiny")` is the folder of the bundled model; any other argument that is an
existing folder or GGUF file is returned as it is, so every loader takes a bundled name or a path alike.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from swarm.runtime.errors import CheckpointError

DEFAULT_MODEL = "swarm-tiny"
GGUF_MAGIC = b"GGUF"


def bundled_models() -> list[str]:
    root = Path(str(files("swarm").joinpath("models")))
    return sorted(p.name for p in root.iterdir() if (p / "config.json").is_file()) if root.is_dir() else []


def is_gguf_file(path: str | Path) -> bool:
    """Whether `path` is a file in the GGUF format (by its first four bytes, whatever its name)."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        with path.open("rb") as f:
            return f.read(4) == GGUF_MAGIC
    except OSError:
        return False


def model_path(name_or_path: str | Path) -> Path:
    """The folder of a bundled model by name, or `name_or_path` itself when it is a folder or a GGUF file."""
    path = Path(name_or_path)
    if path.is_dir() or is_gguf_file(path):
        return path
    if path.is_file():
        raise CheckpointError(f"{str(name_or_path)!r} is a file but not a GGUF file: a model is a Hugging Face "
                              "checkpoint folder, a .gguf file or a bundled model's name")
    if isinstance(name_or_path, str) and "/" not in name_or_path:
        bundled = Path(str(files("swarm").joinpath("models", name_or_path)))
        if (bundled / "config.json").is_file():
            return bundled
    names = ", ".join(bundled_models()) or "none"
    raise CheckpointError(f"model folder or file {str(name_or_path)!r} does not exist, and no bundled model has "
                          f"that name (bundled: {names})")
