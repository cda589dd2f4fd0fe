"""`swarm train adapter`: a LoRA adapter for a persona, tuned on recorded demonstrations with PEFT.

The base is any checkpoint folder transformers loads (swarm-tiny by name, a Hugging Face folder) or a GGUF
file of a family transformers reads (its blocks decoded to float32 for training: the weights the engine
runs; the tokenizer and chat template are the file's own). Each
demonstration (a line of `swarm run --record-demos`, see `swarm.demonstrations`) becomes one example: the
chat messages through the model's chat template, with the loss on the assistant turn only (its answer and
the template's end of turn); the prompt's tokens are context. A share of the lines (whole lines, picked by a
seeded hash, `heldout`) is kept out of training and scored before, every tenth of the steps and at the end;
the adapter saved is the one with the lowest held-out loss (a small set is soon overfit), in PEFT's format:
`Engine.add_adapter(name, out)` and `PeftModel.from_pretrained` both read it.

The training loop is a plain AdamW loop over PEFT's model (transformers' `Trainer` adds nothing a loop this
size needs). LoRA goes on the attention projections by default: the engine runs LoRA on attention and dense
MLPs, and PEFT would also put MLP targets on a MoE's fused routed experts.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from swarm.demonstrations import Demonstration, read_demos
from swarm.runtime.bundled import is_gguf_file

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class AdapterRecipe:
    steps: int = 200
    rank: int = 8
    alpha: float = 16.0
    lr: float = 1e-3
    batch: int = 4  # examples per optimiser step
    heldout: float = 0.1  # share of the demonstrations kept out of training
    max_len: int = 2048  # longer examples are left out (and counted)
    targets: tuple[str, ...] = ATTENTION
    seed: int = 0


@dataclass
class Example:
    ids: list[int]
    start: int  # the first token the loss is taken on (the assistant's answer)


def _heldout(demo: Demonstration, share: float, seed: int) -> bool:
    key = f"{seed}:{demo.sim}:{demo.seed}:{demo.tick}:{demo.agent}:{demo.kind}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2**64 < share


def encode(tokenizer, demo: Demonstration) -> Example:
    """The demonstration through the chat template, tokenized as the engine tokenizes a prompt (`tokenizer`:
    swarm's); the loss starts where the assistant's turn does."""
    from swarm.runtime.chat import render_chat

    if not demo.messages or demo.messages[-1]["role"] != "assistant":
        raise ValueError(f"a demonstration must end with the assistant's turn ({demo.agent}, tick {demo.tick})")
    prompt = tokenizer.encode(render_chat(tokenizer, demo.messages[:-1]))
    full = tokenizer.encode(render_chat(tokenizer, demo.messages, add_generation_prompt=False))
    if full[: len(prompt)] != prompt:
        raise ValueError("the chat template renders the conversation with another prefix than its prompt: the "
                         "answer's tokens cannot be told apart")
    return Example(list(full), len(prompt))


def _loss(model, batch: Sequence[Example], pad: int) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over the batch's answer tokens, and how many there are.

    Rows are padded on the left, so every answer ends in the last column and the model computes logits for
    the last k positions only (`logits_to_keep`, k the longest answer + 1): over a 49k-token vocabulary, logits
    for every position of a batch of long prompts were most of a step's memory (SmolLM2 ran out of 24 GB)."""
    width = max(len(e.ids) for e in batch)
    keep = max(len(e.ids) - e.start for e in batch) + 1
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, e in enumerate(batch):
        left = width - len(e.ids)
        ids[i, left:] = torch.tensor(e.ids)
        labels[i, left + e.start :] = torch.tensor(e.ids[e.start :])
        mask[i, left:] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # each row counts from its first real token
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep).logits
    logits, target = logits[:, :-1].float(), labels[:, width - keep + 1 :]  # column j predicts column j + 1
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                             ignore_index=-100, reduction="sum")
    return loss, int((target != -100).sum())


@torch.no_grad()
def heldout_loss(model, examples: Sequence[Example], pad: int, batch: int = 8) -> float:
    """Mean loss (nats per answer token) over `examples`."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(examples), batch):
        loss, n = _loss(model, examples[i : i + batch], pad)
        total, count = total + float(loss), count + n
    return total / max(count, 1)


def train_adapter(base: str | Path, demos: Sequence[str | Path], out: str | Path,
                  recipe: AdapterRecipe = AdapterRecipe(),
                  progress: Callable[[int, int, float], None] | None = None) -> dict:
    """Tune a LoRA adapter on `base` from the demonstration files `demos`, save it to `out`; returns the summary
    (held-out loss before and after, counts, seconds)."""
    try:
        import peft
        import transformers
    except ImportError as e:
        raise RuntimeError("swarm train adapter needs PEFT and transformers: pip install 'swarm-sim[train]'") from e
    from swarm.runtime import model_path
    from swarm.runtime.tokenizer import Tokenizer

    t0 = time.perf_counter()
    folder = Path(model_path(base))
    rows = [d for path in demos for d in read_demos(path)]
    if not rows:
        raise ValueError(f"no demonstrations in {', '.join(map(str, demos))}")
    tokenizer = Tokenizer.from_pretrained(folder)  # a folder's, or a GGUF file's own
    if not tokenizer.chat_template:
        raise ValueError(f"{base} has no chat template: demonstrations are chat messages")
    train, held, too_long = [], [], 0
    for d in rows:
        e = encode(tokenizer, d)
        if len(e.ids) > recipe.max_len:
            too_long += 1
            continue
        (held if _heldout(d, recipe.heldout, recipe.seed) else train).append(e)
    if not train:
        raise ValueError("every demonstration went to the held-out share (or was too long): give more")
    torch.manual_seed(recipe.seed)
    model = _base_model(transformers, folder)
    config = peft.LoraConfig(r=recipe.rank, lora_alpha=recipe.alpha, lora_dropout=0.0,
                             target_modules=list(recipe.targets), task_type="CAUSAL_LM")
    model = peft.get_peft_model(model, config)
    pad = model.config.pad_token_id if getattr(model.config, "pad_token_id", None) is not None else 0
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    before = heldout_loss(model, held, pad) if held else math.nan
    best = (before, 0, {name: p.detach().clone() for name, p in trainable.items()})  # (loss, step, weights)
    curve = [(0, before)]
    every = max(recipe.steps // 10, 1)  # held-out checks: the adapter kept is the best one seen
    optimiser = torch.optim.AdamW(trainable.values(), lr=recipe.lr)
    rng = random.Random(recipe.seed)
    order: list[Example] = []
    model.train()
    for step in range(1, recipe.steps + 1):
        if len(order) < recipe.batch:
            order += rng.sample(train, len(train))
        batch, order = order[: recipe.batch], order[recipe.batch :]
        loss, n = _loss(model, batch, pad)
        optimiser.zero_grad()
        (loss / max(n, 1)).backward()
        optimiser.step()
        if progress is not None:
            progress(step, recipe.steps, float(loss.detach()) / max(n, 1))
        if held and (step % every == 0 or step == recipe.steps):
            curve.append((step, heldout_loss(model, held, pad)))
            model.train()
            if curve[-1][1] < best[0]:
                best = (curve[-1][1], step, {name: p.detach().clone() for name, p in trainable.items()})
    if held:  # back to the best held-out point (step 0: the adapter changes nothing, its B matrices are zero)
        with torch.no_grad():
            for name, p in trainable.items():
                p.copy_(best[2][name])
    out = Path(out)
    model.save_pretrained(out)
    summary = {"base": str(base), "demos": len(rows), "train": len(train), "heldout": len(held),
               "too_long": too_long, "heldout_loss_before": before,
               "heldout_loss_after": best[0] if held else math.nan, "best_step": best[1] if held else recipe.steps,
               "heldout_curve": curve, "seconds": time.perf_counter() - t0, "out": str(out),
               "recipe": asdict(recipe)}
    (out / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _base_model(transformers, path: Path):
    """The base as a float32 transformers model: a checkpoint folder, or a GGUF file with its blocks decoded (the
    adapter trains on the weights the file decodes to, which the engine runs)."""
    if not is_gguf_file(path):
        return transformers.AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32)
    try:
        return transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                                 torch_dtype=torch.float32)
    except (ValueError, KeyError, ImportError) as e:
        raise ValueError(f"transformers cannot read the GGUF file {path} to train on: {e}") from e


def print_progress(step: int, steps: int, loss: float) -> None:
    """A one-line progress bar on stderr."""
    width = 30
    done = width * step // steps
    print(f"\rtraining [{'#' * done}{'.' * (width - done)}] {step}/{steps} loss {loss:.3f}", end="",
          file=sys.stderr, flush=True)
    if step == steps:
        print(file=sys.stderr)
