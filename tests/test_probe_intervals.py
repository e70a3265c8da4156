"""Tests for the chip-bootstrap verdicts of sarssl.analysis.probes (chip_statistics, bootstrap_headline,
probe_intervals)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sarssl.analysis.patch_features import PatchFeatures
from sarssl.analysis.probes import bootstrap_headline, chip_statistics, probe_intervals
from sarssl.data.products import IGNORE_INDEX, LABEL_SPECS
from sarssl.train.metrics import mean_iou, regression_metrics


def test_statistics_on_all_chips_give_the_probe_metrics():
    g = torch.Generator().manual_seed(0)
    y = torch.rand(6, 3, 4, 4, generator=g)
    pred = y + 0.2 * torch.randn(6, 3, 4, 4, generator=g)
    valid = torch.rand(6, 4, 4, generator=g) > 0.2
    value, draws = bootstrap_headline({"a": chip_statistics(pred, y, valid, "regression")}, "regression",
                                      n_boot=50)
    rows = lambda t: t.permute(0, 2, 3, 1)[valid]  # noqa: E731
    assert value["a"] == pytest.approx(regression_metrics(rows(pred), rows(y))["r2"], abs=1e-5)
    assert draws["a"].shape == (50,)

    cls = torch.randint(0, 4, (6, 4, 4), generator=g)
    cls[0, 0, 0] = IGNORE_INDEX
    guess = torch.where(torch.rand(6, 4, 4, generator=g) > 0.3, cls.clamp_min(0), torch.zeros_like(cls))
    ok = torch.ones(6, 4, 4, dtype=torch.bool)
    value, _ = bootstrap_headline({"c": chip_statistics(guess, cls, ok, "classification", 4)}, "classification",
                                  n_boot=10)
    assert value["c"] == pytest.approx(mean_iou(guess, cls, 4))
    with pytest.raises(ValueError, match="n_classes"):
        chip_statistics(guess, cls, ok, "classification")


def _features(n: int, seed: int) -> PatchFeatures:
    g = torch.Generator().manual_seed(seed)
    tree = torch.rand(n, 4, 4, generator=g) * 100
    good = torch.cat([tree.unsqueeze(1), torch.randn(n, 1, 4, 4, generator=g)], 1)
    noise = torch.randn(n, 2, 4, 4, generator=g)
    ok = torch.ones(n, 4, 4, dtype=torch.bool)
    return PatchFeatures({"attention": good, "embedding": noise, "sar": noise.clone()}, {"treecover": tree},
                         {"treecover": ok})


def test_probe_intervals_verdicts_follow_the_intervals():
    feats = {"enc": (_features(12, 0), _features(10, 1))}
    table = probe_intervals(feats, [("enc attention", "enc embedding"), ("enc embedding", "raw SAR")],
                            steps=80, n_boot=200)
    assert list(table["comparison"]) == ["enc attention vs enc embedding", "enc embedding vs raw SAR"]
    assert (table["product"] == LABEL_SPECS["treecover"].title).all() and (table["metric"] == "r2").all()
    first, same = table.iloc[0], table.iloc[1]
    assert first["verdict"] == "better" and first["model"].low > first["control"].high
    assert first["chips"] == 10 and first["difference"].low > 0
    # the same features: equal values, a zero paired difference, never a win
    assert same["verdict"] == "tie" and same["difference"].value == pytest.approx(0.0)
    assert np.isclose(same["model"].value, same["control"].value)
    with pytest.raises(KeyError, match="not '<encoder> <kind>'"):
        probe_intervals(feats, [("other attention", "raw SAR")], steps=5)
