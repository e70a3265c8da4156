"""What a fine-tuning head is scored against: target tensors of a batch and the masked losses.

Targets (:data:`sarssl.train.tasks.TARGETS`): ``tile`` targets are the mean over a tile's valid
pixels (RMSE loss), ``pixel`` targets per-pixel maps with a validity mask (RMSE), ``segmentation``
targets class maps with the no-data ignore index (cross-entropy). Regression heads predict
``value / scale`` (scale per target); targets stay in product units.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sarssl.data.products import IGNORE_INDEX
from sarssl.train.tasks import TargetSpec

__all__ = ["target_tensors", "task_loss"]


def target_tensors(batch: dict, spec: TargetSpec, min_valid: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """(target, valid) of a batch in product units.

    tile: (B,) mean over valid pixels, valid where at least ``min_valid`` of the pixels are;
    pixel: (B, H, W) float + mask; segmentation: (B, H, W) int64 (IGNORE_INDEX kept) + mask.
    """
    if spec.key not in batch:
        raise KeyError(f"the batch has no {spec.key!r} label (product {spec.product!r}); keys: {sorted(batch)}")
    y = batch[spec.key]
    if spec.kind == "segmentation":
        y = y.long()
        return y, y != IGNORE_INDEX
    valid = batch[spec.valid_key].bool() if spec.valid_key else torch.isfinite(y)
    y = torch.where(valid, torch.nan_to_num(y.float()), torch.zeros((), device=y.device))
    if spec.kind == "pixel":
        return y, valid
    v = valid.flatten(1).float()
    frac = v.mean(1)
    mean = (y.flatten(1) * v).sum(1) / v.sum(1).clamp_min(1)
    return mean, frac >= min_valid


def task_loss(spec: TargetSpec, out: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """RMSE (in ``value / scale`` units) over valid elements, or cross-entropy ignoring no-data.

    A batch without any valid element gives a zero loss that keeps the graph.
    """
    if not valid.any():
        return out.sum() * 0.0
    if spec.kind == "segmentation":
        return F.cross_entropy(out.float(), target, ignore_index=IGNORE_INDEX)
    pred = out.float().reshape(target.shape)
    err = (pred - target / spec.scale)[valid]
    return torch.sqrt(err.pow(2).mean() + 1e-8)
