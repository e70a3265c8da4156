"""Evaluation metrics with no-data masked, accumulated exactly over batches (torchmetrics underneath).

- :class:`RegressionMeter`: RMSE, MAE and R2 (target units) over the valid elements of every batch;
  the result equals the metric computed on all valid elements at once.
- :class:`SegmentationMeter`: a confusion matrix over pixels whose target is not ``ignore_index``,
  giving overall accuracy, per-class IoU (NaN for a class absent from both target and prediction)
  and mIoU (the mean over classes with a non-empty union, as :func:`sarssl.analysis.probes.mean_iou`).
- :func:`iou_from_confusion`: per-class IoU from a (C, C) confusion matrix (rows = target).
"""

from __future__ import annotations

import re

import numpy as np
import torch
from torchmetrics import MeanAbsoluteError, MeanSquaredError, R2Score
from torchmetrics.classification import MulticlassConfusionMatrix

from sarssl.data.products import IGNORE_INDEX, WORLDCOVER_NAMES

__all__ = ["RegressionMeter", "SegmentationMeter", "ClassificationMeter", "iou_from_confusion", "class_slug",
           "iou_column", "WORLDCOVER_IOU_COLUMNS"]


def class_slug(name: str) -> str:
    """``"bare / sparse vegetation"`` -> ``"bare_sparse_vegetation"`` (for CSV column names)."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def iou_column(name: str) -> str:
    """CSV column of a class's IoU: ``iou_<slug>``."""
    return f"iou_{class_slug(name)}"


#: Per-class IoU column names of the 11 WorldCover classes, in class-index order.
WORLDCOVER_IOU_COLUMNS = tuple(iou_column(n) for n in WORLDCOVER_NAMES)


def _masked(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    pred, target = pred.detach().float(), target.detach().float()
    if pred.shape != target.shape:
        if pred.numel() == target.numel():
            pred = pred.reshape(target.shape)
        else:
            raise ValueError(f"prediction shape {tuple(pred.shape)} does not match target shape {tuple(target.shape)}")
    ok = torch.isfinite(target)
    if valid is not None:
        if valid.shape != target.shape:
            raise ValueError(f"valid mask shape {tuple(valid.shape)} does not match target shape {tuple(target.shape)}")
        ok = ok & valid.bool()
    return pred[ok].reshape(-1), target[ok].reshape(-1)


class RegressionMeter:
    """Masked RMSE / MAE / R2 accumulated over batches (target units).

    ``update(pred, target, valid)``: any matching shapes, e.g. (B,) tile values or (B, H, W) maps;
    ``valid`` (same shape, bool) selects the elements that count (NaN targets never count).
    ``compute()`` -> ``{"rmse", "mae", "r2", "n"}`` (NaN metrics when fewer than 2 valid elements).
    """

    def __init__(self):
        self.mse = MeanSquaredError()
        self.mae = MeanAbsoluteError()
        self.r2 = R2Score()
        self.n = 0

    def update(self, pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        p, t = _masked(pred.cpu(), target.cpu(), None if valid is None else valid.cpu())
        if p.numel() == 0:
            return
        self.mse.update(p.double(), t.double())
        self.mae.update(p.double(), t.double())
        self.r2.update(p.double(), t.double())
        self.n += int(p.numel())

    def compute(self) -> dict:
        if self.n < 2:
            return {"rmse": float("nan"), "mae": float("nan"), "r2": float("nan"), "n": self.n}
        return {"rmse": float(self.mse.compute().sqrt()), "mae": float(self.mae.compute()),
                "r2": float(self.r2.compute()), "n": self.n}


def iou_from_confusion(cm: torch.Tensor) -> torch.Tensor:
    """Per-class IoU (C,) float64 from a confusion matrix (rows = target, cols = prediction); NaN where
    the class appears in neither target nor prediction."""
    cm = cm.double()
    inter = cm.diag()
    union = cm.sum(0) + cm.sum(1) - inter
    return torch.where(union > 0, inter / union.clamp_min(1), torch.full_like(inter, float("nan")))


class SegmentationMeter:
    """Pixel confusion matrix over non-ignored targets, accumulated over batches.

    ``update(pred, target)``: pred (B, C, H, W) logits or (B, H, W) class indices; target (B, H, W)
    int64 with ``ignore_index`` for no-data. ``compute()`` -> ``{"miou", "accuracy", "n"}`` plus
    ``iou_<class>`` per class (``class_names`` give the column names).
    """

    def __init__(self, n_classes: int, ignore_index: int = IGNORE_INDEX, class_names=None):
        self.n_classes = int(n_classes)
        self.ignore_index = ignore_index
        names = list(class_names) if class_names is not None else [str(i) for i in range(n_classes)]
        if len(names) != n_classes:
            raise ValueError(f"{len(names)} class names for {n_classes} classes")
        self.columns = [iou_column(n) for n in names]
        self.confmat = MulticlassConfusionMatrix(n_classes, ignore_index=ignore_index)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        pred, target = pred.detach().cpu(), target.detach().cpu().long()
        if pred.dim() == target.dim() + 1:
            pred = pred.argmax(1)
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} does not match target shape {tuple(target.shape)}")
        bad = (target != self.ignore_index) & ((target < 0) | (target >= self.n_classes))
        if bad.any():
            raise ValueError(f"targets must be in 0..{self.n_classes - 1} or {self.ignore_index}; "
                             f"got {target[bad].unique()[:5].tolist()}")
        self.confmat.update(pred.long().clamp(0, self.n_classes - 1), target)

    @property
    def confusion(self) -> torch.Tensor:
        """(C, C) int64 counts, rows = target class, columns = predicted class."""
        return self.confmat.compute().long()

    def compute(self) -> dict:
        cm = self.confusion
        n = int(cm.sum())
        iou = iou_from_confusion(cm)
        present = torch.isfinite(iou)
        out = {"miou": float(iou[present].mean()) if present.any() else float("nan"),
               "accuracy": float(cm.diag().sum() / n) if n else float("nan"), "n": n}
        out.update({c: float(v) for c, v in zip(self.columns, iou.tolist())})
        return out


class ClassificationMeter:
    """Top-1 accuracy of chip-level class predictions (for k-NN); targets ``ignore_index`` are skipped."""

    def __init__(self, ignore_index: int = IGNORE_INDEX):
        self.ignore_index = ignore_index
        self.correct = 0
        self.n = 0

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        pred, target = pred.detach().cpu().reshape(-1).long(), target.detach().cpu().reshape(-1).long()
        ok = target != self.ignore_index
        self.correct += int((pred[ok] == target[ok]).sum())
        self.n += int(ok.sum())

    def compute(self) -> dict:
        return {"accuracy": self.correct / self.n if self.n else float("nan"), "n": self.n}


def nanmean_rows(rows: list[dict]) -> dict:
    """Column-wise NaN-mean of metric dicts (for summaries)."""
    keys = sorted({k for r in rows for k in r})
    return {k: float(np.nanmean([r.get(k, np.nan) for r in rows])) for k in keys}
