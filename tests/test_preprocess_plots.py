"""Preprocessing figures: each helper draws what it says and validates its input."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from sarssl.preprocess import layover_shadow_mask, local_incidence_angle, to_db  # noqa: E402
from sarssl.preprocess.assess import fit_gamma  # noqa: E402
from sarssl.preprocess.plots import (  # noqa: E402
    PIPELINE_STEPS, plot_class_time_series, plot_filtered, plot_gamma_fit, plot_pipeline, plot_polarisations,
    plot_power_histograms, plot_terrain,
)
from sarssl.preprocess.synthetic import synthetic_dem, synthetic_landcover, synthetic_time_stack, terrain_sigma0  # noqa: E402

RNG = np.random.default_rng(0)
VV = (-10 + 2 * RNG.standard_normal((24, 24))).astype(np.float32)
VH = VV - 6


def _texts(fig):
    return " ".join(t.get_text() for ax in fig.axes for t in ax.texts + [ax.title])


def test_pipeline_has_every_step():
    fig = plot_pipeline()
    text = _texts(fig)
    for title, _, func in PIPELINE_STEPS:
        assert title in text and func in text
    assert len(fig.axes[0].patches) == 2 * len(PIPELINE_STEPS) - 1  # boxes + arrows
    plt.close(fig)


def test_polarisations_and_histograms():
    fig = plot_polarisations(VV, VH, title="t")
    assert "VV − VH" in _texts(fig)
    np.testing.assert_allclose(fig.axes[2].images[0].get_array(), VV - VH)
    plt.close(fig)
    with pytest.raises(ValueError, match="shape"):
        plot_polarisations(VV, VH[:3])
    fig = plot_power_histograms(VV, VH)
    assert "dB" in fig.axes[1].get_xlabel()
    plt.close(fig)


def test_gamma_fit_and_filtered():
    img = 0.1 * RNG.gamma(4.0, 0.25, (40, 40))
    fit = fit_gamma(img)
    fig = plot_gamma_fit(fit, nominal_looks=4.4)
    labels = [l.get_label() for l in fig.axes[0].lines]
    assert any("Gamma fit" in l for l in labels) and any("4.4" in l for l in labels)
    plt.close(fig)
    fig = plot_filtered({"a": img, "b": img * 2}, region=(slice(2, 10), slice(3, 9)), ncols=3)
    visible = [ax for ax in fig.axes if ax.get_visible() and ax.images]
    assert [ax.get_title() for ax in visible] == ["a", "b"]
    assert len(visible[0].patches) == 1
    plt.close(fig)


def test_class_time_series_and_terrain():
    lc = synthetic_landcover(16, seed=0)
    st = to_db(synthetic_time_stack(lc, revisit_days=30, seed=0))
    fig = plot_class_time_series(st, lc.values, {40: "cropland", 80: "water"}, year=2020)
    assert len(fig.axes) == 2 and "winter" in _texts(fig)
    plt.close(fig)
    dem = synthetic_dem(48, width=120.0)
    s0 = terrain_sigma0(dem, seed=0)
    m = layover_shadow_mask(dem, 35.0, 90.0)
    fig = plot_terrain(dem.values, local_incidence_angle(dem, 35.0, 90.0).values, to_db(s0).values,
                       to_db(s0).values, m.values, look_azimuth=90.0)
    assert "layover" in fig.axes[4].get_title()
    plt.close(fig)
