"""Writing what training made as standard Hugging Face folders: the model (config.json, 16-bit
safetensors, tokenizer.json, tokenizer_config.json with the chat template), which `transformers`
loads too, and LoRA adapters in the PEFT layout.

The model's tensors are cut back out of the runtime's fused parameters (qkv, gate_up, stacked
experts) with the same name map the loader assembles them from, so save and load are inverses.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer

from swarm.runtime.loader import parameter_parts
from swarm.runtime.model import Model

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def hf_tensors(model: Model, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """The checkpoint tensors (Hugging Face names) of `model`'s parameters, in `dtype`."""
    params = dict(model.named_parameters(remove_duplicate=False))
    out = {}
    for name, parts in parameter_parts(model.cfg).items():
        value = params[name].detach()
        if name.endswith(("mlp.gate_up", "mlp.down")) and len(parts) > 1:  # stacked experts
            E = value.shape[0]
            per = len(parts) // E
            pieces = []
            for e in range(E):
                pieces += value[e].split([p.shape[0] for p in parts[e * per : (e + 1) * per]])
        else:
            pieces = value.split([p.shape[0] for p in parts]) if len(parts) > 1 else [value]
        for part, piece in zip(parts, pieces, strict=True):
            assert tuple(piece.shape) == part.shape, (part.name, piece.shape, part.shape)
            out[part.name] = (piece - part.offset if part.offset else piece).to(dtype).contiguous()
    return out


def save_model(model: Model, config: dict, tokenizer: Tokenizer, folder: str | Path,
               dtype: torch.dtype = torch.float16) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = hf_tensors(model, dtype)
    if config.get("tie_word_embeddings"):
        tensors.pop("lm_head.weight", None)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps({**config, "torch_dtype": str(dtype).split(".")[-1]}, indent=2))
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<|bos|>", "eos_token": "<|im_end|>", "pad_token": "<|pad|>", "chat_template": CHATML,
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": config["max_position_embeddings"],
    }, indent=2))
    return folder


def save_adapter(weights: dict[str, torch.Tensor], rank: int, alpha: float, targets: list[str],
                 folder: str | Path, base: str, dtype: torch.dtype = torch.float16) -> Path:
    """A PEFT LoRA folder. `weights` maps PEFT module paths ("model.layers.0.self_attn.q_proj") with a
    ".lora_A" / ".lora_B" suffix to [r, in] / [out, r] matrices."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"base_model.model.{k}.weight": v.detach().to(dtype).contiguous() for k, v in weights.items()}
    save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": alpha, "lora_dropout": 0.0,
        "target_modules": targets, "bias": "none", "fan_in_fan_out": False, "use_rslora": False,
        "base_model_name_or_path": base,
    }, indent=2))
    return folder
