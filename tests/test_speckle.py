"""Speckle filters and quality measures: behaviour on synthetic Gamma speckle, NaN handling, xarray/dask."""

import numpy as np
import pytest
import rioxarray  # noqa: F401
import xarray as xr

from sarssl.preprocess import (
    boxcar, edge_preservation_index, enhanced_lee, enl, frost, from_db, gamma_map, lee, lee_sigma,
    ratio_image_stats, refined_lee, to_db,
)

LOOKS = 4
FILTERS = {
    "boxcar": lambda a: boxcar(a, 7),
    "lee": lambda a: lee(a, 7, looks=LOOKS),
    "enhanced_lee": lambda a: enhanced_lee(a, 7, looks=LOOKS),
    "refined_lee": lambda a: refined_lee(a, 7, looks=LOOKS),
    "frost": lambda a: frost(a, 7),
    "gamma_map": lambda a: gamma_map(a, 7, looks=LOOKS),
    "lee_sigma": lambda a: lee_sigma(a, 7, looks=LOOKS),
}


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(0)
    truth = np.full((96, 96), 0.05)
    truth[:, 48:] = 0.5  # a vertical edge, 10 dB step
    noisy = truth * rng.gamma(LOOKS, 1.0 / LOOKS, truth.shape)
    return truth, noisy


@pytest.mark.parametrize("name", list(FILTERS))
def test_filter_reduces_speckle_and_is_unbiased(scene, name):
    truth, noisy = scene
    out = FILTERS[name](noisy)
    assert out.shape == noisy.shape and out.dtype == np.float32
    flat = (slice(8, 88), slice(4, 40))
    assert enl(out, flat) > 2.5 * enl(noisy, flat)  # noisy ENL ~ 4
    assert abs(out[flat].mean() / truth[flat].mean() - 1) < 0.1
    r = ratio_image_stats(noisy, out, flat)
    assert abs(r["mean"] - 1) < 0.1


@pytest.mark.parametrize("name", ["lee", "enhanced_lee", "refined_lee", "gamma_map", "lee_sigma"])
def test_adaptive_filters_keep_edges_better_than_boxcar(scene, name):
    truth, noisy = scene
    box = FILTERS["boxcar"](noisy)
    out = FILTERS[name](noisy)
    band = (slice(8, 88), slice(44, 52))
    err_box = np.abs(to_db(box[band]) - to_db(truth[band])).mean()
    err = np.abs(to_db(out[band]) - to_db(truth[band])).mean()
    assert err < err_box
    assert edge_preservation_index(truth, out) > edge_preservation_index(truth, box)


def test_refined_lee_uses_edge_aligned_window(scene):
    truth, noisy = scene
    out = refined_lee(noisy, 7, looks=LOOKS)
    # one pixel from the edge, the edge-aligned half-window keeps the dark side dark
    assert np.median(out[8:88, 46]) < 0.1 and np.median(out[8:88, 49]) > 0.3


@pytest.mark.parametrize("name", list(FILTERS))
def test_nan_does_not_contaminate(scene, name):
    _, noisy = scene
    img = noisy.copy()
    img[40:43, 20:23] = np.nan
    out = FILTERS[name](img)
    assert np.isnan(out[40:43, 20:23]).all()
    assert np.isfinite(out[np.isfinite(img)]).all()


@pytest.mark.parametrize("name", ["lee", "refined_lee", "frost", "lee_sigma"])
def test_dataarray_and_dask_match_numpy(scene, name):
    _, noisy = scene
    img = np.stack([noisy, noisy[::-1]])
    img[0, 5:9, 60:64] = np.nan
    da = xr.DataArray(img, dims=("band", "y", "x"), coords={"band": ["vv", "vh"], "y": np.arange(96.0), "x": np.arange(96.0)})
    da = da.rio.write_crs("EPSG:32633")
    ref = FILTERS[name](img)
    out = FILTERS[name](da)
    assert out.rio.crs == da.rio.crs and list(out.band.values) == ["vv", "vh"]
    np.testing.assert_allclose(out.values, ref, rtol=1e-6, equal_nan=True)
    lazy = FILTERS[name](da.chunk({"band": 1, "y": 40, "x": 40}))
    assert lazy.chunks is not None  # still dask-backed
    np.testing.assert_allclose(lazy.values, ref, rtol=1e-5, equal_nan=True)


def test_db_roundtrip_and_nonpositive():
    x = np.array([1e-3, 0.1, 1.0, 0.0, -1.0, np.nan])
    db = to_db(x)
    np.testing.assert_allclose(db[:3], [-30, -10, 0])
    assert np.isnan(db[3:]).all()
    assert to_db(x, floor=1e-5)[3] == pytest.approx(-50)
    np.testing.assert_allclose(from_db(db[:3]), x[:3])
    da = xr.DataArray(x).chunk(2)
    assert np.isnan(to_db(da).values[3])


def test_bad_arguments():
    with pytest.raises(ValueError, match="odd"):
        lee(np.ones((8, 8)), 6)
    with pytest.raises(ValueError, match="looks"):
        gamma_map(np.ones((8, 8)), 5, looks=0)
    with pytest.raises(ValueError, match="fewer than 2"):
        enl(np.full((4, 4), np.nan))


def test_enl_of_gamma_speckle():
    rng = np.random.default_rng(1)
    x = rng.gamma(5.0, 0.2, (200, 200))
    assert enl(x) == pytest.approx(5.0, rel=0.05)
