"""Per-channel normalisation of the S1 input channels: fit over valid pixels, cache to JSON, apply.

The statistics are the mean and standard deviation in dB over the *valid* pixels of N sampled
train tiles, per channel. They are written to a JSON file together with the key they were fitted
for, and reused when the key matches. The datasets key them by content
(:func:`sarssl.data.datasets.normalization_key`: AOIs, product, channels, tile count, seed, the split
files and the sizes and mtimes of the chips read, the decoder version), so a changed chip or a
re-simulated region is fitted again.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from sarssl.errors import UserError

__all__ = ["Normalization", "RunningStats", "fit_normalization", "norm_key_hash", "load_or_fit"]


@dataclass
class Normalization:
    """Per-channel ``mean`` and ``std`` (dB) for named ``channels``; ``key`` records what it was fitted on."""

    channels: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    key: dict = field(default_factory=dict)
    n_pixels: list[int] | None = None
    n_tiles: int | None = None  # tiles the statistics were computed over (None: not recorded)

    def __post_init__(self):
        self.channels = tuple(self.channels)
        self.mean = np.asarray(self.mean, dtype=np.float32)
        self.std = np.asarray(self.std, dtype=np.float32)
        if not (len(self.channels) == self.mean.shape[0] == self.std.shape[0]):
            raise UserError(f"normalisation: {len(self.channels)} channels but mean {self.mean.shape} / std {self.std.shape}")
        if np.any(~np.isfinite(self.std)) or np.any(self.std <= 0):
            raise UserError(f"normalisation: std must be finite and > 0, got {self.std.tolist()}")

    def apply(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """``(C, H, W)`` or ``(B, C, H, W)`` dB -> normalised float32; pixels where ``valid`` is False -> 0."""
        c_dim = x.dim() - 3
        if x.shape[c_dim] != len(self.channels):
            raise UserError(f"normalisation: expected {len(self.channels)} channels, got tensor of shape {tuple(x.shape)}")
        shape = [1] * x.dim()
        shape[c_dim] = -1
        mean = torch.as_tensor(self.mean, device=x.device).view(shape)
        std = torch.as_tensor(self.std, device=x.device).view(shape)
        y = (x.float() - mean) / std
        if valid is not None:
            y = torch.where(valid, y, torch.zeros((), dtype=y.dtype, device=y.device))
        return y

    def invert(self, y: torch.Tensor) -> torch.Tensor:
        """Normalised values back to dB."""
        c_dim = y.dim() - 3
        shape = [1] * y.dim()
        shape[c_dim] = -1
        return y * torch.as_tensor(self.std, device=y.device).view(shape) + torch.as_tensor(self.mean, device=y.device).view(shape)

    def to_dict(self) -> dict:
        return {"channels": list(self.channels), "mean": self.mean.tolist(), "std": self.std.tolist(),
                "key": self.key, "n_pixels": self.n_pixels, "n_tiles": self.n_tiles}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")  # one per process: DDP ranks save at once
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Normalization":
        path = Path(path)
        try:
            d = json.loads(path.read_text())
            return cls(d["channels"], d["mean"], d["std"], d.get("key", {}), d.get("n_pixels"), d.get("n_tiles"))
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise UserError(f"normalisation file {str(path)!r} is not valid (expected JSON with channels/mean/std): {e}") from e


class RunningStats:
    """Per-channel sums over valid pixels (float64), for mean/std in one pass."""

    def __init__(self, n_channels: int):
        self.n = np.zeros(n_channels, np.int64)
        self.s = np.zeros(n_channels, np.float64)
        self.ss = np.zeros(n_channels, np.float64)

    def update(self, x: np.ndarray) -> None:
        """``x``: (C, H, W) with NaN for invalid pixels."""
        x = np.asarray(x, dtype=np.float64).reshape(x.shape[0], -1)
        ok = np.isfinite(x)
        v = np.where(ok, x, 0.0)
        self.n += ok.sum(1)
        self.s += v.sum(1)
        self.ss += (v * v).sum(1)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        if np.any(self.n == 0):
            raise UserError(f"normalisation: channel(s) {np.flatnonzero(self.n == 0).tolist()} have no valid pixel")
        mean = self.s / self.n
        var = np.maximum(self.ss / self.n - mean * mean, 0.0)
        return mean, np.sqrt(var) + 1e-6


def fit_normalization(tiles: Iterable[np.ndarray], channels, key: dict | None = None) -> Normalization:
    """Mean/std per channel over the valid (finite) pixels of ``tiles`` (each (C, H, W) dB, NaN no-data)."""
    stats = RunningStats(len(channels))
    n = 0
    for t in tiles:
        stats.update(t)
        n += 1
    mean, std = stats.result()
    return Normalization(channels, mean, std, key or {}, stats.n.tolist(), n)


def norm_key_hash(key: dict) -> str:
    """A short stable hash of a normalisation key (for cache file names)."""
    return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def load_or_fit(path: str | Path, key: dict, fit: Callable[[], Normalization]) -> Normalization:
    """Load ``path`` when it exists, is readable and was fitted for ``key``; else call ``fit()`` and save it there."""
    path = Path(path)
    if path.is_file():
        try:
            norm = Normalization.load(path)
        except UserError:  # a damaged cache file (e.g. cut off by a full disk) is fitted again
            norm = None
        if norm is not None and norm.key == json.loads(json.dumps(key)):
            return norm
    norm = fit()
    norm.key = json.loads(json.dumps(key))
    norm.save(path)
    return norm
