"""Write a simulated Sentinel-1 region in the exact M3LEO layout (the book's offline data).

:func:`simulate_region` builds one scene with :mod:`sarssl.data.scene` (terrain, land cover,
class-dependent VV/VH backscatter with seasonal dynamics, incidence and terrain effects, Gamma
speckle and seasonal medians, and every label product from the same landscape), cuts it into a
grid of chips and writes, under ``<out_dir>/<aoi>/``:

- ``<aoi>_partitions_aschips_<hash>_splits_<n>bands_angle<XX>_60-20-20.csv`` (``identifier,split``,
  the study's geographic stripes repeating train, train, train, test, val; ``<n>`` follows from the
  region's extent so each stripe is at least 3 chips wide, :func:`sarssl.data.layout.stripe_count`);
- ``<aoi>_partitions_aschips_<hash>.geojson`` (chip polygons in UTM 30N, property ``identifier``);
- ``<aoi>_partitions_aschips_<hash>/<product>/<identifier>.tif``, one GeoTIFF per chip and product
  (storage formats of :mod:`sarssl.data.products`; coarse products on per-chip grids of
  ``ceil(chip_extent / native_pixel)`` pixels covering the chip's footprint);
- ``simulation.json``: the parameters, the class shares and the scene's incidence / no-data set-up.

``<hash>`` is a short hash of the parameters; the stripe angle (10..80 deg) derives from the seed.
Same parameters, same files. ``pixel_size`` sets the chip footprint (``chip_size * pixel_size``; the
profiles keep the study's 4.48 km) and the physics that depends on it (:mod:`sarssl.data.scene`);
the region style (incidence range, phenology, soil moisture, class mix) follows from the seed.
The whole region is held in memory (about 200 bytes per pixel at peak).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import uuid
from pathlib import Path

import numpy as np

from sarssl.data import scene as sc
from sarssl.data.layout import AOILayout, SPLITS, stripe_count, stripe_splits
from sarssl.data.m3leo import write_chip_tif
from sarssl.data.products import (
    BIOMASS_BANDS, GHS_NODATA, LCCI_NODATA, MODIS_FILL, PRODUCT_FAMILIES, S1GRD_BANDS, S2RGB_BANDS,
    WORLDCOVER_CODES, WORLDCOVER_NAMES, encode_modis_treecover, encode_s1, encode_worldcover,
)
from sarssl.data.scene import SCENE_CRS, simulate_scene  # noqa: F401  (re-exported)
from sarssl.errors import UserError

__all__ = ["simulate_region", "simulate_scene", "region_products", "chip_grid_shape", "split_angle", "params_hash",
           "simulated_stripe_count"]

SIMULATOR_VERSION = "2"
_AOI_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]*$")

#: WorldCover index -> plausible ESA CCI LCCS code for a 300 m cell dominated by that class
_LCCI_OF_VARIANT = {
    sc.TREE: 60, sc.CONIFER: 70, sc.SHRUB: 120, sc.GRASS: 130, sc.CROP: 10, sc.BUILT: 190, sc.BARE: 200,
    sc.SNOW: 220, sc.WATER: 210, sc.WETLAND: 180, sc.MANGROVE: 170, sc.MOSS: 140, sc.PASTURE: 130,
}


def region_products(year: int) -> tuple[str, ...]:
    """The seven product folder names written for ``year``."""
    return (f"s1grd-{year}", f"esaworldcover-{year}", "modis44b006veg", f"biomass-{year}",
            f"ghsbuilts-{year}", f"s2rgbm-{year}", f"lcci-{year}")


def chip_grid_shape(n_chips: int) -> tuple[int, int]:
    """(rows, cols) of the chip grid: ``ceil(sqrt(n))`` columns, as many rows as needed."""
    cols = math.ceil(math.sqrt(n_chips))
    return math.ceil(n_chips / cols), cols


def split_angle(seed: int) -> int:
    """Stripe angle in degrees (10..80) used for the split file of a region simulated with ``seed``."""
    return 10 + (int(seed) * 37) % 71


def _chip_centres(n_chips: int) -> tuple[np.ndarray, np.ndarray]:
    """Chip centres of the grid in chip units (x east, y north), row-major as the chips are written."""
    _, cols = chip_grid_shape(n_chips)
    r, c = np.divmod(np.arange(n_chips), cols)
    return c + 0.5, -(r + 0.5)


def simulated_stripe_count(n_chips: int, seed: int) -> int:
    """Stripes of a simulated region's split file (:func:`sarssl.data.layout.stripe_count` of its chip grid)."""
    x, y = _chip_centres(n_chips)
    return stripe_count(x, y, split_angle(seed), chip_extent=1.0)


def params_hash(params: dict) -> str:
    """Short deterministic hash (8 hex digits) of the simulation parameters."""
    return hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]


def _area_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights averaging ``n_in`` fine pixels into ``n_out`` equal coarse cells."""
    edges_out = np.arange(n_out + 1) * (n_in / n_out)
    lo = np.maximum(edges_out[:-1, None], np.arange(n_in)[None, :])
    hi = np.minimum(edges_out[1:, None], np.arange(n_in)[None, :] + 1)
    w = np.clip(hi - lo, 0, None)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def _aggregate(field: np.ndarray, rows: int, cols: int, cs: int, n_out: int) -> np.ndarray:
    """Area-average an ``(rows*cs, cols*cs)`` field per chip to ``(rows, n_out, cols, n_out)``."""
    A = _area_weights(cs, n_out)
    f = field.reshape(rows, cs, cols, cs).astype(np.float32, copy=False)
    t = np.einsum("ia,raqb->riqb", A, f, optimize=True)
    return np.einsum("riqb,jb->riqj", t, A, optimize=True)


def _coarse_size(chip_size: int, pixel_size: float, native: float) -> int:
    return max(1, math.ceil(chip_size * pixel_size / native - 1e-9))


def _label_products(land: sc.Landscape, rows: int, cols: int, cs: int, year: int) -> dict:
    """Coarse label products per chip: dict product family -> (array (rows, b, n, cols, n), n)."""
    px = land.pixel_size
    out = {}
    # MODIS MOD44B percent tree cover, 250 m, three years
    n = _coarse_size(cs, px, PRODUCT_FAMILIES["modis44b006veg"][1])
    tc = _aggregate(land.treecover, rows, cols, cs, n)
    water = _aggregate((land.landcover == sc.WATER).astype(np.float32), rows, cols, cs, n) > 0.5
    rng = sc.stream_rng(land.seed, "modis", year)
    bands = []
    for k in range(3):  # year-2, year-1, year; MOD44B saturates a little below full cover
        noise = rng.normal(0, 2.5, tc.shape).astype(np.float32)
        pct = np.clip(0.92 * tc + noise + (k - 2) * 0.5, 0, 100)
        bands.append(encode_modis_treecover(pct, water))
    out["modis44b006veg"] = (np.stack(bands, axis=1), n)
    # ESA CCI biomass, 100 m
    n = _coarse_size(cs, px, PRODUCT_FAMILIES["biomass"][1])
    agb = _aggregate(land.biomass, rows, cols, cs, n)
    rng = sc.stream_rng(land.seed, "agb_noise", year)
    agb = (agb * np.exp(rng.normal(0, 0.15, agb.shape))).astype(np.float32)
    sd = (0.25 * agb + 8.0 + rng.uniform(0, 4, agb.shape)).astype(np.float32)
    out["biomass"] = (np.stack([agb, sd], axis=1), n)
    # ESA CCI land cover, 300 m: majority of the 10 m classes (conifer stands separate), mosaics
    n = _coarse_size(cs, px, PRODUCT_FAMILIES["lcci"][1])
    var = np.where(land.landcover == sc.CROP, sc.CROP, land.variant)
    present = [int(v) for v in np.unique(var)]
    frac = np.stack([_aggregate((var == v).astype(np.float32), rows, cols, cs, n) for v in present])
    best = np.asarray(present)[frac.argmax(axis=0)]
    top = frac.max(axis=0)
    lut = np.zeros(256, np.uint8)
    for v, code in _LCCI_OF_VARIANT.items():
        lut[v] = code
    codes = lut[best]
    veg = np.zeros_like(top)
    for v in (sc.TREE, sc.CONIFER, sc.SHRUB, sc.GRASS, sc.PASTURE):
        if v in present:
            veg += frac[present.index(v)]
    codes[(best == sc.CROP) & (top < 0.5) & (veg >= 0.3)] = 30  # mosaic cropland / natural vegetation
    codes[np.isin(best, (sc.TREE, sc.CONIFER)) & (top < 0.5)] = 100  # mosaic tree and shrub
    out["lcci"] = (codes[:, None], n)
    return out


def simulate_region(out_dir, aoi: str = "sim-a", n_chips: int = 64, chip_size: int = 64, pixel_size: float = 10.0,
                    seed: int = 0, year: int = 2020, progress: bool = True, *, n_acquisitions: int = 5,
                    compress: str | None = None, overwrite: bool = False, timings: dict | None = None) -> AOILayout:
    """Simulate a region of ``n_chips`` chips and write it in the M3LEO layout under ``out_dir/aoi``.

    Args:
        out_dir: M3LEO root folder (created). aoi: AOI folder name (letters, digits, ``.`` and ``-``).
        n_chips: number of chips (exactly; the grid has ``ceil(sqrt(n))`` columns, row-major).
        chip_size: pixels per chip side. pixel_size: metres (10 for Sentinel-1 GRD).
        seed: landscape seed (crops, speckle and clouds also depend on ``year``). year: product year.
        progress: show a tqdm bar. n_acquisitions: acquisitions per season and pass (median).
        compress: GeoTIFF compression (``None``, ``"deflate"``, ``"lzw"``). overwrite: replace an
        existing AOI folder. timings: if a dict, receives ``scene_s`` and ``write_s`` seconds.

    Returns:
        The :class:`AOILayout` of the written AOI.
    """
    import time

    if not isinstance(aoi, str) or not _AOI_RE.match(aoi) or "_" in aoi:
        raise UserError(f"aoi must be letters, digits, '.' or '-' (no '_', it separates identifier parts), got {aoi!r}")
    for name, val, lo in (("n_chips", n_chips, 1), ("chip_size", chip_size, 2), ("n_acquisitions", n_acquisitions, 1)):
        if not isinstance(val, (int, np.integer)) or val < lo:
            raise UserError(f"{name} must be an integer >= {lo}, got {val!r}")
    if not (isinstance(seed, (int, np.integer)) and seed >= 0):
        raise UserError(f"seed must be a non-negative integer, got {seed!r}")
    if not (float(pixel_size) > 0):
        raise UserError(f"pixel_size must be > 0 metres, got {pixel_size!r}")
    if compress not in (None, "deflate", "lzw"):
        raise UserError(f"compress must be None, 'deflate' or 'lzw', got {compress!r}")
    n_chips, cs, seed, year, px = int(n_chips), int(chip_size), int(seed), int(year), float(pixel_size)

    t0 = time.perf_counter()
    params = {"aoi": aoi, "n_chips": n_chips, "chip_size": cs, "pixel_size": px, "seed": seed, "year": year,
              "n_acquisitions": int(n_acquisitions), "enl": sc.effective_enl(px), "version": SIMULATOR_VERSION}
    root = Path(out_dir)
    final = AOILayout(root=root, aoi=aoi, chips_hash=params_hash(params), angle=split_angle(seed),
                      n_stripes=simulated_stripe_count(n_chips, seed))
    target = final.aoi_dir
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{str(target)!r} exists and is not a folder: remove it or choose another AOI name")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise FileExistsError(f"AOI folder {str(target)!r} already exists and is not empty "
                              "(pass overwrite=True, or --overwrite on the command line, to replace it)")
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(root, aoi)
    # everything is written into a hidden folder beside the target and moved into place at the end, so an
    # interrupted or failed run leaves no half-written AOI (and a retry just works)
    tmp_root = root / f"{_PARTIAL_PREFIX.format(aoi=aoi)}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    layout = AOILayout(root=tmp_root, aoi=aoi, chips_hash=final.chips_hash, angle=final.angle,
                       n_stripes=final.n_stripes)
    try:
        t_scene, t_write = _write_aoi(layout, aoi, n_chips, cs, px, seed, year, n_acquisitions, compress,
                                      progress, params, t0)
        _move_into_place(layout.aoi_dir, target)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    if timings is not None:
        timings.update(scene_s=t_scene, write_s=t_write)
    return final


_PARTIAL_PREFIX = ".{aoi}.simulate-partial-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _remove_stale_partials(root: Path, aoi: str) -> None:
    """Delete partial folders of ``aoi`` left by runs that were killed (their process is gone)."""
    prefix = _PARTIAL_PREFIX.format(aoi=aoi)
    for p in root.glob(f"{prefix}*"):
        pid = p.name[len(prefix):].split("-")[0]
        if p.is_dir() and pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


def _move_into_place(src: Path, target: Path) -> None:
    """Move the finished AOI folder ``src`` to ``target``, replacing what is there (the caller checked
    ``overwrite``); the old folder is moved aside first and deleted only once the new one is in place."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.replaced-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.replace(target, old)
    try:
        os.replace(src, target)
    except BaseException:
        if old is not None and not target.exists():
            os.replace(old, target)  # put the previous AOI back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_aoi(layout: AOILayout, aoi, n_chips, cs, px, seed, year, n_acquisitions, compress, progress, params, t0):
    """Simulate the scene and write every file of the AOI under ``layout``; returns (scene_s, write_s)."""
    import time

    from tqdm.auto import tqdm

    products = region_products(year)
    for p in products:
        layout.product_dir(p).mkdir(parents=True, exist_ok=True)

    rows, cols = chip_grid_shape(n_chips)
    H, W = rows * cs, cols * cs
    land = sc.build_landscape(H, W, px, seed, year, n_acquisitions)
    ext = cs * px
    ids, chip_rc = [], []
    for k in range(n_chips):
        r, c = divmod(k, cols)
        ids.append(f"{aoi}_r{r:03d}_c{c:03d}")
        chip_rc.append((r, c))
    chip_rc = np.asarray(chip_rc)
    xmin = land.x0 + chip_rc[:, 1] * ext
    ymax = land.y0 - chip_rc[:, 0] * ext
    splits = stripe_splits(xmin + ext / 2, ymax - ext / 2, layout.angle, layout.n_stripes)

    # static label products on the 10 m grid, and the coarse ones per chip
    wc_codes = encode_worldcover(land.landcover.astype(np.int64))
    # built-up surface per 100 m^2 of ground (m^2 per 10 m cell, as the product stores it, at any pixel size)
    ghs = np.clip(np.rint(land.built * 100.0), 0, 100).astype(np.uint16)
    coarse = _label_products(land, rows, cols, cs, year)
    t_scene = time.perf_counter() - t0
    t_write = 0.0

    from affine import Affine

    def from_origin(x, y, dx, dy):
        return Affine(dx, 0.0, x, 0.0, -dy, y)

    fam = {p: p.split("-")[0] for p in products}
    band_names = {"s1grd": S1GRD_BANDS, "esaworldcover": ("map",), "biomass": BIOMASS_BANDS,
                  "ghsbuilts": ("built_surface",), "s2rgbm": S2RGB_BANDS, "lcci": ("lccs_class",),
                  "modis44b006veg": tuple(str(y) for y in (year - 2, year - 1, year))}
    nodata = {"s1grd": 0, "esaworldcover": 0, "modis44b006veg": MODIS_FILL, "biomass": float("nan"),
              "ghsbuilts": GHS_NODATA, "s2rgbm": 0, "lcci": LCCI_NODATA}
    s1_nodata_chips = 0
    # strips of chip rows, at least ~256 pixel rows each, so speckle and S2 are made in bounded memory
    rows_per_strip = max(1, 256 // cs)
    bar = tqdm(total=n_chips, desc=f"simulate {aoi}", unit="chip", disable=not progress)
    for sr0 in range(0, rows, rows_per_strip):
        sr1 = min(rows, sr0 + rows_per_strip)
        ts = time.perf_counter()
        med, _, _ = sc.seasonal_medians(land, sr0 * cs, sr1 * cs)
        s1 = encode_s1(med.reshape(16, (sr1 - sr0) * cs, W))
        del med
        rgb = sc.s2_monthly(land, sr0 * cs, sr1 * cs)
        s2 = np.clip(np.rint(rgb * 255), 1, 255)
        s2[np.isnan(rgb)] = 0
        s2 = s2.astype(np.uint8).reshape(36, (sr1 - sr0) * cs, W)
        del rgb
        t_scene += time.perf_counter() - ts
        ts = time.perf_counter()
        for k in np.flatnonzero((chip_rc[:, 0] >= sr0) & (chip_rc[:, 0] < sr1)):
            r, c = chip_rc[k]
            lr = r - sr0
            rs, cs_ = slice(lr * cs, (lr + 1) * cs), slice(c * cs, (c + 1) * cs)
            grs = slice(r * cs, (r + 1) * cs)
            fine_t = from_origin(xmin[k], ymax[k], px, px)
            chip_s1 = s1[:, rs, cs_]
            s1_nodata_chips += bool((chip_s1 == 0).any())
            arrays = {
                "s1grd": chip_s1,
                "esaworldcover": wc_codes[None, grs, cs_],
                "ghsbuilts": ghs[None, grs, cs_],
                "s2rgbm": s2[:, rs, cs_],
            }
            for p in products:
                f = fam[p]
                if f in arrays:
                    arr, t = arrays[f], fine_t
                else:
                    data, n = coarse[f]
                    arr = data[r, :, :, c, :]
                    t = from_origin(xmin[k], ymax[k], ext / n, ext / n)
                write_chip_tif(layout.chip_path(p, ids[k]), arr, t, SCENE_CRS, nodata[f], band_names[f], compress)
            bar.update(1)
        t_write += time.perf_counter() - ts
    bar.close()

    ts = time.perf_counter()
    with open(layout.split_csv, "w") as fh:
        fh.write("identifier,split\n")
        fh.writelines(f"{i},{s}\n" for i, s in zip(ids, splits))
    epsg = int(SCENE_CRS.split(":")[1])
    features = [{
        "type": "Feature",
        "properties": {"identifier": ids[k], "row": int(chip_rc[k, 0]), "col": int(chip_rc[k, 1])},
        "geometry": {"type": "Polygon", "coordinates": [[
            [xmin[k], ymax[k] - ext], [xmin[k] + ext, ymax[k] - ext], [xmin[k] + ext, ymax[k]],
            [xmin[k], ymax[k]], [xmin[k], ymax[k] - ext]]]},
    } for k in range(n_chips)]
    with open(layout.geojson, "w") as fh:
        json.dump({"type": "FeatureCollection", "name": layout.stem,
                   "crs": {"type": "name", "properties": {"name": f"urn:ogc:def:crs:EPSG::{epsg}"}},
                   "features": features}, fh)
    used = land.landcover[: rows * cs].reshape(rows, cs, cols, cs)
    mask = np.zeros((rows, cols), bool)
    mask[chip_rc[:, 0], chip_rc[:, 1]] = True
    counts = np.bincount(used.transpose(0, 2, 1, 3)[mask].ravel(), minlength=len(WORLDCOVER_CODES))
    info = {
        "parameters": params, "hash": layout.chips_hash, "split_angle": layout.angle, "crs": SCENE_CRS,
        "origin": {"x0": land.x0, "y0": land.y0}, "grid": {"rows": rows, "cols": cols},
        "products": list(products),
        "class_shares": {WORLDCOVER_NAMES[i]: round(float(counts[i] / counts.sum()), 4)
                         for i in range(len(WORLDCOVER_CODES)) if counts[i] > 0},
        "target_class_shares": {WORLDCOVER_NAMES[k]: round(v, 4) for k, v in land.shares.items()},
        "split_counts": {s: int((splits == s).sum()) for s in SPLITS},
        "region_style": land.style.name, "phenology_seasons": land.style.phenology,
        "soil_moisture_db": land.style.soil_db, "speckle_enl": land.enl, "chip_extent_m": ext,
        "stripes": layout.n_stripes,
        "wind_events": [f"{sc.SEASON_NAMES[s]}_{sc.PASS_NAMES[p]}" for s, p in zip(*np.nonzero(land.wind_event))],
        "incidence_deg_at_centre": land.theta0, "look_azimuth_deg": sc.LOOK_AZIMUTH,
        "nodata_areas": land.nodata, "chips_with_s1_nodata": int(s1_nodata_chips),
    }
    (layout.aoi_dir / "simulation.json").write_text(json.dumps(info, indent=2))
    t_write += time.perf_counter() - ts
    return t_scene, t_write
