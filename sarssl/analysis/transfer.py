"""Region shift against transfer: is a region that looks far away to the encoder also one where a
model trained elsewhere does worse?

:func:`region_transfer` trains one head (a linear probe by default) on the train chips of a source
region and tests it on the test chips of the source region and of other regions. For each test set it
also measures how far its CLS embeddings lie from the source region's train embeddings (Fréchet
distance or MMD, :func:`sarssl.analysis.embeddings.region_distance`). The source's own test split is
the in-region point: its distance is what sampling alone gives. :func:`plot_region_transfer` draws
error against distance with the rank correlation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from torch import nn

from sarssl.analysis.embeddings import region_distance

__all__ = ["region_transfer", "plot_region_transfer"]


def region_transfer(encoder: nn.Module, profile, source: tuple, targets: dict, task: str = "vegetation",
                    protocol: str | None = None, seed: int = 0, distance: str = "frechet", device=None,
                    progress: bool = False) -> pd.DataFrame:
    """Distance to the source region and test metrics of one head trained there, per region.

    Args:
        encoder: the (pretrained or random) timm ViT; frozen protocols leave it unchanged.
        profile: a :class:`~sarssl.profiles.Profile` (epochs, batch, learning rate of the head).
        source: ``(root, aoi)`` of the region the head is trained on (all its train chips).
        targets: name -> ``(root, aoi)`` of the other regions (their test chips are scored).
        task: a fine-tuning target (``vegetation``, ``landcover``...); protocol: default the profile's.
        distance: ``"frechet"`` or ``"mmd"`` between CLS embeddings.

    Returns:
        One row per test set (the source's test split first, ``in_region`` True): ``region``, ``aoi``,
        ``in_region``, ``n_chips``, ``distance`` (to the source's train chips) and the task's metrics.
    """
    from sarssl.train.featurebank import extract_bank
    from sarssl.train.finetune import train_and_evaluate
    from sarssl.train.finetune_data import finetune_dataset, finetune_normalization
    from sarssl.train.protocols import build_head
    from sarssl.train.tasks import FROZEN_PROTOCOLS, get_target, products_for

    spec = get_target(task)
    protocol = protocol or profile.finetune.protocol
    (src_root, src_aoi) = source
    if src_aoi in targets:
        raise ValueError(f"region_transfer: target name {src_aoi!r} is the source region's name")
    norm = finetune_normalization(src_root, src_aoi, profile)  # one normalisation for every region
    products = products_for(spec)
    train = finetune_dataset(src_root, src_aoi, "train", products, norm)
    tests = {src_aoi: finetune_dataset(src_root, src_aoi, "test", products, norm)}
    tests.update({name: finetune_dataset(root, aoi, "test", products, norm) for name, (root, aoi) in targets.items()})
    frozen = protocol in FROZEN_PROTOCOLS
    idx = tuple(getattr(build_head(spec, encoder, protocol), "indices", ())) or (-1,)
    banks = {name: extract_bank(encoder, ds, idx, grid=frozen, device=device, progress=progress, desc=f"{name} features")
             for name, ds in {"__train__": train, **tests}.items()}  # trained protocols only need the CLS here
    ref = banks.pop("__train__")
    run = train_and_evaluate(spec, protocol, encoder, profile, ref if frozen else train,
                             banks if frozen else tests, seed=seed, device=device, progress=progress)
    source_emb = ref.tensors["cls"].numpy()
    rows = []
    for name, bank in banks.items():
        metrics = {k: v for k, v in run.metrics[name].items() if k != "n"}
        aoi = src_aoi if name == src_aoi else targets[name][1]
        rows.append({"region": name, "aoi": aoi, "in_region": name == src_aoi, "n_chips": len(bank),
                     "distance": region_distance(source_emb, bank.tensors["cls"].numpy(), distance), **metrics})
    return pd.DataFrame(rows)


def plot_region_transfer(df: pd.DataFrame, metric: str, ax=None, title: str | None = None, label: str | None = None):
    """Scatter of ``metric`` against ``distance`` (one point per region, named; the source's test split
    hollow) with Spearman's rank correlation over all points in the legend. Returns the Figure."""
    import matplotlib.pyplot as plt
    from scipy.stats import spearmanr

    for col in ("distance", metric, "region", "in_region"):
        if col not in df.columns:
            raise ValueError(f"plot_region_transfer: no column {col!r} (columns: {list(df.columns)})")
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 4))
    else:
        fig = ax.figure
    x, y = df["distance"].to_numpy(float), df[metric].to_numpy(float)
    rho = spearmanr(x, y).statistic if len(df) > 2 else np.nan
    inside = df["in_region"].to_numpy(bool)
    pts = ax.scatter(x[~inside], y[~inside],
                     label=f"{label or 'other regions'} (Spearman ρ over all {len(df)} points = {rho:+.2f})")
    ax.scatter(x[inside], y[inside], facecolors="none", edgecolors=pts.get_facecolor()[0], s=60,
               label="source region, test chips")
    for xi, yi, name in zip(x, y, df["region"]):
        ax.annotate(str(name), (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("embedding distance to the source region's train chips")
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric} against region distance")
    ax.legend(fontsize=8)
    return fig
