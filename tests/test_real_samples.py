"""Real samples in ../shared/data (skipped when absent) and the BigEarthNet patches shipped on PyPI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sarssl.data.bigearthnet import (
    bigearthnet_s1_patches, bigearthnet_s2_patches, open_bigearthnet_s1, open_bigearthnet_s2_rgb, s2_patch_for,
)
from sarssl.data.products import IGNORE_INDEX, WORLDCOVER_CODES, decode_worldcover

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# patch -> (EPSG, median VV dB, median VH dB) from ../shared/data/README.md
BEN_S1 = {
    "S1A_IW_GRDH_1SDV_20170613T165043_33UUP_87_48": (32633, -12.0, -18.2),
    "S1A_IW_GRDH_1SDV_20170617T064724_29UPU_36_85": (32629, -12.3, -17.2),
    "S1A_IW_GRDH_1SDV_20170617T064724_29UPU_4_55": (32629, -11.2, -16.1),
    "S1A_IW_GRDH_1SDV_20170925T043256_35VPK_69_24": (32635, -10.5, -15.6),
    "S1A_IW_GRDH_1SDV_20171221T064238_29SND_56_35": (32629, -10.8, -17.3),
    "S1A_IW_GRDH_1SDV_20180204T043253_35VPK_57_38": (32635, -7.9, -15.6),
}


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real sample data not found at {path}")
    return path


def test_worldcover_crop_through_decoder():
    import rasterio

    files = sorted(_need(DATA / "esa_worldcover").glob("*.tif"))
    if not files:
        pytest.skip("no WorldCover crop in ../shared/data/esa_worldcover")
    with rasterio.open(files[0]) as src:
        codes = src.read(1)
        assert src.nodata == 0 and src.crs.to_epsg() == 4326
    classes = decode_worldcover(codes)
    assert classes.dtype == np.int64 and classes.shape == codes.shape
    assert np.array_equal(classes == IGNORE_INDEX, ~np.isin(codes, WORLDCOVER_CODES))
    assert (classes[codes == 0] == IGNORE_INDEX).all()
    valid = classes[classes != IGNORE_INDEX]
    shares = np.bincount(valid, minlength=11) / codes.size
    assert shares[WORLDCOVER_CODES.index(10)] == pytest.approx(0.815, abs=0.01)  # tree cover
    assert shares[WORLDCOVER_CODES.index(80)] == pytest.approx(0.142, abs=0.01)  # permanent water
    assert shares[WORLDCOVER_CODES.index(50)] == pytest.approx(0.023, abs=0.005)  # built-up


def _check_s1(patches):
    assert sorted(p.name for p in patches) == sorted(BEN_S1)
    for p in patches:
        da = open_bigearthnet_s1(p)
        epsg, vv, vh = BEN_S1[p.name]
        assert da.dims == ("band", "y", "x") and list(da.band.values) == ["vv", "vh"]
        assert da.shape == (2, 120, 120) and da.dtype == np.float32
        assert da.rio.crs.to_epsg() == epsg and da.rio.transform().a == pytest.approx(10.0)
        assert float(da.sel(band="vv").median()) == pytest.approx(vv, abs=0.5)
        assert float(da.sel(band="vh").median()) == pytest.approx(vh, abs=0.5)
        assert da.attrs["labels"] and da.attrs["units"] == "dB"


def test_bigearthnet_shared_patches():
    root = _need(DATA / "bigearthnet_examples" / "BigEarthNet-S1-Example")
    _check_s1(sorted(p for p in root.iterdir() if p.is_dir()))


def test_bigearthnet_unpacks_from_installed_package(tmp_path):
    patches = bigearthnet_s1_patches(tmp_path)
    assert all(p.parent.parent == tmp_path for p in patches)
    _check_s1(patches)
    assert bigearthnet_s1_patches(tmp_path) == patches  # second call reuses the unpacked folder
    s2 = open_bigearthnet_s2_rgb(s2_patch_for(patches[0], bigearthnet_s2_patches(tmp_path)))
    s1 = open_bigearthnet_s1(patches[0])
    assert list(s2.band.values) == ["red", "green", "blue"] and s2.shape == (3, 120, 120)
    assert s2.rio.crs == s1.rio.crs and 0 < float(s2.mean()) < 1
