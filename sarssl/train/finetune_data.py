"""The data of fine-tuning runs: one input normalisation per region and the labelled chip subsets."""

from __future__ import annotations

from pathlib import Path

__all__ = ["finetune_normalization", "finetune_dataset"]


def finetune_normalization(data_root, aoi: str, profile, s1_product: str = "s1grd-2020", norm_seed: int = 0,
                           init_dir: str | Path | None = None, progress: bool = False):
    """Input normalisation shared by every fine-tuning run of a region (never refitted per fraction).

    ``init_dir/normalization.json`` when a pretraining run saved one; else fitted on the region's
    train chips exactly as pretraining fits it (same key, so the cached JSON is reused).
    """
    from sarssl.data.datasets import M3LEODataset
    from sarssl.data.transforms import Normalization

    if init_dir is not None and (Path(init_dir) / "normalization.json").is_file():
        return Normalization.load(Path(init_dir) / "normalization.json")
    ds = M3LEODataset(data_root, [aoi], split="train", products=(s1_product,), normalization="fit",
                      norm_tiles=profile.data.norm_tiles, seed=norm_seed, progress=progress)
    return ds.norm


def finetune_dataset(data_root, aoi: str, split: str, products, norm, limit_pct: float = 100.0, seed: int = 0,
                     cache_dir=None, progress: bool = False):
    """M3LEO chips of ``aoi``/``split`` with ``products``; ``limit_pct`` % of them chosen by ``seed``
    (:func:`sarssl.data.m3leo.label_fraction_ids`: the same subset for every method, nested across
    fractions). Reads through the packed cache (``cache_dir``, default ``<cache root>/packed``)."""
    from sarssl.data.datasets import M3LEODataset, default_cache_root

    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_root() / "packed"
    return M3LEODataset(data_root, [aoi], split=split, products=products, limit_pct=limit_pct, seed=seed,
                        normalization=norm, cache_dir=cache_dir, progress=progress)
