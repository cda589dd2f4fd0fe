"""Choosing the run to ship among training seeds (`benchmarks/select_model.py`) and the card's account
of the choice."""

import importlib
import json
import sys
from pathlib import Path

import pytest

from swarm.train.card import write_card

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def select():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        yield importlib.import_module("select_model")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def _results(**places):
    return {spec: {"model_vs_floor": p} for spec, p in places.items()} | {"werewolf": {"main_metric": "finished"}}


def test_the_worst_scenario_decides_then_the_mean(select):
    good_at_one = select.score(_results(village=0.9, support_desk=-0.1))
    even = select.score(_results(village=0.4, support_desk=0.3))
    assert good_at_one["places"] == {"village": 0.9, "support_desk": -0.1}  # werewolf (floor = ceiling) skipped
    assert even["worst"] == 0.3 and even["mean"] == pytest.approx(0.35)
    assert select.choose({"a": good_at_one, "b": even}) == "b"
    also_even = select.score(_results(village=0.5, support_desk=0.3))
    assert select.choose({"b": even, "c": also_even}) == "c"
    assert select.choose({"b": even, "b2": select.score(_results(village=0.4, support_desk=0.3))}) == "b"


def test_no_discriminating_scenario_is_an_error(select):
    with pytest.raises(ValueError, match="floor below its ceiling"):
        select.score({"werewolf": {"main_metric": "finished"}})


def test_a_folder_without_a_training_summary_is_refused(select, tmp_path, capsys):
    with pytest.raises(SystemExit):
        select.main([str(tmp_path)])
    assert "not a `swarm train` model folder" in capsys.readouterr().err


def test_the_card_tells_how_the_run_was_chosen(tmp_path):
    summary = json.loads((ROOT / "swarm" / "models" / "swarm-tiny" / "training_summary.json").read_text())
    places = {"village": 0.4, "software_team": 0.5, "support_desk": 0.3}
    summary["selection"] = {"seeds": [100, 101, 102, 103], "ticks": 30, "temperature": 0.7, "candidates": [
        {"training_seed": 0, "heldout_nll": 0.7, "places": places, "worst": 0.3, "mean": 0.4, "chosen": False},
        {"training_seed": 1, "heldout_nll": 0.69, "places": {**places, "support_desk": 0.8}, "worst": 0.4,
         "mean": 0.57, "chosen": True}]}
    card = write_card(tmp_path, summary, "swarm train --seed 1").read_text()
    assert "## Selection" in card and "validation seeds 100-103 x 30 ticks" in card
    assert "| training seed | held-out loss | village | software_team | support_desk | worst | chosen |" in card
    assert "| 1 | 0.690 | 0.40 | 0.50 | 0.80 | 0.40 | yes |" in card
    assert "## Selection" not in write_card(tmp_path, {**summary, "selection": None}, "swarm train").read_text()
