"""Evaluating a trained :class:`~sarssl.train.finetune.FinetuneTask`: test metrics and example predictions.

Metrics skip no-data (``*_valid`` masks, the ignore index) and are in product units
(:mod:`sarssl.train.metrics`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from sarssl.data.products import WORLDCOVER_NAMES
from sarssl.train.metrics import RegressionMeter, SegmentationMeter

__all__ = ["evaluate", "predict_examples"]


@torch.no_grad()
def evaluate(task: nn.Module, data, batch_size: int = 64, device=None) -> dict:
    """Test metrics of ``task`` (a FinetuneTask) on ``data`` (a Dataset of samples or a BankLoader), no-data masked.

    Regression: ``rmse``, ``mae``, ``r2`` in product units and ``n`` (tiles or pixels counted);
    land cover: ``miou``, ``accuracy``, ``iou_<class>`` per class and ``n`` (pixels).
    """
    from torch.utils.data import DataLoader

    from sarssl.train.engine import move_to_device

    spec = task.spec
    device = torch.device(device) if device is not None else next(task.parameters()).device
    was = task.training
    task.eval()
    meter = (SegmentationMeter(spec.n_classes, class_names=WORLDCOVER_NAMES[:spec.n_classes])
             if spec.kind == "segmentation" else RegressionMeter())
    if hasattr(data, "batches"):
        batches = data.batches(batch_size)
    else:
        batches = DataLoader(data, batch_size=batch_size, shuffle=False)
    try:
        for batch in batches:
            batch = move_to_device(batch, device)
            target, valid = task.targets(batch)
            out = task.predict(batch, tuple(target.shape[-2:]) if spec.kind != "tile" else None)
            if spec.kind == "segmentation":
                meter.update(out, target)
            else:
                meter.update(out.float().reshape(target.shape) * spec.scale, target, valid)
    finally:
        task.train(was)
    return meter.compute()


@torch.no_grad()
def predict_examples(task: nn.Module, dataset, indices=None, n: int = 4) -> list[dict]:
    """Predictions of ``task`` (a FinetuneTask) for a few chips, in product units, for figures.

    Returns one dict per chip: ``s1`` (12, H, W), ``target`` (H, W) map (NaN / IGNORE_INDEX where
    no-data), ``pred`` (H, W) map (classes for land cover), and for tile targets ``target_value``
    and ``pred_value`` (the tile mean and its prediction); plus ``id``.
    """
    spec = task.spec
    indices = list(range(min(n, len(dataset)))) if indices is None else list(indices)
    device = next(task.parameters()).device
    was = task.training
    task.eval()
    rows = []
    try:
        for i in indices:
            s = dataset[int(i)]
            batch = {k: (v[None].to(device) if torch.is_tensor(v) else [v]) for k, v in s.items()}
            target, valid = task.targets(batch)
            out = task.predict(batch, tuple(s["s1"].shape[-2:]) if spec.kind != "tile" else None)
            row = {"id": s["id"], "s1": s["s1"].numpy()}
            if spec.kind == "segmentation":
                row["target"] = target[0].cpu().numpy()
                row["pred"] = out[0].argmax(0).cpu().numpy()
            else:
                raw = s[spec.key].float()
                ok = s[spec.valid_key].bool() if spec.valid_key else torch.isfinite(raw)
                row["target"] = torch.where(ok, raw, torch.full_like(raw, float("nan"))).numpy()
                if spec.kind == "tile":
                    row["target_value"] = float(target[0]) if bool(valid[0]) else float("nan")
                    row["pred_value"] = float(out.reshape(-1)[0]) * spec.scale
                    row["pred"] = np.full(raw.shape, row["pred_value"], dtype=np.float32)
                else:
                    row["pred"] = (out[0, 0].float() * spec.scale).cpu().numpy()
            rows.append(row)
    finally:
        task.train(was)
    return rows
