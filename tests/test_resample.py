"""Resizing an AOI's chips to a profile's image size: footprint kept, S1 multilooked, classes by majority."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from sarssl.data.datasets import M3LEODataset
from sarssl.data.layout import AOILayout
from sarssl.data.m3leo import read_splits
from sarssl.data.products import decode_s1
from sarssl.data.resample import chip_size_of, resample_aoi
from sarssl.data.simulate import simulate_region


@pytest.fixture(scope="module")
def region(tmp_path_factory):
    return simulate_region(tmp_path_factory.mktemp("src"), "rs-a", n_chips=6, chip_size=32, pixel_size=10.0,
                           seed=3, progress=False)


def test_resample_halves_the_chips_and_keeps_the_footprint(region, tmp_path):
    res = resample_aoi(region, tmp_path / "out", 16, progress=False)
    assert (res.source_size, res.size, res.source_pixel, res.pixel) == (32, 16, 10.0, 20.0)
    assert "resized from 32 px at 10 to 16 px at 20" in res.note()
    out = AOILayout.find(tmp_path / "out", "rs-a")
    assert chip_size_of(out) == (16, 16)
    assert read_splits(out).equals(read_splits(region))
    ident = read_splits(region)["identifier"].iloc[0]
    with rasterio.open(region.chip_path("s1grd-2020", ident)) as a, rasterio.open(out.chip_path("s1grd-2020", ident)) as b:
        assert a.bounds == b.bounds  # the same 320 m footprint
        src_db, dst_db = decode_s1(a.read()), decode_s1(b.read())
    lin = 10 ** (src_db[8, :2, :2] / 10)  # summer VV, the first 2x2 block: its mean in linear power
    assert np.isclose(dst_db[8, 0, 0], 10 * np.log10(np.nanmean(lin)), atol=0.12)
    with rasterio.open(region.chip_path("esaworldcover-2020", ident)) as a, \
            rasterio.open(out.chip_path("esaworldcover-2020", ident)) as b:
        block, got = a.read(1)[:2, :2], b.read(1)[0, 0]
    assert (block == got).sum() >= (block == np.bincount(block.ravel()).argmax()).sum()  # a majority class
    coarse = region.chip_path("modis44b006veg", ident)
    assert out.chip_path("modis44b006veg", ident).read_bytes() == coarse.read_bytes()  # copied, own grid
    ds = M3LEODataset(tmp_path / "out", "rs-a", split=None, normalization=None, progress=False)
    assert ds[0]["s1"].shape == (12, 16, 16) and ds[0]["treecover"].shape == (16, 16)
    # the same source and size again: reused
    assert resample_aoi(region, tmp_path / "out", 16, progress=False).key == res.key
