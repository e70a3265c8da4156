"""Cached frozen-encoder features: extract once per encoder, train many light heads on them.

A :class:`FeatureBank` holds, for N chips in dataset order, the encoder outputs every head reads
(:func:`sarssl.models.heads.vit_features`: ``cls``/``mean`` (N, D), ``grid`` (N, K, D, h, w) for
the blocks ``indices``) and the label maps of the chips (``worldcover``, ``treecover`` +
``treecover_valid``...), plus the chip ids. Frozen protocols (linear / frozen / k-NN) then train
and evaluate without touching the encoder again; :class:`BankLoader` feeds a bank to the engine
as a loader factory (batches are slices of the stored tensors).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn

from sarssl.data.products import LABEL_SPECS
from sarssl.models.heads import vit_features

__all__ = ["FeatureBank", "extract_bank", "BankLoader", "LABEL_KEYS"]

#: Sample keys kept as labels in a bank (when the dataset provides them): the class maps, then the
#: continuous maps with their masks (Sentinel-2 RGB is no fine-tuning label).
LABEL_KEYS = tuple(k for kind in ("classes", "continuous") for s in LABEL_SPECS.values() if s.kind == kind
                   for k in (s.key, s.valid_key) if k)


@dataclass
class FeatureBank:
    """Features and labels of N chips. ``tensors`` maps keys to (N, ...) CPU tensors."""

    tensors: dict[str, torch.Tensor]
    ids: list[str]
    indices: tuple[int, ...] = ()  # encoder blocks stored in "grid"
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, ids: Sequence[str]) -> "FeatureBank":
        """The chips ``ids`` (in that order); a clear error for ids the bank does not hold."""
        pos = {i: j for j, i in enumerate(self.ids)}
        missing = [i for i in ids if i not in pos]
        if missing:
            raise KeyError(f"{len(missing)} chip(s) not in the feature bank, e.g. {missing[:3]}")
        idx = torch.tensor([pos[i] for i in ids], dtype=torch.long)
        return FeatureBank({k: v[idx] for k, v in self.tensors.items()}, list(ids), self.indices, dict(self.meta))

    def features_for(self, head: nn.Module) -> dict[str, torch.Tensor]:
        """The feature dict ``head.decode`` expects (``grid`` restricted to ``head.indices``)."""
        out = {}
        for key in getattr(head, "uses", ("grid",)):
            if key == "grid":
                pos = {b: j for j, b in enumerate(self.indices)}
                missing = [i for i in head.indices if i not in pos]
                if missing:
                    raise KeyError(f"the bank holds blocks {list(self.indices)}, the head needs {list(head.indices)}")
                out["grid"] = self.tensors["grid"][:, [pos[i] for i in head.indices]]
            else:
                out[key] = self.tensors[key]
        return out


@torch.no_grad()
def extract_bank(encoder: nn.Module, dataset, indices: Sequence[int] = (-1,), grid: bool = True,
                 batch_size: int = 64, device=None, progress: bool = False, label_keys=LABEL_KEYS,
                 grid_dtype: torch.dtype = torch.float32, desc: str = "features") -> FeatureBank:
    """Run ``encoder`` (eval mode) over every chip of ``dataset`` once and keep features + labels.

    Args:
        dataset: map-style dataset of canonical samples (``s1`` (12, H, W), labels, ``id``).
        indices: blocks stored in ``grid`` (normalised to 0..depth-1). grid: store ``grid`` at all.
        grid_dtype: storage dtype of ``grid`` (float16 halves the memory of large banks).
    """
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    device = torch.device(device) if device is not None else next(encoder.parameters()).device
    depth = len(encoder.blocks)
    indices = tuple(int(i) % depth for i in indices)
    was_training = encoder.training
    encoder.eval()
    keys = [k for k in label_keys]

    def collate(items):
        out = {"s1": torch.stack([it["s1"] for it in items]), "id": [it["id"] for it in items]}
        for k in keys:
            if k in items[0]:
                out[k] = torch.stack([it[k] for it in items])
        return out

    parts: dict[str, list[torch.Tensor]] = {}
    ids: list[str] = []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    try:
        for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
            feats = vit_features(encoder, batch["s1"].to(device), indices, grid=grid)
            for k, v in feats.items():
                parts.setdefault(k, []).append(v.to("cpu", grid_dtype if k == "grid" else torch.float32))
            for k in keys:
                if k in batch:
                    parts.setdefault(k, []).append(batch[k])
            ids.extend(batch["id"])
    finally:
        encoder.train(was_training)
    tensors = {k: torch.cat(v) for k, v in parts.items()}
    return FeatureBank(tensors, ids, indices if grid else ())


class BankLoader:
    """Loader factory for :class:`sarssl.train.engine.Trainer`: ``loader(sampler, batch_size)`` yields
    ``{"feats": {...}, <other keys>: ...}`` slices of ``tensors`` in the sampler's order (full batches)."""

    def __init__(self, feats: dict[str, torch.Tensor], extra: dict[str, torch.Tensor]):
        n = {int(v.shape[0]) for v in [*feats.values(), *extra.values()]}
        if len(n) != 1:
            raise ValueError(f"bank tensors disagree on the number of chips: {sorted(n)}")
        self.feats, self.extra = feats, extra
        self.num_samples = n.pop()

    def __call__(self, sampler, batch_size: int):
        order = np.fromiter(iter(sampler), dtype=np.int64)
        for s in range(0, len(order) - batch_size + 1, batch_size):
            idx = torch.from_numpy(order[s:s + batch_size])
            batch = {"feats": {k: v[idx].float() for k, v in self.feats.items()}}
            batch.update({k: v[idx] for k, v in self.extra.items()})
            yield batch

    def batches(self, batch_size: int = 256):
        """Every chip once, in order (for evaluation)."""
        for s in range(0, self.num_samples, batch_size):
            batch = {"feats": {k: v[s:s + batch_size].float() for k, v in self.feats.items()}}
            batch.update({k: v[s:s + batch_size] for k, v in self.extra.items()})
            yield batch
