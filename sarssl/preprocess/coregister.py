"""Co-registration: put a SAR raster onto a label grid (and back) with rioxarray ``reproject_match``.

Continuous values (sigma0, tree cover, biomass) are resampled with ``average`` (area-weighted mean of the
source pixels in each target cell, the right thing when going to a coarser grid), classes with
``nearest`` (no invented class codes). For large targets give ``chunks``: the result is built lazily,
block by block, each block reading only the window of the source it needs.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from rasterio.enums import Resampling

from sarssl.errors import UserError

_KINDS = {"continuous": Resampling.average, "categorical": Resampling.nearest}


def _resampling(kind, resampling):
    if resampling is not None:
        return Resampling[resampling] if isinstance(resampling, str) else resampling
    if kind not in _KINDS:
        raise UserError(f"kind must be one of {sorted(_KINDS)}, got {kind!r}")
    return _KINDS[kind]


def _check(da: xr.DataArray, name: str) -> None:
    if not isinstance(da, xr.DataArray):
        raise TypeError(f"{name}: expected an xarray.DataArray, got {type(da).__name__}")
    if da.rio.crs is None:
        raise UserError(f"{name}: no CRS; write one with .rio.write_crs(...) first")


def to_grid(src: xr.DataArray, target: xr.DataArray, kind: str = "continuous", resampling=None,
            chunks: int | None = None) -> xr.DataArray:
    """Resample ``src`` (..., y, x) onto the grid (CRS, transform, shape) of ``target``.

    kind: "continuous" (average) or "categorical" (nearest); ``resampling`` (a rasterio name) overrides.
    NaN / the source nodata stays no-data. ``chunks``: target-block size for a lazy (dask) result.
    """
    _check(src, "source")
    _check(target, "target")
    rs = _resampling(kind, resampling)
    if src.rio.nodata is None and np.issubdtype(src.dtype, np.floating):
        src = src.rio.write_nodata(np.nan)
    if chunks is None:
        return src.rio.reproject_match(target, resampling=rs)
    return _to_grid_lazy(src, target, rs, int(chunks))


def _to_grid_lazy(src, target, rs, chunks):
    import dask
    import dask.array as dsa
    from rasterio.warp import transform_bounds

    ty, tx = target["y"].values, target["x"].values
    res_src = max(abs(v) for v in src.rio.resolution())
    blocks = []
    template = None
    for y0 in range(0, ty.size, chunks):
        row = []
        for x0 in range(0, tx.size, chunks):
            tblk = target.isel(y=slice(y0, y0 + chunks), x=slice(x0, x0 + chunks))
            b = transform_bounds(target.rio.crs, src.rio.crs, *tblk.rio.bounds(), densify_pts=21)
            m = 2 * res_src
            try:
                window = src.rio.clip_box(b[0] - m, b[1] - m, b[2] + m, b[3] + m)
            except Exception:  # noqa: BLE001 - block outside the source: all no-data
                window = None
            shape = src.shape[:-2] + tblk.shape[-2:]

            def one(w=window, t=tblk, shape=shape):
                if w is None:
                    return np.full(shape, np.nan if np.issubdtype(src.dtype, np.floating) else src.rio.nodata or 0, src.dtype)
                return np.asarray(w.load().rio.reproject_match(t, resampling=rs).values)

            row.append(dsa.from_delayed(dask.delayed(one)(), shape=shape, dtype=src.dtype))
            if template is None:
                template = tblk
        blocks.append(row)
    data = dsa.block(blocks)
    full = src.isel(y=slice(0, 1), x=slice(0, 1)).rio.reproject_match(target.isel(y=slice(0, 1), x=slice(0, 1)), resampling=rs)
    coords = {k: v for k, v in full.coords.items() if "y" not in v.dims and "x" not in v.dims}
    out = xr.DataArray(data, dims=src.dims, coords={**coords, "y": ty, "x": tx}, attrs=src.attrs)
    out = out.rio.write_crs(target.rio.crs).rio.write_transform(target.rio.transform())
    return out


def from_grid(values: xr.DataArray, sar: xr.DataArray, kind: str = "continuous", resampling=None,
              chunks: int | None = None) -> xr.DataArray:
    """The way back: resample values on a label grid onto the SAR raster's grid (same rules as to_grid)."""
    return to_grid(values, sar, kind=kind, resampling=resampling, chunks=chunks)
