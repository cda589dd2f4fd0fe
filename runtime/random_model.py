"""Write a small random-weight checkpoint folder in the Hugging Face layout.

Used by the quick start (a real run of the engine before the bundled model
exists), by tests that need a model without `transformers`, and by
benchmarks that need a realistic small shape. The tokenizer is a byte-level
BPE trained here, in a second, on generated text.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from swarm.runtime.config import ModelConfig
from swarm.runtime.loader import parameter_parts

SPECIAL = ["<|pad|>", "<|bos|>", "<|eos|>", "<|im_start|>", "<|im_end|>"]
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_WORDS = (
    "the a village tavern square mill market innkeeper baker smith guard farmer merchant bard child "
    "walks talks sells buys bakes sings tells asks waits gives hears sees knows meets rests works "
    "bread ale coin news rumour gathering evening morning night road river bridge well door fire "
    "quiet busy warm cold old young kind sly curious tired happy wary to from at in on with and but "
    "once upon time there was who said that will go come see"
).split()


def _corpus(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 14))).capitalize() + "." for _ in range(n)]


def train_tokenizer(vocab_size: int, seed: int = 0) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus(4000, seed), trainer)
    return tok


def tiny_config(family: str = "qwen3_moe", vocab_size: int = 512, hidden_size: int = 64, num_layers: int = 2,
                num_heads: int = 4, num_kv_heads: int = 2, num_experts: int = 4, top_k: int = 2,
                intermediate_size: int = 128, max_position_embeddings: int = 2048) -> dict:
    """A Hugging Face config.json dict for a small model of the given family."""
    cfg = {
        "model_type": family, "vocab_size": vocab_size, "hidden_size": hidden_size,
        "num_hidden_layers": num_layers, "num_attention_heads": num_heads, "num_key_value_heads": num_kv_heads,
        "intermediate_size": intermediate_size, "max_position_embeddings": max_position_embeddings,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": False,
        "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32",
    }
    if family in ("qwen2_moe", "qwen3_moe"):
        cfg.update(num_experts=num_experts, num_experts_per_tok=top_k, moe_intermediate_size=intermediate_size,
                   norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[])
    elif family in ("mixtral", "granitemoe"):
        cfg.update(num_local_experts=num_experts, num_experts_per_tok=top_k)
    elif family == "olmoe":
        cfg.update(num_experts=num_experts, num_experts_per_tok=top_k)
    if family == "qwen3_moe" or family == "qwen3":
        cfg["head_dim"] = hidden_size // num_heads
    if family in ("gemma2", "gemma3_text"):  # every other layer slides, over a window shorter than most prompts
        cfg.update(head_dim=hidden_size // num_heads, hidden_activation="gelu_pytorch_tanh", sliding_window=16,
                   query_pre_attn_scalar=hidden_size // num_heads, tie_word_embeddings=True,
                   layer_types=["full_attention" if i % 2 else "sliding_attention" for i in range(num_layers)])
    return cfg


def write_random_model(folder: str | Path, config: dict | None = None, seed: int = 0, std: float = 0.08) -> Path:
    """Create `folder` with config.json, model.safetensors, tokenizer.json and tokenizer_config.json."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = config or tiny_config()
    cfg = ModelConfig.from_hf(config)
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for parts in parameter_parts(cfg).values():
        for part in parts:
            if part.name.endswith("norm.weight") or part.name.endswith("layernorm.weight"):
                tensors[part.name] = 1.0 - part.offset + 0.1 * torch.randn(part.shape, generator=gen)
            else:
                tensors[part.name] = std * torch.randn(part.shape, generator=gen)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    tok = train_tokenizer(cfg.vocab_size, seed)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<|bos|>", "eos_token": "<|im_end|>", "pad_token": "<|pad|>", "chat_template": CHATML,
    }, indent=2))
    return folder
