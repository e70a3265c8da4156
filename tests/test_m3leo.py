"""Readers, decoders, the 12-channel builder and label fractions of sarssl.data.m3leo."""

from __future__ import annotations

import numpy as np
import pytest

from sarssl.data import m3leo
from sarssl.data.layout import AOILayout
from sarssl.data.products import (
    IGNORE_INDEX, INPUT_CHANNELS, LCCI_CODES, S1GRD_BANDS, decode_lcci, decode_modis_treecover, decode_s1,
    decode_s2rgb, decode_worldcover, encode_modis_treecover, encode_s1, encode_worldcover,
)


@pytest.fixture(scope="module")
def fx(tmp_path_factory, write_m3leo):
    return write_m3leo(tmp_path_factory.mktemp("m3leo"), n_chips=10, size=32, bad=False)


# -- decoder round trips ---------------------------------------------------------------------
def test_s1_round_trip():
    db = np.linspace(-29.8, 0, 500, dtype=np.float32)
    db[::50] = np.nan
    back = decode_s1(encode_s1(db))
    assert np.array_equal(np.isnan(back), np.isnan(db))
    assert np.nanmax(np.abs(back - db)) <= 30 / 255 / 2 + 1e-5


def test_worldcover_round_trip():
    classes = np.array([[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, IGNORE_INDEX]])
    codes = encode_worldcover(classes)
    assert codes[2, 3] == 0 and codes[0, 0] == 10 and codes[2, 2] == 100
    assert np.array_equal(decode_worldcover(codes), classes)


def test_modis_round_trip():
    pct = np.array([0.0, 12.4, 55.6, 100.0, np.nan], dtype=np.float32)
    water = np.array([False, False, False, False, False])
    water2 = water.copy(); water2[0] = True
    codes = encode_modis_treecover(pct, water2)
    assert codes[0] == 200 and codes[4] == 253
    back = decode_modis_treecover(codes)
    assert back[0] == 0 and np.isnan(back[4])
    assert np.allclose(back[1:4], np.rint(pct[1:4]))


def test_s2rgb_round_trip_and_median():
    rng = np.random.default_rng(1)
    codes = rng.integers(1, 256, (36, 4, 5)).astype(np.uint8)
    codes[3:6] = 0  # February missing
    dec = decode_s2rgb(codes)
    assert dec.shape == (12, 3, 4, 5)
    assert np.isnan(dec[1]).all() and np.allclose(dec[0], codes[0:3] / 255.0)
    med = m3leo.s2_median_codes(codes)
    ref = np.nanmedian(np.where(np.isnan(dec), np.nan, dec * 255), axis=0)
    assert np.abs(med[:3].astype(float) - ref).max() <= 0.5 + 1e-4
    assert med[3].all()


def test_lcci_round_trip():
    codes = np.array(list(LCCI_CODES) + [0, 5], dtype=np.uint8)
    cls = decode_lcci(codes)
    assert np.array_equal(cls[:-2], np.arange(len(LCCI_CODES)))
    assert (cls[-2:] == IGNORE_INDEX).all()
    assert np.array_equal(np.asarray(LCCI_CODES)[cls[:-2]], codes[:-2])


# -- reading the layout ----------------------------------------------------------------------
def test_read_splits_geojson_products(fx):
    layout = AOILayout.find(fx.layout.root, "fx")
    df = m3leo.read_splits(layout)
    assert list(df.columns) == ["identifier", "split"] and len(df) == 10
    assert dict(zip(df.identifier, df.split)) == fx.splits
    gj = m3leo.read_chips_geojson(layout)
    assert [f["properties"]["identifier"] for f in gj["features"]] == fx.ids
    assert set(m3leo.available_products(layout)) == set(m3leo.ALL_PRODUCTS)


def test_open_product_decodes_with_crs(fx):
    ident = fx.ids[3]
    s1 = m3leo.open_product(fx.layout, "s1grd-2020", ident)
    assert s1.dims == ("band", "y", "x") and list(s1.band.values) == list(S1GRD_BANDS)
    assert s1.rio.crs.to_epsg() == 32633 and s1.rio.transform().a == 10.0
    assert np.allclose(s1.values, decode_s1(fx.truth[ident]["s1"]), equal_nan=True)
    wc = m3leo.open_product(fx.layout, "esaworldcover-2020", ident)
    assert np.array_equal(wc.values[0], fx.truth[ident]["classes"])
    modis = m3leo.open_product(fx.layout, "modis44b006veg", ident)
    assert list(modis.band.values) == ["2018", "2019", "2020"] and modis.rio.transform().a == 250.0
    built = m3leo.open_product(fx.layout, "ghsbuilts-2020", ident)
    assert np.isnan(built.values[0, -1, -1]) and np.nanmax(built.values) <= 1.0
    s2 = m3leo.open_product(fx.layout, "s2rgbm-2020", ident)
    assert s2.shape == (36, 32, 32) and np.isnan(s2.values[:3]).all()
    med = m3leo.s2rgb_annual_median(s2)
    assert list(med.band.values) == ["red", "green", "blue"] and np.isnan(med.values[:, 1, 1]).all()
    with pytest.raises(FileNotFoundError, match="nope"):
        m3leo.open_product(fx.layout, "s1grd-2020", "nope")
    with pytest.raises(ValueError, match="unknown product"):
        m3leo.open_product(fx.layout, "sentinel9-2020", ident)


def test_read_record_resamples_coarse_products(fx):
    ident = fx.ids[2]
    rec = m3leo.read_record(fx.layout, m3leo.ALL_PRODUCTS, ident, modis_year=2020)
    t = fx.truth[ident]
    assert rec["s1"].shape == (16, 32, 32) and rec["treecover"].shape == (32, 32)
    # pixel (row, col) at 10 m lies in coarse cell (row*10 // native)
    r = np.arange(32) * 10 // 250
    assert np.array_equal(rec["treecover"], t["modis"][2][r[:, None], r[None, :]])
    r = np.arange(32) * 10 // 100
    assert np.allclose(rec["biomass"], t["agb"][0][r[:, None], r[None, :]], equal_nan=True)
    r = np.arange(32) * 10 // 300
    assert np.array_equal(rec["lcci"], t["lcci"][r[:, None], r[None, :]])
    rec19 = m3leo.read_record(fx.layout, ["s1grd-2020", "modis44b006veg"], ident, modis_year=2019)
    assert np.array_equal(rec19["treecover"], t["modis"][1][(np.arange(32) * 10 // 250)[:, None], (np.arange(32) * 10 // 250)[None, :]])


def test_nearest_index_footprint_error():
    chip = m3leo.ChipGrid((10.0, 0, 1000.0, 0, -10.0, 5000.0), 32, 32, "EPSG:32633")
    ok = m3leo.ChipGrid((250.0, 0, 1000.0, 0, -250.0, 5000.0), 2, 2, "EPSG:32633")
    rows, cols = m3leo.nearest_index(ok, chip)
    assert rows.max() == 1 and cols.min() == 0
    shifted = m3leo.ChipGrid((250.0, 0, 1200.0, 0, -250.0, 5000.0), 2, 2, "EPSG:32633")
    with pytest.raises(ValueError, match="footprint"):
        m3leo.nearest_index(shifted, chip, what="modis.tif")
    other = m3leo.ChipGrid((250.0, 0, 1000.0, 0, -250.0, 5000.0), 2, 2, "EPSG:32632")
    with pytest.raises(ValueError, match="CRS"):
        m3leo.nearest_index(other, chip)


# -- the 12 channels -------------------------------------------------------------------------
def test_build_input_channels_order_and_values(fx):
    ident = fx.ids[0]
    s1 = m3leo.open_product(fx.layout, "s1grd-2020", ident)
    ch = m3leo.build_input_channels(s1)
    assert tuple(ch.band.values) == INPUT_CHANNELS
    assert INPUT_CHANNELS[:4] == ("vv-vh_winter", "vv-vh_spring", "vv-vh_summer", "vv-vh_fall")
    assert ch.rio.crs == s1.rio.crs
    for season in ("winter", "spring", "summer", "fall"):
        vv = s1.sel(band=f"{season}_vvasc").values
        vh = s1.sel(band=f"{season}_vhasc").values
        assert np.allclose(ch.sel(band=f"vv-vh_{season}").values, vv - vh, equal_nan=True)
        assert np.allclose(ch.sel(band=f"vh_{season}").values, vh, equal_nan=True)
    assert np.isnan(ch.values[:, :2, :3]).all()
    des = m3leo.build_input_channels(s1, polarisations=("vv",), seasons=("summer",), pass_="des")
    assert list(des.band.values) == ["vv_summer_des"]
    assert np.allclose(des.values[0], s1.sel(band="summer_vvdes").values, equal_nan=True)
    with pytest.raises(ValueError, match="polarisation"):
        m3leo.build_input_channels(s1, polarisations=("hh",))


# -- label fractions -------------------------------------------------------------------------
def test_label_fraction_determinism_and_nesting():
    ids = [f"c{i:03d}" for i in range(200)]
    a = m3leo.label_fraction_ids(ids, 10, seed=3)
    assert a == m3leo.label_fraction_ids(list(reversed(ids)), 10, seed=3)
    assert len(a) == 20 and len(m3leo.label_fraction_ids(ids, 1, 0)) == 2
    assert len(m3leo.label_fraction_ids(ids, 0.1, 0)) == 1
    assert m3leo.label_fraction_ids(ids, 100, 0) == ids
    b = m3leo.label_fraction_ids(ids, 25, seed=3)
    assert set(a) <= set(b) and len(b) == 50
    assert a != m3leo.label_fraction_ids(ids, 10, seed=4)
    with pytest.raises(ValueError, match="limit_pct"):
        m3leo.label_fraction_ids(ids, 0, 0)
