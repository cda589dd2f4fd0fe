"""Tokenizer of a checkpoint folder: `tokenizer.json` through the `tokenizers` library,
special tokens and the chat template from `tokenizer_config.json`; or of a GGUF file (`gguf_vocab`)."""

from __future__ import annotations

import functools
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Template, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer as _HFTokenizer

from swarm.runtime.bundled import is_gguf_file
from swarm.runtime.errors import CheckpointError
from swarm.runtime.loader import read_json


def _token_text(value: Any) -> str | None:
    # tokenizer_config.json writes special tokens as a string or as an AddedToken dict.
    if isinstance(value, dict):
        return value.get("content")
    return value


class Tokenizer:
    def __init__(self, tokenizer: _HFTokenizer, config: dict[str, Any] | None = None,
                 chat_template: str | None = None):
        self._tok = tokenizer
        config = config or {}
        self.bos_token = _token_text(config.get("bos_token"))
        self.eos_token = _token_text(config.get("eos_token"))
        self.pad_token = _token_text(config.get("pad_token"))
        self.chat_template = chat_template or config.get("chat_template")
        if isinstance(self.chat_template, list):  # named templates: use "default"
            named = {t["name"]: t["template"] for t in self.chat_template}
            self.chat_template = named.get("default", next(iter(named.values()), None))
        self.bos_token_id = self.token_to_id(self.bos_token)
        self.eos_token_id = self.token_to_id(self.eos_token)
        self._compiled: tuple[str, Template] | None = None  # (template text, its compiled form)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> Tokenizer:
        """The tokenizer of a checkpoint folder or of a GGUF file."""
        return cls.from_gguf(path) if is_gguf_file(path) else cls.from_folder(path)

    @classmethod
    def from_gguf(cls, path: str | Path) -> Tokenizer:
        """The tokenizer, special tokens and chat template a GGUF file carries."""
        from swarm.runtime.gguf_file import read_gguf
        from swarm.runtime.gguf_vocab import gguf_tokenizer

        return cls(*gguf_tokenizer(read_gguf(path)))

    @classmethod
    def from_folder(cls, folder: str | Path) -> Tokenizer:
        folder = Path(folder)
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise CheckpointError(f"no tokenizer.json in {folder} (only fast tokenizers are supported)")
        try:
            tok = _HFTokenizer.from_file(str(path))
        except Exception as e:  # the tokenizers library raises a bare Exception on parse errors
            raise CheckpointError(f"cannot read {path}: {e}") from None
        config = {}
        cfg_path = folder / "tokenizer_config.json"
        if cfg_path.is_file():
            config = read_json(cfg_path)
        template = None
        if (folder / "chat_template.jinja").is_file():
            template = (folder / "chat_template.jinja").read_text()
        return cls(tok, config, template)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def to_str(self) -> str:
        """The `tokenizer.json` text, for libraries that build their own view of the vocabulary."""
        return self._tok.to_str()

    @functools.cached_property
    def max_token_chars(self) -> int:
        """The longest vocabulary entry, in characters of its stored form (byte-level entries hold one
        character per byte): a text of n characters is at least n / this many tokens, which bounds a prompt's
        length without tokenizing it."""
        return max(map(len, self._tok.get_vocab(with_added_tokens=True)), default=1)

    def token_to_id(self, token: str | None) -> int | None:
        return None if token is None else self._tok.token_to_id(token)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True,
                            **extra: Any) -> str:
        """Render chat messages with the checkpoint's template (the text, not yet tokenized)."""
        if not self.chat_template:
            raise CheckpointError("this tokenizer has no chat template (tokenizer_config.json: chat_template)")
        try:
            if self._compiled is None or self._compiled[0] != self.chat_template:  # compiling costs ~2 ms a call
                self._compiled = (self.chat_template, _jinja().from_string(self.chat_template))
            return self._compiled[1].render(messages=messages, add_generation_prompt=add_generation_prompt,
                                   bos_token=self.bos_token or "", eos_token=self.eos_token or "", **extra)
        except TemplateError as e:
            raise CheckpointError(f"the chat template failed to render: {e}") from None


def _raise(message: str):
    raise TemplateError(message)


def _jinja() -> ImmutableSandboxedEnvironment:
    # The same environment settings chat templates are written against.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    env.filters["tojson"] = lambda v, indent=None: json.dumps(v, indent=indent, ensure_ascii=False)
    return env
