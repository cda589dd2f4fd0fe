"""Many LoRA adapters in one batch, applied as a pass over the plain model.

`read_peft_adapter` loads a PEFT folder (`adapter_config.json`,
`adapter_model.safetensors`) and checks it against the model: every tensor
maps to a projection the model has, with the shapes it needs, of the rank the
config gives, as `target_modules` says, and holds no NaN or inf.
`LoRAManager` keeps up to `max_adapters` adapters resident in slots, wraps
the targeted projections with `LoRALinear` (base output plus the batched
low-rank update of each token's slot), and loads adapters into slots on
demand, evicting the least recently used one that no running request holds.

Ranks are zero-padded to `max_rank`, and `alpha / r` (or `alpha / sqrt(r)`
with rsLoRA) is folded into B, so every slot has the same shapes.

Legend: T tokens, Din/Dout features, S slots, R padded rank per slice.
"""

from __future__ import annotations

import json
import math
import re
from collections import OrderedDict
from collections.abc import Hashable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from swarm.kernels import registry
from swarm.runtime.config import ModelConfig
from swarm.runtime.errors import CheckpointError
from swarm.runtime.loader import all_finite, read_json

# HF projection name -> (our module under layers.{i}, slice index within it)
_ATTN = {"q_proj": ("attn.qkv", 0), "k_proj": ("attn.qkv", 1), "v_proj": ("attn.qkv", 2), "o_proj": ("attn.o_proj", 0)}
_MLP = {"gate_proj": ("gate_up", 0), "up_proj": ("gate_up", 1), "down_proj": ("down", 0)}
_KEY = re.compile(r"^(?:base_model\.model\.)?model\.layers\.(\d+)\.(.+)\.lora_([AB])(?:\.default)?\.weight$")


def _slices(cfg: ModelConfig, module: str, layer: int) -> list[tuple[int, int]]:
    """Output row ranges of the fused projection `module` in `layer`, one per original projection."""
    q, kv, D = cfg.q_size, cfg.kv_size, cfg.hidden_size
    if module == "attn.qkv":
        return [(0, q), (q, q + kv), (q + kv, q + 2 * kv)]
    if module == "attn.o_proj":
        return [(0, D)]
    width = cfg.shared_expert_intermediate_size if module.startswith("mlp.shared.") else cfg.intermediate_size
    return [(0, width), (width, 2 * width)] if module.endswith("gate_up") else [(0, D)]


def _in_features(cfg: ModelConfig, module: str) -> int:
    if module == "attn.o_proj":
        return cfg.q_size
    if module.endswith(".down"):
        return cfg.shared_expert_intermediate_size if module.startswith("mlp.shared.") else cfg.intermediate_size
    return cfg.hidden_size


def _target(cfg: ModelConfig, layer: int, path: str) -> tuple[str, int]:
    """Map a PEFT module path inside a layer ('self_attn.q_proj', 'mlp.down_proj', ...) to ours."""
    head, _, name = path.rpartition(".")
    if head == "self_attn" and name in _ATTN:
        return _ATTN[name]
    if name in _MLP:
        if head == "mlp" and not cfg.moe_layers[layer]:
            return "mlp." + _MLP[name][0], _MLP[name][1]
        if head == "mlp.shared_expert" and cfg.moe_layers[layer] and cfg.shared_expert_intermediate_size:
            return "mlp.shared." + _MLP[name][0], _MLP[name][1]
    if ".experts." in f".{path}.":
        raise CheckpointError(f"LoRA on expert weights ({path!r}) is not supported; target attention or dense MLPs")
    raise CheckpointError(
        f"unknown LoRA target module {path!r} in layer {layer}; supported: self_attn.q_proj/k_proj/v_proj/o_proj, "
        "mlp.gate_proj/up_proj/down_proj of dense layers, mlp.shared_expert.* of Qwen2-MoE layers"
    )


@dataclass
class Adapter:
    """A parsed adapter: per (layer, our module), per slice, the (A [r, Din], B*scale [n_out, r]) pair."""

    name: str
    rank: int
    weights: dict[tuple[int, str], dict[int, tuple[torch.Tensor, torch.Tensor]]] = field(default_factory=dict)


def read_peft_adapter(name: str, folder: str | Path, cfg: ModelConfig, max_rank: int | None = None) -> Adapter:
    """Parse a PEFT LoRA folder and check that it fits the model of `cfg`, from the file headers before any
    tensor is read: every tensor a lora_A/lora_B pair of a projection the model has, with the model's
    shapes, of the rank adapter_config.json gives (`r`, `rank_pattern`) and at most `max_rank`;
    `target_modules` and the tensors naming the same projections; then no NaN or inf in the weights.
    Anything else raises CheckpointError naming the adapter and the problem."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"adapter folder {folder} does not exist")
    cfg_path, weights_path = folder / "adapter_config.json", folder / "adapter_model.safetensors"
    if not cfg_path.is_file():
        raise CheckpointError(f"no adapter_config.json in {folder}")
    if not weights_path.is_file():
        raise CheckpointError(f"no adapter_model.safetensors in {folder} (only safetensors adapters are supported)")
    acfg = _adapter_config(name, cfg_path)
    try:
        handle = safe_open(str(weights_path), framework="pt", device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {weights_path} (corrupt?): {e}") from None
    pairs = _pairs(name, handle, cfg)
    ranks = {where: _check_pair(name, handle, cfg, acfg, where, keys, max_rank) for where, keys in pairs.items()}
    _check_targets(name, acfg.get("target_modules"), [f"model.layers.{layer}.{path}" for layer, path in pairs], cfg)

    alpha, rslora = float(acfg.get("lora_alpha", acfg.get("r", 8))), bool(acfg.get("use_rslora", False))
    adapter = Adapter(name, rank=max(ranks.values(), default=0))
    for (layer, path), keys in sorted(pairs.items()):
        module, idx = _target(cfg, layer, path)
        r = ranks[(layer, path)]
        a_alpha = float(_pattern(acfg.get("alpha_pattern"), layer, path, alpha))
        scale = a_alpha / math.sqrt(r) if rslora else a_alpha / r
        try:
            a, b = handle.get_tensor(keys["A"]).float(), handle.get_tensor(keys["B"]).float()
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"cannot read {weights_path} (corrupt?): {e}") from None
        for key, t in ((keys["A"], a), (keys["B"], b)):
            if not all_finite(t):  # NaN weights turn every output of the adapter into NaN, i.e. silence
                raise CheckpointError(f"adapter {name!r}: tensor {key!r} holds NaN or infinite values")
        b = b * scale
        if not all_finite(b):
            raise CheckpointError(f"adapter {name!r}: lora_alpha {a_alpha:g} overflows {path}'s lora_B in layer "
                                  f"{layer}: the scale lora_alpha / r is too large")
        adapter.weights.setdefault((layer, module), {})[idx] = (a, b)
    if not adapter.weights:
        raise CheckpointError(f"adapter {name!r} holds no LoRA weights")
    return adapter


def _adapter_config(name: str, path: Path) -> dict:
    acfg = read_json(path)
    if not isinstance(acfg, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    if acfg.get("peft_type", "LORA") != "LORA":
        raise CheckpointError(f"adapter {name!r} is a {acfg.get('peft_type')} adapter; only LORA is supported")
    for key, bad in (("use_dora", True), ("fan_in_fan_out", True)):
        if acfg.get(key) == bad:
            raise CheckpointError(f"adapter {name!r} sets {key}; not supported")
    if acfg.get("bias", "none") != "none" or acfg.get("modules_to_save"):
        raise CheckpointError(f"adapter {name!r} trains biases or whole modules; only LoRA matrices are supported")
    for key, (ok, what) in _ADAPTER_FIELDS.items():
        if acfg.get(key) is not None and not ok(acfg[key]):
            raise CheckpointError(f"adapter {name!r}: {path.name} field {key} is {json.dumps(acfg[key])[:60]}; "
                                  f"expected {what}")
    return acfg


def _compiles(pattern: str) -> bool:
    try:
        re.compile(pattern)
    except re.error:
        return False
    return True


def _is_rank(v) -> bool:
    return type(v) is int and v > 0


def _is_number(v) -> bool:
    return type(v) is int or (type(v) is float and math.isfinite(v))


def _is_pattern(value_ok):
    return lambda v: isinstance(v, dict) and all(_compiles(k) and value_ok(x) for k, x in v.items())


# The adapter_config.json fields the reader takes, when given: (check, what the field must be)
_ADAPTER_FIELDS = {
    "r": (_is_rank, "a positive integer"),
    "lora_alpha": (_is_number, "a finite number"),
    "use_rslora": (lambda v: type(v) is bool, "true or false"),
    "target_modules": (lambda v: isinstance(v, str) or (isinstance(v, list) and all(isinstance(t, str) for t in v)),
                       "a list of module names or one regular expression"),
    "rank_pattern": (_is_pattern(_is_rank), "an object of module names (or regular expressions) to positive integers"),
    "alpha_pattern": (_is_pattern(_is_number), "an object of module names (or regular expressions) to numbers"),
}


def _pairs(name: str, handle, cfg: ModelConfig) -> dict[tuple[int, str], dict[str, str]]:
    """(layer, PEFT module path) -> {"A": tensor name, "B": tensor name}, every pair complete."""
    pairs: dict[tuple[int, str], dict[str, str]] = {}
    for key in handle.keys():
        m = _KEY.match(key)
        if m is None:
            raise CheckpointError(f"adapter {name!r}: unexpected tensor {key!r} (not a LoRA A/B matrix of a layer)")
        layer, path, ab = int(m[1]), m[2], m[3]
        if layer >= cfg.num_layers:
            raise CheckpointError(
                f"adapter {name!r} targets layer {layer}, but the model has {cfg.num_layers} layers "
                "(an adapter for another base model?)"
            )
        pairs.setdefault((layer, path), {})[ab] = key
    for (layer, path), ab in sorted(pairs.items()):
        if set(ab) != {"A", "B"}:
            have, lack = next(iter(ab)), ({"A", "B"} - set(ab)).pop()
            raise CheckpointError(f"adapter {name!r}: {path} in layer {layer} has lora_{have} only, "
                                  f"no lora_{lack} (an incomplete adapter)")
    return pairs


def _check_pair(name: str, handle, cfg: ModelConfig, acfg: dict, where: tuple[int, str], keys: dict[str, str],
                max_rank: int | None) -> int:
    """The rank of one A/B pair, from the file header, once its shapes fit the model and the config."""
    layer, path = where
    module, idx = _target(cfg, layer, path)
    lo, hi = _slices(cfg, module, layer)[idx]
    a, b = (tuple(handle.get_slice(keys[k]).get_shape()) for k in ("A", "B"))
    r = a[0] if len(a) == 2 else 0
    want_a, want_b = (r, _in_features(cfg, module)), (hi - lo, r)
    if a != want_a or b != want_b or r == 0:
        raise CheckpointError(
            f"adapter {name!r}: layer {layer} {path} has lora_A {a} and lora_B {b}, "
            f"the model needs {want_a} and {want_b} (rank/shape mismatch or another base model)"
        )
    said = _pattern(acfg.get("rank_pattern"), layer, path, acfg.get("r"))
    if said is not None and r != said:
        raise CheckpointError(f"adapter {name!r}: adapter_config.json gives {path} rank {said} (r or rank_pattern), "
                              f"but its lora_A in layer {layer} has rank {r}: config and weights disagree")
    if max_rank is not None and r > max_rank:
        raise CheckpointError(f"adapter {name!r} has rank {r}, above EngineConfig.max_lora_rank ({max_rank})")
    return r


def _pattern(pattern: dict | None, layer: int, path: str, default):
    """PEFT's per-module override (`rank_pattern`, `alpha_pattern`) for a module, else `default`: a key is a
    module name or a regular expression, matched at the end of the full name after a dot, as PEFT does."""
    module = f"model.layers.{layer}.{path}"
    return next((v for k, v in (pattern or {}).items() if re.match(rf"(.*\.)?({k})$", module)), default)


def _check_targets(name: str, targets: str | list[str] | None, modules: list[str], cfg: ModelConfig) -> None:
    """adapter_config.json's `target_modules` and the tensors name the same projections (PEFT's matching: a
    list entry is a module name or a dotted suffix of one, a string a regular expression over whole names)."""
    if targets is None or targets == "all-linear":
        return
    if isinstance(targets, str):
        try:
            pattern = re.compile(targets)
        except re.error as e:
            raise CheckpointError(f"adapter {name!r}: target_modules {targets!r} is not a regular expression "
                                  f"({e})") from None
        covered = [m for m in modules if pattern.fullmatch(m)]
    else:
        covered = [m for m in modules if any(m == t or m.endswith("." + t) for t in targets)]
        for t in targets:
            if any(m == t or m.endswith("." + t) for m in modules):
                continue
            supported = _supported_targets(cfg)
            if t.rpartition(".")[2] in supported:
                raise CheckpointError(f"adapter {name!r}: target_modules lists {t!r}, but the adapter holds no "
                                      "lora_A/lora_B tensors for it (an incomplete adapter)")
            raise CheckpointError(f"adapter {name!r}: target_modules lists {t!r}, which is no LoRA target of this "
                                  f"{cfg.model_type} model (its targets: {', '.join(supported)})")
    stray = [m for m in modules if m not in covered]
    if stray:
        more = f" and {len(stray) - 1} more" if len(stray) > 1 else ""
        raise CheckpointError(f"adapter {name!r} holds weights for {stray[0]!r}{more}, which its target_modules "
                              f"({targets!r}) does not name: adapter_config.json and the weights disagree")


def _supported_targets(cfg: ModelConfig) -> list[str]:
    dense = not all(cfg.moe_layers) or cfg.shared_expert_intermediate_size
    return list(_ATTN) + (list(_MLP) if dense else [])


@torch.no_grad()
def merge_adapter(model: nn.Module, cfg: ModelConfig, adapter: Adapter) -> None:
    """Add an adapter's updates into the plain model's weights in place (W[slice] += B·scale @ A).

    For a model that serves one adapter only (an ONNX export); the engine keeps weights apart instead.
    """
    for (layer, module), pairs in adapter.weights.items():
        linear = model.layers[layer].get_submodule(module)
        if not isinstance(linear, nn.Linear):
            raise ValueError(f"cannot merge adapter {adapter.name!r} into layers.{layer}.{module}: it is a "
                             f"{type(linear).__name__}, not a plain Linear (already wrapped or quantized?)")
        for j, (a, b) in pairs.items():
            lo, hi = _slices(cfg, module, layer)[j]
            linear.weight[lo:hi] += (b @ a).to(linear.weight.dtype)  # [n_out, r] @ [r, Din]


class LoRABatch:
    """Which slot each token of the current step uses; shared by every LoRALinear."""

    def __init__(self):
        self.slots: torch.Tensor | None = None  # [T] int64, -1 for the base model
        self.used: set[int] = set()
        self.segments: tuple[list[int], list[int]] | None = None  # (starts, slot per run) for prefill-heavy steps
        self.captured: torch.Tensor | None = None  # [T] slots of a decode step being captured as a CUDA graph

    @contextmanager
    def graph_slots(self, slots: torch.Tensor):
        """While a CUDA graph is captured: every wrapped projection applies the gather form with `slots`
        (a static buffer), whatever is resident now, so the graph stays right as adapters come and go."""
        self.captured = slots
        try:
            yield
        finally:
            self.captured = None

    def set(self, run_slots: list[int], run_lens: list[int], device: torch.device) -> None:
        """One run of `run_lens[i]` tokens on slot `run_slots[i]` per scheduled request."""
        self.used = {s for s in run_slots if s >= 0}
        if not self.used:
            self.slots = self.segments = None
            return
        self.slots = torch.repeat_interleave(torch.tensor(run_slots, device=device),
                                             torch.tensor(run_lens, device=device))
        # Long runs (prefill chunks) go through the segment form; decode steps, one token per
        # request, through the gather form, which groups tokens by slot.
        if max(run_lens) > 1:
            starts = [0]
            for n in run_lens:
                starts.append(starts[-1] + n)
            self.segments = (starts, list(run_slots))
        else:
            self.segments = None


class LoRALinear(nn.Module):
    """A projection plus the low-rank updates of up to S adapters, one per token."""

    def __init__(self, base: nn.Module, slices: list[tuple[int, int]], in_features: int, slots: int, rank: int,
                 batch: LoRABatch):
        super().__init__()
        self.base, self.slices, self.batch, self.rank = base, slices, batch, rank
        out_features = slices[-1][1]
        n = len(slices)
        ref = next(base.parameters())
        # slice j uses rank rows [j*R, (j+1)*R) of A and writes output rows slices[j] of B
        self.a = torch.zeros(slots, n * rank, in_features, dtype=torch.float32, device=ref.device)
        self.b = torch.zeros(slots, out_features, n * rank, dtype=torch.float32, device=ref.device)
        self.loaded: set[int] = set()  # slots whose adapter targets this projection
        # Ranks are padded to max_rank (64) for the CUDA graphs' fixed shapes, but the adapters people ship are
        # rank 8-16: eager steps use a copy of every slot with only its used rank rows, padded to the largest
        # loaded rank (measured: an 8x smaller update, a fifth of a 1,000-agent village tick before).
        self.rows: dict[int, list[int]] = {}  # slot -> the rank rows its adapter uses
        self._compact: tuple[torch.Tensor, torch.Tensor] | None = None
        self._ones = torch.ones(slots, device=ref.device)
        self._gather = registry.get("lora_gather", ref.device)
        self._segment = registry.get("lora_segment", ref.device)

    def load(self, slot: int, pairs: dict[int, tuple[torch.Tensor, torch.Tensor]] | None) -> None:
        self.a[slot].zero_()
        self.b[slot].zero_()
        self.loaded.discard(slot)
        self.rows.pop(slot, None)
        self._compact = None
        for j, (a, b) in (pairs or {}).items():
            r, (lo, hi) = a.shape[0], self.slices[j]
            self.a[slot, j * self.rank : j * self.rank + r] = a
            self.b[slot, lo:hi, j * self.rank : j * self.rank + r] = b
            self.loaded.add(slot)
            self.rows.setdefault(slot, []).extend(range(j * self.rank, j * self.rank + r))

    def compact(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(a [S, Rc, Din], b [S, Dout, Rc]): every slot's used rank rows, zero-padded to the most any slot uses."""
        if self._compact is None:
            width = max((len(r) for r in self.rows.values()), default=1)
            a = self.a.new_zeros(self.a.shape[0], width, self.a.shape[2])
            b = self.b.new_zeros(self.b.shape[0], self.b.shape[1], width)
            for slot, rows in self.rows.items():
                a[slot, : len(rows)] = self.a[slot, rows]
                b[slot, :, : len(rows)] = self.b[slot][:, rows]
            self._compact = (a, b)
        return self._compact

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        batch = self.batch
        if batch.captured is not None:  # slot -1, or a slot that does not target this projection, adds zero
            return y + self._gather(x, self.a, self.b, batch.captured, self._ones)
        if not (batch.used & self.loaded):
            return y
        a, b = self.compact()
        if batch.segments is not None:
            starts, seg = batch.segments
            seg = [s if s in self.loaded else -1 for s in seg]
            return y + self._segment(x, a, b, starts, seg, self._ones)
        return y + self._gather(x, a, b, batch.slots, self._ones)


class LoRAManager:
    """Known adapters, the slots they are resident in, and the wrapped projections."""

    def __init__(self, model: nn.Module, cfg: ModelConfig, max_adapters: int, max_rank: int):
        self.model, self.cfg, self.max_rank = model, cfg, max_rank
        self.num_slots = max_adapters
        self.known: dict[str, Adapter] = {}
        self.resident: OrderedDict[str, int] = OrderedDict()  # name -> slot, least recently used first
        self.users: dict[str, int] = {}  # running requests per resident adapter
        self.batch = LoRABatch()
        self.wrapped: dict[tuple[int, str], LoRALinear] = {}
        self.version = 0  # moves whenever a projection is wrapped (captured CUDA graphs then go stale)

    def add(self, name: str, folder: str | Path) -> None:
        if name in self.known:
            raise ValueError(f"adapter {name!r} is already loaded; remove_adapter it first")
        adapter = read_peft_adapter(name, folder, self.cfg, self.max_rank)
        for key in adapter.weights:
            self._wrap(*key)
        self.known[name] = adapter

    def remove(self, name: str) -> None:
        if name not in self.known:
            raise KeyError(f"unknown adapter {name!r}")
        if self.users.get(name):
            raise ValueError(f"adapter {name!r} is used by {self.users[name]} running requests")
        slot = self.resident.pop(name, None)
        if slot is not None:
            for layer in self.wrapped.values():
                layer.load(slot, None)
        del self.known[name]

    def _wrap(self, layer: int, module: str) -> None:
        if (layer, module) in self.wrapped:
            return
        parent = self.model.layers[layer]
        *path, attr = module.split(".")
        for p in path:
            parent = getattr(parent, p)
        base = getattr(parent, attr)
        wrapped = LoRALinear(base, _slices(self.cfg, module, layer), _in_features(self.cfg, module),
                             self.num_slots, self.max_rank, self.batch)
        setattr(parent, attr, wrapped)
        self.wrapped[(layer, module)] = wrapped
        self.version += 1
        for name, slot in self.resident.items():  # adapters already resident that target this module
            wrapped.load(slot, self.known[name].weights.get((layer, module)))

    def acquire(self, name: Hashable) -> int | None:
        """The slot of adapter `name`, loading it if needed; None when every slot is busy."""
        slot = self.resident.get(name)
        if slot is None:
            free = set(range(self.num_slots)) - set(self.resident.values())
            if not free:
                idle = next((n for n in self.resident if not self.users.get(n)), None)
                if idle is None:
                    return None
                free = {self.resident.pop(idle)}
            slot = min(free)
            adapter = self.known[name]
            for key, layer in self.wrapped.items():
                layer.load(slot, adapter.weights.get(key))
            self.resident[name] = slot
        self.resident.move_to_end(name)
        self.users[name] = self.users.get(name, 0) + 1
        return slot

    def hold(self, req) -> bool:
        """Give a request (a `Request`) the slot of its adapter, if it has one; False when every slot is busy.
        The scheduler calls it on admission, and `drop` when the request gives its blocks back."""
        if req.adapter is None:
            return True
        slot = self.acquire(req.adapter)
        if slot is None:
            return False
        req.lora_slot = slot
        return True

    def drop(self, req) -> None:
        if req.lora_slot >= 0:
            self.release(req.adapter)
            req.lora_slot = -1

    def release(self, name: Hashable) -> None:
        self.users[name] -= 1
