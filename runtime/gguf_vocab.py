"""The tokenizer a GGUF file carries, rebuilt as a `tokenizers` byte-level BPE.

GGUF stores a GPT-2-style BPE as its token list, merge list and token types, plus a pre-tokenizer name
(`tokenizer.ggml.pre`) that stands for the regular expressions llama.cpp splits text with before merging.
Each supported name is rebuilt here as the `tokenizers` pre-tokenizer that splits the same way; any other
name, and any other tokenizer model (SentencePiece `llama`, WordPiece `bert`, ...), is refused rather than
tokenized differently from the model's training.
"""

from __future__ import annotations

from typing import Any

from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors
from tokenizers import Tokenizer as _HFTokenizer

from swarm.runtime.errors import CheckpointError
from swarm.runtime.gguf_file import GGUFFile

# llama.cpp's splitting expressions, as the Hugging Face tokenizers of the same models write them
_GPT2 = None  # ByteLevel's own expression: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)
_QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
          r"\s+(?!\S)|\s+")
_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
           r"\s*[\r\n]+|\s+(?!\S)|\s+")

# tokenizer.ggml.pre -> (split first, digits one by one first, whole-text expression)
PRE_TOKENIZERS: dict[str, tuple[bool, str | None]] = {
    "gpt-2": (False, _GPT2),
    "smollm": (True, _GPT2),  # SmolLM, SmolLM2: every digit alone, then GPT-2's expression
    "starcoder": (True, _GPT2),
    "qwen2": (False, _QWEN2),  # Qwen2, Qwen2.5, Qwen3 (and their MoE models)
    "deepseek-r1-qwen": (False, _QWEN2),
    "llama-bpe": (False, _LLAMA3),  # Llama 3
}

# token types (llama.cpp's llama_token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def _pre_tokenizer(pre: str) -> Any:
    digits, expr = PRE_TOKENIZERS[pre]
    steps = []
    if digits:
        steps.append(pre_tokenizers.Digits(individual_digits=True))
    if expr is None:
        steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True))
    else:
        steps.append(pre_tokenizers.Split(Regex(expr), behavior="isolated", invert=False))
        steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False))
    return steps[0] if len(steps) == 1 else pre_tokenizers.Sequence(steps)


def _merges(f: GGUFFile) -> list[tuple[str, str]]:
    pairs = []
    for merge in f.get("tokenizer.ggml.merges"):
        pair = merge.split(" ")
        if len(pair) != 2:
            raise CheckpointError(f"{f.path}: tokenizer merge {merge!r} is not two tokens separated by a space")
        pairs.append((pair[0], pair[1]))
    return pairs


def gguf_tokenizer(f: GGUFFile) -> tuple[_HFTokenizer, dict[str, Any], str | None]:
    """The file's tokenizer, its special tokens as tokenizer_config.json would name them, its chat template."""
    kind = f.get("tokenizer.ggml.model", None)
    if kind != "gpt2":
        raise CheckpointError(f"{f.path}: tokenizer.ggml.model {kind!r} is not supported; GGUF files with a "
                              "byte-level BPE tokenizer ('gpt2': Llama 3, Qwen, SmolLM, ...) are")
    pre = f.get("tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZERS:
        raise CheckpointError(f"{f.path}: tokenizer.ggml.pre {pre!r} is not supported (supported: "
                              f"{', '.join(PRE_TOKENIZERS)}): its text would split differently from the model's "
                              "training")
    tokens: list[str] = f.get("tokenizer.ggml.tokens")
    types: list[int] = f.get("tokenizer.ggml.token_type", [NORMAL] * len(tokens))
    vocab: dict[str, int] = {}
    for i, token in enumerate(tokens):
        if vocab.setdefault(token, i) != i:
            raise CheckpointError(f"{f.path}: the token {token!r} is in the vocabulary twice (ids {vocab[token]} "
                                  f"and {i})")
    tok = _HFTokenizer(models.BPE(vocab, _merges(f), ignore_merges=pre == "llama-bpe"))
    tok.pre_tokenizer = _pre_tokenizer(pre)
    tok.decoder = decoders.ByteLevel()
    # control tokens are special (skipped when decoding), user-defined ones are text; both match whole in a
    # prompt, before it is split
    if len(types) != len(tokens):
        raise CheckpointError(f"{f.path}: {len(tokens)} tokens but {len(types)} token types")
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, k in zip(tokens, types, strict=True) if k == CONTROL])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t, k in zip(tokens, types, strict=True)
                    if k == USER_DEFINED])

    def token(key: str) -> str | None:
        i = f.get(f"tokenizer.ggml.{key}_token_id", None)
        return tokens[i] if i is not None and 0 <= i < len(tokens) else None

    bos, eos = token("bos"), token("eos")
    add_bos = f.get("tokenizer.ggml.add_bos_token", pre == "llama-bpe")
    add_eos = f.get("tokenizer.ggml.add_eos_token", False)
    single = [t for t, add in ((bos, add_bos), ("$A", True), (eos, add_eos)) if add and t is not None]
    if len(single) > 1:
        specials = [(t, vocab[t]) for t in single if t != "$A"]
        tok.post_processor = processors.TemplateProcessing(single=" ".join(single), special_tokens=specials)
    config = {"bos_token": bos, "eos_token": eos, "pad_token": token("padding")}
    return tok, config, f.get("tokenizer.chat_template", None)
