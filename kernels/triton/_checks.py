"""Host-side argument checks shared by the Triton ops: they fail loudly instead of computing garbage."""

from __future__ import annotations

import torch
import triton

FLOATS = (torch.float16, torch.bfloat16, torch.float32)


class UnsupportedInput(ValueError):
    """A shape, dtype or device that a Triton kernel does not handle."""


def interpreted(kernel: object) -> bool:
    """True when `kernel` was decorated with TRITON_INTERPRET=1 (it then runs on CPU tensors)."""
    return not isinstance(kernel, triton.runtime.JITFunction)


def check_device(op: str, kernel: object, *tensors: torch.Tensor) -> None:
    devices = {t.device for t in tensors}
    if len(devices) != 1:
        raise UnsupportedInput(f"{op}: all tensors must be on one device, got {sorted(map(str, devices))}")
    device = devices.pop()
    if interpreted(kernel):
        if not interpreted(triton.language.max):  # triton jitted its own helpers before the variable was set
            raise UnsupportedInput(f"{op}: TRITON_INTERPRET=1 must be set before triton is first imported")
        return
    if device.type != "cuda":
        raise UnsupportedInput(f"{op}: the compiled triton kernel needs CUDA tensors, got {device} "
                               "(use the torch kernel, or TRITON_INTERPRET=1 for the interpreter)")


def check_dtype(op: str, name: str, t: torch.Tensor, allowed: tuple[torch.dtype, ...]) -> None:
    if t.dtype not in allowed:
        raise UnsupportedInput(f"{op}: {name} has dtype {t.dtype}; supported: {[str(d) for d in allowed]}")


def check_shape(op: str, ok: bool, what: str) -> None:
    if not ok:
        raise UnsupportedInput(f"{op}: {what}")


def dot_precision(dtype: torch.dtype) -> str:
    """float32 dots use TF32 only where torch's own matmuls would, so both backends agree."""
    return "tf32" if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32 else "ieee"
