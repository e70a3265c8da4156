"""Tests for sarssl.analysis.embeddings (chip embeddings, projections, region distances, plot)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from sarssl.analysis.embeddings import (  # noqa: E402
    chip_embeddings,
    frechet_distance,
    mmd_rbf,
    plot_embeddings,
    project,
    region_distance,
    region_embeddings,
)


def test_chip_embeddings_cls_and_mean(tiny_vit):
    m = tiny_vit().train()
    x = torch.randn(7, 12, 32, 32)
    cls = chip_embeddings(m, x, pool="cls", batch_size=3, progress=False)
    mean = chip_embeddings(m, x, pool="mean", progress=False)
    assert m.training
    assert cls.shape == mean.shape == (7, 192) and cls.dtype == np.float32
    with torch.no_grad():
        m.eval()
        feats = m.forward_features(x)
    assert np.allclose(cls, feats[:, 0].numpy(), atol=1e-5)
    assert np.allclose(mean, feats[:, 1:].mean(1).numpy(), atol=1e-5)
    # a loader of canonical dicts gives the same numbers
    loader = DataLoader([{"s1": xi, "id": str(i)} for i, xi in enumerate(x)], batch_size=4)
    assert np.allclose(chip_embeddings(m, loader, progress=False), cls, atol=1e-5)
    with pytest.raises(ValueError, match="pool"):
        chip_embeddings(m, x, pool="max")


def test_region_embeddings_labels(tiny_vit):
    m = tiny_vit()
    emb, lab = region_embeddings(m, {"A": torch.randn(3, 12, 32, 32), "B": torch.randn(5, 12, 32, 32)},
                                 progress=False)
    assert emb.shape == (8, 192) and lab.tolist() == ["A"] * 3 + ["B"] * 5


def two_regions(shift=0.0, n=60, d=16, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, d))
    b = rng.normal(size=(n, d)) + shift
    return a, b


def test_projection_shapes_and_determinism():
    a, b = two_regions(shift=3.0)
    x = np.concatenate([a, b])
    p1 = project(x, "pca", seed=0)
    assert p1.shape == (120, 2)
    assert np.array_equal(p1, project(x, "pca", seed=0))
    t1 = project(x, "tsne", seed=0, perplexity=10)
    t2 = project(x, "tsne", seed=0, perplexity=10)
    assert t1.shape == (120, 2) and np.array_equal(t1, t2)
    r0 = project(x, "tsne", seed=0, perplexity=10, init="random")
    assert np.array_equal(r0, project(x, "tsne", seed=0, perplexity=10, init="random"))
    assert not np.array_equal(r0, project(x, "tsne", seed=1, perplexity=10, init="random"))
    # separated regions separate along the first principal component
    assert abs(p1[:60, 0].mean() - p1[60:, 0].mean()) > 5
    with pytest.warns(UserWarning, match="perplexity"):
        assert project(x[:10], "tsne", perplexity=30).shape == (10, 2)
    with pytest.raises(ValueError, match="method"):
        project(x, "umap")


def test_frechet_zero_for_identical_and_grows_with_shift():
    a, b = two_regions()
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    v = np.full(a.shape[1], 0.5)
    assert frechet_distance(a, a + v) == pytest.approx(float(v @ v), rel=1e-6)  # pure shift: ||v||^2
    ds = [frechet_distance(*two_regions(shift=s)) for s in (0.0, 0.5, 1.0, 2.0)]
    assert all(x < y for x, y in zip(ds, ds[1:]))
    # rank-deficient covariances (fewer chips than dimensions) still give a finite, ~0 self-distance
    few = np.random.default_rng(1).normal(size=(10, 64))
    assert frechet_distance(few, few) == pytest.approx(0.0, abs=1e-6)
    # covariance change without a mean change is seen too
    assert frechet_distance(a, 3 * a) > 1.0


def test_mmd_zero_for_identical_and_grows_with_shift():
    a, b = two_regions()
    assert mmd_rbf(a, a) == pytest.approx(0.0, abs=1e-12)
    ds = [mmd_rbf(*two_regions(shift=s), bandwidth=4.0) for s in (0.0, 0.5, 1.0, 2.0)]
    assert all(x < y for x, y in zip(ds, ds[1:]))
    assert region_distance(a, b, "mmd") == pytest.approx(mmd_rbf(a, b))
    assert region_distance(a, b) == pytest.approx(frechet_distance(a, b))
    with pytest.raises(ValueError, match="method"):
        region_distance(a, b, "kl")


def test_plot_embeddings_returns_figure():
    import matplotlib.pyplot as plt

    a, b = two_regions(shift=2)
    coords = project(np.concatenate([a, b]), "pca")
    fig = plot_embeddings(coords, ["north"] * 60 + ["south"] * 60, title="PCA")
    assert isinstance(fig, matplotlib.figure.Figure)
    ax = fig.axes[0]
    assert len(ax.collections) == 2 and ax.get_title() == "PCA"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["north (60)", "south (60)"]
    plt.close(fig)
