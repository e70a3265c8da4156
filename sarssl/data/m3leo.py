"""Read the M3LEO layout: splits, chip polygons, per-product GeoTIFFs decoded to physical values.

Two levels:

- xarray level (for chapters and analysis): :func:`open_product` returns a ``DataArray``
  (dims ``band, y, x``) with rioxarray CRS/transform and named bands, decoded to physical units;
  :func:`build_input_channels` turns decoded S1 into the study's 12 named input channels.
- record level (for the dataset and the packed cache): :func:`read_record` reads one chip of
  several products with one rasterio call per file and returns *compact* numpy arrays on the chip
  grid (S1 as uint8 codes, labels as their storage codes, coarse products resampled by nearest
  neighbour with index arithmetic). :mod:`sarssl.data.datasets` decodes records to tensors.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
import xarray as xr

from sarssl.data.layout import SPLITS, AOILayout
from sarssl.data.products import (
    INPUT_CHANNELS,
    PASSES,
    PRODUCT_FAMILIES,
    PRODUCT_SPECS,
    S1GRD_BANDS,
    SEASONS,
    product_family,
    product_spec,
)
from sarssl.errors import UserError

__all__ = [
    "EXPECTED_DTYPES", "ALL_PRODUCTS", "ChipGrid", "available_products", "read_splits",
    "read_chips_geojson", "open_product", "decode_array", "s2rgb_annual_median", "channel_names",
    "channel_specs", "build_input_channels", "label_fraction_ids", "nearest_index", "read_record",
    "check_header", "default_products", "ChipReading", "chip_reading", "write_chip_tif",
]

#: storage dtype per product family (from the registry :data:`sarssl.data.products.PRODUCT_SPECS`)
EXPECTED_DTYPES = {f: s.dtype for f, s in PRODUCT_SPECS.items()}


def default_products(year: int = 2020) -> tuple[str, ...]:
    """The seven products the simulator writes, for ``year``: S1 first, then the labels."""
    return tuple(s.folder_name(year) for s in PRODUCT_SPECS.values())


ALL_PRODUCTS = default_products(2020)


# --------------------------------------------------------------------------------------------
# Splits, chips, products
# --------------------------------------------------------------------------------------------
def available_products(layout: AOILayout) -> list[str]:
    """Product folders present under ``layout.chips_dir`` (those with a known family)."""
    if not layout.chips_dir.is_dir():
        raise FileNotFoundError(f"chip folder {str(layout.chips_dir)!r} does not exist")
    out = []
    for p in sorted(layout.chips_dir.iterdir()):
        if p.is_dir() and p.name.split("-")[0] in PRODUCT_FAMILIES:
            out.append(p.name)
    return out


def read_splits(layout: AOILayout) -> pd.DataFrame:
    """The split CSV as a DataFrame with string columns ``identifier`` and ``split`` (train/val/test).

    Raises ``FileNotFoundError`` when the file is absent and ``ValueError`` when it is garbled
    (missing columns, unknown split names, duplicated identifiers, empty).
    """
    path = layout.split_csv
    if not path.is_file():
        raise FileNotFoundError(f"split file {str(path)!r} does not exist (expected columns identifier,split)")
    try:
        df = pd.read_csv(path, dtype=str)
    except Exception as e:  # pandas raises several parser error types
        raise UserError(f"split file {str(path)!r} is not a readable CSV with columns identifier,split: {e}") from e
    missing = {"identifier", "split"} - set(df.columns)
    if missing:
        raise UserError(f"split file {str(path)!r}: missing column(s) {sorted(missing)}; "
                         f"expected columns identifier,split, found {list(df.columns)}")
    df = df[["identifier", "split"]]
    if df.empty:
        raise UserError(f"split file {str(path)!r} has no rows")
    if df.isna().any().any():
        raise UserError(f"split file {str(path)!r} has empty identifier or split cells")
    df = df.assign(split=df["split"].str.strip().str.lower(), identifier=df["identifier"].str.strip())
    bad = sorted(set(df["split"]) - set(SPLITS))
    if bad:
        raise UserError(f"split file {str(path)!r}: unknown split value(s) {bad[:5]}; expected {list(SPLITS)}")
    dup = df["identifier"][df["identifier"].duplicated()]
    if len(dup):
        raise UserError(f"split file {str(path)!r}: duplicated identifier(s) {list(dup[:5])}")
    return df.reset_index(drop=True)


def read_chips_geojson(layout: AOILayout) -> dict:
    """The chip polygons as a GeoJSON ``FeatureCollection`` dict (each feature has ``properties.identifier``)."""
    path = layout.geojson
    if not path.is_file():
        raise FileNotFoundError(f"chip geojson {str(path)!r} does not exist")
    try:
        gj = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"chip geojson {str(path)!r} is not valid JSON: {e}") from e
    feats = gj.get("features") if isinstance(gj, dict) else None
    if not isinstance(feats, list):
        raise UserError(f"chip geojson {str(path)!r}: expected a FeatureCollection with a 'features' list")
    for f in feats:
        if "identifier" not in (f.get("properties") or {}):
            raise UserError(f"chip geojson {str(path)!r}: a feature has no 'identifier' property")
    return gj


# --------------------------------------------------------------------------------------------
# Decoding to physical values
# --------------------------------------------------------------------------------------------
def _band_names(family: str, count: int, descriptions) -> list[str]:
    names = PRODUCT_SPECS[family].bands
    if names is None:  # MODIS: bands are years
        return [d if d else f"band{i + 1}" for i, d in enumerate(descriptions)]
    if len(names) != count:
        raise UserError(f"{family}: expected {len(names)} bands {list(names)[:4]}..., got {count}")
    return list(names)


def decode_array(family: str, raw: np.ndarray) -> np.ndarray:
    """Storage values ``(band, H, W)`` -> physical values of the same shape.

    s1grd: dB float32 (NaN no-data); esaworldcover / lcci: int64 classes (IGNORE_INDEX no-data);
    modis44b006veg: percent tree cover float32 (water -> 0, fill -> NaN); biomass: Mg/ha float32
    (NaN no-data); ghsbuilts: built-up fraction 0..1 float32 (m^2 / 100, NaN no-data);
    s2rgbm: reflectance-like 0..1 float32 (all-zero months -> NaN). The decoder of each family is
    its :attr:`~sarssl.data.products.ProductSpec.decoder`.
    """
    if family not in PRODUCT_SPECS:
        raise ValueError(f"no decoder for product family {family!r}")
    out = PRODUCT_SPECS[family].decoder(raw)
    return out.reshape(raw.shape) if out.shape != raw.shape else out


def open_product(layout: AOILayout, product: str, identifier: str) -> xr.DataArray:
    """One chip of one product as a decoded ``DataArray`` (dims ``band, y, x``) with CRS and transform.

    Band coordinates are the product's band names (years for MODIS). Units per family: see
    :func:`decode_array`. Raises ``FileNotFoundError`` naming the path when the chip is absent.
    """
    import rioxarray  # noqa: F401  (registers .rio)

    family = product_family(product)
    path = layout.chip_path(product, identifier)
    if not path.is_file():
        raise FileNotFoundError(f"chip {identifier!r} of product {product!r} not found: {str(path)!r}")
    raw = xr.open_dataarray(path, engine="rasterio", mask_and_scale=False).load()
    if "band" not in raw.dims:
        raw = raw.expand_dims("band")
    descriptions = raw.attrs.get("long_name")
    if isinstance(descriptions, str):
        descriptions = (descriptions,)
    if not descriptions or len(descriptions) != raw.sizes["band"]:
        import rasterio

        with rasterio.open(path) as src:
            descriptions = src.descriptions
    names = _band_names(family, raw.sizes["band"], descriptions)
    values = decode_array(family, raw.values)
    da = xr.DataArray(values, dims=("band", "y", "x"), coords={"band": names, "y": raw.y, "x": raw.x},
                      name=product)
    da = da.rio.write_crs(raw.rio.crs).rio.write_transform(raw.rio.transform())
    da.attrs.update(product=product, identifier=identifier, aoi=layout.aoi, source=str(path))
    if PRODUCT_SPECS[family].kind == "classes":
        da.attrs["nodata_class"] = -100
    return da


def s2rgb_annual_median(s2: xr.DataArray) -> xr.DataArray:
    """Decoded ``s2rgbm`` (36 bands ``<month>_<colour>``) -> annual median RGB (band=red,green,blue), NaN-aware."""
    arr = s2.values.reshape(12, 3, *s2.shape[1:])
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(arr, axis=0).astype(np.float32)
    out = xr.DataArray(med, dims=("band", "y", "x"), coords={"band": ["red", "green", "blue"], "y": s2.y, "x": s2.x},
                       name="s2rgb")
    if s2.rio.crs is not None:
        out = out.rio.write_crs(s2.rio.crs).rio.write_transform(s2.rio.transform())
    return out


# --------------------------------------------------------------------------------------------
# The 12 input channels
# --------------------------------------------------------------------------------------------
_QUANTITIES = ("vv-vh", "vv", "vh")


def channel_names(polarisations=("vv-vh", "vv", "vh"), seasons=SEASONS, pass_: str = "asc") -> tuple[str, ...]:
    """Channel names ``<quantity>_<season>`` (suffix ``_des`` for descending), quantity-major."""
    suffix = "" if pass_ == "asc" else f"_{pass_}"
    return tuple(f"{q}_{s}{suffix}" for q in polarisations for s in seasons)


def channel_specs(channels=INPUT_CHANNELS) -> list[tuple[str, int, int]]:
    """Channel names -> ``(quantity, band_a, band_b)`` indices into :data:`S1GRD_BANDS`.

    ``vv``/``vh``: the band is ``band_a`` (``band_b == band_a``); ``vv-vh``: ``band_a - band_b``.
    """
    specs = []
    for name in channels:
        m = re.fullmatch(r"(vv-vh|vv|vh)_([a-z]+)(?:_(asc|des))?", name)
        if not m or m[2] not in SEASONS:
            raise UserError(f"bad channel name {name!r}: expected '<vv-vh|vv|vh>_<{'|'.join(SEASONS)}>[_des]'")
        q, s, d = m[1], m[2], m[3] or "asc"
        vv = S1GRD_BANDS.index(f"{s}_vv{d}")
        vh = S1GRD_BANDS.index(f"{s}_vh{d}")
        specs.append((q, vv, vh) if q == "vv-vh" else (q, vv if q == "vv" else vh, vv if q == "vv" else vh))
    return specs


def build_input_channels(s1_db: xr.DataArray, polarisations=("vv-vh", "vv", "vh"), seasons=SEASONS,
                         pass_: str = "asc") -> xr.DataArray:
    """Decoded S1 (16 bands, dB) -> input channels (default the study's 12, named as ``INPUT_CHANNELS``).

    VV-VH is the dB difference; no-data (NaN) propagates. Keeps the spatial coords and CRS.
    """
    for p in polarisations:
        if p not in _QUANTITIES:
            raise UserError(f"bad polarisation {p!r}: expected one of {_QUANTITIES}")
    if pass_ not in PASSES:
        raise UserError(f"bad pass {pass_!r}: expected one of {PASSES}")
    missing = [b for b in S1GRD_BANDS if b not in list(s1_db["band"].values)]
    if missing:
        raise UserError(f"s1_db lacks S1 band(s) {missing[:4]}: expected the 16 bands of S1GRD_BANDS")
    names = channel_names(polarisations, seasons, pass_)
    data = s1_db.sel(band=list(S1GRD_BANDS)).values
    out = np.stack([data[a] - data[b] if q == "vv-vh" else data[a] for q, a, b in channel_specs(names)])
    da = xr.DataArray(out.astype(np.float32), dims=("band", "y", "x"),
                      coords={"band": list(names), "y": s1_db.y, "x": s1_db.x}, name="s1_channels",
                      attrs={"units": "dB"})
    if s1_db.rio.crs is not None:
        da = da.rio.write_crs(s1_db.rio.crs).rio.write_transform(s1_db.rio.transform())
    return da


# --------------------------------------------------------------------------------------------
# Label fractions
# --------------------------------------------------------------------------------------------
def label_fraction_ids(ids, limit_pct: float, seed: int = 0) -> list:
    """A deterministic ``limit_pct`` % subset of ``ids`` (at least one tile when ``limit_pct > 0``).

    The ids are sorted, shuffled with ``seed`` and the first ``ceil(n * pct / 100)`` kept, so for a
    fixed seed smaller fractions are subsets of larger ones. The result keeps the sorted order;
    ``len(result)`` is the tile count.
    """
    if not 0 < float(limit_pct) <= 100:
        raise UserError(f"limit_pct must be in (0, 100], got {limit_pct}")
    ids = sorted(ids)
    n = len(ids)
    k = min(n, max(1, math.ceil(n * float(limit_pct) / 100 - 1e-9))) if n else 0
    order = np.random.default_rng(seed).permutation(n)[:k]
    return [ids[i] for i in sorted(order)]


# --------------------------------------------------------------------------------------------
# Grids and compact records
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChipGrid:
    """A north-up raster grid: affine terms, shape and CRS string."""

    transform: tuple  # (a, b, c, d, e, f) of rasterio's Affine
    height: int
    width: int
    crs: str

    @classmethod
    def from_src(cls, src) -> "ChipGrid":
        return cls(tuple(src.transform)[:6], src.height, src.width, src.crs.to_string() if src.crs else "")


def nearest_index(src: ChipGrid, dst: ChipGrid, what: str = "raster") -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices into ``src`` for each ``dst`` pixel centre (nearest neighbour).

    Both grids must be north-up in the same CRS and ``src`` must cover ``dst``; otherwise a
    ``ValueError`` naming ``what`` is raised. Returns ``rows (H,)``, ``cols (W,)``.
    """
    sa, sb, sc, sd, se, sf = src.transform
    da, db, dc, dd, de, df = dst.transform
    if sb or sd or db or dd:
        raise UserError(f"{what}: rotated grids are not supported")
    if src.crs != dst.crs:
        raise UserError(f"{what}: CRS {src.crs!r} differs from the chip grid's {dst.crs!r}")
    xs = dc + (np.arange(dst.width) + 0.5) * da
    ys = df + (np.arange(dst.height) + 0.5) * de
    cols = np.floor((xs - sc) / sa + 1e-6).astype(np.int64)
    rows = np.floor((ys - sf) / se + 1e-6).astype(np.int64)
    if cols.min() < 0 or cols.max() >= src.width or rows.min() < 0 or rows.max() >= src.height:
        raise UserError(
            f"{what}: footprint does not cover the chip grid (chip x {dc:.1f}..{dc + dst.width * da:.1f}, "
            f"y {df + dst.height * de:.1f}..{df:.1f}; raster x {sc:.1f}..{sc + src.width * sa:.1f}, "
            f"y {sf + src.height * se:.1f}..{sf:.1f})"
        )
    return rows, cols


def check_header(src, product: str) -> str | None:
    """Validate an open rasterio dataset for ``product``; a reason string when bad, else ``None``."""
    family = product_family(product)
    n = PRODUCT_SPECS[family].band_count
    if n is not None and src.count != n:
        return f"band_count: expected {n} bands, found {src.count}"
    if n is None and src.count < 1:
        return "band_count: expected at least 1 band, found 0"
    if src.dtypes[0] != EXPECTED_DTYPES[family]:
        return f"dtype: expected {EXPECTED_DTYPES[family]}, found {src.dtypes[0]}"
    return None


def modis_band_index(descriptions, year: int | None) -> int:
    """1-based band of MODIS ``descriptions`` for ``year`` (the last band when the year is absent or None)."""
    if year is not None:
        for i, d in enumerate(descriptions):
            if d is not None and str(d).strip() == str(year):
                return i + 1
    return len(descriptions)


def s2_median_codes(codes: np.ndarray) -> np.ndarray:
    """(36, H, W) uint8 monthly RGB -> (4, H, W) uint8: rounded median RGB codes over valid months, then a valid flag."""
    c12 = codes.reshape(12, 3, *codes.shape[1:])
    month_ok = (c12 != 0).any(axis=1, keepdims=True)
    c = np.where(month_ok, c12.astype(np.uint16), np.uint16(1000))  # invalid months sort last
    s = np.sort(np.ascontiguousarray(np.moveaxis(c, 0, -1)), axis=-1)  # (3, H, W, 12), months last: fast sort
    n = month_ok[:, 0].sum(axis=0)  # (H, W)
    lo = np.broadcast_to(np.clip((n - 1) // 2, 0, 11)[None, ..., None], (3, *codes.shape[1:], 1))
    hi = np.broadcast_to(np.clip(n // 2, 0, 11)[None, ..., None], (3, *codes.shape[1:], 1))
    med = (np.take_along_axis(s, lo, -1).astype(np.float32) + np.take_along_axis(s, hi, -1))[..., 0] * 0.5
    out = np.zeros((4, *codes.shape[1:]), np.uint8)
    valid = n > 0
    out[:3] = np.where(valid, np.rint(med), 0).astype(np.uint8)
    out[3] = valid
    return out


#: product family -> (record key, dtype, bands) of the compact arrays :func:`read_record` returns:
#: the storage dtype; S1 keeps its 16 bands, S2 becomes median RGB codes + a valid flag (4), the rest one band
RECORD_LAYOUT = {f: (s.key, np.dtype(s.dtype).type, {"s1grd": len(S1GRD_BANDS), "s2rgbm": 4}.get(f))
                 for f, s in PRODUCT_SPECS.items()}


def reference_product(products) -> str:
    """The product whose grid is the chip grid: the S1 product, else the first 10 m product."""
    for p in products:
        if product_family(p) == "s1grd":
            return p
    for p in products:
        if product_spec(p).pixel_size == 10.0:
            return p
    raise UserError(f"products {list(products)} hold no 10 m product to define the chip grid")


def read_record(layout: AOILayout, products, identifier: str, modis_year: int | None = None) -> dict[str, np.ndarray]:
    """Read one chip of ``products`` into compact arrays on the chip grid (one rasterio read per file).

    Returns a dict keyed by :data:`RECORD_LAYOUT` names: ``s1`` (16, H, W) uint8 codes;
    ``worldcover``/``lcci``/``treecover`` (H, W) uint8 codes; ``biomass`` (H, W) float32 agb Mg/ha;
    ``built`` (H, W) uint16 m^2; ``s2rgb`` (4, H, W) uint8 (median RGB codes, valid flag). Coarse
    products are resampled by nearest neighbour; a footprint that does not cover the chip raises
    ``ValueError`` naming the file.
    """
    import rasterio

    ref = reference_product(products)
    order = [ref] + [p for p in products if p != ref]
    with rasterio.Env(**GDAL_READ_OPTIONS):
        return _read_record(layout, order, identifier, modis_year)


#: GDAL settings for reading many small chip files (no directory listing, no .aux.xml sidecars)
GDAL_READ_OPTIONS = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "GDAL_PAM_ENABLED": "NO"}


def write_chip_tif(path, arr: np.ndarray, transform, crs, nodata, descriptions, compress: str | None = None) -> None:
    """Write one chip of one product: (bands, H, W) ``arr`` as a band-interleaved GeoTIFF with its band
    ``descriptions`` (``compress``: e.g. ``"deflate"``, with a predictor suited to the dtype; None: none)."""
    import rasterio

    b, h, w = arr.shape
    profile = dict(driver="GTiff", dtype=arr.dtype.name, count=b, height=h, width=w, crs=crs or None,
                   transform=transform, nodata=nodata, interleave="band")
    if compress:
        profile.update(compress=compress, zlevel=1, predictor=2 if arr.dtype.kind in "ui" else 3)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.ascontiguousarray(arr))
        dst.descriptions = tuple(descriptions)


def s1_year(products) -> int | None:
    """The year of the first ``s1grd-<year>`` product in ``products`` (``None`` when there is none)."""
    for p in products:
        m = re.search(r"-(\d{4})$", p)
        if product_family(p) == "s1grd" and m:
            return int(m[1])
    return None


class ChipReading(NamedTuple):
    """A reader's product and channel choice, checked: the products, the one giving the chip grid,
    the input channel names and their :func:`channel_specs`, and the year (MODIS band, S1 product)."""

    products: tuple[str, ...]
    ref_product: str
    channels: tuple[str, ...]
    specs: list[tuple[str, int, int]]
    year: int | None


def chip_reading(products, channels=INPUT_CHANNELS, year: int | None = None) -> ChipReading:
    """Check ``products`` (unknown names are a clear error) and ``channels``; ``year`` defaults to the S1 product's."""
    products = tuple(products)
    for p in products:
        product_family(p)
    return ChipReading(products, reference_product(products), tuple(channels), channel_specs(channels),
                       s1_year(products) if year is None else year)


def read_chip_array(src, product: str, grid: "ChipGrid | None", what: str, modis_year=None):
    """One opened chip file of ``product`` -> ``(record key, compact array on grid, grid)``.

    Checks the header (band count, dtype), reads the bands the record keeps, resamples a coarser
    product onto ``grid`` by nearest neighbour (``grid=None``: this file defines the grid) and reduces
    S2 months to median codes. Raises ``ValueError`` starting with ``what`` on a bad file.
    """
    family = product_family(product)
    bad = check_header(src, product)
    if bad:
        raise UserError(f"{what}: {bad}")
    sgrid = ChipGrid.from_src(src)
    if family == "modis44b006veg":
        arr = src.read(modis_band_index(src.descriptions, modis_year))
    elif family == "biomass":
        arr = src.read(1)
    else:
        arr = src.read()
        if arr.shape[0] == 1:
            arr = arr[0]
    if grid is None:
        grid = sgrid
    elif (sgrid.height, sgrid.width) != (grid.height, grid.width) or not np.allclose(sgrid.transform, grid.transform):
        rows, cols = nearest_index(sgrid, grid, what=what)
        arr = arr[..., rows[:, None], cols[None, :]]
    if family == "s2rgbm":
        arr = s2_median_codes(arr)
    key, dtype, _ = RECORD_LAYOUT[family]
    return key, np.ascontiguousarray(arr, dtype=dtype), grid


def _read_record(layout: AOILayout, order, identifier: str, modis_year) -> dict[str, np.ndarray]:
    import rasterio

    from rasterio.errors import RasterioError

    out: dict[str, np.ndarray] = {}
    grid = None
    for product in order:
        path = layout.chip_path(product, identifier)
        try:
            with rasterio.open(path) as src:
                key, out[key], grid = read_chip_array(src, product, grid, repr(str(path)), modis_year)
        except RasterioError as e:  # a truncated or corrupt file: name it
            raise UserError(f"{str(path)!r} cannot be read as a GeoTIFF: {e}") from e
    return out
