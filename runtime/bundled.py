"""Models shipped inside the package (`swarm-tiny`), found by name.

`model_path("swarm-tiny")` is the folder of the bundled model; any other argument that is an
existing folder is returned as it is, so every loader takes a bundled name or a path alike.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from swarm.runtime.errors import CheckpointError

DEFAULT_MODEL = "swarm-tiny"


def bundled_models() -> list[str]:
    root = Path(str(files("swarm").joinpath("models")))
    return sorted(p.name for p in root.iterdir() if (p / "config.json").is_file()) if root.is_dir() else []


def model_path(name_or_path: str | Path) -> Path:
    """The folder of a bundled model by name, or `name_or_path` itself when it is a folder."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if isinstance(name_or_path, str) and "/" not in name_or_path:
        bundled = Path(str(files("swarm").joinpath("models", name_or_path)))
        if (bundled / "config.json").is_file():
            return bundled
    names = ", ".join(bundled_models()) or "none"
    raise CheckpointError(f"model folder {str(name_or_path)!r} does not exist, and no bundled model has that name "
                          f"(bundled: {names})")
