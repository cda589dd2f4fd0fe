"""ONNX export: export time, file size, logit parity and greedy agreement with the engine, and decode
speed of onnxruntime next to the engine on the same weights.

    .venv/bin/python benchmarks/onnx_export.py                           # swarm-tiny, base and with an adapter merged
    .venv/bin/python benchmarks/onnx_export.py --model PATH --adapter NAME_OR_FOLDER

Parity: 3 prompts of different lengths in one left-padded batch, prefilled with a zero-length past,
then `--steps` greedy decode steps; every real position's logits are compared with `Engine.logits` of
that row's tokens, and the greedy tokens with `Engine.generate`. Speed: batch 1, greedy, onnxruntime
(CPU provider) against `Engine.generate`, alternating, best of `--reps`. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from swarm.runtime import Engine, SamplingParams, model_path
from swarm.runtime.onnx_export import export_onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import roofline  # noqa: E402


def greedy_batch(session: ort.InferenceSession, prompts: list[list[int]], steps: int):
    """Left-padded greedy decoding -> per row (logits of its real tokens [n, V], generated tokens)."""
    B, width = len(prompts), max(map(len, prompts))
    ids = np.array([[0] * (width - len(p)) + p for p in prompts])
    mask = np.array([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    pos = np.maximum(mask.cumsum(1) - 1, 0)
    past = {i.name: np.zeros((B, i.shape[1], 0, i.shape[3]), np.float32)
            for i in session.get_inputs() if i.name.startswith("past_key_values.")}
    rows, made = [[] for _ in prompts], [[] for _ in prompts]
    for step in range(steps + 1):
        logits, *present = session.run(None, {"input_ids": ids, "attention_mask": mask, "position_ids": pos, **past})
        for b in range(B):
            rows[b].append(logits[b][mask[b, -ids.shape[1]:] == 1])
        if step == steps:
            break
        nxt = logits[:, -1].argmax(-1)
        for b in range(B):
            made[b].append(int(nxt[b]))
        past = dict(zip(past, present, strict=True))
        ids, pos, mask = nxt[:, None], pos[:, -1:] + 1, np.concatenate([mask, np.ones((B, 1), mask.dtype)], 1)
    return [np.concatenate(r) for r in rows], made


def parity(engine: Engine, session, adapter, prompts, steps: int) -> dict:
    rows, made = greedy_batch(session, prompts, steps)
    errors = [float(np.abs(r - engine.logits(p + m, adapter=adapter).numpy()).max())
              for r, p, m in zip(rows, prompts, made, strict=True)]
    want = engine.generate(prompts, SamplingParams(max_tokens=steps, temperature=0.0, ignore_eos=True),
                           adapter=adapter)
    return {"max_abs_logit_error": max(errors), "max_abs_logit": float(max(np.abs(r).max() for r in rows)),
            "greedy_tokens_equal": made == [c.token_ids for c in want], "rows": len(prompts),
            "prompt_tokens": [len(p) for p in prompts], "decode_steps": steps}


def speed(engine: Engine, session, adapter, prompt: list[int], new: int, reps: int) -> dict:
    def onnx():
        greedy_batch(session, [prompt], new - 1)

    def ours():
        engine.generate([prompt], SamplingParams(max_tokens=new, temperature=0.0, ignore_eos=True), adapter=adapter)

    times = {"onnxruntime": [], "engine": []}
    onnx(), ours()  # warm up
    for _ in range(reps):
        for name, fn in (("onnxruntime", onnx), ("engine", ours)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in times.items()}
    return {"prompt_tokens": len(prompt), "new_tokens": new, "tokens_per_s": {k: new / v for k, v in best.items()},
            "onnxruntime_over_engine": best["engine"] / best["onnxruntime"], "seconds_all": times}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="swarm-tiny")
    ap.add_argument("--adapter", default="gossip", help="also export with this adapter merged ('' for none)")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    engine = Engine.from_pretrained(args.model)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(5, engine.config.vocab_size, (n,), generator=g).tolist() for n in (24, 9, 16)]
    tmp = Path(tempfile.mkdtemp(prefix="swarm-onnx-bench-"))
    result = {"hardware": {**roofline.memory_bandwidth(), **roofline.matmul_flops(), "threads": args.threads},
              "model": str(model_path(args.model)), "onnxruntime": ort.__version__, "exports": {}}
    runs = [("base", None, None)]  # (label, the engine's adapter name, what export_onnx is given)
    if args.adapter:
        name = args.adapter if args.adapter in engine.adapters() else Path(args.adapter).name
        if name not in engine.adapters():
            engine.add_adapter(name, args.adapter)
        runs.append((name, name, args.adapter))
    for label, adapter, merge in runs:
        print(f"exporting {label} ...", file=sys.stderr)
        done = export_onnx(args.model, tmp / label, adapter=merge)
        session = ort.InferenceSession(str(done.model_file), options, providers=["CPUExecutionProvider"])
        result["exports"][label] = {
            "export_and_check_seconds": done.seconds, "file_mib": done.model_file.stat().st_size / 2**20,
            "provider": session.get_providers()[0],
            "parity": parity(engine, session, adapter, prompts, args.steps),
            "speed_batch1": speed(engine, session, adapter, prompts[2], args.new_tokens, args.reps),
        }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
