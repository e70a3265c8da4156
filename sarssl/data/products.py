"""The M3LEO products: names, band orders, encodings and class tables.

This module is the single source of truth for how every product is stored on disk. The simulator
(`sarssl.data.simulate`) encodes with these functions and the reader (`sarssl.data.m3leo`) decodes
with them, so a round trip is exact up to quantisation.

Storage conventions (one GeoTIFF per chip and product, dims ``band, y, x``):

=====================  =======  ===========  ==========================================================
product                dtype    grid         values
=====================  =======  ===========  ==========================================================
``s1grd-<year>``       uint8    10 m         16 bands ``<season>_<pol><pass>``; dB = v*30/255 - 30; 0 = no-data
``esaworldcover-<y>``  uint8    10 m         WorldCover codes 10..100; 0 = no-data
``modis44b006veg``     uint8    250 m        percent tree cover, one band per year; 200 = water; 253 = fill
``biomass-<year>``     float32  100 m        ``agb`` and ``agb_sd`` in Mg/ha; NaN = no-data
``ghsbuilts-<year>``   uint16   10 m         built-up surface in m^2 per 10 m cell (0..100); 65535 = no-data
``s2rgbm-<year>``      uint8    10 m         monthly median RGB, 36 bands ``<month>_<colour>``; 0,0,0 = no-data
``lcci-<year>``        uint8    300 m        ESA CCI land cover LCCS codes; 0 = no-data
=====================  =======  ===========  ==========================================================

The registry :data:`PRODUCT_SPECS` holds one :class:`ProductSpec` per family (folder name, bands,
pixel size, storage dtype and no-data, decoder, kind, sample key, headline metric); the other
product tables of the package (:data:`PRODUCT_FAMILIES`, ``m3leo.EXPECTED_DTYPES``,
``m3leo.default_products``, ``train.tasks.TARGETS``, the probe products) derive from it. To add a
product: its encoder/decoder here, a ``ProductSpec`` in :data:`PRODUCT_SPECS`, and its compact record
in ``m3leo.read_chip_array`` / ``datasets``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

# --------------------------------------------------------------------------------------------
# Sentinel-1 GRD seasonal medians
# --------------------------------------------------------------------------------------------
SEASONS = ("winter", "spring", "summer", "fall")
POLARISATIONS = ("vv", "vh")
PASSES = ("asc", "des")

#: The 16 bands of an ``s1grd-<year>`` file, in storage order.
S1GRD_BANDS = tuple(f"{s}_{p}{d}" for s in SEASONS for p in POLARISATIONS for d in PASSES)

#: The study's 12 input channels: VV-VH (dB difference) x 4 seasons, VV x 4, VH x 4, ascending.
INPUT_CHANNELS = tuple(f"{q}_{s}" for q in ("vv-vh", "vv", "vh") for s in SEASONS)

S1_DB_MIN = -30.0  # dB value of code 1 is just above this; code 0 is no-data
S1_DB_RANGE = 30.0  # dB = v * 30 / 255 - 30, so codes 1..255 span (-29.88, 0] dB
S1_NODATA = 0


def decode_s1(codes: np.ndarray) -> np.ndarray:
    """uint8 M3LEO codes -> sigma0 in dB (float32), code 0 -> NaN."""
    codes = np.asarray(codes)
    db = codes.astype(np.float32) * np.float32(S1_DB_RANGE / 255.0) + np.float32(S1_DB_MIN)
    db[codes == S1_NODATA] = np.nan
    return db


def encode_s1(db: np.ndarray) -> np.ndarray:
    """sigma0 in dB -> uint8 M3LEO codes; NaN -> 0, values clipped to the codable range.

    Valid pixels map to 1..255 so that no valid value is ever confused with no-data.
    """
    db = np.asarray(db, dtype=np.float32)
    codes = np.rint((db - S1_DB_MIN) * (255.0 / S1_DB_RANGE))
    codes = np.clip(np.nan_to_num(codes, nan=0.0), 1, 255).astype(np.uint8)
    codes[np.isnan(db)] = S1_NODATA
    return codes


# --------------------------------------------------------------------------------------------
# ESA WorldCover (high-resolution land cover)
# --------------------------------------------------------------------------------------------
WORLDCOVER_CODES = (10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100)
WORLDCOVER_NAMES = (
    "tree cover", "shrubland", "grassland", "cropland", "built-up", "bare / sparse vegetation",
    "snow and ice", "permanent water", "herbaceous wetland", "mangroves", "moss and lichen",
)
#: Official WorldCover legend colours, for plots.
WORLDCOVER_COLORS = (
    "#006400", "#ffbb22", "#ffff4c", "#f096ff", "#fa0000", "#b4b4b4",
    "#f0f0f0", "#0064c8", "#0096a0", "#00cf75", "#fae6a0",
)
WORLDCOVER_NODATA = 0
#: Class index used for no-data in label tensors (PyTorch's default ``ignore_index``).
IGNORE_INDEX = -100

_WC_LUT = np.full(256, IGNORE_INDEX, dtype=np.int64)
_WC_LUT[list(WORLDCOVER_CODES)] = np.arange(len(WORLDCOVER_CODES))


def decode_worldcover(codes: np.ndarray) -> np.ndarray:
    """WorldCover codes (10..100) -> class indices 0..10 (int64); no-data and unknown codes -> IGNORE_INDEX."""
    return _WC_LUT[np.asarray(codes, dtype=np.uint8)]


def encode_worldcover(classes: np.ndarray) -> np.ndarray:
    """Class indices 0..10 -> WorldCover codes (uint8); IGNORE_INDEX -> 0."""
    classes = np.asarray(classes)
    lut = np.asarray(WORLDCOVER_CODES, dtype=np.uint8)
    codes = lut[np.clip(classes, 0, len(lut) - 1)]
    codes[classes == IGNORE_INDEX] = WORLDCOVER_NODATA
    return codes


# --------------------------------------------------------------------------------------------
# MODIS MOD44B v006 vegetation continuous fields (percent tree cover)
# --------------------------------------------------------------------------------------------
MODIS_WATER = 200
MODIS_FILL = 253


def decode_modis_treecover(codes: np.ndarray) -> np.ndarray:
    """MOD44B percent tree cover (uint8) -> float32 percent; water (200) -> 0; fill (253) and >100 -> NaN."""
    codes = np.asarray(codes)
    pct = codes.astype(np.float32)
    pct[codes == MODIS_WATER] = 0.0
    pct[(codes > 100) & (codes != MODIS_WATER)] = np.nan
    return pct


def encode_modis_treecover(pct: np.ndarray, water: np.ndarray | None = None) -> np.ndarray:
    """Percent tree cover -> MOD44B uint8 codes; NaN -> 253, ``water`` mask -> 200."""
    pct = np.asarray(pct, dtype=np.float32)
    codes = np.clip(np.rint(np.nan_to_num(pct, nan=0.0)), 0, 100).astype(np.uint8)
    codes[np.isnan(pct)] = MODIS_FILL
    if water is not None:
        codes[np.asarray(water, dtype=bool)] = MODIS_WATER
    return codes


# --------------------------------------------------------------------------------------------
# ESA CCI above-ground biomass, GHS built-up surface, Sentinel-2 monthly RGB
# --------------------------------------------------------------------------------------------
BIOMASS_BANDS = ("agb", "agb_sd")  # Mg/ha, NaN = no-data

GHS_NODATA = 65535  # uint16; values are m^2 of built-up surface per 10 m x 10 m cell (0..100)

MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
S2RGB_BANDS = tuple(f"{m}_{c}" for m in MONTHS for c in ("red", "green", "blue"))


def decode_s2rgb(codes: np.ndarray) -> np.ndarray:
    """(36, H, W) uint8 monthly RGB -> (12, 3, H, W) float32 reflectance-like values in [0, 1].

    A month whose three colours are all 0 is no-data (cloud or missing) and becomes NaN.
    """
    codes = np.asarray(codes)
    if codes.shape[0] != len(S2RGB_BANDS):
        raise ValueError(f"s2rgbm: expected {len(S2RGB_BANDS)} bands, got {codes.shape[0]}")
    rgb = codes.reshape(len(MONTHS), 3, *codes.shape[1:]).astype(np.float32) / 255.0
    missing = (codes.reshape(len(MONTHS), 3, *codes.shape[1:]) == 0).all(axis=1, keepdims=True)
    return np.where(missing, np.nan, rgb).astype(np.float32)


# --------------------------------------------------------------------------------------------
# ESA CCI land cover (medium resolution, 300 m, LCCS legend)
# --------------------------------------------------------------------------------------------
LCCI_CODES = (
    10, 11, 12, 20, 30, 40, 50, 60, 61, 62, 70, 71, 72, 80, 81, 82, 90, 100, 110, 120, 121, 122,
    130, 140, 150, 151, 152, 153, 160, 170, 180, 190, 200, 201, 202, 210, 220,
)
LCCI_NAMES = {
    10: "cropland, rainfed", 11: "cropland, herbaceous", 12: "cropland, tree or shrub",
    20: "cropland, irrigated", 30: "mosaic cropland >50%", 40: "mosaic natural vegetation >50%",
    50: "tree, broadleaved evergreen", 60: "tree, broadleaved deciduous", 61: "tree, broadleaved deciduous closed",
    62: "tree, broadleaved deciduous open", 70: "tree, needleleaved evergreen", 71: "tree, needleleaved evergreen closed",
    72: "tree, needleleaved evergreen open", 80: "tree, needleleaved deciduous", 81: "tree, needleleaved deciduous closed",
    82: "tree, needleleaved deciduous open", 90: "tree, mixed leaf type", 100: "mosaic tree and shrub >50%",
    110: "mosaic herbaceous >50%", 120: "shrubland", 121: "shrubland evergreen", 122: "shrubland deciduous",
    130: "grassland", 140: "lichens and mosses", 150: "sparse vegetation", 151: "sparse tree", 152: "sparse shrub",
    153: "sparse herbaceous", 160: "tree cover, flooded, fresh water", 170: "tree cover, flooded, saline water",
    180: "shrub or herbaceous, flooded", 190: "urban areas", 200: "bare areas", 201: "consolidated bare areas",
    202: "unconsolidated bare areas", 210: "water bodies", 220: "permanent snow and ice",
}
LCCI_NODATA = 0

_LCCI_LUT = np.full(256, IGNORE_INDEX, dtype=np.int64)
_LCCI_LUT[list(LCCI_CODES)] = np.arange(len(LCCI_CODES))


def decode_lcci(codes: np.ndarray) -> np.ndarray:
    """ESA CCI LCCS codes -> class indices 0..36 (int64); no-data and unknown codes -> IGNORE_INDEX."""
    return _LCCI_LUT[np.asarray(codes, dtype=np.uint8)]


# --------------------------------------------------------------------------------------------
# ESA CCI above-ground biomass and GHS built-up surface: decoders
# --------------------------------------------------------------------------------------------
def decode_biomass(values: np.ndarray) -> np.ndarray:
    """Biomass storage values (float32 Mg/ha) -> float32 Mg/ha; non-finite values -> NaN."""
    out = values.astype(np.float32)
    out[~np.isfinite(out)] = np.nan
    return out


def decode_ghs_built(codes: np.ndarray) -> np.ndarray:
    """GHS built-up m^2 per 10 m cell (uint16) -> built-up fraction 0..1 (float32); 65535 -> NaN."""
    out = codes.astype(np.float32) / np.float32(100.0)
    out[codes == GHS_NODATA] = np.nan
    return np.clip(out, 0.0, 1.0, where=np.isfinite(out), out=out)


# --------------------------------------------------------------------------------------------
# The product registry: one ProductSpec per product family
# --------------------------------------------------------------------------------------------
#: What a product holds: the network input, class maps, continuous maps or colour images.
PRODUCT_KINDS = ("input", "classes", "continuous", "rgb")


@dataclass(frozen=True)
class ProductSpec:
    """Everything the package knows about one product family; the other product tables derive from it.

    ``family`` is the folder-name prefix and ``folder`` the folder name (``{year}`` filled in for
    yearly products). ``bands``: band names in storage order (None: the bands are years, as for
    MODIS). ``pixel_size``: native pixel size in metres. ``dtype`` and ``nodata``: the GeoTIFF
    storage type and its no-data value (NaN for float products). ``decoder``: storage codes ->
    physical values (:func:`sarssl.data.m3leo.decode_array`). ``kind``: one of
    :data:`PRODUCT_KINDS`. ``key``: the product's key in dataset samples and records. ``title`` and
    ``unit``: for tables. ``class_names``: of a class product, in class-index order. ``metrics``:
    what a patch probe reports for it, the headline metric first.
    """

    family: str
    folder: str
    bands: tuple[str, ...] | None
    pixel_size: float
    dtype: str
    nodata: float
    decoder: Callable[[np.ndarray], np.ndarray]
    kind: str
    key: str
    title: str
    unit: str = ""
    class_names: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()

    def __post_init__(self):
        if self.kind not in PRODUCT_KINDS:
            raise ValueError(f"product {self.family!r}: kind must be one of {PRODUCT_KINDS}, got {self.kind!r}")

    @property
    def pattern(self) -> str:
        """Regular expression of the product's folder names (``s1grd-\\d{4}``, ``modis44b006veg``)."""
        return re.escape(self.family) + (r"-\d{4}" if "{year}" in self.folder else "")

    def folder_name(self, year: int = 2020) -> str:
        """The product folder for ``year`` (``"s1grd-2020"``; MODIS has one folder for every year)."""
        return self.folder.format(year=year)

    def matches(self, product: str) -> bool:
        """Whether ``product`` is a folder name of this family."""
        return re.fullmatch(self.pattern, product) is not None

    @property
    def band_count(self) -> int | None:
        """Number of stored bands (None when the bands are years)."""
        return None if self.bands is None else len(self.bands)

    @property
    def n_classes(self) -> int | None:
        return len(self.class_names) if self.kind == "classes" else None

    @property
    def valid_key(self) -> str | None:
        """Sample key of the product's bool mask; None for class maps (the ignore index marks no-data)."""
        return None if self.kind == "classes" else f"{self.key}_valid"

    @property
    def task(self) -> str:
        """How a probe predicts it: ``"classification"`` for class maps, else ``"regression"``."""
        return "classification" if self.kind == "classes" else "regression"

    @property
    def data_range(self) -> float | None:
        """Value range for PSNR (colour images in 0..1), else None."""
        return 1.0 if self.kind == "rgb" else None

    @property
    def headline(self) -> str | None:
        """The headline probe metric (the first of ``metrics``)."""
        return self.metrics[0] if self.metrics else None


_REGRESSION = ("r2", "rmse")

#: product family -> spec, in the order the simulator writes the products (S1 first, then the labels)
PRODUCT_SPECS: dict[str, ProductSpec] = {s.family: s for s in (
    ProductSpec("s1grd", "s1grd-{year}", S1GRD_BANDS, 10.0, "uint8", S1_NODATA, decode_s1, "input", "s1",
                "Sentinel-1 GRD seasonal medians", "dB"),
    ProductSpec("esaworldcover", "esaworldcover-{year}", ("map",), 10.0, "uint8", WORLDCOVER_NODATA,
                decode_worldcover, "classes", "worldcover", "high-res land cover", class_names=WORLDCOVER_NAMES,
                metrics=("miou",)),
    ProductSpec("modis44b006veg", "modis44b006veg", None, 250.0, "uint8", MODIS_FILL, decode_modis_treecover,
                "continuous", "treecover", "tree cover (%)", "%", metrics=_REGRESSION),
    ProductSpec("biomass", "biomass-{year}", BIOMASS_BANDS, 100.0, "float32", float("nan"), decode_biomass,
                "continuous", "biomass", "biomass (Mg/ha)", "Mg/ha", metrics=_REGRESSION),
    ProductSpec("ghsbuilts", "ghsbuilts-{year}", ("built_surface",), 10.0, "uint16", GHS_NODATA, decode_ghs_built,
                "continuous", "built", "built surface (fraction)", "fraction", metrics=_REGRESSION),
    ProductSpec("s2rgbm", "s2rgbm-{year}", S2RGB_BANDS, 10.0, "uint8", 0, decode_s2rgb, "rgb", "s2rgb",
                "Sentinel-2 RGB", metrics=("r2", "psnr")),
    ProductSpec("lcci", "lcci-{year}", ("lccs_class",), 300.0, "uint8", LCCI_NODATA, decode_lcci, "classes", "lcci",
                "medium-res land cover", class_names=tuple(LCCI_NAMES[c] for c in LCCI_CODES), metrics=("miou",)),
)}

#: The six label products in the study's order (its attention figure and probe tables), by sample key.
LABEL_SPECS: dict[str, ProductSpec] = {PRODUCT_SPECS[f].key: PRODUCT_SPECS[f] for f in (
    "s2rgbm", "esaworldcover", "lcci", "modis44b006veg", "biomass", "ghsbuilts")}

#: product family -> (band names or None when bands are years, native pixel size in metres)
PRODUCT_FAMILIES = {f: (s.bands, s.pixel_size) for f, s in PRODUCT_SPECS.items()}


def product_family(product: str) -> str:
    """``"s1grd-2020"`` -> ``"s1grd"``; raises ``ValueError`` naming the known families."""
    family = product.split("-")[0]
    if family not in PRODUCT_FAMILIES:
        raise ValueError(
            f"unknown product {product!r}: expected one of "
            + ", ".join(f"{f}-<year>" if f != "modis44b006veg" else f for f in PRODUCT_FAMILIES)
        )
    return family


def product_spec(product: str) -> ProductSpec:
    """The :class:`ProductSpec` of a product folder name or family (``"s1grd-2020"`` or ``"s1grd"``)."""
    return PRODUCT_SPECS[product_family(product)]
