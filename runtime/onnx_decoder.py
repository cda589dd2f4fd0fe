"""The plain model as a decoder with an explicit KV cache: the graph `swarm export-onnx` traces.

`OnnxDecoder(model)` takes the inputs optimum and onnxruntime-genai use (`input_ids`,
`attention_mask`, `position_ids` and each layer's past keys and values) and returns the logits of
every new token and each layer's present keys and values (past plus new). It runs the model's own
forward: the rows of the batch are flattened into the model's flat token list, and the attention
layers talk to a `PastKV` instead of the paged pool. Two things differ from the engine, both exact:

- attention is plain masked softmax attention over the past and new keys (`PastKV.attend`), with
  the mask built from `attention_mask` (so rows may be left-padded), causality and the layer's
  sliding window;
- the routed experts run densely (`DenseMoE`): every expert on every token, mixed by the routing
  weights, which are zero for the experts a token did not pick. The engine's grouped expert FFN
  sorts tokens by expert, which has data-dependent shapes and cannot be traced into a static graph.

Legend: B batch rows, S new tokens per row, P past tokens, L = P + S keys, T = B * S tokens,
H query heads, G key/value heads, R = H / G query heads per key/value head, d head dim, D hidden,
E experts, K top-k, I expert width, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from swarm.runtime.model import Model, MoE


class PastKV:
    """The `attend` of kv.PagedBatch for a padded batch whose past keys and values come in as tensors.

    Each layer's present keys/values ([B, G, L, d], past then new) are kept in `presents`.
    """

    def __init__(self, attention_mask: torch.Tensor, past: list[tuple[torch.Tensor, torch.Tensor]], B: int, S: int):
        self.B, self.S, self.past = B, S, past
        self.presents: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        L, device = attention_mask.shape[1], attention_mask.device
        self.key_pos = torch.arange(L, device=device)[None, :]  # [1, L]
        self.query_pos = (torch.arange(S, device=device) + (L - S))[:, None]  # [S, 1] new tokens are the last S of L
        self.visible = (self.key_pos <= self.query_pos)[None] & attention_mask[:, None, :].bool()  # [B, S, L]
        self._masks: dict[int | None, torch.Tensor] = {}

    def _mask(self, window: int | None) -> torch.Tensor:
        # With left padding, key index distances equal position distances between real tokens,
        # so the window can be applied on indices.
        mask = self._masks.get(window)
        if mask is None:
            mask = self.visible if window is None else self.visible & (self.key_pos > self.query_pos - window)
            self._masks[window] = mask
        return mask

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
               window: int | None, softcap: float | None = None) -> torch.Tensor:
        """q [T, H, d], k/v [T, G, d] of the new tokens -> [T, H, d]."""
        B, S = self.B, self.S
        H, G, d = q.shape[1], k.shape[1], k.shape[2]
        past_k, past_v = self.past[layer]
        k = torch.cat([past_k, k.view(B, S, G, d).transpose(1, 2)], dim=2)  # [B, G, L, d]
        v = torch.cat([past_v, v.view(B, S, G, d).transpose(1, 2)], dim=2)
        self.presents[layer] = (k, v)
        # The R query heads of a key/value head ride along as one more axis: no copies of K and V.
        q = q.view(B, S, G, H // G, d).permute(0, 2, 3, 1, 4)  # [B, G, R, S, d]
        scores = torch.matmul(q, k[:, :, None].transpose(-1, -2)) * scale  # [B, G, R, S, L]
        if softcap is not None:  # Gemma 2
            scores = torch.tanh(scores / softcap) * softcap
        # The lowest finite value, not -inf: a padding query sees no key, and its row must stay finite
        # (a NaN there would reach every later token through its cached keys and values).
        scores = scores.masked_fill(~self._mask(window)[:, None, None], torch.finfo(scores.dtype).min)
        out = torch.matmul(scores.softmax(dim=-1), v[:, :, None])  # [B, G, R, S, d]
        return out.permute(0, 3, 1, 2, 4).reshape(B * S, H, d)


class DenseMoE(MoE):
    """MoE whose routed experts all run on every token, mixed by the routing weights.

    Exact: an expert a token did not pick gets weight zero. It costs E / K times the expert FLOPs
    of the sparse path, and every step reads every expert's weights; in exchange no shape depends on
    the routing, and the experts are two plain matmuls, standard ops that every ONNX runtime has.
    """

    def experts(self, x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        E, I2, D = self.gate_up.shape  # I2 = 2I, gate and up
        picked = ids[..., None] == torch.arange(E, device=ids.device)  # [T, K, E] one-hot of each pick
        mix = (picked.to(x.dtype) * weights[..., None].to(x.dtype)).sum(1)  # [T, E], zero where not picked
        g, u = F.linear(x, self.gate_up.reshape(E * I2, D)).view(-1, E, I2).chunk(2, dim=-1)  # [T, E, I] each
        h = F.silu(g) * u * mix[..., None]  # [T, E, I]
        # down as one [D, E*I] matrix: the sum over experts happens inside the matmul
        return F.linear(h.reshape(-1, E * (I2 // 2)), self.down.permute(1, 0, 2).reshape(D, -1))  # [T, D]


@contextmanager
def dense_experts(model: nn.Module) -> Iterator[nn.Module]:
    """Run the model's MoE layers as `DenseMoE` inside the block (same weights), then restore them."""
    moes = [m for m in model.modules() if type(m) is MoE]
    for m in moes:
        m.__class__ = DenseMoE
    try:
        yield model
    finally:
        for m in moes:
            m.__class__ = MoE


class OnnxDecoder(nn.Module):
    """forward(input_ids [B, S], attention_mask [B, L], position_ids [B, S], past k0, v0, k1, v1, ...
    each [B, G, P, d]) -> (logits [B, S, V], present k0, v0, k1, v1, ... each [B, G, L, d]).

    A zero-length past (P = 0) is the first call.
    """

    def __init__(self, model: Model):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        B, S = input_ids.shape
        n = self.model.cfg.num_layers
        kv = PastKV(attention_mask, [(past[2 * i], past[2 * i + 1]) for i in range(n)], B, S)
        with dense_experts(self.model):
            hidden = self.model(input_ids.reshape(-1), position_ids.reshape(-1), kv)  # [T, D]
        logits = self.model.compute_logits(hidden).view(B, S, self.model.cfg.vocab_size)  # [B, S, V]
        return (logits, *(t for i in range(n) for t in kv.presents[i]))
