"""End-to-end benchmark of the engine against `transformers`, on a random-weight Qwen3-MoE.

    .venv/bin/python benchmarks/engine.py            # full run (about 6 minutes on 2 CPU cores, 8 with --profile)
    .venv/bin/python benchmarks/engine.py --quick    # smoke run, tiny sizes
    .venv/bin/python benchmarks/engine.py --sections hardware,roofline --profile
    python benchmarks/engine.py --device cuda        # on a GPU: the engine (Triton kernels) and transformers there

Prints one JSON object on stdout (progress goes to stderr). Sections:

  hardware       memory bandwidth and matmul FLOP/s measured now (the roofline's limits)
  multi_agent    agents with growing conversations: engine vs transformers batched and one at a time
  persona_cache  the same workload with the prefix cache on and off: prefill tokens and time to first token
  eviction       a KV pool half the working set: hint-driven eviction vs plain LRU
  roofline       decode steps at batch 1 and 32 against the measured bandwidth and FLOP/s
  kv_int8        int8 KV cache against float32: tokens a GiB holds, decode step times
  weights        decode tokens/s at batch 1 and 32 with float32, int8, Q8_0 and Q4_0 weights (CPU)
  overhead       prefix-cache bookkeeping cost on a workload with no cache hits

Every section carries its `target` and `meets_target`. All token ids are random
but seeded, so runs are comparable; the model is written once per run (or
reused from --model-dir).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch

from swarm.runtime import Engine, EngineConfig, SamplingParams
from swarm.runtime.loader import load_model
from swarm.runtime.model import Model, MoE
from swarm.runtime.random_model import tiny_config, write_random_model
from swarm.runtime.tokenizer import Tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: the helpers sit beside it
import roofline  # noqa: E402

FIRST_ID = 5  # ids below are the tokenizer's special tokens (pad, bos, eos, im_start, im_end)
PAD_ID = 0
SECTIONS = ("hardware", "multi_agent", "persona_cache", "eviction", "roofline", "kv_int8", "weights", "overhead")
WEIGHT_FORMATS = ("float32", "int8", "q8_0", "q4_0", "bf16", "f16")  # the weights section's formats (Engine quantize=)


# -- sizes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    # model
    hidden: int = 384
    layers: int = 6
    heads: int = 6
    head_dim: int = 64
    kv_heads: int = 2
    experts: int = 8
    top_k: int = 2
    expert_width: int = 768
    vocab: int = 8192
    # engine
    max_batched_tokens: int = 512
    # multi-agent workload (also persona_cache)
    agents: int = 32
    prompt: int = 512  # persona prompt tokens, of which the first `shared` are a world preamble
    shared: int = 256
    turns: int = 4
    obs: int = 32
    reply: int = 32
    hf_serial_agents: int = 8  # agents run through transformers one at a time; the rest is extrapolated
    engine_reps: int = 2  # the engine's multi-agent run is repeated and the fastest kept (it is cheap)
    # eviction: agent i acts every periods[i % len(periods)] ticks
    periods: tuple[int, ...] = (2, 4, 8)
    ticks: int = 16
    evict_reply: int = 24
    # roofline
    roof_context: int = 512
    roof_batches: tuple[int, ...] = (1, 32)
    roof_steps: int = 16
    # overhead
    over_requests: int = 32
    over_prompt: int = 256
    over_reply: int = 16
    over_rounds: int = 3
    over_reps: int = 3


QUICK = Sizes(
    hidden=64, layers=2, heads=4, head_dim=16, kv_heads=2, experts=4, top_k=2, expert_width=128, vocab=512,
    agents=4, prompt=64, shared=32, turns=2, obs=8, reply=8, hf_serial_agents=4, engine_reps=1,
    periods=(2, 4), ticks=6, evict_reply=8,
    roof_context=64, roof_batches=(1, 4), roof_steps=4,
    over_requests=4, over_prompt=32, over_reply=4, over_rounds=2, over_reps=2,
)


def model_config(s: Sizes) -> dict:
    """config.json of the benchmark model: Qwen3-MoE of the requested shape."""
    cfg = tiny_config(
        "qwen3_moe", vocab_size=s.vocab, hidden_size=s.hidden, num_layers=s.layers, num_heads=s.heads,
        num_kv_heads=s.kv_heads, num_experts=s.experts, top_k=s.top_k, intermediate_size=s.expert_width,
        max_position_embeddings=4096,
    )
    cfg["head_dim"] = s.head_dim  # Qwen3 decouples head_dim from hidden / heads
    return cfg


def ensure_model(folder: Path, cfg: dict) -> Path:
    """Write the random checkpoint unless `folder` already holds one with this exact config."""
    config_path = folder / "config.json"
    if config_path.is_file():
        if json.loads(config_path.read_text()) == cfg:
            log(f"reusing the model in {folder}")
            return folder
        raise SystemExit(f"{folder} holds a model with another config; pick an empty --model-dir")
    log(f"writing a random-weight model to {folder}")
    return write_random_model(folder, cfg, seed=0)


# -- small utilities --------------------------------------------------------------------


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def git_revision() -> str | None:
    """The commit measured ('+dirty': uncommitted engine changes), since the engine changes under the benchmark."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "runtime", "kernels",
                                "swarm"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def random_ids(gen: torch.Generator, n: int, vocab: int) -> list[int]:
    return torch.randint(FIRST_ID, vocab, (n,), generator=gen).tolist()


class MachineLoad:
    """CPU seconds other processes and the hypervisor took while a section ran.

    The benchmark machine may be shared; a section that lost much CPU to others
    has inflated times, and says so instead of reporting them silently.
    """

    def __init__(self):
        self.t0, self.busy0, self.steal0, self.own0 = time.perf_counter(), *self._read()

    @staticmethod
    def _read() -> tuple[float, float, float]:
        tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        try:
            with open("/proc/stat") as f:
                cpu = [int(x) for x in f.readline().split()[1:]]
        except OSError:
            return 0.0, 0.0, MachineLoad._own()
        # user nice system idle iowait irq softirq steal ...: busy is everything but idle and iowait
        busy = sum(cpu[:8]) - cpu[3] - cpu[4] - cpu[7]
        return busy / tick, cpu[7] / tick, MachineLoad._own()

    @staticmethod
    def _own() -> float:
        """CPU seconds of this process and the children it waited for (a benchmark's subprocesses are its own)."""
        t = os.times()
        return time.process_time() + t.children_user + t.children_system

    def report(self) -> dict:
        busy, steal, own = self._read()
        wall = time.perf_counter() - self.t0
        others = max(0.0, (busy - self.busy0) - (own - self.own0))
        lost = others + (steal - self.steal0)
        cores = os.cpu_count() or 1
        return {"wall_s": wall, "own_cpu_s": own - self.own0, "other_processes_cpu_s": others,
                "steal_s": steal - self.steal0,
                # timings are suspect once others took more than a twentieth of the machine
                "disturbed": lost > 0.05 * wall * cores}


def greedy(n: int) -> SamplingParams:
    return SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True)


class Bench:
    """What every section shares: sizes, the loaded models and results other sections reuse."""

    def __init__(self, s: Sizes, folder: Path, seed: int, device: str = "cpu", cuda_graphs: bool = True):
        self.s, self.folder, self.seed, self.device = s, folder, seed, torch.device(device)
        self.cuda_graphs = cuda_graphs
        self.model: Model = load_model(folder, dtype=torch.float32).to(self.device)
        self.tokenizer = Tokenizer.from_folder(folder)
        self._hf = None
        self.hardware: dict | None = None
        self.cache_on_logs: list[TurnLog] | None = None

    def engine(self, model: Model | None = None, **config) -> Engine:
        """A fresh engine (own KV pool and prefix cache) over the shared weights (or `model`'s)."""
        config.setdefault("max_batched_tokens", self.s.max_batched_tokens)
        config.setdefault("cuda_graphs", self.cuda_graphs)
        return Engine(model or self.model, self.tokenizer, EngineConfig(**config), self.device)

    @property
    def hf(self):
        if self._hf is None:
            self._hf = load_hf(self.folder).to(self.device)
        return self._hf

    def warm_up(self) -> None:
        """One short run through each code path, so no timed run pays for first-call setup."""
        gen = torch.Generator().manual_seed(12345)
        prompts = [random_ids(gen, 40, self.s.vocab) for _ in range(3)]
        self.engine(kv_cache_tokens=1024).generate(prompts, greedy(4))


def load_hf(folder: Path):
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    log("loading the transformers reference")
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    # generate exactly max_new_tokens, like the engine's ignore_eos (min_new_tokens would mask eos instead)
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = PAD_ID
    return hf


def hf_generate(hf, prompts: list[list[int]], new_tokens: int) -> list[list[int]]:
    """Greedy batch generation, prompts left-padded to one length."""
    L = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), L), PAD_ID, dtype=torch.long)  # [B, L]
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, L - len(p):] = torch.tensor(p)
        mask[i, L - len(p):] = 1
    with torch.inference_mode():
        out = hf.generate(ids.to(hf.device), attention_mask=mask.to(hf.device), max_new_tokens=new_tokens,
                          do_sample=False)
    return out[:, L:].tolist()


# -- the multi-agent workload ---------------------------------------------------------------


@dataclass
class Agents:
    names: list[str]
    personas: list[list[int]]  # [A][prompt]: shared preamble + the agent's own part
    observations: list[list[list[int]]]  # [turn][A][obs]


def make_agents(s: Sizes, seed: int, n: int, turns: int) -> Agents:
    gen = torch.Generator().manual_seed(seed)
    preamble = random_ids(gen, s.shared, s.vocab)
    personas = [preamble + random_ids(gen, s.prompt - s.shared, s.vocab) for _ in range(n)]
    obs = [[random_ids(gen, s.obs, s.vocab) for _ in range(n)] for _ in range(turns)]
    return Agents([f"agent{i}" for i in range(n)], personas, obs)


@dataclass
class TurnLog:
    prompts: list[list[int]]
    outputs: list[list[int]]
    seconds: float  # first submit to last completion
    ttft: list[float]  # per request: first submit to its first token
    prefill_computed: int  # tokens through the model that were not decode steps (recompute included)
    cached: int  # prompt tokens served from the prefix cache at admission


def drive(engine: Engine, handles: list, t0: float, on_done: Callable[[int], None] | None = None) -> list[float]:
    """Step the engine until every handle is done; returns each one's time to first token since t0."""
    ttft: list[float | None] = [None] * len(handles)
    waiting_first, running = set(range(len(handles))), set(range(len(handles)))
    while running:
        engine.step()
        now = time.perf_counter()
        for i in [i for i in waiting_first if handles[i].done or handles[i].token_ids]:
            ttft[i] = now - t0
            waiting_first.discard(i)
        for i in [i for i in running if handles[i].done]:
            running.discard(i)
            if on_done:
                on_done(i)
    return ttft


def run_turn(engine: Engine, prompts: list[list[int]], names: list[str], new_tokens: int,
             on_done: Callable[[int], None] | None = None) -> TurnLog:
    computed_before = engine.stats()["tokens_computed"]
    t0 = time.perf_counter()
    handles = [engine.submit(p, greedy(new_tokens), persona=n) for p, n in zip(prompts, names, strict=True)]
    ttft = drive(engine, handles, t0, on_done)
    seconds = time.perf_counter() - t0
    done = [h.result() for h in handles]
    computed = engine.stats()["tokens_computed"] - computed_before
    decode = sum(len(c.token_ids) - 1 for c in done)  # the last sampled token is never fed back
    return TurnLog(prompts, [c.token_ids for c in done], seconds, ttft, computed - decode,
                   sum(c.cached_tokens for c in done))


def run_conversations(engine: Engine, agents: Agents, turns: int, new_tokens: int) -> list[TurnLog]:
    """Each turn every agent gets an observation and replies; the conversation keeps everything."""
    conv = [list(p) for p in agents.personas]
    logs = []
    for t in range(turns):
        prompts = [c + o for c, o in zip(conv, agents.observations[t], strict=True)]
        logs.append(run_turn(engine, prompts, agents.names, new_tokens))
        conv = [p + out for p, out in zip(prompts, logs[-1].outputs, strict=True)]
        log(f"  turn {t + 1}: {logs[-1].seconds:.2f}s, prefill {logs[-1].prefill_computed} tokens")
    return logs


def engine_conversations(b: Bench, cache: bool) -> list[TurnLog]:
    """The multi-agent workload on a fresh engine, `engine_reps` times; the fastest run is kept."""
    s = b.s
    kv = s.agents * (s.prompt + s.turns * (s.obs + s.reply)) + 4 * s.max_batched_tokens  # everything fits
    agents = make_agents(s, b.seed, s.agents, s.turns)
    best = None
    for rep in range(s.engine_reps):
        log(f"engine, prefix cache {'on' if cache else 'off'}: {s.agents} agents x {s.turns} turns "
            f"(run {rep + 1}/{s.engine_reps})")
        logs = run_conversations(b.engine(kv_cache_tokens=kv, enable_prefix_cache=cache), agents, s.turns, s.reply)
        if best is not None:
            assert [t.outputs for t in logs] == [t.outputs for t in best], "greedy runs of one engine differ"
        if best is None or sum(t.seconds for t in logs) < sum(t.seconds for t in best):
            best = logs
    return best


# -- sections ---------------------------------------------------------------------------------


def section_hardware(b: Bench, quick: bool) -> dict:
    log("hardware: memory bandwidth and matmul FLOP/s")
    b.hardware = roofline.measure(quick, b.device)
    return {**b.hardware, "target": "measured limits (no target)", "meets_target": True}


def section_multi_agent(b: Bench) -> dict:
    s = b.s
    logs = b.cache_on_logs = engine_conversations(b, cache=True)
    generated = s.agents * s.turns * s.reply
    engine_s = sum(t.seconds for t in logs)

    # transformers gets exactly the engine's prompts (conversations built from the engine's replies),
    # so all three runs process the same tokens and the outputs can be compared one to one.
    hf = b.hf
    hf_generate(hf, [logs[0].prompts[0][:40]], 4)  # warm-up
    log(f"transformers batched: {s.agents} prompts per generate call, {s.turns} turns")
    batched_turns, batched_out = [], []
    for t, turn in enumerate(logs):
        t0 = time.perf_counter()
        batched_out.append(hf_generate(hf, turn.prompts, s.reply))
        batched_turns.append(time.perf_counter() - t0)
        log(f"  turn {t + 1}: {batched_turns[-1]:.2f}s")
    batched_s = sum(batched_turns)

    n_serial = min(s.hf_serial_agents, s.agents)
    log(f"transformers one at a time: {n_serial} of {s.agents} agents, {s.turns} turns")
    serial_s, same, total = 0.0, 0, 0
    first_diff = []
    for turn in logs:
        for i in range(n_serial):
            t0 = time.perf_counter()
            [out] = hf_generate(hf, [turn.prompts[i]], s.reply)
            serial_s += time.perf_counter() - t0
            total += 1
            same += out == turn.outputs[i]
            if out != turn.outputs[i]:
                first_diff.append(next(k for k, (x, y) in enumerate(zip(out, turn.outputs[i], strict=True)) if x != y))
    serial_full_s = serial_s * s.agents / n_serial
    batched_same = sum(o == e for turn, outs in zip(logs, batched_out, strict=True)
                       for o, e in zip(outs, turn.outputs, strict=True))

    vs_batched, vs_serial = ratio(batched_s, engine_s), ratio(serial_full_s, engine_s)
    return {
        "workload": {"agents": s.agents, "persona_tokens": s.prompt, "shared_preamble_tokens": s.shared,
                     "turns": s.turns, "observation_tokens": s.obs, "reply_tokens": s.reply,
                     "generated_tokens": generated,
                     "prompt_tokens_per_turn": [len(t.prompts[0]) for t in logs]},
        "engine": {"seconds": engine_s, "tokens_per_s": generated / engine_s, "runs": s.engine_reps,
                   "note": "fastest of `runs` identical runs (outputs checked equal)",
                   "turn_seconds": [t.seconds for t in logs],
                   "prefill_tokens_per_turn": [t.prefill_computed for t in logs]},
        "transformers_batched": {"seconds": batched_s, "tokens_per_s": generated / batched_s,
                                 "turn_seconds": batched_turns},
        "transformers_one_at_a_time": {
            "seconds": serial_full_s, "tokens_per_s": generated / serial_full_s,
            "measured_agents": n_serial, "measured_seconds": serial_s,
            "extrapolated": n_serial < s.agents,
            "note": (f"timed for the first {n_serial} agents (all turns) and scaled by {s.agents}/{n_serial}"
                     if n_serial < s.agents else "all agents timed"),
        },
        "speedup_vs_batched": vs_batched,
        "speedup_vs_one_at_a_time": vs_serial,
        "greedy_agreement": {
            "one_at_a_time_identical": same / total, "compared": total,
            "first_differing_position": first_diff,
            "batched_identical": batched_same / (s.agents * s.turns),
        },
        "target": "engine >= 3x transformers batched and >= 10x transformers one at a time",
        "meets_target": bool(vs_batched and vs_serial and vs_batched >= 3 and vs_serial >= 10),
    }


def section_persona_cache(b: Bench) -> dict:
    s = b.s
    on = b.cache_on_logs or engine_conversations(b, cache=True)
    off = engine_conversations(b, cache=False)
    later = slice(1, None)  # turns 2.. : the turns where an agent's own history can be reused

    def summary(logs: list[TurnLog]) -> dict:
        ttft = [x for t in logs[later] for x in t.ttft]
        return {"prefill_tokens_later_turns": sum(t.prefill_computed for t in logs[later]),
                "mean_ttft_ms_later_turns": 1e3 * statistics.fmean(ttft) if ttft else None,
                "prefill_tokens_per_turn": [t.prefill_computed for t in logs],
                "mean_ttft_ms_per_turn": [1e3 * statistics.fmean(t.ttft) for t in logs],
                "cached_tokens_per_turn": [t.cached for t in logs],
                "seconds": sum(t.seconds for t in logs)}

    son, soff = summary(on), summary(off)
    prefill_x = ratio(soff["prefill_tokens_later_turns"], son["prefill_tokens_later_turns"])
    ttft_x = ratio(soff["mean_ttft_ms_later_turns"] or 0, son["mean_ttft_ms_later_turns"] or 0)
    # in turn 1 the preamble could be computed once and shared; it is only if someone finished first
    turn1_ideal = s.prompt + (s.agents - 1) * (s.prompt - s.shared + s.obs) + s.obs
    return {
        "cache_on": son, "cache_off": soff,
        "prefill_reduction": prefill_x, "ttft_reduction": ttft_x,
        "turn1_prefill_tokens": on[0].prefill_computed,
        "turn1_prefill_if_preamble_shared": turn1_ideal,
        "target": ">= 10x fewer prefill tokens and >= 5x lower mean TTFT in turns 2+",
        "meets_target": bool(prefill_x and ttft_x and prefill_x >= 10 and ttft_x >= 5),
    }


# -- eviction ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cadence:
    """Agent i acts at tick t when (t + phase) % period == 0; phases stagger agents of one period."""

    period: int
    phase: int

    def acts(self, t: int) -> bool:
        return (t + self.phase) % self.period == 0

    def ticks_until(self, t: int) -> int:
        return -(t + self.phase) % self.period


def cadences(s: Sizes, n: int) -> list[Cadence]:
    out = []
    for i in range(n):
        p = s.periods[i % len(s.periods)]
        out.append(Cadence(p, (i // len(s.periods)) % p))
    return out


def eviction_plan(s: Sizes, n: int) -> dict:
    """Working set (KV of every conversation at its longest, preamble once) and the busiest tick."""
    cads, step = cadences(s, n), s.obs + s.evict_reply
    final = [s.prompt + step * sum(c.acts(t) for t in range(s.ticks)) for c in cads]
    working = s.shared + sum(f - s.shared for f in final)
    peak, length = 0, [s.prompt] * n
    for t in range(s.ticks):
        acting = [i for i, c in enumerate(cads) if c.acts(t)]
        for i in acting:
            length[i] += step
        peak = max(peak, s.shared + sum(length[i] - s.shared for i in acting))
    return {"working_set_tokens": working, "busiest_tick_tokens": peak, "final_lengths": final}


def run_eviction(b: Bench, kv_tokens: int, use_hints: bool) -> dict:
    s, n = b.s, b.s.agents
    cads = cadences(s, n)
    agents = make_agents(s, b.seed + 1, n, s.ticks)  # observations indexed by tick
    engine = b.engine(kv_cache_tokens=kv_tokens)
    conv = [list(p) for p in agents.personas]
    computed = [0] * n  # tokens of each conversation whose KV the engine has computed at some point
    prefill, generated, seconds, new = 0, 0, 0.0, 0
    for t in range(s.ticks):
        acting = [i for i, c in enumerate(cads) if c.acts(t)]
        if use_hints:  # 0 for agents acting now: their prefixes are needed this very tick
            for i, c in enumerate(cads):
                engine.hint(agents.names[i], next_use=c.ticks_until(t))

        def finished(k: int, acting=acting, t=t) -> None:
            if use_hints:  # done for this tick: next needed a full period from now
                engine.hint(agents.names[acting[k]], next_use=cads[acting[k]].period)

        prompts = [conv[i] + agents.observations[t][i] for i in acting]
        new += sum(len(p) - computed[i] for i, p in zip(acting, prompts, strict=True))
        turn = run_turn(engine, prompts, [agents.names[i] for i in acting], s.evict_reply, finished)
        for i, p, out in zip(acting, prompts, turn.outputs, strict=True):
            conv[i] = p + out
            computed[i] = len(conv[i]) - 1  # the last sampled token is never fed back
        prefill += turn.prefill_computed
        generated += sum(len(o) for o in turn.outputs)
        seconds += turn.seconds
    st = engine.stats()
    return {"seconds": seconds, "tokens_per_s": generated / seconds, "generated_tokens": generated,
            "prefill_tokens": prefill, "new_tokens": new, "prefill_beyond_new_tokens": prefill - new,
            "preemptions": st["preemptions"],
            "preemption_recomputed_tokens": st["recomputed_tokens"], "prefix_cache_hit_rate":
            st["prefix_cache_hit_rate"], "kv_pool_tokens": st["kv_blocks_total"] * st["block_size"]}


def section_eviction(b: Bench) -> dict:
    s = b.s
    plan = eviction_plan(s, s.agents)
    pool = plan["working_set_tokens"] // 2
    log(f"eviction: working set {plan['working_set_tokens']} tokens, pool {pool}, "
        f"busiest tick needs {plan['busiest_tick_tokens']}")
    log("  unbounded pool (baseline prefill)")
    base = run_eviction(b, 2 * plan["working_set_tokens"] + 4 * s.max_batched_tokens, use_hints=False)
    log("  half pool, hints")
    hinted = run_eviction(b, pool, use_hints=True)
    log("  half pool, LRU")
    lru = run_eviction(b, pool, use_hints=False)
    for r in (hinted, lru):  # what the small pool cost: prefill beyond the unbounded run's (includes preemption)
        r["recomputed_tokens"] = r["prefill_tokens"] - base["prefill_tokens"]
    recompute_x = ratio(lru["recomputed_tokens"], hinted["recomputed_tokens"])
    if recompute_x is None and lru["recomputed_tokens"] > 0:
        recompute_x = "inf"  # hints recomputed nothing; JSON has no infinity
    throughput_x = ratio(hinted["tokens_per_s"], lru["tokens_per_s"])
    return {
        "workload": {"agents": s.agents, "periods": list(s.periods), "ticks": s.ticks,
                     "observation_tokens": s.obs, "reply_tokens": s.evict_reply,
                     "working_set_tokens": plan["working_set_tokens"], "kv_pool_tokens": pool,
                     "busiest_tick_tokens": plan["busiest_tick_tokens"],
                     "note": "periods 1/2/4 would keep a third of the agents busy every tick, whose KV alone "
                             "exceeds half the working set (the run would measure preemption, not eviction); "
                             "the default periods keep the busiest tick inside the pool"},
        "unbounded_pool": base, "hints": hinted, "lru": lru,
        "recomputed_tokens_definition": "prefill tokens beyond those of the same workload on an unbounded pool "
                                        "(which recomputes nothing but may share the preamble less); recompute "
                                        "after preemption is included and also shown as "
                                        "preemption_recomputed_tokens",
        "recompute_ratio_lru_over_hints": recompute_x,
        "throughput_ratio_hints_over_lru": throughput_x,
        "target": "LRU recomputes >= 1.3x the tokens of the hint-driven run",
        "meets_target": recompute_x == "inf" or bool(recompute_x and recompute_x >= 1.3),
        "throughput_meets_1_3x": bool(throughput_x and throughput_x >= 1.3),
    }


# -- roofline ---------------------------------------------------------------------------------


def moe_layers(model: Model) -> list[MoE]:
    return [m for m in model.modules() if isinstance(m, MoE)]


def decode_steps(b: Bench, batch: int, context: int, steps: int, warm: int = 2, blocks: int = 3,
                 **config) -> dict:
    """Time `blocks` runs of `steps` decode-only steps of `batch` sequences of about `context` tokens;
    the fastest block is reported (a short block is easily slowed by something else on the machine).
    `config`: EngineConfig fields of the engine that runs them."""
    s = b.s
    budget = s.max_batched_tokens
    # requests that finish prefill early decode while the rest prefill: leave them room to keep going
    max_tokens = -(-batch * context // budget) + warm + blocks * steps + 4
    engine = b.engine(kv_cache_tokens=batch * (context + max_tokens + 2 * 16), enable_prefix_cache=False, **config)
    gen = torch.Generator().manual_seed(b.seed + 2)
    prompts = [random_ids(gen, context, s.vocab) for _ in range(batch)]
    handles = [engine.submit(p, greedy(max_tokens)) for p in prompts]
    while not all(h.token_ids for h in handles):
        engine.step()
    for _ in range(warm):
        engine.step()
    runs = [_decode_block(b, engine, prompts, handles, steps) for _ in range(blocks)]
    cost, times, hits, ctx = min(runs, key=lambda r: sum(r[1]))
    total = sum(times)
    hw = b.hardware
    out = {"batch": batch, "mean_context": statistics.fmean(ctx), "steps": steps, "blocks": blocks,
           "block_mean_step_ms": [1e3 * sum(r[1]) / steps for r in runs],
           "mean_step_ms": 1e3 * total / steps, "median_step_ms": 1e3 * statistics.median(times),
           "mean_experts_hit_per_layer": statistics.fmean(hits),
           "bytes_per_step": cost.bytes / steps, "flops_per_step": cost.flops / steps,
           "tokens_per_s": batch * steps / total}
    out.update(roofline.StepCost(cost.bytes / steps, cost.flops / steps).fraction(
        total / steps, hw["bandwidth_gbps"], hw["matmul_gflops"]))
    return out


def _decode_block(b: Bench, engine: Engine, prompts: list[list[int]], handles: list, steps: int):
    """`steps` timed decode steps -> (summed StepCost, step seconds, mean experts hit, mean context) per step."""
    layers = moe_layers(b.model)
    batch = len(handles)
    cost = roofline.StepCost(0.0, 0.0)
    times, hits, ctx = [], [], []
    for _ in range(steps):
        lens = [len(p) + len(h.token_ids) for p, h in zip(prompts, handles, strict=True)]  # incl. the new token
        computed = engine.stats()["tokens_computed"]
        t0 = time.perf_counter()
        engine.step()
        times.append(time.perf_counter() - t0)
        assert engine.stats()["tokens_computed"] - computed == batch, "a timed step was not decode-only"
        hit = [int(m.last_ids.unique().numel()) for m in layers]
        c = roofline.decode_step_cost(b.model.cfg, lens, hit)
        cost = roofline.StepCost(cost.bytes + c.bytes, cost.flops + c.flops)
        hits.append(statistics.fmean(hit))
        ctx.append(statistics.fmean(lens))
    return cost, times, hits, ctx


def section_roofline(b: Bench, quick: bool) -> dict:
    s = b.s
    if b.hardware is None:
        b.hardware = roofline.measure(quick, b.device)
    rows = {}
    for batch in s.roof_batches:
        log(f"roofline: decode at batch {batch}, context {s.roof_context}")
        rows[f"batch_{batch}"] = decode_steps(b, batch, s.roof_context, s.roof_steps)
    big = rows[f"batch_{max(s.roof_batches)}"]
    if b.device.type == "cpu":  # the fused decode blocks (runtime/fused.py) against the modules, same sizes
        log(f"roofline: decode at batch {max(s.roof_batches)}, fused blocks off")
        modules = decode_steps(b, max(s.roof_batches), s.roof_context, s.roof_steps, fused_decode=False)
        rows["fused_blocks"] = {"modules_mean_step_ms": modules["mean_step_ms"],
                                "modules_fraction_of_limit": modules["fraction_of_limit"],
                                "fused_mean_step_ms": big["mean_step_ms"],
                                "speedup": ratio(modules["mean_step_ms"], big["mean_step_ms"])}
    return {
        **rows,
        "limits": {"bandwidth_gbps": b.hardware["bandwidth_gbps"], "matmul_gflops": b.hardware["matmul_gflops"]},
        "weights_mib": roofline.weight_bytes(b.model) / 2**20,
        "cost_model": "bytes: attention + router weights of every layer, the distinct experts the step's tokens "
                      "hit (from the routing), lm_head and final norm, embedding rows, KV cache read and write; "
                      "flops: 2 x used weights per token (top-k experts), plus QK^T and PV over the context",
        "target": f">= 50% of the measured limit at batch {max(s.roof_batches)}",
        "meets_target": big["fraction_of_limit"] >= 0.5,
    }


# -- int8 KV cache -----------------------------------------------------------------------------


def decode_ready(b: Bench, batch: int, context: int, steps: int, model: Model | None = None,
                 **config) -> tuple[Engine, list, list]:
    """An engine with `batch` sequences of `context` tokens prefilled and decoding, room left for `steps` more
    decode steps: (engine, prompts, handles). `config`: EngineConfig fields; `model`: other weights."""
    max_tokens = -(-batch * context // b.s.max_batched_tokens) + steps + 8
    engine = b.engine(model, kv_cache_tokens=batch * (context + max_tokens + 2 * 16), enable_prefix_cache=False,
                      **config)
    gen = torch.Generator().manual_seed(b.seed + 3)
    prompts = [random_ids(gen, context, b.s.vocab) for _ in range(batch)]
    handles = [engine.submit(p, greedy(max_tokens)) for p in prompts]
    while not all(h.token_ids for h in handles):
        engine.step()
    for _ in range(2):
        engine.step()
    return engine, prompts, handles


def section_kv_int8(b: Bench, repeats: int = 5) -> dict:
    """int8 KV against float32: tokens a GiB holds (from the pools' own tensors), and decode step times at each
    roofline batch, the two engines' timed blocks interleaved (the median block of each reported)."""
    s = b.s
    out = {}
    for batch in s.roof_batches:
        log(f"kv_int8: decode at batch {batch}, context {s.roof_context}, float32 and int8 interleaved")
        runs = {dtype: decode_ready(b, batch, s.roof_context, repeats * s.roof_steps, kv_dtype=dtype)
                for dtype in ("float32", "int8")}
        blocks = {dtype: [] for dtype in runs}
        for _ in range(repeats):
            for dtype, (engine, prompts, handles) in runs.items():
                _, times, _, _ = _decode_block(b, engine, prompts, handles, s.roof_steps)
                blocks[dtype].append(1e3 * sum(times) / s.roof_steps)
        f32, i8 = (statistics.median(blocks[d]) for d in ("float32", "int8"))
        out[f"batch_{batch}"] = {"float32_step_ms": f32, "int8_step_ms": i8, "float32_blocks_ms": blocks["float32"],
                                 "int8_blocks_ms": blocks["int8"], "int8_speedup": ratio(f32, i8),
                                 "fused": runs["int8"][0].fused is not None}
        per_gib = {d: runs[d][0].pool.num_tokens * 2**30 / sum(t.nbytes for t in runs[d][0].pool.tensors())
                   for d in runs}
        out["tokens_per_gib"] = per_gib
        del runs
    ratio_tokens = out["tokens_per_gib"]["int8"] / out["tokens_per_gib"]["float32"]
    big = out[f"batch_{max(s.roof_batches)}"]
    return {
        **out,
        "resident_tokens_ratio": ratio_tokens,
        "target": f">= 3.5x the tokens per GiB; decode at batch {max(s.roof_batches)} no slower than float32",
        # timing noise on a shared machine: "no slower" allows 3%
        "meets_target": ratio_tokens >= 3.5 and big["int8_step_ms"] <= 1.03 * big["float32_step_ms"],
    }


# -- quantised weights ----------------------------------------------------------------------------


def weights_model(b: Bench, fmt: str) -> Model:
    """The benchmark model with its weights in `fmt` (a copy; float32 is the shared model)."""
    if fmt == "float32":
        return b.model
    import copy

    from swarm.runtime.quant import quantize_blocks

    return quantize_blocks(copy.deepcopy(b.model), fmt)


def timed_steps(engine: Engine, batch: int, steps: int) -> float:
    """Seconds for `steps` decode-only steps of `batch` sequences. Checked after the block, not inside it:
    `stats()` counts the experts' routing kept since the last call, which a step of one sequence would feel."""
    before = engine.stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        engine.step()
    seconds = time.perf_counter() - t0
    after = engine.stats()
    # every running sequence computes at least one token a step: `batch` tokens a step means no prefill ran
    assert (after["steps"] - before["steps"], after["tokens_computed"] - before["tokens_computed"]) == \
        (steps, batch * steps), "a timed step was not decode-only"
    return seconds


def section_weights(b: Bench, repeats: int = 5) -> dict:
    """Decode tokens/s at each roofline batch with the weights in float32, int8 (a scale per row), Q8_0 / Q4_0
    blocks and bf16 / f16 halves (the native kernels, fused blocks included): the engines'
    timed blocks are interleaved in a new random order each round, and the median block of each reported (the
    CPU is shared: a block can be slowed by others, and its speed drifts)."""
    s = b.s
    if b.device.type != "cpu":
        return {"skipped": "quantised weights are a CPU path", "meets_target": True}
    models = {fmt: weights_model(b, fmt) for fmt in WEIGHT_FORMATS}
    out = {"weights_mib": {fmt: sum(t.nbytes for t in m.state_dict().values()) / 2**20 for fmt, m in models.items()}}
    for batch in s.roof_batches:
        log(f"weights: decode at batch {batch}, context {s.roof_context}, {', '.join(WEIGHT_FORMATS)} interleaved")
        runs = {fmt: decode_ready(b, batch, s.roof_context, repeats * s.roof_steps, model=m)[0]
                for fmt, m in models.items()}
        blocks = {fmt: [] for fmt in runs}
        order = random.Random(b.seed + batch)
        for _ in range(repeats):
            for fmt in order.sample(list(runs), len(runs)):
                blocks[fmt].append(batch * s.roof_steps / timed_steps(runs[fmt], batch, s.roof_steps))
        med = {fmt: statistics.median(v) for fmt, v in blocks.items()}
        out[f"batch_{batch}"] = {"tokens_per_s": med, "blocks_tokens_per_s": blocks,
                                 "vs_float32": {fmt: med[fmt] / med["float32"] for fmt in med},
                                 "fused": {fmt: e.fused is not None for fmt, e in runs.items()}}
        del runs
    one = out[f"batch_{min(s.roof_batches)}"]["vs_float32"]
    return {
        **out,
        "target": "batch-1 decode: int8 and Q8_0 >= 1.8x float32, Q4_0 >= 3x (issue 27)",
        "meets_target": one["int8"] >= 1.8 and one["q8_0"] >= 1.8 and one["q4_0"] >= 3.0,
    }


# -- overhead ---------------------------------------------------------------------------------


class Timed:
    """Wraps an engine object's method to add up the seconds spent in it."""

    def __init__(self, obj, name: str):
        self.seconds, self._fn = 0.0, getattr(obj, name)
        setattr(obj, name, self)

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return self._fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0


def overhead_run(b: Bench, cache: bool) -> dict:
    """Rounds of requests whose prompts share no first token; the pool fills so the cache must evict."""
    s = b.s
    per_round = s.over_requests * (s.over_prompt + s.over_reply)
    engine = b.engine(kv_cache_tokens=per_round * 3 // 2, enable_prefix_cache=cache)
    schedule, finish = Timed(engine.scheduler, "schedule"), Timed(engine.scheduler, "finish")
    gen = torch.Generator().manual_seed(b.seed + 3)
    seconds, generated, k = 0.0, 0, 0
    for _ in range(s.over_rounds):
        prompts = []
        for _ in range(s.over_requests):
            prompts.append([FIRST_ID + k % (s.vocab - FIRST_ID)] + random_ids(gen, s.over_prompt - 1, s.vocab))
            k += 1
        t0 = time.perf_counter()
        outs = engine.generate(prompts, greedy(s.over_reply))
        seconds += time.perf_counter() - t0
        generated += sum(len(o.token_ids) for o in outs)
    st = engine.stats()
    return {"seconds": seconds, "tokens_per_s": generated / seconds, "bookkeeping_s": schedule.seconds +
            finish.seconds, "hit_rate": st["prefix_cache_hit_rate"], "cached_blocks": st["kv_blocks_cached"]}


def section_overhead(b: Bench) -> dict:
    s = b.s
    runs = {True: [], False: []}
    for rep in range(s.over_reps):  # alternate so drift in machine speed hits both alike
        for cache in (True, False):
            log(f"overhead: rep {rep + 1}/{s.over_reps}, prefix cache {'on' if cache else 'off'}")
            runs[cache].append(overhead_run(b, cache))

    def best(rs: list[dict]) -> dict:
        return {"tokens_per_s_best": max(r["tokens_per_s"] for r in rs),
                "tokens_per_s_median": statistics.median(r["tokens_per_s"] for r in rs),
                "scheduler_seconds_median": statistics.median(r["bookkeeping_s"] for r in rs),
                "seconds_median": statistics.median(r["seconds"] for r in rs),
                "hit_rate": rs[-1]["hit_rate"], "cached_blocks_at_end": rs[-1]["cached_blocks"]}

    on, off = best(runs[True]), best(runs[False])
    rel = on["tokens_per_s_best"] / off["tokens_per_s_best"]
    return {
        "workload": {"rounds": s.over_rounds, "requests_per_round": s.over_requests,
                     "prompt_tokens": s.over_prompt, "reply_tokens": s.over_reply, "repetitions": s.over_reps},
        "cache_on": on, "cache_off": off,
        "throughput_on_over_off": rel, "overhead_fraction": 1 - rel,
        "median_throughput_on_over_off": on["tokens_per_s_median"] / off["tokens_per_s_median"],
        "scheduler_share_on": on["scheduler_seconds_median"] / on["seconds_median"],
        "scheduler_share_off": off["scheduler_seconds_median"] / off["seconds_median"],
        "target": "prefix-cache bookkeeping costs <= 3% throughput at 0% hits (best of repetitions)",
        "meets_target": rel >= 0.97,
    }


# -- profiling ------------------------------------------------------------------------------


def _short(path: str) -> str:
    for marker in ("/runtime/", "/kernels/", "/benchmarks/", "/torch/", "/transformers/"):
        if marker in path:
            return marker.strip("/") + "/" + path.split(marker, 1)[1]
    return Path(path).name


def cprofile_top(fn: Callable[[], object], n: int = 20) -> dict:
    """Python-level hot spots: own time (tottime) and inclusive time (cumtime), as shares of the whole."""
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.runcall(fn)
    wall = time.perf_counter() - t0
    st = pstats.Stats(prof).stats  # (file, line, name) -> (calls, ncalls, tottime, cumtime, callers)
    rows = [(f"{_short(f)}:{line}({name})" if line else name, v[1], v[2], v[3]) for (f, line, name), v in st.items()]
    own = sorted(rows, key=lambda r: -r[2])[:n]
    incl = sorted((r for r in rows if "/runtime/" in r[0] or "kernels/" in r[0] or "runtime/" in r[0]),
                  key=lambda r: -r[3])[:n]
    return {"wall_s": wall,
            "own_time": [{"fn": r[0], "calls": r[1], "s": round(r[2], 3), "share": round(r[2] / wall, 3)}
                         for r in own],
            "inclusive_time_engine_functions": [{"fn": r[0], "calls": r[1], "s": round(r[3], 3),
                                                 "share": round(r[3] / wall, 3)} for r in incl]}


def torch_profile_top(fn: Callable[[], object], n: int = 20, shapes: bool = False) -> dict:
    """Operator-level hot spots: self CPU time per aten op (optionally per op and input shapes), as shares
    of the profiled wall time. Recording shapes has inflated some ops (index_select) in some runs: opt-in."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=shapes) as prof:
        t0 = time.perf_counter()
        fn()
        wall = time.perf_counter() - t0  # taken inside: stopping the profiler takes long and is not the engine's
    by_op = prof.key_averages(group_by_input_shape=shapes)
    total_ops = sum(e.self_cpu_time_total for e in by_op) / 1e6
    top = sorted(by_op, key=lambda e: -e.self_cpu_time_total)[:n]
    return {"wall_s": wall, "torch_ops_s": total_ops, "python_and_other_s": wall - total_ops,
            "ops": [{"op": e.key, **({"shapes": str(e.input_shapes)[:160]} if shapes else {}), "calls": e.count,
                     "self_s": round(e.self_cpu_time_total / 1e6, 3),
                     "share": round(e.self_cpu_time_total / 1e6 / wall, 3)} for e in top]}


def decode_engine_at(b: Bench, batch: int, context: int, steps: int) -> Engine:
    """An engine whose `batch` requests are all past prefill, with room for `steps` more decode steps."""
    s = b.s
    eng = b.engine(kv_cache_tokens=batch * (context + steps + 64) + 256, enable_prefix_cache=False)
    gen = torch.Generator().manual_seed(b.seed + 2)
    max_tokens = -(-batch * context // s.max_batched_tokens) + steps + 8
    handles = [eng.submit(random_ids(gen, context, s.vocab), greedy(max_tokens)) for _ in range(batch)]
    while not all(h.token_ids for h in handles):
        eng.step()
    return eng


def section_profile(b: Bench, steps: int = 32) -> dict:
    """Where the engine's time goes: the multi-agent run and decode steps at each roofline batch size."""
    s = b.s
    kv = s.agents * (s.prompt + s.turns * (s.obs + s.reply)) + 4 * s.max_batched_tokens
    agents = make_agents(s, b.seed, s.agents, s.turns)

    def multi_agent():
        run_conversations(b.engine(kv_cache_tokens=kv), agents, s.turns, s.reply)

    def decode(eng: Engine) -> Callable[[], None]:
        return lambda: [eng.step() for _ in range(steps)]

    out = {}
    log("profile: multi_agent engine run under cProfile")
    out["multi_agent_cprofile"] = cprofile_top(multi_agent)
    log("profile: multi_agent engine run under torch.profiler")
    out["multi_agent_torch"] = torch_profile_top(multi_agent)
    for batch in s.roof_batches:
        log(f"profile: {steps} decode steps at batch {batch}")
        out[f"decode_b{batch}_cprofile"] = cprofile_top(decode(decode_engine_at(b, batch, s.roof_context, steps)))
        out[f"decode_b{batch}_torch"] = torch_profile_top(decode(decode_engine_at(b, batch, s.roof_context, steps)))
    batch = max(s.roof_batches)
    out[f"decode_b{batch}_torch_by_shape"] = {
        **torch_profile_top(decode(decode_engine_at(b, batch, s.roof_context, steps)), shapes=True),
        "note": "recording shapes has inflated aten::index_select several-fold in some runs; take shares from "
                f"decode_b{batch}_torch and use this only to tell the shapes of one op apart",
    }
    return out


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run in well under a minute")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--model-dir", type=Path, default=None, help="write the model here, or reuse the one there")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, or cuda: the engine (its Triton kernels) and transformers "
                                                   "both run there")
    p.add_argument("--no-cuda-graphs", action="store_true", help="on a GPU, run decode steps eagerly (no graphs)")
    p.add_argument("--profile", action="store_true", help="add cProfile and torch.profiler hot spots of the engine")
    p.add_argument("--output", type=Path, default=None, help="also write the JSON to this file")
    sizes = p.add_argument_group("sizes (defaults: the full run; --quick shrinks them)")
    for f in fields(Sizes):
        flag = "--" + f.name.replace("_", "-")
        kind = str if f.type.startswith("tuple") else int
        sizes.add_argument(flag, type=kind, default=None, help=f"default {getattr(Sizes(), f.name)}")
    return p.parse_args(argv)


def sizes_from(args: argparse.Namespace) -> Sizes:
    s = QUICK if args.quick else Sizes()
    changes = {}
    for f in fields(Sizes):
        v = getattr(args, f.name)
        if v is not None:
            changes[f.name] = tuple(int(x) for x in v.split(",")) if f.type.startswith("tuple") else v
    return replace(s, **changes)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    sections = [x.strip() for x in args.sections.split(",") if x.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    s = sizes_from(args)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    started = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="swarm-bench-") as tmp:
        folder = ensure_model(args.model_dir or Path(tmp) / "model", model_config(s))
        if args.device != "cpu" and not torch.cuda.is_available():
            raise SystemExit(f"--device {args.device}: no CUDA GPU here")
        b = Bench(s, folder, args.seed, args.device, cuda_graphs=not args.no_cuda_graphs)
        b.warm_up()
        result: dict = {
            "config": {"sizes": {f.name: getattr(s, f.name) for f in fields(Sizes)}, "quick": args.quick,
                       "torch": torch.__version__, "threads": torch.get_num_threads(), "seed": args.seed,
                       "git": git_revision(), "cpu_count": os.cpu_count(), "device": str(b.device),
                       "cuda_graphs": b.cuda_graphs and b.device.type == "cuda",
                       "device_name": torch.cuda.get_device_name(b.device) if b.device.type == "cuda" else "cpu",
                       "weights_mib": roofline.weight_bytes(b.model) / 2**20},
        }
        runners = {
            "hardware": lambda: section_hardware(b, args.quick),
            "multi_agent": lambda: section_multi_agent(b),
            "persona_cache": lambda: section_persona_cache(b),
            "eviction": lambda: section_eviction(b),
            "roofline": lambda: section_roofline(b, args.quick),
            "kv_int8": lambda: section_kv_int8(b, 3 if args.quick else 5),
            "weights": lambda: section_weights(b, 3 if args.quick else 5),
            "overhead": lambda: section_overhead(b),
        }
        for name in SECTIONS:  # fixed order: persona_cache reuses multi_agent's run, roofline the hardware
            if name in sections:
                load = MachineLoad()
                result[name] = runners[name]()
                result[name]["machine"] = load.report()
                result[name]["section_seconds"] = result[name]["machine"]["wall_s"]
                log(f"{name} done in {result[name]['section_seconds']:.1f}s"
                    + (" (DISTURBED: other processes used the CPU)" if result[name]["machine"]["disturbed"] else ""))
        if args.profile:
            result["profile"] = section_profile(b)
        result["summary"] = {name: result[name]["meets_target"] for name in SECTIONS if name in result}
        result["disturbed_sections"] = [n for n in SECTIONS if n in result and result[n]["machine"]["disturbed"]]
        result["total_seconds"] = time.perf_counter() - started

    return roofline.emit(result, args.output)


if __name__ == "__main__":
    main()
