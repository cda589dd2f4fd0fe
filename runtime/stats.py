"""Counters behind `Engine.stats()`."""

from __future__ import annotations

import time
from collections import deque

import torch


class EngineStats:
    def __init__(self, num_moe_layers: int, num_experts: int):
        self.started = time.perf_counter()
        self.steps = 0
        self.busy_s = 0.0
        self.tokens_computed = 0  # prefill + decode tokens through the model
        self.tokens_generated = 0  # sampled tokens
        self.seqs_total = 0
        self.budget_closed = 0  # constrained completions whose value was closed to fit max_tokens
        self.recent = deque(maxlen=64)  # (time, duration, computed, generated, seqs) of recent steps
        self._load = torch.zeros(num_moe_layers, max(num_experts, 1), dtype=torch.long)
        self._routed: list[tuple[list[int], list[torch.Tensor]]] = []  # steps' routing not yet counted into _load

    def record_step(self, batch, generated: int, duration: float) -> None:
        computed = sum(s.num_tokens for s in batch)
        self.steps += 1
        self.busy_s += duration
        self.tokens_computed += computed
        self.tokens_generated += generated
        self.seqs_total += len(batch)
        self.recent.append((time.perf_counter(), duration, computed, generated, len(batch)))

    def step_cost(self) -> tuple[float, float] | None:
        """(fixed seconds per step, seconds per token): a least-squares fit of duration against tokens
        over recent steps (None until two steps ran)."""
        if len(self.recent) < 2:
            return None
        n = len(self.recent)
        xs, ts = [r[2] for r in self.recent], [r[1] for r in self.recent]
        mx, mt = sum(xs) / n, sum(ts) / n
        var = sum((x - mx) ** 2 for x in xs)
        per_token = sum((x - mx) * (t - mt) for x, t in zip(xs, ts, strict=True)) / var if var else 0.0
        if per_token <= 0:  # every step the same size (or noise): charge the whole step to its tokens
            return 0.0, mt / max(mx, 1.0)
        return max(0.0, mt - per_token * mx), per_token

    def record_experts(self, moe_layers) -> None:
        """Keep the last step's routing (its layers' ids) to count with the steps after it: counting costs a
        few tensor ops however many steps it covers, which a decode step of one sequence would feel (so does
        stacking the layers' ids each step: they are kept as they are)."""
        rows = [i for i, layer in enumerate(moe_layers) if layer.last_ids is not None]
        if rows:
            self._routed.append((rows, [moe_layers[i].last_ids for i in rows]))
            if len(self._routed) >= 256:
                self._count_experts()

    def _count_experts(self) -> None:
        """Add the kept routing to the load: each group of steps with the same layers in one bincount (layer
        row r's ids offset by r * E)."""
        E = self._load.shape[1]
        groups: dict[tuple[int, ...], list[list[torch.Tensor]]] = {}
        for rows, ids in self._routed:
            groups.setdefault(tuple(rows), []).append(ids)
        self._routed.clear()
        for rows, steps in groups.items():
            ids = torch.stack([torch.cat([step[r] for step in steps]).flatten().cpu() + r * E
                               for r in range(len(rows))])  # [layers, steps' T * K]
            self._load[list(rows)] += torch.bincount(ids.flatten(), minlength=len(rows) * E).view(len(rows), E)

    @property
    def expert_load(self) -> torch.Tensor:
        """[MoE layers, experts]: how many tokens each expert of each layer took so far."""
        self._count_experts()
        return self._load

    def summary(self, prompt_tokens: int, cached_tokens: int, kv_blocks_total: int, kv_blocks_used: int,
                **extra) -> dict:
        recent_s = sum(r[1] for r in self.recent)
        return {
            "steps": self.steps,
            "tokens_per_s": self.tokens_generated / self.busy_s if self.busy_s else 0.0,
            "computed_tokens_per_s": self.tokens_computed / self.busy_s if self.busy_s else 0.0,
            "recent_tokens_per_s": sum(r[3] for r in self.recent) / recent_s if recent_s else 0.0,
            "tokens_generated": self.tokens_generated,
            "tokens_computed": self.tokens_computed,
            "mean_batch_seqs": self.seqs_total / self.steps if self.steps else 0.0,
            "mean_batch_tokens": self.tokens_computed / self.steps if self.steps else 0.0,
            "last_batch_seqs": self.recent[-1][4] if self.recent else 0,
            "recent_batch_seqs": [r[4] for r in self.recent],  # sequences per step, oldest first
            "recent_step_tokens_per_s": [r[3] / r[1] if r[1] else 0.0 for r in self.recent],  # per step, oldest first
            "prefix_cache_hit_rate": cached_tokens / prompt_tokens if prompt_tokens else 0.0,
            "prompt_tokens": prompt_tokens,
            "cached_tokens": cached_tokens,
            "kv_pool_use": kv_blocks_used / kv_blocks_total,
            "kv_blocks_total": kv_blocks_total,
            "kv_blocks_used": kv_blocks_used,
            "busy_s": self.busy_s,
            "budget_closed": self.budget_closed,
            "expert_load": self.expert_load.tolist(),
            **extra,
        }
