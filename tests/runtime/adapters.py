"""PEFT LoRA adapter folders with random weights, written without `peft` (tests only)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from swarm.runtime.config import ModelConfig


def random_adapter(folder: Path, cfg: ModelConfig, seed: int = 0, r: int = 4, std: float = 0.2,
                   config: dict | None = None) -> Path:
    """A PEFT LoRA folder on the attention projections q, v and o of every layer, with random A and B;
    `config` adds to (or overrides) adapter_config.json."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"q_proj": (cfg.q_size, cfg.hidden_size), "v_proj": (cfg.kv_size, cfg.hidden_size),
              "o_proj": (cfg.hidden_size, cfg.q_size)}
    tensors = {}
    for i in range(cfg.num_layers):
        for name, (n_out, n_in) in shapes.items():
            key = f"base_model.model.model.layers.{i}.self_attn.{name}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(r, n_in, generator=g) * std
            tensors[f"{key}.lora_B.weight"] = torch.randn(n_out, r, generator=g) * std
    folder.mkdir()
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": r, "lora_alpha": 2 * r, "target_modules": list(shapes), "bias": "none",
         **(config or {})}))
    return folder
