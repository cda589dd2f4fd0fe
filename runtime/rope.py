"""Rotary position embeddings and the scaling variants the supported families ship with."""

from __future__ import annotations

import math

import torch

from swarm.runtime.config import RopeConfig


def inv_freq(rope: RopeConfig, dim: int, max_pos: int, seq_len: int | None = None) -> tuple[torch.Tensor, float]:
    """Inverse frequencies [dim/2] and the cos/sin scale for one rope variant.

    `seq_len` matters only for "dynamic" (NTK) scaling, which stretches the base
    once a sequence grows past `max_pos`.
    """
    # Always on the CPU (also when the model is built on the meta device); moved at use.
    exponents = torch.arange(0, dim, 2, dtype=torch.int64, device="cpu").float() / dim
    base = rope.theta
    if rope.type == "dynamic":
        seq_len = max(seq_len or max_pos, max_pos)
        base = base * ((rope.factor * seq_len / max_pos) - (rope.factor - 1)) ** (dim / (dim - 2))
    freq = 1.0 / (base**exponents)
    if rope.type == "linear":
        return freq / rope.factor, 1.0
    if rope.type == "llama3":
        return _llama3(rope, freq), 1.0
    if rope.type == "yarn":
        return _yarn(rope, dim, freq)
    return freq, 1.0


def _llama3(rope: RopeConfig, freq: torch.Tensor) -> torch.Tensor:
    old_len = rope.original_max_position_embeddings
    low_wavelen = old_len / rope.low_freq_factor
    high_wavelen = old_len / rope.high_freq_factor
    wavelen = 2 * math.pi / freq
    # Long wavelengths are interpolated by `factor`, short ones kept, the band between blended smoothly.
    scaled = torch.where(wavelen > low_wavelen, freq / rope.factor, freq)
    smooth = (old_len / wavelen - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor)
    blended = (1 - smooth) * scaled / rope.factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(medium, blended, scaled)


def _yarn(rope: RopeConfig, dim: int, freq: torch.Tensor) -> tuple[torch.Tensor, float]:
    def mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attn = rope.attention_factor
    if attn is None:
        if rope.mscale and rope.mscale_all_dim:
            attn = mscale(rope.factor, rope.mscale) / mscale(rope.factor, rope.mscale_all_dim)
        else:
            attn = mscale(rope.factor)
    orig = rope.original_max_position_embeddings

    def correction_dim(rotations: float) -> float:
        return dim * math.log(orig / (rotations * 2 * math.pi)) / (2 * math.log(rope.theta))

    low, high = correction_dim(rope.beta_fast), correction_dim(rope.beta_slow)
    if rope.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(dim // 2, dtype=torch.float32, device="cpu") - low) / (high - low)).clamp(0, 1)
    # High-frequency dims extrapolate (keep `freq`), low-frequency dims interpolate (`freq / factor`).
    keep = 1 - ramp
    return freq / rope.factor * (1 - keep) + freq * keep, float(attn)


class Rotary:
    """Computes cos/sin for positions, caching the table up to the longest position seen."""

    def __init__(self, rope: RopeConfig, head_dim: int, max_pos: int):
        self.rope, self.dim, self.max_pos = rope, head_dim, max_pos
        self._freq, self._scale = inv_freq(rope, head_dim, max_pos)
        self._on_device: dict[torch.device, torch.Tensor] = {}
        self._cpu_table: tuple[torch.Tensor, torch.Tensor] | None = None  # cos, sin [n, head_dim] of positions < n

    def cos_sin(self, positions: torch.Tensor, seq_len: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """positions [T] -> cos, sin [T, head_dim] (float32)."""
        freq, scale = self._freq, self._scale
        if self.rope.type == "dynamic" and seq_len is not None and seq_len > self.max_pos:
            freq, scale = inv_freq(self.rope, self.dim, self.max_pos, seq_len)
        elif positions.device.type == "cpu":  # rows of a table: a decode step's few are cheaper looked up
            cos, sin = self._table(int(positions.max()) + 1 if positions.numel() else 0)
            return cos[positions], sin[positions]
        if freq is self._freq:  # kept on each device it is used on: a copy per call could not be graph-captured
            freq = self._on_device.get(positions.device)
            if freq is None:
                freq = self._on_device[positions.device] = self._freq.to(positions.device)
        return self._angles(positions.float(), freq, scale)

    @staticmethod
    def _angles(positions: torch.Tensor, freq: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        angles = positions[:, None] * freq.to(positions.device)[None, :]  # [T, dim/2]
        emb = torch.cat((angles, angles), dim=-1)
        return emb.cos() * scale, emb.sin() * scale

    def table(self, n: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The CPU table (cos, sin [P, head_dim], row p for position p) of at least the positions below n, or
        None where `cos_sin` would compute other frequencies for them (dynamic scaling past the trained length)."""
        if self.rope.type == "dynamic" and n > self.max_pos:
            return None
        return self._table(n)

    def _table(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The CPU table of at least n positions, grown by doubling."""
        if self._cpu_table is None or self._cpu_table[0].shape[0] < n:
            size = max(256, 1 << max(n - 1, 1).bit_length())
            self._cpu_table = self._angles(torch.arange(size, dtype=torch.float32), self._freq, self._scale)
        return self._cpu_table
