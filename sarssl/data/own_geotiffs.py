"""Your own Sentinel-1 GeoTIFFs (e.g. Earth Engine exports of seasonal composites) as an M3LEO AOI.

A folder of GeoTIFFs plus a small *band map* (``bandmap.json`` in the folder, or any path) is converted
once into the M3LEO layout (:mod:`sarssl.data.layout`), so :class:`~sarssl.data.datasets.M3LEODataset`,
pretraining and fine-tuning read it exactly like a simulated or a real M3LEO region: the same 12-channel
builder, no-data handling, validation (all-no-data and descending-only chips are skipped and counted) and
normalisation. The band map says which band of which file is VV or VH of which season::

    {
      "units": "dB",                      # or "linear" (power); converted with sarssl.preprocess.db
      "nodata": -9999,                    # optional; each file's own no-data tag and NaN always count
      "chip_size": 448,                   # optional, pixels per chip side (default 448, M3LEO's)
      "year": 2020,                       # optional, the products' year (folder names)
      "aoi": "my-region",                 # optional, default: the folder's name
      "split_angle": 0,                   # optional, degrees of the generated stripes (0: east-west)
      "splits": "splits.csv",             # optional: columns identifier (a chip id or a tile), split
      "bands": {
        "winter_vv": {"file": "{tile}_winter.tif", "band": "VV"},   # 1-based index or band description
        "winter_vh": {"file": "{tile}_winter.tif", "band": 2},
        ...                                                         # all 8 ascending bands needed
        "summer_vv_des": {"file": "{tile}_summer_des.tif", "band": 1}  # descending bands optional
      },
      "labels": {"esaworldcover": {"file": "{tile}_wc.tif", "band": 1},     # WorldCover codes 10..100
                 "modis44b006veg": {"file": "{tile}_tc.tif", "band": 1}}    # tree cover percent 0..100
    }

Band keys are ``<season>_<pol>`` (ascending), ``<season>_<pol>_des`` or the stored names of
:data:`~sarssl.data.products.S1GRD_BANDS` (``winter_vvasc``). ``{tile}`` in a file name is a wildcard:
each value found (from the first band's files) is one tile, and every file must exist for every tile.
Without ``{tile}`` the folder holds one tile. The files of a tile must share shape, CRS and transform;
all tiles one CRS. Each tile is cut into ``chip_size`` chips from its top-left corner; a remainder
narrower than a chip is left out and reported (:attr:`Conversion.cropped_px`). Chips are named
``<tile>_r<row>_c<col>``.

Values become σ0 in dB (no-data NaN), then the M3LEO uint8 codes (:func:`~sarssl.data.products.encode_s1`:
-29.9..0 dB in steps of 0.12 dB, brighter clipped to 0 dB). With no ``splits`` file the split CSV holds
the study's geographic stripes (train, train, train, test, val), each at least three chips wide
(:func:`~sarssl.data.layout.stripe_count`). Bad input raises :class:`BandMapError` (the map) or
:class:`GeoTIFFFolderError` (the files), naming the file, the band or the key and what was expected.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from sarssl.data.derived import publish, saved_record
from sarssl.data.layout import SPLITS, AOILayout, stripe_count, stripe_splits
from sarssl.data.m3leo import write_chip_tif
from sarssl.data.products import (
    MODIS_FILL, PASSES, POLARISATIONS, S1GRD_BANDS, SEASONS, WORLDCOVER_CODES, encode_modis_treecover, encode_s1,
)
from sarssl.errors import UserError
from sarssl.preprocess.db import to_db
from sarssl.preprocess.nodata import mask_nodata

__all__ = ["BAND_MAP_NAME", "BandMapError", "GeoTIFFFolderError", "BandSource", "BandMap", "Conversion",
           "load_band_map", "has_band_map", "find_tiles", "convert_folder", "CONVERTER_VERSION"]

#: the band map's file name inside a GeoTIFF folder (found automatically)
BAND_MAP_NAME = "bandmap.json"
#: written into the converted AOI folder: the conversion's key and report
CONVERSION_NAME = "conversion.json"
CONVERTER_VERSION = "1"
UNITS = ("db", "linear")
#: label products a band map may declare (alias -> product family)
LABEL_FAMILIES = {"esaworldcover": "esaworldcover", "worldcover": "esaworldcover",
                  "modis44b006veg": "modis44b006veg", "treecover": "modis44b006veg"}
#: the 8 ascending bands the 12 input channels are built from
REQUIRED_BANDS = tuple(f"{s}_{p}asc" for s in SEASONS for p in POLARISATIONS)
_KEY_RE = re.compile(rf"^({'|'.join(SEASONS)})_(vv|vh)(?:_?(asc|des))?$")


class BandMapError(UserError):
    """A band map that is not valid: the message names the key and what was expected."""


class GeoTIFFFolderError(UserError):
    """GeoTIFFs that do not fit their band map (missing file, band, shape, CRS, units, no valid pixel)."""


@dataclass(frozen=True)
class BandSource:
    """One band of one file: ``file`` (a name relative to the folder, ``{tile}`` a wildcard) and ``band``
    (1-based index, or the band's description as GDAL reads it, e.g. Earth Engine's band names)."""

    file: str
    band: int | str


@dataclass(frozen=True)
class BandMap:
    """A parsed, checked band map (see the module docstring); ``bands`` keyed by :data:`S1GRD_BANDS` names,
    ``labels`` by product family."""

    bands: dict
    labels: dict
    units: str = "db"
    nodata: float | None = None
    chip_size: int = 448
    year: int = 2020
    aoi: str | None = None
    split_angle: float = 0.0
    splits: str | None = None
    path: Path | None = None

    @property
    def sources(self) -> dict:
        """Every declared band: S1 band names and label families -> :class:`BandSource`."""
        return {**self.bands, **self.labels}


def _band_key(key: str, where: str) -> str:
    k = key.strip().lower()
    if k in S1GRD_BANDS:
        return k
    m = _KEY_RE.match(k)
    if not m:
        raise BandMapError(f"{where}: unknown band {key!r}: expected '<season>_<vv|vh>[_des]' with season one of "
                           f"{list(SEASONS)} (e.g. 'winter_vv', 'summer_vh_des'), or a stored name such as "
                           f"'{S1GRD_BANDS[0]}'")
    return f"{m[1]}_{m[2]}{m[3] or 'asc'}"


def _source(value, key: str, where: str) -> BandSource:
    if not isinstance(value, dict) or set(value) != {"file", "band"}:
        raise BandMapError(f"{where}: {key!r} must be {{\"file\": NAME, \"band\": INDEX_OR_NAME}}, got {value!r}")
    f, b = value["file"], value["band"]
    if not isinstance(f, str) or not f or Path(f).is_absolute() or ".." in Path(f).parts:
        raise BandMapError(f"{where}: {key!r}: file must be a name inside the folder, got {f!r}")
    if isinstance(b, bool) or not (isinstance(b, str) and b) and not (isinstance(b, int) and b >= 1):
        raise BandMapError(f"{where}: {key!r}: band must be a 1-based index or a band description, got {b!r}")
    return BandSource(f, b)


def load_band_map(path) -> BandMap:
    """Read and check a band map JSON file; raises :class:`BandMapError` naming the key at fault."""
    path = Path(path)
    if not path.is_file():
        raise BandMapError(f"band map {str(path)!r} does not exist (expected a JSON file, see sarssl.data.own_geotiffs)")
    where = f"band map {str(path)!r}"
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BandMapError(f"{where} is not valid JSON: {e}") from e
    if not isinstance(raw, dict):
        raise BandMapError(f"{where}: expected a JSON object with 'bands', got {type(raw).__name__}")
    known = {"units", "nodata", "chip_size", "year", "aoi", "split_angle", "splits", "bands", "labels"}
    extra = sorted(set(raw) - known)
    if extra:
        raise BandMapError(f"{where}: unknown key(s) {extra}; expected some of {sorted(known)}")
    bands = {}
    for key, value in (raw.get("bands") or {}).items():
        name = _band_key(key, where)
        if name in bands:
            raise BandMapError(f"{where}: band {name!r} is declared twice (as {key!r})")
        bands[name] = _source(value, key, where)
    missing = [b for b in REQUIRED_BANDS if b not in bands]
    if missing:
        short = [b[:-3] for b in missing]
        raise BandMapError(f"{where}: 'bands' lacks {short}: the 12 input channels need VV and VH of the four "
                           f"seasons {list(SEASONS)}, ascending")
    labels = {}
    for key, value in (raw.get("labels") or {}).items():
        fam = LABEL_FAMILIES.get(str(key).lower())
        if fam is None:
            raise BandMapError(f"{where}: unknown label {key!r}: expected one of {sorted(LABEL_FAMILIES)}")
        labels[fam] = _source(value, key, where)
    units = str(raw.get("units", "db")).lower()
    if units not in UNITS:
        raise BandMapError(f"{where}: units must be 'dB' or 'linear' (power), got {raw.get('units')!r}")
    chip_size = raw.get("chip_size", 448)
    if isinstance(chip_size, bool) or not isinstance(chip_size, int) or chip_size < 2:
        raise BandMapError(f"{where}: chip_size must be an integer number of pixels >= 2, got {chip_size!r}")
    nodata = raw.get("nodata")
    if nodata is not None and (isinstance(nodata, bool) or not isinstance(nodata, (int, float))):
        raise BandMapError(f"{where}: nodata must be a number, got {nodata!r}")
    aoi = raw.get("aoi")
    if aoi is not None and not (isinstance(aoi, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]*", aoi)):
        raise BandMapError(f"{where}: aoi must be a plain name (letters, digits, '.', '-'), got {aoi!r}")
    templates = [s.file for s in [*bands.values(), *labels.values()]]
    with_tile = {"{tile}" in t for t in templates}
    if len(with_tile) > 1:
        raise BandMapError(f"{where}: either every file name has '{{tile}}' or none does; got {sorted(set(templates))}")
    return BandMap(bands, labels, units, None if nodata is None else float(nodata), chip_size,
                   int(raw.get("year", 2020)), aoi, float(raw.get("split_angle", 0.0)), raw.get("splits"), path)


def has_band_map(folder) -> bool:
    """Whether ``folder`` holds a :data:`BAND_MAP_NAME` (a GeoTIFF folder sarssl converts)."""
    return (Path(folder) / BAND_MAP_NAME).is_file()


def find_tiles(folder, bm: BandMap) -> dict[str, dict[str, Path]]:
    """Tile name -> {declared band or label: file}; every declared file must exist for every tile."""
    folder = Path(folder)
    first = bm.bands[REQUIRED_BANDS[0]].file
    if "{tile}" not in first:
        tiles = [""]
    else:
        first_part, *rest = [re.escape(part) for part in first.split("{tile}")]
        rx = re.compile(first_part + "(?P<tile>[^/]+?)" + "(?P=tile)".join(rest) + "$")
        tiles = sorted({m["tile"] for p in folder.glob(first.replace("{tile}", "*"))
                        if (m := rx.match(p.relative_to(folder).as_posix()))})
        if not tiles:
            raise GeoTIFFFolderError(f"no file in {str(folder)!r} matches {first!r} (the band map's "
                                     f"{REQUIRED_BANDS[0][:-3]!r}); check the file names")
    out = {}
    for tile in tiles:
        files = {}
        for key, src in bm.sources.items():
            path = folder / src.file.replace("{tile}", tile)
            if not path.is_file():
                raise GeoTIFFFolderError(f"{str(path)!r} does not exist: the band map's {key!r} for tile {tile!r} "
                                         f"names {src.file!r}")
            files[key] = path
        out[tile] = files
    return out


@dataclass
class Conversion:
    """What :func:`convert_folder` made: the M3LEO root and AOI, and counts of what it found.

    ``all_nodata`` / ``descending_only``: chips whose S1 bands hold no valid pixel / only descending
    ones (written; the dataset skips and counts them); ``cropped_px``: tile -> (rows, cols) of pixels
    left out at the bottom and right edges (narrower than a chip).
    """

    root: str
    aoi: str
    n_chips: int
    chip_size: int
    pixel_size: float
    crs: str
    tiles: list
    products: list
    split_counts: dict
    all_nodata: list = field(default_factory=list)
    descending_only: list = field(default_factory=list)
    cropped_px: dict = field(default_factory=dict)
    generated_splits: bool = True
    key: str = ""

    @property
    def layout(self) -> AOILayout:
        return AOILayout.find(self.root, self.aoi)

    def note(self) -> str:
        """One paragraph for a reader: chips, sizes, splits, what was left out or will be skipped."""
        cropped = {t: rc for t, rc in self.cropped_px.items() if any(rc)}
        parts = [f"{self.n_chips} chips of {self.chip_size} px at {self.pixel_size:g} ({self.crs}) from "
                 f"{len(self.tiles)} tile(s); splits "
                 + ("generated as geographic stripes" if self.generated_splits else "from the band map's file")
                 + f" ({', '.join(f'{s} {n}' for s, n in self.split_counts.items())})"]
        if self.all_nodata:
            parts.append(f"{len(self.all_nodata)} chip(s) hold no valid S1 pixel (skipped and counted by the dataset)")
        if self.descending_only:
            parts.append(f"{len(self.descending_only)} chip(s) are descending-only (no ascending pixel: skipped "
                         "and counted)")
        if cropped:
            parts.append("left out at tile edges (narrower than a chip): "
                         + ", ".join(f"{t or 'the tile'} {r} rows x {c} cols" for t, (r, c) in cropped.items()))
        return "; ".join(parts)


def _content_key(folder: Path, bm: BandMap, tiles) -> str:
    h = hashlib.sha1(CONVERTER_VERSION.encode() + b"\0" + (bm.path.read_bytes() if bm.path else b""))
    files = sorted({p for t in tiles.values() for p in t.values()})
    if bm.splits:
        files.append(folder / bm.splits)
    for p in files:
        st = p.stat()
        h.update(f"{p.relative_to(folder)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _band_index(src, band, path: Path, key: str) -> int:
    if isinstance(band, int):
        if band > src.count:
            raise GeoTIFFFolderError(f"{str(path)!r} has {src.count} band(s), but the band map's {key!r} asks for "
                                     f"band {band}")
        return band
    names = [d or "" for d in src.descriptions]
    if band not in names:
        raise GeoTIFFFolderError(f"{str(path)!r} has no band described {band!r} (the band map's {key!r}); its "
                                 f"bands are {names if any(names) else f'{src.count} without descriptions'}")
    return names.index(band) + 1


def _read_tile(files: dict, bm: BandMap) -> tuple[dict, tuple]:
    """``(declared band -> float64 (H, W) with NaN no-data, (H, W, CRS, transform terms))`` of one tile."""
    import rasterio

    grid = None
    out = {}
    for key, path in files.items():
        src_decl = bm.sources[key]
        with rasterio.open(path) as src:
            this = (src.height, src.width, src.crs.to_string() if src.crs else "", tuple(src.transform)[:6])
            if grid is None:
                grid, ref = this, path
            elif this[:2] != grid[:2]:
                raise GeoTIFFFolderError(f"{str(path)!r} is {this[0]}x{this[1]} px but {str(ref)!r} of the same "
                                         f"tile is {grid[0]}x{grid[1]}: a tile's files must share one grid")
            elif this[2] != grid[2]:
                raise GeoTIFFFolderError(f"{str(path)!r} is in CRS {this[2] or 'none'} but {str(ref)!r} of the same "
                                         f"tile is in {grid[2] or 'none'}: a tile's files must share one grid")
            elif not np.allclose(this[3], grid[3]):
                raise GeoTIFFFolderError(f"{str(path)!r} has transform {this[3]} but {str(ref)!r} of the same tile "
                                         f"has {grid[3]}: a tile's files must share one grid")
            if src.transform.b or src.transform.d:
                raise GeoTIFFFolderError(f"{str(path)!r} has a rotated grid: expected a north-up GeoTIFF")
            i = _band_index(src, src_decl.band, path, key)
            nodata = [v for v in (src.nodatavals[i - 1], bm.nodata) if v is not None]
            values = mask_nodata(src.read(i).astype(np.float64), nodata or None)
        out[key] = values
        if not np.isfinite(values).any():
            raise GeoTIFFFolderError(f"band {src_decl.band!r} of {str(path)!r} (the band map's {key!r}) holds no "
                                     "valid pixel: every value is no-data (check the band and the declared nodata)")
    return out, grid


def _to_db(values: np.ndarray, bm: BandMap, path: Path, key: str) -> np.ndarray:
    finite = values[np.isfinite(values)]
    if bm.units == "linear":
        try:
            return to_db(values)
        except UserError as e:
            raise GeoTIFFFolderError(f"{str(path)!r} ({key!r}): the band map says units 'linear' but {e}") from None
    if np.median(finite) > 0:
        raise GeoTIFFFolderError(f"{str(path)!r} ({key!r}): the band map says units 'dB' but the median value is "
                                 f"{np.median(finite):.3g} > 0 dB: is it linear power? set \"units\": \"linear\"")
    return values


def _encode_label(family: str, values: np.ndarray, path: Path) -> np.ndarray:
    finite = values[np.isfinite(values)]
    if family == "esaworldcover":
        bad = sorted(set(np.unique(finite).astype(int).tolist()) - set(WORLDCOVER_CODES) - {0})
        if bad or (finite != np.round(finite)).any():
            raise GeoTIFFFolderError(f"{str(path)!r} (esaworldcover): value(s) {bad[:5]} are not ESA WorldCover "
                                     f"codes; expected {list(WORLDCOVER_CODES)} (0 or nodata = no-data)")
        return np.nan_to_num(values, nan=0.0).astype(np.uint8)
    if finite.size and (finite.min() < 0 or finite.max() > 100):
        raise GeoTIFFFolderError(f"{str(path)!r} (modis44b006veg): tree cover must be percent 0..100, found "
                                 f"{finite.min():.3g}..{finite.max():.3g}")
    return encode_modis_treecover(values.astype(np.float32))


def _read_splits_file(folder: Path, name: str) -> dict[str, str]:
    import pandas as pd

    path = folder / name
    if not path.is_file():
        raise BandMapError(f"the band map's splits file {str(path)!r} does not exist")
    df = pd.read_csv(path, dtype=str)
    if not {"identifier", "split"} <= set(df.columns):
        raise GeoTIFFFolderError(f"splits file {str(path)!r}: expected columns identifier,split, found {list(df.columns)}")
    bad = sorted(set(df["split"].str.strip().str.lower()) - set(SPLITS))
    if bad:
        raise GeoTIFFFolderError(f"splits file {str(path)!r}: unknown split value(s) {bad[:5]}; expected {list(SPLITS)}")
    return dict(zip(df["identifier"].str.strip(), df["split"].str.strip().str.lower()))


def convert_folder(folder, out_root, band_map=None, progress: bool = True) -> Conversion:
    """Convert a GeoTIFF folder (see the module docstring) into an M3LEO AOI under ``out_root``.

    Args:
        folder: the GeoTIFFs.
        out_root: M3LEO root to write into (the AOI goes to ``out_root/<aoi>``).
        band_map: the band map JSON (default ``folder/bandmap.json``).

    Returns:
        The :class:`Conversion`. A conversion of the same files and band map already under ``out_root``
        is reused (its ``conversion.json`` holds the key); otherwise the AOI is written to a temporary
        folder and moved into place.
    """
    from rasterio.transform import Affine
    from tqdm.auto import tqdm

    folder = Path(folder)
    if not folder.is_dir():
        raise GeoTIFFFolderError(f"GeoTIFF folder {str(folder)!r} does not exist")
    bm = load_band_map(band_map if band_map is not None else folder / BAND_MAP_NAME)
    tiles = find_tiles(folder, bm)
    key = _content_key(folder, bm, tiles)
    aoi = bm.aoi or re.sub(r"[^A-Za-z0-9.-]+", "-", folder.resolve().name).strip("-.") or "own"
    out_root = Path(out_root)
    saved = saved_record(out_root / aoi, CONVERSION_NAME, key)
    if saved is not None:
        return Conversion(**{**saved, "root": str(out_root)})
    cs, year = bm.chip_size, bm.year
    layout = AOILayout(root=out_root / f".tmp-{uuid.uuid4().hex}", aoi=aoi, chips_hash=key[:13],
                       angle=int(round(bm.split_angle)) % 180)
    s1p, products = f"s1grd-{year}", [f"s1grd-{year}"]
    label_products = {"esaworldcover": f"esaworldcover-{year}", "modis44b006veg": "modis44b006veg"}
    products += [label_products[f] for f in bm.labels]
    for p in products:
        layout.product_dir(p).mkdir(parents=True, exist_ok=True)
    ids, centres, polygons, tile_of = [], [], [], {}
    all_nodata, des_only, cropped, crs0, pixel = [], [], {}, None, None
    try:
        for tile, files in tqdm(tiles.items(), desc=f"converting {folder.name}", disable=not progress, leave=False):
            values, (h, w, crs, tr) = _read_tile(files, bm)
            if crs0 is None:
                crs0, pixel = crs, abs(tr[0])
            elif crs != crs0:
                raise GeoTIFFFolderError(f"tile {tile!r} ({str(next(iter(files.values())))!r}) is in CRS {crs}, other "
                                         f"tiles in {crs0}: every tile of a folder must share one CRS")
            if h < cs or w < cs:
                raise GeoTIFFFolderError(f"{str(files[REQUIRED_BANDS[0]])!r} is {h}x{w} px, smaller than one chip of "
                                         f"{cs} px: set a smaller \"chip_size\" in the band map")
            db = np.full((len(S1GRD_BANDS), h, w), np.nan, np.float32)
            for k, band in enumerate(S1GRD_BANDS):
                if band in bm.bands:
                    db[k] = _to_db(values[band], bm, files[band], band)
            codes = encode_s1(db)
            labels = {f: _encode_label(f, values[f], files[f]) for f in bm.labels}
            rows, cols = h // cs, w // cs
            cropped[tile] = (h - rows * cs, w - cols * cs)
            asc = [k for k, b in enumerate(S1GRD_BANDS) if b.endswith(PASSES[0])]
            t = Affine(*tr)
            for r in range(rows):
                for c in range(cols):
                    ident = f"{tile + '_' if tile else ''}r{r:03d}_c{c:03d}"
                    win = (slice(r * cs, (r + 1) * cs), slice(c * cs, (c + 1) * cs))
                    chip = codes[(slice(None), *win)]
                    if not chip.any():
                        all_nodata.append(ident)
                    elif not chip[asc].any():
                        des_only.append(ident)
                    ct = Affine(t.a, 0.0, t.c + c * cs * t.a, 0.0, t.e, t.f + r * cs * t.e)
                    write_chip_tif(layout.chip_path(s1p, ident), chip, ct, crs, 0, S1GRD_BANDS)
                    for fam, arr in labels.items():
                        nd = 0 if fam == "esaworldcover" else MODIS_FILL
                        write_chip_tif(layout.chip_path(label_products[fam], ident), arr[win][None], ct, crs, nd,
                               ("map",) if fam == "esaworldcover" else (str(year),))
                    x0, y0 = ct.c, ct.f
                    x1, y1 = x0 + cs * ct.a, y0 + cs * ct.e
                    polygons.append([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]])
                    centres.append(((x0 + x1) / 2, (y0 + y1) / 2))
                    ids.append(ident)
                    tile_of[ident] = tile
        xy = np.asarray(centres, dtype=np.float64)
        if bm.splits:
            given = _read_splits_file(folder, bm.splits)
            missing = [i for i in ids if i not in given and tile_of[i] not in given]
            if missing:
                raise GeoTIFFFolderError(f"splits file {str(folder / bm.splits)!r} names neither chip nor tile of "
                                         f"{len(missing)} chip(s), e.g. {missing[:3]}")
            splits = np.asarray([given.get(i, given.get(tile_of[i])) for i in ids])
            n_stripes = 60
        else:
            extent = cs * pixel
            n_stripes = stripe_count(xy[:, 0], xy[:, 1], bm.split_angle, chip_extent=extent)
            splits = stripe_splits(xy[:, 0], xy[:, 1], bm.split_angle, n_stripes)
        layout = AOILayout(root=layout.root, aoi=aoi, chips_hash=layout.chips_hash, angle=layout.angle,
                           n_stripes=n_stripes)
        layout.split_csv.write_text("identifier,split\n" + "".join(f"{i},{s}\n" for i, s in zip(ids, splits)))
        layout.geojson.write_text(json.dumps({"type": "FeatureCollection", "name": layout.stem, "features": [
            {"type": "Feature", "properties": {"identifier": i, "tile": tile_of[i]},
             "geometry": {"type": "Polygon", "coordinates": [p]}} for i, p in zip(ids, polygons)]}))
        conv = Conversion(str(out_root), aoi, len(ids), cs, float(pixel), crs0, sorted(tiles), products,
                          {s: int((splits == s).sum()) for s in SPLITS}, all_nodata, des_only, cropped,
                          not bm.splits, key)
        if len(all_nodata) == len(ids):
            raise GeoTIFFFolderError(f"every one of the {len(ids)} chips of {str(folder)!r} holds no valid S1 pixel: "
                                     "check the band map's bands and nodata")
        publish(layout.aoi_dir, out_root / aoi, CONVERSION_NAME, asdict(conv))
    finally:
        shutil.rmtree(layout.root, ignore_errors=True)
    return conv
