"""sarssl.train.metrics: the metric direction table, the one-call metrics of the probes, k-NN metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from sarssl.data.products import IGNORE_INDEX
from sarssl.train.metrics import (
    HIGHER_IS_BETTER,
    SegmentationMeter,
    higher_is_better,
    knn_metrics,
    mean_iou,
    regression_metrics,
)
from sarssl.train.sweep import label_savings


# ---------------------------------------------------------------- direction
def test_metric_direction_table():
    assert not higher_is_better("rmse") and not higher_is_better("mae")
    for m in ("r2", "psnr", "miou", "accuracy", "iou_tree_cover"):
        assert higher_is_better(m)
    assert set(HIGHER_IS_BETTER) >= {"rmse", "mae", "r2", "psnr", "miou", "accuracy"}
    with pytest.raises(ValueError, match="'loss_x'"):
        higher_is_better("loss_x")


def test_label_savings_follows_the_direction_table():
    rows = [dict(task="landcover", method=m, protocol="linear", pool="grid", limit_pct=n / 4, n_tiles=n, seed=0, region="in",
                 miou=s) for m, scores in {"scratch": [0.2, 0.3, 0.5], "mae": [0.4, 0.5, 0.6]}.items()
            for n, s in zip([4, 40, 400], scores)]
    s = label_savings(pd.DataFrame(rows), "landcover").set_index("method")  # headline metric: mIoU, higher is better
    assert s.loc["mae", "metric"] == "miou" and s.loc["mae", "tiles_needed"] == pytest.approx(40)
    assert s.loc["mae", "saving"] == pytest.approx(10.0) and s.loc["mae", "control_tiles"] == 400


# ---------------------------------------------------------------- one-call metrics (moved from the probes)
def test_mean_iou_with_ignore():
    target = torch.tensor([0, 0, 1, 1, IGNORE_INDEX, IGNORE_INDEX])
    pred = torch.tensor([0, 1, 1, 1, 2, 2])  # predictions on ignored pixels must not count
    # class 0: inter 1, union 2 -> 0.5; class 1: inter 2, union 3 -> 2/3; class 2 absent everywhere
    assert mean_iou(pred, target, n_classes=3) == pytest.approx((0.5 + 2 / 3) / 2)
    assert mean_iou(target.clamp_min(0), target, n_classes=3) == pytest.approx(1.0)
    assert np.isnan(mean_iou(pred, torch.full_like(target, IGNORE_INDEX), n_classes=3))


def _mean_iou_reference(pred, target, n_classes, ignore_index=IGNORE_INDEX):
    """The probes' mIoU as it was written before it shared iou_from_confusion."""
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    ok = target != ignore_index
    pred, target = pred[ok], target[ok]
    cm = torch.bincount(target * n_classes + pred.clamp(0, n_classes - 1), minlength=n_classes ** 2)
    cm = cm.reshape(n_classes, n_classes).double()
    inter = cm.diag()
    union = cm.sum(0) + cm.sum(1) - inter
    present = union > 0
    return float((inter[present] / union[present]).mean())


@pytest.mark.parametrize("seed", range(5))
def test_mean_iou_is_exact_and_agrees_with_the_meter(seed):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, 7, (3, 9, 9), generator=g)
    target[torch.rand(3, 9, 9, generator=g) < 0.2] = IGNORE_INDEX
    pred = torch.randint(0, 5, (3, 9, 9), generator=g)  # classes 5, 6 never predicted
    value = mean_iou(pred, target, n_classes=7)
    assert value == _mean_iou_reference(pred, target, 7)  # bit for bit
    meter = SegmentationMeter(7)
    meter.update(pred, target)
    assert value == pytest.approx(meter.compute()["miou"], abs=1e-12)


def test_regression_metrics_by_hand():
    t = torch.tensor([0.0, 1.0, 2.0, 3.0])
    p = torch.tensor([0.0, 1.0, 2.0, 5.0])
    m = regression_metrics(p, t, data_range=4.0)
    mse = 4 / 4
    assert m["rmse"] == pytest.approx(np.sqrt(mse))
    assert m["r2"] == pytest.approx(1 - 4 / 5)
    assert m["psnr"] == pytest.approx(10 * np.log10(16 / mse))
    assert all(np.isnan(v) for v in regression_metrics(p[:1], t[:1]).values())


# ---------------------------------------------------------------- k-NN (moved from fine-tuning)
def _class_maps(labels, size=4):
    maps = torch.as_tensor(labels).long()[:, None, None].repeat(1, size, size)
    maps[:, 0, 0] = IGNORE_INDEX  # one ignored pixel never changes the majority
    return maps


def test_knn_metrics_separable_baseline_and_skipped_chips():
    g = torch.Generator().manual_seed(0)
    centres = 5 * torch.randn(3, 8, generator=g)
    ytr, yte = torch.tensor([0] * 6 + [1] * 3 + [2] * 3), torch.tensor([0, 1, 2, 2, 0])
    ftr = centres[ytr] + 0.1 * torch.randn(len(ytr), 8, generator=g)
    fte = centres[yte] + 0.1 * torch.randn(len(yte), 8, generator=g)
    test_maps = _class_maps(yte)
    test_maps[-1] = IGNORE_INDEX  # a chip without a valid label is skipped
    out = knn_metrics(ftr, _class_maps(ytr), fte, test_maps, n_classes=3, k=3)
    assert out["accuracy"] == pytest.approx(1.0) and out["n"] == 4
    assert out["majority_baseline"] == pytest.approx(1 / 4)  # class 0 is the training majority
    with pytest.raises(ValueError, match="no labelled training chip"):
        knn_metrics(ftr, torch.full_like(_class_maps(ytr), IGNORE_INDEX), fte, test_maps, n_classes=3)
