"""Speckle assessment on real images: find a homogeneous area, fit a Gamma law, compare filters.

Inputs are linear-power images (numpy or xarray, (y, x)); NaN is no-data.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
from scipy import ndimage, stats

from sarssl.errors import UserError
from sarssl.preprocess.quality import edge_preservation_index, enl, ratio_image_stats


def _values(image) -> np.ndarray:
    a = np.asarray(getattr(image, "values", image), dtype=np.float64)
    if a.ndim != 2:
        raise UserError(f"expected a (y, x) image, got shape {a.shape}")
    return a


def most_homogeneous_window(image, size: int = 15) -> tuple[slice, slice]:
    """The ``size`` x ``size`` window (fully valid, inside the image) with the lowest coefficient of
    variation std/mean of the linear intensity. Returns (row slice, column slice).

    The minimum over many windows is biased low (the noisiest draws are the ones not picked), so an ENL
    measured on it is optimistic; it is a quick way to find "the flattest field" on a real patch.
    """
    a = _values(image)
    if size < 3 or size > min(a.shape):
        raise UserError(f"most_homogeneous_window: size must be in [3, {min(a.shape)}], got {size}")
    valid = np.isfinite(a)
    z = np.where(valid, a, 0.0)
    m = ndimage.uniform_filter(z, size, mode="constant")
    m2 = ndimage.uniform_filter(z * z, size, mode="constant")
    n = ndimage.uniform_filter(valid.astype(np.float64), size, mode="constant")
    with np.errstate(invalid="ignore", divide="ignore"):
        cv = np.sqrt(np.maximum(m2 - m * m, 0.0)) / m
    h = size // 2
    ok = np.zeros_like(valid)
    ok[h:a.shape[0] - (size - 1 - h), h:a.shape[1] - (size - 1 - h)] = True
    ok &= (n > 1 - 1e-9) & (m > 0)
    if not ok.any():
        raise UserError("most_homogeneous_window: no fully valid window of that size")
    cv = np.where(ok, cv, np.inf)
    r, c = np.unravel_index(np.argmin(cv), cv.shape)
    return slice(r - h, r - h + size), slice(c - h, c - h + size)


def fit_gamma(image, region=None) -> dict:
    """Fit a Gamma law to intensity normalised by its mean over ``region`` (tuple of slices or bool mask).

    For fully developed L-look speckle ``I / mean(I) ~ Gamma(shape=L, scale=1/L)``, so the fitted shape
    (maximum likelihood, location fixed at 0) is an ENL estimate. Returns ``{"shape", "scale",
    "enl_moments", "n", "values"}`` (``values``: the normalised samples, for a histogram).
    """
    a = _values(image)
    v = a[region] if region is not None else a
    v = v[np.isfinite(v) & (v > 0)].ravel()
    if v.size < 10:
        raise UserError(f"fit_gamma: need at least 10 positive valid pixels, got {v.size}")
    v = v / v.mean()
    shape, _, scale = stats.gamma.fit(v, floc=0)
    return {"shape": float(shape), "scale": float(scale), "enl_moments": enl(v), "n": int(v.size), "values": v}


def compare_filters(image, filters: Mapping[str, Callable], region) -> tuple[pd.DataFrame, dict]:
    """Run each filter on ``image`` (linear power) and measure it.

    Columns: ``ENL`` in ``region`` (higher = smoother), ``EPI`` (edge-preservation index against the
    unfiltered image, 1 = all high-pass content kept), ``ratio mean`` / ``ratio std`` of original/filtered
    in ``region`` (mean ~1 = unbiased; std ~1/sqrt(L) = removes only speckle) and ``seconds``.
    The first row is the unfiltered image. Returns (table indexed by filter name, {name: output}).
    """
    a = _values(image)
    rows = [{"filter": "none", "ENL": enl(a, region), "EPI": 1.0, "ratio mean": 1.0, "ratio std": 0.0, "seconds": 0.0}]
    outputs = {"none": a.astype(np.float32)}
    for name, fn in filters.items():
        t0 = time.perf_counter()
        out = np.asarray(fn(a), dtype=np.float32)
        dt = time.perf_counter() - t0
        if out.shape != a.shape:
            raise UserError(f"compare_filters: filter {name!r} returned shape {out.shape}, expected {a.shape}")
        r = ratio_image_stats(a, out, region)
        rows.append({"filter": name, "ENL": enl(out, region), "EPI": edge_preservation_index(a, out),
                     "ratio mean": r["mean"], "ratio std": r["std"], "seconds": dt})
        outputs[name] = out
    return pd.DataFrame(rows).set_index("filter"), outputs
