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
import warnings
from pathlib import Path

import torch  # noqa: F401  (loads libgomp before the kernels' library asks for it)

SOURCE = Path(__file__).with_name("cpu.c")
FLAGS = ["-O3", "-mavx2", "-mfma", "-mf16c", "-ffp-contract=off", "-fopenmp", "-fPIC", "-shared", "-std=gnu11"]
# Integer dot products in one instruction (the Q8_0 / Q4_0 projections), when the CPU has them: AVX-512 VNNI on
# 256-bit vectors, or AVX-VNNI. They give the same integers as the AVX2 instructions, so the same results.
VNNI = {"avx512_vnni": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni", "-mprefer-vector-width=256"],
        "avx_vnni": ["-mavxvnni"]}
ISA_ENV = "SWARM_NATIVE_ISA"  # "avx2": build for AVX2 + FMA only, whatever else the CPU has

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
    "swarm_prefill_attention": [_PTR, _I64, _I64, _I64, _PTR, _PTR, _PTR, _PTR, _I64, _I64, _I64, _PTR, _I64, _F32,
                                _I64, _PTR],
    "swarm_decode_attention": [_PTR, _I64, _I64, _I64, _PTR, _PTR, _PTR, _PTR, _I64, _I64, _I64, _PTR, _I64, _PTR,
                               _F32, _PTR],
    "swarm_store_int8": [_PTR, _I64, _I64, _I64, _I64, _PTR, _PTR, _PTR],
    "swarm_attention_block": [_PTR, _PTR, _PTR],  # struct attention_layer, struct decode_step, mask
    "swarm_moe_block": [_PTR, _PTR, _PTR, _PTR],  # struct moe_layer, struct decode_step, weights, ids
    "swarm_decode_model": [_PTR, _PTR, _PTR, _PTR, _PTR],  # struct decode_model, struct decode_tokens, out, routing
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


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: the AVX2 build
        return set()
    return next((set(line.split(":", 1)[1].split()) for line in text.splitlines() if line.startswith("flags")), set())


def isa_flags() -> list[str]:
    """The compiler flags for the instructions beyond AVX2 that this CPU has and the kernels use."""
    if os.environ.get(ISA_ENV, "").lower() == "avx2":
        return []
    have = _cpu_flags()
    if {"avx512_vnni", "avx512vl", "avx512bw", "avx512f"} <= have:
        return VNNI["avx512_vnni"]
    return VNNI["avx_vnni"] if "avx_vnni" in have else []


def _build(extra: list[str] | None = None) -> Path:
    """The shared library built with FLAGS + extra (default: isa_flags()), from the cache when built before."""
    cc = _compiler()
    flags = FLAGS + (isa_flags() if extra is None else extra)
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), " ".join(flags), version]).encode()).hexdigest()[:16]
    target = cache_dir() / f"swarm_cpu_{key}.so"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run([cc, *flags, str(SOURCE), "-o", tmp], capture_output=True, text=True)
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
        lib = _load_best()
    except NativeUnavailable as e:
        _error = e
        raise
    except OSError as e:
        _error = NativeUnavailable(f"the native kernels failed to load: {e}")
        raise _error from e
    _library = lib
    return lib


def _load_best() -> ctypes.CDLL:
    """The library with this CPU's VNNI dots; the AVX2 build (same results, slower block products), with a
    warning saying why, where the VNNI one cannot be built or loaded (a compiler without the flags)."""
    extra = isa_flags()
    if not extra:
        return load([])
    try:
        return load(extra)
    except (NativeUnavailable, OSError) as e:
        warnings.warn(f"native CPU kernels built without VNNI ({' '.join(extra)} failed: {str(e)[:300]}); the "
                      "Q8_0 / Q4_0 products run on AVX2 alone", RuntimeWarning, stacklevel=3)
        return load([])


def load(extra: list[str] | None = None) -> ctypes.CDLL:
    """A fresh handle on the library built with FLAGS + extra (default: isa_flags()); library() keeps one."""
    lib = ctypes.CDLL(str(_build(extra)))
    for name, args in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, ctypes.c_int
    if not lib.swarm_cpu_supported():
        raise NativeUnavailable("this CPU lacks the instructions the kernels were built for (AVX2, FMA, F16C"
                                f"{', VNNI' if extra or (extra is None and isa_flags()) else ''})")
    return lib


def available() -> bool:
    try:
        library()
    except NativeUnavailable:
        return False
    return True
