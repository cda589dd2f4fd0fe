"""Runtime workers on the broker: a simulation on mqtt://host:port/POOL spreads its turns over `swarm worker`
processes, keeps each persona with one of them, survives kill -9 of one, and writes the same events as in process.

The workers are real `swarm worker` processes on swarm-tiny against a real Mosquitto on a free loopback port.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from swarm.pool import owner, split_pool_url

WORKER_ARGS = ["--model", "swarm-tiny", "--kv-memory", "256MiB"]


def test_rendezvous_moves_only_the_personas_of_a_worker_that_leaves_or_joins():
    personas = [f"agent-{i}" for i in range(600)]
    three = {p: owner(p, ["a", "b", "c"]) for p in personas}
    assert three == {p: owner(p, ["c", "a", "b"]) for p in personas}  # the order of the list does not matter
    assert min(Counter(three.values()).values()) > 150  # spread about evenly
    two = {p: owner(p, ["a", "c"]) for p in personas}
    assert all(two[p] == three[p] for p in personas if three[p] != "b")  # only b's personas moved
    four = {p: owner(p, ["a", "b", "c", "d"]) for p in personas}
    assert all(four[p] in (three[p], "d") for p in personas)  # a newcomer takes only what it wins
    assert 100 < sum(four[p] == "d" for p in personas) < 200
    with pytest.raises(ValueError, match="no live worker"):
        owner("x", [])


@pytest.mark.parametrize("url, expected", [
    ("mqtt://127.0.0.1:1883/village", ("mqtt://127.0.0.1:1883", "village")),
    ("mqtts://sim@broker:8883/npc%2Fserver?ca=/ca.pem", ("mqtts://sim@broker:8883?ca=/ca.pem", "npc/server")),
])
def test_pool_urls(url, expected):
    assert split_pool_url(url) == expected


@pytest.mark.parametrize("url, message", [
    ("http://host/pool", "mqtt:// or mqtts://"),
    ("mqtt://host:1883", "name the pool"),
    ("mqtt://host:1883/a/b", "one level"),
])
def test_bad_pool_urls(url, message):
    with pytest.raises(ValueError, match=message):
        split_pool_url(url)


def worker(broker, pool: str, id: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "swarm.cli", "worker", "--bus", broker.url, "--pool", pool,
                             "--id", id, *WORKER_ARGS], stdout=log.open("w"), stderr=subprocess.STDOUT)


def wait_serving(log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "serving pool" in log.read_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"the worker did not start:\n{log.read_text()}")


def run_village(model: str, log: Path, ticks: int, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "swarm.cli", "run", "village", "--ticks", str(ticks), "--headless",
                             "--model", model, "--record", str(log)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def events(log: Path) -> list[str]:
    return log.read_text().splitlines()[1:]  # the header names the model


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> list[str]:
    log = tmp_path_factory.mktemp("local") / "local.jsonl"
    p = run_village("swarm-tiny", log, 10)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    return events(log)


@pytest.fixture
def workers(mosquitto, tmp_path):
    procs: dict[str, subprocess.Popen] = {}

    def start(*ids: str) -> None:
        for id in ids:
            procs[id] = worker(mosquitto, "village", id, tmp_path / f"{id}.log")
        for id in ids:
            wait_serving(tmp_path / f"{id}.log")

    yield start, procs
    for p in procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs.values():
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()


@pytest.mark.slow
@pytest.mark.parametrize("count", [1, 3])
def test_the_same_events_on_any_number_of_workers_as_in_process(mosquitto, tmp_path, workers, reference, count):
    start, procs = workers
    start(*[f"w{i}" for i in range(count)])
    log = tmp_path / "pool.jsonl"
    p = run_village(f"{mosquitto.url}/village", log, 10)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert events(log) == reference
    for id, proc in procs.items():  # each worker got turns: the personas are spread
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        served = (tmp_path / f"{id}.log").read_text()
        assert "stopped after" in served and " stopped after 0 turns" not in served, served


@pytest.mark.slow
def test_a_worker_killed_mid_run_hands_its_turns_on_and_nothing_changes(mosquitto, tmp_path, workers, reference):
    start, procs = workers
    start("w0", "w1", "w2")
    log = tmp_path / "pool.jsonl"
    p = run_village(f"{mosquitto.url}/village", log, 10)
    while log.exists() is False or len(events(log)) < len(reference) // 3:
        assert p.poll() is None, p.communicate()[1]
        time.sleep(0.02)
    procs["w1"].kill()  # SIGKILL: its last will says offline
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert "worker w1 of pool village is offline; its turns go to the others" in err
    assert events(log) == reference


@pytest.mark.slow
def test_a_run_waits_for_a_first_worker_and_one_joining_mid_run_takes_a_share(mosquitto, tmp_path, workers,
                                                                               reference):
    start, procs = workers
    log = tmp_path / "pool.jsonl"
    p = run_village(f"{mosquitto.url}/village", log, 10)
    deadline = time.monotonic() + 120
    time.sleep(2)
    assert p.poll() is None  # waiting, not failed
    start("w0")
    while not log.exists() or len(events(log)) < len(reference) // 3:
        assert p.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    start("w1")
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert "no live worker in pool 'village'" in err and "swarm worker --bus URL --pool village" in err
    assert events(log) == reference
    procs["w1"].send_signal(signal.SIGTERM)
    procs["w1"].wait(20)
    assert " stopped after 0 turns" not in (tmp_path / "w1.log").read_text()  # the newcomer took its share


@pytest.mark.slow
def test_a_pool_on_a_broker_with_passwords_tls_and_the_readme_acl(tmp_path, reference):
    from tests.swarm.test_mqtt_security import PASSWORDS, secure_broker, url

    broker = secure_broker(tmp_path)
    try:
        env = {**os.environ, "SWARM_MQTT_PASSWORD": PASSWORDS["worker"]}
        log = tmp_path / "w.log"
        w = subprocess.Popen([sys.executable, "-m", "swarm.cli", "worker", "--bus", url(broker, "worker", None),
                              "--pool", "village", "--id", "w0", *WORKER_ARGS], stdout=log.open("w"),
                             stderr=subprocess.STDOUT, env=env)
        wait_serving(log)
        sim_url = url(broker, "sim", None).replace("?", "/village?")
        run = run_village(sim_url, tmp_path / "pool.jsonl", 10,
                          env={**os.environ, "SWARM_MQTT_PASSWORD": PASSWORDS["sim"]})
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
        assert events(tmp_path / "pool.jsonl") == reference
        assert PASSWORDS["sim"] not in (tmp_path / "pool.jsonl").read_text()
        w.send_signal(signal.SIGTERM)
        w.wait(20)
    finally:
        broker.close()


@pytest.mark.slow
def test_a_worker_that_hangs_without_disconnecting_is_passed_over_until_it_answers(mosquitto, tmp_path, workers,
                                                                                    reference):
    from swarm import Simulation
    from swarm.pool import PoolModel

    start, procs = workers
    start("w0", "w1")
    model = PoolModel(f"{mosquitto.url}/village", stall_timeout=2.0)
    log = tmp_path / "pool.jsonl"
    sim = Simulation.from_scenario("village", model=model, seed=0, record=log)
    try:
        for _ in range(3):
            sim.tick()
        procs["w1"].send_signal(signal.SIGSTOP)  # online for the broker (its socket is open), answers nothing
        t0 = time.monotonic()
        for _ in range(7):
            sim.tick()
        assert time.monotonic() - t0 < 60
        assert model.counters["workers_stalled"] == 1 and model.counters["turns_resent"] > 0
        assert "w1" in model.workers and "w1" in model._silent
        procs["w1"].send_signal(signal.SIGCONT)
    finally:
        sim.close()
        model.close()
    assert events(log) == reference
