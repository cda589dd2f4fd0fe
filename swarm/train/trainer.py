"""Training the runtime's own model on demonstrations: next-token loss over whole chat
transcripts (the answer's tokens weighted fully, the prompt's less: the prompt teaches the
format, the answer is what the model must get right), a load-balancing loss for the
router, AdamW with warmup and cosine decay; then LoRA adapters on the attention projections,
one per persona style, over the frozen base.

The model trained is `swarm.runtime.model.Model`, the one the engine serves, run over
whole sequences with `DenseBatch` (no KV cache), so what is trained is exactly what is
served. Legend: T tokens in a batch, V vocabulary, E experts, K top-k, D hidden.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from swarm.runtime.kv import DenseBatch
from swarm.runtime.model import Model, MoE

IGNORE = -100


@dataclass(frozen=True)
class Example:
    """A token sequence and the [start, end) ranges of it the model must produce (answers, each ending
    with the end-of-turn token); everything else is prompt. One answer per example, or several consecutive
    turns of one agent in one sequence (each later turn sees the earlier ones as its history)."""

    ids: list[int]
    answers: tuple[tuple[int, int], ...]

    @classmethod
    def turn(cls, prompt: list[int], answer: list[int]) -> Example:
        return cls(prompt + answer, ((len(prompt), len(prompt) + len(answer)),))

    @property
    def answer_tokens(self) -> int:
        return sum(end - start for start, end in self.answers)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 600
    batch_tokens: int = 4096
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup: int = 30
    weight_decay: float = 0.01
    prompt_weight: float = 0.2  # loss weight of prompt tokens (answer tokens weigh 1)
    aux_weight: float = 0.01  # router load balancing
    clip: float = 1.0
    seed: int = 0
    log_every: int = 10


def init_weights(model: Model, seed: int, std: float = 0.02) -> None:
    gen = torch.Generator().manual_seed(seed)
    depth_scale = 1 / math.sqrt(2 * model.cfg.num_layers)  # residual writers start small (GPT-2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith(".bias"):
                p.zero_()
            else:
                scale = depth_scale if name.endswith(("o_proj.weight", "mlp.down", "down.weight")) else 1.0
                p.copy_(torch.randn(p.shape, generator=gen) * std * scale)


def batches(examples: list[Example], batch_tokens: int, rng: random.Random) -> Iterator[list[Example]]:
    """Endless shuffled batches of about `batch_tokens` tokens, similar lengths together (less padding)."""
    while True:
        order = sorted(examples, key=lambda e: (len(e.ids), rng.random()))
        groups, group, size = [], [], 0
        for ex in order:
            if group and (size + len(ex.ids) > batch_tokens):
                groups.append(group)
                group, size = [], 0
            group.append(ex)
            size += len(ex.ids)
        if group:
            groups.append(group)
        rng.shuffle(groups)
        yield from groups


def batch_loss(model: Model, batch: list[Example], prompt_weight: float, aux_weight: float = 0.0,
               answer_only: bool = False) -> tuple[torch.Tensor, dict]:
    """The weighted next-token loss of a batch (plus the router's load-balancing loss)."""
    lens = [len(e.ids) for e in batch]
    ids = torch.tensor([t for e in batch for t in e.ids])  # [T]
    pos = torch.cat([torch.arange(n) for n in lens])  # [T]
    targets, mask = [], []
    for e in batch:
        targets += e.ids[1:] + [IGNORE]  # token t predicts t + 1 within its own sequence
        # 0 prompt, 1 answer, -1 none; target j is token j + 1, so an answer [s, e) is targets s - 1 .. e - 2
        m = [0] * (len(e.ids) - 1) + [-1]
        for start, end in e.answers:
            m[start - 1 : end - 1] = [1] * (end - start)
        mask += m
    targets_t, mask_t = torch.tensor(targets), torch.tensor(mask)
    answer = mask_t == 1
    weights_t = answer.float() + (0.0 if answer_only else prompt_weight) * (mask_t == 0).float()
    routers = _RouterTap(model) if aux_weight else None
    try:
        hidden = model(ids, pos, DenseBatch(lens, ids.device))  # [T, D]
    finally:
        if routers is not None:
            routers.close()
    logits = model.compute_logits(hidden)  # [T, V]
    nll = F.cross_entropy(logits, targets_t.clamp(min=0), reduction="none")  # [T]
    loss = (nll * weights_t).sum() / weights_t.sum().clamp(min=1e-9)
    stats = {"answer_nll": float(nll.detach()[answer].mean()) if answer.any() else float("nan"),
             "answer_tokens": int(answer.sum()), "tokens": len(ids)}
    if routers is not None:
        aux = routers.balance_loss()
        loss = loss + aux_weight * aux
        stats["aux"] = float(aux.detach())
    return loss, stats


class _RouterTap:
    """Catches each MoE layer's router logits during a forward pass, for the load-balancing loss."""

    def __init__(self, model: Model):
        self.logits: list[torch.Tensor] = []
        self.moes = [m for m in model.modules() if isinstance(m, MoE)]
        self.hooks = [m.router.register_forward_hook(lambda _m, _i, out: self.logits.append(out))
                      for m in self.moes]

    def balance_loss(self) -> torch.Tensor:
        """Switch-Transformer style: E * sum_e (share of top-k picks going to e) * (mean router prob of e)."""
        total = torch.zeros(())
        for moe, logits in zip(self.moes, self.logits, strict=True):
            E = logits.shape[-1]
            probs = logits.float().softmax(-1)  # [T, E]
            picks = torch.bincount(moe.last_ids.reshape(-1), minlength=E).float()  # [E]
            total = total + E * (picks / picks.sum() * probs.mean(0)).sum()
        return total / max(len(self.moes), 1)

    def close(self) -> None:
        for h in self.hooks:
            h.remove()


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def train(model: Model, examples: list[Example], cfg: TrainConfig, params: list[torch.nn.Parameter] | None = None,
          log: Callable[[dict], None] | None = None, label: str = "train") -> list[dict]:
    """Run `cfg.steps` optimiser steps over `examples`; returns the loss log (one row per logged step)."""
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    params = params if params is not None else [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    other = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": other, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    model.train()
    rows, t0, seen = [], time.perf_counter(), 0
    window: list[dict] = []
    for step, batch in zip(range(cfg.steps), batches(examples, cfg.batch_tokens, rng), strict=False):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss, stats = batch_loss(model, batch, cfg.prompt_weight, cfg.aux_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.clip)
        opt.step()
        seen += stats["tokens"]
        window.append({"loss": float(loss.detach()), **stats})
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            elapsed = time.perf_counter() - t0
            row = {"phase": label, "step": step + 1, "loss": _mean(window, "loss"),
                   "answer_nll": _mean(window, "answer_nll"), "lr": lr_at(step, cfg),
                   "tokens_per_s": seen / elapsed, "elapsed_s": round(elapsed, 1)}
            rows.append(row)
            window = []
            if log is not None:
                log(row)
            eta = elapsed / (step + 1) * (cfg.steps - step - 1)
            print(f"\r{label}: step {step + 1}/{cfg.steps}  loss {row['loss']:.3f}  answer {row['answer_nll']:.3f}  "
                  f"{row['tokens_per_s']:.0f} tok/s  eta {eta / 60:.1f} min", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    model.eval()
    return rows


@torch.no_grad()
def evaluate(model: Model, examples: list[Example], batch_tokens: int = 8192) -> float:
    """Mean negative log-likelihood per answer token (nats) over `examples`."""
    model.eval()
    total, count = 0.0, 0
    ordered = sorted(examples, key=lambda e: len(e.ids))
    group, size = [], 0
    for ex in [*ordered, None]:
        if ex is None or (group and size + len(ex.ids) > batch_tokens):
            if group:
                _, stats = batch_loss(model, group, 0.0, answer_only=True)
                total += stats["answer_nll"] * stats["answer_tokens"]
                count += stats["answer_tokens"]
            group, size = [], 0
        if ex is not None:
            group.append(ex)
            size += len(ex.ids)
    return total / max(count, 1)


def _mean(rows: list[dict], key: str) -> float:
    values = [r[key] for r in rows if not math.isnan(r[key])]
    return sum(values) / len(values) if values else float("nan")
