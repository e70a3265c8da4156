"""Seasonal composites: season boundaries, pass selection, channel order, M3LEO uint8 round trip, dask."""

import numpy as np
import pandas as pd
import pytest
import rioxarray  # noqa: F401
import xarray as xr

from sarssl.data.products import INPUT_CHANNELS, S1GRD_BANDS
from sarssl.preprocess import (
    decode_m3leo, encode_m3leo, s1grd_composite, s1grd_to_input_channels, season_mask, seasonal_composite,
)

SEASON_DB = {"winter": -14.0, "spring": -12.0, "summer": -9.0, "fall": -11.0}
MONTH_SEASON = {12: "winter", 1: "winter", 2: "winter", 3: "spring", 4: "spring", 5: "spring",
                6: "summer", 7: "summer", 8: "summer", 9: "fall", 10: "fall", 11: "fall"}


def make_stack(year=2020, n=8):
    """Acquisitions every 6 days over Nov year-1 .. Jan year+1; VV = season level, VH = VV - 6 dB (asc),
    descending passes 3 dB brighter; the out-of-year months are +20 dB so that leaking them shows."""
    times = pd.date_range(f"{year - 1}-11-01", f"{year + 1}-01-31", freq="6D")
    pas = np.where(np.arange(times.size) % 2 == 0, "asc", "des")
    vv = np.empty(times.size)
    for i, t in enumerate(times):
        in_year = (t.year == year) or (t.year == year - 1 and t.month == 12)
        vv[i] = SEASON_DB[MONTH_SEASON[t.month]] + (0 if in_year else 20) + (3 if pas[i] == "des" else 0)
    db = np.stack([vv, vv - 6.0], axis=1)[:, :, None, None] * np.ones((1, 1, n, n))
    db[0::4, :, 0, 0] = np.nan  # some missing acquisitions
    da = xr.DataArray(10 ** (db / 10), dims=("time", "band", "y", "x"),
                      coords={"time": times, "band": ["VV", "VH"], "pass": ("time", pas),
                              "y": 1000.0 - 10 * np.arange(n), "x": 500.0 + 10 * np.arange(n)})
    return da.rio.write_crs("EPSG:32631")


def test_season_mask_winter_spans_december_of_previous_year():
    t = pd.to_datetime(["2019-11-30", "2019-12-01", "2020-02-29", "2020-03-01", "2020-12-15"]).values
    assert season_mask(t, 2020, "winter").tolist() == [False, True, True, False, False]
    assert season_mask(t, 2020, "spring").tolist() == [False, False, False, True, False]


@pytest.mark.parametrize("stat", ["median", "mean"])
def test_twelve_channels(stat):
    out = seasonal_composite(make_stack(), 2020, stat=stat, pass_="asc")
    assert list(out.band.values) == list(INPUT_CHANNELS) and out.dtype == np.float32
    assert out.rio.crs.to_epsg() == 32631
    for s, v in SEASON_DB.items():
        np.testing.assert_allclose(out.sel(band=f"vv_{s}").values, v, atol=1e-4)
        np.testing.assert_allclose(out.sel(band=f"vh_{s}").values, v - 6, atol=1e-4)
        np.testing.assert_allclose(out.sel(band=f"vv-vh_{s}").values, 6, atol=1e-4)
    des = seasonal_composite(make_stack(), 2020, stat=stat, pass_="des")
    np.testing.assert_allclose(des.sel(band="vv_summer").values, SEASON_DB["summer"] + 3, atol=1e-4)


def test_empty_season_is_nan_and_bad_input():
    st = make_stack()
    out = seasonal_composite(st, 2022, pass_=None)
    assert np.isnan(out.values).all()
    with pytest.raises(ValueError, match="time, band, y, x"):
        seasonal_composite(st.isel(time=0), 2020)
    with pytest.raises(ValueError, match="'pass' coordinate"):
        seasonal_composite(st.drop_vars("pass"), 2020, pass_="asc")


def test_s1grd_layout_and_uint8_roundtrip():
    st = make_stack()
    grd = s1grd_composite(st, 2020)
    assert list(grd.band.values) == list(S1GRD_BANDS)
    np.testing.assert_allclose(grd.sel(band="fall_vhdes").values, SEASON_DB["fall"] - 3, atol=1e-4)
    codes = encode_m3leo(grd)
    assert codes.dtype == np.uint8 and codes.min() >= 1
    back = decode_m3leo(codes)
    np.testing.assert_allclose(back.values, grd.values, atol=30 / 255 / 2 + 1e-5)
    twelve = s1grd_to_input_channels(back)
    ref = seasonal_composite(st, 2020)
    np.testing.assert_allclose(twelve.values, ref.values, atol=2 * 30 / 255)
    nanimg = grd.copy(data=np.where(np.arange(grd.sizes["x"]) < 2, np.nan, grd.values))
    assert (encode_m3leo(nanimg).values[..., :2] == 0).all()
    assert np.isnan(decode_m3leo(encode_m3leo(nanimg)).values[..., :2]).all()


def test_dask_lazy_equals_numpy():
    st = make_stack()
    ref = seasonal_composite(st, 2020)
    lazy = seasonal_composite(st.chunk({"time": 5, "y": 4, "x": 4}), 2020)
    assert lazy.chunks is not None
    np.testing.assert_allclose(lazy.values, ref.values, atol=1e-5, equal_nan=True)
    codes = encode_m3leo(lazy)
    assert codes.chunks is not None
    np.testing.assert_array_equal(codes.values, encode_m3leo(ref).values)
