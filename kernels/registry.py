"""Hot ops by name and backend, picked per device.

Every op has a torch implementation (the reference), may have a native C one
for the CPU (kernels/native, built with the system compiler on first use) and
a Triton one for CUDA. `get(name, device)` returns the Triton one on a CUDA
device; on the CPU the native one where the op has one and torch's otherwise
(native kernels cover the hot decode ops; the rest are torch's own kernels).
`SWARM_KERNELS=torch|native|triton` forces a backend. If the native kernels
cannot be built here (no C compiler, no AVX2), the CPU runs the torch ones and
says so once in a warning. Otherwise nothing falls back: an op without the
chosen backend, or a Triton backend without a GPU, is an error.

Implementations are named by import path and imported on first use, so the
CPU path never imports triton (a dev-only dependency).
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Callable

import torch

BACKENDS = ("torch", "native", "triton")
ENV = "SWARM_KERNELS"


class KernelUnavailable(RuntimeError):
    """The requested op has no implementation for the chosen backend, or the backend cannot run here."""


# (op, backend) -> "module:function", or the callable itself once loaded or registered
_REGISTRY: dict[tuple[str, str], str | Callable] = {
    ("linear", "torch"): "torch.nn.functional:linear",
    ("linear", "native"): "swarm.kernels.native.ops:linear",
    ("linear", "triton"): "torch.nn.functional:linear",  # dense matmuls on a GPU are cuBLAS's job
    ("rms_norm", "torch"): "swarm.kernels.norm:rms_norm",
    ("rms_norm", "native"): "swarm.kernels.native.ops:rms_norm",
    ("rms_norm", "triton"): "swarm.kernels.norm:rms_norm",  # torch's CUDA ops (a decode step is a CUDA graph)
    ("rotary", "torch"): "swarm.kernels.rope:apply_rotary",
    ("rotary", "native"): "swarm.kernels.native.ops:rotary",
    ("rotary", "triton"): "swarm.kernels.rope:apply_rotary",
    ("moe_route", "torch"): "swarm.kernels.moe:route",
    ("moe_route", "native"): "swarm.kernels.native.ops:route",
    ("moe_route", "triton"): "swarm.kernels.triton.moe_route:route",
    ("moe_expert_ffn", "torch"): "swarm.kernels.moe:expert_ffn",
    ("moe_expert_ffn", "native"): "swarm.kernels.native.ops:expert_ffn",
    ("moe_expert_ffn", "triton"): "swarm.kernels.triton.moe_ffn:expert_ffn",
    ("decode_attention", "torch"): "swarm.kernels.attention:decode_attention",
    ("decode_attention", "native"): "swarm.kernels.native.ops:decode_attention",
    ("decode_attention", "triton"): "swarm.kernels.triton.decode_attention:decode_attention",
    ("prefill_attention", "torch"): "swarm.kernels.attention:prefill_attention",
    ("prefill_attention", "native"): "swarm.kernels.native.ops:prefill_attention",
    ("prefill_attention", "triton"): "swarm.kernels.triton.prefill_attention:prefill_attention",
    ("argmax", "torch"): "swarm.kernels.sample:argmax",
    ("argmax", "native"): "swarm.kernels.native.ops:argmax",
    ("argmax", "triton"): "swarm.kernels.sample:argmax",  # torch's own reduction
    ("block_linear", "torch"): "swarm.kernels.quant:linear",
    ("block_linear", "native"): "swarm.kernels.native.ops:block_linear",
    ("block_linear", "triton"): "swarm.kernels.quant:linear",  # block weights are a CPU format: the reference
    ("block_expert_ffn", "torch"): "swarm.kernels.quant:expert_ffn",
    ("block_expert_ffn", "native"): "swarm.kernels.native.ops:block_expert_ffn",
    ("block_expert_ffn", "triton"): "swarm.kernels.quant:expert_ffn",
    ("lora_gather", "torch"): "swarm.kernels.lora:lora_gather",
    ("lora_gather", "triton"): "swarm.kernels.triton.lora_gather:lora_gather",
    ("lora_segment", "torch"): "swarm.kernels.lora:lora_segment",
    ("lora_segment", "triton"): "swarm.kernels.triton.lora_segment:lora_segment",
}


def register(name: str, backend: str, fn: str | Callable) -> None:
    """Add or replace the `backend` implementation of op `name` (a callable or a "module:function" path)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown kernel backend {backend!r}; expected one of {BACKENDS}")
    _REGISTRY[(name, backend)] = fn


def ops() -> dict[str, list[str]]:
    """Every registered op and its backends."""
    out: dict[str, list[str]] = {}
    for name, backend in _REGISTRY:
        out.setdefault(name, []).append(backend)
    return out


_native_warned = False


def _native_problem() -> str | None:
    """Why the native CPU kernels cannot run here (they are built on the first call), or None."""
    from swarm.kernels.native import build

    try:
        build.library()
    except build.NativeUnavailable as e:
        return str(e)
    return None


def _cpu_default() -> str:
    """native where its kernels build and run here, else torch, with one warning saying why."""
    global _native_warned
    problem = _native_problem()
    if problem is None:
        return "native"
    if not _native_warned:
        warnings.warn(f"native CPU kernels unavailable, running the torch ones: {problem}", RuntimeWarning,
                      stacklevel=4)
        _native_warned = True
    return "torch"


def backend_for(device: torch.device | str) -> str:
    """The backend `get` uses on `device`: SWARM_KERNELS if set, else triton on CUDA, native on the CPU
    (torch if the native kernels cannot be built here) and torch elsewhere."""
    device = torch.device(device)
    forced = os.environ.get(ENV, "").strip().lower()
    if forced and forced not in BACKENDS:
        raise KernelUnavailable(f"{ENV}={forced!r} is not a kernel backend; expected one of {BACKENDS}")
    if forced == "native":
        problem = f"they run on the CPU, not {device}" if device.type != "cpu" else _native_problem()
        if problem:
            raise KernelUnavailable(f"{ENV}=native, but the native kernels cannot run: {problem}")
    if forced:
        backend = forced
    elif device.type == "cuda":
        backend = "triton"
    else:
        backend = _cpu_default() if device.type == "cpu" else "torch"
    # The Triton interpreter runs kernels on CPU tensors (tests); compiled Triton needs an NVIDIA GPU.
    if backend == "triton" and device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise KernelUnavailable(
            f"triton kernels need a CUDA device, not {device}; unset {ENV} (or set {ENV}=torch) "
            "to run the torch kernels, or set TRITON_INTERPRET=1 to interpret the triton ones"
        )
    return backend


def get(name: str, device: torch.device | str, backend: str | None = None) -> Callable:
    """The implementation of op `name` for `device` (or for an explicit `backend`)."""
    backend = backend or backend_for(device)
    impl = _REGISTRY.get((name, backend))
    if impl is None and backend == "native":  # native kernels cover the hot ops; the rest are torch's
        backend, impl = "torch", _REGISTRY.get((name, "torch"))
    if impl is None:
        have = ops().get(name)
        if have is None:
            raise KernelUnavailable(f"unknown kernel {name!r}; registered: {sorted(ops())}")
        raise KernelUnavailable(f"kernel {name!r} has no {backend} implementation (it has: {have})")
    if isinstance(impl, str):
        module, attr = impl.split(":")
        try:
            impl = getattr(importlib.import_module(module), attr)
        except ImportError as e:
            raise KernelUnavailable(f"kernel {name!r} ({backend}) cannot be imported: {e}") from e
        _REGISTRY[(name, backend)] = impl
    return impl
