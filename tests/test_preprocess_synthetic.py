"""Synthetic teaching inputs (land cover, time stack, DEM, terrain sigma0) and the speckle assessment helpers."""

import numpy as np
import pytest

from sarssl.data.products import INPUT_CHANNELS
from sarssl.preprocess import LAYOVER, SHADOW, enl, layover_shadow_mask, seasonal_composite, terrain_flatten, to_db
from sarssl.preprocess.assess import compare_filters, fit_gamma, most_homogeneous_window
from sarssl.preprocess.synthetic import (
    SYNTHETIC_CLASSES, acquisition_times, synthetic_dem, synthetic_landcover, synthetic_time_stack, terrain_sigma0,
)
from sarssl.preprocess import boxcar, lee


@pytest.fixture(scope="module")
def stack():
    lc = synthetic_landcover(40, seed=3)
    return lc, synthetic_time_stack(lc, year=2020, revisit_days=6, looks=4.4, seed=3)


def test_landcover_is_georeferenced_and_seeded():
    a, b = synthetic_landcover(32, seed=1), synthetic_landcover(32, seed=1)
    assert a.dims == ("y", "x") and a.rio.crs is not None and a.dtype == np.uint8
    np.testing.assert_array_equal(a.values, b.values)
    assert set(np.unique(a.values)) <= set(SYNTHETIC_CLASSES) and 80 in a.values
    assert not np.array_equal(a.values, synthetic_landcover(32, seed=2).values)
    assert a["y"].values[0] > a["y"].values[-1]  # north up


def test_acquisition_times_cover_the_seasons():
    t, p = acquisition_times(2020, 6)
    assert t[0] == np.datetime64("2019-12-01") and t[-1] <= np.datetime64("2020-11-30")
    assert set(p) == {"asc", "des"} and (p[::2] == "asc").all()


def test_time_stack_shape_speckle_and_seasonality(stack):
    lc, st = stack
    assert st.dims == ("time", "band", "y", "x") and list(st["band"].values) == ["vv", "vh"]
    assert st.rio.crs == lc.rio.crs and "pass" in st.coords and st.dtype == np.float32
    # speckle: per-pixel temporal ratio to the clean level has ENL ~ looks on a static class (built-up, VH)
    built = lc.values == 50
    if built.sum() < 20:
        pytest.skip("no built-up parcel in this draw")
    asc = st.isel(time=np.flatnonzero(st["pass"].values == "asc")).sel(band="vh").values[:, built]
    ratio = asc / asc.mean(axis=0, keepdims=True)
    assert 3.0 < enl(ratio) < 6.0
    # cropland VH is much higher in summer than in winter; built-up is not
    ch = seasonal_composite(st, 2020)
    assert list(ch["band"].values) == list(INPUT_CHANNELS)
    crop = lc.values == 40
    d_crop = float((ch.sel(band="vh_summer") - ch.sel(band="vh_winter")).values[crop].mean())
    d_built = float((ch.sel(band="vh_summer") - ch.sel(band="vh_winter")).values[built].mean())
    assert d_crop > 5.0 and abs(d_built) < 1.0


def test_time_stack_rejects_unknown_classes():
    lc = synthetic_landcover(16, seed=0)
    lc[0, 0] = 70
    with pytest.raises(ValueError, match="70"):
        synthetic_time_stack(lc)


def test_dem_terrain_sigma0_flattens_back():
    dem = synthetic_dem(96, pixel_size=10.0, height=800.0, width=160.0)
    m = layover_shadow_mask(dem, 35.0, 90.0).values
    assert (m & LAYOVER).any() and (m & SHADOW).any() and (m == 0).mean() > 0.5
    s0 = terrain_sigma0(dem, gamma0_db=-8.0, incidence=35.0, look_azimuth=90.0, looks=1e6, seed=0)
    assert np.isnan(s0.values[m > 0]).all()
    g0 = to_db(terrain_flatten(s0, dem, 35.0, 90.0)).values
    np.testing.assert_allclose(g0[m == 0], -8.0, atol=0.05)
    assert np.nanstd(to_db(s0).values) > 1.0  # slopes make sigma0 vary before flattening


def test_homogeneous_window_and_gamma_fit():
    rng = np.random.default_rng(0)
    img = np.full((60, 60), 0.1) * rng.gamma(4.0, 0.25, (60, 60))
    img[:, :30] *= rng.lognormal(0, 1.0, (60, 30))  # textured left half
    r, c = most_homogeneous_window(img, 15)
    assert c.start >= 30 - 7 and r.stop - r.start == 15
    fit = fit_gamma(img, (slice(0, 60), slice(30, 60)))
    assert abs(fit["shape"] - 4.0) < 0.6 and abs(fit["enl_moments"] - 4.0) < 0.8
    assert abs(fit["values"].mean() - 1.0) < 1e-9
    with pytest.raises(ValueError, match="size"):
        most_homogeneous_window(img, 99)


def test_compare_filters_table():
    rng = np.random.default_rng(1)
    img = np.where(np.arange(64)[None] < 32, 0.05, 0.5) * rng.gamma(4.0, 0.25, (64, 64))
    region = (slice(4, 60), slice(2, 28))
    table, outs = compare_filters(img, {"boxcar": lambda a: boxcar(a, 7), "lee": lambda a: lee(a, 7, looks=4)}, region)
    assert list(table.index) == ["none", "boxcar", "lee"] and set(outs) == set(table.index)
    assert table.loc["boxcar", "ENL"] > 3 * table.loc["none", "ENL"]
    assert table.loc["lee", "EPI"] > table.loc["boxcar", "EPI"]
    assert abs(table.loc["lee", "ratio mean"] - 1) < 0.1
    with pytest.raises(ValueError, match="bad"):
        compare_filters(img, {"bad": lambda a: a[:10]}, region)
