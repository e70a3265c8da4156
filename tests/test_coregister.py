"""Co-registration onto a label grid and back, between two synthetic grids in different CRSs."""

import numpy as np
import pytest
import rioxarray  # noqa: F401
import xarray as xr
from rasterio.transform import from_origin

from sarssl.preprocess import from_grid, to_grid


def grid(crs, x0, y0, res, n, values):
    da = xr.DataArray(values, dims=("y", "x"),
                      coords={"y": y0 - res * (np.arange(n) + 0.5), "x": x0 + res * (np.arange(n) + 0.5)})
    return da.rio.write_crs(crs).rio.write_transform(from_origin(x0, y0, res, res))


@pytest.fixture(scope="module")
def grids():
    n = 120
    # SAR at 10 m in UTM 31N; value depends smoothly on easting so resampling is checkable
    x = 500000 + 10 * (np.arange(n) + 0.5)
    sar = grid("EPSG:32631", 500000, 5000000, 10.0, n, np.tile(0.01 + (x - 500000) / 1e5, (n, 1)).astype(np.float32))
    sar = sar.rio.write_nodata(np.nan)
    # labels at 30 m in UTM 31N shifted, and a class map at 0.0003 deg in WGS84 over the same area
    lab = grid("EPSG:32631", 500060, 4999940, 30.0, 30, np.zeros((30, 30), np.float32))
    left, bottom, right, top = sar.rio.transform_bounds("EPSG:4326")
    classes = (np.arange(40)[None, :] // 10 * np.ones((40, 1))).astype(np.uint8) + 1
    wgs = grid("EPSG:4326", left + 0.0002, top - 0.0002, 0.0003, 40, classes).rio.write_nodata(0)
    return sar, lab, wgs


def test_continuous_average_onto_coarser_grid(grids):
    sar, lab, _ = grids
    out = to_grid(sar, lab)
    assert out.shape == lab.shape and out.rio.crs == lab.rio.crs
    # a 30 m cell averages three 10 m columns: value at the cell centre easting
    expect = 0.01 + (lab.x.values - 500000) / 1e5
    np.testing.assert_allclose(out.values[5], expect, rtol=1e-4)
    back = from_grid(out, sar)
    assert back.shape == sar.shape
    ok = np.isfinite(back.values)
    assert ok.mean() > 0.5 and np.nanmax(np.abs(back.values - sar.values)[ok]) < 3.5e-4  # within one 30 m cell of the 1e-5 per m ramp


def test_categorical_nearest_from_other_crs(grids):
    sar, _, wgs = grids
    out = to_grid(wgs, sar, kind="categorical")
    assert out.dtype == np.uint8 and out.rio.crs.to_epsg() == 32631
    assert set(np.unique(out.values)) <= {0, 1, 2, 3, 4}  # no invented classes
    assert (out.values > 0).mean() > 0.7


def test_lazy_blocks_equal_eager(grids):
    sar, lab, wgs = grids
    eager = to_grid(wgs, sar, kind="categorical")
    lazy = to_grid(wgs, sar, kind="categorical", chunks=50)
    assert lazy.chunks is not None
    np.testing.assert_array_equal(lazy.values, eager.values)
    ce = to_grid(sar, lab)
    cl = to_grid(sar.chunk(40), lab, chunks=16)
    np.testing.assert_allclose(cl.values, ce.values, rtol=1e-6, equal_nan=True)


def test_errors(grids):
    sar, lab, _ = grids
    with pytest.raises(ValueError, match="kind"):
        to_grid(sar, lab, kind="classes")
    with pytest.raises(ValueError, match="no CRS"):
        to_grid(xr.DataArray(np.zeros((3, 3)), dims=("y", "x")), lab)
