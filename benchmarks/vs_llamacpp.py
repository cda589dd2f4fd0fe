"""swarm against llama.cpp on the same GGUF files, side by side in one run: decode tokens/s of one sequence,
of 32 sequences, and of 32 sequences sharing their prompt, with float32, Q8_0 and Q4_0 weights.

    bash benchmarks/build_llamacpp.sh                   # once: llama.cpp's tools in .llamacpp/build/bin
    .venv/bin/python benchmarks/vs_llamacpp.py          # about 3 minutes on 2 cores
    .venv/bin/python benchmarks/vs_llamacpp.py --quick  # smoke run, tiny model, seconds

The model is benchmarks/engine.py's random-weight Qwen3-MoE (hidden 384, 6 layers, 8 experts top-2). It is
written once as a float32 GGUF file (llama.cpp's metadata and tensor names, with the `gguf` package: llama.cpp's
own converter refuses a tokenizer it has no hash for), and llama.cpp's `llama-quantize --pure` makes the Q8_0
and Q4_0 files from it: every matrix in that format, embeddings and output included, as swarm's `quantize=` does.
Both engines load those three files.

llama.cpp's figures are `llama-batched-bench`'s decode rate (S_TG: the `--new` decode steps after a `--prompt`
token prompt of random ids; `-pps` for the shared prompt), with its defaults otherwise (f16 KV cache, flash
attention as it decides) and `-t` the torch thread count. swarm's are the same steps through
`Engine.from_pretrained(file)` (a float16 KV cache, as llama.cpp's; the prefix cache on only for the shared
prompt), timed from the first decode-only step, sampling included. Each figure is the median of `--repeats`
runs, llama.cpp's and swarm's interleaved row by row (llama.cpp's run of a row, then swarm's, then the next
row: this shared machine's speed drifts over tens of seconds, so the two sides of a ratio are measured moments
apart); a row's ratio is the median of its pairs' ratios. Before timing, both engines continue the same prompt
greedily (`llama-simple`) on the float32 file: `agreement` says whether their texts match, so the two read the file the
same way.

Prints one JSON object (progress on stderr), with the memory bandwidth and matmul FLOP/s measured in the run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))  # run as a script: the helpers sit beside it
sys.path.insert(0, str(REPO))  # the GGUF writer the tests use
import engine as bench  # noqa: E402
import roofline  # noqa: E402

from swarm.runtime import Engine, EngineConfig  # noqa: E402

FORMATS = ("F32", "Q8_0", "Q4_0")
TOOLS = ("llama-batched-bench", "llama-quantize", "llama-simple")
AGREE_PROMPT = "the village square at dawn"


def log(msg: str) -> None:
    print(f"[vs-llama.cpp {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def tool(bin_dir: Path, name: str) -> str:
    path = bin_dir / name
    if not path.is_file():
        raise SystemExit(f"{path} not found: build llama.cpp's tools with `bash benchmarks/build_llamacpp.sh` "
                         f"or point --llamacpp at the folder holding {', '.join(TOOLS)}")
    return str(path)


def run(cmd: list[str]) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout + done.stderr


# -- the model files -------------------------------------------------------------------------------


def write_files(work: Path, sizes: bench.Sizes, bin_dir: Path) -> dict[str, Path]:
    """The float32 GGUF file of the benchmark model and its --pure Q8_0 / Q4_0 quantisations by llama.cpp."""
    from tests.runtime.gguf_files import write_gguf

    folder = bench.ensure_model(work / "model", bench.model_config(sizes))
    files = {"F32": work / "model-F32.gguf"}
    log("writing the float32 GGUF file")
    write_gguf(folder, files["F32"], "F32")
    for fmt in FORMATS[1:]:
        files[fmt] = work / f"model-{fmt}.gguf"
        log(f"llama-quantize --pure {fmt}")
        run([tool(bin_dir, "llama-quantize"), "--pure", str(files["F32"]), str(files[fmt]), fmt])
    return files


# -- llama.cpp ---------------------------------------------------------------------------------------


ROW_TRIES = 20  # runs of llama-batched-bench before giving up on its row


def llama_rate(bin_dir: Path, path: Path, args: argparse.Namespace, key: str) -> float:
    """llama-batched-bench's decode tokens/s for one row: "batch_1", "batch_N" or "shared_N"."""
    n = 1 if key == "batch_1" else args.batch
    steps = steps_timed(args, n)
    cmd = [tool(bin_dir, "llama-batched-bench"), "-m", str(path), "-t", str(args.threads),
           "-c", str(1024 * (n * (args.prompt + steps) // 1024 + 2)), "-b", "2048", "-ub", "512",
           "-npp", str(args.prompt), "-ntg", str(steps), "-npl", str(n), "--output-format", "jsonl"]
    if key.startswith("shared"):
        cmd.append("-pps")
    # llama.cpp's logger writes from its own thread, and the last row is often lost at exit (about half of the
    # runs on some machines, from stdout and a --log-file alike): run again
    for _ in range(ROW_TRIES):
        rows = [json.loads(line) for line in run(cmd).splitlines() if line.startswith("{")]
        if rows:
            return rows[0]["speed_tg"]
    raise SystemExit(f"llama-batched-bench printed no row {ROW_TRIES} times: {' '.join(cmd)}")


def llama_text(bin_dir: Path, path: Path, new: int) -> str:
    """llama-simple's greedy continuation of AGREE_PROMPT (its stdout is the prompt and the new text)."""
    done = subprocess.run([tool(bin_dir, "llama-simple"), "-m", str(path), "-n", str(new), AGREE_PROMPT],
                          capture_output=True, text=True, errors="replace")
    if done.returncode:
        raise SystemExit(f"llama-simple failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


# -- swarm ---------------------------------------------------------------------------------------------


def steps_timed(args: argparse.Namespace, batch: int) -> int:
    """Decode steps a row times: `--new`, and four times that for one sequence, whose steps take about a
    millisecond (32 of them would be too short a window on a shared machine). The same for both engines."""
    return args.new * (4 if batch == 1 else 1)


class SwarmRun:
    """One engine over a file with its sequences prefilled: `block()` times `steps_timed` decode-only steps.
    One sequence starts again from its prompt for each block, as llama.cpp's run does (so its context spans
    the same positions); a batch goes on decoding (prefilling it again would cost more than the block)."""

    def __init__(self, path: Path, batch: int, shared: bool, args: argparse.Namespace, seed: int):
        self.batch, self.new = batch, steps_timed(args, batch)
        self.room = self.new + 8 if batch == 1 else self.new * (args.repeats + 1) + 8
        self.engine = Engine.from_pretrained(path, EngineConfig(
            kv_cache_tokens=batch * (args.prompt + self.room + 32), max_batched_tokens=512,
            enable_prefix_cache=shared, kv_dtype="float16"))
        vocab = self.engine.model.cfg.vocab_size
        gen = torch.Generator().manual_seed(seed)
        self.prompts = [bench.random_ids(gen, args.prompt, vocab)] * batch if shared else \
            [bench.random_ids(gen, args.prompt, vocab) for _ in range(batch)]
        self.handles, self.timed = self._prefill(), False

    def _prefill(self) -> list:
        handles = [self.engine.submit(p, bench.greedy(self.room)) for p in self.prompts]
        while not all(h.token_ids for h in handles):  # prefill (a shared prompt's blocks computed once)
            self.engine.step()
        self.engine.step()
        return handles

    def block(self) -> float:
        if self.batch == 1 and self.timed:  # from the prompt again
            self.handles[0].cancel()
            self.handles = self._prefill()
        self.timed = True
        return self.batch * self.new / bench.timed_steps(self.engine, self.batch, self.new)


def swarm_text(path: Path, new: int) -> str:
    engine = Engine.from_pretrained(path, EngineConfig(kv_cache_tokens=1024))
    ids = engine.tokenizer.encode(AGREE_PROMPT)
    out = engine.generate([ids], bench.greedy(new))[0]
    return engine.tokenizer.decode(ids + list(out.token_ids))


# -- the run -------------------------------------------------------------------------------------------


def agreement(bin_dir: Path, path: Path, new: int) -> dict:
    theirs, ours = llama_text(bin_dir, path, new), swarm_text(path, new)
    same = 0
    while same < min(len(theirs), len(ours)) and theirs[same] == ours[same]:
        same += 1
    return {"prompt": AGREE_PROMPT, "new_tokens": new, "llama_cpp": theirs, "swarm": ours,
            "equal": theirs.strip() == ours.strip(), "common_prefix_chars": same}


def compare(bin_dir: Path, files: dict[str, Path], args: argparse.Namespace) -> dict:
    n, out = args.batch, {}
    for fmt, path in files.items():
        log(f"{fmt}: swarm prefills 1, {n} and {n} shared sequences of {args.prompt} tokens")
        runs = {"batch_1": SwarmRun(path, 1, False, args, 1), f"batch_{n}": SwarmRun(path, n, False, args, 2),
                f"shared_{n}": SwarmRun(path, n, True, args, 3)}
        ours: dict[str, list[float]] = {k: [] for k in runs}
        theirs: dict[str, list[float]] = {k: [] for k in runs}
        for rep in range(args.repeats):
            log(f"{fmt}: run {rep + 1} of {args.repeats}, each row llama.cpp then swarm")
            for key, r in runs.items():  # each pair back to back: the shared machine's speed drifts over seconds
                theirs[key].append(llama_rate(bin_dir, path, args, key))
                ours[key].append(r.block())
        del runs
        row = {}
        for key in ours:  # the ratio: the median of each pair's (the two runs moments apart, in the same weather)
            ratio = statistics.median(a / b for a, b in zip(ours[key], theirs[key], strict=True))
            row[key] = {"swarm": statistics.median(ours[key]), "llama_cpp": statistics.median(theirs[key]),
                        "ratio": ratio, "swarm_runs": ours[key], "llama_cpp_runs": theirs[key]}
        out[fmt] = row
    return out


def summary(rows: dict, n: int) -> dict:
    table = {fmt: {key: round(v["ratio"], 2) for key, v in row.items()} for fmt, row in rows.items()}
    one = all(row["batch_1"]["ratio"] >= 1.0 for row in rows.values())
    many = all(row[k]["ratio"] > 1.0 for row in rows.values() for k in (f"batch_{n}", f"shared_{n}"))
    f32 = rows["F32"]["batch_1"]["swarm"]
    return {"ratio_swarm_over_llama_cpp": table,
            "swarm_batch_1_vs_float32": {fmt: rows[fmt]["batch_1"]["swarm"] / f32 for fmt in rows},
            "target": f"batch-1 decode >= 1.0x llama.cpp at each format; batch-{n} and shared-prefix decode ahead "
                      "of it at each format (issue 27)",
            "batch_1_meets": one, f"batch_{n}_and_shared_meet": many, "meets_target": one and many}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--llamacpp", type=Path, default=REPO / ".llamacpp" / "build" / "bin",
                   help="folder holding llama-batched-bench, llama-quantize and llama-simple")
    p.add_argument("--quick", action="store_true", help="tiny model and sizes: a smoke run")
    p.add_argument("--prompt", type=int, default=None, help="prompt tokens per sequence (default 512)")
    p.add_argument("--new", type=int, default=None, help="decode steps timed per run (default 32)")
    p.add_argument("--batch", type=int, default=None, help="sequences of the batched rows (default 32)")
    p.add_argument("--repeats", type=int, default=None, help="runs per figure, the median kept (default 5)")
    p.add_argument("--threads", type=int, default=None, help="threads of both engines (default: all cores)")
    p.add_argument("--work-dir", type=Path, default=None, help="keep the model and GGUF files here")
    p.add_argument("--output", type=Path, default=None, help="also write the JSON to this file")
    args = p.parse_args(argv)
    roofline.fill_sizes(args, {"prompt": 512, "new": 32, "batch": 32, "repeats": 5},
                        {"prompt": 64, "new": 8, "batch": 4, "repeats": 1})
    args.threads = args.threads or os.cpu_count() or 1
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    for name in TOOLS:
        tool(args.llamacpp, name)
    torch.set_num_threads(args.threads)
    sizes = bench.QUICK if args.quick else bench.Sizes()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="swarm-vs-llamacpp-") as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        files = write_files(work, sizes, args.llamacpp)
        log("greedy text of both engines on the float32 file")
        agree = agreement(args.llamacpp, files["F32"], 16)
        log("measuring memory bandwidth and matmul FLOP/s")
        hardware = roofline.measure(args.quick)
        load = bench.MachineLoad()
        rows = compare(args.llamacpp, files, args)
        result = {
            "config": {"model": bench.model_config(sizes), "prompt": args.prompt, "new": args.new,
                       "new_batch_1": steps_timed(args, 1),
                       "batch": args.batch, "repeats": args.repeats, "threads": args.threads, "quick": args.quick,
                       "git": bench.git_revision(), "torch": torch.__version__,
                       "llama_cpp": {"tools": str(args.llamacpp), "quantize": "--pure",
                                     "defaults": "f16 KV cache, -fa auto, -b 2048 -ub 512"},
                       "swarm": {"kv_dtype": "float16"},
                       "file_mib": {fmt: p.stat().st_size / 2**20 for fmt, p in files.items()}},
            "hardware": hardware, "agreement": agree, "decode_tokens_per_s": rows,
            "summary": summary(rows, args.batch), "machine": load.report(),
            "total_seconds": time.perf_counter() - started,
        }
    return roofline.emit(result, args.output)


if __name__ == "__main__":
    main()
