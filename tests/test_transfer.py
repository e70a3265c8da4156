"""Region distance against transfer error (sarssl.analysis.transfer)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

from sarssl.analysis.transfer import plot_region_transfer, region_transfer
from sarssl.data.simulate import simulate_region
from sarssl.models.vit import spec_from_profile
from sarssl.profiles import get_profile


@pytest.fixture(scope="module")
def regions(tmp_path_factory):
    root = tmp_path_factory.mktemp("transfer")
    for aoi, seed in (("sim-a", 0), ("sim-b", 1), ("sim-twin", 0)):
        simulate_region(root, aoi=aoi, n_chips=30, chip_size=32, seed=seed, progress=False)
    return root


def test_region_transfer_rows_and_a_twin_region(regions, tmp_path, monkeypatch):
    monkeypatch.setenv("SARSSL_HOME", str(tmp_path / "home"))
    profile = get_profile("smoke")
    encoder = spec_from_profile(profile).create()
    targets = {"sim-b": (regions, "sim-b"), "twin": (regions, "sim-twin")}
    df = region_transfer(encoder, profile, (regions, "sim-a"), targets, task="vegetation", seed=0)
    assert list(df["region"]) == ["sim-a", "sim-b", "twin"] and df["in_region"].tolist() == [True, False, False]
    assert {"distance", "rmse", "r2", "n_chips"} <= set(df.columns)
    assert (df["distance"] >= 0).all() and np.isfinite(df["rmse"]).all()
    # the same scene under another AOI name: the same test chips, so the same distance and error
    a, twin = df.iloc[0], df.iloc[2]
    assert twin["n_chips"] == a["n_chips"]
    assert twin["distance"] == pytest.approx(a["distance"], rel=1e-4)
    assert twin["rmse"] == pytest.approx(a["rmse"], rel=1e-4)
    assert df.iloc[1]["distance"] != pytest.approx(a["distance"], rel=1e-3)
    fig = plot_region_transfer(df, "rmse")
    assert "Spearman" in fig.axes[0].get_legend().get_texts()[0].get_text()
    with pytest.raises(ValueError, match="no column 'miou'"):
        plot_region_transfer(df, "miou")
    with pytest.raises(ValueError, match="source region's name"):
        region_transfer(encoder, profile, (regions, "sim-a"), {"sim-a": (regions, "sim-b")})
