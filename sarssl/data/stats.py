"""Summaries of an M3LEO root: chips per split and product, and per-channel statistics (``sarssl stats``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sarssl.data.layout import SPLITS, AOILayout, list_aois
from sarssl.data.m3leo import available_products, read_splits


def chip_counts(root: str | Path, aois: list[str] | None = None) -> pd.DataFrame:
    """One row per AOI: chips per split and GeoTIFF count per product folder (known to sarssl or not)."""
    rows = []
    for aoi in aois or list_aois(root):
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
    """Mean and standard deviation (dB) of each input channel over ``n_tiles`` sampled train tiles."""
    from sarssl.data.datasets import M3LEODataset

    s1 = [p for p in available_products(AOILayout.find(root, aois[0])) if p.startswith("s1grd")]
    if not s1:
        raise FileNotFoundError(f"AOI {aois[0]!r} under {str(root)!r} has no s1grd-<year> product")
    ds = M3LEODataset(root, aois, split="train", products=(s1[0],), normalization=None, progress=False)
    norm = ds.fit_normalization(norm_tiles=n_tiles, seed=seed, progress=False)
    return pd.DataFrame({"mean_db": norm.mean, "std_db": norm.std}, index=pd.Index(norm.channels, name="channel"))


def region_summary(root: str | Path, aois: list[str] | None = None, n_tiles: int = 32, seed: int = 0) -> str:
    """Printable summary: chip counts per AOI, split and product, then per-channel statistics."""
    counts = chip_counts(root, aois)
    stats = channel_statistics(root, list(counts.index), n_tiles=n_tiles, seed=seed)
    other = sorted({p for a in counts.index for p in AOILayout.find(root, a).unknown_products()})
    note = (f"\nproduct folders listed but not read by sarssl: {', '.join(other)}\n" if other else "")
    return (f"M3LEO root {root}\n\nchips per split and product:\n{counts.T.fillna(0).astype(int).to_string()}\n"
            f"{note}\ninput channels over {n_tiles} sampled train tiles (dB):\n{stats.round(2).to_string()}")
