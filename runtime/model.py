"""One decoder for every supported family: Llama/Mistral/Qwen2/Qwen3/Phi-3 and
Gemma 2/3 (dense), Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE and Granite-MoE.

The model works on a flat batch of tokens from many sequences (no padding):
`forward(input_ids [T], positions [T], kv)`, where `kv` stores keys and values
and knows which tokens belong to which sequence. Family differences come in
as plain fields of `ModelConfig`.

Legend: T tokens, D hidden, H query heads, G key/value heads, d head dim,
E experts, K top-k, I MLP or expert width, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from swarm.kernels import registry
from swarm.runtime.config import ModelConfig
from swarm.runtime.kv import PagedBatch
from swarm.runtime.rope import Rotary


def kernels(module: nn.Module, device: torch.device, *names: str) -> tuple[Callable, ...]:
    """The registry's ops `names` for `device`, looked up once per module and device: weights move after
    construction, so a module picks its kernels on first use."""
    picked = module.__dict__.get("_kernels")
    if picked is None or picked[0] != device:
        picked = module.__dict__["_kernels"] = (device, tuple(registry.get(n, device) for n in names))
    return picked[1]


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (norm,) = kernels(self, x.device, "rms_norm")
        return norm(x, self.weight, self.eps)


class Linear(nn.Linear):
    """nn.Linear whose matmul comes from the kernel registry (the native one on the CPU)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (linear,) = kernels(self, x.device, "linear")
        return linear(x, self.weight, self.bias)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.layer, self.window, self.scale = layer, cfg.sliding_windows[layer], cfg.scale
        self.H, self.G, self.d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.clip, self.softcap, self.rotary_dim = cfg.clip_qkv, cfg.attn_softcap, cfg.rotary_dim
        # q, k and v share one matmul: [q_size + 2 kv_size, D]
        self.qkv = Linear(cfg.hidden_size, cfg.q_size + 2 * cfg.kv_size, bias=cfg.qkv_bias)
        self.o_proj = Linear(cfg.q_size, cfg.hidden_size, bias=cfg.o_bias)
        self.qk_norm = cfg.qk_norm
        if cfg.qk_norm == "head":
            self.q_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps)
            self.k_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps)
        elif cfg.qk_norm == "full":
            self.q_norm = RMSNorm(cfg.q_size, cfg.rms_norm_eps)
            self.k_norm = RMSNorm(cfg.kv_size, cfg.rms_norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, kv: PagedBatch) -> torch.Tensor:
        T = x.shape[0]
        q, k, v = self.qkv(x).split([self.H * self.d, self.G * self.d, self.G * self.d], dim=-1)
        if self.qk_norm == "full":
            q, k = self.q_norm(q), self.k_norm(k)
        if self.clip is not None:
            q, k, v = (t.clamp(-self.clip, self.clip) for t in (q, k, v))
        q, k, v = q.view(T, self.H, self.d), k.view(T, self.G, self.d), v.view(T, self.G, self.d)
        if self.qk_norm == "head":
            q, k = self.q_norm(q), self.k_norm(k)
        (rotary,) = kernels(self, x.device, "rotary")  # may rotate in place: q and k are this call's own
        if self.rotary_dim == self.d:
            q, k = rotary(q, cos, sin), rotary(k, cos, sin)
        else:  # partial rotary (Phi-3): the first rotary_dim dims of each head turn, the rest pass through
            r = self.rotary_dim
            q = torch.cat((rotary(q[..., :r].contiguous(), cos, sin), q[..., r:]), dim=-1)
            k = torch.cat((rotary(k[..., :r].contiguous(), cos, sin), k[..., r:]), dim=-1)
        out = kv.attend(self.layer, q, k, v, self.scale, self.window, self.softcap)  # [T, H, d]
        return self.o_proj(out.reshape(T, self.H * self.d))


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"silu": F.silu, "gelu_pytorch_tanh": _gelu_tanh}


class MLP(nn.Module):
    """SwiGLU (GeGLU for Gemma) with gate and up fused into one matmul: gate_up [2I, D]."""

    def __init__(self, hidden: int, width: int, bias: bool = False, act: str = "silu"):
        super().__init__()
        self.gate_up = Linear(hidden, 2 * width, bias=bias)
        self.down = Linear(width, hidden, bias=bias)
        self.act = ACTIVATIONS[act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g, u = self.gate_up(x).chunk(2, dim=-1)
        return self.down(self.act(g) * u)


class MoE(nn.Module):
    """Sparse experts; optionally a shared expert scaled by a sigmoid gate (Qwen2-MoE)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        E, I, D = cfg.num_experts, cfg.moe_intermediate_size, cfg.hidden_size
        self.top_k, self.mode, self.renormalize = cfg.top_k, cfg.router, cfg.norm_topk_prob
        self.router = Linear(D, E, bias=False)
        self.gate_up = nn.Parameter(torch.empty(E, 2 * I, D))
        self.down = nn.Parameter(torch.empty(E, D, I))
        self.shared = None
        if cfg.shared_expert_intermediate_size:
            self.shared = MLP(D, cfg.shared_expert_intermediate_size)
            self.shared_gate = Linear(D, 1, bias=False)
        self.last_ids: torch.Tensor | None = None  # [T, K] routing of the last call, for expert-load stats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        route, _ = kernels(self, x.device, "moe_route", "moe_expert_ffn")
        weights, ids = route(self.router(x), self.top_k, self.mode, self.renormalize)  # [T, K]
        self.last_ids = ids
        out = self.experts(x, weights, ids)
        if self.shared is not None:
            out = out + torch.sigmoid(self.shared_gate(x)) * self.shared(x)
        return out

    def experts(self, x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """The routed experts' weighted sum: x [T, D], weights/ids [T, K] -> [T, D] (int8 overrides this)."""
        _, ffn = kernels(self, x.device, "moe_route", "moe_expert_ffn")
        return ffn(x, self.gate_up, self.down, weights, ids)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.attn = Attention(cfg, layer)
        self.mlp_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        if cfg.moe_layers[layer]:
            self.mlp = MoE(cfg)
        else:
            self.mlp = MLP(cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias, cfg.hidden_act)
        # Gemma's sandwich: each block's output is normed too, before the residual add
        self.attn_out_norm = self.mlp_out_norm = None
        if cfg.sandwich_norms:
            self.attn_out_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
            self.mlp_out_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.residual_multiplier = cfg.residual_multiplier

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, kv: PagedBatch) -> torch.Tensor:
        return self.feed_forward(self.attend(x, cos, sin, kv))

    def attend(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, kv: PagedBatch) -> torch.Tensor:
        y = self.attn(self.attn_norm(x), cos, sin, kv)
        return self._residual(x, y if self.attn_out_norm is None else self.attn_out_norm(y))

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mlp(self.mlp_norm(x))
        return self._residual(x, y if self.mlp_out_norm is None else self.mlp_out_norm(y))

    def _residual(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x + y if self.residual_multiplier == 1 else x + y * self.residual_multiplier


class Model(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.embed.weight
        self.rotary = Rotary(cfg.rope, cfg.rotary_dim, cfg.max_position_embeddings)
        # Gemma 3's sliding-window layers turn by their own rope: each layer reads its table by index
        self.local_rotary = None
        if cfg.local_rope is not None:
            self.local_rotary = Rotary(cfg.local_rope, cfg.rotary_dim, cfg.max_position_embeddings)
        self.layer_tables = tuple(int(cfg.layer_rope(i) is not cfg.rope) for i in range(cfg.num_layers))

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, kv: PagedBatch) -> torch.Tensor:
        """input_ids, positions [T] -> final hidden states [T, D]. (A step the engine runs goes through its model
        runner, runtime/runner.py, which may run the layers a block at a time or fused.)"""
        x, tables = self.inputs(input_ids, positions)
        for layer, table in zip(self.layers, self.layer_tables, strict=True):
            x = layer(x, *tables[table], kv)
        return self.norm(x)

    def inputs(self, input_ids: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, list]:
        """What the first layer reads: the embedded tokens x [T, D] and the rope tables, [(cos, sin)] [T, rotary_dim]
        each, the local rotary's second (layer i reads `layer_tables[i]`)."""
        x = self.embed(input_ids)  # [T, D]
        if self.cfg.embedding_multiplier != 1:
            x = x * self.cfg.embedding_multiplier
        # only dynamic RoPE needs the longest position (reading it back would stall a GPU)
        seq_len = int(positions.max()) + 1 if self.rotary.rope.type == "dynamic" else None
        tables = [self.rotary.cos_sin(positions, seq_len=seq_len)]
        if self.local_rotary is not None:
            tables.append(self.local_rotary.cos_sin(positions))
        return x, tables

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [T, D] -> logits [T, V] float32."""
        logits = self.lm_head(hidden)
        if self.cfg.logits_scaling != 1:
            logits = logits / self.cfg.logits_scaling
        if self.cfg.final_softcap is not None:
            logits = torch.tanh(logits / self.cfg.final_softcap) * self.cfg.final_softcap
        return logits.float()
