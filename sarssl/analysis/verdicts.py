"""Verdicts the chapters print: comparisons of methods and feature sets, decided here, not in the chapters.

Label-efficiency sweep (chapter 5), on :func:`sarssl.train.sweep.summarize` tables (``<metric>_mean``
columns) or the sweep's rows:

- :func:`best_method`: the method with the best mean score at the largest label fraction;
- :func:`compare_to_reference`: each pretrained method against the reference (supervised from
  scratch) per label fraction, over seeds, with a ``gain`` and its paired interval (positive =
  better) and the verdict of :func:`sarssl.evidence.compare` (``better`` / ``worse`` / ``tie``);
- :func:`verdict_counts`: how many comparisons a method won, lost and tied;
- :data:`VERDICT_WORDS` and :func:`saving_text`: verdicts and label savings in words, for the prose.

Probes and region transfer (chapter 6), on :func:`sarssl.analysis.attention_plots.probe_summary`
tables and :func:`sarssl.analysis.transfer.region_transfer` rows (the probe verdicts themselves,
with intervals over chips, are :func:`sarssl.analysis.probes.probe_intervals`):

- :func:`headline_rows`: each product's headline metric (:attr:`ProductSpec.headline`);
- :func:`distance_error_link`: whether the distance of a region orders its transfer error.

Metric directions come from :func:`sarssl.train.metrics.higher_is_better`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sarssl.data.products import LABEL_SPECS
from sarssl.train.metrics import higher_is_better
from sarssl.train.tasks import get_target

__all__ = ["best_method", "compare_to_reference", "verdict_counts", "VERDICTS", "headline_rows",
           "distance_error_link"]

#: the verdicts of :func:`compare_to_reference`
VERDICTS = ("better", "worse", "tie")


# --------------------------------------------------------------------------------------------
# The label-efficiency sweep
# --------------------------------------------------------------------------------------------
def best_method(means: pd.DataFrame, task: str, metric: str, region: str = "in",
                exclude=("random", "scratch")) -> str:
    """The method (not in ``exclude``, by default the baselines) with the best mean ``metric`` for
    ``task`` in ``region`` at the largest label fraction; ties go to the method listed first in ``means``."""
    exclude = (exclude,) if isinstance(exclude, str) else tuple(exclude)
    m = means[(means["task"] == task) & (means["region"] == region) & (~means["method"].isin(exclude))]
    m = m[m["limit_pct"] == m["limit_pct"].max()]
    if m.empty:
        raise ValueError(f"best_method: no rows for task {task!r} in region {region!r} besides {exclude!r}")
    return m.sort_values(f"{metric}_mean", ascending=not higher_is_better(metric)).iloc[0]["method"]


def compare_to_reference(df: pd.DataFrame, tasks, methods=("mae", "dino"), reference: str = "scratch",
                         fractions=None) -> pd.DataFrame:
    """Each of ``methods`` against ``reference`` per task, region and label fraction, decided by
    :func:`sarssl.evidence.compare` on the seeds.

    Args:
        df: the sweep's rows (one per run and region; :func:`sarssl.train.sweep.read_results`).
        fractions: label fractions to compare (default: the smallest and the largest of each task).

    Each score is the mean over seeds with a Student-t 95 % interval; the paired interval is that of
    the per-seed difference (the arms share each seed's labelled subset). The metric of a task is its
    headline metric, tile targets on their headline pool (:func:`sarssl.train.sweep.headline_pool`).
    Columns: ``task, region, metric, limit_pct, n_tiles, method, score, score_low, score_high,
    <reference>, ref_low, ref_high, gain, gain_low, gain_high, verdict`` (``gain``: improvement over
    the reference in the metric's units, positive = better; ``verdict``: better / worse / tie).
    """
    from sarssl.evidence import compare, seed_interval
    from sarssl.train.sweep import headline_pool

    rows = []
    for task in tasks:
        metric = get_target(task).primary
        sign = 1 if higher_is_better(metric) else -1
        t = df[df["task"] == task]
        if t.empty:
            continue
        t = t[t["pool"] == headline_pool(t)] if "pool" in t.columns else t
        pcts = sorted(t["limit_pct"].unique())
        for region in sorted(t["region"].unique()):
            m = t[t["region"] == region]
            for pct in (fractions if fractions is not None else (pcts[0], pcts[-1])):
                at = m[np.isclose(m["limit_pct"].astype(float), float(pct))]
                ref = at[at["method"] == reference].set_index("seed")[metric]
                if ref.empty:
                    continue
                r_est = seed_interval(ref.to_numpy())
                for method in methods:
                    arm = at[at["method"] == method].set_index("seed")
                    if arm.empty:
                        continue
                    s = arm[metric]
                    est = seed_interval(s.to_numpy())
                    common = sorted(set(s.index) & set(ref.index))
                    gain = seed_interval((s[common] - ref[common]).to_numpy()) if len(common) > 1 else None
                    verdict = compare(est, r_est, higher_is_better(metric), paired=gain).outcome
                    rows.append({"task": task, "region": region, "metric": metric, "limit_pct": float(pct),
                                 "n_tiles": int(arm["n_tiles"].iloc[0]), "method": method,
                                 "score": est.value, "score_low": est.low, "score_high": est.high,
                                 reference: r_est.value, "ref_low": r_est.low, "ref_high": r_est.high,
                                 "gain": sign * (est.value - r_est.value),
                                 "gain_low": np.nan if gain is None else min(sign * gain.low, sign * gain.high),
                                 "gain_high": np.nan if gain is None else max(sign * gain.low, sign * gain.high),
                                 "verdict": verdict})
    columns = ["task", "region", "metric", "limit_pct", "n_tiles", "method", "score", "score_low", "score_high",
               reference, "ref_low", "ref_high", "gain", "gain_low", "gain_high", "verdict"]
    return pd.DataFrame(rows, columns=columns)


#: a :func:`compare_to_reference` verdict in a sentence ("MAE <words> supervised from scratch")
VERDICT_WORDS = {"better": "does better than", "worse": "does worse than", "tie": "ties with"}


def saving_text(row) -> str:
    """A :func:`sarssl.train.sweep.label_savings` row in words: ``x2.3 (95 % CI 1.1-4.0)``, ``at least``
    when censored, or that the method never reaches the control's score at the fractions tried."""
    if row["saving"] == 0:
        return "never reaches the score of supervised from scratch at the fractions tried"
    bound = "at least " if row["censored"] else ""
    return f"{bound}×{row['saving']:.1f} (95 % CI {row['low']:.1f}–{row['high']:.1f})"


def verdict_counts(comparison: pd.DataFrame, method: str) -> dict[str, int]:
    """``{"better", "worse", "tie", "n"}``: the verdicts of ``method`` in a :func:`compare_to_reference` table."""
    v = comparison[comparison["method"] == method]["verdict"].value_counts()
    return {**{k: int(v.get(k, 0)) for k in VERDICTS}, "n": int(v.sum())}


# --------------------------------------------------------------------------------------------
# Probes and region transfer
# --------------------------------------------------------------------------------------------
def headline_rows(summary: pd.DataFrame) -> pd.DataFrame:
    """The rows of a ``probe_summary`` table (index ``(product title, metric)``) that hold each product's
    headline metric (R2 for Sentinel-2 RGB and the continuous products, mIoU for the land covers)."""
    headline = {s.title: s.headline for s in LABEL_SPECS.values()}
    keep = [headline.get(title) == metric for title, metric in summary.index]
    return summary[np.asarray(keep, dtype=bool)]


def distance_error_link(rows: pd.DataFrame, metric: str) -> dict:
    """Does a region's distance order its transfer error? ``rows``: one per region with ``distance`` and
    ``metric`` (from ``region_transfer``).

    Returns ``{"rho"`` (Spearman's rank correlation of distance and ``metric``), ``"n"`` (regions),
    ``"far"``, ``"near"`` (the rows of the farthest and the nearest region) and ``"worse"`` (``"higher"``
    or ``"lower"``: which direction of ``metric`` is worse)``}``.
    """
    rho = rows["distance"].corr(rows[metric], method="spearman")
    return {"rho": rho, "n": len(rows), "far": rows.loc[rows["distance"].idxmax()],
            "near": rows.loc[rows["distance"].idxmin()], "worse": "lower" if higher_is_better(metric) else "higher"}
