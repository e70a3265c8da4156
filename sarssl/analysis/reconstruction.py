"""MAE reconstructions for display and scoring: load a run's MAE, mask, reconstruct, de-normalise, plot.

Images are ``(B, C, H, W)`` tensors of normalised channels (the dataset's ``"s1"``) with a bool
validity mask of the same shape; display functions take ``(C, H, W)`` arrays in dB (NaN = no-data).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from sarssl.data.products import INPUT_CHANNELS
from sarssl.models.mae import MAE, reconstruct


def load_mae(run_dir: str | Path) -> MAE:
    """The full MAE (encoder + decoder) of a ``run_pretrain("mae", ...)`` folder, in eval mode on CPU.

    Rebuilt from the resolved configuration saved in ``run.json`` (never from today's profiles;
    see :func:`sarssl.train.pretrain.load_run_config`) and loaded strictly from ``checkpoint.pt``.
    """
    from sarssl.models.mae import mae_from_config
    from sarssl.train.checkpoint import CHECKPOINT_NAME, load_checkpoint
    from sarssl.train.pretrain import load_run_config

    run_dir = Path(run_dir)
    mae, _ = mae_from_config(load_run_config(run_dir, "mae"), init_weights=False)
    state = load_checkpoint(run_dir / CHECKPOINT_NAME)["task"]
    prefix = "mae."
    mae.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, strict=True)
    return mae.eval()


def masking_noise(mae: MAE, batch: int, seed: int = 0) -> torch.Tensor:
    """Seeded uniform noise (B, L) so the same patches are masked for every ratio (nested masks)."""
    return torch.rand(batch, mae.num_patches, generator=torch.Generator().manual_seed(seed))


def reconstructions_db(mae: MAE, x: torch.Tensor, valid: torch.Tensor, invert: Callable[[torch.Tensor], torch.Tensor],
                       ratios: Sequence[float] = (0.5, 0.75, 0.9), seed: int = 0) -> dict[float, dict[str, np.ndarray]]:
    """Reconstruct ``x`` (B, C, H, W) at each mask ratio and de-normalise to dB for display.

    Args:
        invert: normalised -> dB (``dataset.norm.invert``).
        seed: one noise draw for all ratios, so the patches masked at 0.5 are also masked at 0.75 and 0.9.

    Returns:
        ``{ratio: {"input", "masked_input", "reconstruction", "prediction": (B, C, H, W) dB with
        no-data NaN, "mask": (B, H, W) bool True = masked, "loss": float}}``, plus ``"patch_mean"``
        (every pixel set to its patch's true mean, the zero prediction) with normalised-pixel targets.
    """
    noise = masking_noise(mae, x.shape[0], seed)
    nodata = ~valid.bool()
    original = invert(x.float()).masked_fill(nodata, float("nan"))
    out = {}
    for ratio in ratios:
        r = reconstruct(mae, x, mask_ratio=ratio, noise=noise, valid=valid)
        entry = {"input": original.numpy()}
        for key in ("masked_input", "reconstruction", "prediction"):
            entry[key] = invert(r[key]).masked_fill(nodata, float("nan")).numpy()
        _, _, stats = mae.targets(x, valid)
        if stats is not None:  # the reference: predict 0 in normalised-pixel units = each patch's own mean
            patch_mean = mae.unpatchify(stats[0].expand(-1, -1, mae.patch_size**2 * mae.in_chans).contiguous())
            entry["patch_mean"] = invert(patch_mean).masked_fill(nodata, float("nan")).numpy()
        entry["mask"] = r["mask"][:, 0].bool().numpy()
        entry["loss"] = float(r["loss"])
        out[float(ratio)] = entry
    return out


def reconstruction_rmse(results: Mapping[float, Mapping[str, np.ndarray]],
                        names: Sequence[str] = INPUT_CHANNELS):
    """RMSE in dB on the masked, valid pixels per ratio and channel, MAE vs a visible-mean baseline.

    ``baseline``: every masked pixel of a chip and channel gets the mean of its visible valid pixels
    (no knowledge of the hidden patch). ``patch_mean`` (when the results have it): every masked
    pixel gets its patch's true mean, the zero prediction under normalised-pixel targets; the
    displayed reconstruction borrows the same per-patch statistics, so this is the fair reference.

    Returns:
        ``pandas.DataFrame`` indexed by (mask_ratio, channel) with ``mae_rmse_db``,
        ``baseline_rmse_db``, ``patch_mean_rmse_db`` (NaN without it) and ``n_pixels``; plus an
        ``"all"`` channel row per ratio.
    """
    import pandas as pd

    rows = []
    for ratio, r in results.items():
        truth, recon = np.asarray(r["input"]), np.asarray(r["reconstruction"])
        masked = np.asarray(r["mask"])[:, None] & np.isfinite(truth)  # (B, C, H, W)
        visible = ~np.asarray(r["mask"])[:, None] & np.isfinite(truth)
        vis_mean = np.where(visible, truth, 0).sum((2, 3)) / np.maximum(visible.sum((2, 3)), 1)  # (B, C)
        base_err = np.where(masked, truth - vis_mean[:, :, None, None], 0.0) ** 2
        mae_err = np.where(masked, recon - truth, 0.0) ** 2
        pm_err = np.where(masked, np.asarray(r["patch_mean"]) - truth, 0.0) ** 2 if "patch_mean" in r else None
        n = masked.sum((0, 2, 3))
        for c, name in enumerate(names):
            rows.append({"mask_ratio": ratio, "channel": name, "n_pixels": int(n[c]),
                         "mae_rmse_db": float(np.sqrt(mae_err[:, c].sum() / max(n[c], 1))),
                         "baseline_rmse_db": float(np.sqrt(base_err[:, c].sum() / max(n[c], 1))),
                         "patch_mean_rmse_db": (float(np.sqrt(pm_err[:, c].sum() / max(n[c], 1)))
                                                if pm_err is not None else np.nan)})
        total = max(int(n.sum()), 1)
        rows.append({"mask_ratio": ratio, "channel": "all", "n_pixels": int(n.sum()),
                     "mae_rmse_db": float(np.sqrt(mae_err.sum() / total)),
                     "baseline_rmse_db": float(np.sqrt(base_err.sum() / total)),
                     "patch_mean_rmse_db": float(np.sqrt(pm_err.sum() / total)) if pm_err is not None else np.nan})
    return pd.DataFrame(rows).set_index(["mask_ratio", "channel"])


def _limits(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return -1.0, 1.0
    lo, hi = np.percentile(finite, [2, 98])
    return float(lo), float(hi) if hi > lo else float(lo) + 1.0


def _group_limits(images: np.ndarray, names: Sequence[str]) -> list[tuple[float, float]]:
    """One (vmin, vmax) per channel, shared by channels of the same quantity (``vv``, ``vh``, ``vv-vh``)."""
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        groups.setdefault(name.split("_")[0], []).append(i)
    limits = [(0.0, 1.0)] * len(names)
    for idx in groups.values():
        lim = _limits(images[idx])
        for i in idx:
            limits[i] = lim
    return limits


def _patch_grid(ax, mask: np.ndarray, patch: int) -> None:
    """Outline masked patches on ``ax`` (mask (H, W) bool)."""
    from matplotlib.patches import Rectangle

    rows, cols = np.nonzero(mask[::patch, ::patch])  # one entry per patch of the grid
    for gy, gx in zip(rows, cols):
        ax.add_patch(Rectangle((gx * patch - 0.5, gy * patch - 0.5), patch, patch, fill=False,
                               edgecolor="tab:red", linewidth=0.5))


def plot_masking(channels_db: np.ndarray, mask: np.ndarray, names: Sequence[str] = INPUT_CHANNELS,
                 patch_size: int | None = None, title: str | None = None):
    """What the encoder sees: each channel of one chip, in full and with the masked patches removed.

    Args:
        channels_db: (C, H, W) dB (NaN = no-data). mask: (H, W) bool, True = masked patch.
        patch_size: when given, masked patches are outlined in the full view.

    One pair of rows per group of up to 4 channels: the input, then the visible patches only
    (masked ones blank): a masked patch hides all C channels at once.
    """
    import matplotlib.pyplot as plt

    channels_db = np.asarray(channels_db, dtype=np.float32)
    mask = np.asarray(mask, dtype=bool)
    if channels_db.shape[0] != len(names) or channels_db.shape[1:] != mask.shape:
        raise ValueError(f"plot_masking: channels {channels_db.shape}, mask {mask.shape}, {len(names)} names "
                         "do not match (expected (C, H, W), (H, W) and C names)")
    ncols = min(4, len(names))
    groups = int(np.ceil(len(names) / ncols))
    fig, axes = plt.subplots(2 * groups, ncols, figsize=(2.3 * ncols, 2.3 * 2 * groups), squeeze=False)
    limits = _group_limits(channels_db, names)
    visible = np.where(mask[None], np.nan, channels_db)
    for i, name in enumerate(names):
        g, col = divmod(i, ncols)
        lo, hi = limits[i]
        for row, img, label in ((2 * g, channels_db[i], "input"), (2 * g + 1, visible[i], "visible")):
            ax = axes[row, col]
            ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_title(f"{name} ({label})", fontsize=8)
            if row == 2 * g and patch_size:
                _patch_grid(ax, mask, patch_size)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for i in range(len(names), groups * ncols):
        g, col = divmod(i, ncols)
        axes[2 * g, col].set_visible(False)
        axes[2 * g + 1, col].set_visible(False)
    fig.suptitle(title or f"masking: {mask.mean():.0%} of the pixels hidden (white = masked)")
    fig.tight_layout()
    return fig


def plot_reconstructions(results: Mapping[float, Mapping[str, np.ndarray]], index: int = 0,
                         names: Sequence[str] = INPUT_CHANNELS, channels: Sequence[str] | None = None,
                         title: str | None = None):
    """Input, masked input and reconstruction of chip ``index`` per channel (columns) and mask ratio (rows).

    Args:
        results: from :func:`reconstructions_db`.
        channels: names to show (default all ``names``). Colour scales in dB are shared by channels of
            the same quantity and fixed by the input, so reconstructions compare directly.
    """
    import matplotlib.pyplot as plt

    if not results:
        raise ValueError("plot_reconstructions: no results")
    channels = list(channels or names)
    unknown = [c for c in channels if c not in names]
    if unknown:
        raise ValueError(f"plot_reconstructions: unknown channel(s) {unknown}; expected names from {list(names)}")
    idx = [list(names).index(c) for c in channels]
    first = next(iter(results.values()))
    original = np.asarray(first["input"])[index][idx]
    limits = _group_limits(original, channels)
    rows = [("input", original)]
    for ratio, r in results.items():
        rows.append((f"masked {ratio:.0%}", np.asarray(r["masked_input"])[index][idx]))
        rows.append((f"recon. {ratio:.0%}", np.asarray(r["reconstruction"])[index][idx]))
    fig, axes = plt.subplots(len(rows), len(channels), figsize=(1.45 * len(channels) + 0.6, 1.45 * len(rows)),
                             squeeze=False)
    for r, (label, imgs) in enumerate(rows):
        for c, name in enumerate(channels):
            ax = axes[r, c]
            lo, hi = limits[c]
            ax.imshow(imgs[c], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name.replace("_", "\n"), fontsize=8)
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.suptitle(title or "MAE reconstructions per channel and season (dB)")
    fig.tight_layout()
    return fig


def plot_training_curves(metrics, title: str | None = None):
    """Loss and learning rate against the optimiser step, from a run's ``metrics.csv`` (a DataFrame)."""
    import matplotlib.pyplot as plt

    for col in ("step", "loss", "lr"):
        if col not in metrics.columns:
            raise ValueError(f"plot_training_curves: metrics have no {col!r} column (columns: {list(metrics.columns)})")
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.2))
    a.plot(metrics["step"], metrics["loss"], marker="o" if len(metrics) < 20 else None, ms=3)
    a.set_xlabel("optimiser step")
    a.set_ylabel("MAE loss (normalised pixels)")
    a.grid(alpha=0.3)
    b.plot(metrics["step"], metrics["lr"], color="tab:orange", marker="o" if len(metrics) < 20 else None, ms=3)
    b.set_xlabel("optimiser step")
    b.set_ylabel("learning rate")
    b.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    b.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
