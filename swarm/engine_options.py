"""The command line's engine options (KV memory, weight format), shared by the commands that load a model."""

from __future__ import annotations

import argparse

from swarm.runtime.block_pool import KV_DTYPES
from swarm.runtime.memory import parse_size


def _size(text: str) -> int:
    try:
        return parse_size(text, "--kv-memory")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kv-memory", type=_size, metavar="SIZE",
                        help="memory for the KV cache, e.g. 4GiB (default: 40%% of the RAM available at start, 80%% "
                        "of free GPU memory)")
    parser.add_argument("--kv-dtype", choices=[d for d in KV_DTYPES if d in ("int8", "float16")],
                        help="store keys and values as int8 with a scale per token and head (about 3.8x the tokens "
                        "of float32 in the same memory), or as float16 under a float32 model on the CPU (2x)")
    add_quantize_option(parser)


def add_quantize_option(parser: argparse.ArgumentParser) -> None:
    # Engine.from_pretrained's formats, named here so that building the parser does not import the engine
    parser.add_argument("--quantize", choices=("int8", "q8_0", "q4_0", "bf16", "f16"),
                        help="how the weights are stored, CPU only, computing in float32: int8 (a scale per row), "
                        "q8_0 or q4_0 (blocks of 32 weights, native kernels), bf16 or f16 (half the bytes); by "
                        "default float32, except a GGUF file's Q8_0 and Q4_0 weights, kept in their blocks")


def add_dtype_option(parser: argparse.ArgumentParser) -> None:
    """--dtype, for the commands that take --device."""
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"),
                        help="on CUDA, the dtype of weights, activations and KV cache (float32 accumulation; "
                        "default: the checkpoint's torch_dtype when bfloat16 or float16, else float32); the CPU "
                        "computes in float32")


def engine_config(args: argparse.Namespace):
    """An EngineConfig from the options, or None when none was given (the engine's defaults)."""
    if args.kv_memory is None and args.kv_dtype is None and args.quantize is None:
        return None
    from swarm.runtime import EngineConfig

    return EngineConfig(kv_memory=args.kv_memory, kv_dtype=args.kv_dtype, quantize=args.quantize)
