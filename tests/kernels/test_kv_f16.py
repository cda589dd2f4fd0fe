"""Attention over a float16 KV cache under float32 queries (`EngineConfig(kv_dtype="float16")` on the CPU): the
native kernels widen each half exactly, so they equal the float32 kernels on the widened cache bit for bit, and
the torch reference (which widens the blocks it gathers) to float32 rounding."""

import pytest
import torch

from swarm.kernels import attention
from swarm.kernels.native import build, ops
from tests.kernels.test_kv_int8 import decode_mask

pytestmark = pytest.mark.skipif(not build.available(), reason="the native CPU kernels cannot be built here")


def paged_f16(g, lens, G, d, bs, spare=3):
    """A shuffled float16 paged cache holding sequences of `lens` tokens: (k, v, table [B, nb], lens [B, 1])."""
    B, nb = len(lens), max(-(-n // bs) for n in lens)
    N = B * nb + spare
    k = (torch.randn(N, bs, G, d, generator=g) * 2).half()
    v = torch.randn(N, bs, G, d, generator=g).half()
    table = torch.randperm(N, generator=g)[: B * nb].view(B, nb)
    return k, v, table, torch.tensor(lens)[:, None]


@pytest.mark.parametrize("H,G,d,bs,lens", [(6, 2, 64, 16, [5, 40, 17]), (4, 4, 16, 4, [1, 9]),
                                           (8, 1, 12, 8, [7, 20, 3]), (6, 2, 64, 16, [300])])
@pytest.mark.parametrize("window", [None, 6])
def test_decode_attention_f16_equals_the_float32_kernel_on_the_widened_cache(H, G, d, bs, lens, window):
    g = torch.Generator().manual_seed(len(lens) + d)
    k, v, table, n = paged_f16(g, lens, G, d, bs)
    mask = decode_mask(table, bs, n, window)
    q = torch.randn(len(lens), H, d, generator=g)
    got = ops.decode_attention(q, k, v, table, mask, 0.125)
    assert torch.equal(got, ops.decode_attention(q, k.float(), v.float(), table, mask, 0.125))
    ref = attention.decode_attention(q, k, v, table, mask, 0.125)  # the torch reference widens what it gathers
    assert torch.allclose(got, ref, atol=2e-6, rtol=1e-5), (got - ref).abs().max()


@pytest.mark.parametrize("H,G,d,bs,Q,S", [(6, 2, 64, 16, 37, 100), (4, 4, 20, 16, 7, 40), (8, 1, 12, 5, 23, 23),
                                          (3, 1, 16, 16, 1, 17)])
@pytest.mark.parametrize("window", [None, 6])
def test_prefill_attention_f16_equals_the_float32_kernel_on_the_widened_cache(H, G, d, bs, Q, S, window):
    g = torch.Generator().manual_seed(Q + d)
    k, v, table, _ = paged_f16(g, [S], G, d, bs)
    q = torch.randn(Q, H, d, generator=g)
    got = ops.prefill_attention(q, k, v, table[0], S, 0.3, window)
    assert torch.equal(got, ops.prefill_attention(q, k.float(), v.float(), table[0], S, 0.3, window))
    ref = attention.prefill_attention(q, k, v, table[0], S, 0.3, window)
    assert torch.allclose(got, ref, atol=1e-5, rtol=1e-5), (got - ref).abs().max()

