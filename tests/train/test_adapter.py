"""`swarm train adapter`: a LoRA adapter tuned with PEFT on demonstrations a run recorded, loss on the answers
only, held-out loss before and after, and an adapter both the engine and PEFT load."""

import json

import pytest
import torch

from swarm.cli import main
from swarm.demonstrations import read_demos
from swarm.runtime import DEFAULT_MODEL, Engine, SamplingParams, bundled_models, model_path
from swarm.runtime.tokenizer import Tokenizer

peft = pytest.importorskip("peft", reason="PEFT trains the adapter (the train extra)")
pytestmark = pytest.mark.skipif(DEFAULT_MODEL not in bundled_models(), reason="swarm-tiny is not in this checkout")


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    path = tmp_path_factory.mktemp("demos") / "village.jsonl"
    assert main(["run", "village", "--model", "scripted", "--ticks", "5", "--headless", "--record-demos", str(path),
                 "--demo-kinds", "act"]) == 0
    return path


def test_the_loss_is_on_the_answer_only(demos):
    from swarm.train.adapter import encode

    tok = Tokenizer.from_folder(model_path(DEFAULT_MODEL))
    d = read_demos(demos)[0]
    e = encode(tok, d)
    answer = tok.decode(e.ids[e.start :])
    assert answer.startswith(d.messages[-1]["content"]) and len(e.ids) - e.start < 60
    assert d.messages[-1]["content"] not in tok.decode(e.ids[: e.start])


def test_an_adapter_tuned_on_demonstrations(demos, tmp_path, capsys):
    out = tmp_path / "village-adapter"
    assert main(["train", "adapter", "--base", DEFAULT_MODEL, "--demos", str(demos), "--out", str(out),
                 "--steps", "20", "--heldout", "0.25"]) == 0
    std = capsys.readouterr()
    summary = json.loads(std.out.strip().splitlines()[-1])
    assert summary["train"] + summary["heldout"] == summary["demos"] == len(read_demos(demos))
    assert summary["heldout"] > 0 and summary["heldout_loss_after"] < summary["heldout_loss_before"]
    assert "training [" in std.err and "20/20" in std.err and "held-out loss" in std.err
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in out.iterdir()}
    engine = Engine.from_pretrained(DEFAULT_MODEL)
    engine.add_adapter("village", out)
    ids = engine.tokenizer.encode("Tick 3. You are at the tavern.")
    assert not torch.allclose(engine.logits(ids), engine.logits(ids, adapter="village"))  # the adapter counts
    out_text = engine.generate([ids], SamplingParams(max_tokens=6, temperature=0), adapter="village")[0]
    assert len(out_text.token_ids) == 6
    assert 0 < summary["best_step"] <= 20 and summary["heldout_curve"][0] == [0, summary["heldout_loss_before"]]
    import transformers

    hf = transformers.AutoModelForCausalLM.from_pretrained(model_path(DEFAULT_MODEL))
    assert type(peft.PeftModel.from_pretrained(hf, out)).__name__ == "PeftModelForCausalLM"
    # a second run into the same folder is refused
    assert main(["train", "adapter", "--demos", str(demos), "--out", str(out), "--steps", "1"]) == 2
    assert "is not empty" in capsys.readouterr().err


def test_bad_input_gets_clear_errors(tmp_path, capsys):
    empty = tmp_path / "none.jsonl"
    empty.write_text("")
    assert main(["train", "adapter", "--demos", str(empty), "--out", str(tmp_path / "a"), "--steps", "1"]) == 2
    assert "no demonstrations in" in capsys.readouterr().err
    assert main(["train"]) == 2 and "needs --out" in capsys.readouterr().err


def test_the_demos_benchmark_runs_as_the_readme_says(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, str(root / "benchmarks" / "demos.py"), "--quick", "--output",
                          str(tmp_path / "demos.json")], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads((tmp_path / "demos.json").read_text())
    tiny = result["models"][DEFAULT_MODEL]
    assert result["demonstrations"] > 0 and result["main_metric"] == "trades"
    assert set(tiny) >= {"heldout_loss_before", "heldout_loss_after", "without_adapter", "with_adapter", "gap_closed"}
    assert result["scripted"]["main"] >= result["random"]["main"]


@pytest.mark.parametrize("qtype", ["F32", "Q8_0"])
def test_an_adapter_tuned_on_a_gguf_base_loads_on_the_engine_running_that_file(demos, tmp_path, qtype):
    """A GGUF base trains on the weights it decodes to (transformers reads it), with the file's own tokenizer and
    chat template; the adapter then runs on the engine serving the file, blocks and all."""
    from swarm.runtime.random_model import tiny_config, write_random_model
    from swarm.train.adapter import AdapterRecipe, train_adapter
    from tests.runtime.gguf_files import write_gguf

    pytest.importorskip("gguf", reason="transformers reads GGUF files with the gguf package (the gguf extra)")
    file = tmp_path / "llama.gguf"
    write_gguf(write_random_model(tmp_path / "llama", tiny_config("llama"), seed=3), file, qtype)
    out = tmp_path / "adapter"
    summary = train_adapter(file, [demos], out, AdapterRecipe(steps=3, heldout=0.0, max_len=4096))
    assert summary["train"] > 0 and summary["best_step"] == 3  # no held-out share: the last step is kept
    engine = Engine.from_pretrained(file)
    engine.add_adapter("tuned", out)
    ids = engine.tokenizer.encode("Tick 3. You are at the tavern.")
    tuned = engine.logits(ids, adapter="tuned")
    assert not torch.allclose(engine.logits(ids), tuned)
    if qtype == "F32":  # the same adapter on the same decoded weights in transformers + PEFT
        import transformers

        hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=file.name, dtype=torch.float32)
        with torch.no_grad():
            ref = peft.PeftModel.from_pretrained(hf, out)(torch.tensor([ids])).logits[0]
        assert torch.allclose(tuned, ref, atol=1e-4, rtol=1e-4), (tuned - ref).abs().max()
