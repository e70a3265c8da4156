"""Preprocessing at scale: speckle filtering and seasonal compositing of large dask-backed stacks, to zarr.

The pipeline is lazy end to end. A time stack ``(time, band, y, x)`` of linear sigma0 is chunked in space
(all times of a tile in one chunk, because the seasonal median needs them), every image is speckle-filtered
per chunk with ``map_overlap`` and a halo equal to the filter's reach (NaN outside the image, so the
result equals the whole-image result), the seasonal composites are reduced per tile, and the output is
written to a zarr store tile by tile. Peak memory per task is about ``times x bands x (chunk + 2 halo)^2 x
8 bytes`` times a small factor, whatever the size of the area; :func:`local_cluster` starts a dask
``LocalCluster`` with a memory limit per worker to run it on one machine.

Any per-block function can be plugged in: a speckle filter of :mod:`sarssl.preprocess.speckle` by name
(``"lee"``), a callable that takes and returns a DataArray (dask-aware), or a numpy function on
``(..., y, x)`` blocks together with its ``halo`` in pixels.
"""

from __future__ import annotations

import contextlib
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import xarray as xr

from sarssl.errors import UserError
from sarssl.preprocess.nodata import mask_nodata

__all__ = ["local_cluster", "chunk_stack", "overlap_filter", "speckle_stack", "lazy_composite",
           "composite_to_zarr", "stack_to_zarr", "DEFAULT_CHUNK"]

#: spatial chunk side in pixels (all times in one chunk): 60 dates x 2 pols x 512^2 x 8 B ~ 250 MB per task
DEFAULT_CHUNK = 512


@contextlib.contextmanager
def local_cluster(n_workers: int = 2, memory_limit: str = "2GiB", threads_per_worker: int = 1,
                  processes: bool = True, dashboard: bool = False):
    """A dask ``LocalCluster`` and its ``Client`` as a context manager (both closed on exit).

    ``memory_limit`` is per worker: past 60-70 % a worker spills to disk, past 95 % it is restarted, so a
    pipeline with bounded task memory runs on areas far larger than RAM. ``processes=False`` uses threads
    in this process (faster start, for notebooks and tests); those threads share this process's memory,
    so no per-worker limit is set for them (a limit below the host process's size would pause the workers
    for good).
    """
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as e:  # pragma: no cover - distributed is a dependency
        raise ImportError("local_cluster needs dask.distributed: pip install 'dask[distributed]'") from e
    cluster = LocalCluster(n_workers=int(n_workers), threads_per_worker=int(threads_per_worker),
                           memory_limit=memory_limit if processes else 0, processes=processes,
                           dashboard_address=":0" if dashboard else None)
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def chunk_stack(stack: xr.DataArray, chunk: int = DEFAULT_CHUNK) -> xr.DataArray:
    """Chunk a ``(time, band, y, x)`` stack for compositing: one chunk over time and band, ``chunk`` px tiles."""
    if not isinstance(stack, xr.DataArray) or tuple(stack.dims) != ("time", "band", "y", "x"):
        raise UserError(f"expected a DataArray with dims (time, band, y, x), got {getattr(stack, 'dims', type(stack))}")
    if int(chunk) < 8:
        raise UserError(f"chunk must be >= 8 pixels, got {chunk!r}")
    return stack.chunk({"time": -1, "band": -1, "y": int(chunk), "x": int(chunk)})


def overlap_filter(image: xr.DataArray, func: Callable[[np.ndarray], np.ndarray], halo: int,
                   dtype=np.float32) -> xr.DataArray:
    """Apply a numpy block function ``func((..., y, x)) -> same shape`` lazily with a ``halo``-pixel overlap.

    Pixels outside the image are NaN in the halo (no-data), as the speckle filters assume, and so are the
    image's declared no-data values (``rio.nodata``/``_FillValue``). Returns a DataArray with the input's
    coords and attrs; nothing is computed here.
    """
    import dask.array as dsa

    if int(halo) < 0:
        raise UserError(f"halo must be >= 0 pixels, got {halo!r}")
    image = mask_nodata(image)
    data = image.data
    if not isinstance(data, dsa.Array):
        data = dsa.from_array(np.asarray(data), chunks=-1)
    nd = data.ndim
    halo = int(halo)
    for ax in (nd - 2, nd - 1):  # each chunk must be at least as large as the halo
        if min(data.chunks[ax]) < halo:
            data = data.rechunk({ax: max(halo, max(data.chunks[ax]))})
    depth = {i: 0 for i in range(nd)}
    depth[nd - 2] = depth[nd - 1] = halo
    out = data.astype(np.float64).map_overlap(func, depth=depth, boundary=np.nan, trim=True, dtype=dtype,
                                              meta=np.empty((0,) * nd, dtype=dtype))
    return image.copy(data=out)


def speckle_stack(stack: xr.DataArray, speckle="lee", halo: int | None = None, **kwargs) -> xr.DataArray:
    """Speckle-filter every image of a (dask-backed) stack lazily.

    ``speckle``: a name in :mod:`sarssl.preprocess.speckle` (``"lee"``, ``"refined_lee"``, ...; ``kwargs`` go
    to it, e.g. ``size=7, looks=4.4``), a callable on DataArrays (``halo=None``), a numpy block function
    with its ``halo`` (run through :func:`overlap_filter`), or None (no filtering).
    """
    if speckle is None:
        return stack
    stack = mask_nodata(stack)  # declared no-data -> NaN before any filter sees it
    if isinstance(speckle, str):
        from sarssl.preprocess import speckle as sp

        if speckle not in sp.__all__:
            raise UserError(f"unknown speckle filter {speckle!r}: expected one of {sp.__all__}")
        return getattr(sp, speckle)(stack, **kwargs)
    if not callable(speckle):
        raise UserError(f"speckle must be a filter name, a callable or None, got {speckle!r}")
    if halo is None:
        return speckle(stack, **kwargs)
    return overlap_filter(stack, partial(speckle, **kwargs) if kwargs else speckle, halo)


def lazy_composite(stack: xr.DataArray, year: int, speckle="lee", speckle_kwargs: dict | None = None,
                   halo: int | None = None, stat: str = "median", pass_: str | None = "asc",
                   output: str = "channels", chunk: int | None = DEFAULT_CHUNK) -> xr.DataArray:
    """Lazy speckle filter + seasonal composite of a linear-power stack; nothing is computed.

    Args:
        stack: ``(time, band, y, x)`` sigma0 in linear power (bands named vv/vh, a ``pass`` coord per time).
        year: composite year (winter = Dec of ``year - 1`` + Jan, Feb).
        speckle, speckle_kwargs, halo: see :func:`speckle_stack`.
        stat: ``"median"`` or ``"mean"``. pass_: ``"asc"``, ``"des"`` or None (channels output only).
        output: ``"channels"`` (the 12 ``INPUT_CHANNELS``, dB) or ``"s1grd"`` (M3LEO's 16 bands, dB).
        chunk: spatial tile in pixels (None: keep the stack's chunks; a numpy stack is then one chunk).

    Returns:
        A dask-backed ``(band, y, x)`` float32 DataArray in dB.
    """
    from sarssl.preprocess.composites import s1grd_composite, seasonal_composite

    if output not in ("channels", "s1grd"):
        raise UserError(f"output must be 'channels' or 's1grd', got {output!r}")
    if chunk is not None:
        stack = chunk_stack(stack, chunk)
    elif stack.chunks is None:
        stack = stack.chunk({"time": -1})
    filtered = speckle_stack(stack, speckle, halo, **(speckle_kwargs or {}))
    if output == "channels":
        return seasonal_composite(filtered, year, stat=stat, pass_=pass_, units="linear")
    return s1grd_composite(filtered, year, stat=stat, units="linear")


def composite_to_zarr(stack: xr.DataArray, store, year: int, speckle="lee", speckle_kwargs: dict | None = None,
                      halo: int | None = None, stat: str = "median", pass_: str | None = "asc",
                      output: str = "channels", chunk: int = DEFAULT_CHUNK, encode: bool = False,
                      compute: bool = True, overwrite: bool = False, progress: bool = True):
    """Speckle filter + seasonal composite of a large stack, written to a zarr store tile by tile.

    Same arguments as :func:`lazy_composite`, plus ``store`` (a path), ``encode`` (store M3LEO uint8
    codes instead of float32 dB), ``compute`` (False: return the dask ``Delayed`` write without running
    it), ``overwrite`` (replace an existing store) and ``progress`` (a dask progress bar when no
    distributed client is active). Runs on the active scheduler (e.g. inside :func:`local_cluster`).
    Returns the opened result (``xr.DataArray`` backed by the store) or the ``Delayed`` when ``compute=False``.
    """
    from sarssl.preprocess.composites import encode_m3leo

    store = Path(store)
    if store.exists() and not overwrite:
        raise FileExistsError(f"zarr store {str(store)!r} exists (pass overwrite=True to replace it)")
    comp = lazy_composite(stack, year, speckle, speckle_kwargs, halo, stat, pass_, output, chunk)
    if encode:
        comp = encode_m3leo(comp)
    name = "s1_composite"
    comp = comp.rename(name)
    comp.attrs = {k: (str(v) if v is None else v) for k, v in comp.attrs.items()}
    comp = comp.chunk({"band": -1, "y": chunk, "x": chunk})
    ds = comp.drop_vars([c for c in comp.coords if c not in comp.dims and c != "spatial_ref"]).to_dataset()
    ds = _vlen_strings(ds.assign_coords(band=[str(b) for b in ds["band"].values]))
    for v in ds.variables.values():
        v.encoding.pop("chunks", None)
        v.encoding.pop("preferred_chunks", None)
    delayed = ds.to_zarr(store, mode="w", compute=False, consolidated=False)
    if not compute:
        return delayed
    if progress and not _has_client():
        from dask.diagnostics import ProgressBar

        with ProgressBar():
            delayed.compute()
    else:
        delayed.compute()
    # encoded codes stay uint8 (0 = no-data) instead of being masked to float NaN
    return xr.open_zarr(store, consolidated=False, mask_and_scale=not encode)[name]


def _vlen_strings(obj):
    """String coordinates as variable-length (object) strings, which every zarr format stores."""
    return obj.assign_coords({c: (obj[c].dims, np.asarray(obj[c].values, dtype=object))
                              for c in obj.coords if obj[c].dtype.kind == "U"})


def stack_to_zarr(stack: xr.DataArray, store, chunk: int = DEFAULT_CHUNK, overwrite: bool = False) -> xr.DataArray:
    """Write a ``(time, band, y, x)`` stack to a zarr store in spatial tiles (all times per tile); reopen it lazily.

    The returned DataArray reads nothing until computed, so :func:`lazy_composite` and
    :func:`composite_to_zarr` on it read tile by tile from disk instead of holding the stack in memory.
    """
    store = Path(store)
    if store.exists() and not overwrite:
        raise FileExistsError(f"zarr store {str(store)!r} exists (pass overwrite=True to replace it)")
    missing = {"time", "band", "y", "x"} - set(stack.dims)
    if missing:
        raise UserError(f"stack_to_zarr: the stack has dims {stack.dims}, missing {sorted(missing)}")
    name = stack.name or "sigma0"
    ds = _vlen_strings(stack.rename(name).chunk({"time": -1, "band": -1, "y": chunk, "x": chunk})).to_dataset()
    for v in ds.variables.values():
        v.encoding.pop("chunks", None)
        v.encoding.pop("preferred_chunks", None)
    ds.to_zarr(store, mode="w", consolidated=False)
    return xr.open_zarr(store, consolidated=False)[name]


def _has_client() -> bool:
    try:
        from dask.distributed import get_client

        get_client()
        return True
    except (ImportError, ValueError):
        return False
