"""GGUF files written from Hugging Face folders the way llama.cpp's converter lays them out (tests only).

`write_gguf(folder, out, qtype)` writes the folder's model to `out` with the `gguf` package: llama.cpp's
metadata keys and tensor names, q/k rows permuted per head for llama-family models, experts stacked, 2-D
weights stored in `qtype` (norms stay F32, as llama.cpp keeps them). It returns the folder of the same
model with every weight replaced by what the file decodes to, the float reference the file must equal.
K-quants have no encoder in the `gguf` package: their blocks are random, with scales set so the weights
come out at a usual size.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

GLOBAL = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
          "lm_head.weight": "output.weight"}
ARCH = {"llama": "llama", "mixtral": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "qwen2_moe": "qwen2moe",
        "qwen3_moe": "qwen3moe", "phi3": "phi3"}
# block scale fields (f16) of the K-quants: byte offset in a block, the weights scale with them
K_SCALES = {"Q2_K": (80, 82), "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}


def _layer_names(model_type: str) -> dict[str, str]:
    moe = "block_sparse_moe" if model_type == "mixtral" else "mlp"
    names = {
        "input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
        **{f"self_attn.{h}_proj.{w}": f"attn_{g}.{w}" for h, g in (("q", "q"), ("k", "k"), ("v", "v"), ("o", "output"))
           for w in ("weight", "bias")},
        "self_attn.q_norm.weight": "attn_q_norm.weight", "self_attn.k_norm.weight": "attn_k_norm.weight",
        **{f"mlp.{p}_proj.{w}": f"ffn_{p}.{w}" for p in ("gate", "up", "down") for w in ("weight", "bias")},
        **{f"mlp.shared_expert.{p}_proj.weight": f"ffn_{p}_shexp.weight" for p in ("gate", "up", "down")},
        "mlp.shared_expert_gate.weight": "ffn_gate_inp_shexp.weight",
        f"{moe}.gate.weight": "ffn_gate_inp.weight",
        "self_attn.qkv_proj.weight": "attn_qkv.weight", "mlp.gate_up_proj.weight": "ffn_up.weight",  # Phi-3
    }
    return names


def _expert_names(model_type: str) -> dict[str, str]:
    if model_type == "mixtral":
        return {"w1": "gate", "w3": "up", "w2": "down"}
    return {"gate_proj": "gate", "up_proj": "up", "down_proj": "down"}


def permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's converter: each head's rows from (half, pair) order to (pair, half) order."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def encode(w: np.ndarray, qtype: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(the stored data, what it decodes to) for a float32 matrix in `qtype`."""
    import gguf

    kind = gguf.GGMLQuantizationType[qtype]
    if qtype == "F32":
        return w, w
    if qtype == "F16":
        return w.astype(np.float16), w.astype(np.float16).astype(np.float32)
    if qtype not in K_SCALES:
        data = gguf.quants.quantize(w, kind)
        return data, gguf.quants.dequantize(data, kind)
    data = rng.integers(0, 256, size=gguf.quants.quant_shape_to_byte_shape(w.shape, kind), dtype=np.uint8)
    block = gguf.GGML_QUANT_SIZES[kind][1]
    blocks = data.reshape(-1, block)

    def set_scale(value: float) -> np.ndarray:
        for at in K_SCALES[qtype]:
            blocks[:, at : at + 2] = np.full((blocks.shape[0], 1), value, np.float16).view(np.uint8)
        return gguf.quants.dequantize(data, kind)

    spread = set_scale(1.0).std()
    return data, set_scale(float(w.std() / spread))


def _tokenizer_metadata(writer, folder: Path, pre: str, vocab_size: int = 0) -> None:
    """The tokenizer of `folder`, its list padded to `vocab_size` tokens with user-defined "[PAD<id>]" ones, as
    llama.cpp's converter pads it to the model's embedding rows (llama.cpp refuses a file whose list is shorter;
    it prints a user-defined token's text, as swarm does)."""
    tok = json.loads((folder / "tokenizer.json").read_text())
    config = json.loads((folder / "tokenizer_config.json").read_text())
    vocab = tok["model"]["vocab"]
    added = {t["id"]: t for t in tok.get("added_tokens", [])}
    size = max([*vocab.values(), *added]) + 1
    tokens = [f"[PAD{i}]" for i in range(max(size, vocab_size))]
    types = [1] * size + [4] * (len(tokens) - size)
    for text, i in vocab.items():
        tokens[i] = text
    for i, t in added.items():
        tokens[i] = t["content"]
        types[i] = 3 if t["special"] else 4
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for key, add in (("bos_token", writer.add_bos_token_id), ("eos_token", writer.add_eos_token_id),
                     ("pad_token", writer.add_pad_token_id)):
        if config.get(key) in tokens:
            add(tokens.index(config[key]))
    writer.add_add_bos_token(False)
    if config.get("chat_template"):
        writer.add_chat_template(config["chat_template"])


def write_tokenizer_gguf(folder: Path, out: Path, pre: str) -> Path:
    """A GGUF file holding only the tokenizer of `folder` (what `Tokenizer.from_gguf` reads)."""
    import gguf

    w = gguf.GGUFWriter(str(out), "llama")
    _tokenizer_metadata(w, folder, pre)
    _finish(w)
    return out


def _finish(writer) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_gguf(folder: Path, out: Path, qtype: str = "F32", pre: str = "gpt-2", seed: int = 0,
               one_tensor_per_expert: bool = False, extra=None, types: dict[str, str] | None = None) -> Path:
    """Write `folder`'s model to the GGUF file `out`; return a float folder of the weights the file holds.
    `extra(writer)` may add metadata and tensors before the file is written; `types` stores the Hugging Face
    tensors whose names end with a key in that type instead of `qtype` (a mixed file)."""
    import gguf

    rng = np.random.default_rng(seed)
    cfg = json.loads((folder / "config.json").read_text())
    mt = cfg["model_type"]
    arch = ARCH[mt]
    heads, kv_heads = cfg["num_attention_heads"], cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
    w = gguf.GGUFWriter(str(out), arch)
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(cfg.get("rope_theta", 10000.0))
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    rope = {**(cfg.get("rope_parameters") or {}), **(cfg.get("rope_scaling") or {})}
    w.add_rope_dimension_count(int(head_dim * rope.get("partial_rotary_factor", cfg.get("partial_rotary_factor", 1))))
    if mt == "phi3" and cfg.get("sliding_window"):
        w.add_sliding_window(cfg["sliding_window"])
    w.add_vocab_size(cfg["vocab_size"])
    if mt in ("qwen3", "qwen3_moe"):
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    experts = cfg.get("num_experts") or cfg.get("num_local_experts") or 0
    if mt == "mixtral":
        w.add_feed_forward_length(cfg["intermediate_size"])
    elif cfg.get("intermediate_size"):
        w.add_feed_forward_length(cfg["intermediate_size"])
    if experts:
        w.add_expert_count(experts)
        w.add_expert_used_count(cfg["num_experts_per_tok"])
        if mt != "mixtral":
            w.add_expert_feed_forward_length(cfg["moe_intermediate_size"])
        if cfg.get("shared_expert_intermediate_size"):
            w.add_expert_shared_feed_forward_length(cfg["shared_expert_intermediate_size"])
    _tokenizer_metadata(w, folder, pre, cfg["vocab_size"])

    hf = {k: v.float().numpy() for k, v in load_file(folder / "model.safetensors").items()}
    decoded: dict[str, torch.Tensor] = {}
    layer_names, expert_names = _layer_names(mt), _expert_names(mt)
    stacked: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]] = {}

    def store(name: str, value: np.ndarray, heads: int = 0) -> tuple[np.ndarray, str]:
        kind = next((t for end, t in (types or {}).items() if name.endswith(end)), qtype)
        if value.ndim != 2 or "norm" in name or value.shape[1] % (256 if kind in K_SCALES else 32):
            kind = "F32"  # llama.cpp keeps norms (and rows no block divides) in float32
        data, back = encode(value, kind, rng)
        decoded[name] = torch.from_numpy(np.ascontiguousarray(back))
        return (permute(data, heads) if heads else data), kind

    for name, value in hf.items():
        if name in GLOBAL:
            _add(w, GLOBAL[name], *store(name, value))
            continue
        _, _, i, rest = name.split(".", 3)
        if ".experts." in rest:
            e, proj = rest.split(".experts.")[1].split(".")[:2]
            data, kind = store(name, value)
            part = expert_names[proj]
            if one_tensor_per_expert:
                _add(w, f"blk.{i}.ffn_{part}.{e}.weight", data, kind)
            else:
                stacked.setdefault(f"blk.{i}.ffn_{part}_exps.weight", {})[int(e)] = (data, kind)
            continue
        h = 0
        if arch == "llama" and rest.startswith("self_attn.q_proj."):
            h = heads
        elif arch == "llama" and rest.startswith("self_attn.k_proj."):
            h = kv_heads
        _add(w, f"blk.{i}.{layer_names[rest]}", *store(name, value, heads=h))
    for gguf_name, per_expert in stacked.items():
        _add(w, gguf_name, np.stack([per_expert[e][0] for e in sorted(per_expert)]), per_expert[0][1])
    if extra is not None:
        extra(w)
    _finish(w)

    ref = out.with_suffix(".reference")
    shutil.copytree(folder, ref, dirs_exist_ok=True)
    save_file(decoded, str(ref / "model.safetensors"))
    return ref


def _add(writer, name: str, data: np.ndarray, kind: str) -> None:
    import gguf

    if kind in ("F32", "F16"):
        writer.add_tensor(name, np.ascontiguousarray(data))
    else:
        writer.add_tensor(name, np.ascontiguousarray(data), raw_dtype=gguf.GGMLQuantizationType[kind])
