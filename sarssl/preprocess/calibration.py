"""Sentinel-1 GRD radiometric calibration and thermal-noise removal from the SAFE annotation LUTs.

``sigma0 = (DN^2 - noise) / A_sigma^2`` (likewise beta0, gamma0 with ``A_beta``, ``A_gamma``), with the
calibration LUT ``A`` and the noise LUT (in DN^2) interpolated bilinearly from their sparse (line, pixel)
vectors onto the image grid. Noise LUTs come in two formats:

* IPF < 2.9 (before 2018): ``noiseVectorList`` of ``noiseVector`` (line, pixel list, ``noiseLut``);
* IPF >= 2.9: ``noiseRangeVectorList`` (line, pixel, ``noiseRangeLut``) times ``noiseAzimuthVectorList``
  blocks (first/last azimuth line and range sample, ``line`` list, ``noiseAzimuthLut``).

Products are read straight from the ``.zip`` (or an unpacked ``.SAFE`` folder) with ``zipfile`` and
``xml.etree``. ``xarray-sentinel`` reads the calibration LUTs too (the tests check that both agree), but it
cannot read the pre-2018 noise format, hence the own parser for both.
"""

from __future__ import annotations

import fnmatch
import zipfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sarssl.errors import UserError
from sarssl.preprocess.nodata import mask_nodata

CALIBRATION_TARGETS = {"sigma0": "sigmaNought", "beta0": "betaNought", "gamma0": "gamma", "dn": "dn"}


@dataclass
class Vectors:
    """Sparse LUT samples: ``lines`` (n,) and per line a ``pixels`` (m_i,) and ``values`` (m_i,) array."""

    lines: np.ndarray
    pixels: list
    values: list


@dataclass
class AzimuthBlock:
    """One ``noiseAzimuthVector``: a LUT along ``lines`` valid on a rectangle of the image."""

    first_line: int
    last_line: int
    first_sample: int
    last_sample: int
    lines: np.ndarray
    values: np.ndarray
    swath: str = ""


@dataclass
class CalibrationLUT:
    """Calibration vectors of one polarisation: ``luts[name]`` for sigmaNought, betaNought, gamma, dn."""

    luts: dict
    absolute_constant: float = 1.0
    polarisation: str = ""
    shape: tuple | None = None  # (numberOfLines, numberOfSamples) from the product annotation


@dataclass
class NoiseLUT:
    """Thermal-noise vectors of one polarisation (DN^2); ``azimuth`` is empty for the pre-2018 format."""

    range: Vectors
    azimuth: list = field(default_factory=list)
    format: str = "noiseVectorList"
    polarisation: str = ""


# ------------------------------------------------------------------------------------------------
# XML parsing
# ------------------------------------------------------------------------------------------------
def _floats(el, tag: str, where: str) -> np.ndarray:
    node = el.find(tag)
    if node is None or node.text is None:
        raise UserError(f"{where}: missing <{tag}>")
    return np.array(node.text.split(), dtype=np.float64)


def _vectors(root, list_tag: str, item_tag: str, lut_tag: str, where: str) -> Vectors:
    lst = root.find(list_tag)
    if lst is None:
        raise UserError(f"{where}: no <{list_tag}>")
    lines, pixels, values = [], [], []
    for vec in lst.findall(item_tag):
        p = _floats(vec, "pixel", where)
        v = _floats(vec, lut_tag, where)
        if p.size != v.size:
            raise UserError(f"{where}: <{lut_tag}> has {v.size} values for {p.size} pixels at line {vec.findtext('line')}")
        lines.append(int(vec.findtext("line")))
        pixels.append(p)
        values.append(v)
    if not lines:
        raise UserError(f"{where}: <{list_tag}> holds no <{item_tag}>")
    order = np.argsort(lines, kind="stable")
    return Vectors(np.asarray(lines)[order], [pixels[i] for i in order], [values[i] for i in order])


def parse_calibration_xml(text: str | bytes, where: str = "calibration XML") -> CalibrationLUT:
    """Parse a ``calibration-*.xml`` string into a :class:`CalibrationLUT`."""
    root = ET.fromstring(text)
    luts = {}
    for name in CALIBRATION_TARGETS.values():
        if root.find(f"calibrationVectorList/calibrationVector/{name}") is not None:
            luts[name] = _vectors(root, "calibrationVectorList", "calibrationVector", name, where)
    if not luts:
        raise UserError(f"{where}: no calibration vectors (expected sigmaNought/betaNought/gamma/dn)")
    const = root.findtext("calibrationInformation/absoluteCalibrationConstant")
    return CalibrationLUT(luts, float(const) if const else 1.0, root.findtext("adsHeader/polarisation") or "")


def parse_noise_xml(text: str | bytes, where: str = "noise XML") -> NoiseLUT:
    """Parse a ``noise-*.xml`` string, old (``noiseVectorList``) or new (range + azimuth) format."""
    root = ET.fromstring(text)
    pol = root.findtext("adsHeader/polarisation") or ""
    if root.find("noiseVectorList") is not None:
        return NoiseLUT(_vectors(root, "noiseVectorList", "noiseVector", "noiseLut", where), [], "noiseVectorList", pol)
    if root.find("noiseRangeVectorList") is None:
        raise UserError(f"{where}: neither <noiseVectorList> nor <noiseRangeVectorList> found")
    rng = _vectors(root, "noiseRangeVectorList", "noiseRangeVector", "noiseRangeLut", where)
    blocks = []
    for blk in root.findall("noiseAzimuthVectorList/noiseAzimuthVector"):
        lines = _floats(blk, "line", where)
        vals = _floats(blk, "noiseAzimuthLut", where)
        if lines.size != vals.size:
            raise UserError(f"{where}: noiseAzimuthLut has {vals.size} values for {lines.size} lines")
        blocks.append(AzimuthBlock(
            int(blk.findtext("firstAzimuthLine")), int(blk.findtext("lastAzimuthLine")),
            int(blk.findtext("firstRangeSample")), int(blk.findtext("lastRangeSample")),
            lines, vals, blk.findtext("swath") or "",
        ))
    return NoiseLUT(rng, blocks, "noiseRangeVectorList+noiseAzimuthVectorList", pol)


# ------------------------------------------------------------------------------------------------
# reading from a SAFE product (zip or folder)
# ------------------------------------------------------------------------------------------------
def _read_member(safe, pattern: str) -> tuple[bytes, str]:
    """Bytes of the single file of a SAFE zip/folder whose path matches ``pattern`` (fnmatch, lower case)."""
    safe = Path(safe)
    if not safe.exists():
        raise FileNotFoundError(f"SAFE product not found: {safe}")
    if safe.is_dir():
        names = [str(p.relative_to(safe)) for p in safe.rglob("*.xml")]
    else:
        with zipfile.ZipFile(safe) as zf:
            names = zf.namelist()
    hits = [n for n in names if fnmatch.fnmatch(n.lower(), pattern)]
    if len(hits) != 1:
        raise FileNotFoundError(f"{safe}: expected one file matching {pattern!r}, found {len(hits)}: {hits[:4]}")
    if safe.is_dir():
        return (safe / hits[0]).read_bytes(), f"{safe}/{hits[0]}"
    with zipfile.ZipFile(safe) as zf:
        return zf.read(hits[0]), f"{safe}!{hits[0]}"


def read_image_shape(safe, polarisation: str) -> tuple[int, int]:
    """(numberOfLines, numberOfSamples) of one polarisation's image, from its product annotation."""
    pol = polarisation.lower()
    text, where = _read_member(safe, f"*annotation/s1?-*-{pol}-*.xml")
    root = ET.fromstring(text)
    lines, samples = root.findtext(".//imageInformation/numberOfLines"), root.findtext(".//imageInformation/numberOfSamples")
    if lines is None or samples is None:
        raise UserError(f"{where}: no numberOfLines/numberOfSamples in imageInformation")
    return int(lines), int(samples)


def read_calibration(safe, polarisation: str) -> CalibrationLUT:
    """Calibration LUTs of ``polarisation`` ("vv", "vh", ...) from a SAFE ``.zip`` or folder."""
    text, where = _read_member(safe, f"*annotation/calibration/calibration-*-{polarisation.lower()}-*.xml")
    cal = parse_calibration_xml(text, where)
    cal.shape = read_image_shape(safe, polarisation)
    return cal


def read_noise(safe, polarisation: str) -> NoiseLUT:
    """Thermal-noise LUTs of ``polarisation`` from a SAFE ``.zip`` or folder (either format)."""
    text, where = _read_member(safe, f"*annotation/calibration/noise-*-{polarisation.lower()}-*.xml")
    return parse_noise_xml(text, where)


# ------------------------------------------------------------------------------------------------
# interpolation onto the pixel grid
# ------------------------------------------------------------------------------------------------
def interpolate_vectors(vec: Vectors, rows, cols) -> np.ndarray:
    """Bilinear interpolation of sparse LUT vectors onto the grid ``rows x cols`` (image line/pixel indices).

    Each vector is interpolated along pixels (its own pixel positions), then the result linearly along
    lines; values beyond the first/last sample are held constant. Returns (len(rows), len(cols)) float64.
    """
    rows = np.asarray(rows, dtype=np.float64).ravel()
    cols = np.asarray(cols, dtype=np.float64).ravel()
    along = np.stack([np.interp(cols, p, v) for p, v in zip(vec.pixels, vec.values)])  # (n_vec, ncols)
    lines = vec.lines.astype(np.float64)
    if lines.size == 1:
        return np.repeat(along, rows.size, axis=0)
    j = np.clip(np.searchsorted(lines, rows, side="right") - 1, 0, lines.size - 2)
    t = np.clip((rows - lines[j]) / (lines[j + 1] - lines[j]), 0.0, 1.0)[:, None]
    return along[j] * (1.0 - t) + along[j + 1] * t


def noise_grid(noise: NoiseLUT, rows, cols) -> np.ndarray:
    """Thermal noise power (DN^2) on ``rows x cols``: range LUT, times the azimuth LUT (new format) on
    each block's rectangle (1 outside every block). Returns (len(rows), len(cols)) float64."""
    rows = np.asarray(rows, dtype=np.float64).ravel()
    cols = np.asarray(cols, dtype=np.float64).ravel()
    out = interpolate_vectors(noise.range, rows, cols)
    if noise.azimuth:
        az = np.ones_like(out)
        for blk in noise.azimuth:  # a few blocks (one per sub-swath and burst group)
            r_in = (rows >= blk.first_line) & (rows <= blk.last_line)
            c_in = (cols >= blk.first_sample) & (cols <= blk.last_sample)
            if not (r_in.any() and c_in.any()):
                continue
            col_vals = np.interp(rows[r_in], blk.lines, blk.values)
            az[np.ix_(r_in, c_in)] = col_vals[:, None]
        out = out * az
    return out


def _grid_coords(dn, rows, cols):
    """Image line/pixel indices of a DN array: explicit, from ``line``/``pixel`` coords, or positions."""
    if rows is None:
        rows = dn.coords["line"].values if hasattr(dn, "coords") and "line" in dn.coords else np.arange(dn.shape[-2])
    if cols is None:
        cols = dn.coords["pixel"].values if hasattr(dn, "coords") and "pixel" in dn.coords else np.arange(dn.shape[-1])
    rows, cols = np.asarray(rows), np.asarray(cols)
    if rows.size != dn.shape[-2] or cols.size != dn.shape[-1]:
        raise UserError(f"calibrate: {rows.size} rows x {cols.size} cols given for a DN array of shape {dn.shape}")
    return rows, cols


def _calibrate_block(dn, rows, cols, cal_vec, noise, negative, floor):
    dn = np.asarray(dn, dtype=np.float64)
    power = dn * dn
    if noise is not None:
        power = power - noise_grid(noise, rows, cols)
    a = interpolate_vectors(cal_vec, rows, cols)
    out = power / (a * a)
    bad = out <= 0
    if negative == "nan":
        out = np.where(bad, np.nan, out)
    else:  # "floor"
        out = np.where(bad, floor, out)
    out = np.where(dn > 0, out, np.nan)  # DN 0 is the no-data border of GRD products
    return out.astype(np.float32)


def calibrate(dn, calibration: CalibrationLUT, target: str = "sigma0", noise: NoiseLUT | None = None,
              negative: str = "nan", floor: float = 1e-5, rows=None, cols=None, *, nodata=None):
    """DN amplitudes -> calibrated power ``(DN^2 - noise) / A^2`` (float32, linear).

    dn: (..., y, x) numpy array or DataArray (dask-backed works chunk by chunk, lazily). ``rows``/``cols``:
    the image line/pixel index of each row/column (default: ``line``/``pixel`` coords if present, else
    0..n-1), so a decimated grid or a window of the scene works. target: "sigma0", "beta0", "gamma0" (or
    "dn"). noise: subtract thermal noise when given. Where noise removal makes power <= 0, ``negative``
    decides, explicitly: "nan" (no-data) or "floor" (set to ``floor``, linear, e.g. 1e-5 = -50 dB).
    DN = 0 (no-data border) -> NaN, and so does a declared no-data DN (``nodata``, or a DataArray's
    ``rio.nodata``/``_FillValue``).
    """
    if target not in CALIBRATION_TARGETS:
        raise UserError(f"calibrate: target must be one of {sorted(CALIBRATION_TARGETS)}, got {target!r}")
    lut_name = CALIBRATION_TARGETS[target]
    if lut_name not in calibration.luts:
        raise UserError(f"calibrate: the calibration file has no {lut_name} LUT (has {sorted(calibration.luts)})")
    if negative not in ("nan", "floor"):
        raise UserError(f"calibrate: negative must be 'nan' or 'floor', got {negative!r}")
    if negative == "floor" and not floor > 0:
        raise UserError(f"calibrate: floor must be > 0, got {floor!r}")
    dn = mask_nodata(dn, nodata)
    rows, cols = _grid_coords(dn, rows, cols)
    cal_vec = calibration.luts[lut_name]
    data = getattr(dn, "data", dn)
    import dask.array as dsa

    if isinstance(data, dsa.Array):
        r = dsa.from_array(rows, chunks=(data.chunks[-2],))
        c = dsa.from_array(cols, chunks=(data.chunks[-1],))
        lead = (None,) * (data.ndim - 2)

        def block(d, rr, cc):
            return _calibrate_block(d, rr.ravel(), cc.ravel(), cal_vec, noise, negative, floor)

        out = dsa.map_blocks(block, data, r[lead + (slice(None), None)], c[lead + (None, slice(None))],
                             dtype=np.float32)
    else:
        out = _calibrate_block(np.asarray(data), rows, cols, cal_vec, noise, negative, floor)
    if hasattr(dn, "dims"):
        res = dn.copy(data=out)
        res.attrs = {**dn.attrs, "units": "linear", "quantity": target,
                     "noise_removed": int(noise is not None), "negative_power": negative}
        return res
    return out
