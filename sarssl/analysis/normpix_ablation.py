"""Normalised-pixel targets of MAE, off, per patch or per channel, judged by what the encoder is worth downstream.

He et al.'s per-patch targets standardise each target patch by its own mean and spread, so the loss
never asks for a patch's level; on SAR that level (the backscatter of the land cover) carries much of
the class information. :func:`normpix_ablation` scores the encoders of MAE runs that differ only in
their targets (:data:`NORMPIX_VARIANTS`), and a random-initialised encoder as the control, with the
same frozen linear probes: on the mean-pooled patch tokens for the tile mean of vegetation cover, a
1x1 convolution on the patch tokens for land cover. Every encoder is probed with the same labelled
chips per seed on the same validation chips (through :func:`sarssl.train.sweep.run_sweep`), and each
score gets a 95 % interval over seeds; :func:`sarssl.evidence.compare` says which target is better.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from sarssl.evidence import compare, seed_interval
from sarssl.train.metrics import higher_is_better

__all__ = ["NORMPIX_VARIANTS", "ABLATION_METRICS", "normpix_ablation", "verdict_sentence", "plot_normpix_ablation"]

#: the MAE targets compared: name -> MAE configuration overrides
#: (``sarssl.workspace.pretrained_run(profile, "mae", **overrides)`` gives each its own run)
NORMPIX_VARIANTS = {
    "off": {"norm_pix_loss": False},
    "patch": {"norm_pix_loss": True, "norm_pix_mode": "patch"},
    "channel": {"norm_pix_loss": True, "norm_pix_mode": "channel"},
}
#: task -> the metrics reported for it (the first is the headline)
ABLATION_METRICS = {"vegetation": ("rmse",), "landcover": ("miou", "accuracy")}
CONTROL = "random"


def _probe_rows(profile, data_root, aoi: str, runs: Mapping[str, Path], out_dir, tasks, limit_pct: float,
                seeds: Sequence[int], device, progress: bool) -> pd.DataFrame:
    """Per-seed probe rows of every run folder and of the random control on the val split, one CSV per
    set of encoders (named by their runs' fingerprints, so a retrained run never reads stale rows)."""
    from sarssl.data.fingerprint import short_hash
    from sarssl.profiles import get_profile
    from sarssl.train.sweep import run_sweep

    prof = get_profile(profile) if isinstance(profile, str) else profile
    prof = prof.with_overrides(finetune=dataclasses.replace(prof.finetune, probe_pools=("mean",)))
    folders = [Path(r) for r in runs.values()]
    if len({f.name for f in folders}) != len(folders):
        raise ValueError(f"normpix_ablation: the runs need distinct folder names, got {[f.name for f in folders]}")
    prints = [json.loads((f / "run.json").read_text())["fingerprint"] for f in folders]
    out_csv = Path(out_dir) / f"probes-{short_hash('|'.join(prints), 12)}.csv"
    df = run_sweep(prof, data_root, out_csv, methods=[CONTROL, *map(str, folders)], fractions=(limit_pct,),
                   seeds=tuple(seeds), tasks=tuple(tasks), protocol="linear", aoi=aoi, device=device,
                   progress=progress, eval_split="val")
    by_folder = {f.name: v for v, f in zip(runs, folders)}
    df = df[np.isclose(df["limit_pct"], float(limit_pct)) & df["seed"].isin(list(seeds))]
    return df.assign(variant=df["method"].map(lambda m: by_folder.get(m, m)))


def normpix_ablation(profile, data_root, aoi: str, runs: Mapping[str, Path], out_dir, tasks=tuple(ABLATION_METRICS),
                     limit_pct: float = 10.0, seeds: Sequence[int] = (0, 1, 2), device=None,
                     progress: bool = False) -> pd.DataFrame:
    """Linear probes of each MAE variant's encoder and of a random encoder on the val split, with verdicts.

    Args:
        profile: a Profile or its name (the probes' epochs and learning rate: ``profile.finetune``).
        data_root / aoi: the region the runs were pretrained on (its train chips label the probes).
        runs: variant name (``"off"``, ``"patch"``, ``"channel"``) -> MAE run folder with distinct names.
        out_dir: folder for the per-seed rows (resumed when the same encoders are probed again).
        tasks: among :data:`ABLATION_METRICS` (``vegetation``: tile-mean tree cover in %, ``landcover``).
        limit_pct / seeds: the labelled fraction of the train chips, and one subset and head per seed.

    Returns:
        One row per (variant, task, metric), the variants in ``runs`` order and ``random`` last:
        ``variant, run`` (folder name, ``random`` for the control), ``task, metric, higher_is_better,
        n_tiles, n_seeds, mean, low, high`` (95 % t-interval over seeds), ``vs_random`` and ``vs_best``
        (:func:`sarssl.evidence.compare` of the row against the control and against the variant with the
        best mean, paired by seed: ``better``/``worse``/``tie``; ``best`` on that variant's own row,
        ``-`` on the control's) and ``reason`` (the verdict against the best, or the control's on the best).
    """
    rows = _probe_rows(profile, data_root, aoi, runs, out_dir, tasks, limit_pct, seeds, device, progress)
    out = []
    for task in tasks:
        d = rows[rows["task"] == task]
        for metric in ABLATION_METRICS[task]:
            hib = higher_is_better(metric)
            vals = {v: d[d["variant"] == v].sort_values("seed")[metric].to_numpy(float) for v in [*runs, CONTROL]}
            est = {v: seed_interval(x) for v, x in vals.items()}
            best = max(runs, key=lambda v: est[v].value if hib else -est[v].value)
            for v, e in est.items():
                to_best = None if v in (best, CONTROL) else _verdict(vals, est, v, best, hib)
                out.append({"variant": v, "run": CONTROL if v == CONTROL else Path(runs[v]).name, "task": task,
                            "metric": metric, "higher_is_better": hib,
                            "n_tiles": int(d[d["variant"] == v]["n_tiles"].iloc[0]), "n_seeds": e.n,
                            "mean": e.value, "low": e.low, "high": e.high,
                            "vs_random": "-" if v == CONTROL else _verdict(vals, est, v, CONTROL, hib).outcome,
                            "vs_best": "best" if v == best else "-" if to_best is None else to_best.outcome,
                            "reason": "" if to_best is None else to_best.reason})
    return pd.DataFrame(out)


def _verdict(vals: Mapping[str, np.ndarray], est: Mapping, a: str, b: str, hib: bool):
    """:func:`~sarssl.evidence.compare` of ``a`` against ``b``, paired by seed (``vals``: per-seed scores)."""
    return compare(est[a], est[b], hib, paired=seed_interval(vals[a] - vals[b]))


def verdict_sentence(table: pd.DataFrame, task: str, metric: str) -> str:
    """One sentence, worded from the verdicts of :func:`normpix_ablation`'s ``table``: which target scores
    best on ``task``/``metric``, whether its interval separates it from each other target, and how it
    stands against the random encoder (scores as ``mean [low, high]``, 95 % over seeds)."""
    from sarssl.plots import METRIC_LABELS
    from sarssl.train.tasks import get_target

    d = table[(table["task"] == task) & (table["metric"] == metric)].set_index("variant")
    unit = f" {get_target(task).unit}" if metric in ("rmse", "mae") and get_target(task).unit else ""

    def score(v: str) -> str:
        r = d.loc[v]
        return f"{r['mean']:.3g} [{r['low']:.3g}, {r['high']:.3g}]{unit}"

    best = d.index[d["vs_best"] == "best"][0]
    def against(v: str) -> str:
        if d.loc[v, "vs_best"] == "tie":
            return f"not separated from {v} ({score(v)})"
        how = ("the 95 % intervals separated" if d.loc[v, "reason"].startswith("95 % intervals separated")
               else "the intervals overlap, but the paired difference over seeds excludes 0")
        return f"ahead of {v} ({score(v)}; {how})"

    others = [against(v) for v in d.index if v not in (best, CONTROL)]
    control = {"better": "better than", "tie": "not separated from", "worse": "worse than"}[d.loc[best, "vs_random"]]
    direction = "higher" if d.loc[best, "higher_is_better"] else "lower"
    return (f"On {task} ({METRIC_LABELS.get(metric, metric)}, {direction} is better) the {best!r} target scores "
            f"best, {score(best)}: {'; '.join(others)}; and {control} the random-initialised encoder "
            f"({score(CONTROL)}).")


def plot_normpix_ablation(table: pd.DataFrame, title: str | None = None):
    """One panel per (task, metric) of :func:`normpix_ablation`: the mean of each variant with its 95 %
    interval as error bars, the random control hatched. Returns the Figure."""
    import matplotlib.pyplot as plt

    from sarssl.plots import METHOD_COLORS, METRIC_LABELS
    from sarssl.train.tasks import get_target

    panels = list(dict.fromkeys(zip(table["task"], table["metric"])))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.2), squeeze=False)
    for ax, (task, metric) in zip(axes[0], panels):
        d = table[(table["task"] == task) & (table["metric"] == metric)]
        x = np.arange(len(d))
        control = (d["variant"] == CONTROL).to_numpy()
        colors = [METHOD_COLORS[CONTROL] if c else METHOD_COLORS["mae"] for c in control]
        err = np.stack([d["mean"] - d["low"], d["high"] - d["mean"]])
        bars = ax.bar(x, d["mean"], 0.6, yerr=err, capsize=3, color=colors, alpha=0.85)
        for bar, c in zip(bars, control):
            bar.set_hatch("//" if c else None)
        ax.set_xticks(x, d["variant"])
        unit = get_target(task).unit
        label = METRIC_LABELS.get(metric, metric)
        ax.set_ylabel(f"{label} [{unit}]" if unit and metric in ("rmse", "mae") else label)
        arrow = "higher" if bool(d["higher_is_better"].iloc[0]) else "lower"
        ax.set_title(f"{task}: {label} ({arrow} is better)", fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(title or "MAE targets: linear probes on val (95 % intervals over seeds)", fontsize=10)
    fig.tight_layout()
    return fig
