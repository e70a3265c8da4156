"""Figures and small summaries for the DINO chapter: SAR multi-crop views, training curves, attention heads.

- :func:`augmentation_examples` / :func:`plot_sar_augmentations`: each SAR augmentation of
  :mod:`sarssl.data.multicrop` applied alone to one chip, shown by channel name (in dB).
- :func:`plot_multicrop`: the global and local views DINO trains on, one column per view.
- :func:`dino_curves` / :func:`plot_dino_curves` / :func:`dino_run_summary`: the ``metrics.csv`` of a
  DINO run (loss, schedules, teacher entropy against ``ln K`` with the collapse thresholds, k-NN).
- :func:`chip_attention` / :func:`plot_attention_heads`: per-head CLS attention of the last block
  with the smallest patch sets holding 60 % of the attention, next to the WorldCover label.

Every ``plot_*`` function returns its matplotlib ``Figure``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from sarssl.data.products import INPUT_CHANNELS, WORLDCOVER_NAMES

__all__ = [
    "channel_label", "to_db", "augmentation_examples", "plot_sar_augmentations", "plot_multicrop",
    "dino_curves", "dino_run_summary", "plot_dino_curves", "chip_attention", "plot_attention_heads",
]

DEFAULT_CHANNELS = ("vv_summer", "vv-vh_summer")


def channel_label(name: str) -> str:
    """``"vv-vh_summer"`` -> ``"VV−VH summer"`` (an INPUT_CHANNELS name as a figure label)."""
    if name not in INPUT_CHANNELS:
        raise ValueError(f"channel {name!r} is not an input channel; expected one of {INPUT_CHANNELS}")
    pol, season = name.split("_")
    return f"{pol.upper().replace('-', '−')} {season}"


def _channel_index(names: Sequence[str]) -> list[int]:
    for n in names:
        channel_label(n)  # validates
    return [INPUT_CHANNELS.index(n) for n in names]


def to_db(x: torch.Tensor | np.ndarray, valid=None, mean_db=None, std_db=None) -> np.ndarray:
    """Normalised (12, H, W) (or (B, 12, H, W)) -> dB with NaN where ``valid`` is False.

    Without ``mean_db``/``std_db`` the values stay in normalised units (NaN still applied).
    """
    x = np.asarray(x, dtype=np.float32).copy()
    c_axis = x.ndim - 3
    if x.shape[c_axis] != len(INPUT_CHANNELS):
        raise ValueError(f"to_db: expected {len(INPUT_CHANNELS)} channels on axis {c_axis}, got shape {x.shape}")
    if (mean_db is None) != (std_db is None):
        raise ValueError("to_db: give both mean_db and std_db (12 values each) or neither")
    if mean_db is not None:
        shape = [1] * x.ndim
        shape[c_axis] = -1
        x = x * np.asarray(std_db, np.float32).reshape(shape) + np.asarray(mean_db, np.float32).reshape(shape)
    if valid is not None:
        x[~np.asarray(valid, dtype=bool)] = np.nan
    return x


# ------------------------------------------------------------------------------------------------
# multi-crop and augmentations
# ------------------------------------------------------------------------------------------------
def augmentation_examples(s1: torch.Tensor, s1_valid: torch.Tensor | None, std_db, seed: int = 0,
                          db_offset: float = 0.5, speckle_looks: float = 4.0, rotate_deg: float = 10.0,
                          drop_group: str = "vh", season: str = "summer") -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """Each SAR augmentation applied alone to one chip: ``[(title, x (12, H, W), valid (12, H, W))]``.

    ``s1`` is the dataset's normalised chip, ``std_db`` the 12 per-channel std in dB. The list is:
    original; flip + 90° rotation; small rotation; +``db_offset`` dB on VV and VH; fresh speckle
    (``speckle_looks`` looks); channel-group dropout of ``drop_group``; a season view (every season
    slot shows ``season``). Draws come from a generator seeded with ``seed``.
    """
    from sarssl.data.multicrop import CHANNEL_GROUPS, add_db_offset, add_speckle, drop_channel_group, \
        remap_seasons, rotate_small
    from sarssl.data.products import SEASONS

    x = torch.as_tensor(s1, dtype=torch.float32)
    if x.ndim != 3 or x.shape[0] != len(INPUT_CHANNELS):
        raise ValueError(f"augmentation_examples: s1 must be ({len(INPUT_CHANNELS)}, H, W), got {tuple(x.shape)}")
    v = torch.ones_like(x, dtype=torch.bool) if s1_valid is None else torch.as_tensor(s1_valid).bool()
    std = torch.as_tensor(np.asarray(std_db, np.float32))
    if drop_group not in CHANNEL_GROUPS:
        raise ValueError(f"augmentation_examples: drop_group={drop_group!r}, expected one of {tuple(CHANNEL_GROUPS)}")
    if season not in SEASONS:
        raise ValueError(f"augmentation_examples: season={season!r}, expected one of {SEASONS}")
    g = torch.Generator().manual_seed(int(seed))
    out = [("original", x, v)]
    out.append(("h-flip + rot 90°", torch.rot90(x.flip(-1), 1, (-2, -1)), torch.rot90(v.flip(-1), 1, (-2, -1))))
    out.append((f"rotate {rotate_deg:g}°", *rotate_small(x, v, rotate_deg)))
    out.append((f"{db_offset:+g} dB offset", add_db_offset(x, std, db_offset, db_offset), v))
    out.append((f"fresh speckle (L={speckle_looks:g})", add_speckle(x, std, speckle_looks, g), v))
    out.append((f"drop {drop_group.upper() if drop_group in ('vv', 'vh') else drop_group}",
                *drop_channel_group(x, v, drop_group)))
    src = torch.full((len(SEASONS),), SEASONS.index(season), dtype=torch.long)
    out.append((f"season view: {season}", *remap_seasons(x, v, src)))
    return [(t, xi.where(vi, torch.zeros(())), vi) for t, xi, vi in out]


def _shared_limits(values: list[np.ndarray]) -> tuple[float, float]:
    finite = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.array([])
    if finite.size == 0:
        return -1.0, 1.0
    lo, hi = np.percentile(finite, [2, 98])
    return float(lo), float(hi) if hi > lo else float(lo) + 1.0


def _views_grid(views: Sequence[tuple[str, np.ndarray]], channels: Sequence[str], unit: str, suptitle: str | None,
                panel: float = 1.9):
    idx = _channel_index(channels)
    fig, axes = plt.subplots(len(channels), len(views), figsize=(panel * len(views) + 1.2, panel * len(channels) + 0.5),
                             squeeze=False)
    for r, (name, ci) in enumerate(zip(channels, idx)):
        lo, hi = _shared_limits([v[ci] for _, v in views])
        # invalid (dropped or no-data) pixels in pale red
        cmap = plt.get_cmap("gray" if "-" not in name else "viridis").with_extremes(bad="#f4a6a6")
        for c, (title, v) in enumerate(views):
            ax = axes[r, c]
            im = ax.imshow(v[ci], cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
            if r == 0:
                ax.set_title(title, fontsize=8)
            if c == 0:
                ax.set_ylabel(channel_label(name), fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        fig.colorbar(im, ax=list(axes[r]), shrink=0.85, pad=0.01, label=f"{channel_label(name)} [{unit}]")
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return fig


def plot_sar_augmentations(examples: Sequence[tuple[str, torch.Tensor, torch.Tensor]],
                           channels: Sequence[str] = DEFAULT_CHANNELS, mean_db=None, std_db=None,
                           title: str | None = "SAR augmentations, each alone (pale red: masked out)"):
    """One column per :func:`augmentation_examples` entry, one row per channel (dB when mean/std are given)."""
    views = [(t, to_db(x, v, mean_db, std_db)) for t, x, v in examples]
    return _views_grid(views, channels, "dB" if mean_db is not None else "normalised", title)


def plot_multicrop(crops: Sequence[torch.Tensor], valids: Sequence[torch.Tensor], n_global: int = 2,
                   channels: Sequence[str] = DEFAULT_CHANNELS, mean_db=None, std_db=None,
                   title: str | None = "multi-crop views of one chip"):
    """One column per view (globals first, titled with their size in pixels), one row per channel."""
    if len(crops) != len(valids):
        raise ValueError(f"plot_multicrop: {len(crops)} crops but {len(valids)} masks")
    if not 1 <= n_global <= len(crops):
        raise ValueError(f"plot_multicrop: n_global={n_global} for {len(crops)} crops")
    views = []
    for i, (x, v) in enumerate(zip(crops, valids)):
        kind = f"global {i + 1}" if i < n_global else f"local {i - n_global + 1}"
        views.append((f"{kind} ({x.shape[-1]} px)", to_db(x, v, mean_db, std_db)))
    return _views_grid(views, channels, "dB" if mean_db is not None else "normalised", title)


# ------------------------------------------------------------------------------------------------
# training curves
# ------------------------------------------------------------------------------------------------
def dino_curves(metrics: pd.DataFrame | str | Path) -> pd.DataFrame:
    """``metrics.csv`` of a DINO run as a DataFrame (numeric columns, sorted by step)."""
    df = pd.read_csv(metrics) if not isinstance(metrics, pd.DataFrame) else metrics.copy()
    if "step" not in df or "loss" not in df:
        raise ValueError(f"dino_curves: metrics need 'step' and 'loss' columns, got {list(df.columns)}")
    df = df.apply(pd.to_numeric, errors="coerce")
    return df.sort_values("step").reset_index(drop=True)


def dino_run_summary(metrics, out_dim: int, collapse_high: float = 0.95, collapse_low: float = 0.05,
                     collapse_batch_low: float = 0.25) -> dict:
    """Final numbers of a run: loss, teacher entropy ratio, prototypes used per image and across a batch, the
    collapse status (batch collapse too when the run logged ``teacher_batch_usage``), k-NN accuracy and baseline."""
    from sarssl.models.collapse import collapse_status

    df = dino_curves(metrics)
    last = df.iloc[-1]
    out = {"steps": int(last["step"]), "epochs": float(last.get("epoch", float("nan"))),
           "final_loss": float(last["loss"])}
    if "teacher_entropy" in df and df["teacher_entropy"].notna().any():
        ent = float(df["teacher_entropy"].dropna().iloc[-1])
        usage = None
        if "teacher_batch_usage" in df and df["teacher_batch_usage"].notna().any():
            usage = float(df["teacher_batch_usage"].dropna().iloc[-1])
            out.update(batch_usage=usage, image_prototypes=math.exp(ent))
            if "teacher_batch_prototypes" in df:
                out["batch_prototypes"] = float(df["teacher_batch_prototypes"].dropna().iloc[-1])
        out.update(teacher_entropy=ent, ln_k=math.log(out_dim), entropy_ratio=ent / math.log(out_dim),
                   collapse=collapse_status(ent, out_dim, collapse_high, collapse_low, usage, collapse_batch_low))
    if "knn_top1" in df and df["knn_top1"].notna().any():
        knn = df.dropna(subset=["knn_top1"])
        ep = knn["epoch"] if "epoch" in knn else knn["step"]
        out.update(knn_first_epoch=float(ep.iloc[0]), knn_final_epoch=float(ep.iloc[-1]))
        out.update(knn_first=float(knn["knn_top1"].iloc[0]), knn_final=float(knn["knn_top1"].iloc[-1]),
                   knn_best=float(knn["knn_top1"].max()),
                   knn_baseline=float(knn["knn_majority_baseline"].iloc[-1]) if "knn_majority_baseline" in knn else float("nan"))
        out["knn_gain"] = out["knn_final"] - out["knn_baseline"]
    return out


def _twin_curves(ax, df: pd.DataFrame, x, marker, left: tuple, right: tuple) -> None:
    """Column ``left`` on ``ax`` and ``right`` (dashed) on a twin y axis, each ``(column, colour, label[, ylabel])``
    and drawn only when the column exists; one legend for both when the right one is drawn."""
    key, color, label, *ylabel = left
    if key in df:
        ax.plot(x, df[key], color=color, marker=marker, label=label)
        ax.set_ylabel(ylabel[0] if ylabel else label)
    key, color, label, *ylabel = right
    if key in df:
        ax2 = ax.twinx()
        ax2.plot(x, df[key], color=color, ls="--", marker=marker, label=label)
        ax2.set_ylabel(ylabel[0] if ylabel else label)
        ax.legend(handles=ax.get_lines() + ax2.get_lines(), fontsize=8, loc="center right")


def plot_dino_curves(metrics, out_dim: int, collapse_high: float = 0.95, collapse_low: float = 0.05,
                     knn_controls: dict[str, float] | None = None):
    """Loss; lr and weight decay; teacher momentum and temperature; teacher entropy against ``ln K``
    with the collapse thresholds; k-NN land-cover accuracy per epoch against the majority baseline
    and optional ``knn_controls`` (name -> accuracy, drawn as horizontal lines, e.g. a random encoder)."""
    df = dino_curves(metrics)
    x, xlabel = df["step"], "optimiser step"
    mk = "." if len(df) <= 30 else None  # short runs: show the logged points
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    ax = axes[0, 0]
    ax.plot(x, df["loss"], color="C0", marker=mk)
    ax.set_title("DINO loss (cross-entropy, nats)")
    _twin_curves(axes[0, 1], df, x, mk, ("lr", "C1", "learning rate"), ("wd", "C2", "weight decay"))
    axes[0, 1].set_title("schedules")
    _twin_curves(axes[0, 2], df, x, mk, ("teacher_momentum", "C3", "teacher EMA momentum", "momentum"),
                 ("teacher_temp", "C4", "teacher temperature", "temperature"))
    axes[0, 2].set_title("teacher")
    ax = axes[1, 0]
    ln_k = math.log(out_dim)
    if "teacher_entropy" in df:
        ax.plot(x, df["teacher_entropy"], color="C0", marker=mk, label="teacher entropy")
    ax.axhline(ln_k, color="k", lw=1, label=f"ln K = {ln_k:.2f} (K = {out_dim})")
    ax.axhline(collapse_high * ln_k, color="C3", ls="--", lw=1, label=f"{collapse_high:g} ln K: uniform collapse")
    ax.axhline(collapse_low * ln_k, color="C1", ls="--", lw=1, label=f"{collapse_low:g} ln K: one-hot collapse")
    ax.set_ylim(0, ln_k * 1.05)
    ax.set_title("teacher entropy (nats)")
    ax.legend(fontsize=7, loc="lower left")
    ax = axes[1, 1]
    if "knn_top1" in df and df["knn_top1"].notna().any():
        knn = df.dropna(subset=["knn_top1"])
        xe = knn["epoch"] if "epoch" in knn else knn["step"]
        ax.plot(xe, knn["knn_top1"], "o-", color="C0", label="k-NN top-1 (teacher CLS)")
        if "knn_majority_baseline" in knn:
            ax.plot(xe, knn["knn_majority_baseline"], color="0.4", ls="--", marker=mk, label="majority class")
        for i, (name, acc) in enumerate((knn_controls or {}).items()):
            ax.axhline(float(acc), color=f"C{i + 1}", ls=":", lw=1.5, label=name)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
        ax.set_ylim(0, 1)
    else:
        ax.text(0.5, 0.5, "no k-NN monitor in this run", ha="center", va="center", transform=ax.transAxes)
    ax.set_title("k-NN land-cover accuracy (val chips)")
    ax = axes[1, 2]
    if "grad_norm" in df:
        ax.plot(x, df["grad_norm"], color="C5", marker=mk)
    ax.set_title("student gradient norm")
    for a in (axes[0, 0], axes[0, 1], axes[0, 2], axes[1, 0], axes[1, 2]):
        a.set_xlabel(xlabel)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------
# attention
# ------------------------------------------------------------------------------------------------
def chip_attention(encoder: torch.nn.Module, dataset, indices: Sequence[int], mass: float = 0.6,
                   block: int = -1, label_key: str = "worldcover") -> dict:
    """Per-head CLS attention of ``blocks[block]`` on chips ``indices`` of ``dataset`` (canonical samples).

    Returns ``{"s1" (B, 12, H, W) normalised, "s1_valid", "labels" (B, H, W) or None, "attn"
    (B, heads, h, w) summing to 1 over patches, "masks" (B, heads, h, w) bool (the ``mass`` sets),
    "ids"}``.
    """
    from sarssl.analysis.attention import cls_attention_shares, threshold_attention

    samples = [dataset[int(i)] for i in indices]
    if not samples:
        raise ValueError("chip_attention: no chip indices given")
    s1 = torch.stack([s["s1"] for s in samples])
    valid = torch.stack([s["s1_valid"] for s in samples]) if "s1_valid" in samples[0] else torch.ones_like(s1, dtype=torch.bool)
    labels = torch.stack([s[label_key] for s in samples]) if label_key in samples[0] else None
    attn = cls_attention_shares(encoder, s1, block=block)
    return {"s1": s1, "s1_valid": valid, "labels": labels, "attn": attn,
            "masks": threshold_attention(attn, mass), "mass": mass,
            "ids": [str(s.get("id", i)) for s, i in zip(samples, indices)]}


def plot_attention_heads(result: dict, channel: str = "vv_summer", mean_db=None, std_db=None):
    """Rows: chips. Columns: ``channel`` (dB), WorldCover, then each head's attention with the outline of
    its ``mass`` set (from :func:`chip_attention`)."""
    from matplotlib.patches import Patch

    from sarssl.data.products import WORLDCOVER_COLORS
    from sarssl.plots import show_worldcover

    attn, masks = result["attn"].numpy(), result["masks"].numpy()
    b, heads, h, w = attn.shape
    ci = _channel_index([channel])[0]
    db = to_db(result["s1"], result["s1_valid"], mean_db, std_db)[:, ci]
    labels = result.get("labels")
    H, W = db.shape[-2:]
    ncol = 2 + heads
    fig, axes = plt.subplots(b, ncol, figsize=(2.0 * ncol + 1.5, 2.0 * b + 0.4), squeeze=False)
    lo, hi = _shared_limits([db])
    present = set()
    for r in range(b):
        ax = axes[r, 0]
        ax.imshow(db[r], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_ylabel(result["ids"][r], fontsize=7)
        ax = axes[r, 1]
        if labels is not None:
            lab = labels[r].numpy()
            show_worldcover(ax, lab)
            present |= set(np.unique(lab[lab >= 0]).tolist())
        for k in range(heads):
            ax = axes[r, 2 + k]
            ax.imshow(attn[r, k], cmap="inferno", extent=(0, W, H, 0), interpolation="nearest")
            up = np.kron(masks[r, k].astype(float), np.ones((H // h, W // w)))
            if 0 < up.mean() < 1:
                ax.contour(np.arange(up.shape[1]) + 0.5, np.arange(up.shape[0]) + 0.5, up, levels=[0.5],
                           colors="cyan", linewidths=1.0)
            ax.set_xlim(0, W)
            ax.set_ylim(H, 0)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_title(f"{channel_label(channel)} [{'dB' if mean_db is not None else 'norm.'}]", fontsize=9)
    axes[0, 1].set_title("WorldCover", fontsize=9)
    for k in range(heads):
        axes[0, 2 + k].set_title(f"head {k + 1} ({result['mass']:.0%} set: cyan)", fontsize=8)
    if present:
        handles = [Patch(color=WORLDCOVER_COLORS[i], label=WORLDCOVER_NAMES[i]) for i in sorted(present)]
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06 if present else 0, 1, 1))
    return fig
