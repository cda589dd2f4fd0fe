import gc
import importlib.machinery
import os
import sys
from pathlib import Path

import pytest

# Tests run on the CPU with small shapes; keep torch from oversubscribing the 2-core machines.
os.environ.setdefault("OMP_NUM_THREADS", "2")


class _InstalledFirst:
    """pytest (and `python -m`) put the repository root on sys.path, where its top-level folders (kernels/,
    agents/, ...) shadow installed packages of the same names: transformers 5.25 imports the hub's `kernels`
    package and found this repository's folder instead. For those names this finder looks on the rest of the
    path first; only a name installed nowhere falls through to the folder. swarm's own code never imports
    them by these names (pyproject maps the folders into the `swarm` namespace)."""

    root = Path(__file__).resolve().parent.parent
    names = {p.name for p in root.iterdir() if (p / "__init__.py").is_file()} - {"tests", "swarm"}

    def find_spec(self, name, path=None, target=None):
        if path is not None or name not in self.names:
            return None
        rest = [p for p in sys.path if Path(p or os.getcwd()).resolve() != self.root]
        return importlib.machinery.PathFinder.find_spec(name, rest)


sys.meta_path.insert(0, _InstalledFirst())


@pytest.fixture
def frozen_heap():
    """Earlier tests' objects out of the garbage collector's sight while a test times a loop's responsiveness:
    after the rest of the suite, one full collection of them took 0.49 s here, and one landing in the timed
    window read as a stall of the code under test."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()
