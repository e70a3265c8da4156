"""Tests for sarssl.analysis.attention_plots (chip collection, the attention grid, tables, heatmap)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402

from sarssl.analysis.attention_plots import (  # noqa: E402
    PRODUCT_COLUMNS,
    collect_chips,
    compare_probes,
    plot_attention_grid,
    plot_correlation_heatmap,
    probe_summary,
)
from sarssl.data.products import IGNORE_INDEX  # noqa: E402


def fake_samples(n: int = 3, size: int = 32, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        tree_valid = torch.ones(size, size, dtype=torch.bool)
        tree_valid[:4] = False
        wc = torch.randint(0, 11, (size, size), generator=g)
        wc[0, 0] = IGNORE_INDEX
        out.append({
            "s1": torch.randn(12, size, size, generator=g), "s1_valid": torch.ones(12, size, size, dtype=torch.bool),
            "s2rgb": torch.rand(3, size, size, generator=g), "s2rgb_valid": torch.ones(size, size, dtype=torch.bool),
            "worldcover": wc, "lcci": torch.randint(0, 5, (size, size), generator=g),
            "treecover": 100 * torch.rand(size, size, generator=g), "treecover_valid": tree_valid,
            "biomass": 300 * torch.rand(size, size, generator=g), "biomass_valid": torch.ones(size, size, dtype=torch.bool),
            "built": torch.rand(size, size, generator=g), "built_valid": torch.ones(size, size, dtype=torch.bool),
            "id": f"chip{i}", "aoi": "sim-a",
        })
    return out


def test_collect_chips_shapes_masks_and_nan(tiny_vit):
    model = tiny_vit().eval()
    res = collect_chips(model, fake_samples(), [0, 2], mass=0.6)
    assert res["attn"].shape == (2, 3, 4, 4)
    assert torch.allclose(res["attn"].sum(dim=(-2, -1)), torch.ones(2, 3), atol=1e-5)
    assert res["masks"].dtype == torch.bool and res["masks"].shape == (2, 3, 4, 4)
    kept = (res["attn"] * res["masks"]).sum(dim=(-2, -1))
    assert (kept >= 0.6 - 1e-5).all()
    assert res["ids"] == ["chip0", "chip2"]
    tc = res["products"]["treecover"]
    assert torch.isnan(tc[:, :4]).all() and torch.isfinite(tc[:, 4:]).all()
    assert res["products"]["worldcover"].dtype == torch.int64
    assert res["products"]["s2rgb"].shape == (2, 3, 32, 32)
    assert model.training is False


def test_collect_chips_missing_product_is_named(tiny_vit):
    samples = [{k: v for k, v in s.items() if k != "biomass"} for s in fake_samples(1)]
    with pytest.raises(KeyError, match="biomass"):
        collect_chips(tiny_vit().eval(), samples, [0])


@pytest.mark.parametrize("thresholded", [False, True])
def test_plot_attention_grid_layout(thresholded, tiny_vit):
    res = collect_chips(tiny_vit().eval(), fake_samples(), [0, 1, 2])
    fig = plot_attention_grid(res, channel="vv_summer", mean_db=np.full(12, -12.0), std_db=np.full(12, 3.0),
                              thresholded=thresholded)
    axes = np.array(fig.axes).reshape(3, -1)
    assert axes.shape[1] == 1 + 3 + len(PRODUCT_COLUMNS)
    titles = [a.get_title() for a in axes[0]]
    assert titles[0].startswith("SAR VV summer") and "dB" in titles[0]
    assert titles[1].startswith("head 0") and titles[4] == "Sentinel-2 RGB" and titles[-1].startswith("built")
    plt.close(fig)
    fig = plot_attention_grid(res, heads=[2], products=["worldcover"])
    assert len(fig.axes) == 3 * 3
    plt.close(fig)
    with pytest.raises(IndexError, match="3 heads"):
        plot_attention_grid(res, heads=[5])
    with pytest.raises(ValueError, match="input channel"):
        plot_attention_grid(res, channel="hh_summer")


def _table(feature: str, shift: float) -> pd.DataFrame:
    rows = []
    for p, title, task in [("s2rgb", "Sentinel-2 RGB", "regression"), ("worldcover", "high-res land cover", "classification"),
                           ("biomass", "biomass (Mg/ha)", "regression")]:
        rows.append({"feature": feature, "product": p, "title": title, "task": task, "n_train": 10, "n_test": 5,
                     "r2": 0.5 + shift if task == "regression" else np.nan, "psnr": 20.0 + shift if p == "s2rgb" else np.nan,
                     "rmse": 10.0 - shift if p == "biomass" else np.nan,
                     "miou": 0.3 + shift if task == "classification" else np.nan, "accuracy": np.nan})
    return pd.DataFrame(rows)


def test_probe_summary_rows_and_values():
    out = probe_summary({"attention": _table("attention", 0.0), "embedding": _table("embedding", 0.1)})
    assert list(out.columns) == ["attention", "embedding"]
    assert list(out.index) == [("Sentinel-2 RGB", "r2"), ("Sentinel-2 RGB", "psnr"), ("high-res land cover", "miou"),
                               ("biomass (Mg/ha)", "r2"), ("biomass (Mg/ha)", "rmse")]
    assert out.loc[("biomass (Mg/ha)", "rmse"), "embedding"] == pytest.approx(9.9)
    assert out.loc[("high-res land cover", "miou"), "attention"] == pytest.approx(0.3)
    both = pd.concat([_table("attention", 0.0), _table("sar", 0.0)])
    with pytest.raises(ValueError, match="several rows"):
        probe_summary({"mixed": both})


def test_plot_correlation_heatmap_labels():
    corr = pd.DataFrame({"worldcover": [0.2, np.nan], "biomass": [-0.5, 0.9]}, index=["head 0", "head 1"])
    corr.attrs["measure"] = {"worldcover": "eta", "biomass": "pearson_r"}
    fig = plot_correlation_heatmap(corr, title="t")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert "η" in labels[0] and "(r)" in labels[1]
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == sorted(["0.20", "–", "-0.50", "0.90"])
    plt.close(fig)
    with pytest.raises(ValueError, match="empty"):
        plot_correlation_heatmap(pd.DataFrame())


def test_compare_probes_labels_and_threads(tiny_vit):
    from sarssl.analysis.patch_features import extract_patch_features

    from torch.utils.data import DataLoader

    samples = fake_samples(4)
    feats = {name: (extract_patch_features(tiny_vit(seed).eval(), DataLoader(samples[:3], batch_size=3),
                                           progress=False),
                    extract_patch_features(tiny_vit(seed).eval(), DataLoader(samples[3:], batch_size=1),
                                           progress=False))
             for name, seed in (("DINO", 0), ("random", 1))}
    before = torch.get_num_threads()
    tables = compare_probes(feats, steps=3, seed=0)
    assert torch.get_num_threads() == before
    assert list(tables) == ["DINO attention", "DINO embedding", "raw SAR", "random attention", "random embedding"]
    assert all(len(t) == len(PRODUCT_COLUMNS) for t in tables.values())
    summary = probe_summary(tables)
    assert summary.shape == (10, 5)
    with pytest.raises(ValueError, match="no features"):
        compare_probes({})
