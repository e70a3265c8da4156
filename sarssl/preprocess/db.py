"""Linear power <-> decibel conversion for numpy arrays and (dask-backed) xarray DataArrays."""

from __future__ import annotations

import numpy as np


def to_db(power, floor: float | None = None):
    """Linear power (sigma0, beta0, gamma0) -> dB, ``10 log10(x)``.

    Non-positive values have no dB value: they become NaN, or ``10 log10(floor)`` when ``floor`` (linear,
    > 0) is given. NaN stays NaN. Works element-wise (lazily on dask), keeps xarray coords and attrs.
    """
    if floor is not None and not floor > 0:
        raise ValueError(f"to_db: floor must be a positive linear value, got {floor!r}")
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


def from_db(db):
    """dB -> linear power, ``10 ** (x / 10)``; NaN stays NaN."""
    out = 10.0 ** (db / 10.0)
    if hasattr(out, "attrs"):
        out.attrs = {**getattr(db, "attrs", {}), "units": "linear"}
    return out
