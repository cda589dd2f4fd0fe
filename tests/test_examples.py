"""The scripts in examples/ run as a user would run them."""

import subprocess
import sys
from pathlib import Path

import pytest

from swarm.runtime import DEFAULT_MODEL, bundled_models

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def run(*args, timeout=300):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


def test_a_bundled_scenario_on_your_own_checkpoint(tmp_path):
    folder = tmp_path / "my-model"
    subprocess.run([Path(sys.executable).parent / "swarm", "random-model", str(folder), "--family", "mixtral",
                    "--vocab", "600"], check=True, capture_output=True)
    out = run(EXAMPLES / "own_checkpoint.py", folder, "support_desk", "2")
    assert out.returncode == 0, out.stderr
    assert f"support_desk on {folder}: 2 ticks" in out.stdout and "routing_accuracy" in out.stdout


@pytest.mark.skipif(DEFAULT_MODEL not in bundled_models(), reason="swarm-tiny is not in this checkout")
def test_a_persona_with_its_own_adapter():
    out = run(EXAMPLES / "persona_adapter.py")
    assert out.returncode == 0, out.stderr
    assert "Hugo: adapter town-crier" in out.stdout and "Mira: adapter gossip" in out.stdout
    assert "Bram: adapter None" in out.stdout and "[tick 1] the mayor tells Hugo" in out.stdout
