"""The native kernels behind the registry's op signatures: argument checks, then one C call.

They cover float32 CPU tensors, the CPU's compute dtype (and the KV pool's int8 layout with its float32 scales),
up to MAX_HEADS query heads and, for `linear`, up to LINEAR_MAX_ROWS rows (decode batches; prefill chunks go to
MKL's GEMM, faster at that size); anything else runs the torch kernels (the C code computes in float32 and keeps
per-head state on the stack). So does anything autograd records (training: the C code has no backward) or a trace
records (ONNX export).

Legend: T tokens, D hidden, E experts, K top-k, I expert width, B sequences, H query heads,
G key/value heads, d head dim, N cache blocks, bs block size, nb blocks per table.
"""

from __future__ import annotations

import array
import ctypes
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from swarm.kernels import attention, moe, norm, quant, sample
from swarm.kernels.native.build import library
from swarm.kernels.quant import Blocks
from swarm.kernels.rope import apply_rotary

_ERRORS = {-1: "invalid arguments", -2: "out of memory"}
LINEAR_MAX_ROWS = 32  # more rows than this go to torch's matmul (MKL's packed GEMM wins from about here)
MAX_HEADS = 64  # MAX_H in cpu.c: the query heads one sequence's attention keeps state for
ROUTERS = ("softmax_topk", "topk_softmax")  # the routing modes swarm_route computes
# cpu.c's weight formats (struct qmat's fmt)
FORMATS = {"float32": 0, "q8_0": 1, "q4_0": 2, "bf16": 3, "f16": 4, "int8": 5}
KV_FORMATS = {torch.float32: 0, torch.int8: 1, torch.float16: 2}  # cpu.c's KV cache formats (struct paged's fmt)


def _check(op: str, code: int) -> None:
    if code != 0:
        raise RuntimeError(f"native {op}: {_ERRORS.get(code, f'error {code}')}")


def _native(*tensors: torch.Tensor | None) -> bool:
    """Whether the C code can take these tensors (None skipped): float32 on the CPU, outside a trace (an ONNX
    export records torch ops) and outside autograd (the C code has no backward: training runs torch's)."""
    if torch.jit.is_tracing():
        return False
    grad = torch.is_grad_enabled()
    for t in tensors:  # (is_cpu and the dtype singleton: cheaper than t.device.type, which builds an object)
        if t is not None and (t.dtype is not torch.float32 or not t.is_cpu or (grad and t.requires_grad)):
            return False
    return True


def _rows(x: torch.Tensor) -> tuple[int, int, int, int] | None:
    """(T, R, D, row stride) of x [T, D] or [T, R, D] as T x R rows of D contiguous floats, R rows D apart
    (a slice of heads out of a fused projection qualifies); None for any other layout."""
    shape, stride = x.shape, x.stride()
    if len(shape) == 2 and stride[1] == 1:
        return shape[0], 1, shape[1], stride[0]
    if len(shape) == 3 and stride[2] == 1 and stride[1] == shape[2]:
        return shape[0], shape[1], shape[2], stride[0]
    return None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x [T, D] or [T, R, D] -> weight * x / sqrt(mean(x^2) + eps), a new contiguous tensor."""
    rows = _rows(x)
    if rows is None or not _native(x, weight):
        return norm.rms_norm(x, weight, eps)
    T, R, D, st = rows
    if weight.shape != (D,):
        raise ValueError(f"rms_norm: weight {tuple(weight.shape)} for rows of {D}")
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    library().swarm_rms_norm(x.data_ptr(), T, R, D, st, weight.contiguous().data_ptr(), eps, out.data_ptr())
    return out


def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of x [T, H, d] by cos/sin [T, d] (halves convention), written over x and returned."""
    rows = _rows(x)
    if rows is None or x.dim() != 3 or not _native(x, cos, sin):
        return apply_rotary(x, cos, sin)
    T, H, d, st = rows
    if cos.shape != (T, d) or sin.shape != (T, d) or d % 2:
        raise ValueError(f"rotary: x {tuple(x.shape)} with cos {tuple(cos.shape)}, sin {tuple(sin.shape)}")
    library().swarm_rotary(x.data_ptr(), T, H, d, st, cos.contiguous().data_ptr(), sin.contiguous().data_ptr())
    return x


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., K] @ weight [N, K]^T (+ bias [N]) -> [..., N], like F.linear. Called for every projection of
    every layer, so the checks are kept to attribute reads."""
    K, N = x.shape[-1], weight.shape[0]
    if not _native(x, weight, bias) or x.numel() > LINEAR_MAX_ROWS * K:
        return F.linear(x, weight, bias)
    if weight.shape[1] != K or (bias is not None and bias.shape != (N,)):
        raise ValueError(f"linear: shapes x {tuple(x.shape)}, weight {tuple(weight.shape)}, "
                         f"bias {None if bias is None else tuple(bias.shape)}")
    rows = x if x.is_contiguous() else x.contiguous()
    weight = weight if weight.is_contiguous() else weight.contiguous()
    out = torch.empty((*x.shape[:-1], N))  # (a tuple: building from a torch.Size costs more)
    code = library().swarm_linear(rows.data_ptr(), rows.numel() // K, K, weight.data_ptr(), N,
                                  None if bias is None else bias.contiguous().data_ptr(), out.data_ptr())
    if code:
        _check("linear", code)
    return out


def route(logits: torch.Tensor, top_k: int, mode: str, renormalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as `swarm.kernels.moe.route`: logits [T, E] -> weights [T, K] float32, ids [T, K] int64."""
    if not _native(logits) or logits.dim() != 2 or not 0 < top_k <= min(logits.shape[1], 64) \
            or mode not in ROUTERS:
        return moe.route(logits, top_k, mode, renormalize)
    T = logits.shape[0]
    logits = logits.contiguous()
    weights, ids = logits.new_empty(T, top_k), torch.empty(T, top_k, dtype=torch.int64)
    _check("route", library().swarm_route(logits.data_ptr(), T, logits.shape[1], top_k, mode == "topk_softmax",
                                          bool(renormalize), weights.data_ptr(), ids.data_ptr()))
    return weights, ids


def argmax(logits: torch.Tensor) -> torch.Tensor:
    """logits [R, V] -> [R] int64, as `swarm.kernels.sample.argmax`."""
    if not _native(logits) or logits.dim() != 2 or logits.shape[1] == 0:
        return sample.argmax(logits)
    logits = logits.contiguous()
    out = torch.empty(logits.shape[0], dtype=torch.int64)
    library().swarm_argmax(logits.data_ptr(), logits.shape[0], logits.shape[1], out.data_ptr())
    return out


def expert_ffn(
    x: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor
) -> torch.Tensor:
    """SwiGLU experts: x [T, D], gate_up [E, 2I, D], down [E, D, I], weights/ids [T, K] -> [T, D]."""
    if not _native(x, gate_up, down):
        return moe.expert_ffn(x, gate_up, down, weights, ids)
    return _experts(x, gate_up.contiguous(), down.contiguous(), weights, ids)


def _experts(x: torch.Tensor, gate_up: torch.Tensor | Blocks, down: torch.Tensor | Blocks, weights: torch.Tensor,
             ids: torch.Tensor) -> torch.Tensor:
    """The C expert FFN over float32 or block weights (contiguous, on the CPU), shapes checked."""
    T, D = x.shape
    E, I2, _ = gate_up.shape
    if gate_up.shape[2] != D or down.shape != (E, D, I2 // 2) or ids.shape != weights.shape or ids.shape[0] != T:
        raise ValueError(f"expert_ffn: shapes x {tuple(x.shape)}, gate_up {tuple(gate_up.shape)}, "
                         f"down {tuple(down.shape)}, weights {tuple(weights.shape)}, ids {tuple(ids.shape)}")
    (fmt, gu, gs), (_, dn, ds) = _weight_args(gate_up), _weight_args(down)
    x = x.contiguous()
    w = weights.to(torch.float32).contiguous()
    i = ids.to(torch.int64).contiguous()
    out = torch.empty_like(x)
    code = library().swarm_expert_ffn(x.data_ptr(), T, D, fmt, gu, gs, dn, ds, E, I2 // 2, w.data_ptr(),
                                      i.data_ptr(), ids.shape[1], out.data_ptr())
    if code == -1:
        raise ValueError(f"expert_ffn: expert ids must lie in [0, {E}), got {ids.min().item()}..{ids.max().item()}")
    _check("expert_ffn", code)
    return out


# -- weights in blocks of 32 (kernels/quant.py) -----------------------------------------------------------------


def _weight_args(w: torch.Tensor | Blocks) -> tuple[int, int, int | None]:
    """(format code, values pointer, scales pointer) of a contiguous float32 weight or blocks."""
    if isinstance(w, Blocks):
        return FORMATS[w.fmt], w.values.data_ptr(), None if w.fmt in quant.HALF else w.scales.data_ptr()
    return 0, w.data_ptr(), None


def _blocks_ok(values: torch.Tensor, scales: torch.Tensor, fmt: str) -> bool:
    """Whether the C code can read these blocks in place: on the CPU, contiguous, of the format's dtypes and
    shapes (values [..., N, K] int8 or [..., N, K / 2] uint8 for scales [..., N, K / 32] float32; bf16 / f16
    values [..., N, K] with K a multiple of 32; int8 values [..., N, K] likewise with scales [..., N])."""
    if fmt in quant.WIDENED:  # one value a weight; int8's scales one a row
        return (values.dtype is quant.HALF.get(fmt, torch.int8) and values.is_cpu and values.is_contiguous()
                and values.dim() >= 2 and values.shape[-1] % quant.BLOCK == 0
                and (fmt in quant.HALF or (scales.dtype is torch.float32 and scales.is_cpu
                                           and scales.is_contiguous() and scales.shape == values.shape[:-1])))
    want = {"q8_0": (torch.int8, quant.BLOCK), "q4_0": (torch.uint8, quant.BLOCK // 2)}.get(fmt)
    return (want is not None and values.dtype is want[0] and scales.dtype is torch.float32 and values.is_cpu
            and scales.is_cpu and values.is_contiguous() and scales.is_contiguous()
            and values.shape == (*scales.shape[:-1], scales.shape[-1] * want[1]))


def dequantize(values: torch.Tensor, scales: torch.Tensor, fmt: str) -> torch.Tensor:
    """The float32 weight [..., N, K] of blocks, as `swarm.kernels.quant.dequantize` computes it (same bits)."""
    if fmt in quant.HALF or not _blocks_ok(values, scales, fmt) or scales.numel() == 0:
        return quant.dequantize(values, scales, fmt)  # (torch widens halves exactly, vectorised)
    out = torch.empty(Blocks(values, scales, fmt).shape)
    N, K = out.numel() // out.shape[-1], out.shape[-1]
    _check("dequantize", library().swarm_dequantize(FORMATS[fmt], values.data_ptr(), scales.data_ptr(), N, K,
                                                    out.data_ptr()))
    return out


def block_linear(x: torch.Tensor, values: torch.Tensor, scales: torch.Tensor, fmt: str,
                 bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., K] @ W^T (+ bias [N]) -> [..., N] for W [N, K] in blocks (`swarm.kernels.quant`): `quant.linear`'s
    product (Q8_0 / Q4_0 weights take x rounded to Q8_0 blocks; halves equal `linear` on the widened W bit for
    bit). Up to LINEAR_MAX_ROWS rows run the C kernels on the blocks in place; more rows (prefill) dequantise the
    weight for this call and hand it to torch's matmul, as `linear` does with float32 ones."""
    K = x.shape[-1]
    if not _native(x, bias) or not _blocks_ok(values, scales, fmt):
        if fmt in quant.WIDENED and _native(x, bias):  # rows the C code cannot read in place: widen them
            return linear(x, quant.dequantize(values, scales, fmt), bias)
        return quant.linear(x, values, scales, fmt, bias)
    shape = Blocks(values, scales, fmt).shape
    N = shape[0]
    if len(shape) != 2 or shape[1] != K or (bias is not None and bias.shape != (N,)):
        raise ValueError(f"block_linear: x {tuple(x.shape)} against a {fmt} weight of {N} rows of "
                         f"{shape[-1]}, bias {None if bias is None else tuple(bias.shape)}")
    if x.numel() > LINEAR_MAX_ROWS * K:
        return F.linear(quant.activations(x, fmt), dequantize(values, scales, fmt), bias)
    rows = x if x.is_contiguous() else x.contiguous()
    out = torch.empty((*x.shape[:-1], N))
    _, w, s = _weight_args(Blocks(values, scales, fmt))
    code = library().swarm_qlinear(rows.data_ptr(), rows.numel() // K, K, FORMATS[fmt], w, s, N,
                                   None if bias is None else bias.contiguous().data_ptr(), out.data_ptr())
    if code:
        _check("block_linear", code)
    return out


def block_expert_ffn(x: torch.Tensor, gate_up: Blocks, down: Blocks, weights: torch.Tensor,
                     ids: torch.Tensor) -> torch.Tensor:
    """`expert_ffn` with gate_up [E, 2I, D] and down [E, D, I] in blocks, read in place at any token count
    (`quant.expert_ffn`'s product: Q8_0 / Q4_0 experts take their inputs rounded to Q8_0 blocks)."""
    if not _native(x) or not (_blocks_ok(*gate_up) and _blocks_ok(*down)) or gate_up.fmt != down.fmt:
        if gate_up.fmt in quant.WIDENED and down.fmt in quant.WIDENED and _native(x):  # as block_linear does
            return expert_ffn(x, quant.dequantize(*gate_up), quant.dequantize(*down), weights, ids)
        return quant.expert_ffn(x, gate_up, down, weights, ids)
    return _experts(x, gate_up, down, weights, ids)


def _native_cache(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, k_scale: torch.Tensor | None,
                  v_scale: torch.Tensor | None) -> bool:
    """Whether the C attention can read this cache: float32 or float16, or int8 with float32 scales (and q
    float32)."""
    if k_cache.dtype is torch.int8 and v_cache.dtype is torch.int8:
        return k_scale is not None and v_scale is not None and _native(q, k_scale, v_scale)
    if k_cache.dtype is torch.float16 and v_cache.dtype is torch.float16:
        return k_cache.is_cpu and v_cache.is_cpu and _native(q)
    return _native(q, k_cache, v_cache)


def _paged_cache(op: str, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, others: str,
                 others_ok: bool, k_scale: torch.Tensor | None = None,
                 v_scale: torch.Tensor | None = None) -> tuple[int, int, int | None, int | None, int]:
    """(block size, key/value heads, scale pointers, cache format) of a paged cache [N, bs, G, d] (int8: with its
    scales [N, bs, G]) that the attention kernels can read in place with queries q [., H, d]; raises naming the
    shapes (`others`: the op's own arguments, `others_ok` their check)."""
    H, d = q.shape[1:]
    bs, G = k_cache.shape[1:3]
    quantized = k_cache.dtype is torch.int8
    if (v_cache.shape != k_cache.shape or k_cache.shape[3] != d or H % G or not others_ok
            or v_cache.dtype is not k_cache.dtype
            or quantized != (k_scale is not None) or (v_scale is None) != (k_scale is None)
            or (quantized and not (k_scale.shape == v_scale.shape == k_cache.shape[:3]))):
        scales = "" if k_scale is None else f", scales {tuple(k_scale.shape)} / " \
            f"{None if v_scale is None else tuple(v_scale.shape)}"
        raise ValueError(f"{op}: shapes q {tuple(q.shape)}, k/v cache {tuple(k_cache.shape)} {k_cache.dtype}"
                         f"{scales}, {others} (an int8 cache needs both scales, a float one neither)")
    if not (k_cache.is_contiguous() and v_cache.is_contiguous()
            and (not quantized or (k_scale.is_contiguous() and v_scale.is_contiguous()))):
        raise ValueError(f"{op}: the KV cache and its scales must be contiguous (they are read in place)")
    return bs, G, _ptr(k_scale), _ptr(v_scale), KV_FORMATS[k_cache.dtype]


def prefill_attention(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, blocks: torch.Tensor, context_len: int,
    scale: float, window: int | None = None, k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Same contract as `swarm.kernels.attention.prefill_attention`; keys and values (float32, float16, or int8
    with their scales) are read in place."""
    if not _native_cache(q, k_cache, v_cache, k_scale, v_scale):
        return attention.prefill_attention(q, k_cache, v_cache, blocks, context_len, scale, window, k_scale, v_scale)
    Q, H, d = q.shape
    bs, G, ks, vs, fmt = _paged_cache("prefill_attention", q, k_cache, v_cache, f"blocks {tuple(blocks.shape)}",
                                      blocks.dim() == 1, k_scale, v_scale)
    context_len = int(context_len)
    if not Q <= context_len <= blocks.shape[0] * bs or (window is not None and window < 1):
        raise ValueError(f"prefill_attention: context_len {context_len} must cover the {Q} queries and fit in "
                         f"{blocks.shape[0]} blocks of {bs}; window must be None or >= 1, got {window}")
    q = q.contiguous()
    table = blocks.to(torch.int64).contiguous()
    out = torch.empty_like(q)
    code = library().swarm_prefill_attention(q.data_ptr(), Q, H, d, k_cache.data_ptr(), v_cache.data_ptr(), ks, vs,
                                             fmt, bs, G, table.data_ptr(), context_len, scale, window or 0,
                                             out.data_ptr())
    _check("prefill_attention", code)
    return out


def decode_attention(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_table: torch.Tensor,
    mask: torch.Tensor, scale: float, k_scale: torch.Tensor | None = None, v_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """One new query per sequence over paged keys/values, read in place (no gathered copy).

    q [B, H, d]; k_cache/v_cache [N, bs, G, d] (float32 or float16, or int8 with k_scale/v_scale [N, bs, G]);
    block_table [B, nb]; mask [B, nb * bs] -> [B, H, d].
    """
    if not _native_cache(q, k_cache, v_cache, k_scale, v_scale) or q.shape[1] > MAX_HEADS:
        return attention.decode_attention(q, k_cache, v_cache, block_table, mask, scale, k_scale, v_scale)
    B, H, d = q.shape
    nb = block_table.shape[1]
    bs, G, ks, vs, fmt = _paged_cache("decode_attention", q, k_cache, v_cache,
                                      f"table {tuple(block_table.shape)}, mask {tuple(mask.shape)}",
                                      mask.shape == (B, nb * k_cache.shape[1]), k_scale, v_scale)
    q = q.contiguous()
    table = block_table.to(torch.int64).contiguous()
    m = mask.to(torch.bool).contiguous()
    out = torch.empty_like(q)
    code = library().swarm_decode_attention(q.data_ptr(), B, H, d, k_cache.data_ptr(), v_cache.data_ptr(), ks, vs,
                                            fmt, bs, G, table.data_ptr(), nb, m.data_ptr(), scale, out.data_ptr())
    _check("decode_attention", code)
    return out


def store_int8(x: torch.Tensor, slots: torch.Tensor, cache: torch.Tensor, scales: torch.Tensor) -> bool:
    """Quantise x [T, G, d] (float32; rows may sit inside a wider tensor) into `slots` [T] of an int8 cache
    [N, bs, G, d] and its scales [N, bs, G], bit for bit as `swarm.runtime.block_pool.quantize_int8` does.
    Returns False, storing nothing, for tensors the C code cannot take (the caller quantises with torch)."""
    rows = _rows(x) if x.dim() == 3 else None
    if rows is None or not _native(x, scales) or cache.dtype is not torch.int8 or not cache.is_cpu:
        return False
    T, G, d, st = rows
    if cache.shape[2:] != (G, d) or scales.shape != cache.shape[:3] or slots.shape != (T,) \
            or not (cache.is_contiguous() and scales.is_contiguous()):
        raise ValueError(f"store_int8: x {tuple(x.shape)} into cache {tuple(cache.shape)}, scales "
                         f"{tuple(scales.shape)}, slots {tuple(slots.shape)}")
    idx = slots.to(torch.int64).contiguous()
    library().swarm_store_int8(x.data_ptr(), T, G, d, st, idx.data_ptr(), cache.data_ptr(), scales.data_ptr())
    return True


# -- fused decode blocks (runtime/fused.py builds a layer's structs once, a step's once per step) ---------------

_P, _I, _F = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
QK_NORMS = {"none": 0, "head": 1, "full": 2}  # struct attention_layer's qk_norm codes


class DecodeStep(ctypes.Structure):
    """cpu.c's struct decode_step (same fields, types and order); `tensors` keeps what it points into alive."""

    _fields_ = [("x", _P), ("B", _I), ("cos", _P), ("sin", _P), ("slots", _P), ("table", _P), ("nb", _I)]


class QMat(ctypes.Structure):
    """cpu.c's struct qmat: a weight in float32 (fmt 0) or in blocks (FORMATS), with its scales."""

    _fields_ = [("fmt", _I), ("w", _P), ("s", _P)]


class AttentionLayer(ctypes.Structure):
    """cpu.c's struct attention_layer; `tensors` keeps what it points into alive."""

    _fields_ = [("D", _I), ("norm_w", _P), ("eps", _F), ("wqkv", QMat), ("bqkv", _P), ("H", _I), ("G", _I), ("d", _I),
                ("qk_norm", _I), ("q_norm_w", _P), ("k_norm_w", _P), ("qk_eps", _F), ("kc", _P), ("vc", _P),
                ("ks", _P), ("vs", _P), ("kv_fmt", _I), ("bs", _I), ("scale", _F), ("wo", QMat), ("bo", _P),
                ("mult", _F)]


class MoELayer(ctypes.Structure):
    """cpu.c's struct moe_layer; `tensors` keeps what it points into alive."""

    _fields_ = [("D", _I), ("norm_w", _P), ("eps", _F), ("router_w", _P), ("E", _I), ("K", _I), ("mode", _I),
                ("renorm", _I), ("gate_up", QMat), ("down", QMat), ("I", _I), ("mult", _F)]


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def fits(t: torch.Tensor | Blocks | None) -> bool:
    """A tensor the fused blocks can point into (None: an absent bias or norm): contiguous float32 on the CPU, or
    a weight in blocks the C code reads in place."""
    if isinstance(t, Blocks):
        return _blocks_ok(*t)
    return t is None or (t.dtype is torch.float32 and t.is_cpu and t.is_contiguous())


def _qmat(w: torch.Tensor | Blocks) -> QMat:
    return QMat(*_weight_args(w))


def _held(struct: ctypes.Structure, *floats: torch.Tensor | Blocks | None, keep: tuple = ()) -> ctypes.Structure:
    """`struct`, holding the tensors it points into (`floats`, checked with `fits`, and `keep`) so they live
    as long as it does."""
    for t in floats:
        if not fits(t):
            if isinstance(t, Blocks):
                raise ValueError(f"{type(struct).__name__}: {t.fmt} weights must be contiguous on the CPU, got "
                                 f"values {t.values.dtype} {tuple(t.values.shape)} {t.values.device}, scales "
                                 f"{t.scales.dtype} {tuple(t.scales.shape)}")
            raise ValueError(f"{type(struct).__name__}: tensors must be contiguous float32 on the CPU, got "
                             f"{t.dtype} {t.device} contiguous={t.is_contiguous()}")
    struct.tensors = floats + keep
    return struct


def attention_layer(norm_w: torch.Tensor, eps: float, wqkv: torch.Tensor | Blocks, bqkv: torch.Tensor | None,
                    heads: int, qk_norm: str, q_norm_w: torch.Tensor | None, k_norm_w: torch.Tensor | None,
                    qk_eps: float,
                    k_cache: torch.Tensor, v_cache: torch.Tensor, scale: float, wo: torch.Tensor | Blocks,
                    bo: torch.Tensor | None, mult: float, k_scale: torch.Tensor | None = None,
                    v_scale: torch.Tensor | None = None) -> AttentionLayer:
    """A layer's attention block for `attention_block`: its modules' tensors (float32, contiguous, CPU) and its
    paged caches [N, bs, G, d] (float32 or float16, or int8 with their scales [N, bs, G]: the block rounds or
    quantises the new keys and values into their slots as `KVPool.write` does), checked once. The struct points
    into these tensors for as long as it lives."""
    D = norm_w.shape[0]
    N, bs, G, d = k_cache.shape
    quantized = k_scale is not None
    if (wqkv.shape != ((heads + 2 * G) * d, D) or wo.shape != (D, heads * d) or v_cache.shape != k_cache.shape
            or qk_norm not in QK_NORMS or heads % G or heads > MAX_HEADS or quantized != (v_scale is not None)
            or (quantized and not k_scale.shape == v_scale.shape == (N, bs, G))):
        raise ValueError(f"attention_layer: qkv {tuple(wqkv.shape)}, o {tuple(wo.shape)}, caches {tuple(k_cache.shape)}"
                         f" / {tuple(v_cache.shape)} for {heads} heads of hidden {D}, qk_norm {qk_norm!r}, scales "
                         f"{None if k_scale is None else tuple(k_scale.shape)} / "
                         f"{None if v_scale is None else tuple(v_scale.shape)}")
    caches: tuple = (k_cache, v_cache)  # float32 ones are checked with the weights
    if quantized or k_cache.dtype is torch.float16:
        kind = "int8" if quantized else "float16"
        if not all(t.dtype is k_cache.dtype and t.is_cpu and t.is_contiguous() for t in caches):
            raise ValueError(f"attention_layer: {kind} caches must be contiguous {kind} on the CPU, got "
                             f"{k_cache.dtype} {k_cache.device} / {v_cache.dtype} {v_cache.device}")
        caches = (k_scale, v_scale) if quantized else ()
    return _held(AttentionLayer(D, norm_w.data_ptr(), eps, _qmat(wqkv), _ptr(bqkv), heads, G, d,
                                QK_NORMS[qk_norm], _ptr(q_norm_w), _ptr(k_norm_w), qk_eps, k_cache.data_ptr(),
                                v_cache.data_ptr(), _ptr(k_scale), _ptr(v_scale), KV_FORMATS.get(k_cache.dtype, -1),
                                bs, scale, _qmat(wo), _ptr(bo), mult),
                 norm_w, wqkv, bqkv, q_norm_w, k_norm_w, *caches, wo, bo, keep=(k_cache, v_cache))


def moe_layer(norm_w: torch.Tensor, eps: float, router_w: torch.Tensor, top_k: int, mode: str, renormalize: bool,
              gate_up: torch.Tensor | Blocks, down: torch.Tensor | Blocks, mult: float) -> MoELayer:
    """A layer's MoE block (routed experts, no shared expert) for `moe_block`, checked once; the experts float32
    or in blocks of one format."""
    D = norm_w.shape[0]
    E, I2, _ = gate_up.shape
    if (router_w.shape != (E, D) or gate_up.shape[2] != D or down.shape != (E, D, I2 // 2)
            or mode not in ROUTERS or not 0 < top_k <= min(E, 64)
            or isinstance(gate_up, Blocks) != isinstance(down, Blocks)
            or (isinstance(gate_up, Blocks) and gate_up.fmt != down.fmt)):
        raise ValueError(f"moe_layer: router {tuple(router_w.shape)}, gate_up {tuple(gate_up.shape)}, down "
                         f"{tuple(down.shape)} for hidden {D}, top-{top_k}, mode {mode!r}")
    return _held(MoELayer(D, norm_w.data_ptr(), eps, router_w.data_ptr(), E, top_k, mode == "topk_softmax",
                          bool(renormalize), _qmat(gate_up), _qmat(down), I2 // 2, mult),
                 norm_w, router_w, gate_up, down)


def decode_step(x: torch.Tensor, cos: torch.Tensor | None = None, sin: torch.Tensor | None = None,
                slots: torch.Tensor | None = None, table: torch.Tensor | None = None) -> DecodeStep:
    """A decode step's shared arguments: x [B, D] (updated in place by every block), cos/sin [B, d], slots [B]
    and block tables [B, nb] (int64). An MoE block reads only x: the rest may be None for it."""
    B = x.shape[0]
    if x.dim() != 2 or (slots is not None and (
            cos.shape != sin.shape or cos.shape[0] != B or slots.shape != (B,) or table.dim() != 2
            or table.shape[0] != B or slots.dtype is not torch.int64 or table.dtype is not torch.int64
            or not (slots.is_contiguous() and table.is_contiguous()))):
        raise ValueError(f"decode_step: x {tuple(x.shape)}, cos {cos if cos is None else tuple(cos.shape)}, slots "
                         f"{slots if slots is None else (tuple(slots.shape), slots.dtype)}, table "
                         f"{table if table is None else (tuple(table.shape), table.dtype)}")
    return _held(DecodeStep(x.data_ptr(), B, _ptr(cos), _ptr(sin), _ptr(slots), _ptr(table),
                            0 if table is None else table.shape[1]), x, cos, sin, keep=(slots, table))


def attention_block(layer: AttentionLayer, step: DecodeStep, mask: torch.Tensor) -> None:
    """One decode step of a layer's attention block, in place: x += mult * o_proj(attention), the new keys and
    values written to their slots. mask [B, nb * bs] bool: the key slots each sequence sees in this layer."""
    if (not step.slots or mask.shape != (step.B, step.nb * layer.bs) or mask.dtype is not torch.bool
            or not mask.is_contiguous()):
        raise ValueError(f"attention_block: mask {tuple(mask.shape)} {mask.dtype} for a step of {step.B} sequences "
                         f"of {step.nb} blocks of {layer.bs} (a step built with its slots and tables)")
    _check("attention_block", library().swarm_attention_block(ctypes.addressof(layer), ctypes.addressof(step),
                                                                mask.data_ptr()))


def moe_block(layer: MoELayer, step: DecodeStep) -> tuple[torch.Tensor, torch.Tensor]:
    """One decode step of a layer's MoE block, in place: x += mult * experts(norm(x)). Returns the routing,
    weights [B, K] float32 and ids [B, K] int64, as `route` would."""
    weights, ids = torch.empty(step.B, layer.K), torch.empty(step.B, layer.K, dtype=torch.int64)
    _check("moe_block", library().swarm_moe_block(ctypes.addressof(layer), ctypes.addressof(step),
                                                  weights.data_ptr(), ids.data_ptr()))
    return weights, ids


class DecodeModel(ctypes.Structure):
    """cpu.c's struct decode_model: a model's decode step as one native call (`swarm_decode_model`), from its
    tokens' ids to their logits: the embedding, every layer's attention block then its MoE block (as
    `attention_block` and `moe_block` run them one call each), the final norm and the head. Built once; holds
    the layers' structs and the tensors it points into."""

    _fields_ = [("L", _I), ("V", _I), ("D", _I), ("att", _P), ("moe", _P), ("windows", _P), ("embed", _P),
                ("embed_mult", _F), ("norm_w", _P), ("eps", _F), ("head", QMat), ("N", _I)]


class DecodeTokens(ctypes.Structure):
    """cpu.c's struct decode_tokens: a decode step's new tokens, their positions and block tables."""

    _fields_ = [("B", _I), ("ids", _P), ("pos", _P), ("table", _P), ("nb", _I), ("cos", _P), ("sin", _P), ("P", _I),
                ("logits", _I)]


def decode_model(attention: Sequence[AttentionLayer], moe: Sequence[MoELayer], windows: Sequence[int | None],
                 embed: torch.Tensor, embed_mult: float, norm_w: torch.Tensor, eps: float,
                 head: torch.Tensor | Blocks | None) -> DecodeModel:
    """A model's decode step for `decode`: one attention and one MoE block a layer, each layer's sliding window
    (None: none), the embedding [V, D], its multiplier, the final norm, and the head [N, D] (None: `decode`
    returns the normed hidden states and the caller computes the logits)."""
    L, (V, D) = len(attention), embed.shape
    if (not attention or len(moe) != L or len(windows) != L or len({m.K for m in moe}) != 1
            or any(a.D != D or m.D != D for a, m in zip(attention, moe, strict=True)) or norm_w.shape != (D,)
            or (head is not None and (head.dim() if isinstance(head, torch.Tensor) else len(head.shape)) != 2)
            or (head is not None and head.shape[1] != D) or len({(a.bs, a.d) for a in attention}) != 1
            or any(w is not None and w < 1 for w in windows)):
        raise ValueError(f"decode_model: {len(attention)} attention and {len(moe)} MoE blocks, {len(windows)} "
                         f"windows, embedding {tuple(embed.shape)}, norm {tuple(norm_w.shape)}, head "
                         f"{None if head is None else tuple(head.shape)}")
    att = (ctypes.c_void_p * L)(*map(ctypes.addressof, attention))
    moes = (ctypes.c_void_p * L)(*map(ctypes.addressof, moe))
    wins = (ctypes.c_int64 * L)(*(w or 0 for w in windows))
    struct = DecodeModel(L, V, D, ctypes.addressof(att), ctypes.addressof(moes), ctypes.addressof(wins),
                         embed.data_ptr(), embed_mult, norm_w.data_ptr(), eps,
                         QMat(0, None, None) if head is None else _qmat(head), 0 if head is None else head.shape[0])
    struct.K, struct.d = moe[0].K, attention[0].d
    return _held(struct, embed, norm_w, head, keep=(att, moes, wins, list(attention), list(moe)))


def decode(model: DecodeModel, ids: Sequence[int], positions: Sequence[int], tables: Sequence[Sequence[int]],
           cos: torch.Tensor, sin: torch.Tensor, logits: bool = True) -> tuple[torch.Tensor, ...]:
    """One decode step of B sequences through `model` (`decode_model`): their new tokens' ids, positions and block
    tables, and the rope table cos/sin [P, d] (row p for position p). Returns the logits [B, N] (or the normed
    hidden states [B, D]: for a model built without a head, or `logits` False) and every layer's routing,
    weights [L, B, K] float32 and ids [L, B, K] int64."""
    B, P = len(ids), cos.shape[0]
    if (len(positions) != B or len(tables) != B or not B or cos.shape != (P, model.d) or sin.shape != cos.shape
            or not (fits(cos) and fits(sin))):
        raise ValueError(f"decode: {B} ids, {len(positions)} positions, {len(tables)} tables, rope "
                         f"{tuple(cos.shape)} / {tuple(sin.shape)} for heads of {model.d}")
    nb = max(map(len, tables))
    flat = [*ids, *positions]
    for t in tables:  # (one int64 array, built from the lists: a few times cheaper than a tensor for a batch)
        flat += t
        flat += [0] * (nb - len(t))
    arrays = array.array("q", flat)
    at = arrays.buffer_info()[0]
    head = logits and model.N > 0
    step = DecodeTokens(B, at, at + 8 * B, at + 16 * B, nb, cos.data_ptr(), sin.data_ptr(), P, head)
    out = torch.empty(B, model.N if head else model.D)
    weights = torch.empty(model.L, B, model.K)
    routed = torch.empty(model.L, B, model.K, dtype=torch.int64)
    code = library().swarm_decode_model(ctypes.addressof(model), ctypes.addressof(step), out.data_ptr(),
                                        weights.data_ptr(), routed.data_ptr())
    if code == -1:
        raise ValueError(f"decode: a token outside the embedding's {model.V}, or a position outside the rope "
                         f"table's {P} or its block table's {nb} blocks (ids {list(ids)}, positions {list(positions)})")
    _check("decode", code)
    return out, weights, routed
