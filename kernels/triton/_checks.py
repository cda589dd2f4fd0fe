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


def check_floats(op: str, **tensors: torch.Tensor) -> None:
    """Every tensor a supported float dtype, and all of one dtype."""
    for name, t in tensors.items():
        check_dtype(op, name, t, FLOATS)
    dtypes = {t.dtype for t in tensors.values()}
    if len(dtypes) > 1:
        got = ", ".join(f"{n} {t.dtype}" for n, t in tensors.items())
        raise UnsupportedInput(f"{op}: {', '.join(tensors)} must share a dtype, got {got}")


def check_paged_kv(op: str, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                   max_head_dim: int, k_scale: torch.Tensor | None = None,
                   v_scale: torch.Tensor | None = None) -> tuple[int, int, int, int]:
    """q [T, H, d] against a paged pool k_cache/v_cache [N, bs, G, d] -> (H, d, bs, G). The pool is q's float
    dtype, or int8 with float32 scales k_scale/v_scale [N, bs, G] (contiguous, one layout)."""
    if k_cache.dtype == torch.int8 or v_cache.dtype == torch.int8:
        check_floats(op, q=q)
        check_dtype(op, "v_cache", v_cache, (torch.int8,))
        check_dtype(op, "k_cache", k_cache, (torch.int8,))
        check_shape(op, k_scale is not None and v_scale is not None, "an int8 KV cache needs k_scale and v_scale")
        check_dtype(op, "k_scale", k_scale, (torch.float32,))
        check_dtype(op, "v_scale", v_scale, (torch.float32,))
        check_shape(op, k_scale.shape == v_scale.shape == k_cache.shape[:3] and k_scale.is_contiguous()
                    and v_scale.is_contiguous(), "k_scale/v_scale must be contiguous [N, bs, G] like the cache")
    else:
        check_floats(op, q=q, k_cache=k_cache, v_cache=v_cache)
        check_shape(op, k_scale is None and v_scale is None, "scales go with an int8 cache only")
    check_shape(op, q.dim() == 3 and k_cache.dim() == 4 and k_cache.shape == v_cache.shape,
                "expected q [T, H, d] and k_cache/v_cache [N, bs, G, d] of one shape")
    H, d = q.shape[1:]
    bs, G, dk = k_cache.shape[1:]
    check_shape(op, dk == d and d <= max_head_dim, f"head dim {d} (cache {dk}); supported up to {max_head_dim}")
    check_shape(op, H % G == 0, f"{H} query heads do not share {G} key/value heads evenly")
    return H, d, bs, G


def check_shape(op: str, ok: bool, what: str) -> None:
    if not ok:
        raise UnsupportedInput(f"{op}: {what}")


def dot_precision(dtype: torch.dtype) -> str:
    """float32 dots use plain TF32 only where torch's own matmuls would, so both backends agree; otherwise
    "tf32x3" (three TF32 products per dot, float32 accuracy on the tensor cores). Triton's "ieee" dots run
    on the CUDA cores and were 15-30x slower on an H100 (benchmarks/results/kernels-triton-h100.json)."""
    if dtype != torch.float32:
        return "ieee"  # half-precision operands: the precision argument does not apply
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "tf32x3"
