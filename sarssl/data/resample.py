"""An M3LEO AOI at another chip size: every chip resized, the footprint kept (448 px at 10 m -> 64 px at 70 m).

The profiles keep the study's 4.48 km chip and change the pixel count (:mod:`sarssl.profiles`), so real
chips are *resized* to the profile's image size, never cropped: a cropped 64 px window of a 10 m chip would
be a 640 m chip, with none of the land-cover segments the study's chips hold. :func:`resample_aoi` writes a
copy of the AOI, in the same layout and under the same file names, whose chips are ``size`` px:

- ``s1grd``: averaged in linear power over the valid pixels (multilooking; no-data never enters a mean),
  back to dB and the uint8 codes;
- class maps (``esaworldcover``, ``lcci``) on the chip grid: the majority class of the valid pixels;
- ``ghsbuilts`` and ``s2rgbm`` on the chip grid: the mean of the valid pixels;
- other products on the chip grid: nearest neighbour; products on their own coarser grid (MODIS,
  biomass, CCI at 100..300 m) are copied unchanged, the reader resamples them onto the new chip grid.

Product folders sarssl does not decode (``gssic``, ``gunw_*``, ``srtmdem``) are not copied:
:attr:`Resampled.left_out` lists them. The split file and the chip GeoJSON are copied as they are.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sarssl.data.derived import publish, saved_record
from sarssl.data.fingerprint import chip_files_digest, split_digest
from sarssl.data.layout import AOILayout
from sarssl.data.m3leo import GDAL_READ_OPTIONS, available_products, read_splits, reference_product
from sarssl.data.products import GHS_NODATA, decode_s1, encode_s1, product_family, product_spec
from sarssl.errors import UserError

__all__ = ["RESAMPLE_NAME", "Resampled", "chip_size_of", "resample_aoi"]

#: written into the resized AOI folder: source, size and key
RESAMPLE_NAME = "resample.json"
RESAMPLER_VERSION = "1"


@dataclass
class Resampled:
    """A resized AOI: where it is, from what, the sizes (px) and pixel sizes (CRS units), what was left out."""

    root: str
    aoi: str
    source: str
    source_size: int
    size: int
    source_pixel: float
    pixel: float
    products: list
    left_out: list
    key: str = ""

    def note(self) -> str:
        return (f"chips resized from {self.source_size} px at {self.source_pixel:g} to {self.size} px at "
                f"{self.pixel:g} (the footprint kept; S1 averaged in linear power, land cover by majority)")


def chip_size_of(layout: AOILayout) -> tuple[int, int]:
    """(H, W) px of the AOI's chips: the reference product's file of the first chip in the split file."""
    import rasterio

    products = available_products(layout)
    if not products:
        raise UserError(f"AOI {str(layout.aoi_dir)!r} has no product folder sarssl reads (folders: "
                        f"{layout.product_folders() or 'none'})")
    ref = reference_product(products)
    ident = read_splits(layout)["identifier"].iloc[0]
    path = layout.chip_path(ref, ident)
    if not path.is_file():
        raise FileNotFoundError(f"chip {ident!r} of {ref!r} not found: {str(path)!r}")
    with rasterio.open(path) as src:
        return src.height, src.width


def _key(layout: AOILayout, products, size: int) -> str:
    ids = read_splits(layout)["identifier"].tolist()
    text = json.dumps([RESAMPLER_VERSION, str(layout.aoi_dir.resolve()), size, split_digest(layout),
                       chip_files_digest(layout, products, ids)])
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _resize(src, size: int, family: str) -> tuple[np.ndarray, object]:
    """One open chip file on the chip grid -> (bands, size, size) array in its storage dtype, and its transform."""
    from rasterio.transform import Affine
    from rasterio.warp import Resampling, reproject

    t = src.transform
    dst_t = Affine(t.a * src.width / size, 0.0, t.c, 0.0, t.e * src.height / size, t.f)
    data = src.read()
    kind = product_spec(family).kind
    if family == "s1grd":
        values, nodata, how = 10.0 ** (decode_s1(data) / 10.0), np.nan, Resampling.average
    elif kind == "classes":
        values, nodata, how = data, 0, Resampling.mode
    elif family in ("ghsbuilts", "s2rgbm"):
        nodata = GHS_NODATA if family == "ghsbuilts" else 0
        values = np.where(data == nodata, np.nan, data.astype(np.float32))
        nodata, how = np.nan, Resampling.average
    else:
        values, nodata, how = data, src.nodata, Resampling.nearest
    out = np.full((data.shape[0], size, size), nodata, dtype=values.dtype)
    reproject(values, out, src_transform=t, dst_transform=dst_t, src_crs=src.crs, dst_crs=src.crs,
              src_nodata=nodata, dst_nodata=nodata, resampling=how)
    if family == "s1grd":
        with np.errstate(divide="ignore", invalid="ignore"):
            return encode_s1(10.0 * np.log10(out)), dst_t
    if family in ("ghsbuilts", "s2rgbm"):
        fill = GHS_NODATA if family == "ghsbuilts" else 0
        low = 0 if family == "ghsbuilts" else 1  # an S2 mean never rounds to the no-data code 0
        return np.where(np.isnan(out), fill, np.clip(np.rint(out), low, None)).astype(data.dtype), dst_t
    return out.astype(data.dtype), dst_t


def resample_aoi(layout: AOILayout, out_root, size: int, progress: bool = True) -> Resampled:
    """Write ``layout``'s AOI with chips of ``size`` x ``size`` px under ``out_root/<aoi>`` (see the module).

    A copy made from the same files at the same size is reused (``resample.json`` holds the key); otherwise
    the AOI is written to a temporary folder and moved into place. Chips must be square.
    """
    import rasterio
    from tqdm.auto import tqdm

    if int(size) < 2:
        raise UserError(f"size must be at least 2 px, got {size!r}")
    products = available_products(layout)
    h, w = chip_size_of(layout)
    if h != w:
        raise UserError(f"AOI {str(layout.aoi_dir)!r}: chips are {h}x{w} px; resizing needs square chips")
    key = _key(layout, products, size)
    out_root = Path(out_root)
    saved = saved_record(out_root / layout.aoi, RESAMPLE_NAME, key)
    if saved is not None:
        return Resampled(**{**saved, "root": str(out_root)})
    tmp = AOILayout(out_root / f".tmp-{uuid.uuid4().hex}", layout.aoi, layout.chips_hash, layout.angle,
                    layout.n_stripes, layout.prefix, layout.split_name, layout.geojson_name)
    ids = read_splits(layout)["identifier"].tolist()
    ref = reference_product(products)
    pixel = src_pixel = None
    try:
        tmp.aoi_dir.mkdir(parents=True)
        shutil.copyfile(layout.split_csv, tmp.split_csv)
        if layout.geojson.is_file():
            shutil.copyfile(layout.geojson, tmp.geojson)
        with rasterio.Env(**GDAL_READ_OPTIONS):
            for product in products:
                family = product_family(product)
                tmp.product_dir(product).mkdir(parents=True)
                for ident in tqdm(ids, desc=f"resizing {layout.aoi} {product}", disable=not progress, leave=False):
                    path = layout.chip_path(product, ident)
                    if not path.is_file():
                        continue  # a missing chip stays missing: the dataset skips and counts it
                    target = tmp.chip_path(product, ident)
                    with rasterio.open(path) as src:
                        if (src.height, src.width) != (h, w):  # a coarse product on its own grid
                            shutil.copyfile(path, target)
                            continue
                        arr, t = _resize(src, size, family)
                        profile = {k: v for k, v in src.profile.items() if k not in ("blockxsize", "blockysize", "tiled")}
                        profile.update(width=size, height=size, transform=t)
                        descriptions = src.descriptions
                    if product == ref and pixel is None:
                        src_pixel, pixel = abs(src.transform.a), abs(t.a)
                    with rasterio.open(target, "w", **profile) as dst:
                        dst.write(arr)
                        dst.descriptions = descriptions
        known = set(products)
        res = Resampled(str(out_root), layout.aoi, str(layout.aoi_dir), h, int(size), float(src_pixel or 0),
                        float(pixel or 0), products, [p for p in layout.product_folders() if p not in known], key)
        publish(tmp.aoi_dir, out_root / layout.aoi, RESAMPLE_NAME, asdict(res))
    finally:
        shutil.rmtree(tmp.root, ignore_errors=True)
    return res
