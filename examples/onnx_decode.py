"""Greedy decoding of an exported model with onnxruntime and the `tokenizers` library only.

    python examples/onnx_decode.py                         # exports swarm-tiny to ./swarm-tiny-onnx, then decodes
    python examples/onnx_decode.py path/to/exported        # a folder written by `swarm export-onnx`
    python examples/onnx_decode.py swarm-tiny --out DIR --prompt "The innkeeper" --max-tokens 24

The decode loop is what an engine plugin does with the file: numpy arrays in, numpy arrays out, the
KV cache handed back each step. Nothing in it imports swarm or torch; swarm is used only to write the
file when the argument is a model rather than an exported folder.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer


def exported_folder(source: str, out: str) -> Path:
    if (Path(source) / "model.onnx").is_file():
        return Path(source)
    from swarm.runtime.onnx_export import export_onnx  # only to write the file

    done = export_onnx(source, out)
    print(f"exported {source} to {done.folder} in {done.seconds:.1f}s (onnxruntime matches the model within "
          f"{done.max_abs_error:.1e})")
    return done.folder


def greedy(session: ort.InferenceSession, prompt: list[int], eos: set[int], max_tokens: int) -> list[int]:
    # The first call has an empty past: [batch, kv_heads, 0, head_dim] for every layer's keys and values.
    past = {i.name: np.zeros((1, i.shape[1], 0, i.shape[3]), np.float32)
            for i in session.get_inputs() if i.name.startswith("past_key_values.")}
    ids = np.array([prompt], np.int64)
    positions = np.arange(len(prompt), dtype=np.int64)[None]
    mask = np.ones((1, len(prompt)), np.int64)
    out = []
    for _ in range(max_tokens):
        logits, *present = session.run(None, {"input_ids": ids, "attention_mask": mask, "position_ids": positions,
                                              **past})
        token = int(logits[0, -1].argmax())
        if token in eos:
            break
        out.append(token)
        past = dict(zip(past, present, strict=True))  # present.{i}.key|value, in the order of the past inputs
        ids, positions = np.array([[token]], np.int64), positions[:, -1:] + 1
        mask = np.concatenate([mask, np.ones((1, 1), np.int64)], axis=1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", nargs="?", default="swarm-tiny", help="an exported folder, or a model to export")
    parser.add_argument("--out", default="swarm-tiny-onnx", help="where to export to when source is a model")
    parser.add_argument("--prompt", default="The innkeeper said")
    parser.add_argument("--max-tokens", type=int, default=24)
    args = parser.parse_args()

    folder = exported_folder(args.source, args.out)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    eos = json.loads((folder / "genai_config.json").read_text())["model"]["eos_token_id"]
    eos = set(eos) if isinstance(eos, list) else {eos}
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    print(f"onnxruntime {ort.__version__} on {session.get_providers()[0]}")
    tokens = greedy(session, tokenizer.encode(args.prompt).ids, eos, args.max_tokens)
    print(args.prompt + tokenizer.decode(tokens))


if __name__ == "__main__":
    main()
