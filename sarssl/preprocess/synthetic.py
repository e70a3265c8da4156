"""Small synthetic SAR inputs for teaching and tests: a land-cover map, a one-year Sentinel-1 time stack,
a DEM with steep slopes and the sigma0 it produces.

Everything is SIMULATED (a simple seasonal backscatter model plus multiplicative Gamma speckle), seeded,
and returned as georeferenced ``xarray.DataArray``s (rioxarray CRS, ``y`` north to south) so that the
real functions of :mod:`sarssl.preprocess` run on it unchanged.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from sarssl.errors import UserError
from sarssl.preprocess.terrain import terrain_flatten

#: Per WorldCover code: name, mean VV and VH (dB), seasonal amplitude of VV and VH (dB), peak day of year.
#: Values are typical C-band levels at ~35 deg incidence; crops peak in summer (VH from canopy volume).
SYNTHETIC_CLASSES: dict[int, tuple] = {
    10: ("tree cover", -7.5, -13.5, 0.5, 0.7, 200),
    30: ("grassland", -10.5, -17.5, 1.0, 1.5, 150),
    40: ("cropland", -11.0, -19.0, 2.0, 4.5, 200),
    50: ("built-up", -3.0, -10.5, 0.0, 0.0, 0),
    80: ("permanent water", -20.0, -26.0, 0.0, 0.0, 0),
}
_CLASS_WEIGHTS = {10: 0.3, 30: 0.2, 40: 0.35, 50: 0.15}


def _grid(size: int, pixel_size: float, origin: tuple[float, float]):
    x0, y0 = origin
    x = x0 + (np.arange(size) + 0.5) * pixel_size
    y = y0 - (np.arange(size) + 0.5) * pixel_size
    return y, x


def _georef(da: xr.DataArray, crs: str) -> xr.DataArray:
    import rioxarray  # noqa: F401 - registers .rio

    return da.rio.write_crs(crs)


def synthetic_landcover(size: int = 64, pixel_size: float = 10.0, n_parcels: int = 24, seed: int = 0,
                        crs: str = "EPSG:32633", origin: tuple[float, float] = (500000.0, 5300000.0)) -> xr.DataArray:
    """A (y, x) map of WorldCover codes: Voronoi parcels of tree cover, grassland, cropland and built-up,
    crossed by a river (permanent water). uint8, georeferenced (``crs``, ``pixel_size`` metres)."""
    if size < 8:
        raise UserError(f"synthetic_landcover: size must be >= 8 pixels, got {size}")
    if n_parcels < 1:
        raise UserError(f"synthetic_landcover: n_parcels must be >= 1, got {n_parcels}")
    rng = np.random.default_rng(seed)
    seeds = rng.uniform(0, size, (n_parcels, 2))
    r, c = np.mgrid[0:size, 0:size].astype(np.float64)
    d2 = (r[None] - seeds[:, 0, None, None]) ** 2 + (c[None] - seeds[:, 1, None, None]) ** 2
    parcel = d2.argmin(0)
    codes = np.array(list(_CLASS_WEIGHTS))
    p = np.array(list(_CLASS_WEIGHTS.values()))
    cls = rng.choice(codes, size=n_parcels, p=p / p.sum())[parcel]
    # a meandering river, about 4 % of the width
    centre = size * (0.5 + 0.15 * np.sin(2 * np.pi * r[:, 0] / size * rng.uniform(0.7, 1.3) + rng.uniform(0, 6.3)))
    half = max(1.0, 0.025 * size)
    cls = np.where(np.abs(c - centre[:, None]) <= half, 80, cls).astype(np.uint8)
    y, x = _grid(size, pixel_size, origin)
    da = xr.DataArray(cls, dims=("y", "x"), coords={"y": y, "x": x}, name="landcover",
                      attrs={"long_name": "WorldCover code (synthetic)", "simulated": 1})
    return _georef(da, crs)


def acquisition_times(year: int, revisit_days: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Acquisition dates covering the study's seasons of ``year`` (1 Dec of ``year - 1`` .. 30 Nov), every
    ``revisit_days``, alternating ascending and descending passes. Returns (datetime64[ns] times, passes)."""
    if revisit_days < 1:
        raise UserError(f"acquisition_times: revisit_days must be >= 1, got {revisit_days}")
    times = pd.date_range(f"{year - 1}-12-01", f"{year}-11-30", freq=f"{revisit_days}D").values
    passes = np.array(["asc" if i % 2 == 0 else "des" for i in range(times.size)])
    return times, passes


def synthetic_time_stack(landcover: xr.DataArray, year: int = 2020, revisit_days: int = 6, looks: float = 4.4,
                         seed: int = 0) -> xr.DataArray:
    """SIMULATED one-year Sentinel-1 stack ``(time, band=["vv","vh"], y, x)`` of sigma0 in linear power.

    Model per pixel and date, in dB: class mean + seasonal cosine (amplitude and peak day per class, see
    :data:`SYNTHETIC_CLASSES`) + a fixed per-pixel texture (0.7 dB) + pass offset (descending -0.8 dB: a
    different incidence angle) + wind roughening on water (VV +-2 dB per date); then multiplicative
    ``looks``-look Gamma speckle (mean 1, variance 1/looks). Coordinates: ``time``, ``pass`` per time.
    """
    lc = np.asarray(landcover.values)
    unknown = sorted(set(np.unique(lc).tolist()) - set(SYNTHETIC_CLASSES))
    if unknown:
        raise UserError(f"synthetic_time_stack: landcover codes {unknown} have no backscatter model "
                         f"(known: {sorted(SYNTHETIC_CLASSES)})")
    if not looks > 0:
        raise UserError(f"synthetic_time_stack: looks must be > 0, got {looks!r}")
    rng = np.random.default_rng(seed)
    times, passes = acquisition_times(year, revisit_days)
    doy = pd.DatetimeIndex(times).day_of_year.values.astype(np.float64)
    codes = np.array(sorted(SYNTHETIC_CLASSES))
    idx = np.searchsorted(codes, lc)
    table = np.array([SYNTHETIC_CLASSES[c][1:] for c in codes], dtype=np.float64)  # (K, 5)
    base = np.stack([table[idx, 0], table[idx, 1]])  # (2, y, x)
    amp = np.stack([table[idx, 2], table[idx, 3]])
    peak = table[idx, 4]
    season = np.cos(2 * np.pi * (doy[:, None, None] - peak[None]) / 365.25)  # (t, y, x)
    texture = rng.normal(0.0, 0.7, (2,) + lc.shape)
    offset = np.where(passes == "des", -0.8, 0.0)[:, None, None, None]
    wind = rng.normal(0.0, 2.0, (times.size, 1, 1)) * (lc == 80)  # (t, y, x), VV only
    db = base[None] + amp[None] * season[:, None] + texture[None] + offset
    db[:, 0] += wind
    power = 10.0 ** (db / 10.0) * rng.gamma(looks, 1.0 / looks, db.shape)
    da = xr.DataArray(
        power.astype(np.float32), dims=("time", "band", "y", "x"),
        coords={"time": times, "band": ["vv", "vh"], "pass": ("time", passes), "y": landcover["y"].values,
                "x": landcover["x"].values},
        name="sigma0", attrs={"units": "linear", "looks": float(looks), "simulated": 1},
    )
    return _georef(da, landcover.rio.crs)


def synthetic_dem(size: int = 128, pixel_size: float = 10.0, height: float = 800.0, width: float = 250.0,
                  crs: str = "EPSG:32633", origin: tuple[float, float] = (500000.0, 5300000.0)) -> xr.DataArray:
    """A DEM (y, x, metres) with one Gaussian mountain of ``height`` m and e-folding half-width ``width`` m
    in the middle of a flat plain at 100 m: slopes reach ``atan(height / width * exp(-1/2))``, steep enough
    for layover and shadow at Sentinel-1 incidence angles with the defaults (about 63 deg)."""
    if size < 8 or not pixel_size > 0 or not width > 0:
        raise UserError(f"synthetic_dem: need size >= 8, pixel_size > 0, width > 0; got {size}, {pixel_size}, {width}")
    y, x = _grid(size, pixel_size, origin)
    yc, xc = y.mean(), x.mean()
    z = 100.0 + height * np.exp(-(((x[None] - xc) ** 2 + (y[:, None] - yc) ** 2) / (2 * width ** 2)))
    da = xr.DataArray(z.astype(np.float64), dims=("y", "x"), coords={"y": y, "x": x}, name="elevation",
                      attrs={"units": "m", "simulated": 1})
    return _georef(da, crs)


def terrain_sigma0(dem: xr.DataArray, gamma0_db: float = -8.0, incidence: float = 35.0, look_azimuth: float = 90.0,
                   looks: float = 4.4, seed: int = 0) -> xr.DataArray:
    """SIMULATED ellipsoid-referenced sigma0 (y, x, linear) of a surface with constant terrain-flattened
    gamma0 ``gamma0_db`` on ``dem``: the inverse of :func:`terrain_flatten` (projected-area method), with
    Gamma speckle. Layover and shadow pixels are NaN (no single facet explains them)."""
    factor = terrain_flatten(xr.ones_like(dem), dem, incidence, look_azimuth, mask_invalid=True)
    rng = np.random.default_rng(seed)
    clean = 10.0 ** (gamma0_db / 10.0) / factor
    out = clean * rng.gamma(looks, 1.0 / looks, dem.shape)
    out = out.astype(np.float32)
    out.name = "sigma0"
    out.attrs = {"units": "linear", "looks": float(looks), "simulated": 1}
    return out
