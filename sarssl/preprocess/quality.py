"""Speckle-filter quality measures: equivalent number of looks, edge preservation, ratio-image statistics.

All take linear-power images (numpy or xarray; xarray is loaded for these scalar summaries) and ignore
NaN pixels.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from sarssl.errors import UserError


def _arr(x, region=None) -> np.ndarray:
    a = np.asarray(getattr(x, "values", x), dtype=np.float64)
    if region is None:
        return a
    if isinstance(region, np.ndarray) and region.dtype == bool:
        if region.shape != a.shape[-region.ndim:]:
            raise UserError(f"region mask shape {region.shape} does not match image shape {a.shape}")
        return a[..., region]
    return a[region]


def enl(image, region=None) -> float:
    """Equivalent number of looks ``mean^2 / var`` of a homogeneous area (linear intensity).

    ``region``: a tuple of slices, or a boolean (y, x) mask; default the whole image. NaN ignored.
    """
    v = _arr(image, region)
    v = v[np.isfinite(v)]
    if v.size < 2:
        raise UserError("enl: the region holds fewer than 2 valid pixels")
    var = v.var()
    return float(v.mean() ** 2 / var) if var > 0 else float("inf")


def edge_preservation_index(original, filtered, region=None) -> float:
    """Edge-preservation index (Sattar et al. 1997): correlation of the Laplacian (high-pass) of the
    original and of the filtered image over pixels where both are finite. 1 = edges kept; ~0 = lost.

    Computed on the same image in both cases, so the reference is the (noisy) original; on simulated data
    pass the noise-free scene as ``original`` for the textbook definition.
    """
    a = np.asarray(getattr(original, "values", original), dtype=np.float64)
    b = np.asarray(getattr(filtered, "values", filtered), dtype=np.float64)
    if a.shape != b.shape:
        raise UserError(f"edge_preservation_index: shapes differ, original {a.shape} vs filtered {b.shape}")
    ok = np.isfinite(a) & np.isfinite(b)
    la = ndimage.laplace(np.where(ok, a, 0.0))
    lb = ndimage.laplace(np.where(ok, b, 0.0))
    # only pixels whose whole 3x3 neighbourhood is valid carry a meaningful Laplacian
    ok = ndimage.minimum_filter(ok.astype(np.uint8), 3, mode="constant", cval=0).astype(bool)
    if region is not None:
        ok &= _region_mask(a.shape, region)
    da, db = la[ok] - la[ok].mean(), lb[ok] - lb[ok].mean()
    den = np.sqrt((da * da).sum() * (db * db).sum())
    if den == 0:
        raise UserError("edge_preservation_index: an image has no high-pass content in the valid area")
    return float((da * db).sum() / den)


def _region_mask(shape, region) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    if isinstance(region, np.ndarray) and region.dtype == bool:
        return np.broadcast_to(region, shape).copy()
    m[region] = True
    return m


def ratio_image_stats(original, filtered, region=None) -> dict:
    """Statistics of the ratio image ``original / filtered`` over valid pixels.

    Returns ``{"mean", "std", "n"}``. An unbiased filter gives mean ~1; in homogeneous areas a filter that
    removes speckle only gives a std near the speckle's, 1/sqrt(looks), and the ratio shows no structure.
    """
    a = _arr(original, region)
    b = _arr(filtered, region)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = a / b
    r = r[np.isfinite(r)]
    if r.size == 0:
        raise UserError("ratio_image_stats: no pixel where both images are finite and filtered != 0")
    return {"mean": float(r.mean()), "std": float(r.std()), "n": int(r.size)}
