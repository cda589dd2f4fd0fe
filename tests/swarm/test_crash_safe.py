"""Crash-safe runs: `swarm run --checkpoint` keeps a checkpoint through kill -9, signals and failed ticks, and
`swarm resume` continues the run so that its event log equals an uninterrupted run's, byte for byte.

The runs are real `swarm` processes on the village with its scripted policy (a model would only make them
slower: the checkpoint does not hold the model, and resuming with one is covered by test_simulation's
resume tests). A scenario file wraps the village with a hook that can fail or slow down a tick on cue.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from swarm.simulation import Simulation

pytestmark = pytest.mark.slow

TICKS, AGENTS = 24, 200

SCENARIO = textwrap.dedent('''
    """The village, with a tick that fails (while the file FAIL_FLAG exists) or sleeps, on cue."""
    import os
    import time

    from swarm.scenarios import village

    policy = village.policy


    def build(sim, **options):
        village.build(sim, **options)

        @sim.every_tick
        def trouble(sim, events):
            if sim.world.tick == int(os.environ.get("FAIL_AT", -1)) and os.path.exists(os.environ["FAIL_FLAG"]):
                raise RuntimeError("the tavern is on fire")
            if sim.world.tick == int(os.environ.get("SLOW_AT", -1)):
                open(os.environ["SLOW_FLAG"], "w").close()  # tell the test the tick is in progress
                time.sleep(60)
            time.sleep(float(os.environ.get("TICK_SLEEP", 0)))
''')


@pytest.fixture
def scenario(tmp_path) -> Path:
    path = tmp_path / "troubled_village.py"
    path.write_text(SCENARIO)
    return path


def swarm(*args: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "swarm.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}, **kwargs)


def finish(p: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def run_args(scenario: Path, log: Path, *extra: str) -> list[str]:
    return ["run", str(scenario), "--model", "scripted", "--agents", str(AGENTS), "--ticks", str(TICKS),
            "--record", str(log), "--headless", *extra]


@pytest.fixture
def reference(tmp_path, scenario) -> bytes:
    """The log of the same run, uninterrupted."""
    log = tmp_path / "reference.jsonl"
    code, _, err = finish(swarm(*run_args(scenario, log), env={"FAIL_FLAG": str(tmp_path / "no-such-flag")}))
    assert code == 0, err
    return log.read_bytes()


def wait_for_lines(path: Path, lines: int, p: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and p.poll() is None:
        if path.exists() and path.read_bytes().count(b"\n") >= lines:
            return
        time.sleep(0.01)
    raise AssertionError(f"the run ended or stalled before its log reached {lines} lines")


def resume(checkpoint: Path, env: dict | None = None) -> str:
    code, _, err = finish(swarm("resume", str(checkpoint), "--headless", env=env))
    assert code == 0, err
    return err


@pytest.mark.parametrize("share", [0.15, 0.5, 0.9])  # early, in the middle, near the end of the run
def test_a_run_killed_at_any_point_resumes_to_the_same_log(tmp_path, scenario, reference, share):
    log, checkpoint = tmp_path / "run.jsonl", tmp_path / "run.ckpt"
    env = {"FAIL_FLAG": str(tmp_path / "no-such-flag")}
    p = swarm(*run_args(scenario, log, "--checkpoint", str(checkpoint), "--checkpoint-every", "3"), env=env)
    wait_for_lines(log, int(share * reference.count(b"\n")), p)
    p.kill()  # SIGKILL: no handler runs, the process just ends
    p.wait()
    assert checkpoint.exists() and log.read_bytes() != reference
    offset = Simulation.checkpoint_info(checkpoint)["record"]["offset"]
    err = resume(checkpoint, env)
    assert log.read_bytes() == reference
    assert f"checkpoint {checkpoint} at tick {TICKS}" in err
    # what the killed run logged past its checkpoint is kept aside, and it is what the resumed run wrote again
    [aside] = tmp_path.glob("run.jsonl.after-*")
    assert aside.name == f"run.jsonl.after-{offset}" and reference[offset:].startswith(aside.read_bytes())


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_the_run_after_its_tick_with_a_checkpoint_to_resume(tmp_path, scenario, reference, sig,
                                                                          status):
    log, checkpoint = tmp_path / "run.jsonl", tmp_path / "run.ckpt"
    env = {"FAIL_FLAG": str(tmp_path / "no-such-flag"), "TICK_SLEEP": "0.2"}
    p = swarm(*run_args(scenario, log, "--checkpoint", str(checkpoint)), env=env)  # written every 10 ticks
    wait_for_lines(log, reference.count(b"\n") // 3, p)
    p.send_signal(sig)
    code, _, err = finish(p)
    assert code == status, err
    assert f"stopped by {sig.name}" in err and "swarm resume" in err
    stopped_at = Simulation.checkpoint_info(checkpoint)["tick"]
    assert 0 < stopped_at < TICKS and f"checkpoint {checkpoint} at tick {stopped_at}" in err
    resume(checkpoint, env)
    assert log.read_bytes() == reference


def test_a_second_ctrl_c_stops_mid_tick_and_the_checkpoint_holds_the_tick_before(tmp_path, scenario, reference):
    log, checkpoint = tmp_path / "run.jsonl", tmp_path / "run.ckpt"
    slow = tmp_path / "slow"
    env = {"FAIL_FLAG": str(tmp_path / "no-such-flag"), "SLOW_AT": "8", "SLOW_FLAG": str(slow)}
    p = swarm(*run_args(scenario, log, "--checkpoint", str(checkpoint), "--checkpoint-every", "100"), env=env)
    deadline = time.monotonic() + 60
    while not slow.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    p.send_signal(signal.SIGINT)  # tick 8 sleeps a minute in its hook: both land in it
    time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    code, _, err = finish(p)
    assert code == 130, err
    assert "interrupted after 8 ticks" in err and "tick 8 did not finish" in err
    assert Simulation.checkpoint_info(checkpoint)["tick"] == 8  # not 0: written when the tick was cut short
    resume(checkpoint, {**env, "SLOW_AT": "-1"})
    assert log.read_bytes() == reference


def test_a_failed_tick_leaves_the_checkpoint_of_the_tick_before(tmp_path, scenario, reference):
    log, checkpoint, flag = tmp_path / "run.jsonl", tmp_path / "run.ckpt", tmp_path / "fail"
    flag.touch()
    env = {"FAIL_FLAG": str(flag), "FAIL_AT": "7"}
    code, _, err = finish(swarm(*run_args(scenario, log, "--checkpoint", str(checkpoint)), env=env))
    assert code == 2 and "the tavern is on fire" in err, err
    assert "continue it from tick 7 with `swarm resume" in err
    assert Simulation.checkpoint_info(checkpoint)["tick"] == 7  # not 0: written when the tick failed
    flag.unlink()  # the cause is fixed
    resume(checkpoint, env)
    assert log.read_bytes() == reference


def test_run_refuses_to_start_over_a_kept_checkpoint_and_resume_needs_one(tmp_path, scenario):
    checkpoint = tmp_path / "run.ckpt"
    checkpoint.write_bytes(b"something")
    code, _, err = finish(swarm(*run_args(scenario, tmp_path / "log.jsonl", "--checkpoint", str(checkpoint))))
    assert code == 2 and f"continue that run with `swarm resume {checkpoint}`" in err
    code, _, err = finish(swarm("resume", str(tmp_path / "none.ckpt")))
    assert code == 2 and "no checkpoint at" in err
    code, _, err = finish(swarm(*run_args(scenario, tmp_path / "log.jsonl", "--checkpoint-every", "2")))
    assert code == 2 and "--checkpoint-every needs --checkpoint" in err
    sim = Simulation.from_scenario(str(scenario), model="scripted", agents=4)
    sim.save(checkpoint)  # saved from Python: no run length to resume to
    code, _, err = finish(swarm("resume", str(checkpoint)))
    assert code == 2 and "Simulation.load" in err


def test_a_model_run_killed_midway_resumes_to_the_same_log(tmp_path):
    """The same on swarm-tiny: the resumed engine starts with a cold cache and other batches, and its seeded,
    batch-invariant turns still write the same events."""
    args = ["village", "--ticks", "6", "--headless", "--kv-memory", "256MiB", "--kv-dtype", "int8"]
    reference = tmp_path / "reference.jsonl"
    code, _, err = finish(swarm("run", *args, "--record", str(reference)))
    assert code == 0, err
    log, checkpoint = tmp_path / "run.jsonl", tmp_path / "run.ckpt"
    p = swarm("run", *args, "--record", str(log), "--checkpoint", str(checkpoint), "--checkpoint-every", "2")
    wait_for_lines(log, reference.read_bytes().count(b"\n") // 2, p)
    p.kill()
    p.wait()
    assert 0 < Simulation.checkpoint_info(checkpoint)["tick"] < 6
    err = resume(checkpoint)
    assert "model swarm-tiny" in err and "KV pool 256.0 MiB" in err and "int8" in err  # as the run began
    assert log.read_bytes() == reference.read_bytes()
