"""Packaging: one `swarm` namespace over the top-level folders, a console script, a real CLI run."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_namespace_maps_top_level_folders_from_any_cwd(tmp_path):
    code = ("import swarm, swarm.runtime, swarm.kernels, swarm.agents, swarm.scenarios;"
            "print(swarm.runtime.__file__); print(swarm.kernels.__file__); print(swarm.__file__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    runtime, kernels, top = out.stdout.split()
    assert Path(runtime) == ROOT / "runtime" / "__init__.py"
    assert Path(kernels) == ROOT / "kernels" / "__init__.py"
    assert Path(top) == ROOT / "swarm" / "__init__.py"


def test_console_script_generates(tmp_path):
    swarm = Path(sys.executable).parent / "swarm"
    model = tmp_path / "model"
    subprocess.run([swarm, "random-model", str(model), "--family", "mixtral"], check=True, capture_output=True)
    out = subprocess.run([swarm, "generate", "--model", str(model), "--max-tokens", "8", "The tavern"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.startswith("The tavern")
    assert "8 new tokens" in out.stderr and "mixtral" in out.stderr


def test_every_package_folder_is_listed_in_pyproject():
    import pytest

    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    roots = {"swarm": "swarm", "runtime": "swarm.runtime", "agents": "swarm.agents", "kernels": "swarm.kernels",
             "scenarios": "swarm.scenarios"}
    found = set()
    for folder, name in roots.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((name, *rel)))
    assert found == listed, "a regular (non-editable) install would leave these out or fail"


def test_no_benchmark_script_shadows_an_installed_package(tmp_path):
    """A script's folder comes first on sys.path, so benchmarks/kernels.py once hid the `kernels` package that
    transformers imports, and every benchmark that loads transformers failed. No file there may take the name
    of a module the environment can import."""
    names = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py"))
    code = "import importlib.util, sys; print([n for n in sys.argv[1:] if importlib.util.find_spec(n)])"
    out = subprocess.run([sys.executable, "-P", "-c", code, *names], cwd=tmp_path, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]", f"benchmarks/ files named like importable modules: {out.stdout.strip()}"
