"""The normalised-pixel ablation: one MAE run per target, linear probes on val with intervals and verdicts."""

import json

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.container import BarContainer  # noqa: E402
import pytest  # noqa: E402

from sarssl.analysis.normpix_ablation import NORMPIX_VARIANTS, normpix_ablation, plot_normpix_ablation  # noqa: E402
from sarssl.profiles import get_profile  # noqa: E402
from sarssl.train.sweep import sweep_identity  # noqa: E402
from sarssl.workspace import pretrained_run, resolve_data, variant_name  # noqa: E402

SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    """The smoke profile's three MAE runs in their own workspace, and the ablation table on them."""
    base = tmp_path_factory.mktemp("normpix")
    profile = get_profile("smoke")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SARSSL_HOME", str(base / "ws"))
        data = resolve_data("sim", profile, progress=False)
        runs = {v: pretrained_run(profile, "mae", data=data, progress=False, **kw) for v, kw in NORMPIX_VARIANTS.items()}
        main = pretrained_run(profile, "mae", data=data, progress=False)
        table = normpix_ablation(profile, data.root, data.aoi, runs, base / "probes", limit_pct=50, seeds=SEEDS)
    return profile, data, runs, main, table, base


def test_variant_names_follow_the_identity():
    profile = get_profile("smoke")
    assert variant_name(profile, "mae") == "mae"
    assert variant_name(profile, "mae", {"norm_pix_loss": True, "norm_pix_mode": "patch"}) == "mae"  # the profile's
    assert variant_name(profile, "mae", {"max_steps": 3}) == "mae"  # resumable: the same run
    assert variant_name(profile, "mae", {"norm_pix_loss": False}) == "mae-norm_pix_loss-false"
    assert variant_name(profile, "mae", {"norm_pix_mode": "channel", "mask_ratio": 0.9}) == \
        "mae-mask_ratio-0.9-norm_pix_mode-channel"


def test_three_distinct_runs_and_the_default_is_the_main_run(ablation):
    _, _, runs, main, _, _ = ablation
    assert len({p.resolve() for p in runs.values()}) == 3
    assert runs["patch"] == main  # the chapter's run, reused
    for variant, kw in NORMPIX_VARIANTS.items():
        mae = json.loads((runs[variant] / "run.json").read_text())["config"]["mae"]
        assert mae["norm_pix_loss"] is kw["norm_pix_loss"]
        if kw["norm_pix_loss"]:
            assert mae["norm_pix_mode"] == kw["norm_pix_mode"]
        assert (runs[variant] / "encoder.pth").is_file()
    prints = {json.loads((p / "run.json").read_text())["fingerprint"] for p in runs.values()}
    assert len(prints) == 3
    # the targets really differ: the first logged losses differ (same seed, same batches and masks)
    first = {v: pd.read_csv(p / "metrics.csv")["loss"].iloc[0] for v, p in runs.items()}
    assert len({round(x, 6) for x in first.values()}) == 3, first


def test_table_is_tidy_with_intervals_and_verdicts(ablation):
    _, _, runs, _, table, _ = ablation
    assert list(table.columns) == ["variant", "run", "task", "metric", "higher_is_better", "n_tiles", "n_seeds",
                                   "mean", "low", "high", "vs_random", "vs_best", "reason"]
    assert set(zip(table["task"], table["metric"])) == {("vegetation", "rmse"), ("landcover", "miou"),
                                                        ("landcover", "accuracy")}
    assert len(table) == 3 * (len(runs) + 1)
    for _, g in table.groupby(["task", "metric"]):
        assert list(g["variant"]) == [*runs, "random"]
        assert (g["vs_best"] == "best").sum() == 1
        best = g[g["vs_best"] == "best"].iloc[0]
        means = g[g["variant"] != "random"]["mean"]
        assert best["mean"] == (means.max() if best["higher_is_better"] else means.min())
        assert set(g["vs_random"]) <= {"better", "worse", "tie", "-"}
        assert g[g["variant"] == "random"][["vs_random", "vs_best"]].values.tolist() == [["-", "-"]]
        assert set(g[~g["variant"].isin(["random", best["variant"]])]["vs_best"]) <= {"worse", "tie"}
    assert (table["n_seeds"] == len(SEEDS)).all() and (table["n_tiles"] > 0).all()
    assert table["run"].tolist()[:3] == [runs[v].name for v in runs]
    vals = table[["low", "mean", "high"]].to_numpy()
    assert np.isfinite(vals).all() and (vals[:, 0] <= vals[:, 1]).all() and (vals[:, 1] <= vals[:, 2]).all()
    assert (table["high"] > table["low"]).any()  # seeds differ: real intervals, not points
    scores = table[table["metric"].isin(["miou", "accuracy"])]["mean"].to_numpy()
    assert ((scores >= 0) & (scores <= 1)).all()  # fractions


def test_a_second_call_reuses_the_rows(ablation):
    profile, data, runs, _, table, base = ablation
    csvs = sorted((base / "probes").glob("probes-*.csv"))
    assert len(csvs) == 1
    before = csvs[0].stat().st_mtime_ns
    again = normpix_ablation(profile, data.root, data.aoi, runs, base / "probes", limit_pct=50, seeds=SEEDS)
    assert csvs[0].stat().st_mtime_ns == before  # nothing retrained or rewritten
    assert again.equals(table)


def test_runs_with_the_same_folder_name_are_refused(ablation, tmp_path):
    profile, data, runs, _, _, _ = ablation
    with pytest.raises(ValueError, match="distinct folder names"):
        normpix_ablation(profile, data.root, data.aoi, {"a": runs["patch"], "b": runs["patch"]}, tmp_path)


def test_val_sweeps_have_their_own_identity(ablation):
    profile, data, *_ = ablation
    test = sweep_identity(profile, data.root, data.aoi)
    assert "eval_split" not in test  # test sweeps keep their fingerprints
    assert sweep_identity(profile, data.root, data.aoi, eval_split="val") == {**test, "eval_split": "val"}


def test_plot_has_a_panel_per_metric_with_error_bars(ablation):
    table = ablation[4]
    fig = plot_normpix_ablation(table)
    assert len(fig.axes) == 3
    for ax in fig.axes:
        assert [t.get_text() for t in ax.get_xticklabels()] == [*NORMPIX_VARIANTS, "random"]
        bars = [c for c in ax.containers if isinstance(c, BarContainer)]
        assert len(bars) == 1 and len(bars[0]) == len(NORMPIX_VARIANTS) + 1 and bars[0].errorbar is not None
