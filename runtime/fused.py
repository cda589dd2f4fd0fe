"""Fused decode blocks on the CPU: a decode-only step runs each layer's attention block and MoE block as one
native call each, or all its layers as one.

Measured on the benchmark model at batch 32 (benchmarks/engine.py), a decode step spent about 1.5 ms of Python
and torch glue between its 75 kernel calls even with every kernel replaced by a no-op, and more in a real
step, where the kernels' streaming has pushed the interpreter out of the caches. A fused block is one C call
over one OpenMP region: the same kernels in the same order (RMSNorm, the fused qkv projection, q/k norms,
rotary, the KV write, paged attention, o_proj and the residual; RMSNorm, router, routing, experts and the
residual), so its output equals the modules' bit for bit. On an int8 pool the block quantises the new keys and
values into their slots with the kernel `KVPool.write` uses, and its attention reads int8 as the op does.

When every block of every layer fuses (and the embedding and final norm are plain), a step goes from its tokens'
ids to their logits in one native call (`FusedDecode.run`, `swarm_decode_model`: the embedding and rope lookups,
the slots and key masks from the block tables, the same blocks in the same order, the final norm and the head,
without a return to Python between them; a head the C code does not compute, or more rows than it takes, leaves
the logits to the model's `compute_logits`). Measured on the benchmark model at one sequence, Q4_0, that took the
step from about 790 to 660 us: the Python around the layers' call (the step's PagedBatch, the embedding and rope
lookups, the final norm and the head's wrapper) cost more than a tenth of the step. `pump`,
which stops between layers to keep a frame's budget, still runs them a block a call.

Applied as a pass over the plain model, like the CUDA graphs: `FusedDecode(model).layers` stands in for
`model.layers` in the model runner's block-by-block pass (runtime/runner.py). A block runs fused only where it
is what the C code computes: float32 weights on the CPU (or weights in blocks, which the C code reads in place
as the separate ops do), plain `Linear` or `BlockLinear` projections (no LoRA wrapper), no qkv clipping,
rope over whole heads from the model's one rope table, no attention soft-capping and no norm on the block's
output (so Phi-3's partial rotary and every Gemma 2/3 layer run their modules), and for the MLP a routed MoE
without a shared expert; anything else runs its modules. That is decided when the pass is built (checking every
call cost 0.15 ms a step); the model runner (runtime/runner.py) builds it again when LoRA wraps a projection
(`LoRAManager.version` moves), as it drops its CUDA graphs. Prefill and mixed steps always run the modules.
"""

from __future__ import annotations

import torch

from swarm.kernels import registry
from swarm.kernels.native import ops as native
from swarm.runtime.block_pool import KVPool
from swarm.runtime.kv import PagedBatch
from swarm.runtime.model import DecoderLayer, Linear, Model, MoE, RMSNorm
from swarm.runtime.quant import BlockLinear, BlockMoE


def _plain(*modules) -> bool:
    """Every module is exactly the class the C code reproduces (a LoRA or torch-int8 wrapper is not)."""
    return all(type(m) in (Linear, BlockLinear, RMSNorm) for m in modules)


def _weight(linear: Linear | BlockLinear):
    """What the C code reads of a projection: its float32 weight, or its blocks."""
    return linear.blocks if type(linear) is BlockLinear else linear.weight


def _experts(moe: MoE) -> tuple:
    """(gate_up, down) as the C code reads them: float32 tensors, or blocks."""
    return moe.expert_blocks if type(moe) is BlockMoE else (moe.gate_up, moe.down)


def _attention_fusable(layer: DecoderLayer, table: int) -> bool:
    """`table`: the index of the rope table the layer reads (the fused step holds only the first one)."""
    attn, norm = layer.attn, layer.attn_norm
    norms = (attn.q_norm, attn.k_norm) if attn.qk_norm != "none" else ()
    return (attn.clip is None and attn.softcap is None and attn.rotary_dim == attn.d and table == 0
            and layer.attn_out_norm is None and attn.H <= native.MAX_HEADS
            and _plain(norm, attn.qkv, attn.o_proj, *norms)
            and all(map(native.fits, (norm.weight, _weight(attn.qkv), attn.qkv.bias, _weight(attn.o_proj),
                                      attn.o_proj.bias, *(n.weight for n in norms)))))


def _moe_fusable(layer: DecoderLayer) -> bool:
    mlp, norm = layer.mlp, layer.mlp_norm
    return (type(mlp) in (MoE, BlockMoE) and mlp.shared is None and layer.mlp_out_norm is None
            and type(mlp.router) is Linear and _plain(norm) and mlp.router.bias is None
            and all(map(native.fits, (norm.weight, mlp.router.weight, *_experts(mlp)))))


class FusedLayer:
    """A decoder layer's `attend` and `feed_forward` for decode-only steps, each one native call where the block
    can be fused and its modules otherwise. Updates x in place."""

    def __init__(self, layer: DecoderLayer, owner: FusedDecode, pool: KVPool, table: int = 0):
        self.layer, self.owner = layer, owner
        a, norm, m = layer.attn, layer.attn_norm, layer.mlp
        self.attention = self.moe = None  # the blocks' native structs, built once (None: run the modules)
        if _attention_fusable(layer, table):
            normed = a.qk_norm != "none"
            self.attention = native.attention_layer(
                norm.weight, norm.eps, _weight(a.qkv), a.qkv.bias, a.H, a.qk_norm, a.q_norm.weight if normed else None,
                a.k_norm.weight if normed else None, a.q_norm.eps if normed else 0.0, pool.k[a.layer],
                pool.v[a.layer], a.scale, _weight(a.o_proj), a.o_proj.bias, layer.residual_multiplier,
                *pool.scales(a.layer))
        if _moe_fusable(layer):
            self.moe = native.moe_layer(layer.mlp_norm.weight, layer.mlp_norm.eps, m.router.weight, m.top_k, m.mode,
                                        m.renormalize, *_experts(m), layer.residual_multiplier)

    def attend(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, kv: PagedBatch) -> torch.Tensor:
        if self.attention is None:
            return self.layer.attend(x, cos, sin, kv)
        step = self.owner.step(x, cos, sin, kv)
        native.attention_block(self.attention, step, kv.decode_mask(self.layer.attn.window))
        return x

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.moe is None:
            return self.layer.feed_forward(x)
        # the routing for the engine's expert counts; set past nn.Module's __setattr__ (a plain attribute either way)
        object.__setattr__(self.layer.mlp, "last_ids", native.moe_block(self.moe, self.owner.step(x))[1])
        return x


def _head(model: Model):
    """What the C code reads of the model's head (None: the model's own `compute_logits` computes the logits)."""
    lm_head, cfg = model.lm_head, model.cfg
    if (_plain(lm_head) and lm_head.bias is None and cfg.logits_scaling == 1 and cfg.final_softcap is None
            and native.fits(_weight(lm_head))):
        return _weight(lm_head)
    return None


class FusedDecode:
    """The fused stand-ins for a model's layers, for the decode-only steps of an engine on the CPU. The blocks'
    structs point into the weights and the pool's caches: the engine's own for its life."""

    def __init__(self, model: Model, pool: KVPool):
        self.layers = [FusedLayer(layer, self, pool, table) for layer, table in zip(model.layers, model.layer_tables,
                                                                                     strict=True)]
        self.rotary = model.rotary
        self._moe = [layer.mlp for layer in model.layers]
        # every block fused, and a plain embedding and norm: a step may run from ids to logits in one native call
        self.whole = None
        if (all(f.attention is not None and f.moe is not None for f in self.layers) and _plain(model.norm)
                and native.fits(model.embed.weight) and native.fits(model.norm.weight)):
            self.whole = native.decode_model(
                [f.attention for f in self.layers], [f.moe for f in self.layers],
                [layer.attn.window for layer in model.layers], model.embed.weight, model.cfg.embedding_multiplier,
                model.norm.weight, model.norm.eps, _head(model))
        self._step: native.DecodeStep | None = None
        self._for: tuple = (None, None)  # the (x, batch) it was built for, held so neither id can be reused

    def step(self, x: torch.Tensor, cos: torch.Tensor | None = None, sin: torch.Tensor | None = None,
             kv: PagedBatch | None = None) -> native.DecodeStep:
        """The step's shared native arguments, built by its first fused block and reused while x (updated in
        place) and the batch stay the same. A block run by its modules returns a new x: the next fused block
        builds them again. An MoE block (kv None) needs only x."""
        x0, kv0 = self._for
        if x0 is not x or (kv is not None and kv0 is not kv):
            self._step = native.decode_step(x, cos, sin, kv.slots, kv.decode_table) if kv is not None \
                else native.decode_step(x)
            self._for = (x, kv)
        return self._step

    def run(self, ids: list[int], positions: list[int], tables: list[list[int]],
            rope: tuple[torch.Tensor, torch.Tensor], logits: bool) -> torch.Tensor:
        """A decode step of B sequences from their new tokens to their logits [B, V] in one native call (`whole`
        must be set): ids, positions and block tables each, and the rope table (`Rotary.table`) covering them.
        `logits` False, or a head the C code does not compute: the final normed hidden states [B, D] instead.
        Each MoE's routing is kept as its `last_ids`, as `FusedLayer.feed_forward` keeps it."""
        out, _, ids = native.decode(self.whole, ids, positions, tables, *rope, logits=logits)
        for mlp, layer_ids in zip(self._moe, ids.unbind(), strict=True):
            object.__setattr__(mlp, "last_ids", layer_ids)
        return out

    @staticmethod
    def supported(model: Model, device: torch.device) -> bool:
        """Whether any block of `model` could run fused on `device`: the native kernels must be the ones the
        registry picks there (not with SWARM_KERNELS=torch)."""
        if device.type != "cpu" or registry.backend_for(device) != "native":
            return False
        return any(_attention_fusable(layer, table) or _moe_fusable(layer)
                   for layer, table in zip(model.layers, model.layer_tables, strict=True))
