"""Load a local Hugging Face checkpoint folder (or a GGUF file: `gguf_file`) into the plain `Model`.

Reads `config.json`, then `model.safetensors` or the shards named by
`model.safetensors.index.json`. Every model parameter is assembled from the
checkpoint tensors it is made of (q/k/v fused into one projection, per-expert
weights stacked). Every tensor is checked for presence and shape (from the
file headers, before the model's memory is allocated) and for NaN or inf
values, and converted to the compute dtype only here, at load. Tensors inside
a decoder layer that the config has no place for are refused too: the model
they belong to is not the one config.json describes. So are quantised
checkpoints (a `quantization_config`, FP8 or integer weights, scale and
zero-point tensors): their stored values are not the weights, and loading
them as floats would give a model that runs and answers garbage.
"""

from __future__ import annotations

import json
import re
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from swarm.kernels.quant import Blocks
from swarm.runtime.bundled import is_gguf_file
from swarm.runtime.config import ModelConfig
from swarm.runtime.errors import CheckpointError, ConfigError
from swarm.runtime.model import Model

Progress = Callable[[int, int], None]  # (bytes loaded, total bytes)
PROGRESS_MIN_BYTES = 256 * 2**20  # show progress on stderr for checkpoints at least this big


@dataclass(frozen=True)
class Part:
    """One checkpoint tensor that goes into a model parameter, with the shape it must have."""

    name: str
    shape: tuple[int, ...]
    offset: float = 0.0  # added to the stored values at load (Gemma stores norm weights as their offset from 1)


def read_json(path: Path, error: type[Exception] = CheckpointError) -> dict:
    """A JSON file of a checkpoint or adapter folder; `error` names the file when it is not valid JSON."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise error(f"{path} is not valid JSON: {e}") from None


# Where config.json says its weights are quantised: the values in the file are not the weights, and loading
# them as floats gives a model that runs and outputs garbage.
_QUANTIZATION_KEYS = ("quantization_config", "compression_config")


def read_config(folder: Path) -> ModelConfig:
    """The folder's config.json as a ModelConfig; a ConfigError names the file, the field and the value."""
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(f"no config.json in {folder}")
    raw = read_json(path, ConfigError)
    for key in _QUANTIZATION_KEYS:
        if isinstance(raw, dict) and raw.get(key):
            method = raw[key].get("quant_method") if isinstance(raw[key], dict) else None
            raise CheckpointError(
                f"{path} has a {key} (quant_method {method!r}): quantised checkpoints (FP8, GPTQ, AWQ, "
                "bitsandbytes, compressed-tensors) are not supported and are never loaded approximately; "
                "load the float checkpoint, or a GGUF file"
            )
    try:
        return ModelConfig.from_hf(raw)
    except ConfigError as e:
        if str(path) in str(e):
            raise
        raise ConfigError(f"{path}: {e}") from None


def checkpoint_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index} is not a valid safetensors index: no weight_map")
        files = [folder / f for f in sorted(set(weight_map.values()))]
    elif (folder / "model.safetensors").is_file():
        files = [folder / "model.safetensors"]
    else:
        raise CheckpointError(
            f"no model.safetensors or model.safetensors.index.json in {folder} "
            "(only safetensors checkpoints are supported)"
        )
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise CheckpointError(f"checkpoint shards listed in the index are missing from {folder}: {missing}")
    return files


def _norm(cfg: ModelConfig, name: str, size: int) -> list[Part]:
    return [Part(name, (size,), cfg.norm_weight_offset)]


def _layer_norms(cfg: ModelConfig, i: int) -> dict[str, list[Part]]:
    D, p, ours = cfg.hidden_size, f"model.layers.{i}.", f"layers.{i}."
    if cfg.sandwich_norms:  # Gemma: post_attention_layernorm is the attention output's norm
        return {
            ours + "attn_norm.weight": _norm(cfg, p + "input_layernorm.weight", D),
            ours + "attn_out_norm.weight": _norm(cfg, p + "post_attention_layernorm.weight", D),
            ours + "mlp_norm.weight": _norm(cfg, p + "pre_feedforward_layernorm.weight", D),
            ours + "mlp_out_norm.weight": _norm(cfg, p + "post_feedforward_layernorm.weight", D),
        }
    return {
        ours + "attn_norm.weight": _norm(cfg, p + "input_layernorm.weight", D),
        ours + "mlp_norm.weight": _norm(cfg, p + "post_attention_layernorm.weight", D),
    }


def _layer_parts(cfg: ModelConfig, i: int) -> dict[str, list[Part]]:
    D, q, kv = cfg.hidden_size, cfg.q_size, cfg.kv_size
    p = f"model.layers.{i}."
    a = p + "self_attn."
    parts = _layer_norms(cfg, i)
    if cfg.model_type == "phi3":  # q, k and v already fused in the checkpoint, in our order
        parts[f"layers.{i}.attn.qkv.weight"] = [Part(a + "qkv_proj.weight", (q + 2 * kv, D))]
    else:
        parts[f"layers.{i}.attn.qkv.weight"] = [
            Part(a + "q_proj.weight", (q, D)), Part(a + "k_proj.weight", (kv, D)), Part(a + "v_proj.weight", (kv, D))
        ]
    parts[f"layers.{i}.attn.o_proj.weight"] = [Part(a + "o_proj.weight", (D, q))]
    if cfg.qkv_bias:
        parts[f"layers.{i}.attn.qkv.bias"] = [
            Part(a + "q_proj.bias", (q,)), Part(a + "k_proj.bias", (kv,)), Part(a + "v_proj.bias", (kv,))
        ]
    if cfg.o_bias:
        parts[f"layers.{i}.attn.o_proj.bias"] = [Part(a + "o_proj.bias", (D,))]
    if cfg.qk_norm != "none":
        qn, kn = (cfg.head_dim, cfg.head_dim) if cfg.qk_norm == "head" else (q, kv)
        parts[f"layers.{i}.attn.q_norm.weight"] = _norm(cfg, a + "q_norm.weight", qn)
        parts[f"layers.{i}.attn.k_norm.weight"] = _norm(cfg, a + "k_norm.weight", kn)
    if cfg.moe_layers[i]:
        parts.update(_moe_parts(cfg, i))
    elif cfg.model_type == "phi3":  # gate and up already fused in the checkpoint, gate first as ours
        I = cfg.intermediate_size
        parts[f"layers.{i}.mlp.gate_up.weight"] = [Part(p + "mlp.gate_up_proj.weight", (2 * I, D))]
        parts[f"layers.{i}.mlp.down.weight"] = [Part(p + "mlp.down_proj.weight", (D, I))]
    else:
        parts.update(_mlp_parts(f"layers.{i}.mlp.", p + "mlp.", D, cfg.intermediate_size, cfg.mlp_bias))
    return parts


def _mlp_parts(ours: str, theirs: str, D: int, I: int, bias: bool = False) -> dict[str, list[Part]]:
    parts = {
        ours + "gate_up.weight": [Part(theirs + "gate_proj.weight", (I, D)), Part(theirs + "up_proj.weight", (I, D))],
        ours + "down.weight": [Part(theirs + "down_proj.weight", (D, I))],
    }
    if bias:
        parts[ours + "gate_up.bias"] = [Part(theirs + "gate_proj.bias", (I,)), Part(theirs + "up_proj.bias", (I,))]
        parts[ours + "down.bias"] = [Part(theirs + "down_proj.bias", (D,))]
    return parts


def _moe_parts(cfg: ModelConfig, i: int) -> dict[str, list[Part]]:
    E, I, D = cfg.num_experts, cfg.moe_intermediate_size, cfg.hidden_size
    ours, p = f"layers.{i}.mlp.", f"model.layers.{i}."
    if cfg.model_type == "granitemoe":  # experts already fused in the checkpoint
        m = p + "block_sparse_moe."
        return {
            ours + "router.weight": [Part(m + "router.layer.weight", (E, D))],
            ours + "gate_up": [Part(m + "input_linear.weight", (E, 2 * I, D))],
            ours + "down": [Part(m + "output_linear.weight", (E, D, I))],
        }
    if cfg.model_type == "mixtral":
        m, router = p + "block_sparse_moe.", "gate.weight"
        gate, up, down = "w1", "w3", "w2"
    else:
        m, router = p + "mlp.", "gate.weight"
        gate, up, down = "gate_proj", "up_proj", "down_proj"
    parts = {
        ours + "router.weight": [Part(m + router, (E, D))],
        # stacked per expert: gate_up[e] = cat(gate_e, up_e)
        ours + "gate_up": [
            Part(f"{m}experts.{e}.{w}.weight", (I, D)) for e in range(E) for w in (gate, up)
        ],
        ours + "down": [Part(f"{m}experts.{e}.{down}.weight", (D, I)) for e in range(E)],
    }
    if cfg.shared_expert_intermediate_size:
        parts.update(_mlp_parts(ours + "shared.", m + "shared_expert.", D, cfg.shared_expert_intermediate_size))
        parts[ours + "shared_gate.weight"] = [Part(m + "shared_expert_gate.weight", (1, D))]
    return parts


def parameter_parts(cfg: ModelConfig) -> dict[str, list[Part]]:
    """Our parameter name -> the checkpoint tensors it is assembled from, in order."""
    parts = {
        "embed.weight": [Part("model.embed_tokens.weight", (cfg.vocab_size, cfg.hidden_size))],
        "norm.weight": _norm(cfg, "model.norm.weight", cfg.hidden_size),
    }
    if not cfg.tie_word_embeddings:
        parts["lm_head.weight"] = [Part("lm_head.weight", (cfg.vocab_size, cfg.hidden_size))]
    for i in range(cfg.num_layers):
        parts.update(_layer_parts(cfg, i))
    return parts


class TensorSource:
    """The tensors of one checkpoint, by their checkpoint names: checked from headers alone, then read one by
    one with progress reported by bytes. A subclass says where tensors are and how to read one."""

    what = "checkpoint"  # how messages name the source
    config_name = "config.json"  # and where its model config comes from

    def __init__(self, location: Path, total: int, progress: Progress | None):
        self.location, self.total = location, total
        self.done, self.progress = 0, progress

    def names(self) -> list[str]:
        raise NotImplementedError

    def shape(self, name: str) -> tuple[int, ...]:
        raise NotImplementedError

    def refuse_type(self, name: str) -> str | None:
        """Why the stored type of `name` cannot be loaded as its values, or None when it can."""
        return None

    def read(self, name: str) -> tuple[torch.Tensor, int]:
        """The tensor `name` as stored (floating point), and the bytes read for it."""
        raise NotImplementedError

    def file_of(self, name: str) -> str:
        return self.location.name

    def name_in_file(self, name: str) -> str:
        """The name the file would give the checkpoint tensor `name` (for naming missing ones)."""
        return name

    def label(self, name: str) -> str:
        """How messages name the tensor `name` (its name in the file)."""
        return repr(name)

    def check_unused(self, unused: list[str], cfg: ModelConfig) -> None:
        check_unused(unused, cfg, self.location)

    def check(self, parts: list[Part]) -> list[str]:
        """Every part present with its shape, from the file headers alone (before any memory is allocated
        for the model); returns the checkpoint's tensors no part uses."""
        names = set(self.names())
        missing = list(dict.fromkeys(self.name_in_file(p.name) for p in parts if p.name not in names))
        if missing:
            raise CheckpointError(
                f"{few_names(missing)} {'is' if len(missing) == 1 else 'are'} missing from the {self.what} in "
                f"{self.location}: {self.config_name} describes a model these weights are not (or the download "
                "is incomplete)"
            )
        for part in parts:
            shape = self.shape(part.name)
            if shape != part.shape:
                raise CheckpointError(
                    f"tensor {self.label(part.name)} has shape {shape}, expected {part.shape} from {self.config_name}"
                )
            why = self.refuse_type(part.name)
            if why:
                raise CheckpointError(f"tensor {self.label(part.name)} in {self.file_of(part.name)} {why}")
        used = {p.name for p in parts}
        return sorted(name for name in names if name not in used)

    def get(self, part: Part, dtype: torch.dtype) -> torch.Tensor:
        """The tensor of `part` in `dtype`, refused if it holds (or the conversion makes) NaN or inf."""
        t, nbytes = self.read(part.name)
        out = t.to(dtype)
        if part.offset:
            out = out + part.offset
        # NaN or inf weights make every output NaN, which decodes as silence: refuse them by name instead.
        if out.is_floating_point() and not all_finite(out):
            why = ("holds NaN or infinite values (a diverged training run or a corrupt file?)" if not all_finite(t)
                   else f"holds values too large for {dtype} (load it in float32)")
            raise CheckpointError(f"tensor {self.label(part.name)} in {self.file_of(part.name)} {why}")
        self._read_done(nbytes)
        return out

    def block_format(self, name: str) -> str | None:
        """The block format ("q8_0" or "q4_0") `read_blocks` reads `name` in as stored, or None when the
        source keeps no blocks for it."""
        return None

    def read_blocks(self, name: str) -> tuple[Blocks, int]:
        """The tensor `name` in its stored blocks (rows [..., N, K] in swarm's layout), and the bytes read."""
        raise NotImplementedError

    def get_blocks(self, part: Part) -> Blocks:
        """The blocks of `part`, refused if a scale is NaN or infinite."""
        b, nbytes = self.read_blocks(part.name)
        if not all_finite(b.scales):
            raise CheckpointError(f"tensor {self.label(part.name)} in {self.file_of(part.name)} holds NaN or "
                                  "infinite block scales (a corrupt file?)")
        self._read_done(nbytes)
        return b

    def _read_done(self, nbytes: int) -> None:
        self.done += nbytes
        if self.progress:
            self.progress(min(self.done, self.total), self.total)


_FLOAT_TYPES = ("F64", "F32", "F16", "BF16")


class _Safetensors(TensorSource):
    """The tensors of a folder's safetensors files (sharded or not)."""

    def __init__(self, folder: Path, files: list[Path], progress: Progress | None):
        super().__init__(folder, sum(f.stat().st_size for f in files), progress)
        self.where: dict[str, Path] = {}
        self.handles = {}
        for f in files:
            try:
                h = safe_open(str(f), framework="pt", device="cpu")
            except (SafetensorError, OSError, ValueError) as e:
                raise CheckpointError(f"cannot read {f} (corrupt or not a safetensors file): {e}") from None
            self.handles[f] = h
            for name in h.keys():
                self.where[name] = f

    def names(self) -> list[str]:
        return list(self.where)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.handles[self.where[name]].get_slice(name).get_shape())

    def refuse_type(self, name: str) -> str | None:
        stored = self.handles[self.where[name]].get_slice(name).get_dtype()
        if stored in _FLOAT_TYPES:
            return None
        # FP8 weights need their scales, integer weights are packed: converting the values is not loading them
        return (f"is stored as {stored}, a quantised format this loader does not read (it reads "
                f"{', '.join(_FLOAT_TYPES)}); load the float checkpoint, or a GGUF file")

    def read(self, name: str) -> tuple[torch.Tensor, int]:
        f = self.where[name]
        try:
            t = self.handles[f].get_tensor(name)
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"cannot read tensor {name!r} from {f.name} (corrupt file?): {e}") from None
        return t, t.numel() * t.element_size()

    def file_of(self, name: str) -> str:
        return self.where[name].name


def all_finite(t: torch.Tensor) -> bool:
    # NaN and inf propagate through a sum, so a finite sum proves every value finite at a tenth of the cost
    # of isfinite().all() (measured on swarm-tiny); only a sum that overflowed needs the exact test.
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def few_names(names: list[str], shown: int = 5) -> str:
    """"tensor 'a'", or "12 tensors 'a', 'b', 'c', 'd', 'e' and 7 more"."""
    head = ", ".join(repr(n) for n in names[:shown])
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"tensor {head}" if len(names) == 1 else f"{len(names)} tensors {head}{more}"


# Tensors of a decoder layer that no parameter takes change what the layer computes (a bias, a norm, an
# expert or a whole layer that config.json does not describe): loading without them is a different model.
_LAYER_TENSOR = re.compile(r"^model\.layers\.\d+\.")
_HARMLESS = ("rotary_emb.inv_freq",)  # a buffer older checkpoints saved; recomputed from the rope settings
# What quantised checkpoints store beside (or instead of) a weight: FP8 block scales, GPTQ/AWQ packed integers,
# scales and zero points, bitsandbytes states, compressed-tensors packs. The weight they go with is not its
# values alone, wherever in the checkpoint they sit.
_QUANTIZATION_TENSOR = re.compile(
    r"\.(weight_scale_inv|weight_scale|input_scale|output_scale|k_scale|v_scale|qweight|qzeros|scales|zeros|g_idx|"
    r"SCB|absmax|quant_map|nested_absmax|nested_quant_map|weight_packed|weight_shape|weight_zero_point|"
    r"weight_global_scale|weight_g_idx|weight_format)$|\.quant_state\."
)


def check_unused(unused: list[str], cfg: ModelConfig, folder: Path) -> None:
    """Refuse checkpoint tensors no parameter takes where they change what the model computes; warn about
    the rest."""
    quantised = [n for n in unused if _QUANTIZATION_TENSOR.search(n)]
    if quantised:
        raise CheckpointError(
            f"the checkpoint in {folder} holds {few_names(quantised)}: quantisation data (FP8 scales, GPTQ/AWQ packs, "
            "bitsandbytes states) this loader does not read, and its weights without them are wrong; load the "
            "float checkpoint, or a GGUF file"
        )
    matter = [n for n in unused if _LAYER_TENSOR.match(n) and not n.endswith(_HARMLESS)]
    if matter:
        raise CheckpointError(
            f"the checkpoint in {folder} holds {few_names(matter)}, which the {cfg.model_type} model that config.json "
            "describes has no place for: config.json and the weights disagree (layer or expert count, biases?)"
        )
    if unused:
        warnings.warn(
            f"{len(unused)} checkpoint tensors were not used by the {cfg.model_type} model, e.g. {unused[:5]}",
            stacklevel=4,
        )


def _stderr_progress(start: float) -> Progress:
    """On a terminal, one line rewritten as the bytes come; elsewhere (a log, CI) a line per quarter, so a
    log is not filled with hundreds of rewrites."""
    live = sys.stderr.isatty()
    shown = [-1]  # the last quarter written, off a terminal

    def report(done: int, total: int) -> None:
        pct = 100 * done / max(total, 1)
        line = (f"loading weights {pct:5.1f}% ({done / 2**20:,.0f}/{total / 2**20:,.0f} MiB, "
                f"{time.monotonic() - start:.1f}s)")
        if live:
            print("\r" + line, end="\n" if done >= total else "", file=sys.stderr, flush=True)
        elif (quarter := int(pct // 25)) > shown[0]:
            shown[0] = quarter
            print(line, file=sys.stderr, flush=True)
    return report


def checkpoint_dtype(path: str | Path) -> str | None:
    """The dtype a checkpoint folder's config.json names its weights in (`torch_dtype`, or `dtype` as newer
    transformers writes it), e.g. "bfloat16"; None for a GGUF file or a config that names none."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return None
    raw = read_json(config, ConfigError)
    named = raw.get("torch_dtype") or raw.get("dtype") if isinstance(raw, dict) else None
    return named.removeprefix("torch.") if isinstance(named, str) else None


def load_model(path: str | Path, dtype: torch.dtype = torch.float32, progress: Progress | None = None,
               keep_blocks: bool = False) -> Model:
    """Build the model for a checkpoint folder or a GGUF file and load its weights (compute dtype `dtype`).

    `keep_blocks`: the Linear and routed-expert weights a GGUF file stores as Q8_0 or Q4_0 stay in those blocks
    (`BlockLinear`, `BlockMoE` of `swarm.runtime.quant`), repacked with no float32 copy ever made; every other
    tensor (embeddings, norms, routers, other GGML types) is read as values. A weight assembled from parts in
    different types (q, k and v fused into one projection, gate and up) is read as values too."""
    path = Path(path)
    if is_gguf_file(path):
        from swarm.runtime.gguf_file import open_gguf

        cfg, source = open_gguf(path, progress)
    else:
        if not path.is_dir():
            raise CheckpointError(f"model folder {path} does not exist")
        cfg = read_config(path)
        source = _Safetensors(path, checkpoint_files(path), progress)
    if source.progress is None and source.total >= PROGRESS_MIN_BYTES:
        source.progress = _stderr_progress(time.monotonic())
    parts = parameter_parts(cfg)
    source.check_unused(source.check([p for ps in parts.values() for p in ps]), cfg)
    with torch.device("meta"):
        model = Model(cfg).to(dtype)
    kept = _keep_blocks(model, parts, source) if keep_blocks else {}
    model = model.to_empty(device="cpu")
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.embed.weight
    params = dict(model.named_parameters(remove_duplicate=False))
    with torch.no_grad():
        for name, plist in parts.items():
            if name in kept:
                got = [source.get_blocks(p) for p in plist]
                params[name].copy_(_assemble(name, params[name], [b.values for b in got]))
                params[kept[name]].copy_(_assemble(name, params[kept[name]], [b.scales for b in got]))
                continue
            target = params[name]
            target.copy_(_assemble(name, target, [source.get(p, dtype) for p in plist]))
    if source.progress and source.done < source.total:  # the headers' bytes are never read as tensors
        source.progress(source.total, source.total)
    return model.eval()


def _assemble(name: str, target: torch.Tensor, tensors: list[torch.Tensor]) -> torch.Tensor:
    """The parameter `name` from its parts' tensors (rows of a fused projection, or experts to stack)."""
    if name.endswith(("mlp.gate_up", "mlp.down")) and len(tensors) > 1:  # per-expert tensors
        E = target.shape[0]
        per = len(tensors) // E
        return torch.stack([torch.cat(tensors[e * per : (e + 1) * per]) for e in range(E)])
    return torch.cat(tensors) if len(tensors) > 1 else tensors[0]


def _keep_blocks(model: Model, parts: dict[str, list[Part]], source: TensorSource) -> dict[str, str]:
    """Swap the (meta) model's Linears and MoEs whose weights `source` keeps in one block format for empty block
    modules; returns each kept weight's name -> the name of its scales."""
    from swarm.runtime.model import Linear, MoE
    from swarm.runtime.quant import KEEP_FLOAT, BlockLinear, empty_block_moe

    def fmt(name: str) -> str | None:
        kinds = {source.block_format(p.name) for p in parts.get(name, ())}
        return kinds.pop() if len(kinds) == 1 else None

    kept: dict[str, str] = {}
    for owner, module in list(model.named_modules()):
        if type(module) is Linear and owner.rsplit(".", 1)[-1] not in KEEP_FLOAT:
            f = fmt(owner + ".weight")
            if f is None:
                continue
            parent, _, child = owner.rpartition(".")
            setattr(model.get_submodule(parent), child, BlockLinear.empty(module, f, owner))
            kept[owner + ".weight"] = owner + ".scale"
        elif type(module) is MoE:
            f = fmt(owner + ".gate_up")
            if f is None or fmt(owner + ".down") != f:  # one format for all its experts
                continue
            empty_block_moe(module, f, owner)
            kept.update({f"{owner}.{p}": f"{owner}.{p}_scale" for p in ("gate_up", "down")})
    return kept
