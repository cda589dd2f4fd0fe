"""Checkpoint loading details: progress, dtype conversion at load, tied embeddings."""

import json

import torch
from safetensors.torch import load_file, save_file

from swarm.runtime import Engine
from swarm.runtime import loader as loader_mod
from swarm.runtime.random_model import tiny_config, write_random_model


def test_progress_reports_bytes_up_to_the_total(tmp_path):
    folder = write_random_model(tmp_path, tiny_config())
    seen = []
    loader_mod.load_model(folder, progress=lambda done, total: seen.append((done, total)))
    total = (folder / "model.safetensors").stat().st_size
    assert seen and all(t == total for _, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert seen[-1][0] > 0.99 * total - 4096  # everything but the header


def test_large_checkpoints_show_progress_on_stderr(tmp_path, monkeypatch, capsys):
    folder = write_random_model(tmp_path, tiny_config())
    monkeypatch.setattr(loader_mod, "PROGRESS_MIN_BYTES", 1)
    loader_mod.load_model(folder)
    assert "loading weights" in capsys.readouterr().err


def test_bf16_checkpoint_is_computed_in_float32(tmp_path):
    folder = write_random_model(tmp_path, tiny_config())
    ids = [5, 9, 30, 2, 7]
    ref = Engine.from_pretrained(folder).logits(ids)
    tensors = {k: v.to(torch.bfloat16) for k, v in load_file(folder / "model.safetensors").items()}
    save_file(tensors, folder / "model.safetensors")
    engine = Engine.from_pretrained(folder)
    assert all(p.dtype == torch.float32 for p in engine.model.parameters())
    assert (engine.logits(ids) - ref).abs().max() < 0.5  # bf16 rounding of the weights only


def test_tied_embeddings_share_one_tensor(tmp_path):
    cfg = {**tiny_config("llama"), "tie_word_embeddings": True}
    folder = write_random_model(tmp_path, cfg)
    assert "lm_head.weight" not in load_file(folder / "model.safetensors")
    model = Engine.from_pretrained(folder).model
    assert model.lm_head.weight.data_ptr() == model.embed.weight.data_ptr()
    assert json.loads((folder / "config.json").read_text())["tie_word_embeddings"] is True
