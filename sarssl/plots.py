"""Figures the chapters share: channels by name, land-cover maps, chip maps and product galleries.

Every function returns the matplotlib ``Figure`` it drew, so chapters can show or save it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.patches import Patch, Polygon

from sarssl.data.products import IGNORE_INDEX, INPUT_CHANNELS, WORLDCOVER_COLORS, WORLDCOVER_NAMES

SPLIT_COLORS = {"train": "#4c72b0", "val": "#dd8452", "test": "#55a868"}


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
