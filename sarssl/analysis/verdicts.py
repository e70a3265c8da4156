"""Verdicts the chapters print: comparisons of methods and feature sets, decided here, not in the chapters.

Label-efficiency sweep (chapter 5), on :func:`sarssl.train.sweep.summarize` tables (``<metric>_mean``
columns):

- :func:`best_method`: the method with the best mean score at the largest label fraction;
- :func:`compare_to_reference`: each pretrained method against the reference (scratch) at the
  smallest and largest label fraction, with a ``gain`` (positive = better) and a verdict
  ``better`` / ``worse`` / ``tie`` (a relative tolerance of 1e-6, so an encoder that gives the same
  features as the random one ties);
- :func:`verdict_counts`: how many comparisons a method won, lost and tied.

Probes and region transfer (chapter 6), on :func:`sarssl.analysis.attention_plots.probe_summary`
tables and :func:`sarssl.analysis.transfer.region_transfer` rows:

- :func:`headline_rows`: each product's headline metric (:attr:`ProductSpec.headline`);
- :func:`probe_gaps`: the differences the study's claim turns on (pretrained vs random features,
  embeddings and attention vs raw SAR), signed so that positive is better;
- :func:`best_feature_sets`: the best feature set per product;
- :func:`count_wins`: per comparison, the products where the gap exceeds a margin (a gap of at most
  the margin is a tie);
- :func:`distance_error_link`: whether the distance of a region orders its transfer error.

Metric directions come from :func:`sarssl.train.metrics.higher_is_better`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sarssl.data.products import LABEL_SPECS
from sarssl.train.metrics import higher_is_better
from sarssl.train.tasks import get_target

__all__ = ["best_method", "compare_to_reference", "verdict_counts", "VERDICTS", "headline_rows", "probe_gaps",
           "best_feature_sets", "count_wins", "distance_error_link"]

#: the verdicts of :func:`compare_to_reference`
VERDICTS = ("better", "worse", "tie")


# --------------------------------------------------------------------------------------------
# The label-efficiency sweep
# --------------------------------------------------------------------------------------------
def best_method(means: pd.DataFrame, task: str, metric: str, region: str = "in", exclude: str = "scratch") -> str:
    """The method (other than ``exclude``) with the best mean ``metric`` for ``task`` in ``region`` at
    the largest label fraction; ties go to the method listed first in ``means``."""
    m = means[(means["task"] == task) & (means["region"] == region) & (means["method"] != exclude)]
    m = m[m["limit_pct"] == m["limit_pct"].max()]
    if m.empty:
        raise ValueError(f"best_method: no rows for task {task!r} in region {region!r} besides {exclude!r}")
    return m.sort_values(f"{metric}_mean", ascending=not higher_is_better(metric)).iloc[0]["method"]


def compare_to_reference(means: pd.DataFrame, tasks, methods=("mae", "dino"), reference: str = "scratch",
                         rel_tol: float = 1e-6) -> pd.DataFrame:
    """Each of ``methods`` against ``reference``, per task, region and the smallest and largest label fraction.

    The metric of a task is its headline metric (:attr:`~sarssl.train.tasks.TargetSpec.primary`).
    Columns: ``task, region, metric, limit_pct, n_tiles, method, <reference>, score, gain, verdict``;
    ``gain`` is the score's improvement over the reference in the metric's units (positive = better),
    ``verdict`` is ``better`` / ``worse`` when ``|gain|`` exceeds ``rel_tol x max(|reference|, 1e-3)``,
    else ``tie``. Fractions without a reference row are skipped.
    """
    rows = []
    for task in tasks:
        metric = get_target(task).primary
        sign = 1 if higher_is_better(metric) else -1
        for region in sorted(means["region"].unique()):
            m = means[(means["task"] == task) & (means["region"] == region)]
            for pct in (m["limit_pct"].min(), m["limit_pct"].max()):
                at = m[m["limit_pct"] == pct].set_index("method")
                if reference not in at.index:
                    continue
                ref = at.loc[reference, f"{metric}_mean"]
                for method in methods:
                    if method in at.index:
                        score = at.loc[method, f"{metric}_mean"]
                        rows.append({"task": task, "region": region, "metric": metric, "limit_pct": pct,
                                     "n_tiles": int(at.loc[method, "n_tiles"]), "method": method,
                                     reference: ref, "score": score, "gain": sign * (score - ref)})
    columns = ["task", "region", "metric", "limit_pct", "n_tiles", "method", reference, "score", "gain"]
    comparison = pd.DataFrame(rows) if rows else pd.DataFrame(columns=columns)
    # a tie (an encoder that gives the same features as the random one) is not a win
    tol = rel_tol * comparison[reference].abs().clip(lower=1e-3)
    comparison["verdict"] = np.select([comparison["gain"] > tol, comparison["gain"] < -tol], ["better", "worse"], "tie")
    return comparison


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


def _signs(headline: pd.DataFrame) -> pd.Series:
    metrics = headline.index.get_level_values("metric")
    return pd.Series([1.0 if higher_is_better(m) else -1.0 for m in metrics], index=headline.index)


def probe_gaps(headline: pd.DataFrame, model: str = "DINO", control: str = "random",
               baseline: str = "raw SAR") -> pd.DataFrame:
    """Per product, the headline-metric gaps between feature sets (columns of :func:`headline_rows`),
    signed so that a positive gap means the first set is better:

    ``attention: <model> - <control>``, ``embedding: <model> - <control>`` (did pretraining add
    anything over a random encoder?), ``<model> embedding - <baseline>`` and ``<model> attention -
    <baseline>`` (does the network add anything over the raw channels?).
    """
    sign = _signs(headline)
    pairs = {f"attention: {model} - {control}": (f"{model} attention", f"{control} attention"),
             f"embedding: {model} - {control}": (f"{model} embedding", f"{control} embedding"),
             f"{model} embedding - {baseline}": (f"{model} embedding", baseline),
             f"{model} attention - {baseline}": (f"{model} attention", baseline)}
    missing = sorted({c for pair in pairs.values() for c in pair} - set(headline.columns))
    if missing:
        raise KeyError(f"probe_gaps: feature sets {missing} not in the table (columns: {list(headline.columns)})")
    return pd.DataFrame({name: (headline[a] - headline[b]) * sign for name, (a, b) in pairs.items()})


def best_feature_sets(headline: pd.DataFrame) -> pd.Series:
    """Per product (row of :func:`headline_rows`), the feature set (column) with the best headline score;
    ties go to the first column."""
    best = headline.idxmax(axis=1)
    low = ~_signs(headline).gt(0)
    if low.any():
        best[low] = headline[low].idxmin(axis=1)
    return best


def count_wins(gaps: pd.DataFrame | pd.Series, margin: float = 0.02) -> dict[str, int] | int:
    """Per column of :func:`probe_gaps` (or of one Series), the number of products whose value exceeds
    ``margin`` (a gap of at most ``margin`` is a tie, not a win)."""
    if isinstance(gaps, pd.Series):
        return int((gaps > margin).sum())
    return {c: int((gaps[c] > margin).sum()) for c in gaps.columns}


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
