"""Weight-only quantisation for CPU decode, as a pass over the plain model (`quantize_blocks(model, fmt)`):
llama.cpp's Q8_0 / Q4_0 blocks of 32, int8 with a scale per row, or bf16 / f16 halves.

CPU decode reads every weight it uses once per step, so it is bound by memory bandwidth: Q8_0 and int8 read
about a quarter of float32's bytes, Q4_0 an eighth, the halves half. The native kernels (kernels/native) read
every format in place; `swarm.kernels.quant` says what each holds and what its products compute.

What is quantized: the attention projections, dense and shared-expert MLPs, the routed experts and lm_head.
The router and the shared-expert gate stay float32: they are tiny, and a rounding there can flip which experts
run.

Legend: T tokens, D hidden, E experts, K top-k, I expert width, N out features, C in features.
"""

from __future__ import annotations

import torch
from torch import nn

from swarm.kernels import quant as blocks
from swarm.kernels import registry
from swarm.runtime.model import Linear, MoE, kernels

KEEP_FLOAT = ("router", "shared_gate")


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

BLOCK_FORMATS = blocks.FORMATS  # q8_0, q4_0, the half formats bf16 / f16 and per-row int8
#
# bf16 / f16 and int8 ride the same path: the weight rounded to a 16-bit float (half the bytes of float32, one
# rounding per weight, no scales) or to int8 with a float32 scale per row (a quarter), widened to float32 in
# registers by the decode kernels (a half exactly: the result equals the float32 kernel on the widened weight
# bit for bit; int8's row sum of x q is multiplied by the row's scale once) and per call for prefill's GEMM.
# Activations and accumulation stay float32. Their rows may have any width (other widths than multiples of 32
# are widened per call for the float32 kernels).


class BlockLinear(nn.Module):
    """A Linear whose weight [N, C] is kept in blocks of 32 (`swarm.kernels.quant`); C a multiple of 32."""

    def __init__(self, linear: nn.Linear, fmt: str, name: str = "linear"):
        super().__init__()
        _check_blocks(name, linear.in_features, fmt)
        self.in_features, self.out_features, self.fmt = linear.in_features, linear.out_features, fmt
        values, scales, _ = blocks.quantize(linear.weight, fmt)
        self.weight = nn.Parameter(values, requires_grad=False)  # [N, C] int8 / 16-bit or [N, C / 2] uint8
        self.scale = nn.Parameter(scales, requires_grad=False)  # [N, C / 32] or int8's [N] float32, bf16 / f16 none
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
    if c % blocks.BLOCK and fmt not in blocks.WIDENED:
        raise ValueError(f"{fmt}: {name} has {c} input features; blocks of {blocks.BLOCK} need a multiple of "
                         f"{blocks.BLOCK} (quantize='int8', 'bf16' or 'f16' take any width)")


def empty_blocks(shape: tuple[int, ...], fmt: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Unset values and float32 scales of a weight of `shape` [..., N, K] in `fmt` (q8_0 or q4_0: a GGUF file's
    blocks)."""
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
    """Replace the model's float Linear and routed-expert weights by `fmt` blocks ("q8_0" or "q4_0"), half
    weights ("bf16" or "f16") or int8 with a scale per row ("int8") in place; returns the model. The router and
    shared-expert gate stay float32.

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
