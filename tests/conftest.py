"""Shared test fixtures.

- ``write_m3leo``: :func:`write_fixture`, which writes a tiny AOI in the real M3LEO layout with
  rasterio and the encoders of ``sarssl.data.products``. Independent of the simulator: values are
  seeded noise, the grid is a row of chips in UTM 33N, coarse products (MODIS 250 m, biomass 100 m,
  lcci 300 m) sit on their own grids covering each chip's footprint. With ``bad=True`` four chips are
  broken on purpose (see ``BAD``).
- ``tiny_vit``: :func:`make_tiny_vit`, a seeded 12-channel timm ViT-Tiny on 32 px inputs, 8 px patches.
- ``tiny_profile``: the smoke profile with one epoch, at least 2 steps, batch 8 and a 16-wide decoder.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from sarssl.data.layout import AOILayout
from sarssl.data.products import (
    LCCI_CODES,
    S1GRD_BANDS,
    S2RGB_BANDS,
    encode_modis_treecover,
    encode_s1,
    encode_worldcover,
)


# --------------------------------------------------------------------------------------------
# A tiny AOI in the M3LEO layout
# --------------------------------------------------------------------------------------------
CRS = "EPSG:32633"
X0, Y0 = 400000.0, 5000000.0
#: reason -> product broken for that chip
BAD = {"corrupt": "s1grd-2020", "band_count": "esaworldcover-2020", "all_nodata": "s1grd-2020",
       "missing": "biomass-2020"}


@dataclass
class Fixture:
    layout: AOILayout
    ids: list[str]
    splits: dict[str, str]
    bad: dict[str, str] = field(default_factory=dict)  # reason -> chip id
    truth: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # id -> arrays written


def _write(path: Path, arr: np.ndarray, transform, nodata=None, descriptions=None) -> None:
    arr = arr if arr.ndim == 3 else arr[None]
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=arr.shape[2], height=arr.shape[1], count=arr.shape[0],
                       dtype=arr.dtype, crs=CRS, transform=transform, nodata=nodata) as dst:
        dst.write(arr)
        if descriptions:
            dst.descriptions = tuple(descriptions)


def write_fixture(root, aoi: str = "fx", n_chips: int = 20, size: int = 32, seed: int = 0, bad: bool = True) -> Fixture:
    """Write ``n_chips`` chips of ``size`` px (10 m) under ``root/aoi``; returns the :class:`Fixture`."""
    rng = np.random.default_rng(seed)
    layout = AOILayout(root=Path(root), aoi=aoi, chips_hash="f1x7", angle=0)
    ids = [f"{aoi}_{i:04d}" for i in range(n_chips)]
    pattern = ("train", "train", "train", "test", "val")
    splits = {i: pattern[k % 5] for k, i in enumerate(ids)}
    ext = size * 10.0
    layout.aoi_dir.mkdir(parents=True, exist_ok=True)
    layout.split_csv.write_text("identifier,split\n" + "".join(f"{i},{s}\n" for i, s in splits.items()))
    feats = []
    fx = Fixture(layout, ids, splits)
    for k, ident in enumerate(ids):
        x0 = X0 + k * ext
        poly = [[x0, Y0], [x0 + ext, Y0], [x0 + ext, Y0 - ext], [x0, Y0 - ext], [x0, Y0]]
        feats.append({"type": "Feature", "properties": {"identifier": ident},
                      "geometry": {"type": "Polygon", "coordinates": [poly]}})
        t10 = from_origin(x0, Y0, 10.0, 10.0)
        # S1: 16 bands of dB with a few no-data pixels
        db = rng.uniform(-25, -3, (16, size, size)).astype(np.float32)
        db[:, :2, :3] = np.nan
        s1 = encode_s1(db)
        _write(layout.chip_path("s1grd-2020", ident), s1, t10, 0, S1GRD_BANDS)
        classes = rng.integers(0, 11, (size, size))
        classes[0, 0] = -100
        _write(layout.chip_path("esaworldcover-2020", ident), encode_worldcover(classes), t10, 0)
        built = rng.integers(0, 101, (size, size)).astype(np.uint16)
        built[-1, -1] = 65535
        _write(layout.chip_path("ghsbuilts-2020", ident), built, t10, 65535)
        s2 = rng.integers(1, 256, (36, size, size)).astype(np.uint8)
        s2[0:3] = 0  # January cloudy everywhere
        s2[:, 1, 1] = 0  # never observed
        _write(layout.chip_path("s2rgbm-2020", ident), s2, t10, None, S2RGB_BANDS)
        # coarse grids starting at the chip's corner, covering its footprint
        nm = math.ceil(ext / 250.0)
        modis = encode_modis_treecover(rng.uniform(0, 100, (3, nm, nm)))
        modis[2, 0, 0] = 200
        _write(layout.chip_path("modis44b006veg", ident), modis, from_origin(x0, Y0, 250.0, 250.0), 253,
               ("2018", "2019", "2020"))
        nb = math.ceil(ext / 100.0)
        agb = rng.uniform(0, 300, (2, nb, nb)).astype(np.float32)
        agb[0, -1, -1] = np.nan
        _write(layout.chip_path("biomass-2020", ident), agb, from_origin(x0, Y0, 100.0, 100.0), None, ("agb", "agb_sd"))
        nl = math.ceil(ext / 300.0)
        lc = np.asarray(LCCI_CODES, np.uint8)[rng.integers(0, len(LCCI_CODES), (nl, nl))]
        _write(layout.chip_path("lcci-2020", ident), lc, from_origin(x0, Y0, 300.0, 300.0), 0)
        fx.truth[ident] = {"s1_db": db, "s1": s1, "classes": classes, "built": built, "s2": s2, "modis": modis,
                           "agb": agb, "lcci": lc}
    layout.geojson.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    if bad:
        train = [i for i in ids if splits[i] == "train"]
        for reason, ident in zip(BAD, train[1:5]):
            fx.bad[reason] = ident
        layout.chip_path("s1grd-2020", fx.bad["corrupt"]).write_bytes(b"II*\x00 this is not a GeoTIFF" * 10)
        ident = fx.bad["band_count"]
        _write(layout.chip_path("esaworldcover-2020", ident), np.ones((2, size, size), np.uint8) * 10,
               from_origin(X0 + ids.index(ident) * ext, Y0, 10.0, 10.0), 0)
        ident = fx.bad["all_nodata"]
        _write(layout.chip_path("s1grd-2020", ident), np.zeros((16, size, size), np.uint8),
               from_origin(X0 + ids.index(ident) * ext, Y0, 10.0, 10.0), 0, S1GRD_BANDS)
        layout.chip_path("biomass-2020", fx.bad["missing"]).unlink()
    return fx


@pytest.fixture(scope="session")
def write_m3leo():
    """:func:`write_fixture` (``write_m3leo(root, aoi="fx", n_chips=20, size=32, seed=0, bad=True)``)."""
    return write_fixture


# --------------------------------------------------------------------------------------------
# A tiny ViT and a tiny profile
# --------------------------------------------------------------------------------------------
def make_tiny_vit(seed: int = 0, depth: int = 2, **kw):
    """A timm ViT-Tiny for 12 channels, 32 px inputs and 8 px patches, initialised after ``torch.manual_seed(seed)``
    (in train mode, as timm creates it)."""
    import timm
    import torch

    torch.manual_seed(seed)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, in_chans=12, num_classes=0, img_size=32,
                             patch_size=8, depth=depth, **kw)


@pytest.fixture(scope="session")
def tiny_vit():
    """:func:`make_tiny_vit` (``tiny_vit(seed=0, depth=2, **timm_kwargs)``)."""
    return make_tiny_vit


def make_tiny_profile():
    """The smoke profile with fine-tuning shrunk to 1 epoch, at least 2 steps, batch 8, decoder width 16."""
    from sarssl.profiles import get_profile

    p = get_profile("smoke")
    ft = dataclasses.replace(p.finetune, epochs=1, min_steps=2, batch_size=8, decoder_dim=16)
    return p.with_overrides(finetune=ft)


@pytest.fixture(scope="session")
def tiny_profile():
    """:func:`make_tiny_profile`'s profile (a frozen dataclass, shared by the session)."""
    return make_tiny_profile()
