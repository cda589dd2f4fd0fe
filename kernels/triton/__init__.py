"""Triton implementations of the hot ops, one file per op; `swarm.kernels.registry` picks them on CUDA.

Each op takes the same arguments and returns the same result as its torch
reference (tested against it with TRITON_INTERPRET=1 on CPU and natively on
CUDA). Inputs a kernel does not support raise `UnsupportedInput`.
"""
