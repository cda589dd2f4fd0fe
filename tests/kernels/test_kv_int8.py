"""Attention over an int8 KV cache (values plus a float32 scale per slot and head, runtime/block_pool.py): the
native kernels against the torch reference, which dequantises the blocks it gathers, and the quantise-and-store
kernel against `quantize_int8` bit for bit. The Triton kernels are checked in tests/kernels/test_triton.py."""

import pytest
import torch

from swarm.kernels import attention
from swarm.kernels.native import build, ops
from swarm.runtime.block_pool import dequantize_int8, quantize_int8

pytestmark = pytest.mark.skipif(not build.available(), reason="the native CPU kernels cannot be built here")


def paged_int8(g, lens, G, d, bs, spare=3):
    """A shuffled int8 paged cache holding sequences of `lens` tokens:
    (k, v, k_scale, v_scale, table [B, nb], lens [B, 1]), keys and values quantised from normal draws."""
    B, nb = len(lens), max(-(-n // bs) for n in lens)
    N = B * nb + spare
    k, ks = quantize_int8(torch.randn(N, bs, G, d, generator=g) * 2)
    v, vs = quantize_int8(torch.randn(N, bs, G, d, generator=g))
    ks[0, 0, 0] = 0.0  # an all-zero key somewhere (scale 0)
    table = torch.randperm(N, generator=g)[: B * nb].view(B, nb)
    return k, v, ks, vs, table, torch.tensor(lens)[:, None]


def decode_mask(table, bs, n, window):
    pos = torch.arange(table.shape[1] * bs)[None]
    mask = pos < n
    if window is not None:
        mask &= pos >= n - window
    return mask


@pytest.mark.parametrize("H,G,d,bs,lens", [(6, 2, 64, 16, [5, 40, 17]), (4, 4, 16, 4, [1, 9]),
                                           (8, 1, 12, 8, [7, 20, 3]), (4, 2, 128, 16, [130, 64]),
                                           (4, 2, 64, 16, [300] * 3)])
@pytest.mark.parametrize("window", [None, 6])
def test_decode_attention_int8_matches_the_dequantised_float_reference(H, G, d, bs, lens, window):
    g = torch.Generator().manual_seed(len(lens) + d)
    k, v, ks, vs, table, n = paged_int8(g, lens, G, d, bs)
    mask = decode_mask(table, bs, n, window)
    q = torch.randn(len(lens), H, d, generator=g)
    got = ops.decode_attention(q, k, v, table, mask, 0.125, ks, vs)
    ref = attention.decode_attention(q, dequantize_int8(k, ks), dequantize_int8(v, vs), table, mask, 0.125)
    assert torch.allclose(got, ref, atol=2e-6, rtol=1e-5), (got - ref).abs().max()
    # the torch reference's own int8 path dequantises the same way
    assert torch.equal(attention.decode_attention(q, k, v, table, mask, 0.125, ks, vs), ref)


# chunks after a cached prefix, whole sequences, one token; tails in d, in the block size and in the query tile
@pytest.mark.parametrize("H,G,d,bs,Q,S", [(6, 2, 64, 16, 37, 100), (4, 4, 20, 16, 7, 40), (8, 1, 12, 5, 23, 23),
                                          (3, 1, 16, 16, 1, 17), (4, 2, 128, 16, 130, 130)])
@pytest.mark.parametrize("window", [None, 6])
def test_prefill_attention_int8_matches_the_dequantised_float_reference(H, G, d, bs, Q, S, window):
    g = torch.Generator().manual_seed(Q + d)
    k, v, ks, vs, table, _ = paged_int8(g, [S], G, d, bs)
    q = torch.randn(Q, H, d, generator=g)
    got = ops.prefill_attention(q, k, v, table[0], S, 0.3, window, ks, vs)
    ref = attention.prefill_attention(q, dequantize_int8(k, ks), dequantize_int8(v, vs), table[0], S, 0.3, window)
    assert torch.allclose(got, ref, atol=1e-5, rtol=1e-5), (got - ref).abs().max()
    assert torch.equal(attention.prefill_attention(q, k, v, table[0], S, 0.3, window, ks, vs), ref)


def test_int8_attention_is_close_to_the_unquantised_float_cache():
    """What quantising costs the attention output: a per-head max-abs scale keeps it within about 1% here."""
    g = torch.Generator().manual_seed(11)
    B, H, G, d, bs, n = 4, 4, 2, 64, 16, 200
    kf, vf = torch.randn(B * 13, bs, G, d, generator=g), torch.randn(B * 13, bs, G, d, generator=g)
    (k, ks), (v, vs) = quantize_int8(kf), quantize_int8(vf)
    table = torch.randperm(B * 13, generator=g)[: B * 13].view(B, 13)
    mask = decode_mask(table, bs, torch.full((B, 1), n), None)
    q = torch.randn(B, H, d, generator=g)
    exact = ops.decode_attention(q, kf, vf, table, mask, d**-0.5)
    got = ops.decode_attention(q, k, v, table, mask, d**-0.5, ks, vs)
    err = (got - exact).abs().max().item() / exact.abs().max().item()
    assert err < 0.02, err


def test_decode_attention_int8_is_batch_invariant():
    g = torch.Generator().manual_seed(3)
    k, v, ks, vs, table, n = paged_int8(g, [33, 70, 5], 2, 32, 16)
    mask = decode_mask(table, 16, n, None)
    q = torch.randn(3, 4, 32, generator=g)
    batched = ops.decode_attention(q, k, v, table, mask, 0.2, ks, vs)
    alone = ops.decode_attention(q[1:2], k, v, table[1:2], mask[1:2], 0.2, ks, vs)
    assert torch.equal(alone[0], batched[1])


def test_int8_cache_arguments_are_checked():
    g = torch.Generator().manual_seed(4)
    k, v, ks, vs, table, n = paged_int8(g, [20], 2, 16, 8)
    mask = decode_mask(table, 8, n, None)
    q = torch.randn(1, 4, 16, generator=g)
    with pytest.raises(ValueError, match="needs its scales"):  # no scales: the torch kernel refuses
        ops.decode_attention(q, k, v, table, mask, 0.25)
    with pytest.raises(ValueError, match="scales"):
        ops.decode_attention(q, k, v, table, mask, 0.25, ks[:, :4], vs)
    with pytest.raises(ValueError, match="scales"):
        ops.prefill_attention(q[0:1], k.float(), v.float(), table[0], 20, 0.25, None, ks, vs)


@pytest.mark.parametrize("T,G,d", [(1, 2, 64), (37, 4, 20), (600, 2, 64)])
def test_store_int8_equals_quantize_int8_bit_for_bit(T, G, d):
    g = torch.Generator().manual_seed(T)
    qkv = torch.randn(T, (4 + 2 * G) * d, generator=g) * torch.rand(T, 1, generator=g) * 5
    qkv[0, 4 * d : (4 + G) * d] = 0.0  # an all-zero row: scale 0, values 0
    half = qkv[-1, (3 + G) * d : (4 + G) * d]  # the last token's last head: scale 1, ties rounded to even
    half.zero_()
    half[:4] = torch.tensor([127.0, 2.5, -3.5, 0.5])
    x = qkv[:, 4 * d : (4 + G) * d].view(T, G, d)  # the keys of a fused projection: rows inside a wider tensor
    N = T + 5
    cache, scales = torch.zeros(N, 1, G, d, dtype=torch.int8), torch.zeros(N, 1, G)
    slots = torch.randperm(N, generator=g)[:T]
    assert ops.store_int8(x, slots, cache, scales)
    values, scale = quantize_int8(x)
    assert torch.equal(cache.view(N, G, d)[slots], values)
    assert torch.equal(scales.view(N, G)[slots], scale)
    assert scale[0, 0] == 0 and values[0, 0].eq(0).all()
    assert scale[-1, -1] == 1 and values[-1, -1, :4].tolist() == [127, 2, -4, 0]
    assert not ops.store_int8(x.double(), slots, cache, scales)  # not what the C code takes: the caller's torch
