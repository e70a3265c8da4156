"""Seasonal composites of a Sentinel-1 time stack: the study's 12 input channels and M3LEO's 16-band layout.

Input: a DataArray ``(time, band, y, x)`` with band names containing "vv"/"vh" (any case), values in
linear power or dB (``units``), optionally a per-time ``pass`` coordinate ("asc"/"des"). Compositing is
done in dB, NaN-aware (an image with no data for a pixel does not count). Seasons for ``year``:
winter = Dec of ``year - 1`` + Jan + Feb of ``year``; spring = MAM; summer = JJA; fall = SON.
Dask-backed stacks stay lazy (the time axis is rechunked into one chunk for the median).

No-data: a stack's declared no-data (``rio.nodata``/``_FillValue``, or ``nodata=``) becomes NaN before
anything else (:mod:`sarssl.preprocess.nodata`); a "linear" stack that is clearly dB is refused.
"""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr

from sarssl.data.products import INPUT_CHANNELS, PASSES, POLARISATIONS, S1GRD_BANDS, SEASONS, decode_s1, encode_s1
from sarssl.errors import UserError
from sarssl.preprocess.db import _to_db
from sarssl.preprocess.nodata import NODATA_ATTRS, check_linear_power, declared_nodata, mask_nodata

_SEASON_MONTHS = {"winter": (12, 1, 2), "spring": (3, 4, 5), "summer": (6, 7, 8), "fall": (9, 10, 11)}


def season_mask(times, year: int, season: str) -> np.ndarray:
    """Boolean mask over ``times`` (datetime64 array) of the acquisitions in ``season`` of ``year``."""
    if season not in _SEASON_MONTHS:
        raise UserError(f"season must be one of {SEASONS}, got {season!r}")
    t = xr.DataArray(np.asarray(times, dtype="datetime64[ns]"), dims="time")
    m, y = t.dt.month.values, t.dt.year.values
    if season == "winter":
        return ((m == 12) & (y == year - 1)) | (((m == 1) | (m == 2)) & (y == year))
    return np.isin(m, _SEASON_MONTHS[season]) & (y == year)


def _pol_band(stack: xr.DataArray, pol: str) -> xr.DataArray:
    names = [str(b) for b in stack["band"].values]
    hits = [b for b in names if b.lower() == pol or b.lower().endswith(pol) or b.lower().startswith(pol)]
    if len(hits) != 1:
        raise UserError(f"time stack: expected exactly one band named like {pol!r}, bands are {names}")
    return stack.sel(band=hits[0], drop=True)


def _check_stack(stack) -> None:
    if not isinstance(stack, xr.DataArray) or tuple(stack.dims[:2]) != ("time", "band") or stack.ndim != 4:
        raise UserError(f"expected a DataArray with dims (time, band, y, x), got {getattr(stack, 'dims', type(stack))}")


def _reduce(stack_db: xr.DataArray, mask: np.ndarray, stat: str) -> xr.DataArray:
    sub = stack_db.isel(time=np.flatnonzero(mask))
    if sub.sizes["time"] == 0:
        return xr.full_like(stack_db.isel(time=0, drop=True), np.nan, dtype=np.float32)
    if sub.chunks is not None:
        sub = sub.chunk({"time": -1})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels -> NaN, which is what we want
        red = sub.median("time", skipna=True) if stat == "median" else sub.mean("time", skipna=True)
    return red.astype(np.float32)


def _prepare(stack, units, stat, nodata=None, where="seasonal_composite"):
    _check_stack(stack)
    if stat not in ("median", "mean"):
        raise UserError(f"stat must be 'median' or 'mean', got {stat!r}")
    if units not in ("linear", "db"):
        raise UserError(f"units must be 'linear' or 'db', got {units!r}")
    stack = mask_nodata(stack, nodata)
    if units == "db":
        return stack
    check_linear_power(stack, "stack", where, hint=" (or pass units='db')")
    return _to_db(stack)


def _pass_mask(stack, pass_):
    if pass_ is None:
        return np.ones(stack.sizes["time"], dtype=bool)
    if pass_ not in PASSES:
        raise UserError(f"pass must be one of {PASSES} or None, got {pass_!r}")
    if "pass" not in stack.coords:
        raise UserError(f"pass={pass_!r} asked for but the stack has no per-time 'pass' coordinate")
    return np.asarray([str(p).lower()[:3] == pass_ for p in stack["pass"].values])


def seasonal_composite(stack: xr.DataArray, year: int, stat: str = "median", pass_: str | None = "asc",
                       units: str = "linear", *, nodata=None) -> xr.DataArray:
    """Time stack -> the study's 12 input channels (dB, float32) in ``INPUT_CHANNELS`` order.

    Channels: VV-VH (dB difference of the seasonal composites) x 4 seasons, VV x 4, VH x 4. ``pass_``:
    "asc" (the study), "des", or None (all passes; also when the stack has no ``pass`` coordinate).
    Seasons without data are all-NaN. Declared no-data (``nodata``, ``rio.nodata``, ``_FillValue``) is NaN.
    Returns dims ``(band, y, x)`` with coords/CRS of the input.
    """
    db = _prepare(stack, units, stat, nodata, "seasonal_composite")
    if pass_ is not None and "pass" not in stack.coords:
        raise UserError(f"pass_={pass_!r} asked for but the stack has no per-time 'pass' coordinate; use pass_=None")
    pm = _pass_mask(stack, pass_)
    times = stack["time"].values
    comp = {}
    for pol in POLARISATIONS:
        band = _pol_band(db, pol)
        for s in SEASONS:
            comp[(pol, s)] = _reduce(band, season_mask(times, year, s) & pm, stat)
    layers = [comp[("vv", s)] - comp[("vh", s)] for s in SEASONS]
    layers += [comp[("vv", s)] for s in SEASONS] + [comp[("vh", s)] for s in SEASONS]
    out = xr.concat(layers, dim=xr.DataArray(list(INPUT_CHANNELS), dims="band", name="band"))
    out = out.transpose("band", ...).astype(np.float32)
    out.attrs = {"units": "dB", "year": int(year), "stat": stat, "pass": str(pass_)}
    return _keep_crs(out, stack)


def s1grd_composite(stack: xr.DataArray, year: int, stat: str = "median", units: str = "linear", *,
                    nodata=None) -> xr.DataArray:
    """Time stack with a ``pass`` coordinate -> M3LEO's 16 ``S1GRD_BANDS`` (season x pol x pass), dB."""
    db = _prepare(stack, units, stat, nodata, "s1grd_composite")
    times = stack["time"].values
    layers = []
    for name in S1GRD_BANDS:
        season, rest = name.split("_")
        pol, pass_ = rest[:2], rest[2:]
        layers.append(_reduce(_pol_band(db, pol), season_mask(times, year, season) & _pass_mask(stack, pass_), stat))
    out = xr.concat(layers, dim=xr.DataArray(list(S1GRD_BANDS), dims="band", name="band")).transpose("band", ...)
    out.attrs = {"units": "dB", "year": int(year), "stat": stat}
    return _keep_crs(out.astype(np.float32), stack)


def s1grd_to_input_channels(s1grd_db: xr.DataArray, pass_: str = "asc") -> xr.DataArray:
    """16-band ``S1GRD_BANDS`` composite (dB) -> the 12 ``INPUT_CHANNELS`` of one pass (dB)."""
    names = [str(b) for b in s1grd_db["band"].values]
    if names != list(S1GRD_BANDS):
        raise UserError(f"expected bands {S1GRD_BANDS}, got {names}")
    s1grd_db = mask_nodata(s1grd_db)
    vv = [s1grd_db.sel(band=f"{s}_vv{pass_}", drop=True) for s in SEASONS]
    vh = [s1grd_db.sel(band=f"{s}_vh{pass_}", drop=True) for s in SEASONS]
    layers = [a - b for a, b in zip(vv, vh)] + vv + vh
    out = xr.concat(layers, dim=xr.DataArray(list(INPUT_CHANNELS), dims="band", name="band")).transpose("band", ...)
    out.attrs = {**s1grd_db.attrs, "units": "dB", "pass": pass_}
    return _keep_crs(out.astype(np.float32), s1grd_db)


def encode_m3leo(db: xr.DataArray) -> xr.DataArray:
    """dB composite -> M3LEO uint8 codes (``encode_s1``: dB = v*30/255 - 30, NaN and declared no-data -> 0),
    lazily on dask."""
    db = mask_nodata(db)
    out = xr.apply_ufunc(encode_s1, db, dask="parallelized", output_dtypes=[np.uint8], keep_attrs=True)
    out.attrs = {**db.attrs, "units": "M3LEO uint8 code", "_FillValue": 0}
    return _keep_crs(out, db)


def decode_m3leo(codes: xr.DataArray) -> xr.DataArray:
    """M3LEO uint8 codes -> dB (float32, code 0 and declared no-data -> NaN); inverse of :func:`encode_m3leo`
    up to quantisation."""
    out = xr.apply_ufunc(decode_s1, codes, dask="parallelized", output_dtypes=[np.float32], keep_attrs=True)
    for v in declared_nodata(codes):  # code 0 is no-data already; another declared code is too
        if np.isfinite(v) and v != 0 and v == int(v):
            out = out.where(codes != v)
    out.attrs = {k: v for k, v in codes.attrs.items() if k not in NODATA_ATTRS}
    out.attrs["units"] = "dB"
    return _keep_crs(out, codes)


def _keep_crs(out: xr.DataArray, ref: xr.DataArray) -> xr.DataArray:
    try:
        crs = ref.rio.crs
        if crs is not None:
            out = out.rio.write_crs(crs)
    except Exception:  # noqa: BLE001 - rioxarray missing or no spatial dims: nothing to keep
        pass
    return out
