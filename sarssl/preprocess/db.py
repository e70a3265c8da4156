"""Linear power <-> decibel conversion for numpy arrays and (dask-backed) xarray DataArrays.

Declared no-data (``rio.nodata``, ``_FillValue``, ... of a DataArray, or ``nodata=`` for any input) becomes
NaN before the conversion (:mod:`sarssl.preprocess.nodata`).
"""

from __future__ import annotations

import numpy as np

from sarssl.errors import UserError
from sarssl.preprocess.nodata import check_linear_power, mask_nodata


def _to_db(power, floor: float | None = None):
    """:func:`to_db` without the input checks (for callers that made them)."""
    fill = np.nan if floor is None else floor
    with np.errstate(invalid="ignore", divide="ignore"):
        if hasattr(power, "where"):  # xarray: lazy on dask, coords kept
            safe = power.where(~(power <= 0), fill)
        else:
            power = np.asarray(power, dtype=np.float64 if np.asarray(power).dtype == np.float64 else np.float32)
            safe = np.where(power <= 0, fill, power)
        out = 10.0 * np.log10(safe)
    if hasattr(out, "attrs"):
        out.attrs = {**getattr(power, "attrs", {}), "units": "dB"}
    return out


def to_db(power, floor: float | None = None, *, nodata=None):
    """Linear power (sigma0, beta0, gamma0) -> dB, ``10 log10(x)``.

    Non-positive values have no dB value: they become NaN, or ``10 log10(floor)`` when ``floor`` (linear,
    > 0) is given. NaN and declared no-data (``nodata``, and a DataArray's ``rio.nodata``/``_FillValue``)
    become NaN. Input that is clearly dB already (mostly negative values) is refused. Works element-wise
    (lazily on dask), keeps xarray coords and attrs.
    """
    if floor is not None and not floor > 0:
        raise UserError(f"to_db: floor must be a positive linear value, got {floor!r}")
    power = mask_nodata(power, nodata)
    check_linear_power(power, "power", "to_db", warn_nonpositive=False)
    return _to_db(power, floor)


def from_db(db, *, nodata=None):
    """dB -> linear power, ``10 ** (x / 10)``; NaN and declared no-data (``nodata``, ``rio.nodata``,
    ``_FillValue``) become NaN."""
    db = mask_nodata(db, nodata)
    out = 10.0 ** (db / 10.0)
    if hasattr(out, "attrs"):
        out.attrs = {**getattr(db, "attrs", {}), "units": "linear"}
    return out
