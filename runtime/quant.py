"""Weight-only quantisation for CPU decode, as passes over the plain model: per-row int8 (`quantize_int8(model)`)
and llama.cpp's Q8_0 / Q4_0 blocks of 32 (`quantize_blocks(model, fmt)`, at the end of this file).

CPU decode reads every weight it uses once per step, so it is bound by memory
bandwidth; int8 weights read a quarter of the bytes of float32. Each output
channel (weight row) gets its own scale: w ~ q * scale, q in [-127, 127].

The matmul is torch's packed int8 kernel, `aten._weight_int8pack_mm`. On
AVX2 machines its float32 path is scalar (5 to 30 times slower than a
float32 matmul here), while its bfloat16 path is vectorised, so activations
enter the matmul as bfloat16 and come back as float32: the activation
rounding (8 bits of mantissa) is part of the measured logit error. The kernel
needs in_features to be a multiple of 8 (it crashes otherwise), so other
shapes are refused.

What is quantized: the attention projections, dense and shared-expert MLPs,
the routed experts and lm_head. The router and the shared-expert gate stay
float32: they are tiny, and a rounding there can flip which experts run.

Legend: T tokens, D hidden, E experts, K top-k, I expert width, N out features, C in features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from swarm.kernels import quant as blocks
from swarm.kernels import registry
from swarm.runtime.model import Linear, MoE, kernels

KEEP_FLOAT = ("router", "shared_gate")


def _int8mm() -> object:
    op = getattr(torch.ops.aten, "_weight_int8pack_mm", None)
    if op is None:
        raise RuntimeError(f"torch {torch.__version__} has no aten._weight_int8pack_mm; int8 weights need torch>=2.3")
    return op


def quantize_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w [..., N, C] float -> q [..., N, C] int8, scale [..., N] bfloat16 with w ~ q * scale per row."""
    w = w.detach().float()
    # Round the scale up to bfloat16 (what the kernel takes) so no |w / scale| exceeds 127.
    scale = (w.abs().amax(-1).clamp_min(1e-12) / 127 * (1 + 2**-7)).to(torch.bfloat16)
    q = torch.round(w / scale.float()[..., None]).clamp_(-127, 127).to(torch.int8)
    return q.contiguous(), scale.contiguous()


def _check_in_features(name: str, c: int) -> None:
    if c % 8:
        raise ValueError(f"int8: {name} has {c} input features; the packed int8 kernel needs a multiple of 8")


class Int8Linear(nn.Module):
    """nn.Linear with an int8 weight [N, C] and a bfloat16 scale per output row."""

    def __init__(self, linear: nn.Linear, name: str = "linear"):
        super().__init__()
        _check_in_features(name, linear.in_features)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        q, scale = quantize_rows(linear.weight)
        self.weight = nn.Parameter(q, requires_grad=False)  # [N, C] int8
        self.scale = nn.Parameter(scale, requires_grad=False)  # [N] bfloat16
        self.bias = linear.bias
        self._mm = _int8mm()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).to(torch.bfloat16)  # [T, C]
        y = self._mm(rows, self.weight, self.scale).to(x.dtype).view(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias


class Int8MoE(MoE):
    """MoE whose routed experts hold int8 weights: gate_up [E, 2I, D], down [E, D, I] plus row scales.

    Experts run one at a time over their sorted tokens (the packed kernel has no batched form);
    an expert no token chose costs nothing, which is what decode batches mostly see.
    """

    def experts(self, x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        T, K = ids.shape
        flat = ids.reshape(-1)  # [T*K]
        order = flat.argsort(stable=True)
        token = order // K  # token of each sorted pair
        weight = weights.reshape(-1)[order].to(x.dtype)
        xb = x.to(torch.bfloat16)
        out = torch.zeros_like(x)
        start = 0
        for e, n in enumerate(torch.bincount(flat, minlength=self.gate_up.shape[0]).tolist()):
            if n == 0:
                continue
            rows = token[start : start + n]
            g, u = self._mm(xb[rows], self.gate_up[e], self.gate_up_scale[e]).float().chunk(2, dim=-1)  # [n, I]
            h = (F.silu(g) * u).to(torch.bfloat16)
            y = self._mm(h, self.down[e], self.down_scale[e]).to(x.dtype)  # [n, D]
            out.index_add_(0, rows, y * weight[start : start + n, None])
            start += n
        return out


def _quantize_moe(moe: MoE) -> None:
    gq, gs = quantize_rows(moe.gate_up)
    dq, ds = quantize_rows(moe.down)
    moe.gate_up = nn.Parameter(gq, requires_grad=False)  # [E, 2I, D] int8
    moe.gate_up_scale = nn.Parameter(gs, requires_grad=False)  # [E, 2I]
    moe.down = nn.Parameter(dq, requires_grad=False)  # [E, D, I] int8
    moe.down_scale = nn.Parameter(ds, requires_grad=False)  # [E, D]
    moe._mm = _int8mm()
    # Swapping the class keeps every other field of the float module (router, shared expert, stats).
    moe.__class__ = Int8MoE


@torch.no_grad()
def quantize_int8(model: nn.Module) -> nn.Module:
    """Replace the model's float Linear and expert weights by int8 ones in place; returns the model.

    CPU only. Raises if a weight is not on the CPU or has an input width the kernel cannot take.
    """
    _int8mm()
    devices = {p.device.type for p in model.parameters()}
    if devices != {"cpu"}:
        raise ValueError(f"int8 weights are a CPU path; the model is on {sorted(devices)}")
    targets = [(name, m) for name, m in model.named_modules()
               if (isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] not in KEEP_FLOAT)
               or (isinstance(m, MoE) and not isinstance(m, Int8MoE))]
    for name, module in targets:  # check every shape before changing anything
        if isinstance(module, nn.Linear):
            _check_in_features(name, module.in_features)
        else:
            _check_in_features(f"{name}.gate_up", module.gate_up.shape[2])
            _check_in_features(f"{name}.down", module.down.shape[2])
    for name, module in targets:
        if isinstance(module, MoE):
            _quantize_moe(module)
            continue
        parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
        setattr(parent, name.rpartition(".")[2], Int8Linear(module, name))
    return model


# -- Q8_0 / Q4_0: blocks of 32 weights sharing a scale, native kernels that read them in place -----------------
#
# A product with these weights rounds its activations to Q8_0 blocks first, as llama.cpp does
# (`swarm.kernels.quant.round_activations`): decode steps (up to `LINEAR_MAX_ROWS` rows a projection) then
# multiply integer blocks in kernels/native, one scale per block, each row's arithmetic its own whatever the
# batch. Prefill chunks (more rows) round the activations, dequantise the weight for the call and run torch's
# GEMM (the same product up to the order of the float32 sums): measured on the benchmark model's lm_head
# (8192 x 384, 2 threads), unpacking takes about 1.5 ms next to 23 to 42 ms for the matmul of a 128 to 512-token
# chunk (4 to 7%); a cached float32 copy would bring back the 3.5 to 6 times the memory the blocks save. The
# routed experts read their blocks in place at any token count.

BLOCK_FORMATS = blocks.FORMATS  # q8_0, q4_0 and the half formats bf16 / f16
#
# bf16 / f16 ride the same path: the weight rounded to a 16-bit float (half the bytes of float32, one rounding
# per weight, no scales), widened to float32 in registers by the decode kernels (exactly: the result equals the
# float32 kernel on the widened weight bit for bit) and per call for prefill's GEMM. Activations and
# accumulation stay float32. Their rows may have any width (other widths than multiples of 32 are widened per
# call for the float32 kernels).


class BlockLinear(nn.Module):
    """A Linear whose weight [N, C] is kept in blocks of 32 (`swarm.kernels.quant`); C a multiple of 32."""

    def __init__(self, linear: nn.Linear, fmt: str, name: str = "linear"):
        super().__init__()
        _check_blocks(name, linear.in_features, fmt)
        self.in_features, self.out_features, self.fmt = linear.in_features, linear.out_features, fmt
        values, scales, _ = blocks.quantize(linear.weight, fmt)
        self.weight = nn.Parameter(values, requires_grad=False)  # [N, C] int8 or [N, C / 2] uint8
        self.scale = nn.Parameter(scales, requires_grad=False)  # [N, C / 32] float32 (empty for bf16 / f16)
        self.bias = linear.bias

    @classmethod
    def empty(cls, linear: nn.Linear, fmt: str, name: str = "linear") -> BlockLinear:
        """A BlockLinear of `linear`'s shape whose blocks are left unset, on `linear`'s device (the meta device
        while a loader builds the model): for blocks read from a file as they are, with no float32 weight."""
        _check_blocks(name, linear.in_features, fmt)
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        self.in_features, self.out_features, self.fmt = linear.in_features, linear.out_features, fmt
        values, scales = empty_blocks(tuple(linear.weight.shape), fmt, linear.weight.device)
        self.weight = nn.Parameter(values, requires_grad=False)
        self.scale = nn.Parameter(scales, requires_grad=False)
        self.bias = linear.bias
        return self

    @property
    def blocks(self) -> blocks.Blocks:
        return blocks.Blocks(self.weight, self.scale, self.fmt)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (linear,) = kernels(self, x.device, "block_linear")
        return linear(x, self.weight, self.scale, self.fmt, self.bias)


class BlockMoE(MoE):
    """MoE whose routed experts are kept in blocks: gate_up [E, 2I, D], down [E, D, I] with their scales; the
    grouped expert FFN reads them in place."""

    def experts(self, x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        picked = self.__dict__.get("_block_ffn")  # (kernels() caches MoE.forward's op names per module)
        if picked is None or picked[0] != x.device:
            picked = self.__dict__["_block_ffn"] = (x.device, registry.get("block_expert_ffn", x.device))
        return picked[1](x, *self.expert_blocks, weights, ids)

    @property
    def expert_blocks(self) -> tuple[blocks.Blocks, blocks.Blocks]:
        return (blocks.Blocks(self.gate_up, self.gate_up_scale, self.fmt),
                blocks.Blocks(self.down, self.down_scale, self.fmt))


def _check_blocks(name: str, c: int, fmt: str) -> None:
    if c % blocks.BLOCK and fmt not in blocks.HALF:
        raise ValueError(f"{fmt}: {name} has {c} input features; blocks of {blocks.BLOCK} need a multiple of "
                         f"{blocks.BLOCK} (quantize='int8' takes multiples of 8)")


def empty_blocks(shape: tuple[int, ...], fmt: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Unset values and float32 scales of a weight of `shape` [..., N, K] in `fmt`."""
    *lead, K = shape
    if fmt == "q8_0":
        values = torch.empty(*lead, K, dtype=torch.int8, device=device)
    else:
        values = torch.empty(*lead, K // 2, dtype=torch.uint8, device=device)
    return values, torch.empty(*lead, K // blocks.BLOCK, dtype=torch.float32, device=device)


def empty_block_moe(moe: MoE, fmt: str, name: str = "moe") -> None:
    """Turn `moe` into a BlockMoE whose expert blocks are left unset (see `BlockLinear.empty`)."""
    for part in ("gate_up", "down"):
        _check_blocks(f"{name}.{part}", getattr(moe, part).shape[2], fmt)
    for part in ("gate_up", "down"):
        values, scales = empty_blocks(tuple(getattr(moe, part).shape), fmt, getattr(moe, part).device)
        setattr(moe, part, nn.Parameter(values, requires_grad=False))
        setattr(moe, f"{part}_scale", nn.Parameter(scales, requires_grad=False))
    moe.fmt = fmt
    moe.__class__ = BlockMoE


def _block_moe(moe: MoE, fmt: str) -> None:
    for name in ("gate_up", "down"):
        values, scales, _ = blocks.quantize(getattr(moe, name), fmt)
        setattr(moe, name, nn.Parameter(values, requires_grad=False))
        setattr(moe, f"{name}_scale", nn.Parameter(scales, requires_grad=False))
    moe.fmt = fmt
    moe.__class__ = BlockMoE  # keeps every other field of the float module (router, shared expert, stats)


@torch.no_grad()
def quantize_blocks(model: nn.Module, fmt: str) -> nn.Module:
    """Replace the model's float Linear and routed-expert weights by `fmt` blocks ("q8_0" or "q4_0") or half
    weights ("bf16" or "f16") in place; returns the model. The router and shared-expert gate stay float32, as
    with int8.

    CPU only. Raises, changing nothing, if a weight is not on the CPU or (blocks) has an input width that is
    not a multiple of 32."""
    blocks.check_format(fmt)
    devices = {p.device.type for p in model.parameters()}
    if devices != {"cpu"}:
        raise ValueError(f"{fmt} weights are a CPU path; the model is on {sorted(devices)}")
    targets = [(name, m) for name, m in model.named_modules()
               if (type(m) in (nn.Linear, Linear) and name.rsplit(".", 1)[-1] not in KEEP_FLOAT)
               or type(m) is MoE]
    for name, module in targets:  # check every shape before changing anything
        if isinstance(module, nn.Linear):
            _check_blocks(name, module.in_features, fmt)
        else:
            _check_blocks(f"{name}.gate_up", module.gate_up.shape[2], fmt)
            _check_blocks(f"{name}.down", module.down.shape[2], fmt)
    for name, module in targets:
        if isinstance(module, MoE):
            _block_moe(module, fmt)
            continue
        parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
        setattr(parent, name.rpartition(".")[2], BlockLinear(module, fmt, name))
    return model
