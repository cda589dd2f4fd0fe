"""The engine: a loaded model with its tokenizer, and generation over batches of prompts.

This is the simple, correct path: all prompts of one `generate` call are
prefilled together in one flat forward pass, then decoded together one token
per step, each sequence with its own contiguous KV cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from swarm.runtime.errors import PromptTooLongError
from swarm.runtime.kv import KVBatch, SequenceKV
from swarm.runtime.loader import Progress, load_model
from swarm.runtime.model import Model
from swarm.runtime.sampling import Sampler, SamplingParams
from swarm.runtime.tokenizer import Tokenizer

Prompt = str | Sequence[int]


@dataclass
class Completion:
    prompt_token_ids: list[int]
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None  # "stop" (a stop string or token) or "length"


class _Sequence:
    """One prompt being generated: its cache, sampler and output so far."""

    def __init__(self, prompt_ids: list[int], params: SamplingParams, num_layers: int, eos: set[int]):
        self.params, self.sampler = params, Sampler(params)
        self.kv = SequenceKV(num_layers)
        self.out = Completion(prompt_token_ids=prompt_ids)
        self.stop_ids = set(params.stop_token_ids) | (set() if params.ignore_eos else eos)
        self.pending = prompt_ids  # tokens to feed at the next step

    def accept(self, token: int, decode) -> None:
        self.out.token_ids.append(token)
        self.pending = [token]
        p = self.params
        if p.stop:
            text = decode(self.out.token_ids)
            cut = min((i for i in (text.find(s) for s in p.stop) if i >= 0), default=-1)
            if cut >= 0:
                self.out.text, self.out.finish_reason = text[:cut], "stop"
                return
        if token in self.stop_ids:
            self.out.finish_reason = "stop"
        elif len(self.out.token_ids) >= p.max_tokens:
            self.out.finish_reason = "length"
        if self.out.finish_reason:
            self.out.text = decode(self.out.token_ids)


class Engine:
    """A model and tokenizer ready to serve.

    >>> engine = Engine.from_pretrained("path/to/hf_folder")
    >>> engine.generate(["Once upon"], SamplingParams(max_tokens=16, temperature=0.0))
    """

    def __init__(self, model: Model, tokenizer: Tokenizer, device: str | torch.device = "cpu"):
        self.model, self.tokenizer = model, tokenizer
        self.config = model.cfg
        self.device = torch.device(device)
        self.eos_token_ids = set(self.config.eos_token_ids)
        if tokenizer.eos_token_id is not None:
            self.eos_token_ids.add(tokenizer.eos_token_id)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu", progress: Progress | None = None) -> Engine:
        """Load a local Hugging Face folder (config.json, safetensors, tokenizer.json).

        Weights are computed in float32 on the CPU.
        """
        model = load_model(path, dtype=torch.float32, progress=progress).to(device)
        return cls(model, Tokenizer.from_folder(path), device)

    @property
    def max_context(self) -> int:
        return self.config.max_context

    # -- prompts ------------------------------------------------------------------

    def _prompt_ids(self, prompt: Prompt) -> list[int]:
        ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
        if not ids:
            raise ValueError("a prompt must have at least one token")
        bad = [t for t in ids if not 0 <= t < self.config.vocab_size]
        if bad:
            raise ValueError(f"token ids {bad[:5]} are outside the vocabulary (size {self.config.vocab_size})")
        return ids

    def _check_fits(self, n_prompt: int, n_new: int) -> None:
        if n_prompt + n_new > self.max_context:
            raise PromptTooLongError(
                f"the model's context is {self.max_context} tokens, but {n_prompt + n_new} were requested "
                f"({n_prompt} in the prompt, {n_new} to generate)"
            )

    # -- forward ------------------------------------------------------------------

    @torch.inference_mode()
    def _forward(self, seqs: list[_Sequence]) -> torch.Tensor:
        """Run every sequence's pending tokens in one flat batch -> last-token logits [B, V]."""
        ids, pos, lens = [], [], []
        for s in seqs:
            start = s.kv.length
            ids += s.pending
            pos += range(start, start + len(s.pending))
            lens.append(len(s.pending))
        hidden = self.model(
            torch.tensor(ids, device=self.device), torch.tensor(pos, device=self.device),
            KVBatch([s.kv for s in seqs], lens),
        )
        last = torch.tensor(lens, device=self.device).cumsum(0) - 1
        return self.model.compute_logits(hidden[last]).cpu()

    @torch.inference_mode()
    def logits(self, token_ids: Sequence[int]) -> torch.Tensor:
        """Logits for every position of one sequence: [len, vocab] float32."""
        ids = self._prompt_ids(token_ids)
        self._check_fits(len(ids), 0)
        kv = SequenceKV(self.config.num_layers)
        hidden = self.model(
            torch.tensor(ids, device=self.device), torch.arange(len(ids), device=self.device),
            KVBatch([kv], [len(ids)]),
        )
        return self.model.compute_logits(hidden).cpu()

    def generate(
        self, prompts: Prompt | Sequence[Prompt], params: SamplingParams | Sequence[SamplingParams] | None = None
    ) -> list[Completion]:
        """Complete each prompt (a string or a list of token ids); one `SamplingParams` or one per prompt."""
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        params = params or SamplingParams()
        if isinstance(params, SamplingParams):
            params = [params] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError(f"got {len(params)} SamplingParams for {len(prompts)} prompts")
        seqs = []
        for prompt, p in zip(prompts, params, strict=True):
            ids = self._prompt_ids(prompt)
            self._check_fits(len(ids), p.max_tokens)
            seqs.append(_Sequence(ids, p, self.config.num_layers, self.eos_token_ids))
        active = list(seqs)
        while active:
            logits = self._forward(active)
            for s, row in zip(active, logits, strict=True):
                s.accept(s.sampler(row), self.tokenizer.decode)
            active = [s for s in active if s.out.finish_reason is None]
        return [s.out for s in seqs]
