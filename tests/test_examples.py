"""The scripts in examples/ run as a user would run them."""

import json
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


AUCTION = EXAMPLES / "auction.py"


def auction_report(model, ticks=30, seed=3, record=None):
    args = [Path(sys.executable).parent / "swarm", "run", AUCTION, "--model", model, "--ticks", str(ticks),
            "--seed", str(seed), "--headless", "--json", *(["--record", record] if record else [])]
    out = subprocess.run(list(map(str, args)), capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])["metrics"]


def test_the_auction_scripted_trades_and_coins_only_change_hands(tmp_path):
    metrics = auction_report("scripted", record=tmp_path / "run.jsonl")
    assert metrics["trades"] > 0 and metrics["bids"] >= metrics["trades"] and metrics["coins_moved"] > 0
    from swarm.recorder import read_log

    _, events = read_log(tmp_path / "run.jsonl")
    sold = [e for e in events if e.kind == "sold"]
    assert len(sold) == metrics["trades"] and sum(e.data["price"] for e in sold) == metrics["coins_moved"]


def test_the_auction_on_random_actions_runs():
    metrics = auction_report("random", ticks=20)
    assert metrics["no_action"] == 0 and metrics["turns"] > 0


def auction_sim(model, **kwargs):
    from swarm import Simulation

    return Simulation.from_scenario(str(AUCTION), model=model, seed=3, **kwargs)


def test_the_auction_keeps_its_coins_and_lots_under_scripted_play():
    sim = auction_sim("scripted", traders=4)
    total = sum(sim.state["coins"].values())
    lots = set(sim.world.things)
    sim.run(40)
    assert len(sim.agents) == 5 and sum(sim.state["coins"].values()) == total
    assert set(sim.world.things) == lots and all(t.holder in sim.agents for t in sim.world.things.values())
    assert sim.state["trades"] > 0 and all(coins >= 0 for coins in sim.state["coins"].values())
    sim.close()


def test_the_auction_refuses_a_trader_count_it_has_no_cast_for():
    from swarm.scenario import ScenarioError

    with pytest.raises(ScenarioError, match="traders must be 2-8, got 12"):
        auction_sim("scripted", traders=12)


@pytest.mark.skipif(DEFAULT_MODEL not in bundled_models(), reason="swarm-tiny is not in this checkout")
def test_the_auction_on_swarm_tiny_does_not_stall():
    """swarm-tiny waits in the auction (it was never trained on it); lots still come up, and agents idle for
    five ticks are asked again, so turns keep coming after tick 5."""
    sim = auction_sim(DEFAULT_MODEL)
    turns = []
    sim.run(10, progress=lambda sim, events: turns.append(sim.counters["turns"]))
    per_tick = [b - a for a, b in zip([0, *turns], turns, strict=False)]  # turns run in each tick
    assert sum(per_tick[6:]) > 0, per_tick
    assert sim.report().metrics["no_action"] == 0
    sim.close()


@pytest.mark.skipif(DEFAULT_MODEL not in bundled_models(), reason="swarm-tiny is not in this checkout")
def test_swarm_tiny_bids_only_for_lots_on_sale():
    """The grammar offers a bid only the lots on sale now. swarm-tiny never picks `bid` by itself (it was
    trained on other scenarios), so here traders may only bid while a lot is on sale: each bid must name a lot
    open at that tick, and a bid above the best one and within the trader's purse buys the lot."""
    from swarm.agents.actions import Wait
    from swarm.scenario import load_module

    auction = load_module(str(AUCTION))
    sim = auction_sim(DEFAULT_MODEL)
    sim.actions_for(lambda sim, agent: [auction.Bid] if sim.state["open"] and agent.id != auction.AUCTIONEER
                    else [Wait])
    open_at = [set(sim.state["open"])]  # the lots on sale as each tick starts
    bids = []

    def watch(sim, events):
        for e in events:
            action = e.data if e.kind == "bid" else e.data.get("action", {}) if e.kind == "fail" else {}
            if action.get("type") == "bid":
                bids.append((action["lot"], open_at[e.tick]))
        open_at.append(set(sim.state["open"]))

    sim.run(10, progress=watch)
    assert bids and all(lot in on_sale for lot, on_sale in bids), bids
    assert sim.state["trades"] >= 1
    sim.close()


@pytest.mark.skipif(DEFAULT_MODEL not in bundled_models(), reason="swarm-tiny is not in this checkout")
def test_a_manager_on_one_model_and_the_crowd_on_another():
    out = run(EXAMPLES / "two_models.py", "--ticks", "6")
    assert out.returncode == 0, out.stderr
    assert "Priya (pm) on scripted; the rest on swarm-tiny" in out.stdout
    models = json.loads(out.stdout.strip().splitlines()[-1])
    assert models["manager"]["turns"] > 0 and models["default"]["turns"] > 0
    assert models["default"]["generated_tokens"] > 0 and "generated_tokens" not in models["manager"]


def test_recording_demonstrations(tmp_path):
    out = run(EXAMPLES / "record_demos.py", "--ticks", "4", "--out", tmp_path / "demos.jsonl")
    assert out.returncode == 0, out.stderr
    lines = (tmp_path / "demos.jsonl").read_text().splitlines()
    assert f"{len(lines)} demonstrations in" in out.stdout and "assistant: " in out.stdout
    first = json.loads(lines[0])
    assert first["messages"][-1]["role"] == "assistant" and first["kind"] == "act" and first["source"] == "scripted"


def test_teaching_a_persona_records_tunes_and_plays_with_the_adapter():
    pytest.importorskip("peft", reason="tuning an adapter needs the train extra (peft)")
    out = run(EXAMPLES / "teach_persona.py", "--seeds", "2", "--ticks", "8", "--steps", "2", "--play-ticks", "3")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("1. recorded ") and "'bid'" in lines[0]
    assert lines[1].startswith("2. tuned: held-out loss ")
    assert "without the adapter {'trades': " in lines[2] and lines[3].startswith("   with it: {'trades': ")
