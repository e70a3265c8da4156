"""No-data and sanity checks at the boundary where raster values enter :mod:`sarssl.preprocess`.

Inside the package no-data is NaN. A raster can declare another no-data value: an ``xarray.DataArray``
through ``rio.nodata`` / ``rio.encoded_nodata`` (rioxarray), ``attrs["_FillValue"]`` (also
``missing_value``, ``fill_value``, ``nodata``) or ``encoding["_FillValue"]`` (``missing_value``); a numpy
array only through an explicit ``nodata=`` argument. :func:`mask_nodata` turns every declared value into
NaN before any arithmetic, so a GAMMA tile with ``nodata=-99`` (dB) or a DEM with ``-32768`` is never
averaged into its valid neighbours or turned into a plausible value. Inputs without a declared no-data
value are returned as they are (the same object), so results on them do not change.

:func:`check_linear_power` and :func:`check_incidence` catch the two common mix-ups: dB where linear power
is expected, and incidence angles that are not degrees in (0, 90). Both look at in-memory values only; a
dask-backed input is not computed for a check.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np

from sarssl.errors import UserError

__all__ = ["declared_nodata", "mask_nodata", "check_linear_power", "check_incidence", "in_memory_values"]

#: attribute and encoding keys that declare a no-data value (CF conventions, GDAL/rioxarray)
NODATA_ATTRS = ("_FillValue", "missing_value", "fill_value", "nodata")
NODATA_ENCODING = ("_FillValue", "missing_value")


def _is_dataarray(x) -> bool:
    return hasattr(x, "dims") and hasattr(x, "attrs") and hasattr(x, "where")


def _numbers(value) -> list[float]:
    """The numeric values in an attribute (a scalar or a list, as CF ``missing_value`` allows)."""
    out = []
    for v in np.atleast_1d(np.asarray(value, dtype=object)).ravel():
        if v is None or isinstance(v, (bool, np.bool_, str, bytes)):
            continue
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            continue
    return out


def declared_nodata(da) -> list[float]:
    """Every no-data value a DataArray declares (attrs, encoding and rioxarray), NaN included, deduplicated.

    Encoded values (``encoding["_FillValue"]``, ``rio.encoded_nodata``) are skipped when the encoding also
    scales the data (``scale_factor``/``add_offset``): they are raw codes, and xarray masked them on decoding.
    """
    if not _is_dataarray(da):
        return []
    attrs = getattr(da, "attrs", None) or {}
    enc = getattr(da, "encoding", None) or {}
    scaled = "scale_factor" in enc or "add_offset" in enc
    values = []
    for key in NODATA_ATTRS:
        if key in attrs:
            values += _numbers(attrs[key])
    if not scaled:
        for key in NODATA_ENCODING:
            if key in enc:
                values += _numbers(enc[key])
    if "rioxarray" in sys.modules:  # the .rio accessor is registered: it also knows rio.set_nodata(...)
        try:
            rio = da.rio
            values += _numbers(rio.nodata)
            if not scaled:
                values += _numbers(rio.encoded_nodata)
        except Exception:  # noqa: BLE001 - no spatial dims or an odd accessor state: attrs/encoding suffice
            pass
    out = []
    for v in values:
        if not any((np.isnan(v) and np.isnan(u)) or v == u for u in out):
            out.append(v)
    return out


def _cast(value: float, dtype):
    """``value`` in ``dtype`` for an exact comparison, or None when no element of that dtype can equal it."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.floating):
        return dtype.type(value)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        if value != int(value) or not info.min <= value <= info.max:
            return None
        return dtype.type(int(value))
    return None


def mask_nodata(x, nodata=None):
    """``x`` with its declared no-data (and ``nodata``, when given) replaced by NaN.

    DataArray: the values it declares (see :func:`declared_nodata`) plus ``nodata``; the result is float,
    lazy when ``x`` is dask-backed, keeps coords and CRS, and drops the no-data attributes and encoding
    (its no-data is NaN now). Numpy array (or anything array-like): only ``nodata`` is masked. When
    nothing other than NaN is declared, ``x`` itself is returned.
    """
    extra = _numbers(nodata) if nodata is not None else []
    if _is_dataarray(x):
        values = [v for v in declared_nodata(x) + extra if not np.isnan(v)]
        if not values:
            return x
        out = x
        for v in values:
            v = _cast(v, out.dtype)
            if v is not None:
                out = out.where(out != v)
        if not np.issubdtype(out.dtype, np.floating):
            out = out.astype(np.float64)
        out.attrs = {k: v for k, v in x.attrs.items() if k not in NODATA_ATTRS}
        out.encoding = {k: v for k, v in x.encoding.items() if k not in NODATA_ENCODING}
        return out
    values = [v for v in extra if not np.isnan(v)]
    if not values:
        return x
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    hit = np.zeros(arr.shape, dtype=bool)
    for v in values:
        c = _cast(v, np.asarray(x).dtype)
        if c is not None:
            hit |= np.asarray(x) == c
    return np.where(hit, np.nan, arr).astype(arr.dtype, copy=False)


def in_memory_values(x) -> np.ndarray | None:
    """The values of ``x`` as a numpy array, or None when they are lazy (dask) or not numeric."""
    data = getattr(x, "data", x) if _is_dataarray(x) else x
    if hasattr(data, "dask") or type(data).__module__.startswith("dask"):
        return None
    try:
        arr = np.asarray(data)
    except Exception:  # noqa: BLE001 - not array-like: the caller's own checks report it
        return None
    if arr.dtype.kind not in "biuf":
        return None
    return arr


def check_linear_power(x, name: str, where: str, hint: str = "", warn_nonpositive: bool = True) -> None:
    """Refuse values that are clearly dB (most negative, median below -1); warn on some values <= 0.

    Linear power (sigma0, beta0, gamma0) is > 0: typical values are 0.001..1, and noise subtraction leaves
    at most small negative residuals (|x| << 1). dB values of the same scenes are mostly -30..0. ``name``
    is the parameter, ``where`` the function; ``hint`` is appended to the error.
    """
    vals = in_memory_values(x)
    if vals is None or vals.size == 0:
        return
    finite = vals[np.isfinite(vals)] if vals.dtype.kind == "f" else vals.ravel()
    if finite.size == 0:
        return
    neg = int(np.count_nonzero(finite < 0))
    if neg > finite.size / 2:
        median = float(np.median(finite))
        if median < -1.0:
            raise UserError(
                f"{where}: {name} looks like dB, not linear power: {neg / finite.size:.0%} of its values are "
                f"negative (median {median:.3g}), while linear power is > 0; convert it with from_db first{hint}")
    if warn_nonpositive:
        nonpos = int(np.count_nonzero(finite <= 0))
        if nonpos:
            warnings.warn(
                f"{where}: {name} has {nonpos} of {finite.size} values <= 0 but linear power is > 0; if they "
                "mark no-data, declare it (nodata=..., or rio.write_nodata on a DataArray) or set them to NaN",
                UserWarning, stacklevel=3)


def check_incidence(incidence, where: str, name: str = "incidence"):
    """Validate an incidence angle in degrees (scalar or per pixel); returns it with declared no-data as NaN.

    Finite values must lie in (0, 90) degrees; +-inf, a NaN scalar, or an all-NaN grid are errors; NaN
    pixels of a grid are no-data (the result is NaN there). Values all below pi/2 look like radians: a
    warning. A dask-backed grid is not computed here.
    """
    incidence = mask_nodata(incidence)
    if incidence is None or isinstance(incidence, (str, bytes)):
        raise UserError(f"{where}: {name} must be the incidence angle in degrees (a number or an array), got {incidence!r}")
    vals = in_memory_values(incidence)
    if vals is None:
        if _is_dataarray(incidence) or hasattr(incidence, "dask"):
            return incidence
        raise UserError(f"{where}: {name} must be the incidence angle in degrees (a number or an array), got {incidence!r}")
    vals = vals.astype(np.float64, copy=False)
    if vals.size == 0:
        raise UserError(f"{where}: {name} is empty")
    if np.isinf(vals).any():
        raise UserError(f"{where}: {name} holds infinite values; expected degrees in (0, 90)")
    finite = vals[np.isfinite(vals)]
    if finite.size == 0:
        raise UserError(f"{where}: {name} has no finite value (NaN); expected degrees in (0, 90)")
    bad = int(np.count_nonzero((finite <= 0) | (finite >= 90)))
    if bad:
        raise UserError(
            f"{where}: {name} must be the ellipsoid incidence angle in degrees, between 0 and 90 (exclusive); "
            f"{bad} of {finite.size} value(s) are outside (range {finite.min():.4g} .. {finite.max():.4g})")
    if finite.max() <= np.pi / 2:
        warnings.warn(f"{where}: {name} is at most {finite.max():.3g} degrees everywhere: is it in radians? "
                      "incidence angles are in degrees (Sentinel-1 IW: about 30..46)", UserWarning, stacklevel=3)
    return incidence
