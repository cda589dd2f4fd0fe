"""Sampling parameters and the per-request sampler."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens for one request. `temperature=0` is greedy.

    `top_k=0` and `top_p=1.0` disable those filters. `stop` strings end the
    completion (the text is cut before the stop string); `stop_token_ids` end it
    after that token, as the model's end-of-sequence tokens do unless `ignore_eos`.
    """

    max_tokens: int = 16
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False

    def __post_init__(self):
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        object.__setattr__(self, "stop", tuple(self.stop))
        object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids))
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 disables it), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if any(not s for s in self.stop):
            raise ValueError("stop strings must not be empty")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


NUCLEUS_CANDIDATES = 512  # top-p looks for its nucleus among this many likeliest tokens first


class Sampler:
    """Picks the next token of one request; owns that request's random generator."""

    def __init__(self, params: SamplingParams):
        self.params = params
        self.generator = torch.Generator()
        if params.seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(params.seed)

    def __call__(self, logits: torch.Tensor) -> int:
        """logits [V] float32 -> token id."""
        p = self.params
        if p.greedy:
            return int(logits.argmax())
        logits = logits / p.temperature
        if p.top_k and p.top_k < logits.shape[-1]:
            kth = logits.topk(p.top_k).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = logits.softmax(-1)
        if p.top_p < 1.0:
            # The nucleus is nearly always among the few likeliest tokens: take those (a partial sort,
            # far cheaper than sorting the vocabulary) and sort everything only when they fall short.
            top, order = probs.topk(min(NUCLEUS_CANDIDATES, probs.shape[-1]))  # [C] descending
            if float(top.sum()) < p.top_p and top.shape[-1] < probs.shape[-1]:
                top, order = probs.sort(descending=True)
            # keep the smallest prefix whose mass reaches top_p (always at least one token)
            top = top.masked_fill(top.cumsum(-1) - top >= p.top_p, 0.0)
            return int(order[torch.multinomial(top, 1, generator=self.generator)])
        return int(torch.multinomial(probs, 1, generator=self.generator))
