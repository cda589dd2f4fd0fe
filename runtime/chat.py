"""Chat messages as a prompt: through the tokenizer's chat template, and fitted into the model's context.

What every front door of the engine shares: the simulation's turns (`EngineModel`), the servers over MQTT and
HTTP, the game API and adapter training all turn `[{"role": ..., "content": ...}]` into prompt text this way.
"""

from __future__ import annotations


def render_chat(tokenizer, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
    """Chat messages as the model's prompt text: its chat template, or plain "role: content" blocks."""
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
    text = "".join(f"{m['role']}: {m['content']}\n\n" for m in messages)
    return text + "assistant: " if add_generation_prompt else text


def fit_prompt(engine, messages: list[dict[str, str]], max_tokens: int) -> list[int]:
    """The prompt's token ids, leaving out the oldest exchanges of the history (never the system
    message or the newest turn) until the prompt and its answer fit the model's context."""
    ids = engine.tokenizer.encode(render_chat(engine.tokenizer, messages))
    while len(ids) + max_tokens > engine.max_context and len(messages) > 3:
        messages = [messages[0], *messages[3:]]  # one (user, assistant) exchange less
        ids = engine.tokenizer.encode(render_chat(engine.tokenizer, messages))
    return ids
