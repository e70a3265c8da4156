"""Figures the chapters share: channels by name, land-cover maps, chip maps and product galleries.

Every function returns the matplotlib ``Figure`` it drew, so chapters can show or save it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.patches import Patch, Polygon
from matplotlib.ticker import NullFormatter

from sarssl.data.products import IGNORE_INDEX, INPUT_CHANNELS, WORLDCOVER_COLORS, WORLDCOVER_NAMES
from sarssl.preprocess.plots import OKABE_ITO, categorical_color

# Categorical colours come from the colour-blind-safe Okabe-Ito palette; WorldCover maps keep the
# product's official legend colours (WORLDCOVER_COLORS).
SPLIT_COLORS = {"train": OKABE_ITO[0], "val": OKABE_ITO[1], "test": OKABE_ITO[2]}


def worldcover_cmap() -> tuple[ListedColormap, BoundaryNorm]:
    """Colour map and norm for WorldCover class indices 0..10 (the official legend colours)."""
    cmap = ListedColormap(WORLDCOVER_COLORS)
    cmap.set_bad("white")
    return cmap, BoundaryNorm(np.arange(len(WORLDCOVER_COLORS) + 1) - 0.5, cmap.N)


def show_worldcover(ax, classes: np.ndarray, legend: bool = False) -> None:
    """Draw a WorldCover class-index map (IGNORE_INDEX shown white) on ``ax``."""
    cmap, norm = worldcover_cmap()
    classes = np.asarray(classes).astype(np.int64)
    masked = np.ma.masked_array(classes, mask=classes == IGNORE_INDEX)
    ax.imshow(masked, cmap=cmap, norm=norm, interpolation="nearest")
    if legend:
        present = sorted(set(np.unique(masked.compressed()).tolist()))
        handles = [Patch(color=WORLDCOVER_COLORS[i], label=WORLDCOVER_NAMES[i]) for i in present]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8, frameon=False)


def _db_limits(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return -1.0, 1.0
    return tuple(np.percentile(finite, [2, 98]).tolist())


def plot_channels(channels: np.ndarray, names: Sequence[str] = INPUT_CHANNELS, title: str | None = None,
                  ncols: int = 4, unit: str = "dB"):
    """Grid of input channels, one panel per channel titled by name.

    Channels of the same quantity (the part of the name before ``_``, e.g. ``vv``) share a colour scale.

    Args:
        channels: ``(C, H, W)`` values (NaN = no-data, drawn white).
        names: ``C`` channel names.
    """
    channels = np.asarray(channels, dtype=np.float32)
    if channels.shape[0] != len(names):
        raise ValueError(f"plot_channels: {channels.shape[0]} channels but {len(names)} names")
    nrows = int(np.ceil(len(names) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 2.5 * nrows), squeeze=False)
    groups = {}
    for i, name in enumerate(names):
        groups.setdefault(name.split("_")[0], []).append(i)
    for group, idx in groups.items():
        lo, hi = _db_limits(channels[idx])
        for i in idx:
            ax = axes.flat[i]
            im = ax.imshow(channels[i], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_title(names[i], fontsize=9)
        fig.colorbar(im, ax=[axes.flat[i] for i in idx], shrink=0.8, label=f"{group} [{unit}]")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return fig


def plot_chip_map(polygons: Sequence[np.ndarray], splits: Sequence[str], title: str = "chips by split", unit: str = "km"):
    """Map of chip footprints coloured by split.

    Args:
        polygons: one ``(K, 2)`` array of x, y vertices (metres) per chip.
        splits: the split name of each chip.
    """
    scale = 1e-3 if unit == "km" else 1.0
    fig, ax = plt.subplots(figsize=(6, 6))
    for poly, split in zip(polygons, splits):
        ax.add_patch(Polygon(np.asarray(poly) * scale, closed=True, facecolor=SPLIT_COLORS.get(split, "grey"),
                             edgecolor="white", linewidth=0.3))
    allxy = np.concatenate([np.asarray(p) for p in polygons]) * scale
    ax.set_xlim(allxy[:, 0].min(), allxy[:, 0].max())
    ax.set_ylim(allxy[:, 1].min(), allxy[:, 1].max())
    ax.set_aspect("equal")
    ax.set_xlabel(f"easting [{unit}]")
    ax.set_ylabel(f"northing [{unit}]")
    counts = {s: int(np.sum(np.asarray(splits) == s)) for s in SPLIT_COLORS}
    ax.legend(handles=[Patch(color=c, label=f"{s} ({counts[s]})") for s, c in SPLIT_COLORS.items()],
              loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    ax.set_title(title)
    return fig


def plot_gallery(rows: Sequence[Mapping[str, np.ndarray]], columns: Mapping[str, dict], row_labels: Sequence[str] | None = None):
    """A grid of chips (rows) by products (columns).

    Args:
        rows: per chip, product key -> array to draw (``(H, W)`` or ``(H, W, 3)`` for RGB).
        columns: product key -> ``imshow`` options plus ``"title"``; ``{"kind": "worldcover"}`` draws classes.
        row_labels: a label per row (e.g. the chip identifier).
    """
    keys = list(columns)
    fig, axes = plt.subplots(len(rows), len(keys), figsize=(2.2 * len(keys), 2.2 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        for c, key in enumerate(keys):
            ax = axes[r, c]
            opts = dict(columns[key])
            title = opts.pop("title", key)
            if opts.pop("kind", None) == "worldcover":
                show_worldcover(ax, row[key])
            else:
                im = ax.imshow(row[key], interpolation="nearest", **opts)
                if np.asarray(row[key]).ndim == 2 and r == len(rows) - 1:
                    fig.colorbar(im, ax=ax, orientation="horizontal", fraction=0.05, pad=0.04)
            if r == 0:
                ax.set_title(title, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        if row_labels is not None:
            axes[r, 0].set_ylabel(row_labels[r], fontsize=7)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# Fine-tuning: label-efficiency curves, per-class IoU, predictions next to the ground truth
# --------------------------------------------------------------------------------------------
#: the sweep's arms in Okabe-Ito: random features orange, supervised from scratch black, MAE blue, DINO vermillion
METHOD_COLORS = {"random": OKABE_ITO[1], "scratch": OKABE_ITO[7], "mae": OKABE_ITO[0], "dino": OKABE_ITO[3]}
METRIC_LABELS = {"rmse": "RMSE", "mae": "MAE", "r2": "R$^2$", "miou": "mIoU", "accuracy": "overall accuracy"}


def plot_label_efficiency(df, metric: str, task: str | None = None, region: str = "in", ax=None,
                          spread: str = "std", title: str | None = None, unit: str = "",
                          pool: str | None = None):
    """One metric against the number of labelled tiles (log x), a line per method (mean over seeds)
    with a band of the spread over seeds (``"std"`` or ``"minmax"``).

    Args:
        df: sweep rows (:func:`sarssl.train.sweep.read_results`), filtered by ``task`` and ``region``.
        pool: the tokens the probes read (``mean``, ``cls``); default the pool every arm has
            (:func:`sarssl.train.sweep.headline_pool`), the one the verdicts use. Rows of other pools
            are not drawn: pooling them would count two probes of one seed as two seeds.
    """
    from sarssl.train.sweep import headline_pool

    d = df if task is None else df[df["task"] == task]
    d = d[d["region"] == region] if "region" in d.columns else d
    d = d[d[metric].notna()] if metric in d.columns else d.iloc[:0]
    if d.empty:
        raise ValueError(f"no rows with metric {metric!r} for task {task!r} and region {region!r}")
    if "pool" in d.columns:
        pool = pool or headline_pool(d)
        d = d[d["pool"] == pool]
        if d.empty:
            raise ValueError(f"no rows of pool {pool!r} with metric {metric!r} for task {task!r}")
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 3.6))
    fig = ax.figure
    for i, (method, g) in enumerate(d.groupby("method", sort=False)):
        s = g.groupby("n_tiles")[metric].agg(["mean", "std", "min", "max", "count"]).sort_index()
        color = METHOD_COLORS.get(str(method), categorical_color(i))
        x = s.index.to_numpy(dtype=float)
        ax.plot(x, s["mean"], marker="o", color=color, label=f"{method} ({int(s['count'].max())} seeds)")
        lo, hi = ((s["mean"] - s["std"].fillna(0), s["mean"] + s["std"].fillna(0)) if spread == "std"
                  else (s["min"], s["max"]))
        ax.fill_between(x, lo, hi, color=color, alpha=0.2, linewidth=0)
    ax.set_xscale("log")
    ticks = np.unique(d["n_tiles"].to_numpy(dtype=float))
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("labelled tiles")
    label = METRIC_LABELS.get(metric, metric)
    ax.set_ylabel(f"{label} [{unit}]" if unit else label)
    ax.set_title(title or " ".join(str(v) for v in (task, f"({region}-region)" if region else "") if v))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
    return fig


def plot_sweep(df, task: str, metrics: Sequence[str], regions: Sequence[str] = ("in", "out"), units=None):
    """A grid of :func:`plot_label_efficiency` panels: rows = regions present, columns = metrics."""
    regions = [r for r in regions if (df["region"] == r).any()]
    fig, axes = plt.subplots(len(regions), len(metrics), figsize=(4.6 * len(metrics), 3.4 * len(regions)),
                             squeeze=False)
    for i, region in enumerate(regions):
        for j, metric in enumerate(metrics):
            plot_label_efficiency(df, metric, task, region, ax=axes[i, j], unit=(units or {}).get(metric, ""),
                                  title=f"{task}: {METRIC_LABELS.get(metric, metric)} ({region}-region)")
    fig.tight_layout()
    return fig


def plot_per_class_iou(df, task: str = "landcover", limit_pct: float | None = None, region: str = "in",
                       class_names: Sequence[str] = WORLDCOVER_NAMES, ax=None):
    """Grouped bars of per-class IoU (mean over seeds, error bar = std) per method, at ``limit_pct``
    (default: the largest fraction). Classes never present are left out."""
    from sarssl.train.metrics import iou_column

    d = df[(df["task"] == task) & (df["region"] == region)]
    if d.empty:
        raise ValueError(f"no rows for task {task!r} and region {region!r}")
    pct = float(d["limit_pct"].max()) if limit_pct is None else float(limit_pct)
    d = d[np.isclose(d["limit_pct"].astype(float), pct)]
    cols = [(n, iou_column(n)) for n in class_names if iou_column(n) in d.columns and d[iou_column(n)].notna().any()]
    if not cols:
        raise ValueError("the rows hold no per-class IoU columns (iou_<class>)")
    methods = list(dict.fromkeys(d["method"]))
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(cols) + 2), 3.8))
    fig = ax.figure
    width = 0.8 / len(methods)
    x = np.arange(len(cols))
    for i, m in enumerate(methods):
        g = d[d["method"] == m]
        mean = [g[c].mean() for _, c in cols]
        std = [g[c].std() if len(g) > 1 else 0.0 for _, c in cols]
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, mean, width, yerr=std, capsize=2,
               color=METHOD_COLORS.get(str(m), categorical_color(i)), label=str(m))
    ax.set_xticks(x)
    ax.set_xticklabels([n for n, _ in cols], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("IoU")
    ax.set_ylim(0, 1)
    ax.set_title(f"{task}: per-class IoU at {pct:g}% labels ({region}-region)")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def plot_predictions(rows: Sequence[Mapping], kind: str = "segmentation", channel: str = "vv_summer",
                     channels: Sequence[str] = INPUT_CHANNELS, unit: str = "", titles: Sequence[str] | None = None):
    """The seed figure: per chip (row) the SAR input channel, the ground truth and the prediction.

    Args:
        rows: from :func:`sarssl.train.evaluation.predict_examples` (``s1``, ``target``, ``pred``; for
            tile targets also ``target_value``/``pred_value``).
        kind: ``"segmentation"`` (WorldCover colours), ``"pixel"`` or ``"tile"`` (shared colour scale).
        channel: input channel shown (by name).
    """
    if channel not in channels:
        raise ValueError(f"unknown channel {channel!r}: expected one of {list(channels)}")
    c = list(channels).index(channel)
    fig, axes = plt.subplots(len(rows), 3, figsize=(7.5, 2.4 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        sar = np.asarray(row["s1"])[c]
        axes[r, 0].imshow(sar, cmap="gray", vmin=np.percentile(sar, 2), vmax=np.percentile(sar, 98))
        if kind == "segmentation":
            show_worldcover(axes[r, 1], row["target"])
            show_worldcover(axes[r, 2], row["pred"], legend=(r == 0))
        else:
            t = np.asarray(row["target"], dtype=np.float32)
            p = np.asarray(row["pred"], dtype=np.float32)
            both = np.concatenate([t[np.isfinite(t)].ravel(), p[np.isfinite(p)].ravel()])
            lo, hi = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
            axes[r, 1].imshow(np.ma.masked_invalid(t), cmap="viridis", vmin=lo, vmax=hi)
            im = axes[r, 2].imshow(np.ma.masked_invalid(p), cmap="viridis", vmin=lo, vmax=hi)
            fig.colorbar(im, ax=axes[r, 2], fraction=0.046, pad=0.04, label=unit)
            if kind == "tile":
                axes[r, 1].set_xlabel(f"tile mean {row.get('target_value', np.nan):.1f} {unit}", fontsize=8)
                axes[r, 2].set_xlabel(f"predicted {row.get('pred_value', np.nan):.1f} {unit}", fontsize=8)
        head = titles or (f"SAR input ({channel}, normalised)", "ground truth", "prediction")
        if r == 0:
            for j in range(3):
                axes[r, j].set_title(head[j], fontsize=9)
        axes[r, 0].set_ylabel(str(row.get("id", "")), fontsize=7)
        for j in range(3):
            axes[r, j].set_xticks([])
            axes[r, j].set_yticks([])
    fig.tight_layout()
    return fig
