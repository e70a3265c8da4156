"""Evaluation metrics with no-data masked (torchmetrics underneath): the package's one metrics module.

- :data:`HIGHER_IS_BETTER` / :func:`higher_is_better`: the direction of every metric the package
  reports, decided here once (RMSE and MAE lower is better; R2, PSNR, mIoU, IoU, accuracy higher).
- :class:`RegressionMeter`: RMSE, MAE and R2 (target units) over the valid elements of every batch;
  the result equals the metric computed on all valid elements at once.
- :class:`SegmentationMeter`: a confusion matrix over pixels whose target is not ``ignore_index``,
  giving overall accuracy, per-class IoU (NaN for a class absent from both target and prediction)
  and mIoU (the mean over classes with a non-empty union, as :func:`mean_iou`).
- :class:`ClassificationMeter`: top-1 accuracy of chip-level classes.
- :func:`iou_from_confusion`: per-class IoU from a (C, C) confusion matrix (rows = target).
- :func:`regression_metrics` / :func:`mean_iou`: the same metrics on rows already masked, in one call
  (the patch probes of :mod:`sarssl.analysis.probes`).
- :func:`knn_metrics`: k-NN accuracy of chip-majority classes and the majority baseline (the ``knn``
  fine-tuning protocol).
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torchmetrics import MeanAbsoluteError, MeanSquaredError, R2Score
from torchmetrics.classification import MulticlassConfusionMatrix
from torchmetrics.functional import r2_score
from torchmetrics.functional.image import peak_signal_noise_ratio

from sarssl.data.products import IGNORE_INDEX
from sarssl.train.knn import knn_predict, majority_class

__all__ = ["HIGHER_IS_BETTER", "higher_is_better", "RegressionMeter", "SegmentationMeter", "ClassificationMeter",
           "iou_from_confusion", "class_slug", "iou_column", "regression_metrics", "mean_iou", "knn_metrics"]

#: metric -> True when a larger value is better (per-class ``iou_<class>`` columns: see :func:`higher_is_better`)
HIGHER_IS_BETTER = {"rmse": False, "mae": False, "r2": True, "psnr": True, "miou": True, "accuracy": True}


def higher_is_better(metric: str) -> bool:
    """Whether a larger ``metric`` is better (``iou_<class>`` columns are IoUs); a clear error for an unknown metric."""
    if metric in HIGHER_IS_BETTER:
        return HIGHER_IS_BETTER[metric]
    if metric.startswith("iou_"):
        return True
    raise ValueError(f"unknown metric {metric!r}: its direction is not known; expected one of "
                     f"{sorted(HIGHER_IS_BETTER)} or iou_<class>")


def class_slug(name: str) -> str:
    """``"bare / sparse vegetation"`` -> ``"bare_sparse_vegetation"`` (for CSV column names)."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def iou_column(name: str) -> str:
    """CSV column of a class's IoU: ``iou_<slug>``."""
    return f"iou_{class_slug(name)}"


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


# --------------------------------------------------------------------------------------------
# Metrics of masked rows in one call (patch probes) and of k-NN
# --------------------------------------------------------------------------------------------
def regression_metrics(pred: torch.Tensor, target: torch.Tensor, data_range: float | None = None) -> dict:
    """Masked-out rows already removed: pred/target (P, K) or (P,). Returns rmse, r2, psnr.

    RMSE pools all values (target units); R2 is averaged over the K outputs (torchmetrics); PSNR uses
    ``data_range`` (default: the target's max - min).
    """
    pred, target = pred.float().reshape(pred.shape[0], -1), target.float().reshape(target.shape[0], -1)
    if pred.shape[0] < 2:
        return {"rmse": float("nan"), "r2": float("nan"), "psnr": float("nan")}
    mse = F.mse_loss(pred, target)
    rng = float(target.max() - target.min()) if data_range is None else float(data_range)
    r2 = r2_score(pred.squeeze(-1) if pred.shape[1] == 1 else pred,
                  target.squeeze(-1) if target.shape[1] == 1 else target, multioutput="uniform_average")
    psnr = peak_signal_noise_ratio(pred, target, data_range=rng) if rng > 0 else torch.tensor(float("nan"))
    return {"rmse": float(mse.sqrt()), "r2": float(r2), "psnr": float(psnr)}


def mean_iou(pred: torch.Tensor, target: torch.Tensor, n_classes: int, ignore_index: int = IGNORE_INDEX) -> float:
    """mIoU over classes present in ``target`` or ``pred`` (union > 0); ``ignore_index`` targets excluded."""
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    ok = target != ignore_index
    pred, target = pred[ok], target[ok]
    if target.numel() == 0:
        return float("nan")
    cm = torch.bincount(target * n_classes + pred.clamp(0, n_classes - 1), minlength=n_classes ** 2)
    iou = iou_from_confusion(cm.reshape(n_classes, n_classes))
    return float(iou[torch.isfinite(iou)].mean())


def knn_metrics(train_cls: torch.Tensor, train_maps: torch.Tensor, test_cls: torch.Tensor, test_maps: torch.Tensor,
                n_classes: int, k: int = 20, temperature: float = 0.07) -> dict:
    """k-NN accuracy of chip-majority classes from CLS features (N, D) and class maps (N, H, W).

    Returns ``{"accuracy", "n", "majority_baseline"}``; chips without a valid label are skipped.
    """
    ytr, yte = majority_class(train_maps, n_classes), majority_class(test_maps, n_classes)
    ktr, kte = ytr != IGNORE_INDEX, yte != IGNORE_INDEX
    if not ktr.any():
        raise ValueError("k-NN: no labelled training chip has a valid class")
    scores = knn_predict(train_cls[ktr], ytr[ktr], test_cls[kte], n_classes, k, temperature)
    meter = ClassificationMeter()
    meter.update(scores.argmax(1), yte[kte])
    base = torch.bincount(ytr[ktr], minlength=n_classes).argmax()
    return {**meter.compute(), "majority_baseline": float((yte[kte] == base).float().mean()) if kte.any() else
            float("nan")}
