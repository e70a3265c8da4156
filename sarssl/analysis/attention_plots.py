"""Figures and tables for the attention-map chapter: what DINO's heads attend to, next to six products.

- :func:`collect_chips`: per-head CLS attention (normalised to sum 1 over patches), the ``mass``
  sets (:func:`sarssl.analysis.attention.threshold_attention`) and the six co-aligned products of a
  few chips of a canonical-sample dataset.
- :func:`plot_attention_grid`: the study's figure, one row per chip: SAR input, the attention heads
  (raw maps, or the thresholded ``mass`` sets over the SAR), Sentinel-2 RGB, WorldCover, CCI land
  cover, tree cover, biomass and built surface.
- :func:`probe_summary`: several :func:`sarssl.analysis.probes.probe_table` results side by side,
  one row per (product, metric), one column per feature set.
- :func:`plot_correlation_heatmap`: a head x product table (from
  :func:`sarssl.analysis.correlation.head_product_correlation`) as an annotated heatmap.

Every ``plot_*`` function returns its matplotlib ``Figure``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.colors import BoundaryNorm, ListedColormap

from sarssl.analysis.dino_plots import channel_label, to_db
from sarssl.data.products import IGNORE_INDEX, INPUT_CHANNELS, LABEL_SPECS, LCCI_CODES

__all__ = ["PRODUCT_COLUMNS", "PRODUCT_METRICS", "collect_chips", "plot_attention_grid", "compare_probes",
           "probe_summary", "plot_correlation_heatmap"]

#: products shown after the heads, in the study's order (dataset keys)
PRODUCT_COLUMNS = tuple(LABEL_SPECS)
_TITLES = {"s2rgb": "Sentinel-2 RGB", "worldcover": "WorldCover\n(high-res LC)", "lcci": "CCI\n(medium-res LC)",
           "treecover": "tree cover [%]", "biomass": "biomass [Mg/ha]", "built": "built [fraction]"}
_CMAPS = {"treecover": ("Greens", 0.0, 100.0), "biomass": ("YlGn", 0.0, None), "built": ("Purples", 0.0, 1.0)}
#: the metrics :func:`probe_summary` reports per product (first = headline metric)
PRODUCT_METRICS = {k: s.metrics for k, s in LABEL_SPECS.items()}


def collect_chips(encoder: torch.nn.Module, dataset, indices: Sequence[int], mass: float = 0.6, block: int = -1,
                  products: Sequence[str] = PRODUCT_COLUMNS) -> dict:
    """Attention and products of chips ``indices`` of ``dataset`` (canonical sample dicts).

    Returns ``{"s1" (B, 12, H, W) normalised, "s1_valid" (B, 12, H, W), "attn" (B, heads, h, w) summing to 1
    over patches, "masks" (B, heads, h, w) bool (the ``mass`` sets), "mass", "products" {key: (B, [3,] H, W)
    float with NaN where invalid, or int64 classes with IGNORE_INDEX}, "ids"}``.
    """
    from sarssl.analysis.attention import cls_attention_shares, threshold_attention

    samples = [dataset[int(i)] for i in indices]
    if not samples:
        raise ValueError("collect_chips: no chip indices given")
    missing = [p for p in products if p not in samples[0]]
    if missing:
        raise KeyError(f"collect_chips: products {missing} not in the samples (keys: {sorted(samples[0])}); "
                       "open the dataset with products=ALL_PRODUCTS")
    s1 = torch.stack([s["s1"] for s in samples])
    valid = torch.stack([s["s1_valid"] for s in samples])
    attn = cls_attention_shares(encoder, s1, block=block)
    prods = {}
    for p in products:
        v = torch.stack([s[p] for s in samples])
        if not v.is_floating_point():
            prods[p] = v.long()
            continue
        ok = torch.stack([s[f"{p}_valid"] for s in samples]).bool() if f"{p}_valid" in samples[0] else None
        if ok is not None:
            ok = ok.unsqueeze(1) if v.dim() == 4 else ok
            v = torch.where(ok, v.float(), torch.tensor(float("nan")))
        prods[p] = v.float()
    return {"s1": s1, "s1_valid": valid, "attn": attn, "masks": threshold_attention(attn, mass), "mass": mass,
            "products": prods, "ids": [str(s.get("id", i)) for s, i in zip(samples, indices)]}


def _lcci_cmap() -> tuple[ListedColormap, BoundaryNorm]:
    n = len(LCCI_CODES)
    base = plt.get_cmap("tab20", 20)
    cmap = ListedColormap([base(i % 20) for i in range(n)]).with_extremes(bad="white")
    return cmap, BoundaryNorm(np.arange(n + 1) - 0.5, n)


def _rgb(img: np.ndarray) -> np.ndarray:
    """(3, H, W) reflectance 0..1 with NaN -> (H, W, 3) display image (2-98 % stretch, NaN white)."""
    rgb = np.moveaxis(np.asarray(img, dtype=np.float32), 0, -1)
    finite = rgb[np.isfinite(rgb)]
    lo, hi = (np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0))
    out = np.clip((rgb - lo) / max(hi - lo, 1e-6), 0, 1)
    out[~np.isfinite(rgb).all(-1)] = 1.0
    return out


def _show_product(ax, key: str, value: np.ndarray, vmax: float | None) -> None:
    from sarssl.plots import show_worldcover

    if key == "s2rgb":
        ax.imshow(_rgb(value), interpolation="nearest")
    elif key == "worldcover":
        show_worldcover(ax, value)
    elif key == "lcci":
        cmap, norm = _lcci_cmap()
        ax.imshow(np.ma.masked_array(value, mask=value == IGNORE_INDEX), cmap=cmap, norm=norm, interpolation="nearest")
    else:
        name, lo, hi = _CMAPS.get(key, ("viridis", None, None))
        cmap = plt.get_cmap(name).with_extremes(bad="white")
        ax.imshow(np.ma.masked_invalid(value), cmap=cmap, vmin=lo, vmax=hi if hi is not None else vmax,
                  interpolation="nearest")


def plot_attention_grid(result: dict, channel: str = "vv_summer", mean_db=None, std_db=None,
                        thresholded: bool = False, heads: Sequence[int] | None = None,
                        products: Sequence[str] | None = None, panel: float = 1.6):
    """The study's attention figure: one row per chip (from :func:`collect_chips`).

    Columns: ``channel`` of the SAR input (dB when ``mean_db``/``std_db`` are given), each head's CLS
    attention (``thresholded=False``: the map, inferno, with its ``mass`` set outlined in cyan;
    ``thresholded=True``: the SAR with everything outside the set darkened), then the products.
    Biomass shares one colour scale over all rows; tree cover is 0..100 %, built 0..1.
    """
    if channel not in INPUT_CHANNELS:
        raise ValueError(f"channel {channel!r} is not an input channel; expected one of {INPUT_CHANNELS}")
    attn, masks = result["attn"].numpy(), result["masks"].numpy()
    b, n_heads, h, w = attn.shape
    heads = list(range(n_heads)) if heads is None else [int(k) for k in heads]
    bad = [k for k in heads if not 0 <= k < n_heads]
    if bad:
        raise IndexError(f"heads {bad} out of range: the encoder has {n_heads} heads")
    prods = result.get("products", {})
    products = [p for p in (PRODUCT_COLUMNS if products is None else products) if p in prods]
    db = to_db(result["s1"], result["s1_valid"], mean_db, std_db)[:, INPUT_CHANNELS.index(channel)]
    H, W = db.shape[-2:]
    finite = db[np.isfinite(db)]
    lo, hi = (np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0))
    vmax = {p: float(np.nanmax(prods[p].numpy())) if np.isfinite(prods[p].numpy()).any() else 1.0
            for p in products if prods[p].is_floating_point()}
    ncol = 1 + len(heads) + len(products)
    fig, axes = plt.subplots(b, ncol, figsize=(panel * ncol, panel * b + 0.5), squeeze=False)
    cell = (H / h, W / w)
    for r in range(b):
        axes[r, 0].imshow(db[r], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        axes[r, 0].set_ylabel(result["ids"][r], fontsize=7)
        for j, k in enumerate(heads):
            ax = axes[r, 1 + j]
            keep = np.kron(masks[r, k].astype(float), np.ones((int(cell[0]), int(cell[1]))))
            if thresholded:
                ax.imshow(db[r], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
                # pixel centres at integers, as imshow draws the SAR underneath
                ax.imshow(np.where(keep > 0.5, np.nan, 1.0), cmap="Greys", vmin=0, vmax=1, alpha=0.7,
                          extent=(-0.5, keep.shape[1] - 0.5, keep.shape[0] - 0.5, -0.5), interpolation="nearest")
            else:
                ax.imshow(attn[r, k], cmap="inferno", extent=(-0.5, W - 0.5, H - 0.5, -0.5), interpolation="nearest")
                if 0 < keep.mean() < 1:
                    ax.contour(np.arange(keep.shape[1]), np.arange(keep.shape[0]), keep, levels=[0.5],
                               colors="cyan", linewidths=0.8)
            ax.set_xlim(-0.5, W - 0.5)
            ax.set_ylim(H - 0.5, -0.5)
        for j, p in enumerate(products):
            _show_product(axes[r, 1 + len(heads) + j], p, prods[p][r].numpy(), vmax.get(p))
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    unit = "dB" if mean_db is not None else "norm."
    axes[0, 0].set_title(f"SAR {channel_label(channel)}\n[{unit}]", fontsize=8)
    mass = result.get("mass", 0.6)
    for j, k in enumerate(heads):
        axes[0, 1 + j].set_title(f"head {k}\n({mass:.0%} set{'' if thresholded else ': cyan'})", fontsize=8)
    for j, p in enumerate(products):
        axes[0, 1 + len(heads) + j].set_title(_TITLES.get(p, p), fontsize=8)
    fig.tight_layout()
    return fig


def compare_probes(features: Mapping[str, tuple], kinds: Mapping[str, Sequence[str]] | None = None,
                   steps: int = 300, seed: int = 0, device=None, num_threads: int | None = 1,
                   progress: bool = False) -> dict[str, pd.DataFrame]:
    """The same probe on several encoders' features: ``{encoder: (train, test) PatchFeatures}`` ->
    ``{label: probe_table}`` with one table per (encoder, feature kind).

    ``kinds`` maps an encoder to its feature kinds (default: all of ``FEATURE_KINDS`` for the first
    encoder, ``attention`` and ``embedding`` for the others, since raw SAR does not depend on the
    encoder). Labels are ``"<encoder> <kind>"`` and ``"raw SAR"``. ``num_threads`` caps torch's CPU
    threads while fitting (tiny matrix products run faster on one thread, most of all on a busy
    machine); the previous setting is restored.
    """
    from sarssl.analysis.patch_features import FEATURE_KINDS
    from sarssl.analysis.probes import probe_table

    if not features:
        raise ValueError("compare_probes: no features given")
    names = list(features)
    if kinds is None:
        kinds = {n: (FEATURE_KINDS if i == 0 else ("attention", "embedding")) for i, n in enumerate(names)}
    before = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(int(num_threads))
    tables = {}
    try:
        for name in names:
            if name not in kinds:
                continue
            train, test = features[name]
            for kind in kinds[name]:
                label = "raw SAR" if kind == "sar" else f"{name} {kind}"
                tables[label] = probe_table(train, test, feature_kinds=(kind,), steps=steps, seed=seed,
                                            device=device, progress=progress)
    finally:
        torch.set_num_threads(before)
    return tables


def probe_summary(tables: Mapping[str, pd.DataFrame], products: Sequence[str] | None = None) -> pd.DataFrame:
    """``{label: probe_table(...)}`` -> one row per (product, metric), one column per label.

    Metrics per product follow :data:`PRODUCT_METRICS` (R2 and PSNR for Sentinel-2 RGB, mIoU for land
    cover, R2 and RMSE for tree cover, biomass and built). Index: (``product`` title, ``metric``).
    """
    if not tables:
        raise ValueError("probe_summary: no tables given")
    cols = {}
    order = None
    for label, df in tables.items():
        need = {"product", "title"} | {m for ms in PRODUCT_METRICS.values() for m in ms}
        lacking = need - set(df.columns)
        if lacking:
            raise KeyError(f"probe_summary: table {label!r} lacks columns {sorted(lacking)}")
        if df["product"].duplicated().any():
            raise ValueError(f"probe_summary: table {label!r} has several rows per product "
                             "(pass one feature kind per table)")
        by = df.set_index("product")
        names = [p for p in (products or PRODUCT_COLUMNS) if p in by.index]
        order = order or names
        values = {}
        for p in names:
            for m in PRODUCT_METRICS.get(p, ()):
                values[(by.loc[p, "title"], m)] = float(by.loc[p, m])
        cols[label] = values
    out = pd.DataFrame(cols)
    out.index = pd.MultiIndex.from_tuples(out.index, names=["product", "metric"])
    return out


def plot_correlation_heatmap(corr: pd.DataFrame, title: str | None = None, titles: Mapping[str, str] | None = None):
    """Head x product table -> annotated heatmap (diverging colours, -1..1).

    Column labels add the measure from ``corr.attrs["measure"]`` when present (r or eta).
    """
    if corr.empty:
        raise ValueError("plot_correlation_heatmap: empty table")
    values = corr.to_numpy(dtype=float)
    measure = corr.attrs.get("measure", {})
    names = {**{k: v.replace("\n", " ") for k, v in _TITLES.items()}, **(titles or {})}
    labels = [f"{names.get(c, c)}\n({'η' if measure.get(c) == 'eta' else 'r'})" if c in measure else names.get(c, c)
              for c in corr.columns]
    fig, ax = plt.subplots(figsize=(1.25 * len(corr.columns) + 2, 0.45 * len(corr.index) + 1.6))
    im = ax.imshow(values, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_yticks(range(len(corr.index)), list(corr.index), fontsize=8)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values[i, j]
            ax.text(j, i, "–" if not np.isfinite(v) else f"{v:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if np.isfinite(v) and abs(v) > 0.6 else "black")
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
