"""Model configuration: one frozen dataclass for every supported decoder family.

`ModelConfig.from_hf(dict)` reads a Hugging Face `config.json` (both the v4
layout with `rope_theta`/`rope_scaling` and the v5 layout with
`rope_parameters`) and normalises each family's quirks into plain fields, so
the model code never branches on `model_type`. Families the engine knows of
but cannot run yet are refused as "not yet supported", by name.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from swarm.runtime.errors import ConfigError

ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "llama3")
ACTIVATIONS = ("silu", "gelu_pytorch_tanh")  # the MLP's gate activation (gelu: Gemma's GeGLU)
# Far past any released model (at most 126 layers, 512 experts), and low enough that a typo is refused
# before the per-layer and per-expert tables it sizes are built.
MAX_LAYERS = 4096
MAX_EXPERTS = 16384


@dataclass(frozen=True)
class RopeConfig:
    theta: float = 10000.0
    type: str = "default"
    factor: float = 1.0
    # llama3
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    # yarn / llama3: the context length the model was pretrained with
    original_max_position_embeddings: int | None = None
    # yarn
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    attention_factor: float | None = None
    mscale: float | None = None
    mscale_all_dim: float | None = None
    truncate: bool = True

    def __post_init__(self):
        if self.type not in ROPE_TYPES:
            raise ConfigError(f"unsupported rope scaling type {self.type!r}; supported: {', '.join(ROPE_TYPES)}")
        if self.theta <= 0:
            raise ConfigError(f"rope theta must be positive, got {self.theta}")
        if self.type != "default" and self.factor <= 0:
            raise ConfigError(f"rope scaling factor must be positive, got {self.factor}")


@dataclass(frozen=True)
class ModelConfig:
    """Everything the model code needs, with family differences made explicit."""

    model_type: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int  # dense MLP width (dense layers and dense models)
    max_position_embeddings: int
    rms_norm_eps: float = 1e-6
    rope: RopeConfig = field(default_factory=RopeConfig)
    tie_word_embeddings: bool = False
    hidden_act: str = "silu"
    # Gemma: the checkpoint stores each RMSNorm weight as its offset from 1 (the norm multiplies by 1 + w);
    # the loader adds this to every norm weight, so the model's norms are the plain ones.
    norm_weight_offset: float = 0.0
    sandwich_norms: bool = False  # Gemma 2/3: a norm on the attention output and on the MLP output too
    # attention
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: str = "none"  # "none" | "head" (Qwen3: per head) | "full" (OLMoE: whole projection)
    clip_qkv: float | None = None
    attention_scale: float | None = None  # None: 1/sqrt(head_dim)
    sliding_windows: tuple[int | None, ...] = ()  # per layer; None is full attention
    # Gemma 3: the rope of the sliding-window layers, where it differs from `rope` (the global layers')
    local_rope: RopeConfig | None = None
    partial_rotary_factor: float = 1.0  # Phi-3: rope turns only the first rotary_dim dims of each head
    attn_softcap: float | None = None  # Gemma 2: attention scores become cap * tanh(score / cap)
    # mixture of experts
    num_experts: int = 0
    top_k: int = 1
    moe_intermediate_size: int = 0
    router: str = "softmax_topk"  # "softmax_topk" | "topk_softmax" (Granite: top-k on logits)
    norm_topk_prob: bool = False
    shared_expert_intermediate_size: int = 0  # Qwen2-MoE shared expert with a sigmoid gate
    moe_layers: tuple[bool, ...] = ()  # per layer: sparse MoE block or dense MLP
    # Granite scalar multipliers
    embedding_multiplier: float = 1.0
    residual_multiplier: float = 1.0
    logits_scaling: float = 1.0
    final_softcap: float | None = None  # Gemma 2: logits become cap * tanh(logit / cap)
    # special tokens
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                     "max_position_embeddings"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.rms_norm_eps <= 0:
            raise ConfigError(f"rms_norm_eps must be positive, got {self.rms_norm_eps}")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"num_attention_heads ({self.num_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_kv_heads})"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ConfigError(f"unsupported hidden_act {self.hidden_act!r}; supported: {', '.join(ACTIVATIONS)}")
        if self.hidden_act != "silu" and any(self.moe_layers):
            raise ConfigError(f"hidden_act {self.hidden_act!r} is supported in dense MLPs only (experts are SwiGLU)")
        if self.partial_rotary_factor != 1 and not (0 < self.partial_rotary_factor < 1 and self.rotary_dim >= 2
                                                    and self.rotary_dim % 2 == 0):
            raise ConfigError(f"partial_rotary_factor {self.partial_rotary_factor} of head_dim {self.head_dim} "
                              "must leave an even number of rotary dimensions (at least 2)")
        for name in ("attn_softcap", "final_softcap"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.local_rope is not None and self.local_rope.type == "dynamic":
            raise ConfigError("dynamic rope scaling is supported for the global layers' rope only")
        if self.qk_norm not in ("none", "head", "full"):
            raise ConfigError(f"unknown qk_norm {self.qk_norm!r}")
        if self.router not in ("softmax_topk", "topk_softmax"):
            raise ConfigError(f"unknown router {self.router!r}")
        if len(self.moe_layers) != self.num_layers or len(self.sliding_windows) != self.num_layers:
            raise ConfigError("moe_layers and sliding_windows need one entry per layer")
        if any(self.moe_layers):
            if self.num_experts <= 0 or not 0 < self.top_k <= self.num_experts:
                raise ConfigError(f"top_k ({self.top_k}) must be in 1..num_experts ({self.num_experts})")
            if self.moe_intermediate_size <= 0:
                raise ConfigError(f"moe_intermediate_size must be positive for MoE layers, "
                                  f"got {self.moe_intermediate_size}")
        if not all(self.moe_layers) and self.intermediate_size <= 0:
            raise ConfigError(f"intermediate_size must be positive for dense layers, got {self.intermediate_size}")

    @property
    def is_moe(self) -> bool:
        return any(self.moe_layers)

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def rotary_dim(self) -> int:
        """The leading dimensions of each head that rope turns (the rest pass through)."""
        return int(self.head_dim * self.partial_rotary_factor)

    def layer_rope(self, layer: int) -> RopeConfig:
        """The rope `layer` uses: the local one on sliding-window layers where the model has one."""
        if self.local_rope is not None and self.sliding_windows[layer] is not None:
            return self.local_rope
        return self.rope

    @property
    def max_context(self) -> int:
        """Longest sequence the model serves: rope scaling stretches the pretrained context."""
        r = self.rope
        if r.type in ("linear", "dynamic"):
            return int(self.max_position_embeddings * r.factor)
        if r.type == "yarn":
            return max(int(r.original_max_position_embeddings * r.factor), self.max_position_embeddings)
        return self.max_position_embeddings

    @property
    def scale(self) -> float:
        return self.attention_scale if self.attention_scale is not None else 1.0 / math.sqrt(self.head_dim)

    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> ModelConfig:
        """Build from a Hugging Face `config.json` dict; raises ConfigError for unsupported families and for
        any field whose value has the wrong type or range (the message names the field, the value and what
        it must be)."""
        check_fields(cfg)
        model_type = cfg.get("model_type")
        parse = FAMILIES.get(model_type)
        if model_type in NOT_YET:
            raise ConfigError(
                f"model_type {model_type!r} ({NOT_YET[model_type]}) is not yet supported; supported families: "
                f"{', '.join(sorted(FAMILIES))}"
            )
        if parse is None:
            raise ConfigError(
                f"unsupported model_type {model_type!r}; supported families: {', '.join(sorted(FAMILIES))}"
            )
        try:
            # a family's own reading of a field (Gemma's activation, tied embeddings) wins over the common one
            return cls(**{**_common(cfg), **parse(cfg)})
        except KeyError as e:
            raise ConfigError(f"config.json for {model_type!r} is missing the field {e.args[0]!r}") from None


@dataclass(frozen=True)
class Expect:
    """What a config field must hold: `what` reads as the end of "expected ..."."""

    what: str
    ok: Callable[[Any], bool]
    null: bool = False  # null stands for "not given" (the reader falls back to a default)


def _integer(lo: int, hi: int | None = None, null: bool = False) -> Expect:
    what = "a positive integer" if lo == 1 else f"an integer >= {lo}"
    if hi is not None:
        what = f"an integer from {lo} to {hi}"
    # bool is an int subclass in Python; JSON true is not a size
    return Expect(what, lambda v: type(v) is int and v >= lo and (hi is None or v <= hi), null)


def _number(positive: bool = False, null: bool = False) -> Expect:
    def ok(v):
        finite = type(v) is int or (type(v) is float and math.isfinite(v))
        return finite and (v > 0 or not positive)
    return Expect("a positive number" if positive else "a finite number", ok, null)


def _list_of(item: Expect, what: str) -> Expect:
    return Expect(what, lambda v: isinstance(v, list) and all(item.ok(x) for x in v), null=True)


_TEXT = Expect("a string", lambda v: isinstance(v, str))
_FLAG = Expect("true or false", lambda v: type(v) is bool)
_OBJECT = Expect("an object", lambda v: isinstance(v, dict), null=True)
_TOKEN = _integer(0, null=True)
_TOKENS = Expect("a token id (an integer >= 0) or a list of them",
                 lambda v: _TOKEN.ok(v) or _list_of(_TOKEN, "").ok(v), null=True)
_LAYER_TYPE = Expect("", lambda v: v in ("full_attention", "sliding_attention"))

# Every field of config.json the reader takes, whichever family reads it.
FIELDS: dict[str, Expect] = {
    "model_type": _TEXT,
    "vocab_size": _integer(1),
    "hidden_size": _integer(1),
    "num_hidden_layers": _integer(1, MAX_LAYERS),
    "num_attention_heads": _integer(1),
    "num_key_value_heads": _integer(1, null=True),
    "head_dim": _integer(1, null=True),
    "intermediate_size": _integer(0, null=True),
    "max_position_embeddings": _integer(1),
    "rms_norm_eps": _number(positive=True),
    "rope_theta": _number(positive=True),
    "rope_parameters": _OBJECT,
    "rope_scaling": _OBJECT,
    "partial_rotary_factor": _number(),
    "original_max_position_embeddings": _integer(1, null=True),
    "tie_word_embeddings": _FLAG,
    "hidden_act": _TEXT,
    "hidden_activation": Expect("a string", lambda v: isinstance(v, str), null=True),
    "bos_token_id": _TOKEN,
    "eos_token_id": _TOKENS,
    "attention_bias": _FLAG,
    "mlp_bias": _FLAG,
    "qkv_bias": _FLAG,
    "sliding_window": _integer(0, null=True),  # transformers writes 0 for "no window"
    "use_sliding_window": _FLAG,
    "max_window_layers": _integer(0),
    "layer_types": _list_of(_LAYER_TYPE, 'a list of "full_attention" or "sliding_attention", one per layer'),
    "decoder_sparse_step": _integer(1),
    "mlp_only_layers": _list_of(_integer(0), "a list of layer indices (integers >= 0)"),
    "num_experts": _integer(0, MAX_EXPERTS, null=True),
    "num_local_experts": _integer(0, MAX_EXPERTS, null=True),
    "num_experts_per_tok": _integer(1),
    "moe_intermediate_size": _integer(0),
    "norm_topk_prob": _FLAG,
    "shared_expert_intermediate_size": _integer(0),
    "clip_qkv": _number(positive=True, null=True),
    "attention_multiplier": _number(positive=True, null=True),
    "embedding_multiplier": _number(),
    "residual_multiplier": _number(),
    "logits_scaling": _number(positive=True),
    "query_pre_attn_scalar": _number(positive=True),
    "attn_logit_softcapping": _number(positive=True, null=True),
    "final_logit_softcapping": _number(positive=True, null=True),
    "rope_local_base_freq": _number(positive=True),
    "sliding_window_pattern": _integer(1),
    "use_bidirectional_attention": Expect(_FLAG.what, _FLAG.ok, null=True),
}

# The same inside `rope_scaling` / `rope_parameters` (where null means "not given" throughout).
ROPE_FIELDS: dict[str, Expect] = {
    "rope_type": _TEXT,
    "type": _TEXT,
    "rope_theta": _number(positive=True),
    "factor": _number(positive=True, null=True),
    "partial_rotary_factor": _number(null=True),
    "original_max_position_embeddings": _integer(1, null=True),
    **{k: _number(null=True) for k in ("low_freq_factor", "high_freq_factor", "beta_fast", "beta_slow",
                                       "attention_factor", "mscale", "mscale_all_dim")},
    "truncate": Expect(_FLAG.what, _FLAG.ok, null=True),
}

_JSON_TYPES = {str: "a string", bool: "a boolean", int: "an integer", float: "a number", list: "a list",
               dict: "an object", type(None): "null"}


def check_fields(cfg: Any) -> None:
    """Raise ConfigError for the first field of a config.json dict that holds the wrong type or range."""
    if not isinstance(cfg, dict):
        raise ConfigError(f"a model config must be a JSON object of fields, not {_JSON_TYPES.get(type(cfg), 'that')}")
    _check(cfg, FIELDS, "")
    for key in ("rope_parameters", "rope_scaling"):
        if isinstance(cfg.get(key), dict):
            _check(cfg[key], ROPE_FIELDS, key + ".")
    if cfg.get("head_dim") is None and _is_size(cfg.get("hidden_size")) and _is_size(cfg.get("num_attention_heads")):
        hidden, heads = cfg["hidden_size"], cfg["num_attention_heads"]
        if hidden % heads:
            raise ConfigError(f"hidden_size ({hidden}) is not a multiple of num_attention_heads ({heads}), and no "
                              "head_dim is given: fix one of them or set head_dim")


def _is_size(v: Any) -> bool:
    return type(v) is int and v > 0


def _check(cfg: dict[str, Any], fields: dict[str, Expect], prefix: str) -> None:
    for key, expect in fields.items():
        if key not in cfg or (cfg[key] is None and expect.null) or expect.ok(cfg[key]):
            continue
        value = cfg[key]
        shown = json.dumps(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        if value is not None:
            shown += f" ({_JSON_TYPES.get(type(value), type(value).__name__)})"
        raise ConfigError(f"field {prefix}{key} is {shown}; expected {expect.what}")


def _rope(cfg: dict[str, Any]) -> RopeConfig:
    # v5 keeps everything in `rope_parameters`; v4 has `rope_theta` plus an optional `rope_scaling`.
    params = dict(cfg.get("rope_parameters") or {})
    params.update(cfg.get("rope_scaling") or {})
    rope_type = params.get("rope_type", params.get("type", "default"))
    theta = params.get("rope_theta", cfg.get("rope_theta", 10000.0))
    # transformers reads a Phi-3 "su" or "yarn" rope as longrope
    if rope_type in ("longrope", "su") or (rope_type == "yarn" and cfg.get("model_type") == "phi3"):
        raise ConfigError(f"rope scaling {rope_type!r} (longrope: the long-context Phi-3, Phi-3.5 and Phi-4-mini "
                          f"checkpoints) is not yet supported; supported: {', '.join(ROPE_TYPES)}")
    original = params.get("original_max_position_embeddings", cfg.get("original_max_position_embeddings"))
    if rope_type in ("yarn", "llama3") and original is None:
        original = cfg["max_position_embeddings"]
    factor = params.get("factor")
    if factor is None:
        factor = cfg["max_position_embeddings"] / original if rope_type == "yarn" else 1.0
    optional = {
        k: params[k]
        for k in ("low_freq_factor", "high_freq_factor", "beta_fast", "beta_slow", "attention_factor",
                  "mscale", "mscale_all_dim", "truncate")
        if params.get(k) is not None
    }
    return RopeConfig(
        theta=float(theta), type=rope_type, factor=float(factor),
        original_max_position_embeddings=original, **optional,
    )


# Families whose transformers implementation turns only part of each head when the config says so.
_PARTIAL_ROTARY = ("phi3",)


def _partial_rotary(cfg: dict[str, Any]) -> float:
    params = dict(cfg.get("rope_parameters") or {})
    params.update(cfg.get("rope_scaling") or {})
    factor = params.get("partial_rotary_factor")
    factor = cfg.get("partial_rotary_factor", 1.0) if factor is None else factor
    if factor != 1.0 and cfg["model_type"] not in _PARTIAL_ROTARY:
        raise ConfigError(f"partial_rotary_factor other than 1.0 is not supported for {cfg['model_type']!r} "
                          f"(only for {', '.join(_PARTIAL_ROTARY)})")
    return float(factor)


def _eos(value) -> tuple[int, ...]:
    if value is None:
        return ()
    return tuple(value) if isinstance(value, (list, tuple)) else (int(value),)


def _common(cfg: dict[str, Any]) -> dict[str, Any]:
    heads = cfg["num_attention_heads"]
    return dict(
        model_type=cfg["model_type"],
        vocab_size=cfg["vocab_size"],
        hidden_size=cfg["hidden_size"],
        num_layers=cfg["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=cfg.get("num_key_value_heads") or heads,
        head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
        intermediate_size=cfg.get("intermediate_size") or 0,
        max_position_embeddings=cfg.get("max_position_embeddings", 2048),
        rms_norm_eps=cfg.get("rms_norm_eps", 1e-6),
        rope=_rope(cfg),
        partial_rotary_factor=_partial_rotary(cfg),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        hidden_act=cfg.get("hidden_act", "silu"),
        bos_token_id=cfg.get("bos_token_id"),
        eos_token_ids=_eos(cfg.get("eos_token_id")),
    )


def _dense(cfg) -> tuple[bool, ...]:
    return (False,) * cfg["num_hidden_layers"]


def _full(cfg) -> tuple[None, ...]:
    return (None,) * cfg["num_hidden_layers"]


def _qwen_windows(cfg) -> tuple[int | None, ...]:
    # Qwen families slide only when asked to, and then only from `max_window_layers` on.
    n = cfg["num_hidden_layers"]
    window = cfg.get("sliding_window") or None
    types = cfg.get("layer_types")
    if types is None:
        use = cfg.get("use_sliding_window", False) and window
        start = cfg.get("max_window_layers", n)
        types = ["sliding_attention" if use and i >= start else "full_attention" for i in range(n)]
    elif len(types) != n:
        raise ConfigError(f"field layer_types has {len(types)} entries; expected one per layer "
                          f"(num_hidden_layers is {n})")
    return tuple(window if t == "sliding_attention" else None for t in types)


def _qwen_moe_layers(cfg) -> tuple[bool, ...]:
    n, step = cfg["num_hidden_layers"], cfg.get("decoder_sparse_step", 1)
    dense = set(cfg.get("mlp_only_layers") or [])
    experts = _num_experts(cfg)
    return tuple(i not in dense and experts > 0 and (i + 1) % step == 0 for i in range(n))


def _num_experts(cfg) -> int:
    return cfg.get("num_experts") or cfg.get("num_local_experts") or 0


def _llama(cfg):
    bias = bool(cfg.get("attention_bias", False))
    return dict(qkv_bias=bias, o_bias=bias, mlp_bias=bool(cfg.get("mlp_bias", False)),
                moe_layers=_dense(cfg), sliding_windows=_full(cfg))


def _qwen2(cfg):
    return dict(qkv_bias=True, moe_layers=_dense(cfg), sliding_windows=_qwen_windows(cfg))


def _qwen3(cfg):
    bias = bool(cfg.get("attention_bias", False))
    return dict(qkv_bias=bias, o_bias=bias, qk_norm="head", moe_layers=_dense(cfg),
                sliding_windows=_qwen_windows(cfg))


def _mixtral(cfg):
    n = cfg["num_hidden_layers"]
    return dict(num_experts=cfg["num_local_experts"], top_k=cfg["num_experts_per_tok"],
                moe_intermediate_size=cfg["intermediate_size"], norm_topk_prob=True,
                moe_layers=(True,) * n, sliding_windows=(cfg.get("sliding_window") or None,) * n)


def _qwen2_moe(cfg):
    return dict(qkv_bias=bool(cfg.get("qkv_bias", True)), num_experts=_num_experts(cfg),
                top_k=cfg["num_experts_per_tok"], moe_intermediate_size=cfg["moe_intermediate_size"],
                norm_topk_prob=bool(cfg.get("norm_topk_prob", False)),
                shared_expert_intermediate_size=cfg.get("shared_expert_intermediate_size", 0),
                moe_layers=_qwen_moe_layers(cfg), sliding_windows=_qwen_windows(cfg))


def _qwen3_moe(cfg):
    bias = bool(cfg.get("attention_bias", False))
    return dict(qkv_bias=bias, o_bias=bias, qk_norm="head", num_experts=_num_experts(cfg),
                top_k=cfg["num_experts_per_tok"], moe_intermediate_size=cfg["moe_intermediate_size"],
                norm_topk_prob=bool(cfg.get("norm_topk_prob", False)),
                moe_layers=_qwen_moe_layers(cfg), sliding_windows=_qwen_windows(cfg))


def _olmoe(cfg):
    n = cfg["num_hidden_layers"]
    bias = bool(cfg.get("attention_bias", False))
    return dict(qkv_bias=bias, o_bias=bias, qk_norm="full", clip_qkv=cfg.get("clip_qkv"),
                num_experts=cfg["num_experts"], top_k=cfg["num_experts_per_tok"],
                moe_intermediate_size=cfg["intermediate_size"],
                norm_topk_prob=bool(cfg.get("norm_topk_prob", False)),
                moe_layers=(True,) * n, sliding_windows=(None,) * n)


def _granitemoe(cfg):
    n = cfg["num_hidden_layers"]
    bias = bool(cfg.get("attention_bias", False))
    return dict(qkv_bias=bias, o_bias=bias, num_experts=cfg["num_local_experts"],
                top_k=cfg["num_experts_per_tok"], moe_intermediate_size=cfg["intermediate_size"],
                router="topk_softmax", moe_layers=(True,) * n, sliding_windows=(None,) * n,
                attention_scale=cfg.get("attention_multiplier"),
                embedding_multiplier=cfg.get("embedding_multiplier", 1.0),
                residual_multiplier=cfg.get("residual_multiplier", 1.0),
                logits_scaling=cfg.get("logits_scaling", 1.0))


def _mistral(cfg):
    # one window for every layer (transformers' Mistral ignores layer_types; Ministral is another family)
    return dict(moe_layers=_dense(cfg), sliding_windows=(cfg.get("sliding_window") or None,) * cfg["num_hidden_layers"])


def _phi3(cfg):
    # q/k/v and gate/up come fused in the checkpoint (loader.py), in the order the model fuses them
    return dict(moe_layers=_dense(cfg), sliding_windows=(cfg.get("sliding_window") or None,) * cfg["num_hidden_layers"])


def _gemma_windows(cfg, pattern: int) -> tuple[int | None, ...]:
    # every `pattern`-th layer is global, the others slide (Gemma 2: every other one; Gemma 3: 5 of 6)
    n = cfg["num_hidden_layers"]
    types = cfg.get("layer_types")
    if types is None:
        types = ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(n)]
    elif len(types) != n:
        raise ConfigError(f"field layer_types has {len(types)} entries; expected one per layer "
                          f"(num_hidden_layers is {n})")
    window = cfg.get("sliding_window")
    if window is None and "sliding_attention" in types:
        raise ConfigError(f"{cfg['model_type']} has sliding-window layers but no sliding_window")
    return tuple(window if t == "sliding_attention" else None for t in types)


def _gemma(cfg, pattern: int, attn_softcap: float | None, final_softcap: float | None) -> dict[str, Any]:
    if cfg.get("use_bidirectional_attention"):
        raise ConfigError(f"{cfg['model_type']} with use_bidirectional_attention (an embedding encoder, not a "
                          "decoder) is not supported")
    bias = bool(cfg.get("attention_bias", False))
    return dict(
        qkv_bias=bias, o_bias=bias, moe_layers=_dense(cfg), sliding_windows=_gemma_windows(cfg, pattern),
        hidden_act=cfg.get("hidden_activation") or "gelu_pytorch_tanh", norm_weight_offset=1.0,
        sandwich_norms=True, tie_word_embeddings=bool(cfg.get("tie_word_embeddings", True)),
        embedding_multiplier=cfg["hidden_size"] ** 0.5, attention_scale=cfg.get("query_pre_attn_scalar", 256) ** -0.5,
        attn_softcap=cfg.get("attn_logit_softcapping", attn_softcap),
        final_softcap=cfg.get("final_logit_softcapping", final_softcap),
    )


def _gemma2(cfg):
    return _gemma(cfg, 2, attn_softcap=50.0, final_softcap=30.0)


def _gemma3_text(cfg):
    # transformers' Gemma 3 attention takes no soft-capping, whatever the config says: refuse rather than guess
    if cfg.get("attn_logit_softcapping") is not None:
        raise ConfigError("gemma3_text with attn_logit_softcapping is not supported (Gemma 3 has no attention "
                          "soft-capping; transformers ignores it)")
    rope, local_rope = _gemma3_ropes(cfg)
    return dict(**_gemma(cfg, cfg.get("sliding_window_pattern", 6), attn_softcap=None, final_softcap=None),
                qk_norm="head", rope=rope, local_rope=local_rope)


def _gemma3_ropes(cfg) -> tuple[RopeConfig, RopeConfig]:
    """(global, local) ropes: v5 keeps one rope_parameters entry per layer type; v4 has rope_theta and
    rope_scaling for the global layers and rope_local_base_freq for the sliding ones."""
    params = cfg.get("rope_parameters") or {}
    if "full_attention" in params or "sliding_attention" in params:
        ropes = []
        for kind, theta in (("full_attention", 1e6), ("sliding_attention", 1e4)):
            one = params.get(kind) or {}
            if not isinstance(one, dict):
                raise ConfigError(f"field rope_parameters.{kind} is not an object")
            _check(one, ROPE_FIELDS, f"rope_parameters.{kind}.")
            ropes.append(_rope({**cfg, "rope_parameters": {"rope_theta": theta, **one}, "rope_scaling": None}))
        return ropes[0], ropes[1]
    glob = _rope({**cfg, "rope_theta": cfg.get("rope_theta", 1e6)})
    return glob, RopeConfig(theta=float(cfg.get("rope_local_base_freq", 1e4)))


FAMILIES = {
    "llama": _llama,
    "qwen2": _qwen2,
    "qwen3": _qwen3,
    "mixtral": _mixtral,
    "qwen2_moe": _qwen2_moe,
    "qwen3_moe": _qwen3_moe,
    "olmoe": _olmoe,
    "granitemoe": _granitemoe,
    "mistral": _mistral,
    "phi3": _phi3,
    "gemma2": _gemma2,
    "gemma3_text": _gemma3_text,
}

# Families people ask for that need what the engine does not have yet: refused by name, never approximated.
NOT_YET = {
    "gpt_oss": "gpt-oss: attention sinks and clamped SwiGLU experts",
    "deepseek_v2": "DeepSeek-V2: multi-head latent attention",
    "deepseek_v3": "DeepSeek-V3: multi-head latent attention",
    "gemma3": "Gemma 3 with vision, its language model nested under text_config; the text-only gemma3_text is "
              "supported",
}
