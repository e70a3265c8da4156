"""The product registry (sarssl.data.products.PRODUCT_SPECS) and the tables derived from it."""

from __future__ import annotations

import numpy as np
import pytest

from sarssl.data import m3leo
from sarssl.data.products import (
    IGNORE_INDEX,
    LABEL_SPECS,
    LCCI_CODES,
    PRODUCT_FAMILIES,
    PRODUCT_KINDS,
    PRODUCT_SPECS,
    WORLDCOVER_CODES,
    ProductSpec,
    decode_s1,
    encode_modis_treecover,
    encode_s1,
    encode_worldcover,
    product_family,
    product_spec,
)
from sarssl.train.metrics import higher_is_better
from sarssl.train.tasks import TARGETS

#: one valid storage value per family (any band)
VALID = {"s1grd": 100, "esaworldcover": 40, "modis44b006veg": 55, "biomass": 12.5, "ghsbuilts": 40, "s2rgbm": 128,
         "lcci": 130}


def _storage(spec: ProductSpec, value) -> np.ndarray:
    n = spec.band_count or 3  # MODIS: one band per year
    return np.full((n, 4, 5), value, dtype=spec.dtype)


@pytest.mark.parametrize("family", list(PRODUCT_SPECS))
def test_spec_consistent_with_its_decoder(family):
    spec = PRODUCT_SPECS[family]
    assert spec.family == family and spec.kind in PRODUCT_KINDS
    valid = spec.decoder(_storage(spec, VALID[family]))
    nodata = spec.decoder(_storage(spec, spec.nodata))
    assert valid.size == nodata.size == _storage(spec, 0).size
    if spec.kind == "classes":
        assert valid.dtype == np.int64 and nodata.dtype == np.int64
        assert ((valid >= 0) & (valid < spec.n_classes)).all()
        assert (nodata == IGNORE_INDEX).all()
        assert spec.valid_key is None and spec.task == "classification"
    else:
        assert valid.dtype == np.float32 and np.isfinite(valid).all()
        assert np.isnan(nodata).all()
        assert spec.valid_key == f"{spec.key}_valid" and spec.task == "regression"
    if spec.kind == "rgb":
        assert ((valid >= 0) & (valid <= 1)).all() and spec.data_range == 1.0
    # decode_array (the reader's path) is the spec's decoder, in storage shape
    raw = _storage(spec, VALID[family])
    out = m3leo.decode_array(family, raw)
    assert out.shape == raw.shape
    assert np.array_equal(out.reshape(-1), valid.reshape(-1), equal_nan=True)


@pytest.mark.parametrize("family", list(PRODUCT_SPECS))
def test_spec_names_pattern_and_tables(family):
    spec = PRODUCT_SPECS[family]
    name = spec.folder_name(2019)
    assert spec.matches(name) and product_family(name) == family and product_spec(name) is spec
    assert all(not other.matches(name) for f, other in PRODUCT_SPECS.items() if f != family)
    assert spec.matches(spec.folder_name(2020)) and not spec.matches(name + "x")
    assert PRODUCT_FAMILIES[family] == (spec.bands, spec.pixel_size)
    assert m3leo.EXPECTED_DTYPES[family] == spec.dtype
    key, dtype, _ = m3leo.RECORD_LAYOUT[family]
    assert key == spec.key and np.dtype(dtype) == np.dtype(spec.dtype)
    if spec.metrics:
        assert spec.headline == spec.metrics[0]
        for m in spec.metrics:
            higher_is_better(m)  # every probe metric has a known direction


def test_registry_tables():
    assert m3leo.default_products(2020) == m3leo.ALL_PRODUCTS == (
        "s1grd-2020", "esaworldcover-2020", "modis44b006veg", "biomass-2020", "ghsbuilts-2020", "s2rgbm-2020",
        "lcci-2020")
    assert list(LABEL_SPECS) == ["s2rgb", "worldcover", "lcci", "treecover", "biomass", "built"]
    assert all(s.kind != "input" for s in LABEL_SPECS.values())
    assert len({s.key for s in PRODUCT_SPECS.values()}) == len({s.title for s in PRODUCT_SPECS.values()}) == 7
    assert PRODUCT_SPECS["esaworldcover"].n_classes == len(WORLDCOVER_CODES)
    assert PRODUCT_SPECS["lcci"].n_classes == len(LCCI_CODES)
    assert PRODUCT_SPECS["modis44b006veg"].band_count is None and PRODUCT_SPECS["s1grd"].band_count == 16
    with pytest.raises(ValueError, match="unknown product"):
        product_spec("sentinel9-2020")
    with pytest.raises(ValueError, match="kind"):
        ProductSpec("x", "x", None, 1.0, "uint8", 0, decode_s1, "labels", "x", "x")


def test_targets_derive_from_the_registry():
    for t in TARGETS.values():
        spec = product_spec(t.product_name())
        assert (t.key, t.valid_key, t.unit) == (spec.key, spec.valid_key, spec.unit)
        assert t.n_classes == (spec.n_classes or 0)
        assert (t.kind == "segmentation") == (spec.kind == "classes")
        higher_is_better(t.primary)
        for m in t.metrics:
            higher_is_better(m)


def test_encoders_invert_the_decoders():
    codes = np.arange(1, 256, dtype=np.uint8)
    assert np.array_equal(encode_s1(decode_s1(codes)), codes)
    wc = np.asarray(WORLDCOVER_CODES, np.uint8)
    assert np.array_equal(encode_worldcover(PRODUCT_SPECS["esaworldcover"].decoder(wc)), wc)
    pct = np.arange(0, 101, dtype=np.uint8)
    assert np.array_equal(encode_modis_treecover(PRODUCT_SPECS["modis44b006veg"].decoder(pct)), pct)
