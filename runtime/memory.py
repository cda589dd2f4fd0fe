"""Memory sizes: what users write ("4GiB", "512MB", bytes), and how much memory a device has free now.

The KV pool is sized from `free_memory`, as serving engines size theirs: a stated share of what is free
when the engine starts (RAM on the CPU, device memory on a GPU), unless the user gives a size.
"""

from __future__ import annotations

import os
import re

import torch

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(value: int | float | str, what: str = "a memory size") -> int:
    """Bytes from an int or a string such as "4GiB", "512 MiB", "1.5GB" or "4096"; raises ValueError for
    anything else, for zero and for negative sizes."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a size such as 4GiB or 512MiB, got {value!r}")
    if isinstance(value, (int, float)):
        n = value
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*", str(value))
        if m is None or m[2].lower() not in _UNITS:
            raise ValueError(f"{what} must be a size such as 4GiB, 512MiB or 1.5GB, got {value!r}")
        n = float(m[1]) * _UNITS[m[2].lower()]
    if not n > 0 or n != n or n == float("inf"):
        raise ValueError(f"{what} must be positive, got {value!r}")
    return int(n)


def format_size(n: float) -> str:
    """1536 -> '1.5 KiB', 8.8e9 -> '8.2 GiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def free_memory(device: torch.device | str) -> int:
    """Bytes free now: device memory on a GPU, RAM the kernel could hand out (MemAvailable) on the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        raise ValueError(f"cannot tell the free memory of a {device.type} device: give the KV pool a size")
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")  # free pages, where /proc is missing
