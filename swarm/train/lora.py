"""LoRA for training: low-rank updates on every layer's q, k, v and o projections, added to the frozen
model's outputs by forward hooks (the model stays plain), saved in the PEFT layout the engine loads.

Legend: T tokens, D hidden, r rank.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from swarm.runtime.model import Model

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


class TrainableLoRA(nn.Module):
    def __init__(self, model: Model, rank: int = 8, alpha: float = 16.0, seed: int = 0):
        super().__init__()
        cfg = model.cfg
        self.rank, self.alpha, self.scale = rank, alpha, alpha / rank
        gen = torch.Generator().manual_seed(seed)
        sizes = {"q_proj": (cfg.hidden_size, cfg.q_size), "k_proj": (cfg.hidden_size, cfg.kv_size),
                 "v_proj": (cfg.hidden_size, cfg.kv_size), "o_proj": (cfg.q_size, cfg.hidden_size)}
        self.A, self.B = nn.ParameterDict(), nn.ParameterDict()
        for i in range(cfg.num_layers):
            for name, (d_in, d_out) in sizes.items():
                key = f"{i}_{name}"
                # as PEFT: A random (Kaiming-uniform bound), B zero, so training starts at the base model
                bound = 1 / math.sqrt(d_in)
                self.A[key] = nn.Parameter((torch.rand(rank, d_in, generator=gen) * 2 - 1) * bound)
                self.B[key] = nn.Parameter(torch.zeros(d_out, rank))
        self._hooks = []
        for i, layer in enumerate(model.layers):
            self._hooks.append(layer.attn.qkv.register_forward_hook(self._qkv_hook(i)))
            self._hooks.append(layer.attn.o_proj.register_forward_hook(self._o_hook(i)))

    def _delta(self, key: str, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.A[key].T) @ self.B[key].T * self.scale  # [T, r] -> [T, out]

    def _qkv_hook(self, i: int):
        def hook(_module, inputs, out):
            x = inputs[0]
            return out + torch.cat([self._delta(f"{i}_{n}", x) for n in ("q_proj", "k_proj", "v_proj")], dim=-1)

        return hook

    def _o_hook(self, i: int):
        def hook(_module, inputs, out):
            return out + self._delta(f"{i}_o_proj", inputs[0])

        return hook

    def peft_weights(self) -> dict[str, torch.Tensor]:
        out = {}
        for key in self.A:
            i, name = key.split("_", 1)
            path = f"model.layers.{i}.self_attn.{name}"
            out[f"{path}.lora_A"], out[f"{path}.lora_B"] = self.A[key], self.B[key]
        return out

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []
