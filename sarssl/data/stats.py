"""Summaries of an M3LEO root: chips per split and product, how much the test split touches the
train split, and per-channel statistics (``sarssl stats``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sarssl.data.layout import SPLITS, AOILayout, check_unique_aois, list_aois
from sarssl.data.m3leo import available_products, read_chips_geojson, read_splits


def _bounds(coords) -> tuple[float, float, float, float]:
    """(xmin, ymin, xmax, ymax) of a GeoJSON Polygon or MultiPolygon's coordinates."""
    pts = np.asarray([p for ring in _rings(coords) for p in ring], dtype=np.float64)
    return float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())


def _rings(coords):
    if np.ndim(coords[0][0]) == 1:  # Polygon: list of rings
        return coords
    return [ring for poly in coords for ring in poly]  # MultiPolygon


def split_contact(bounds: np.ndarray, splits, of: str = "test", to: str = "train", tol: float | None = None) -> dict:
    """How many chips of split ``of`` touch a chip of split ``to``, sharing an edge or a corner.

    Args:
        bounds: ``(N, 4)`` chip bounding boxes ``xmin, ymin, xmax, ymax`` (any one CRS).
        splits: ``(N,)`` split names. tol: gap still counted as touching (default: 0.1 % of the
            median chip side, so chips of a grid that share an edge are found despite rounding).

    Returns:
        ``{"n": chips of "of", "touching": how many touch a "to" chip, "share": touching / n}``
        (``share`` is NaN when there are no ``of`` chips).
    """
    b = np.asarray(bounds, dtype=np.float64).reshape(-1, 4)
    s = np.asarray(splits)
    if len(s) != len(b):
        raise ValueError(f"split_contact: {len(b)} chip bounds but {len(s)} split names")
    a_idx, t_idx = np.flatnonzero(s == of), np.flatnonzero(s == to)
    if a_idx.size == 0:
        return {"n": 0, "touching": 0, "share": float("nan")}
    if tol is None:
        tol = 1e-3 * float(np.median(np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])))
    touching = np.zeros(a_idx.size, bool)
    if t_idx.size:
        from scipy.spatial import cKDTree

        centres = np.column_stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2])
        half = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) / 2
        reach = 2 * float(half.max()) * np.sqrt(2) + tol  # no touching pair is farther apart than this
        tree = cKDTree(centres[t_idx])
        for k, (i, cand) in enumerate(zip(a_idx, tree.query_ball_point(centres[a_idx], reach))):
            if not cand:
                continue
            j = t_idx[np.asarray(cand)]
            overlap_x = (np.minimum(b[i, 2], b[j, 2]) - np.maximum(b[i, 0], b[j, 0])) >= -tol
            overlap_y = (np.minimum(b[i, 3], b[j, 3]) - np.maximum(b[i, 1], b[j, 1])) >= -tol
            touching[k] = bool((overlap_x & overlap_y).any())
    n_t = int(touching.sum())
    return {"n": int(a_idx.size), "touching": n_t, "share": n_t / a_idx.size}


def aoi_split_contact(layout: AOILayout, of: str = "test", to: str = "train") -> dict:
    """:func:`split_contact` of one AOI, from its chip geojson and split file."""
    gj = read_chips_geojson(layout)
    split_of = dict(zip(*(read_splits(layout)[c] for c in ("identifier", "split"))))
    feats = [f for f in gj["features"] if f["properties"]["identifier"] in split_of]
    bounds = np.asarray([_bounds(f["geometry"]["coordinates"]) for f in feats]).reshape(-1, 4)
    return split_contact(bounds, [split_of[f["properties"]["identifier"]] for f in feats], of=of, to=to)


def split_leakage(root: str | Path, aois: list[str] | None = None) -> pd.DataFrame:
    """One row per AOI: stripes in the split file, test chips, and the share of them that touch a train chip."""
    rows = []
    for aoi in aois or list_aois(root):
        layout = AOILayout.find(root, aoi)
        c = aoi_split_contact(layout)
        rows.append({"aoi": aoi, "stripes": layout.n_stripes, "test chips": c["n"],
                     "touching train": c["touching"], "share touching train": c["share"]})
    return pd.DataFrame(rows).set_index("aoi")


def chip_counts(root: str | Path, aois: list[str] | None = None) -> pd.DataFrame:
    """One row per AOI: chips per split and GeoTIFF count per product folder (known to sarssl or not)."""
    rows = []
    for aoi in check_unique_aois(aois) if aois else list_aois(root):
        layout = AOILayout.find(root, aoi)
        splits = read_splits(layout)["split"].value_counts()
        row = {"aoi": aoi, **{s: int(splits.get(s, 0)) for s in SPLITS}}
        for product in layout.product_folders():
            row[product] = sum(1 for _ in layout.product_dir(product).glob("*.tif"))
        rows.append(row)
    if not rows:
        raise FileNotFoundError(f"no AOI with a split file under {str(root)!r}")
    return pd.DataFrame(rows).set_index("aoi")


def channel_statistics(root: str | Path, aois: list[str], n_tiles: int = 32, seed: int = 0) -> pd.DataFrame:
    """Mean and standard deviation (dB) of each input channel over up to ``n_tiles`` sampled train tiles.

    ``result.attrs["n_tiles"]`` is the number of tiles actually used (fewer when the region has fewer
    valid train tiles)."""
    from sarssl.data.datasets import M3LEODataset

    s1 = [p for p in available_products(AOILayout.find(root, aois[0])) if p.startswith("s1grd")]
    if not s1:
        raise FileNotFoundError(f"AOI {aois[0]!r} under {str(root)!r} has no s1grd-<year> product")
    ds = M3LEODataset(root, aois, split="train", products=(s1[0],), normalization=None, progress=False)
    norm = ds.fit_normalization(norm_tiles=n_tiles, seed=seed, progress=False)
    df = pd.DataFrame({"mean_db": norm.mean, "std_db": norm.std}, index=pd.Index(norm.channels, name="channel"))
    df.attrs["n_tiles"] = norm.n_tiles
    return df


def region_summary(root: str | Path, aois: list[str] | None = None, n_tiles: int = 32, seed: int = 0) -> str:
    """Printable summary: chip counts per AOI, split and product, the test chips touching train chips
    (:func:`split_leakage`), then per-channel statistics."""
    counts = chip_counts(root, aois)
    leak = split_leakage(root, list(counts.index))
    leak["share touching train"] = (100 * leak["share touching train"]).round(1).astype(str) + " %"
    stats = channel_statistics(root, list(counts.index), n_tiles=n_tiles, seed=seed)
    used = stats.attrs.get("n_tiles")
    over = (f"{used} sampled train tiles" if used == n_tiles else f"all {used} valid train tiles")
    other = sorted({p for a in counts.index for p in AOILayout.find(root, a).unknown_products()})
    note = (f"\nproduct folders listed but not read by sarssl: {', '.join(other)}\n" if other else "")
    return (f"M3LEO root {root}\n\nchips per split and product:\n{counts.T.fillna(0).astype(int).to_string()}\n"
            f"{note}\ntest chips sharing an edge or a corner with a train chip:\n{leak.to_string()}\n\n"
            f"input channels over {over} (dB):\n{stats.round(2).to_string()}")
