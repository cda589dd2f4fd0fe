"""`swarm export-onnx`: a checkpoint as one ONNX decoder with a KV cache, ready for onnxruntime.

`export_onnx(model, out)` writes to the folder `out`:

- `model.onnx`, the graph of `OnnxDecoder` (see onnx_decoder.py) in the layout optimum and
  onnxruntime-genai use: inputs `input_ids` [B, S], `attention_mask` [B, P + S], `position_ids`
  [B, S] (int64) and `past_key_values.{i}.key|value` [B, G, P, d]; outputs `logits` [B, S, V] and
  `present.{i}.key|value` [B, G, P + S, d] (float32). The first call passes a zero-length past.
- `genai_config.json`, onnxruntime-genai's description of that decoder (names, sizes, special tokens);
- the checkpoint's `config.json` and tokenizer files, for the `tokenizers` library or transformers.

An adapter (`adapter=`) is merged into the weights first. After writing, the file is loaded in
onnxruntime on the CPU and its logits are compared with the model's own (`OnnxExport.max_abs_error`).

Exporter: torch's TorchScript-based exporter (`dynamo=False`), chosen on purpose:
- the model's forward reads `int(positions.max())` (the length of the rope table, which only
  "dynamic" rope scaling uses). `torch.export`, behind the default dynamo exporter, rejects that
  data-dependent value; the tracer records it as a constant, which is harmless for every rope type
  but "dynamic", and that one is refused (`check_exportable`);
- it writes opset 15, the newest opset in the range Unity Sentis documents (7 to 15); the dynamo
  exporter writes opset 18 or later;
- it needs only the `onnx` package, not `onnxscript` as well.
The traced graph keeps batch, new and past lengths symbolic; the tests run it at other shapes than
the traced ones, a zero-length past included.

Legend: B batch rows, S new tokens, P past tokens, G key/value heads, d head dim, V vocabulary.
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from swarm.kernels import registry
from swarm.runtime.bundled import is_gguf_file, model_path
from swarm.runtime.config import ModelConfig
from swarm.runtime.errors import CheckpointError, ConfigError
from swarm.runtime.kv import DenseBatch
from swarm.runtime.loader import load_model
from swarm.runtime.lora import LoRALinear, merge_adapter, read_peft_adapter
from swarm.runtime.model import Model, MoE
from swarm.runtime.onnx_decoder import OnnxDecoder
from swarm.runtime.quant import BlockLinear
from swarm.runtime.tokenizer import Tokenizer

OPSET = 15
MODEL_FILE = "model.onnx"
CHECKPOINT_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                    "special_tokens_map.json", "chat_template.jinja")
# onnxruntime-genai knows these model types by name; any other decoder-only model is its generic "decoder".
GENAI_TYPES = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}


@dataclass(frozen=True)
class OnnxExport:
    """What `export_onnx` wrote, and how the check in onnxruntime went."""

    folder: Path
    seconds: float  # export and check together
    max_abs_error: float  # onnxruntime against the model, largest logit difference on a probe
    provider: str  # the execution provider the check's session really ran on

    @property
    def model_file(self) -> Path:
        return self.folder / MODEL_FILE


def input_names(cfg: ModelConfig) -> list[str]:
    past = [f"past_key_values.{i}.{kv}" for i in range(cfg.num_layers) for kv in ("key", "value")]
    return ["input_ids", "attention_mask", "position_ids", *past]


def output_names(cfg: ModelConfig) -> list[str]:
    return ["logits", *(f"present.{i}.{kv}" for i in range(cfg.num_layers) for kv in ("key", "value"))]


def check_exportable(model: Model) -> None:
    """Raise naming what this exporter cannot write for `model`; return quietly otherwise."""
    cfg = model.cfg
    if cfg.rope.type == "dynamic":
        raise ConfigError("ONNX export does not support rope scaling 'dynamic': its frequencies change with the "
                          "sequence length at run time, and the exported graph has fixed ones")
    wrapped = sorted({type(m).__name__ for m in model.modules()
                      if isinstance(m, (LoRALinear, BlockLinear)) or (isinstance(m, MoE) and type(m) is not MoE)})
    if wrapped:
        raise ValueError(f"ONNX export needs the plain float model, this one has {', '.join(wrapped)} modules; "
                         "export from the checkpoint folder (merge an adapter with adapter=/--adapter)")
    kinds = {(p.device.type, p.dtype) for p in model.parameters()}
    if kinds != {("cpu", torch.float32)}:
        raise ValueError(f"ONNX export traces a float32 model on the CPU; this one has {sorted(map(str, kinds))}")
    # the traced graph holds torch ops: the native kernels hand a trace to torch's, the triton ones cannot
    if registry.backend_for("cpu") == "triton":
        raise ValueError(f"ONNX export traces the torch kernels; unset {registry.ENV}")


def _example_inputs(cfg: ModelConfig) -> tuple[torch.Tensor, ...]:
    # Distinct sizes (B=2, S=3, P=4) so that no axis is mistaken for another; all of them stay symbolic.
    B, S, P = 2, 3, 4
    ids = torch.arange(B * S).view(B, S) % cfg.vocab_size
    past = [torch.zeros(B, cfg.num_kv_heads, P, cfg.head_dim) for _ in range(2 * cfg.num_layers)]
    return ids, torch.ones(B, P + S, dtype=torch.long), torch.arange(P, P + S).expand(B, S), *past


def _dynamic_axes(cfg: ModelConfig) -> dict[str, dict[int, str]]:
    tokens = {0: "batch_size", 1: "sequence_length"}
    axes = {"input_ids": tokens, "position_ids": tokens, "logits": tokens,
            "attention_mask": {0: "batch_size", 1: "total_sequence_length"}}
    axes.update({n: {0: "batch_size", 2: "past_sequence_length"} for n in input_names(cfg)[3:]})
    axes.update({n: {0: "batch_size", 2: "total_sequence_length"} for n in output_names(cfg)[1:]})
    return axes


def export_model(model: Model, path: str | Path, opset: int = OPSET) -> Path:
    """Write the ONNX graph of `OnnxDecoder(model)` to `path`, with the weights inside, or past protobuf's
    2 GB limit in one file beside it (`<path>.data`)."""
    check_exportable(model)
    cfg, path = model.cfg, Path(path)
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about the constant rope length (see the module docstring) and that it is
        # the legacy exporter; neither applies here.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(OnnxDecoder(model), _example_inputs(cfg), str(path), dynamo=False, opset_version=opset,
                          input_names=input_names(cfg), output_names=output_names(cfg),
                          dynamic_axes=_dynamic_axes(cfg))
    gather_external_data(path)
    return path


def gather_external_data(path: Path) -> None:
    """Move weights stored one file per tensor beside `path` into one file, `<path>.data`.

    Past 2 GB the exporter writes every weight to its own file next to the model (hundreds for a real
    checkpoint); onnxruntime, optimum and onnxruntime-genai all read one data file as well, and one file
    is what people copy around. Streams tensor by tensor, so memory stays at one weight.
    """
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    proto = onnx.load(str(path), load_external_data=False)
    tensors = [t for t in proto.graph.initializer if uses_external_data(t)]
    if not tensors:
        return
    data, sources = path.with_name(path.name + ".data"), set()
    with data.open("wb") as out:
        for t in tensors:
            info = ExternalDataInfo(t)
            source = path.parent / info.location
            with source.open("rb") as f:
                f.seek(info.offset or 0)
                blob = f.read(info.length) if info.length else f.read()
            offset = out.tell()
            out.write(blob)
            del t.external_data[:]
            for key, value in (("location", data.name), ("offset", offset), ("length", len(blob))):
                entry = t.external_data.add()
                entry.key, entry.value = key, str(value)
            sources.add(source)
    onnx.save(proto, str(path))
    for source in sources - {data}:
        source.unlink()


def genai_config(cfg: ModelConfig, tokenizer: Tokenizer, pad_token_id: int | None) -> dict:
    """onnxruntime-genai's `genai_config.json` for the exported decoder (greedy search by default)."""
    eos = sorted(set(cfg.eos_token_ids) | ({tokenizer.eos_token_id} - {None}))
    return {
        "model": {
            "bos_token_id": cfg.bos_token_id if cfg.bos_token_id is not None else tokenizer.bos_token_id,
            "context_length": cfg.max_context,
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": MODEL_FILE,
                "head_size": cfg.head_dim,
                "hidden_size": cfg.hidden_size,
                "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                           "position_ids": "position_ids", "past_key_names": "past_key_values.%d.key",
                           "past_value_names": "past_key_values.%d.value"},
                "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                            "present_value_names": "present.%d.value"},
                "num_attention_heads": cfg.num_heads,
                "num_hidden_layers": cfg.num_layers,
                "num_key_value_heads": cfg.num_kv_heads,
            },
            "eos_token_id": eos[0] if len(eos) == 1 else eos,
            "pad_token_id": pad_token_id if pad_token_id is not None else (eos[0] if eos else 0),
            "type": GENAI_TYPES.get(cfg.model_type, "decoder"),
            "vocab_size": cfg.vocab_size,
        },
        # present = past + new (a growing cache), so the runtime must not share one buffer between them
        "search": {"do_sample": False, "max_length": cfg.max_context, "min_length": 0, "num_beams": 1,
                   "num_return_sequences": 1, "past_present_share_buffer": False, "repetition_penalty": 1.0,
                   "temperature": 1.0, "top_k": 1, "top_p": 1.0},
    }


@torch.no_grad()
def check_export(model: Model, path: str | Path, tokens: int = 12) -> tuple[float, str]:
    """Run the file in onnxruntime (CPU) as a prefill of all but the last token, then one decode step, and
    compare with the model's logits for the whole sequence. Returns (max abs error, provider used)."""
    import onnxruntime as ort

    cfg = model.cfg
    ids = (torch.arange(tokens) * 7919 + 11) % cfg.vocab_size  # [n] any tokens will do
    ref = model.compute_logits(model(ids, torch.arange(tokens), DenseBatch([tokens], ids.device))).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    provider = session.get_providers()[0]
    past = {n: np.zeros((1, cfg.num_kv_heads, 0, cfg.head_dim), np.float32) for n in input_names(cfg)[3:]}
    out, cut = [], tokens - 1
    for lo, hi in ((0, cut), (cut, tokens)):
        feed = {"input_ids": ids[None, lo:hi].numpy(), "attention_mask": np.ones((1, hi), np.int64),
                "position_ids": np.arange(lo, hi)[None], **past}
        logits, *present = session.run(None, feed)
        past = dict(zip(input_names(cfg)[3:], present, strict=True))
        out.append(logits[0])
    return float(np.abs(np.concatenate(out) - ref).max()), provider


def _adapter_folder(model_folder: Path, adapter: str | Path) -> Path:
    folder = Path(adapter)
    if folder.is_dir():
        return folder
    shipped = model_folder / "adapters" / str(adapter)
    if shipped.is_dir():
        return shipped
    names = sorted(p.name for p in model_folder.glob("adapters/*") if p.is_dir())
    raise CheckpointError(f"adapter {str(adapter)!r} is neither a folder nor one of the model's adapters "
                          f"({', '.join(names) or 'none'})")


def export_onnx(model: str | Path, out: str | Path, adapter: str | Path | None = None,
                opset: int = OPSET) -> OnnxExport:
    """Export a bundled model's name or a checkpoint folder (with `adapter` merged: a PEFT folder or the name of
    one under the model's adapters/) to the folder `out`; see the module docstring for what is written."""
    t0 = time.perf_counter()
    folder, out = model_path(model), Path(out)
    if is_gguf_file(folder):  # the export copies the folder's config and tokenizer files beside the graph
        raise CheckpointError(f"{folder} is a GGUF file; export-onnx takes a Hugging Face model folder")
    net = load_model(folder, dtype=torch.float32)
    if adapter is not None:
        path = _adapter_folder(folder, adapter)
        merge_adapter(net, net.cfg, read_peft_adapter(path.name, path, net.cfg))
    tokenizer = Tokenizer.from_folder(folder)
    check_exportable(net)  # before anything is written
    out.mkdir(parents=True, exist_ok=True)
    export_model(net, out / MODEL_FILE, opset)
    for name in CHECKPOINT_FILES:
        if (folder / name).is_file():
            shutil.copyfile(folder / name, out / name)
    pad = tokenizer.token_to_id(tokenizer.pad_token)
    config = genai_config(net.cfg, tokenizer, pad)
    (out / "genai_config.json").write_text(json.dumps(config, indent=2) + "\n")
    error, provider = check_export(net, out / MODEL_FILE)
    return OnnxExport(out, time.perf_counter() - t0, error, provider)
