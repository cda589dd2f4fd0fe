"""Small random `transformers` reference models for every supported family (tests only)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from swarm.runtime.random_model import train_tokenizer

VOCAB = 320
BASE = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=256, bos_token_id=None, eos_token_id=None, pad_token_id=None)


def family_configs():
    """model_type -> (transformers config class name, kwargs). Every family's quirks switched on."""
    return {
        "llama": ("LlamaConfig", dict(intermediate_size=96, attention_bias=True, mlp_bias=True)),
        "qwen2": ("Qwen2Config", dict(intermediate_size=96, tie_word_embeddings=True)),
        "qwen3": ("Qwen3Config", dict(intermediate_size=96, head_dim=24)),
        "mixtral": ("MixtralConfig", dict(intermediate_size=48, num_local_experts=6, num_experts_per_tok=2)),
        "qwen2_moe": ("Qwen2MoeConfig", dict(
            intermediate_size=96, moe_intermediate_size=40, shared_expert_intermediate_size=56, num_experts=6,
            num_experts_per_tok=2, num_hidden_layers=3, mlp_only_layers=[1], norm_topk_prob=False)),
        "qwen3_moe": ("Qwen3MoeConfig", dict(
            intermediate_size=96, moe_intermediate_size=40, num_experts=8, num_experts_per_tok=2, head_dim=24,
            norm_topk_prob=True)),
        "olmoe": ("OlmoeConfig", dict(intermediate_size=40, num_experts=6, num_experts_per_tok=2, clip_qkv=4.0)),
        "granitemoe": ("GraniteMoeConfig", dict(
            intermediate_size=40, num_local_experts=6, num_experts_per_tok=2, embedding_multiplier=2.0,
            attention_multiplier=0.3, residual_multiplier=0.5, logits_scaling=2.5)),
        "mistral": ("MistralConfig", dict(intermediate_size=96, head_dim=24, sliding_window=8)),
        "phi3": ("Phi3Config", dict(intermediate_size=96, sliding_window=12,
                                    rope_parameters={"rope_type": "default", "rope_theta": 500.0,
                                                     "partial_rotary_factor": 0.5})),
        "gemma2": ("Gemma2Config", dict(
            intermediate_size=96, num_hidden_layers=3, head_dim=24, sliding_window=8, query_pre_attn_scalar=20,
            attn_logit_softcapping=3.0, final_logit_softcapping=5.0)),
        "gemma3_text": ("Gemma3TextConfig", dict(
            intermediate_size=96, num_hidden_layers=3, head_dim=24, sliding_window=8, sliding_window_pattern=2,
            query_pre_attn_scalar=20, final_logit_softcapping=5.0,
            rope_parameters={"full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1000.0},
                             "sliding_attention": {"rope_type": "default", "rope_theta": 50.0}})),
    }


def scale_weights(model: torch.nn.Module, seed: int = 0) -> None:
    """Spread the weights so routing and norms matter (the default init is nearly uniform)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=gen))
            elif "bias" in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
            elif ("gate" in name or "router" in name) and p.dim() == 2 and p.shape[0] <= 8:  # routers, shared gate
                p.copy_(0.6 * torch.randn(p.shape, generator=gen))
            else:
                fan_in = p.shape[-1]
                p.copy_(torch.randn(p.shape, generator=gen) * 1.2 / fan_in**0.5)


def build(folder: Path, model_type: str, seed: int = 0, shard: bool = False, **overrides):
    """Save a random reference model of `model_type` (plus a tokenizer) to `folder`; return the model."""
    import transformers

    cls_name, kwargs = family_configs()[model_type]
    config = getattr(transformers, cls_name)(**{**BASE, **kwargs, **overrides})
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    scale_weights(model, seed)
    model.save_pretrained(folder, max_shard_size="60KB" if shard else "5GB")
    train_tokenizer(VOCAB, seed).save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"bos_token": None, "eos_token": None}))
    return model
