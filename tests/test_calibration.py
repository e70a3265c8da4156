"""SAFE calibration + thermal-noise LUTs: real pre-2018 annotation and a synthetic new-format noise XML."""

from pathlib import Path

import numpy as np
import pytest

from sarssl.preprocess import calibrate, noise_grid, parse_noise_xml, read_calibration, read_noise, interpolate_vectors

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ZIP = DATA / "safe_annotations" / "S1A_IW_GRDH_1SDV_20150203T043109_20150203T043134_004454_00574F_6D00.zip"


@pytest.fixture(scope="module")
def safe():
    if not ZIP.exists():
        pytest.skip(f"real SAFE sample not found at {ZIP}")
    return ZIP


def test_read_real_luts(safe):
    cal = read_calibration(safe, "vv")
    assert cal.shape == (16712, 25560)
    assert set(cal.luts) == {"sigmaNought", "betaNought", "gamma", "dn"}
    sig = cal.luts["sigmaNought"]
    assert sig.lines.size == 27 and sig.pixels[0].size == sig.values[0].size == 640
    noise = read_noise(safe, "VH")
    assert noise.format == "noiseVectorList" and noise.range.lines.size == 27 and not noise.azimuth


def test_calibration_matches_xarray_sentinel(safe):
    xr = pytest.importorskip("xarray")
    pytest.importorskip("xarray_sentinel")
    ds = xr.open_dataset(f"zip://*/manifest.safe::{safe}", engine="sentinel-1", group="IW/VV/calibration")
    cal = read_calibration(safe, "vv")
    for name in ("sigmaNought", "betaNought", "gamma"):
        ours = np.stack(cal.luts[name].values)
        np.testing.assert_allclose(ds[name].values, ours, rtol=1e-6)


def test_calibrate_decimated_grid(safe):
    cal, noise = read_calibration(safe, "vv"), read_noise(safe, "vv")
    rows = np.arange(0, cal.shape[0], 97)
    cols = np.arange(0, cal.shape[1], 101)
    dn = np.full((rows.size, cols.size), 120.0)
    dn[0, 0] = 0  # no-data border
    s0 = calibrate(dn, cal, "sigma0", rows=rows, cols=cols)
    a = interpolate_vectors(cal.luts["sigmaNought"], rows, cols)
    np.testing.assert_allclose(s0[1:, 1:], (120.0 ** 2 / a ** 2)[1:, 1:], rtol=1e-6)
    assert np.isnan(s0[0, 0])
    # at a LUT node the interpolation returns the tabulated value exactly
    vec = cal.luts["sigmaNought"]
    node = interpolate_vectors(vec, [vec.lines[3]], [vec.pixels[3][10]])
    assert node[0, 0] == pytest.approx(vec.values[3][10])
    # noise subtraction lowers power; a dark DN goes negative and is handled as asked
    s0n = calibrate(dn, cal, "sigma0", noise=noise, rows=rows, cols=cols)
    eta = noise_grid(noise, rows, cols)
    assert eta.min() >= 0 and (eta > 0).mean() > 0.5
    np.testing.assert_allclose(s0n[1:, 1:], ((120.0 ** 2 - eta) / a ** 2)[1:, 1:], rtol=1e-5)
    dark = np.full_like(dn, 1.0)
    neg = (1.0 - eta) <= 0
    assert neg.mean() > 0.5
    out = calibrate(dark, cal, noise=noise, rows=rows, cols=cols)
    assert np.array_equal(np.isnan(out), neg)
    fl = calibrate(dark, cal, noise=noise, rows=rows, cols=cols, negative="floor", floor=1e-5)
    assert np.allclose(fl[neg], 1e-5) and np.array_equal(fl[~neg], out[~neg])
    # beta0 > sigma0 > 0 for incidence angles 30-46 deg: sigma0 = beta0 sin(theta)
    b0 = calibrate(dn, cal, "beta0", rows=rows, cols=cols)
    ratio = s0[1:, 1:] / b0[1:, 1:]
    assert 0.45 < ratio.min() and ratio.max() < 0.75


def test_calibrate_dask_matches_numpy(safe):
    xr = pytest.importorskip("xarray")
    cal, noise = read_calibration(safe, "vh"), read_noise(safe, "vh")
    rows = np.arange(0, cal.shape[0], 400)
    cols = np.arange(0, cal.shape[1], 400)
    dn = np.random.default_rng(0).uniform(20, 200, (rows.size, cols.size))
    ref = calibrate(dn, cal, "gamma0", noise=noise, rows=rows, cols=cols)
    da = xr.DataArray(dn, dims=("y", "x"), coords={"line": ("y", rows), "pixel": ("x", cols)}).chunk(10)
    out = calibrate(da, cal, "gamma0", noise=noise)
    assert out.chunks is not None and out.attrs["quantity"] == "gamma0"
    np.testing.assert_allclose(out.values, ref, rtol=1e-6, equal_nan=True)


NEW_NOISE = """<?xml version="1.0" encoding="UTF-8"?>
<noise>
  <adsHeader><polarisation>VV</polarisation></adsHeader>
  <noiseRangeVectorList count="2">
    <noiseRangeVector><line>0</line><pixel count="3">0 50 99</pixel><noiseRangeLut count="3">10 20 30</noiseRangeLut></noiseRangeVector>
    <noiseRangeVector><line>100</line><pixel count="2">0 99</pixel><noiseRangeLut count="2">30 30</noiseRangeLut></noiseRangeVector>
  </noiseRangeVectorList>
  <noiseAzimuthVectorList count="2">
    <noiseAzimuthVector><swath>IW1</swath><firstAzimuthLine>0</firstAzimuthLine><firstRangeSample>0</firstRangeSample>
      <lastAzimuthLine>100</lastAzimuthLine><lastRangeSample>49</lastRangeSample>
      <line count="2">0 100</line><noiseAzimuthLut count="2">1.0 2.0</noiseAzimuthLut></noiseAzimuthVector>
    <noiseAzimuthVector><swath>IW2</swath><firstAzimuthLine>0</firstAzimuthLine><firstRangeSample>50</firstRangeSample>
      <lastAzimuthLine>100</lastAzimuthLine><lastRangeSample>99</lastRangeSample>
      <line count="1">0</line><noiseAzimuthLut count="1">0.5</noiseAzimuthLut></noiseAzimuthVector>
  </noiseAzimuthVectorList>
</noise>"""


def test_new_noise_format():
    nz = parse_noise_xml(NEW_NOISE)
    assert nz.format.startswith("noiseRangeVectorList") and len(nz.azimuth) == 2
    g = noise_grid(nz, rows=[0, 50, 100], cols=[0, 25, 50, 99])
    # range LUT: line 0 -> 10, 15, 20, 30 ; line 100 -> 30 ; line 50 halfway
    rng = np.array([[10, 15, 20, 30], [20, 22.5, 25, 30], [30, 30, 30, 30]])
    az = np.array([[1.0, 1.0, 0.5, 0.5], [1.5, 1.5, 0.5, 0.5], [2.0, 2.0, 0.5, 0.5]])
    np.testing.assert_allclose(g, rng * az)


def test_bad_noise_xml():
    with pytest.raises(ValueError, match="noiseVectorList"):
        parse_noise_xml("<noise><adsHeader/></noise>")
