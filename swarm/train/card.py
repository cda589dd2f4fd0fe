"""The model card written beside a trained model: what it was trained on, how, how well it does,
and what it can and cannot do. Built from the training summary, so every figure is measured."""

from __future__ import annotations

from pathlib import Path


def _loss_table(rows: list[dict], keep: int = 12) -> list[str]:
    if not rows:
        return ["(no steps logged)"]
    every = max(1, len(rows) // keep)
    picked = rows[::every] + ([rows[-1]] if (len(rows) - 1) % every else [])
    out = ["| step | loss (weighted) | answer loss (nats/token) | tokens/s |", "|---|---|---|---|"]
    out += [f"| {r['step']} | {r['loss']:.3f} | {r['answer_nll']:.3f} | {r['tokens_per_s']:.0f} |" for r in picked]
    return out


def _selection(sel: dict | None) -> list[str]:
    """How this run was chosen among runs of the same recipe (`benchmarks/select_model.py`), if it was."""
    if not sel:
        return []
    seeds = sel["seeds"]
    specs = list(sel["candidates"][0]["places"])
    lines = [
        "## Selection",
        "",
        f"This is one of {len(sel['candidates'])} runs of the same recipe that differ only in the training seed "
        "(`--seed`): at this budget whether a scenario's skill forms is partly the luck of a run. "
        f"`benchmarks/select_model.py` played each on validation seeds {seeds[0]}-{seeds[-1]} x {sel['ticks']} "
        "ticks, which the results below never use, and chose the run whose worst scenario stands highest "
        "between the random floor (0) and the scripted ceiling (1):",
        "",
        "| training seed | held-out loss | " + " | ".join(specs) + " | worst | chosen |",
        "|---" * (len(specs) + 4) + "|",
    ]
    for c in sel["candidates"]:
        lines.append(f"| {c['training_seed']} | {c['heldout_nll']:.3f} | "
                     + " | ".join(f"{c['places'].get(s, float('nan')):.2f}" for s in specs)
                     + f" | {c['worst']:.2f} | {'yes' if c['chosen'] else ''} |")
    return [*lines, ""]


def write_card(folder: str | Path, summary: dict, command: str, name: str = "swarm-tiny") -> Path:
    r, ex = summary["recipe"], summary["examples"]
    pre = r["pretrain"]
    lines = [
        f"# {name}",
        "",
        "A small mixture-of-experts language model trained by swarm itself, from scratch, to play the",
        "characters of swarm's scenarios: given a persona's prompt (who it is, where, what it just saw), it",
        "answers with one action as JSON. It is the default model so that everything runs out of the box with",
        "nothing downloaded; point `--model` at any supported checkpoint for real language ability.",
        "",
        "## Data",
        "",
        f"Demonstrations written by the scripted policies of the scenarios {', '.join(r['scenarios'])}: "
        f"{r['seeds']} seeds x {r['ticks']} ticks each, every turn a (chat prompt -> action JSON) pair. "
        + (f"In the training runs {r['explore']:.0%} of act turns played a random action instead of the "
           "scripted one while the demonstration kept the scripted answer, so the data also shows what to do "
           "after a mistake. " if r.get("explore") else "")
        + f"Every {r['heldout_every']}th seed is held out. Training sequences: {ex['train']} "
        f"({ex['train_tokens']} tokens, {ex['train_answer_tokens']} of them answers"
        + (f"; {ex['train_answers']} turns, up to {r.get('episode_turns', 1)} consecutive turns of one agent per "
           "sequence" if "train_answers" in ex else "")
        + (f"; {ex['focus_drills']} of them focus drills: act turns of "
           f"{', '.join(f'{k} (x{v})' for k, v in r['focus_drills'].items())} cut to their focus line and "
           "the question" if ex.get("focus_drills") else "")
        + f"), {ex['heldout']} held-out turns (each with its prompt as served); {ex['too_long_train']} train "
        f"turns longer than {r['max_len']} tokens were left out.",
        "",
        "## Model",
        "",
        f"Qwen3-MoE layout (loads in `transformers` as `Qwen3MoeForCausalLM`): hidden {r['hidden']}, "
        f"{r['layers']} layers, {r['heads']} query / {r['kv_heads']} key-value heads, {r['experts']} experts "
        f"(top-{r['top_k']}) of width {r['expert_width']}, byte-level BPE vocabulary of {r['vocab']}, context "
        f"{r['context']}, tied embeddings; weights stored in float16.",
        "",
        "## Training",
        "",
        f"`{command}` ({summary['seconds'] / 60:.1f} minutes on {summary['threads']} CPU threads, torch "
        f"{summary['torch']}). Base: {pre['steps']} AdamW steps of about {pre['batch_tokens']} tokens, learning "
        f"rate {pre['lr']} with {pre['warmup']} warmup steps and cosine decay, answer tokens weighted 1 and "
        f"prompt tokens {pre['prompt_weight']}, router load-balancing loss x{pre['aux_weight']}. Adapters: "
        f"LoRA rank {r['adapter_rank']} on q/k/v/o of every layer, {r['adapter']['steps']} steps per persona "
        "style over the frozen base. Seeded: the same command gives the same model on the same machine.",
        "",
        "Base model loss (`training_log.jsonl` has every logged step):",
        "",
        *_loss_table([row for row in summary["pretrain_log"]]),
        "",
        *_selection(summary.get("selection")),
        "## Results",
        "",
        f"Held-out answer loss: **{summary['heldout_nll']:.3f} nats/token** (untrained: "
        f"{summary['untrained_heldout_nll']:.3f}).",
        "",
        "| adapter (persona style) | held-out loss, base | with adapter | lower by |",
        "|---|---|---|---|",
    ]
    for style, a in summary["adapters"].items():
        if "skipped" in a:
            lines.append(f"| {style} | skipped: {a['skipped']} | | |")
        else:
            lines.append(f"| {style} | {a['heldout_nll_base']:.3f} | {a['heldout_nll_adapter']:.3f} | "
                         f"{100 * a['improvement']:.1f}% |")
    if summary.get("evaluation"):
        lines += ["", "Scenario metrics with this model against the scripted policy (the ceiling) and random "
                      "actions (the floor):", "", *summary["evaluation"]]
    lines += [
        "",
        "## What it can and cannot do",
        "",
        "- It has only ever read swarm's scenario prompts: it knows their formats, places, roles, action",
        "  types and the scripted characters' voices (the held-out loss above). Outside them it has no",
        "  knowledge and no general language ability.",
        "- Knowing the format is not making the right choice: the scenario table above measures its choices.",
        "- It reads a decision off the words right before its answer far better than off words further back.",
        "  Scenarios that close each prompt with what the agent must deal with now (`@sim.focus`) get the most",
        "  from it: it routes held-out support tickets from the ticket in its `Now:` line nearly always to the",
        "  right queue, though their priority only about half the time (`benchmarks/routing_probe.py`). It",
        "  hardly copies from its context (a ticket's text given twice is only a little easier to predict the",
        "  second time), so what hangs on a memory or an early line of a long prompt (the village's gossip) it",
        "  acts on in some runs and not in others. More training steps (on a GPU) or a larger model are what",
        "  reading a long prompt needs.",
        "- Which scenario skills form is partly the luck of a training run at this budget: runs of one recipe",
        "  with different `--seed`s have landed far apart between floor and ceiling in a scenario"
        + (" (see Selection above)." if summary.get("selection") else " (the README has such a comparison)."),
        "- Its actions are always valid JSON of the requested schema because the engine constrains decoding;",
        "  whether an action is a good one is what the scenario metrics above measure.",
        "- It is small enough to run hundreds of agents per tick on a laptop CPU; it is not a chat model.",
        "",
    ]
    path = Path(folder) / "README.md"
    path.write_text("\n".join(lines))
    return path
