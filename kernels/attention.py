"""Causal attention of new query tokens over a sequence's cached and new keys (torch reference).

The paged kernels also read an int8 cache (runtime/block_pool.py): with k_scale/v_scale [N, bs, G] given, a
key or value is its int8 values times its slot and head's scale. The reference dequantises the blocks it
gathers, so it is the float computation the quantised kernels are checked against.

Gemma 2 soft-caps the attention scores (score -> cap * tanh(score / cap)) before the mask and the softmax.
Only these torch kernels take `softcap`: the native and Triton ones do not, and `PagedBatch.attend` sends
a soft-capped layer here on every device.

Legend: Q new query tokens, S all key positions (cached + new), H query heads,
G key/value heads, R = H / G query heads per key/value head, d head dim, N pool blocks, bs block size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def softcapped_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float,
                         softcap: float) -> torch.Tensor:
    """Masked attention with soft-capped scores, which scaled_dot_product_attention cannot do.

    q [..., G, R, Q, d], k/v [..., G, 1, S, d], mask broadcastable to [..., G, R, Q, S] (True: visible)
    -> [..., G, R, Q, d]. Every query must see at least one key.
    """
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale  # [..., G, R, Q, S]
    scores = torch.tanh(scores / softcap) * softcap
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.matmul(scores.softmax(dim=-1), v)


def causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, window: int | None = None,
    softcap: float | None = None,
) -> torch.Tensor:
    """q [Q, H, d], k/v [S, G, d] with the Q queries at the last Q positions -> [Q, H, d].

    Query i (absolute position S - Q + i) sees keys j <= its position, and with a
    sliding window only keys with position > its position - window.
    """
    Q, S = q.shape[0], k.shape[0]
    qh, kh, vh = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)  # [H, Q, d], [G, S, d]
    H, G, d = qh.shape[0], kh.shape[0], q.shape[2]
    gqa = H != G
    if window is None and Q == S and softcap is None:
        out = F.scaled_dot_product_attention(qh, kh, vh, is_causal=True, scale=scale, enable_gqa=gqa)
    else:
        qpos = torch.arange(S - Q, S, device=q.device)[:, None]  # [Q, 1]
        kpos = torch.arange(S, device=q.device)[None, :]  # [1, S]
        mask = kpos <= qpos
        if window is not None:
            mask &= kpos > qpos - window
        if softcap is None:
            out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, scale=scale, enable_gqa=gqa)
        else:
            out = softcapped_attention(qh.view(G, H // G, Q, d), kh[:, None], vh[:, None], mask, scale,
                                       softcap).view(H, Q, d)
    return out.transpose(0, 1)  # [Q, H, d]


def gather_blocks(cache: torch.Tensor, cache_scale: torch.Tensor | None, blocks: torch.Tensor,
                  dtype: torch.dtype) -> torch.Tensor:
    """Whole blocks of a paged cache [N, bs, G, d] (int8 with its scales [N, bs, G], or float) -> [n, bs, G, d]
    in `dtype`. index_select copies whole blocks, far faster than 2-D indexing."""
    out = cache.index_select(0, blocks)
    if cache_scale is None:
        if cache.dtype == torch.int8:
            raise ValueError("an int8 KV cache needs its scales (k_scale, v_scale)")
        return out.to(dtype)  # (a float16 cache under float32 queries: widened, exactly)
    return (out.float() * cache_scale.index_select(0, blocks)[..., None]).to(dtype)


def decode_attention(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_table: torch.Tensor,
    mask: torch.Tensor, scale: float, k_scale: torch.Tensor | None = None, v_scale: torch.Tensor | None = None,
    softcap: float | None = None,
) -> torch.Tensor:
    """One new query per sequence over paged keys/values.

    q [B, H, d]; k_cache/v_cache [N, bs, G, d]; block_table [B, nb] (padded);
    mask [B, S] with S = nb * bs, True where a key is visible -> [B, H, d].
    An int8 cache comes with its scales k_scale/v_scale [N, bs, G].
    The H/G query heads sharing a key/value head ride along as extra query rows
    of that head, so grouped-query attention needs no copies of K and V.
    """
    B, nb = block_table.shape
    bs, G, d = k_cache.shape[1:]
    H = q.shape[1]
    blocks = block_table.flatten()
    k = gather_blocks(k_cache, k_scale, blocks, q.dtype).view(B, nb * bs, G, d).transpose(1, 2)  # [B, G, S, d]
    v = gather_blocks(v_cache, v_scale, blocks, q.dtype).view(B, nb * bs, G, d).transpose(1, 2)
    if softcap is not None:
        out = softcapped_attention(q.view(B, G, H // G, 1, d), k[:, :, None], v[:, :, None],
                                   mask[:, None, None, None, :], scale, softcap)  # [B, G, R, 1, d]
        return out.reshape(B, H, d)
    out = F.scaled_dot_product_attention(
        q.view(B, G, H // G, d), k, v, attn_mask=mask[:, None, None, :], scale=scale
    )  # [B, G, H/G, d]
    return out.reshape(B, H, d)


def gather_context(cache: torch.Tensor, blocks: torch.Tensor, length: int,
                   cache_scale: torch.Tensor | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The first `length` slots of a sequence's blocks: cache [N, bs, G, d], blocks [nb] -> [length, G, d]
    (an int8 cache dequantised with its scales [N, bs, G] into `dtype`)."""
    return gather_blocks(cache, cache_scale, blocks, dtype).flatten(0, 1)[:length]


def prefill_attention(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, blocks: torch.Tensor, context_len: int,
    scale: float, window: int | None = None, k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None, softcap: float | None = None,
) -> torch.Tensor:
    """A prefill chunk of one sequence over its paged keys/values (cached prefix + the chunk itself).

    q [Q, H, d] at the last Q of the sequence's context_len positions; k_cache/v_cache [N, bs, G, d]
    (int8 with k_scale/v_scale [N, bs, G]); blocks [nb], the sequence's block table -> [Q, H, d].
    Causal, with an optional sliding window.
    """
    k = gather_context(k_cache, blocks, context_len, k_scale, q.dtype)
    v = gather_context(v_cache, blocks, context_len, v_scale, q.dtype)
    return causal_attention(q, k, v, scale, window, softcap)
