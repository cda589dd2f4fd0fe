"""`swarm train`: demonstrations -> tokenizer -> base MoE -> one LoRA adapter per persona style -> a
Hugging Face folder with a model card. Seeded end to end; every stage reports progress on stderr
and the loss log goes to `training_log.jsonl` beside the model.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import msgspec
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from swarm.agents import TurnKind
from swarm.runtime.config import ModelConfig
from swarm.runtime.model import Model
from swarm.runtime.tokenizer import Tokenizer as SwarmTokenizer
from swarm.train.card import write_card
from swarm.train.demos import DemoPlan, read_demos, write_demos
from swarm.train.export import CHATML, save_adapter, save_model
from swarm.train.lora import TARGETS, TrainableLoRA
from swarm.train.trainer import Example, TrainConfig, evaluate, init_weights, train

SPECIAL = ["<|pad|>", "<|bos|>", "<|eos|>", "<|im_start|>", "<|im_end|>"]
SCENARIOS = ("village", "werewolf", "software_team", "support_desk")


@dataclass(frozen=True)
class Recipe:
    scenarios: tuple[str, ...] = SCENARIOS
    seeds: int = 60
    ticks: int = 40
    agents: dict[str, int] | None = None
    heldout_every: int = 10  # every n-th seed's runs are held out
    explore: float = 0.0  # share of act turns in training runs played at random (see `swarm.train.demos`)
    per_scenario: int = 4000  # at most this many train examples per scenario (busy scenarios would dominate)
    heldout_per_scenario: int = 150  # held-out examples per scenario (evaluation is a forward pass over them)
    vocab: int = 4096
    hidden: int = 256
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    experts: int = 8
    top_k: int = 2
    expert_width: int = 256
    context: int = 2048  # the model's max_position_embeddings
    max_len: int = 1024  # longer examples are left out of training
    episode_turns: int = 3  # consecutive turns of one agent trained as one sequence
    # focus drills: copies of each act turn of these scenarios with the prompt cut to its focus and the
    # question (see `focus_drills`): support-desk routing is decided by the words of the ticket in hand, the
    # software team's breakdown by those of the request
    focus_drills: dict[str, int] = field(default_factory=lambda: {"support_desk": 8, "software_team": 8})
    pretrain: TrainConfig = field(default_factory=lambda: TrainConfig(steps=700, batch_tokens=4096))
    adapter: TrainConfig = field(default_factory=lambda: TrainConfig(steps=30, batch_tokens=4096, lr=3e-3,
                                                                     warmup=5, aux_weight=0.0))
    adapter_rank: int = 8
    min_style_examples: int = 50
    seed: int = 0

    def model_config(self) -> dict:
        return {
            "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "vocab_size": self.vocab,
            "hidden_size": self.hidden, "num_hidden_layers": self.layers, "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads, "head_dim": self.hidden // self.heads,
            "intermediate_size": self.expert_width, "moe_intermediate_size": self.expert_width,
            "num_experts": self.experts, "num_experts_per_tok": self.top_k, "norm_topk_prob": True,
            "decoder_sparse_step": 1, "mlp_only_layers": [], "max_position_embeddings": self.context,
            "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": True,
            "attention_bias": False, "bos_token_id": 1, "eos_token_id": 4, "pad_token_id": 0,
            "router_aux_loss_coef": self.pretrain.aux_weight, "output_router_logits": False,
        }


SMOKE = Recipe(scenarios=("village",), seeds=3, ticks=4, agents={"village": 4}, heldout_every=3, vocab=400,
               hidden=32, layers=2, heads=2, kv_heads=1, experts=4, top_k=2, expert_width=32, context=2048,
               max_len=2048,
               pretrain=TrainConfig(steps=4, batch_tokens=2048, log_every=2, warmup=2),
               adapter=TrainConfig(steps=2, batch_tokens=2048, log_every=1, warmup=1, aux_weight=0.0),
               adapter_rank=4, min_style_examples=1, focus_drills={"*": 1}, explore=0.3)


def train_tokenizer(texts: list[str], vocab: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return tok


def _render(messages: list[dict[str, str]]) -> str:
    return SwarmTokenizer(Tokenizer(models.BPE()), {}, CHATML).apply_chat_template(messages)


def encode(demos, tok: Tokenizer, max_len: int) -> tuple[list[Example], list[str], int]:
    """One example per demonstration, its prompt exactly as the simulation built it (the held-out set:
    what is measured is what is served); the style of each, and how many were too long."""
    return encode_episodes([[d] for d in demos], tok, max_len)


def episodes(demos, turns: int) -> list[list]:
    """Demonstrations grouped for training: up to `turns` consecutive turns of one agent in one run (same
    system prompt, in tick order) per group; reflections and plans stand alone. An agent's prompt keeps
    its last exchanges as history (`Simulation(history_turns=2)` keeps 0 to 2 of them), so a group of 3
    shows each answer with 0, 1 or 2 earlier turns before it, as the simulation does, while the system
    prompt and every observation are computed once for all its answers instead of once per answer."""
    runs: dict[tuple, list] = defaultdict(list)
    groups = []
    for d in demos:
        if d.kind == TurnKind.ACT:
            runs[(d.scenario, d.seed, d.agent)].append(d)
        else:
            groups.append([d])
    for run in runs.values():
        run.sort(key=lambda d: d.tick)
        group: list = []
        for d in run:
            # a new group at a new system prompt, and after an explored turn: the next turn's history holds
            # what was played there, not the answer this group would show
            if group and (len(group) == turns or d.messages[0] != group[0].messages[0] or group[-1].played):
                groups.append(group)
                group = []
            group.append(d)
        groups.append(group)
    return groups


def focus_drills(demos, copies: dict[str, int]) -> list:
    """Short demonstrations for deciding from the focus: for each act turn of a scenario in `copies` ("*":
    any) whose prompt closes with a focus ("Now: ..."; see `Simulation.focus`), that line and the question
    alone as the user message (no system prompt, memories or history), `copies[scenario]` times. A small model
    learns to read a decision from the words right before its answer quickly in ~80-token examples and
    slowly in ~500-token ones (swarm-tiny routed held-out drill tickets perfectly after 100 steps of them;
    the same steps on whole prompts left it at chance), and the act prompt ends with the same two blocks, so
    what is learnt carries over."""
    out = []
    for d in demos:
        name = d.scenario.rsplit("/", 1)[-1].removesuffix(".py")
        n = copies.get(name, copies.get("*", 0)) if d.kind == TurnKind.ACT else 0
        blocks = d.messages[-1]["content"].split("\n\n")
        if n and len(blocks) > 1 and blocks[-2].startswith("Now: "):
            drill = msgspec.structs.replace(d, messages=[{"role": "user", "content": "\n\n".join(blocks[-2:])}])
            out += [drill] * n
    return out


def encode_episodes(groups, tok: Tokenizer, max_len: int) -> tuple[list[Example], list[str], int]:
    """Examples from groups of turns: the first turn's whole prompt, then each later turn's new user
    message and its answer. A turn that would pass `max_len` starts a new example with its own whole
    prompt; a turn too long even so is left out. Returns the examples, the style of each, and how many
    turns were left out."""
    end = tok.token_to_id("<|im_end|>")
    examples, styles, dropped = [], [], 0
    for group in groups:
        ids: list[int] = []
        answers: list[tuple[int, int]] = []
        for d in group:
            answer = tok.encode(d.completion).ids + [end]
            if ids:  # go on from the transcript so far with this turn's new user message
                prompt = tok.encode("\n" + _render([d.messages[-1]])).ids
                if len(ids) + len(prompt) + len(answer) <= max_len:
                    ids += prompt
                    answers.append((len(ids), len(ids) + len(answer)))
                    ids += answer
                    continue
                examples.append(Example(ids, tuple(answers)))
                styles.append(group[0].style)
            prompt = tok.encode(_render(d.messages)).ids  # the turn's whole prompt, as the simulation built it
            if len(prompt) + len(answer) > max_len:
                dropped += 1
                ids, answers = [], []
                continue
            ids, answers = prompt + answer, [(len(prompt), len(prompt) + len(answer))]
        if answers:
            examples.append(Example(ids, tuple(answers)))
            styles.append(group[0].style)
    return examples, styles, dropped


def _log_to(path: Path):
    f = open(path, "a")  # noqa: SIM115 (closed by the pipeline)

    def log(row: dict) -> None:
        f.write(json.dumps(row) + "\n")
        f.flush()

    return log, f


def train_swarm_tiny(out: str | Path, recipe: Recipe = Recipe(), command: str = "swarm train") -> dict:
    """Build the model folder `out/model` (and the data under `out/data`); returns the summary."""
    out = Path(out)
    data, folder = out / "data", out / "model"
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(recipe.seed)
    t0 = time.perf_counter()
    summary: dict = {"recipe": _plain(asdict(recipe)), "torch": torch.__version__, "python": platform.python_version(),
                     "threads": torch.get_num_threads()}

    _stage("demonstrations")
    plan = DemoPlan(recipe.scenarios, seeds=recipe.seeds, ticks=recipe.ticks, agents=recipe.agents,
                    heldout_every=recipe.heldout_every, explore=recipe.explore)
    summary["demos"] = write_demos(plan, data)
    train_demos = _balanced(list(read_demos(data / "train.jsonl")), recipe.per_scenario, recipe.seed)
    heldout_demos = _balanced(list(read_demos(data / "heldout.jsonl")), recipe.heldout_per_scenario, recipe.seed)

    _stage("tokenizer")
    texts = [_render(d.messages) + d.completion for d in train_demos]
    tok = train_tokenizer(texts, recipe.vocab)
    drills = focus_drills(train_demos, recipe.focus_drills)
    train_ex, train_styles, dropped = encode_episodes(episodes(train_demos, recipe.episode_turns)
                                                      + [[d] for d in drills], tok, recipe.max_len)
    held_ex, held_styles, held_dropped = encode(heldout_demos, tok, recipe.max_len)
    summary["examples"] = {"train": len(train_ex), "focus_drills": len(drills),
                           "train_answers": sum(len(e.answers) for e in train_ex),
                           "heldout": len(held_ex), "too_long_train": dropped,
                           "too_long_heldout": held_dropped, "train_tokens": sum(len(e.ids) for e in train_ex),
                           "train_answer_tokens": sum(e.answer_tokens for e in train_ex)}
    if not train_ex or not held_ex:
        raise ValueError(f"no usable examples (train {len(train_ex)}, held-out {len(held_ex)}): raise seeds or "
                         "max_len")

    _stage("base model")
    config = recipe.model_config()
    model = Model(ModelConfig.from_hf(config))
    init_weights(model, recipe.seed)
    log, log_file = _log_to(folder / "training_log.jsonl")
    try:
        summary["untrained_heldout_nll"] = evaluate(model, held_ex)
        summary["pretrain_log"] = train(model, train_ex, replace(recipe.pretrain, seed=recipe.seed), log=log,
                                        label="base")
        summary["heldout_nll"] = evaluate(model, held_ex)
        print(f"held-out answer loss: {summary['heldout_nll']:.4f} nats/token", file=sys.stderr)
        save_model(model, config, tok, folder)

        _stage("adapters")
        summary["adapters"] = _train_adapters(model, recipe, folder, train_ex, train_styles, held_ex, held_styles,
                                              log)
    finally:
        log_file.close()
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    summary["command"] = command
    (folder / "training_summary.json").write_text(json.dumps(summary, indent=2))
    write_card(folder, summary, command)
    return summary


def _train_adapters(model: Model, recipe: Recipe, folder: Path, train_ex, train_styles, held_ex, held_styles,
                    log) -> dict:
    for p in model.parameters():
        p.requires_grad_(False)
    by_style, held_by_style = defaultdict(list), defaultdict(list)
    for ex, style in zip(train_ex, train_styles, strict=True):
        by_style[style].append(ex)
    for ex, style in zip(held_ex, held_styles, strict=True):
        held_by_style[style].append(ex)
    results = {}
    for style in sorted(s for s in by_style if s is not None):
        if len(by_style[style]) < recipe.min_style_examples or not held_by_style[style]:
            results[style] = {"skipped": f"{len(by_style[style])} train / {len(held_by_style[style])} held-out "
                                         "examples"}
            continue
        base = evaluate(model, held_by_style[style])
        lora = TrainableLoRA(model, recipe.adapter_rank, 2.0 * recipe.adapter_rank, seed=recipe.seed)
        try:
            train(model, by_style[style], replace(recipe.adapter, seed=recipe.seed), params=list(lora.parameters()),
                  log=lambda row, s=style: log({**row, "adapter": s}), label=f"adapter {style}")
            tuned = evaluate(model, held_by_style[style])
            save_adapter(lora.peft_weights(), recipe.adapter_rank, 2.0 * recipe.adapter_rank, TARGETS,
                         folder / "adapters" / style, base="swarm-tiny")
        finally:
            lora.remove()
        results[style] = {"train_examples": len(by_style[style]), "heldout_examples": len(held_by_style[style]),
                          "heldout_nll_base": base, "heldout_nll_adapter": tuned,
                          "improvement": (base - tuned) / base}
        print(f"adapter {style}: held-out {base:.4f} -> {tuned:.4f}", file=sys.stderr)
    return results


def _balanced(demos: list, per_scenario: int, seed: int) -> list:
    """About `per_scenario` demonstrations of each scenario: whole agent runs (so consecutive turns stay
    together), a seeded sample of them, in the original order."""
    import random

    runs: dict[str, dict[tuple, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, d in enumerate(demos):
        runs[d.scenario][(d.seed, d.agent)].append(i)
    rng = random.Random(seed)
    keep: list[int] = []
    for by_run in runs.values():
        chosen = list(by_run.values())
        rng.shuffle(chosen)
        total = 0
        for idx in chosen:
            if total >= per_scenario:
                break
            keep += idx
            total += len(idx)
    return [demos[i] for i in sorted(keep)]


def _stage(name: str) -> None:
    print(f"== {name}", file=sys.stderr, flush=True)


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x
