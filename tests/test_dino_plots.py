"""DINO chapter figures: augmentation examples, multi-crop grid, curves/summary, attention heads."""

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402

from sarssl.analysis.dino_plots import (  # noqa: E402
    augmentation_examples, channel_label, chip_attention, dino_run_summary, plot_attention_heads, plot_dino_curves,
    plot_multicrop, plot_sar_augmentations, to_db,
)
from sarssl.data.multicrop import MultiCrop, MultiCropConfig  # noqa: E402
from sarssl.data.products import INPUT_CHANNELS  # noqa: E402

STD = np.linspace(1.0, 3.0, 12).astype(np.float32)
MEAN = np.linspace(-20.0, -5.0, 12).astype(np.float32)


def _chip(size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(12, size, size, generator=g)
    v = torch.ones_like(x, dtype=torch.bool)
    v[:, :2, :2] = False
    return x.where(v, torch.zeros(())), v


def test_channel_label_and_to_db():
    assert channel_label("vv-vh_summer") == "VV−VH summer"
    assert channel_label("vh_winter") == "VH winter"
    with pytest.raises(ValueError, match="not an input channel"):
        channel_label("hh_summer")
    x, v = _chip(8)
    db = to_db(x, v, MEAN, STD)
    np.testing.assert_allclose(db[3, 5, 5], float(x[3, 5, 5]) * STD[3] + MEAN[3], rtol=1e-6)
    assert np.isnan(db[:, 0, 0]).all() and np.isfinite(db[:, 5, 5]).all()
    with pytest.raises(ValueError, match="both"):
        to_db(x, v, MEAN, None)


def test_augmentation_examples_do_what_their_titles_say():
    x, v = _chip()
    ex = augmentation_examples(x, v, STD, seed=0, db_offset=2.0, drop_group="vh", season="summer")
    titles = [t for t, _, _ in ex]
    assert titles[0] == "original" and len(ex) == 7
    d = dict((t, (a, b)) for t, a, b in ex)
    vv = [INPUT_CHANNELS.index(f"vv_{s}") for s in ("winter", "spring", "summer", "fall")]
    diff = [INPUT_CHANNELS.index(f"vv-vh_{s}") for s in ("winter", "spring", "summer", "fall")]
    off, _ = d["+2 dB offset"]
    # +2 dB on VV is +2/std in normalised units; VV-VH unchanged (same offset on both)
    np.testing.assert_allclose((off - x)[vv, 5, 5].numpy(), 2.0 / STD[vv], rtol=1e-5)
    np.testing.assert_allclose((off - x)[diff, 5, 5].numpy(), 0.0, atol=1e-6)
    xd, vd = d["drop VH"]
    assert not vd[INPUT_CHANNELS.index("vh_summer")].any() and vd[INPUT_CHANNELS.index("vv_summer"), 5:].all()
    xs, _ = d["season view: summer"]
    assert torch.equal(xs[INPUT_CHANNELS.index("vv_winter")], x[INPUT_CHANNELS.index("vv_summer")])
    sp, _ = d["fresh speckle (L=4)"]
    assert not torch.allclose(sp, x) and torch.equal(sp[:, 0, 0], torch.zeros(12))  # invalid stays 0
    again = augmentation_examples(x, v, STD, seed=0, db_offset=2.0)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(ex, again))
    with pytest.raises(ValueError, match="drop_group"):
        augmentation_examples(x, v, STD, drop_group="hh")


def test_plot_augmentations_and_multicrop_figures():
    x, v = _chip()
    fig = plot_sar_augmentations(augmentation_examples(x, v, STD), mean_db=MEAN, std_db=STD)
    assert len(fig.axes) == 2 * 7 + 2  # panels + one colour bar per channel row
    assert fig.axes[0].get_ylabel() == "VV summer"
    plt.close(fig)
    mc = MultiCrop(MultiCropConfig(n_local=3, global_size=16, local_size=8), std_db=STD)
    crops, valids = mc(x, v, torch.Generator().manual_seed(1))
    fig = plot_multicrop(crops, valids, 2, channels=("vv_summer", "vv-vh_summer", "vh_fall"))
    titles = [a.get_title() for a in fig.axes[:5]]
    assert titles == ["global 1 (16 px)", "global 2 (16 px)", "local 1 (8 px)", "local 2 (8 px)", "local 3 (8 px)"]
    plt.close(fig)
    with pytest.raises(ValueError, match="n_global"):
        plot_multicrop(crops, valids, 0)


def _metrics():
    steps = np.arange(1, 21)
    rows = pd.DataFrame({"step": steps, "epoch": (steps - 1) // 5 + 1, "lr": np.linspace(0, 1e-3, 20),
                         "wd": np.linspace(0.04, 0.4, 20), "loss": np.linspace(6, 4, 20),
                         "teacher_temp": 0.04, "teacher_momentum": 0.996,
                         "teacher_entropy": np.linspace(0.9, 0.5, 20) * math.log(64), "grad_norm": 1.0})
    rows["knn_top1"] = np.where(steps % 5 == 0, np.linspace(0.4, 0.8, 20), np.nan)
    rows["knn_majority_baseline"] = np.where(steps % 5 == 0, 0.5, np.nan)
    return rows


def test_summary_and_curves(tmp_path):
    df = _metrics()
    path = tmp_path / "metrics.csv"
    df.to_csv(path, index=False)
    s = dino_run_summary(path, out_dim=64)
    assert s["steps"] == 20 and s["final_loss"] == pytest.approx(4.0)
    assert s["entropy_ratio"] == pytest.approx(0.5) and s["collapse"] == "ok"
    assert s["knn_first"] == pytest.approx(0.4 + 0.4 * 4 / 19) and s["knn_final"] == pytest.approx(0.8)
    assert s["knn_gain"] == pytest.approx(0.3)
    assert (s["knn_first_epoch"], s["knn_final_epoch"]) == (1, 4)
    df.loc[:, "teacher_entropy"] = 0.99 * math.log(64)
    assert dino_run_summary(df, 64)["collapse"] == "uniform"
    fig = plot_dino_curves(path, out_dim=64, knn_controls={"random init": 0.6})
    knn_ax = fig.axes[4]
    assert len(knn_ax.get_lines()) == 3  # accuracy, baseline and the random-init control
    assert knn_ax.get_lines()[2].get_ydata()[0] == pytest.approx(0.6)
    plt.close(fig)
    with pytest.raises(ValueError, match="step"):
        dino_run_summary(pd.DataFrame({"x": [1]}), 64)


def test_chip_attention_and_figure():
    enc = timm.create_model("vit_tiny_patch16_224", pretrained=False, in_chans=12, num_classes=0, img_size=32,
                            patch_size=8, depth=2)
    items = []
    for i in range(3):
        x, v = _chip(32, seed=i)
        lab = torch.full((32, 32), i, dtype=torch.long)
        lab[:4] = -100
        items.append({"s1": x, "s1_valid": v, "worldcover": lab, "id": f"chip{i}"})
    res = chip_attention(enc, items, [0, 2], mass=0.6)
    assert res["attn"].shape == (2, 3, 4, 4) and res["masks"].dtype == torch.bool
    torch.testing.assert_close(res["attn"].sum(dim=(-2, -1)), torch.ones(2, 3))
    kept = (res["attn"] * res["masks"]).sum(dim=(-2, -1))
    assert bool((kept >= 0.6 - 1e-5).all())
    assert res["ids"] == ["chip0", "chip2"] and enc.training  # mode restored
    fig = plot_attention_heads(res, mean_db=MEAN, std_db=STD)
    assert len(fig.axes) == 2 * (2 + 3)
    assert fig.axes[2].get_title().startswith("head 1")
    plt.close(fig)
