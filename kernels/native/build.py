"""Build and load the native CPU kernels (cpu.c) with the system C compiler, once per source and flags.

The shared library is cached under $SWARM_CACHE_DIR (default ~/.cache/swarm)/kernels, named by a hash
of the source, the flags and the compiler, and written atomically so parallel processes never load a
half-written file. It links libgomp by its soname, which resolves to the copy torch has already loaded:
the kernels share torch's OpenMP threads.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch  # noqa: F401  (loads libgomp before the kernels' library asks for it)

SOURCE = Path(__file__).with_name("cpu.c")
FLAGS = ["-O3", "-mavx2", "-mfma", "-mf16c", "-ffp-contract=off", "-fopenmp", "-fPIC", "-shared", "-std=gnu11"]

_I64, _PTR, _F32 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_float
_SIGNATURES = {
    "swarm_cpu_supported": [],
    "swarm_rms_norm": [_PTR, _I64, _I64, _I64, _I64, _PTR, _F32, _PTR],
    "swarm_rotary": [_PTR, _I64, _I64, _I64, _I64, _PTR, _PTR],
    "swarm_linear": [_PTR, _I64, _I64, _PTR, _I64, _PTR, _PTR],
    "swarm_qlinear": [_PTR, _I64, _I64, _I64, _PTR, _PTR, _I64, _PTR, _PTR],
    "swarm_dequantize": [_I64, _PTR, _PTR, _I64, _I64, _PTR],
    "swarm_route": [_PTR, _I64, _I64, _I64, _I64, _I64, _PTR, _PTR],
    "swarm_argmax": [_PTR, _I64, _I64, _PTR],
    "swarm_expert_ffn": [_PTR, _I64, _I64, _I64, _PTR, _PTR, _PTR, _PTR, _I64, _I64, _PTR, _PTR, _I64, _PTR],
    "swarm_prefill_attention": [_PTR, _I64, _I64, _I64, _PTR, _PTR, _PTR, _PTR, _I64, _I64, _PTR, _I64, _F32, _I64,
                                _PTR],
    "swarm_decode_attention": [_PTR, _I64, _I64, _I64, _PTR, _PTR, _PTR, _PTR, _I64, _I64, _PTR, _I64, _PTR, _F32,
                               _PTR],
    "swarm_store_int8": [_PTR, _I64, _I64, _I64, _I64, _PTR, _PTR, _PTR],
    "swarm_attention_block": [_PTR, _PTR, _PTR],  # struct attention_layer, struct decode_step, mask
    "swarm_moe_block": [_PTR, _PTR, _PTR, _PTR],  # struct moe_layer, struct decode_step, weights, ids
    # layer structs' addresses [L] (attention, MoE), L, struct decode_step, masks' addresses [L], weights, ids
    "swarm_decode_layers": [_PTR, _PTR, _I64, _PTR, _PTR, _PTR, _PTR],
}


class NativeUnavailable(RuntimeError):
    """The native kernels cannot be built or run on this machine (the message says why)."""


_library: ctypes.CDLL | None = None
_error: NativeUnavailable | None = None


def cache_dir() -> Path:
    return Path(os.environ.get("SWARM_CACHE_DIR") or Path.home() / ".cache" / "swarm") / "kernels"


def _compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise NativeUnavailable("no C compiler found (set CC, or install gcc)")
    return cc


def _build() -> Path:
    cc = _compiler()
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), " ".join(FLAGS), version]).encode()).hexdigest()[:16]
    target = cache_dir() / f"swarm_cpu_{key}.so"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run([cc, *FLAGS, str(SOURCE), "-o", tmp], capture_output=True, text=True)
        if done.returncode != 0:
            raise NativeUnavailable(f"{cc} failed to build {SOURCE.name}:\n{done.stderr.strip()}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def library() -> ctypes.CDLL:
    """The loaded kernels, built on first use; NativeUnavailable if that cannot happen here."""
    global _library, _error
    if _library is not None:
        return _library
    if _error is not None:
        raise _error
    try:
        lib = ctypes.CDLL(str(_build()))
        for name, args in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = args, ctypes.c_int
        if not lib.swarm_cpu_supported():
            raise NativeUnavailable("this CPU lacks AVX2 or FMA")
    except NativeUnavailable as e:
        _error = e
        raise
    except OSError as e:
        _error = NativeUnavailable(f"the native kernels failed to load: {e}")
        raise _error from e
    _library = lib
    return lib


def available() -> bool:
    try:
        library()
    except NativeUnavailable:
        return False
    return True
