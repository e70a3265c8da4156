"""Context gap and the check against real data (sarssl.analysis.context, sarssl.analysis.realism)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch

from sarssl.analysis.context import (
    ContextCNN, PixelMLP, box_filter, chip_class_mix, context_gap, evaluate_segmenter, region_context_gap,
)
from sarssl.analysis.realism import level_comparison, plot_level_histograms, real_group_pixels, simulated_group_pixels
from sarssl.data.products import IGNORE_INDEX


def test_chip_class_mix():
    a = np.zeros((2, 10, 10), np.int64)
    a[1, :5] = 3
    a[1, 5:, :1] = 7  # 5 % of the chip
    a[1, 9, 9] = IGNORE_INDEX
    mix = chip_class_mix(a)
    assert mix["n_chips"] == 2
    assert mix["classes_per_chip"] == pytest.approx(2.0)  # 1 and 3
    assert mix["single_class_chips"] == pytest.approx(0.5)
    assert mix["dominant_share"] == pytest.approx((1.0 + 50 / 99) / 2)


def test_box_filter_and_models():
    x = torch.zeros(1, 1, 7, 7)
    x[0, 0, 3, 3] = 25.0
    y = box_filter(x, 5)
    assert y[0, 0, 3, 3] == pytest.approx(1.0) and y[0, 0, 0, 0] == 0
    cnn = ContextCNN(12, 11, width=8)
    assert cnn(torch.zeros(2, 12, 33, 31)).shape == (2, 11, 33, 31)
    assert cnn.receptive_field == 36
    assert PixelMLP(12, 11)(torch.zeros(5, 12)).shape == (5, 11)


def _texture_world(n, seed):
    """Two classes with the same local mean that differ only in texture (a checkerboard against a flat field)."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 2, 32, 32), np.float32)
    y = np.zeros((n, 32, 32), np.int64)
    yy, xx = np.mgrid[:32, :32]
    for k in range(n):
        half = rng.integers(8, 24)
        lab = (xx >= half).astype(np.int64)
        checker = np.where((yy + xx) % 2 == 0, 1.0, -1.0)
        x[k, 0] = np.where(lab == 1, 2.0 * checker, 0.0) + 0.1 * rng.standard_normal((32, 32))
        x[k, 1] = 0.1 * rng.standard_normal((32, 32))
        y[k] = lab
    return x, y


def test_context_gap_finds_texture():
    xtr, ytr = _texture_world(24, 0)
    xte, yte = _texture_world(8, 1)
    df = context_gap(xtr, ytr, xte, yte, steps=120, pixel_steps=150, width=8, n_classes=2, threads=1)
    assert list(df.index) == ["per-pixel (5x5 mean)", "per-pixel (1x1)", "CNN (context)", "gap"]
    assert df.loc["CNN (context)", "accuracy"] > 90
    assert df.loc["per-pixel (5x5 mean)", "accuracy"] < 80
    best = df.loc[["per-pixel (5x5 mean)", "per-pixel (1x1)"], "accuracy"].max()
    assert df.loc["gap", "accuracy"] == pytest.approx(df.loc["CNN (context)", "accuracy"] - best)
    assert df.attrs["iou"].shape == (2, 3)


def test_evaluate_ignores_no_data():
    class Const(torch.nn.Module):
        def forward(self, x):
            out = torch.zeros(x.shape[0], 3, *x.shape[2:])
            out[:, 1] = 1
            return out

    y = torch.ones(1, 4, 4, dtype=torch.int64)
    y[0, 0] = IGNORE_INDEX
    y[0, 1, 0] = 2
    ev = evaluate_segmenter(Const(), torch.zeros(1, 1, 4, 4), y, 3)
    assert ev["accuracy"] == pytest.approx(11 / 12)
    assert ev["miou"] == pytest.approx((11 / 12 + 0.0) / 2)


def test_region_context_gap_on_a_small_region(tmp_path):
    from sarssl.data.simulate import simulate_region

    simulate_region(tmp_path, n_chips=30, chip_size=32, pixel_size=140.0, seed=0, progress=False)
    df = region_context_gap(tmp_path, "sim-a", steps=10, pixel_steps=10, width=8, threads=1, max_chips=12)
    assert np.isfinite(df["accuracy"]).all() and df.attrs["train_chips"] <= 12
    assert df.attrs["class_mix"]["classes_per_chip"] >= 1


def test_real_and_simulated_levels():
    from sarssl.data.bigearthnet import bigearthnet_groups
    from sarssl.data.scene import simulate_scene

    real = real_group_pixels(bigearthnet_groups())
    assert set(real) == {"forest", "arable", "pasture", "water"}
    assert real["pasture"]["patches"] == 2 and real["pasture"]["seasons"] == ["summer"]
    scene = simulate_scene(64, 64, 10.0, seed=0, keep_acquisitions=True, n_acquisitions=1)
    sim = simulated_group_pixels(scene, {g: v["seasons"] for g, v in real.items()})
    table = level_comparison(real, sim)
    assert {"real median", "sim median", "sim - real"} <= set(table.columns)
    # forest is brighter than pasture in VH in both
    assert table.loc[("forest", "VH"), "sim median"] > table.loc[("pasture", "VH"), "sim median"]
    fig = plot_level_histograms(real, sim)
    assert len(fig.axes) == 8
    with pytest.raises(ValueError, match="keep_acquisitions"):
        simulated_group_pixels(simulate_scene(16, 16, 10.0), {"forest": ["summer"]})
