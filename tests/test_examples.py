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


@pytest.mark.skipif(DEFAULT_MODEL not in bundled_models(), reason="swarm-tiny is not in this checkout")
def test_the_pygame_village_runs_headless_and_reports_frame_times():
    pytest.importorskip("pygame", reason="pygame is in the dev extra (pip install -e '.[dev]')")
    import json
    import os

    out = subprocess.run([sys.executable, EXAMPLES / "pygame_village" / "village_game.py", "--frames", "600"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT,
                         env={**os.environ, "SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy"})
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["frames"] == 600 and report["lines_finished"] >= 1 and report["tokens_streamed"] > 0
    assert set(report["frame_ms"]) == {"mean", "p99", "max"} and 0 < report["model_share"] <= 1


def test_onnx_decoding_matches_the_engine(tmp_path):
    from swarm.runtime import Engine, SamplingParams

    prompt = "The innkeeper said"
    out = run(EXAMPLES / "onnx_decode.py", DEFAULT_MODEL, "--out", tmp_path / "onnx", "--prompt", prompt,
              "--max-tokens", "16")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "onnx" / "model.onnx").is_file()
    _, text = out.stdout.split("on CPUExecutionProvider\n", 1)  # the provider the session really got
    [want] = Engine.from_pretrained(DEFAULT_MODEL).generate(prompt, SamplingParams(max_tokens=16, temperature=0.0))
    assert text.removesuffix("\n") == prompt + want.text
    assert len(want.token_ids) > 3
