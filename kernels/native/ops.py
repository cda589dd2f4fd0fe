"""The native kernels behind the registry's op signatures: argument checks, then one C call.

They cover float32 CPU tensors, the CPU's compute dtype, up to MAX_HEADS query heads and, for `linear`, up to
LINEAR_MAX_ROWS rows (decode batches; prefill chunks go to MKL's GEMM, faster at that size); anything else runs
the torch kernels (the C code is float32 only and keeps per-head state on the stack).

Legend: T tokens, D hidden, E experts, K top-k, I expert width, B sequences, H query heads,
G key/value heads, d head dim, N cache blocks, bs block size, nb blocks per table.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from swarm.kernels import attention, moe
from swarm.kernels.native.build import library

_ERRORS = {-1: "invalid arguments", -2: "out of memory"}
LINEAR_MAX_ROWS = 32  # more rows than this go to torch's matmul (MKL's packed GEMM wins from about here)
MAX_HEADS = 64  # MAX_H in cpu.c: the query heads one sequence's attention keeps state for


def _check(op: str, code: int) -> None:
    if code != 0:
        raise RuntimeError(f"native {op}: {_ERRORS.get(code, f'error {code}')}")


def _native(*tensors: torch.Tensor) -> bool:
    return all(t.dtype == torch.float32 and t.device.type == "cpu" for t in tensors)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., K] @ weight [N, K]^T (+ bias [N]) -> [..., N], like F.linear. Called for every projection of
    every layer, so the checks are kept to attribute reads."""
    K, N = x.shape[-1], weight.shape[0]
    if (torch.jit.is_tracing() or x.numel() > LINEAR_MAX_ROWS * K or x.dtype != torch.float32
            or weight.dtype != torch.float32 or x.device.type != "cpu"
            or (bias is not None and bias.dtype != torch.float32)):
        return F.linear(x, weight, bias)
    if weight.shape[1] != K or (bias is not None and bias.shape != (N,)):
        raise ValueError(f"linear: shapes x {tuple(x.shape)}, weight {tuple(weight.shape)}, "
                         f"bias {None if bias is None else tuple(bias.shape)}")
    rows = x if x.is_contiguous() else x.contiguous()
    weight = weight if weight.is_contiguous() else weight.contiguous()
    out = x.new_empty(x.shape[:-1] + (N,))
    code = library().swarm_linear(rows.data_ptr(), rows.numel() // K, K, weight.data_ptr(), N,
                                  None if bias is None else bias.contiguous().data_ptr(), out.data_ptr())
    if code:
        _check("linear", code)
    return out


def expert_ffn(
    x: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor
) -> torch.Tensor:
    """SwiGLU experts: x [T, D], gate_up [E, 2I, D], down [E, D, I], weights/ids [T, K] -> [T, D]."""
    if not _native(x, gate_up, down):
        return moe.expert_ffn(x, gate_up, down, weights, ids)
    T, D = x.shape
    E, I2, _ = gate_up.shape
    if gate_up.shape[2] != D or down.shape != (E, D, I2 // 2) or ids.shape != weights.shape or ids.shape[0] != T:
        raise ValueError(f"expert_ffn: shapes x {tuple(x.shape)}, gate_up {tuple(gate_up.shape)}, "
                         f"down {tuple(down.shape)}, weights {tuple(weights.shape)}, ids {tuple(ids.shape)}")
    x, gate_up, down = x.contiguous(), gate_up.contiguous(), down.contiguous()
    w = weights.to(torch.float32).contiguous()
    i = ids.to(torch.int64).contiguous()
    out = torch.empty_like(x)
    code = library().swarm_expert_ffn(x.data_ptr(), T, D, gate_up.data_ptr(), down.data_ptr(), E, I2 // 2,
                                      w.data_ptr(), i.data_ptr(), ids.shape[1], out.data_ptr())
    if code == -1:
        raise ValueError(f"expert_ffn: expert ids must lie in [0, {E}), got {ids.min().item()}..{ids.max().item()}")
    _check("expert_ffn", code)
    return out


def decode_attention(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_table: torch.Tensor,
    mask: torch.Tensor, scale: float,
) -> torch.Tensor:
    """One new query per sequence over paged keys/values, read in place (no gathered copy).

    q [B, H, d]; k_cache/v_cache [N, bs, G, d]; block_table [B, nb]; mask [B, nb * bs] -> [B, H, d].
    """
    if not _native(q, k_cache, v_cache) or q.shape[1] > MAX_HEADS:
        return attention.decode_attention(q, k_cache, v_cache, block_table, mask, scale)
    B, H, d = q.shape
    N, bs, G, _ = k_cache.shape
    nb = block_table.shape[1]
    if v_cache.shape != k_cache.shape or k_cache.shape[3] != d or mask.shape != (B, nb * bs) or H % G:
        raise ValueError(f"decode_attention: shapes q {tuple(q.shape)}, k/v cache {tuple(k_cache.shape)}, "
                         f"table {tuple(block_table.shape)}, mask {tuple(mask.shape)}")
    if not (k_cache.is_contiguous() and v_cache.is_contiguous()):
        raise ValueError("decode_attention: the KV cache must be contiguous (it is read in place)")
    q = q.contiguous()
    table = block_table.to(torch.int64).contiguous()
    m = mask.to(torch.bool).contiguous()
    out = torch.empty_like(q)
    code = library().swarm_decode_attention(q.data_ptr(), B, H, d, k_cache.data_ptr(), v_cache.data_ptr(), bs, G,
                                            table.data_ptr(), nb, m.data_ptr(), scale, out.data_ptr())
    _check("decode_attention", code)
    return out
