"""sarssl.analysis.verdicts: the comparisons chapters 5 and 6 print, ties included."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sarssl.analysis.attention_plots import probe_summary
from sarssl.analysis.verdicts import (
    best_method,
    compare_to_reference,
    distance_error_link,
    headline_rows,
    verdict_counts,
)
from sarssl.data.products import LABEL_SPECS
from sarssl.train.sweep import summarize


# ---------------------------------------------------------------- chapter 5: the sweep
def _sweep_rows(scores: dict, noise: float = 0.0, seeds=(0, 1, 2, 3, 4)) -> pd.DataFrame:
    """Sweep CSV rows: scores[(task, method)] = [score at 4, 40 tiles], per seed ``noise`` x (seed - 2)."""
    rows = []
    for (task, method), values in scores.items():
        metric = "rmse" if task == "vegetation" else "miou"
        pool = "mean" if task == "vegetation" else "grid"
        for region in ("in", "out"):
            for n, v in zip((4, 40), values):
                for seed in seeds:
                    score = v + (0.01 if region == "out" else 0) + noise * (seed - 2)
                    rows.append(dict(task=task, method=method, protocol="linear", pool=pool, limit_pct=n / 4,
                                     n_tiles=n, seed=seed, region=region, **{metric: score}))
    return pd.DataFrame(rows)


SCORES = {("vegetation", "scratch"): [10.0, 8.0], ("vegetation", "mae"): [9.0, 8.5], ("vegetation", "dino"): [10.0, 7.0],
          ("landcover", "scratch"): [0.3, 0.4], ("landcover", "mae"): [0.35, 0.4], ("landcover", "dino"): [0.2, 0.45]}


def test_best_method_direction_fraction_and_ties():
    means = summarize(_sweep_rows(SCORES))
    assert best_method(means, "vegetation", "rmse") == "dino"  # lowest RMSE at 40 tiles; baselines excluded
    assert best_method(means, "landcover", "miou") == "dino"  # highest mIoU at 40 tiles
    assert best_method(means, "vegetation", "rmse", exclude="dino") == "scratch"
    tied = summarize(_sweep_rows({("vegetation", "mae"): [5.0, 7.0], ("vegetation", "dino"): [5.0, 7.0],
                                  ("vegetation", "scratch"): [1.0, 1.0]}))
    assert best_method(tied, "vegetation", "rmse") == "dino"  # a tie goes to the first listed (sorted) method
    with pytest.raises(ValueError, match="no rows"):
        best_method(means, "built", "rmse")


def test_compare_to_reference_decides_on_seed_intervals():
    # the seeds spread by +-0.2 (vegetation) but every arm moves with its seed: the paired differences
    # are exact, so a 0.5 RMSE gap is a win and equal scores are a tie
    df = _sweep_rows(SCORES, noise=0.1)
    comp = compare_to_reference(df, ("vegetation", "landcover"))
    assert len(comp) == 2 * 2 * 2 * 2  # tasks x regions x fractions x methods
    v = comp.set_index(["task", "region", "n_tiles", "method"])["verdict"]
    assert v[("vegetation", "in", 4, "mae")] == "better"  # RMSE 9 < 10: lower is better
    assert v[("vegetation", "in", 40, "mae")] == "worse"
    assert v[("vegetation", "in", 4, "dino")] == "tie"  # the same score is a tie, not a win
    assert v[("landcover", "in", 4, "dino")] == "worse" and v[("landcover", "in", 40, "mae")] == "tie"
    row = comp.set_index(["task", "region", "n_tiles", "method"]).loc[("vegetation", "in", 40, "dino")]
    assert row["gain"] == pytest.approx(1.0) and row["score"] == pytest.approx(7.0)
    assert row["score_low"] < 7.0 < row["score_high"]  # the seed spread is in the score's interval
    assert verdict_counts(comp, "mae") == {"better": 4, "worse": 2, "tie": 2, "n": 8}
    assert verdict_counts(comp, "other") == {"better": 0, "worse": 0, "tie": 0, "n": 0}


def test_compare_to_reference_noise_makes_a_tie():
    # independent seed noise of +-0.5 around a 0.3 RMSE gain: the intervals overlap and the paired
    # interval includes 0, so the verdict cannot read "better"
    rng = np.random.default_rng(0)
    df = _sweep_rows({("vegetation", "scratch"): [10.0, 8.0], ("vegetation", "mae"): [9.7, 8.0]})
    df["rmse"] += rng.normal(0, 0.5, len(df))
    comp = compare_to_reference(df, ["vegetation"], methods=("mae",))
    at4 = comp[(comp["n_tiles"] == 4) & (comp["region"] == "in")].iloc[0]
    assert at4["verdict"] == "tie" and at4["gain_low"] < 0 < at4["gain_high"]


def test_compare_to_reference_without_reference_rows():
    comp = compare_to_reference(_sweep_rows({("vegetation", "mae"): [9.0, 8.0]}), ["vegetation"])
    assert comp.empty and "verdict" in comp.columns and "scratch" in comp.columns


# ---------------------------------------------------------------- chapter 6: probes and transfer
def _probe_table(shift: float) -> pd.DataFrame:
    rows = []
    for i, (key, spec) in enumerate(LABEL_SPECS.items()):
        rows.append({"product": key, "title": spec.title, "r2": 0.1 * i + shift, "psnr": 20.0 + shift,
                     "rmse": 5.0 - shift, "miou": 0.3 + shift, "accuracy": 0.5})
    return pd.DataFrame(rows)


def _summary():
    return probe_summary({"DINO attention": _probe_table(0.1), "random attention": _probe_table(0.0),
                          "DINO embedding": _probe_table(0.02), "random embedding": _probe_table(0.0),
                          "raw SAR": _probe_table(0.05)})


def test_headline_rows_pick_each_products_headline_metric():
    summary = _summary()
    headline = headline_rows(summary)
    legacy = summary[summary.index.get_level_values("metric").isin(["r2", "miou"])]  # as chapter 6 selected them
    pd.testing.assert_frame_equal(headline, legacy)
    assert [m for _, m in headline.index] == [s.headline for s in LABEL_SPECS.values()]


def test_distance_error_link():
    d = pd.DataFrame({"region": ["a", "b", "c", "d"], "distance": [0.0, 1.0, 3.0, 2.0],
                      "rmse": [5.0, 6.0, 9.0, 7.0], "miou": [0.5, 0.4, 0.2, 0.3]})
    up = distance_error_link(d, "rmse")
    assert up["rho"] == pytest.approx(1.0) and up["n"] == 4 and up["worse"] == "higher"
    assert up["far"]["region"] == "c" and up["near"]["region"] == "a"
    down = distance_error_link(d, "miou")
    assert down["rho"] == pytest.approx(-1.0) and down["worse"] == "lower"
