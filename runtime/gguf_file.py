"""Load a GGUF file (llama.cpp's single-file format) into the plain `Model`.

The file's metadata becomes the Hugging Face config dict that `ModelConfig.from_hf` validates, and its
tensors are offered under the Hugging Face checkpoint names `loader.parameter_parts` asks for, so a GGUF
model is assembled, shape-checked and NaN-checked by the same code as a checkpoint folder. Quantised
tensors (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K-Q6_K) are dequantised to float at load with the `gguf`
package's own block decoders, except that Q8_0 and Q4_0 linear weights can be kept in their blocks
(`load_model(keep_blocks=True)`, what `Engine.from_pretrained` does by default): llama.cpp's blocks hold the
values swarm's q8_0 / q4_0 hold, with a float16 scale that converts to float32 exactly.
Families: llama (Llama, SmolLM2; with experts, Mixtral), qwen2, qwen3, qwen2moe, qwen3moe, phi3. Anything
the file holds that the model has no place for, and any metadata that would change the computation in a way
the engine does not follow, is refused by name. Gemma 2 and 3 files are refused: llama.cpp does not store
their attention scale (query_pre_attn_scalar) nor Gemma 3's local rope base and layer pattern, but infers
them from the model's size, and guessing them here could load a wrong model.

llama.cpp's converter reorders the rows of each attention head's q and k projections in llama-family
files (its rope pairs adjacent dimensions, Hugging Face's pairs the two halves); they are put back here
(rows of blocks with their scales, for weights kept in blocks).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from swarm.kernels.quant import BLOCK, Blocks
from swarm.runtime.config import ModelConfig
from swarm.runtime.errors import CheckpointError, ConfigError
from swarm.runtime.loader import Progress, TensorSource, few_names

# general.architecture -> model_type; a llama file with experts is Mixtral
ARCHITECTURES = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "qwen2moe": "qwen2_moe",
                 "qwen3moe": "qwen3_moe", "phi3": "phi3"}
# families whose q/k rows llama.cpp's converter permutes for its adjacent-pair rope
_PERMUTED = ("llama", "mixtral")
TENSOR_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
                "Q6_K")
# the GGML types whose blocks are swarm's block formats but for the scale's width (float16 there, float32 here)
_BLOCK_FORMATS = {"Q8_0": "q8_0", "Q4_0": "q4_0"}
INSTALL = "reading GGUF files needs the gguf package: pip install 'swarm-sim[gguf]'"


def _gguf():
    try:
        import gguf
    except ImportError:
        raise CheckpointError(INSTALL) from None
    return gguf


class GGUFFile:
    """A parsed GGUF file: metadata as plain Python values, tensors by name (memory-mapped, not yet read)."""

    def __init__(self, path: Path):
        gguf = _gguf()
        try:
            reader = gguf.GGUFReader(path)
        except (ValueError, OSError, IndexError, KeyError) as e:
            raise CheckpointError(f"cannot read {path} (corrupt, truncated or not a GGUF file): {e}") from None
        self.path = path
        self.metadata: dict[str, Any] = {}
        for key, fld in reader.fields.items():
            try:
                self.metadata[key] = fld.contents()
            except (ValueError, IndexError, UnicodeDecodeError) as e:
                raise CheckpointError(f"cannot read the metadata {key} of {path}: {e}") from None
        self.tensors = {t.name: t for t in reader.tensors}

    def get(self, key: str, default: Any = ...) -> Any:
        if key in self.metadata:
            return self.metadata[key]
        if default is ...:
            raise ConfigError(f"{self.path}: the GGUF metadata has no {key}")
        return default

    def shape(self, name: str) -> tuple[int, ...]:
        """The tensor's shape in torch order (GGUF lists dimensions innermost first)."""
        return tuple(int(n) for n in reversed(self.tensors[name].shape))


@functools.lru_cache(maxsize=2)
def _cached(path: str, mtime_ns: int, size: int) -> GGUFFile:
    return GGUFFile(Path(path))


def read_gguf(path: str | Path) -> GGUFFile:
    """The parsed file, shared by the weights and the tokenizer of one load (parsing takes seconds)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"GGUF file {path} does not exist")
    st = path.stat()
    return _cached(str(path.resolve()), st.st_mtime_ns, st.st_size)


# -- metadata -> config ---------------------------------------------------------------------------------

# config.json field -> the GGUF key (after "{arch}.") it comes from, to name the key when a value is refused
_KEYS = {
    "vocab_size": "vocab_size", "hidden_size": "embedding_length", "num_hidden_layers": "block_count",
    "num_attention_heads": "attention.head_count", "num_key_value_heads": "attention.head_count_kv",
    "head_dim": "attention.key_length", "intermediate_size": "feed_forward_length",
    "max_position_embeddings": "context_length", "rms_norm_eps": "attention.layer_norm_rms_epsilon",
    "rope_theta": "rope.freq_base", "num_experts": "expert_count", "num_local_experts": "expert_count",
    "num_experts_per_tok": "expert_used_count", "moe_intermediate_size": "expert_feed_forward_length",
    "shared_expert_intermediate_size": "expert_shared_feed_forward_length",
}


def _one(value: Any, key: str) -> Any:
    # a few models vary head counts or widths per layer (an array in the metadata); ours do not
    if isinstance(value, list):
        if len(set(value)) != 1:
            raise ConfigError(f"the GGUF metadata {key} differs per layer ({value[:8]}...): not supported")
        return value[0]
    return value


def hf_config(f: GGUFFile) -> dict[str, Any]:
    """The Hugging Face config.json dict the file's metadata describes."""
    arch = f.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise ConfigError(f"{f.path}: unsupported GGUF architecture {arch!r}; supported: "
                          f"{', '.join(ARCHITECTURES)} (llama with experts is Mixtral)")

    def get(key: str, default: Any = ...) -> Any:
        return _one(f.get(f"{arch}.{key}", default), f"{arch}.{key}")

    experts = get("expert_count", 0)
    model_type = "mixtral" if arch == "llama" and experts else ARCHITECTURES[arch]
    head_dim = get("attention.key_length", None)
    if get("attention.value_length", head_dim) != head_dim:
        raise ConfigError(f"{f.path}: key and value heads of different widths are not supported")
    heads, hidden = get("attention.head_count"), get("embedding_length")
    rotary, whole = get("rope.dimension_count", None), head_dim or hidden // max(heads, 1)
    partial = None
    if rotary is not None and rotary != whole:
        if arch != "phi3" or int(whole * (rotary / whole)) != rotary:
            raise ConfigError(f"{f.path}: rope over {rotary} of each head's {whole} dimensions (partial rotary) is "
                              f"supported for phi3 only")
        partial = rotary / whole
    if {"rope_factors_long.weight", "rope_factors_short.weight"} & set(f.tensors):
        raise ConfigError(f"{f.path}: longrope rope scaling (rope_factors_long/short: the long-context Phi-3, "
                          "Phi-3.5 and Phi-4-mini files) is not yet supported")
    tokens = f.get("tokenizer.ggml.tokens", None)
    eos = [f.get(k) for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id") if k in f.metadata]
    cfg: dict[str, Any] = {
        "model_type": model_type,
        "vocab_size": get("vocab_size", len(tokens) if tokens else None),
        "hidden_size": hidden,
        "num_hidden_layers": get("block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": get("attention.head_count_kv", heads),
        "head_dim": head_dim,
        "intermediate_size": get("feed_forward_length", 0),
        "max_position_embeddings": get("context_length"),
        "rms_norm_eps": get("attention.layer_norm_rms_epsilon"),
        "rope_theta": get("rope.freq_base", 10000.0),
        "tie_word_embeddings": "output.weight" not in f.tensors,
        "hidden_act": "silu",
        "bos_token_id": f.get("tokenizer.ggml.bos_token_id", None),
        "eos_token_id": sorted(set(eos)) or None,
    }
    scaling = get("rope.scaling.type", "none")
    if scaling == "linear":
        cfg["rope_scaling"] = {"rope_type": "linear", "factor": get("rope.scaling.factor")}
    elif scaling == "yarn":
        cfg["rope_scaling"] = {"rope_type": "yarn", "factor": get("rope.scaling.factor"),
                               "original_max_position_embeddings": get("rope.scaling.original_context_length")}
        for beta in ("beta_fast", "beta_slow"):
            if f"{arch}.rope.scaling.yarn_{beta}" in f.metadata:
                cfg["rope_scaling"][beta] = get(f"rope.scaling.yarn_{beta}")
        # yarn's attention factor and extrapolation mix, as llama.cpp names them, have no sure counterpart here
        other = sorted(k for k in f.metadata if k.startswith(f"{arch}.rope.scaling.") and k.split(".")[-1] not in (
            "type", "factor", "original_context_length", "finetuned", "yarn_beta_fast", "yarn_beta_slow"))
        if other:
            raise ConfigError(f"{f.path}: yarn rope scaling with {', '.join(other)} is not supported")
    elif scaling != "none":
        raise ConfigError(f"{f.path}: rope scaling {scaling!r} is not supported (supported: none, linear, yarn)")
    if model_type == "llama":
        cfg["attention_bias"] = "blk.0.attn_q.bias" in f.tensors
        cfg["mlp_bias"] = "blk.0.ffn_down.bias" in f.tensors
    if model_type == "phi3":
        cfg["sliding_window"] = get("attention.sliding_window", None)
        if partial is not None:
            cfg["partial_rotary_factor"] = partial
    if experts:
        _experts(f, arch, model_type, get, cfg)
    return cfg


def _experts(f: GGUFFile, arch: str, model_type: str, get, cfg: dict[str, Any]) -> None:
    if get("expert_gating_func", 1) != 1:  # 1 is softmax; sigmoid gating is another model
        raise ConfigError(f"{f.path}: {arch}.expert_gating_func {get('expert_gating_func')} is not supported "
                          "(softmax only)")
    if get("expert_weights_scale", 1.0) != 1.0:
        raise ConfigError(f"{f.path}: {arch}.expert_weights_scale other than 1 is not supported")
    cfg["num_experts_per_tok"] = get("expert_used_count")
    if model_type == "mixtral":
        cfg["num_local_experts"] = get("expert_count")
        cfg["intermediate_size"] = get("expert_feed_forward_length", cfg["intermediate_size"])
        return
    cfg["num_experts"] = get("expert_count")
    cfg["moe_intermediate_size"] = get("expert_feed_forward_length")
    # llama.cpp always renormalises Qwen3-MoE's top-k weights and never Qwen2-MoE's, unless the file says
    cfg["norm_topk_prob"] = bool(get("expert_weights_norm", model_type == "qwen3_moe"))
    cfg["mlp_only_layers"] = [i for i in range(cfg["num_hidden_layers"])
                              if f"blk.{i}.ffn_gate_inp.weight" not in f.tensors]
    if model_type == "qwen2_moe":
        shared = f.tensors.get("blk.0.ffn_up_shexp.weight")
        width = f.shape("blk.0.ffn_up_shexp.weight")[0] if shared is not None else 0
        cfg["shared_expert_intermediate_size"] = get("expert_shared_feed_forward_length", width)


def read_config(f: GGUFFile) -> ModelConfig:
    """The file's metadata as a ModelConfig; a ConfigError names the file and the GGUF key."""
    cfg = hf_config(f)
    try:
        return ModelConfig.from_hf(cfg)
    except ConfigError as e:
        text = str(e)
        field = re.search(r"field (\w+)", text)
        if field and field.group(1) in _KEYS:
            text += f" (GGUF metadata {f.get('general.architecture')}.{_KEYS[field.group(1)]})"
        raise ConfigError(f"{f.path}: {text}") from None


# -- tensor names --------------------------------------------------------------------------------------

# per layer: GGUF name (after "blk.N.") -> Hugging Face name (after "model.layers.N.")
_LAYER = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    **{f"attn_{g}.{w}": f"self_attn.{h}_proj.{w}" for g, h in (("q", "q"), ("k", "k"), ("v", "v"), ("output", "o"))
       for w in ("weight", "bias")},
    "attn_qkv.weight": "self_attn.qkv_proj.weight",  # Phi-3's fused q, k, v
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
    **{f"ffn_{p}.{w}": f"mlp.{p}_proj.{w}" for p in ("gate", "up", "down") for w in ("weight", "bias")},
    **{f"ffn_{p}_shexp.weight": f"mlp.shared_expert.{p}_proj.weight" for p in ("gate", "up", "down")},
    "ffn_gate_inp_shexp.weight": "mlp.shared_expert_gate.weight",
}
# Phi-3's ffn_up holds gate and up fused (gate first), as its Hugging Face gate_up_proj does
_PHI3_LAYER = {**_LAYER, "ffn_up.weight": "mlp.gate_up_proj.weight"}
_GLOBAL = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
           "output.weight": "lm_head.weight"}
_BLOCK = re.compile(r"^blk\.(\d+)\.(.+)$")
_EXPERTS = re.compile(r"^ffn_(gate|up|down)_exps\.weight$")
_ONE_EXPERT = re.compile(r"^ffn_(gate|up|down)\.(\d+)\.weight$")  # older Mixtral files: one tensor per expert


@dataclass(frozen=True)
class _Source:
    """Where a Hugging Face tensor comes from in the file."""

    tensor: str
    expert: int | None = None  # a slice of a stacked experts tensor
    heads: int = 0  # undo llama.cpp's per-head row permutation over this many heads
    shape: tuple[int, ...] | None = None  # a different view of the same elements (the shared expert gate)


def tensor_map(f: GGUFFile, cfg: ModelConfig) -> dict[str, _Source]:
    """Hugging Face checkpoint name -> where it is in the file; tensors with no such name keep their GGUF
    name (so that a tensor the model has no place for is refused by its name in the file)."""
    mixtral = cfg.model_type == "mixtral"
    moe = "block_sparse_moe" if mixtral else "mlp"
    expert_names = {"gate": "w1", "up": "w3", "down": "w2"} if mixtral else {
        p: f"{p}_proj" for p in ("gate", "up", "down")}
    permute = cfg.model_type in _PERMUTED
    layer_names = _layer_names(cfg)
    out: dict[str, _Source] = {}
    for name in f.tensors:
        if name in _GLOBAL:
            out[_GLOBAL[name]] = _Source(name)
            continue
        m = _BLOCK.match(name)
        if not m:
            out[name] = _Source(name)
            continue
        i, rest = m.groups()
        p = f"model.layers.{i}."
        if rest in layer_names:
            heads = 0
            if permute and rest.startswith(("attn_q.", "attn_k.")):
                heads = cfg.num_heads if rest.startswith("attn_q.") else cfg.num_kv_heads
            shape = None
            if rest == "ffn_gate_inp_shexp.weight":
                shape = (1, cfg.hidden_size)
            out[p + layer_names[rest]] = _Source(name, heads=heads, shape=shape)
        elif rest == "ffn_gate_inp.weight":
            out[f"{p}{moe}.gate.weight"] = _Source(name)
        elif (e := _EXPERTS.match(rest)) is not None:
            for x in range(f.shape(name)[0]):
                out[f"{p}{moe}.experts.{x}.{expert_names[e.group(1)]}.weight"] = _Source(name, expert=x)
        elif mixtral and (e := _ONE_EXPERT.match(rest)) is not None:
            out[f"{p}{moe}.experts.{e.group(2)}.{expert_names[e.group(1)]}.weight"] = _Source(name)
        else:
            out[name] = _Source(name)
    return out


def _layer_names(cfg: ModelConfig) -> dict[str, str]:
    return _PHI3_LAYER if cfg.model_type == "phi3" else _LAYER


def _unpermute(w: torch.Tensor, heads: int) -> torch.Tensor:
    # llama.cpp wrote row (h, j, r) of each head from Hugging Face row (h, r, j): j over pairs, r the half
    rows = w.shape[0]
    return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


class _GGUFTensors(TensorSource):
    """A GGUF file's tensors under Hugging Face checkpoint names, dequantised to float32 as they are read, or
    (Q8_0 and Q4_0, when the loader keeps blocks) repacked into swarm's blocks."""

    what = "GGUF file"
    config_name = "its metadata"

    def __init__(self, f: GGUFFile, cfg: ModelConfig, progress: Progress | None):
        super().__init__(f.path, f.path.stat().st_size, progress)
        self.file, self.cfg = f, cfg
        self.map = tensor_map(f, cfg)

    def names(self) -> list[str]:
        return list(self.map)

    def shape(self, name: str) -> tuple[int, ...]:
        src = self.map[name]
        shape = self.file.shape(src.tensor)
        if src.expert is not None:
            shape = shape[1:]
        if src.shape is not None and int(np.prod(shape)) == int(np.prod(src.shape)):
            shape = src.shape
        return shape

    def name_in_file(self, name: str) -> str:
        layer = re.match(r"^model\.layers\.(\d+)\.(.+)$", name)
        if layer is None:
            return {v: k for k, v in _GLOBAL.items()}.get(name, name)
        i, rest = layer.groups()
        expert = re.search(r"\.experts\.\d+\.(\w+)\.weight$", rest)
        if expert:
            part = {"w1": "gate", "w3": "up", "w2": "down"}.get(expert.group(1), expert.group(1).split("_")[0])
            return f"blk.{i}.ffn_{part}_exps.weight"
        if rest.endswith(".gate.weight"):
            return f"blk.{i}.ffn_gate_inp.weight"
        return f"blk.{i}." + {v: k for k, v in _layer_names(self.cfg).items()}.get(rest, rest)

    def label(self, name: str) -> str:
        src = self.map[name]
        expert = "" if src.expert is None else f" (expert {src.expert})"
        return repr(src.tensor) + expert + ("" if src.tensor == name else f" ({name})")

    def refuse_type(self, name: str) -> str | None:
        kind = self.file.tensors[self.map[name].tensor].tensor_type.name
        if kind in TENSOR_TYPES:
            return None
        return f"is stored as {kind}, a GGML type this loader does not read (it reads {', '.join(TENSOR_TYPES)})"

    def read(self, name: str) -> tuple[torch.Tensor, int]:
        src = self.map[name]
        t = self.file.tensors[src.tensor]
        data = t.data if src.expert is None else t.data[src.expert]
        try:
            values = _gguf().quants.dequantize(data, t.tensor_type)
        except (ValueError, NotImplementedError) as e:
            raise CheckpointError(f"cannot read tensor {src.tensor!r} from {self.file.path.name}: {e}") from None
        # the file is mapped read-only; torch wants memory it may write
        w = torch.from_numpy(np.require(values, np.float32, ["C", "W"])).reshape(self.shape(name))
        if src.heads:
            w = _unpermute(w, src.heads)
        return w, self._nbytes(src)

    def _nbytes(self, src: _Source) -> int:
        t = self.file.tensors[src.tensor]
        return int(t.n_bytes) // (1 if src.expert is None else int(t.data.shape[0]))

    def block_format(self, name: str) -> str | None:
        src = self.map[name]
        if src.shape is not None:  # a reshaped vector (the shared expert gate), never kept in blocks
            return None
        return _BLOCK_FORMATS.get(self.file.tensors[src.tensor].tensor_type.name)

    def read_blocks(self, name: str) -> tuple[Blocks, int]:
        src = self.map[name]
        t = self.file.tensors[src.tensor]
        fmt = _BLOCK_FORMATS[t.tensor_type.name]
        data = t.data if src.expert is None else t.data[src.expert]
        # llama.cpp's block: a float16 scale, then the 32 weights' values (int8, or 4-bit pairs laid out as here)
        raw = torch.from_numpy(np.require(data, np.uint8, ["C", "W"]))
        raw = raw.reshape(*raw.shape[:-1], -1, 2 + (BLOCK if fmt == "q8_0" else BLOCK // 2))  # [..., N, K/32, B]
        scales = raw[..., :2].contiguous().view(torch.float16)[..., 0].float()
        values = raw[..., 2:].contiguous().reshape(*raw.shape[:-2], -1)
        if fmt == "q8_0":
            values = values.view(torch.int8)
        if values.shape[:-1] != self.shape(name)[:-1] or scales.shape[-1] * BLOCK != self.shape(name)[-1]:
            raise CheckpointError(f"tensor {self.label(name)} in {self.file.path.name} holds "
                                  f"{tuple(values.shape)} values for a weight of shape {self.shape(name)}")
        if src.heads:
            values, scales = _unpermute(values, src.heads), _unpermute(scales, src.heads)
        return Blocks(values.contiguous(), scales.contiguous(), fmt), self._nbytes(src)

    def check_unused(self, unused: list[str], cfg: ModelConfig) -> None:
        if "rope_freqs.weight" in unused:
            raise CheckpointError(
                f"{self.location} holds rope_freqs.weight (Llama 3.1-style per-frequency rope scaling), which "
                "this loader does not read yet: load the model's Hugging Face folder instead"
            )
        if unused:  # every tensor of a GGUF file is part of the model it describes
            names = sorted({self.map[n].tensor for n in unused})
            raise CheckpointError(
                f"{self.location} holds {few_names(names)}, which the {cfg.model_type} model its metadata describes "
                "has no place for (a tensor of a newer llama.cpp feature, or metadata and tensors that disagree)"
            )


def open_gguf(path: str | Path, progress: Progress | None = None) -> tuple[ModelConfig, TensorSource]:
    """The model config a GGUF file describes and its tensors, ready for `loader.load_model` to assemble."""
    f = read_gguf(path)
    cfg = read_config(f)
    return cfg, _GGUFTensors(f, cfg, progress)
