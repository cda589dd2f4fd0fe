"""The engine: many requests served in batched steps over a paged, persona-aware KV cache.

`Engine.step()` is schedule -> run -> postprocess: the scheduler picks the batch
(runtime/scheduler.py), the model runner turns it into the logits of the rows
that sample (runtime/runner.py: the step's inputs and its decode strategy), the
engine samples them (grammars, greedy rows at once) and the scheduler accounts
for the new tokens (`Scheduler.postprocess`: prefix cache, endings, blocks).
`pump` runs the same pass a slice at a time within a frame's budget. Everything
else (`generate`, `agenerate`, `stream`, `submit`) is a way to feed requests in
and take results out of that one loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from swarm.kernels import registry
from swarm.runtime.block_pool import KV_DTYPES, KVPool, OutOfBlocks
from swarm.runtime.bundled import model_path
from swarm.runtime.cuda_graphs import DecodeGraphs
from swarm.runtime.errors import PromptTooLongError, SchemaError
from swarm.runtime.fused import FusedDecode
from swarm.runtime.grammar import GrammarCompiler, GrammarState
from swarm.runtime.kv import DenseBatch, PagedBatch
from swarm.runtime.kv_tier import KVTier
from swarm.runtime.loader import Progress, checkpoint_dtype, load_model
from swarm.runtime.lora import LoRAManager
from swarm.runtime.memory import format_size, free_memory, parse_size
from swarm.runtime.model import Model, MoE
from swarm.runtime.prefix_cache import PrefixCache
from swarm.runtime.request import Completion, Request, RequestHandle
from swarm.runtime.runner import ModelRunner
from swarm.runtime.sampling import SamplingParams
from swarm.runtime.scheduler import Scheduled, Scheduler
from swarm.runtime.stats import EngineStats
from swarm.runtime.token_mask import TokenMasker
from swarm.runtime.tokenizer import Tokenizer

Prompt = str | Sequence[int]

__all__ = ["Completion", "Engine", "EngineConfig", "RequestHandle"]


TIER_SHARE = 0.2  # of available RAM, the second KV tier's default size
FIRST_PUMP_TOKENS = 32  # the token budget of `pump`'s first step, before any step time was measured


QUANTIZE = (None, "int8", "q8_0", "q4_0", "bf16", "f16")  # Engine.from_pretrained(quantize=...)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}  # (dtype=...)


def check_quantize(quantize: str | None) -> None:
    if quantize not in QUANTIZE:
        raise ValueError(f"unknown quantize={quantize!r}; supported: {', '.join(map(repr, QUANTIZE))}")


def compute_dtype(path: str | Path, device: str | torch.device, dtype: str | torch.dtype | None) -> torch.dtype:
    """The dtype an engine on `device` holds its weights and activations in: `dtype` when given (a DTYPES name
    or torch dtype); else on CUDA the checkpoint's own `torch_dtype` when it is bfloat16 or float16, float32
    otherwise (the CPU always: its kernels compute in float32, and half weights there are `quantize="bf16"`)."""
    if dtype is None:
        named = checkpoint_dtype(path) if torch.device(device).type == "cuda" else None
        return DTYPES[named] if named in ("bfloat16", "float16") else torch.float32
    chosen = DTYPES.get(dtype) if isinstance(dtype, str) else dtype
    if chosen not in DTYPES.values():
        raise ValueError(f"unknown dtype={dtype!r}; supported: {', '.join(DTYPES)}")
    if chosen is not torch.float32 and torch.device(device).type == "cpu":
        raise ValueError(f"dtype={dtype!r} on the CPU: the CPU computes in float32; quantize='bf16' or 'f16' "
                         "stores its weights in half precision")
    return chosen


@dataclass
class _Pass:
    """A step in flight: its work runs in slices (each layer's attention, its MLP, the logits, sampling), so
    `pump` can stop between two slices when a frame's budget is spent and go on in the next call."""

    batch: list[Scheduled]
    slices: Iterator[list[RequestHandle] | None]  # None after each slice but the last, then the finished
    sampling: int  # requests that sample a token at its end
    busy: float = 0.0  # seconds spent in its slices so far
    last: float = 0.0  # seconds of the latest slice
    longest: float = 0.0  # seconds of its longest slice
    count: int = 0  # slices run
    cancelled: list[Request] = field(default_factory=list)  # cancelled mid-pass: their blocks go at its end


@dataclass(frozen=True)
class EngineConfig:
    """Engine sizing.

    The KV pool takes `kv_memory` (bytes, or a size such as "4GiB"), or `kv_cache_tokens` tokens; by default
    it takes `kv_memory_share` of the memory free when the engine starts: 40% of available RAM on the CPU,
    80% of free device memory on a GPU (after the weights are loaded). CPU pools are mapped lazily, so
    memory is used only as blocks are first written.
    """

    block_size: int = 16
    kv_cache_tokens: int | None = None
    kv_memory: int | str | None = None
    kv_memory_share: float | None = None  # None: 0.4 on the CPU, 0.8 on a GPU
    kv_cache_bytes: int | None = None  # the older name of kv_memory, still accepted
    # the second KV tier (runtime/kv_tier.py): evicted persona KV waits there to be copied back, not recomputed.
    # None: 20% of the RAM available at start; 0: no tier. `kv_tier_path` keeps it in a memory-mapped file.
    kv_tier_memory: int | str | None = None
    kv_tier_path: str | None = None
    # token budget of one step (decode tokens + prefill chunks). 2048 as in vLLM's chunked prefill: on 2 CPU
    # cores a 1,000-agent village tick ran 10-25% faster than at 512 (fewer, larger matmuls), while a step
    # stays ~0.2 s; lower it where streaming must not stall behind long prompts
    max_batched_tokens: int = 2048
    max_seqs: int = 256  # requests in one step
    enable_prefix_cache: bool = True
    max_wait_steps: int = 8  # a waiting request is admitted in arrival order after this many steps
    max_adapters: int = 8  # LoRA adapters resident at once (more are loaded on demand)
    max_lora_rank: int = 64
    cuda_graphs: bool = True  # on a GPU, replay decode-only steps as captured CUDA graphs (runtime/cuda_graphs.py)
    fused_decode: bool = True  # on the CPU, decode steps run each layer block as one native call (runtime/fused.py)
    # how K/V are stored: None = the model's dtype; "int8" = int8 + a scale per token/head; "float16" under a float32
    # model on the CPU (half the memory and bandwidth; the attention widens it exactly)
    kv_dtype: str | None = None
    # the weights' format when `Engine.from_pretrained` loads the model (its `quantize`): one of QUANTIZE.
    # A load option kept here so that what opens a model from a config (a simulation, a worker) can ask
    quantize: str | None = None

    def __post_init__(self):
        check_quantize(self.quantize)
        if self.kv_dtype is not None and self.kv_dtype not in KV_DTYPES:
            raise ValueError(f"kv_dtype {self.kv_dtype!r} is not supported; choose None (the model's dtype) or one "
                             f"of {', '.join(KV_DTYPES)}")
        if self.block_size < 1 or self.max_batched_tokens < 1 or self.max_seqs < 1:
            raise ValueError("block_size, max_batched_tokens and max_seqs must be positive")
        if self.kv_cache_tokens is not None and self.kv_cache_tokens < self.block_size:
            raise ValueError(f"kv_cache_tokens ({self.kv_cache_tokens}) must hold at least one block")
        if self.kv_cache_bytes is not None:
            if self.kv_memory is not None:
                raise ValueError("give kv_memory or its older name kv_cache_bytes, not both")
            object.__setattr__(self, "kv_memory", self.kv_cache_bytes)
        if self.kv_memory is not None:
            object.__setattr__(self, "kv_memory", parse_size(self.kv_memory, "kv_memory"))
        if self.kv_tier_memory is not None and self.kv_tier_memory not in (0, "0"):
            object.__setattr__(self, "kv_tier_memory", parse_size(self.kv_tier_memory, "kv_tier_memory"))
        if self.kv_memory_share is not None and not 0 < self.kv_memory_share <= 0.95:
            raise ValueError(f"kv_memory_share must be in (0, 0.95], got {self.kv_memory_share}")

    def kv_pool_bytes(self, device: torch.device) -> tuple[int, str]:
        """(bytes for the KV pool, where that figure comes from) when sized in bytes rather than tokens."""
        if self.kv_memory is not None:
            return self.kv_memory, "kv_memory"
        share = self.kv_memory_share or (0.8 if device.type == "cuda" else 0.4)
        free = free_memory(device)
        where = "free device memory" if device.type == "cuda" else "available RAM"
        return int(free * share), f"{share:.0%} of {format_size(free)} {where}"

    def kv_tier_bytes(self) -> tuple[int, str]:
        """(bytes for the second KV tier, where that figure comes from); 0 for none."""
        if self.kv_tier_memory in (0, "0"):
            return 0, "kv_tier_memory=0"
        if self.kv_tier_memory is not None:
            return self.kv_tier_memory, "kv_tier_memory"
        free = free_memory("cpu")
        return int(free * TIER_SHARE), f"{TIER_SHARE:.0%} of {format_size(free)} available RAM"


class Engine:
    """A model, its tokenizer and the serving loop.

    >>> engine = Engine.from_pretrained("path/to/hf_folder")
    >>> engine.generate(["Once upon"], SamplingParams(max_tokens=16, temperature=0.0))
    """

    def __init__(self, model: Model, tokenizer: Tokenizer, config: EngineConfig | None = None,
                 device: str | torch.device = "cpu"):
        self.model, self.tokenizer = model, tokenizer
        self.source: str | None = None  # the checkpoint folder, when loaded from one
        self.config, self.engine_config = model.cfg, config or EngineConfig()
        self.device = torch.device(device)
        cfg, ec = self.config, self.engine_config
        self.eos_token_ids = set(cfg.eos_token_ids)
        if tokenizer.eos_token_id is not None:
            self.eos_token_ids.add(tokenizer.eos_token_id)
        dtype = next(model.parameters()).dtype
        half_on_cpu = ec.kv_dtype == "float16" and dtype == torch.float32 and self.device.type == "cpu"
        if ec.kv_dtype not in (None, "int8", str(dtype).removeprefix("torch.")) and not half_on_cpu:
            raise ValueError(f"kv_dtype {ec.kv_dtype!r}: a float KV cache is stored in the model's dtype ({dtype}), "
                             "or in float16 under a float32 model on the CPU; use None, 'int8' or that")
        self.kv_bytes_per_token = per_token = KVPool.bytes_per_token(cfg.num_layers, cfg.num_kv_heads, cfg.head_dim,
                                                                     ec.kv_dtype or dtype)
        self.pool = KVPool(self._pool_blocks(per_token), ec.block_size, cfg.num_layers, cfg.num_kv_heads,
                           cfg.head_dim, dtype, self.device, kv_dtype=ec.kv_dtype)
        tier_bytes, self._tier_source = ec.kv_tier_bytes()
        slots = tier_bytes // (per_token * ec.block_size)
        self.tier = KVTier(self.pool, slots, ec.kv_tier_path) if slots else None
        self.cache = PrefixCache(self.pool, self.tier)
        self._prefetching: threading.Thread | None = None
        self.lora = LoRAManager(model, cfg, ec.max_adapters, ec.max_lora_rank)
        self.scheduler = Scheduler(self.pool, self.cache, ec.max_batched_tokens, ec.max_seqs,
                                   ec.enable_prefix_cache, ec.max_wait_steps, adapters=self.lora)
        self._moe = [m for m in model.modules() if isinstance(m, MoE)]
        use_graphs = ec.cuda_graphs and self.device.type == "cuda" and DecodeGraphs.supported(model, self.device)
        self.runner = ModelRunner(
            model, self.pool, self.lora, self.device,
            graphs=DecodeGraphs(model, self.pool, self.lora, self.max_context, ec.max_seqs, self._moe)
            if use_graphs else None,
            fused=ec.fused_decode and FusedDecode.supported(model, self.device))
        self._stats = EngineStats(len(self._moe), cfg.num_experts)
        # constrained decoding: the tokenizer's llguidance view is built on the first schema
        self.grammars = GrammarCompiler(tokenizer, cfg.vocab_size, self.eos_token_ids)
        self._masker = TokenMasker(cfg.vocab_size)
        self._argmax = registry.get("argmax", torch.device("cpu"))  # greedy rows; logits come back to the CPU
        self._pass: _Pass | None = None
        self._uneven = 2.0  # a pass's longest slice over its mean slice, averaged over recent passes

    @property
    def graphs(self) -> DecodeGraphs | None:
        """The captured CUDA decode graphs (None: not on this device)."""
        return self.runner.graphs

    @property
    def fused(self) -> FusedDecode | None:
        """The CPU's fused decode blocks (None: not on this device or model)."""
        return self.runner.fused

    def _pool_blocks(self, per_token: int) -> int:
        """Blocks for the KV pool, noting where its size came from in `memory_summary`."""
        ec = self.engine_config
        if ec.kv_cache_tokens is not None:
            self._kv_source = "kv_cache_tokens"
            return ec.kv_cache_tokens // ec.block_size  # at least one: __post_init__ checks
        nbytes, self._kv_source = ec.kv_pool_bytes(self.device)
        blocks = nbytes // per_token // ec.block_size
        if blocks < 1:
            raise ValueError(f"a KV pool of {format_size(nbytes)} ({self._kv_source}) holds no block: one block of "
                             f"{ec.block_size} tokens takes {format_size(per_token * ec.block_size)}")
        return blocks

    def memory_summary(self, context_tokens: int | None = None) -> str:
        """One line on the KV pool: its size, where the size came from, the tokens it holds and how many
        contexts of `context_tokens` (default: the model's whole context) fit."""
        pool, n, per_token = self.pool, context_tokens or self.max_context, self.kv_bytes_per_token
        tier = "no second tier" if self.tier is None else (
            f"a second tier of {format_size(self.tier.num_slots * pool.block_size * per_token)} "
            f"({self._tier_source}{', in ' + str(self.tier.path) if self.tier.path else ''}): "
            f"{self.tier.num_slots * pool.block_size:,} tokens more")
        return (f"KV pool {format_size(pool.num_tokens * per_token)} ({self._kv_source}, {pool.kv_dtype}): "
                f"{pool.num_tokens:,} tokens, about {pool.num_tokens // n:,} contexts of {n:,} tokens; {tier}")

    @classmethod
    def from_pretrained(cls, path: str | Path, config: EngineConfig | None = None, device: str = "cpu",
                        progress: Progress | None = None, quantize: str | None = None,
                        dtype: str | torch.dtype | None = None) -> Engine:
        """Load a local Hugging Face folder (config.json, safetensors, tokenizer.json) or a GGUF file; float32 on
        the CPU.

        With `quantize=None` (the default) a GGUF file's Q8_0 and Q4_0 weights (attention, MLPs, routed experts,
        output) stay in their blocks on the CPU, repacked at load with no float32 copy: the engine computes
        what the float32 engine computes on the dequantised weights, except that, as in llama.cpp, a product
        with those blocks first rounds its activations to Q8_0 blocks (`swarm.kernels.quant`). Its other
        tensors (embeddings, norms, routers; F16, BF16, Q4_1, Q5_x and K-quant weights) are dequantised to
        float32, so a mixed file (Q4_0 with a Q6_K output, say) has those layers in float32. On another device
        no tensor stays in blocks.

        `dtype` ("float32", "bfloat16" or "float16") is what weights, activations and the KV cache are held in
        on CUDA; by default the checkpoint's `torch_dtype` when that is bfloat16 or float16, else float32. In
        half precision the Triton kernels (attention, MoE routing and experts, LoRA) and torch's matmuls
        accumulate in float32, RMSNorm's mean and the rotary rotation are float32, and the logits come back
        float32; residual adds and each layer's outputs are rounded to `dtype`, as in transformers.

        `quantize="q8_0"` or `"q4_0"` turns the weights into llama.cpp's blocks of 32 weights sharing a scale,
        which the native CPU kernels read in place during decode (the fused decode blocks included),
        multiplying them with the activations rounded to Q8_0 blocks in integer arithmetic, as llama.cpp does;
        `quantize="bf16"` or `"f16"` stores them as bfloat16 or float16 (half the bytes), widened to float32
        the same way, so the arithmetic stays float32 (the logits equal a float32 engine on the rounded
        weights); `quantize="int8"` as int8 with a float32 scale per row (a quarter of the bytes), widened the
        same way, each row's sum scaled once. Attention, MLPs, routed experts and lm_head are quantised (a GGUF
        file's weights from their float32 values, whatever their stored type); routers stay float32. CPU only;
        see `swarm.runtime.quant`. `config.quantize` asks the same.
        """
        check_quantize(quantize)
        if config is not None and config.quantize is not None:
            if quantize not in (None, config.quantize):
                raise ValueError(f"quantize={quantize!r} and config.quantize={config.quantize!r} disagree: give one")
            quantize = config.quantize
        path = model_path(path)  # a bundled model's name, a folder or a GGUF file
        dtype = compute_dtype(path, device, dtype)
        if quantize is not None and dtype is not torch.float32:
            raise ValueError(f"quantize={quantize!r} is a CPU path over float32 compute; dtype={dtype} is for CUDA")
        keep = quantize is None and torch.device(device).type == "cpu"
        model = load_model(path, dtype=dtype, progress=progress, keep_blocks=keep).to(device)
        if quantize is not None:
            from swarm.runtime.quant import quantize_blocks

            quantize_blocks(model, quantize)
        engine = cls(model, Tokenizer.from_pretrained(path), config, device)
        engine.source = str(path)
        # adapters shipped with the model (PEFT folders under adapters/) are registered by their folder name
        for folder in sorted(Path(path).glob("adapters/*/adapter_config.json")):
            engine.add_adapter(folder.parent.name, folder.parent)
        return engine

    @property
    def max_context(self) -> int:
        return self.config.max_context

    # -- requests in --------------------------------------------------------------------

    def _prompt_ids(self, prompt: Prompt) -> list[int]:
        # a text far longer than the context could hold is refused before tokenizing it (seconds for megabytes);
        # the factor 2 covers normalizers that fold characters together
        most = 2 * self.tokenizer.max_token_chars * self.max_context
        if isinstance(prompt, str) and len(prompt) > most:
            raise PromptTooLongError(f"the prompt has {len(prompt):,} characters; the model's context of "
                                     f"{self.max_context} tokens holds at most {most:,}")
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
        if n_prompt + n_new > self.pool.num_blocks * self.pool.block_size:
            raise PromptTooLongError(
                f"the KV pool holds {self.pool.num_blocks * self.pool.block_size} tokens, but one request "
                f"needs {n_prompt + n_new}; give the pool more memory (EngineConfig.kv_memory, --kv-memory)"
            )

    def submit(self, prompt: Prompt, params: SamplingParams | None = None, persona: Hashable = None,
               adapter: Hashable = None, schema: Any = None) -> RequestHandle:
        """Queue a request without running anything; `step()` or `pump()` make progress.

        `persona` names who is speaking: the prefix cache keeps that persona's KV
        according to `hint`s about it. `schema` constrains the completion to a msgspec
        type (compact JSON), a JSON schema (a dict or `JsonSchema`), a `Regex` or a
        `Choice`; the completion's `.value` holds the result. A schema that cannot be
        used raises SchemaError here.
        """
        ids, params, grammar = self._checked(prompt, params, adapter, schema)
        req = Request(ids, params, persona, adapter, frozenset(self.eos_token_ids), grammar)
        req.handle = RequestHandle(self, req)
        self.scheduler.add(req)
        return req.handle

    def check(self, prompt: Prompt, params: SamplingParams | None = None, adapter: Hashable = None,
              schema: Any = None) -> None:
        """Raise what `submit` would raise for this request (an unknown adapter, a prompt past the context, a
        schema that cannot be used), queueing nothing: for a caller that submits later, from another thread."""
        self._checked(prompt, params, adapter, schema)

    def _checked(self, prompt: Prompt, params: SamplingParams | None, adapter: Hashable,
                 schema: Any) -> tuple[list[int], SamplingParams, GrammarState | None]:
        self._check_adapter(adapter)
        params = params or SamplingParams()
        ids = self._prompt_ids(prompt)
        self._check_fits(len(ids), params.max_tokens)
        return ids, params, None if schema is None else self._grammar_state(schema, params)

    def _grammar_state(self, schema: Any, params: SamplingParams) -> GrammarState:
        if params.stop or params.stop_token_ids:
            raise SchemaError("a schema decides where the completion ends: drop stop and stop_token_ids "
                              "from SamplingParams when passing schema=")
        return GrammarState(self.grammars.compile(schema), params.max_tokens, schema)

    # -- adapters ---------------------------------------------------------------------

    def add_adapter(self, name: str, path: str | Path) -> None:
        """Register a PEFT LoRA adapter folder under `name`; it is loaded into a slot when first used."""
        self.lora.add(name, path)

    def adapters(self) -> list[str]:
        """The registered adapters' names."""
        return list(self.lora.known)

    def remove_adapter(self, name: str) -> None:
        """Forget an adapter and the KV cached under it (no running request may use it)."""
        self._join_prefetch()
        self.lora.remove(name)
        self.cache.drop(name)

    def _check_adapter(self, adapter: Hashable) -> None:
        if adapter is not None and adapter not in self.lora.known:
            known = ", ".join(map(repr, self.lora.known)) or "none"
            raise ValueError(f"unknown adapter {adapter!r} (loaded: {known}); call engine.add_adapter first")

    def hint(self, persona: Hashable, next_use: float | None = None, pin: bool | None = None) -> None:
        """Tell the cache how soon `persona` is needed again (e.g. ticks until the agent acts; smaller
        is sooner) and whether to pin its KV. Eviction frees what is needed furthest in the future."""
        self._join_prefetch()
        self.cache.hint(persona, next_use, pin)

    def prefetch(self, wait: bool = False) -> None:
        """Copy back from the second KV tier, soonest-hinted persona first, the KV that hints say is needed
        before what the pool holds; in a background thread, so it overlaps what the caller does next (the
        simulation's bookkeeping between ticks). Anything that touches the cache waits for it first."""
        self._join_prefetch()
        if self.tier is None or not self.cache.num_offloaded:
            return
        self._prefetching = threading.Thread(target=self._prefetch, name="swarm-kv-prefetch")  # exit waits for it
        self._prefetching.start()
        if wait:
            self._join_prefetch()

    @torch.inference_mode()
    def _prefetch(self) -> None:
        self.cache.prefetch()

    def _join_prefetch(self) -> None:
        if self._prefetching is not None:
            self._prefetching.join()
            self._prefetching = None

    def cancel(self, req: Request) -> None:
        if req.finished:
            return
        self._join_prefetch()
        req.out.finish_reason = "cancelled"
        req.out.text = self.tokenizer.decode(req.out.token_ids)
        p = self._pass
        if p is None or all(s.request is not req for s in p.batch):
            self.scheduler.finish(req)
            return
        p.cancelled.append(req)  # the pass in flight still writes its KV: its blocks go at the pass's end
        if all(s.request.finished for s in p.batch):  # nobody left to compute for: drop the pass now
            p.slices.close()
            self._pass = None
            for r in p.cancelled:
                self.scheduler.finish(r)

    # -- the loop -----------------------------------------------------------------------

    def step(self, max_tokens: int | None = None) -> list[RequestHandle]:
        """One batched forward pass over the scheduled requests (at most `max_tokens` tokens, within the
        configured `max_batched_tokens`); returns the requests it finished. When `pump` left a pass in
        flight, this completes that pass instead."""
        self._join_prefetch()
        if self._pass is not None:
            return self._advance(None)
        t0 = time.perf_counter()
        batch = self.scheduler.schedule(max_tokens)
        if not batch:
            return []
        sampling = sum(s.samples for s in batch)  # (before postprocess moves the requests on)
        with torch.inference_mode():
            finished = self._postprocess(batch, self.runner.forward(batch))
        self._stats.record_step(batch, sampling, time.perf_counter() - t0)
        return finished

    @property
    def mid_step(self) -> bool:
        """A step's pass is in flight: `pump` stopped between two of its slices and goes on next call."""
        return self._pass is not None

    def _start(self, max_tokens: int | None) -> bool:
        """Schedule a step and put its pass in flight, to run a slice at a time (`pump`); False when nothing
        could be scheduled."""
        t0 = time.perf_counter()
        batch = self.scheduler.schedule(max_tokens)
        if not batch:
            return False
        self._pass = _Pass(batch, self._slices(batch), sum(s.samples for s in batch), busy=time.perf_counter() - t0)
        return True

    @torch.inference_mode()  # once per call, not once per resumption of the pass's generator
    def _advance(self, deadline: float | None, at_least_one: bool = True) -> list[RequestHandle] | None:
        """Run the pass in flight to its end, or (given a `deadline`) while its next slice, guessed to take
        as long as its last one, ends before it. Returns the requests it finished once the pass is
        complete, None while it is still in flight."""
        p = self._pass
        while True:
            t0 = time.perf_counter()
            if deadline is not None and not at_least_one and t0 + p.last > deadline:
                return None
            at_least_one = False
            out = next(p.slices)
            p.last = time.perf_counter() - t0
            p.busy, p.longest, p.count = p.busy + p.last, max(p.longest, p.last), p.count + 1
            if out is not None:
                break
        self._pass = None
        self._uneven = 0.8 * self._uneven + 0.2 * p.longest * p.count / p.busy  # how uneven pump's slices are
        self._stats.record_step(p.batch, p.sampling, p.busy)
        for req in p.cancelled:
            self.scheduler.finish(req)
        return out

    def _finish_pass(self) -> None:
        """Complete the pass in flight, if any (before anything else runs the model or moves KV)."""
        if self._pass is not None:
            self._advance(None)

    def _slices(self, batch: list[Scheduled]) -> Iterator[list[RequestHandle] | None]:
        """A pumped step's work in slices: the runner's (each block, the logits), then sampling and bookkeeping.
        Yields None after each slice but the last, then the requests the step finished. Resumed by `_advance`
        only, under its inference mode."""
        logits = yield from self.runner.run(batch, sliced=True)
        yield None
        yield self._postprocess(batch, logits)

    def _postprocess(self, batch: list[Scheduled], logits: torch.Tensor) -> list[RequestHandle]:
        """Sample the step's rows, then let the scheduler account for them; the requests it finished."""
        self._stats.record_experts(self._moe)
        finished = self.scheduler.postprocess(batch, self._sample(batch, logits), self.tokenizer.decode)
        self._stats.budget_closed += sum(req.out.budget_closed for req in finished)
        return [req.handle for req in finished]

    def _sample(self, batch: list[Scheduled], logits: torch.Tensor) -> list[int | str | None]:
        """Each scheduled request's outcome: its sampled token, why its grammar cannot go on, or None (it does
        not sample this step, or was cancelled while the pass was in flight). logits: a row per sampler."""
        dead = self._mask_grammars(batch, logits)
        greedy: list[int] | None = None  # every row's argmax, taken at once when a greedy request first asks
        out: list[int | str | None] = []
        row = 0
        for s in batch:
            req = s.request
            if not s.samples or req.finished:
                out.append(None)
            elif row in dead:
                out.append(dead[row])
            elif req.sampler.params.greedy:
                greedy = self._argmax(logits).tolist() if greedy is None else greedy
                out.append(greedy[row])
            else:
                out.append(req.sampler(logits[row]))
            row += s.samples
        return out

    def _mask_grammars(self, batch: list[Scheduled], logits: torch.Tensor) -> dict[int, str]:
        """Mask the rows of constrained requests, all together; returns {row: why} for rows no token can follow."""
        sampling = [s.request for s in batch if s.samples]
        rows = [i for i, r in enumerate(sampling) if r.grammar is not None]
        if not rows:
            return {}
        grammars = [sampling[i].grammar for i in rows]
        empty = set(self._masker.apply(logits, rows, [g.matcher for g in grammars]))
        dead = {}
        for i, g in enumerate(grammars):  # llguidance marks a dead end as an error (its mask allows only EOS)
            why = g.stuck() or ("the grammar allows no token here" if i in empty else None)
            if why:
                dead[rows[i]] = why
        return dead

    def pump(self, max_ms: float) -> int:
        """Work for at most about `max_ms` milliseconds (a game frame's budget); returns the steps completed.

        A step's work runs in slices (each layer's attention, its MLP, the logits, sampling) and stops between
        two when the next one, guessed to take as long as the last, would end past the budget; the next call
        goes on where it stopped. A new step takes as many tokens as keep its longest slice within
        `max_ms`, going by a fit of step time against tokens over recent steps (`EngineStats.step_cost`),
        so a big batch is spread over a few frames and a long prompt is prefilled in chunks (see
        `_pump_budget`). The first slice of a call always runs, so every call makes progress.
        """
        deadline = time.perf_counter() + max_ms / 1000
        self._join_prefetch()
        steps, first = 0, True
        while self.scheduler.has_work:
            if self._pass is None:
                budget, guess = self._pump_budget(max_ms / 1000)
                if not first and time.perf_counter() + guess > deadline:
                    break
                if not self._start(budget):
                    break
            if self._advance(deadline, at_least_one=first) is None:
                break
            steps, first = steps + 1, False
        return steps

    def _pump_budget(self, slice_s: float) -> tuple[int, float]:
        """(tokens for a new step whose longest slice takes about `slice_s` seconds, that slice's guessed
        seconds).

        Slices are not even (an MoE layer costs more than an attention layer), so the longest one is kept
        within the budget, going by how uneven recent passes were. Never fewer than a token for each
        running request: slicing the pass, not shrinking the batch, is what fits decoding into a frame.
        A step that leaves running requests out pays the step's fixed cost again for them, and when that
        cost alone is over the budget (a slow or busy machine) shrinking would only lose throughput.
        """
        cost = self._stats.step_cost()
        if cost is None:  # nothing measured yet: a small step to measure on
            return FIRST_PUMP_TOKENS, 0.0
        fixed, per_token = cost
        slices = (self.runner.num_slices + 1) / self._uneven  # the step's time in units of its longest slice
        fits = int((slice_s * slices - fixed) / per_token)
        budget = min(max(fits, len(self.scheduler.running) + 1), self.engine_config.max_batched_tokens)
        return budget, (fixed + per_token * budget) / slices

    # -- convenience front ends ------------------------------------------------------------

    @staticmethod
    def _per_prompt(value, n: int, what: str) -> list:
        if isinstance(value, (list, tuple)):
            if len(value) != n:
                raise ValueError(f"got {len(value)} {what} for {n} prompts")
            return list(value)
        return [value] * n

    def _submit_all(self, prompts, params, personas, adapter, schema) -> list[RequestHandle]:
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        n = len(prompts)
        columns = [self._per_prompt(params or SamplingParams(), n, "SamplingParams"),
                   self._per_prompt(personas, n, "personas"), self._per_prompt(adapter, n, "adapters"),
                   self._per_prompt(schema, n, "schemas")]
        return [self.submit(p, sp, persona, a, sc)
                for p, sp, persona, a, sc in zip(prompts, *columns, strict=True)]

    def generate(self, prompts: Prompt | Sequence[Prompt],
                 params: SamplingParams | Sequence[SamplingParams] | None = None,
                 personas: Hashable | Sequence[Hashable] = None,
                 adapter: Hashable | Sequence[Hashable] = None, schema: Any = None) -> list[Completion]:
        """Complete each prompt (a string or a list of token ids), all in one batch.

        `params`, `personas`, `adapter` and `schema` take one value for all prompts or a list with one
        per prompt (`adapter=None` is the base model, `schema=None` unconstrained; see `submit`).
        """
        handles = self._submit_all(prompts, params, personas, adapter, schema)
        while not all(h.done for h in handles):
            self.step()
        return [h.result() for h in handles]

    async def agenerate(self, prompts: Prompt | Sequence[Prompt],
                        params: SamplingParams | Sequence[SamplingParams] | None = None,
                        personas: Hashable | Sequence[Hashable] = None,
                        adapter: Hashable | Sequence[Hashable] = None, schema: Any = None) -> list[Completion]:
        """`generate` for asyncio: yields to the event loop between steps, shares steps with other callers."""
        handles = self._submit_all(prompts, params, personas, adapter, schema)
        while not all(h.done for h in handles):
            self.step()
            await asyncio.sleep(0)
        return [h.result() for h in handles]

    async def stream(self, prompt: Prompt, params: SamplingParams | None = None,
                     persona: Hashable = None, adapter: Hashable = None, schema: Any = None) -> AsyncIterator[str]:
        """Yield the completion's text in pieces as tokens are generated.

        With a `schema` the pieces join into the constrained text (JSON for a msgspec type):
        decode it with `msgspec.json.decode(text, type=schema)` once the stream ends.
        """
        handle = self.submit(prompt, params, persona, adapter, schema)
        try:
            while True:
                if not handle.done:
                    self.step()
                piece = handle.new_text()
                if piece:
                    yield piece
                if handle.done:
                    return
                await asyncio.sleep(0)
        finally:
            handle.cancel()

    # -- direct access -----------------------------------------------------------------

    @torch.inference_mode()
    def logits(self, token_ids: Sequence[int], adapter: Hashable = None) -> torch.Tensor:
        """Logits for every position of one sequence: [len, vocab] float32 (nothing is cached)."""
        self._finish_pass()
        self._join_prefetch()
        ids = self._prompt_ids(token_ids)
        self._check_fits(len(ids), 0)
        self._check_adapter(adapter)
        probe = Request(ids, SamplingParams(), adapter=adapter)
        if not self.lora.hold(probe):
            raise RuntimeError(f"every adapter slot is held by running requests; cannot load {adapter!r} now")
        blocks = []
        try:
            for _ in range(-(-len(ids) // self.pool.block_size)):
                blocks.append(self.scheduler.allocate())
            kv = PagedBatch(self.pool, [blocks], [len(ids)], [len(ids)], self.device)
            self.lora.batch.set([probe.lora_slot], [len(ids)], self.device)
            hidden = self.model(torch.tensor(ids, device=self.device), torch.arange(len(ids), device=self.device),
                                kv)
            return self.model.compute_logits(hidden).cpu()
        except OutOfBlocks:
            raise RuntimeError("the KV pool has no room for this sequence while other requests run") from None
        finally:
            for b in blocks:
                self.pool.decref(b)
            self.lora.drop(probe)

    @torch.inference_mode()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Sentence embeddings from the base model: [len(texts), hidden] float32 on the CPU.

        Each row is the L2-normalised mean of the final (normed) hidden states over the text's tokens. Texts
        run many to a forward pass, about `max_batched_tokens` tokens each; a text longer than the model's
        context is truncated to it, and a text with no tokens gets a zero row. Nothing is cached: the KV pool
        and the prefix cache are not touched, so it may run between any two steps.
        """
        self._finish_pass()
        out = torch.zeros(len(texts), self.config.hidden_size)
        ids = [self.tokenizer.encode(t)[: self.max_context] for t in texts]
        for chunk in self._embed_chunks([len(i) for i in ids]):
            out[chunk] = self._mean_hidden([ids[i] for i in chunk])
        return F.normalize(out, dim=-1)

    def _embed_chunks(self, lengths: list[int]) -> list[list[int]]:
        """Indices of non-empty texts grouped up to max_batched_tokens tokens; similar lengths share a chunk
        because the attention pads every sequence to the chunk's longest."""
        order = sorted((i for i, n in enumerate(lengths) if n), key=lambda i: lengths[i])
        chunks, chunk, tokens = [], [], 0
        for i in order:
            if chunk and tokens + lengths[i] > self.engine_config.max_batched_tokens:
                chunks.append(chunk)
                chunk, tokens = [], 0
            chunk.append(i)
            tokens += lengths[i]
        return chunks + [chunk] if chunk else chunks

    def _mean_hidden(self, seqs: list[list[int]]) -> torch.Tensor:
        """Token ids of B sequences -> mean final hidden state per sequence [B, D] float32 on the CPU."""
        lens = [len(s) for s in seqs]
        flat = torch.tensor([t for s in seqs for t in s], device=self.device)  # [T]
        pos = torch.cat([torch.arange(n, device=self.device) for n in lens])  # [T]
        self.lora.batch.set([-1] * len(seqs), lens, self.device)  # the base model: no adapter slot
        hidden = self.model(flat, pos, DenseBatch(lens, self.device)).float()  # [T, D]
        seq = torch.repeat_interleave(torch.arange(len(seqs), device=self.device),
                                      torch.tensor(lens, device=self.device))  # [T] sequence of each token
        sums = hidden.new_zeros(len(seqs), hidden.shape[1]).index_add_(0, seq, hidden)  # [B, D]
        return (sums / torch.tensor(lens, device=self.device)[:, None]).cpu()

    def _tier_stats(self) -> dict:
        c = self.cache
        tier = {} if self.tier is None else {"kv_tier_blocks_total": self.tier.num_slots,
                                             "kv_tier_blocks_used": self.tier.num_used}
        return {**tier, "kv_blocks_restored": c.restored, "kv_blocks_prefetched": c.prefetched,
                "kv_blocks_dropped": c.dropped}

    def stats(self) -> dict:
        """Throughput, batch sizes, prefix-cache hit rate, KV pool use, preemptions, expert load, the
        constrained answers the token budget closed (`budget_closed`, see `Completion.budget_closed`) and on
        a GPU, the decode graphs captured and the steps replayed from them."""
        s = self.scheduler
        graphs = {} if self.graphs is None else {"cuda_graphs_captured": self.graphs.captures,
                                                 "cuda_graph_replays": self.graphs.replays}
        return self._stats.summary(
            prompt_tokens=s.prompt_tokens, cached_tokens=s.cached_tokens, recomputed_tokens=s.recomputed_tokens,
            preemptions=s.num_preemptions, waiting=len(s.waiting), running=len(s.running),
            kv_blocks_total=self.pool.num_blocks, kv_blocks_used=self.pool.num_used,
            kv_blocks_cached=self.cache.num_nodes - self.cache.num_offloaded, **self._tier_stats(),
            block_size=self.pool.block_size, kv_dtype=self.pool.kv_dtype,
            **graphs,
        )
