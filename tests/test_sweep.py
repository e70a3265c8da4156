"""The label-efficiency sweep: one row per run and region, resume, identical subsets, plots, summaries."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402

import sarssl.train.finetune as finetune_mod  # noqa: E402
from sarssl.data.simulate import simulate_region  # noqa: E402
from sarssl.models.vit import spec_from_profile  # noqa: E402
from sarssl.plots import plot_label_efficiency, plot_per_class_iou, plot_sweep  # noqa: E402
from sarssl.train.checkpoint import save_encoder  # noqa: E402
from sarssl.train.sweep import (  # noqa: E402
    append_rows, finished_runs, label_savings, plan_runs, read_results, run_sweep, summarize,
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_profile):
    base = tmp_path_factory.mktemp("sweep")
    simulate_region(base / "a", aoi="sim-a", n_chips=32, chip_size=32, seed=0, progress=False)
    simulate_region(base / "b", aoi="sim-b", n_chips=24, chip_size=32, seed=1, progress=False)
    spec = spec_from_profile(tiny_profile)
    runs = {}
    for i, m in enumerate(("mae", "dino")):
        torch.manual_seed(10 + i)
        save_encoder(spec.create().state_dict(), base / m, spec.to_dict())
        runs[m] = base / m
    return base, runs, tiny_profile


def _sweep(base, runs, profile, csv, **kw):
    args = dict(methods=("random", "scratch", "mae"), fractions=(50, 100), seeds=(0,),
                tasks=("vegetation", "landcover"), protocol="linear", pretrained=runs, aoi="sim-a",
                ood=(base / "b", "sim-b"), cache_dir=base / "cache", progress=False)
    args.update(kw)
    return run_sweep(profile, base / "a", csv, **args)


def test_plan_and_bad_protocol():
    plan = plan_runs(["vegetation", "landcover"], ["scratch", "mae"], [1, 10], [0, 1], {"landcover": "knn"})
    assert len(plan) == 16 and {r.protocol for r in plan if r.method == "mae" and r.task == "landcover"} == {"knn"}
    assert {r.protocol for r in plan if r.method == "scratch"} == {"scratch"}  # trained end to end, always
    # random features probe like the pretrained encoders (linear when those fine-tune); tile probes per pool
    plan = plan_runs(["vegetation", "landcover"], ["random", "scratch", "mae"], [10], [0], "finetune",
                     pools=("mean", "cls"))
    got = {(r.method, r.task): (r.protocol, tuple(sorted({x.pool for x in plan if (x.method, x.task) == (r.method, r.task)})))
           for r in plan}
    assert got == {("random", "vegetation"): ("linear", ("cls", "mean")), ("random", "landcover"): ("linear", ("grid",)),
                   ("scratch", "vegetation"): ("scratch", ("mean",)), ("scratch", "landcover"): ("scratch", ("grid",)),
                   ("mae", "vegetation"): ("finetune", ("mean",)), ("mae", "landcover"): ("finetune", ("grid",))}
    with pytest.raises(ValueError, match="pools"):
        plan_runs(["vegetation"], ["mae"], [10], [0], pools=("max",))
    with pytest.raises(ValueError, match="classification"):
        plan_runs(["vegetation"], ["mae"], [10], [0], "knn")
    with pytest.raises(ValueError, match="percentages"):
        plan_runs(["vegetation"], ["mae"], [0], [0])


def test_sweep_rows_resume_and_subsets(setup, tmp_path, monkeypatch):
    base, runs, profile = setup
    csv = tmp_path / "sweep.csv"
    seen = []
    real = finetune_mod.train_and_evaluate

    def spy(task, protocol, encoder, profile, train, evals, seed=0, **kw):
        ids = train.ids if hasattr(train, "ids") else [ident for _, ident in train.items]  # bank or dataset
        seen.append((task, seed, len(train), tuple(ids)))
        return real(task, protocol, encoder, profile, train, evals, seed=seed, **kw)

    monkeypatch.setattr(finetune_mod, "train_and_evaluate", spy)
    part = _sweep(base, runs, profile, csv, max_runs=5)
    assert len(part) == 5 * 2  # 5 runs x 2 regions
    df = _sweep(base, runs, profile, csv)
    n_runs = 2 * (3 + 2 + 3)  # fractions x (random: 2 pools + grid; scratch: 1 pool + grid; mae: as random)
    assert len(df) == n_runs * 2 and len(seen) == n_runs
    keys = ["task", "method", "protocol", "pool", "limit_pct", "seed", "region"]
    assert not df.duplicated(keys).any()
    assert set(df["region"]) == {"in", "out"}
    assert set(df[df["method"] == "scratch"]["protocol"]) == {"scratch"}
    assert set(df[df["task"] == "vegetation"]["pool"]) == {"mean", "cls"}
    for col in ("task", "method", "protocol", "pool", "limit_pct", "n_tiles", "seed", "region", "seconds", "rmse", "miou",
                "accuracy", "iou_tree_cover"):
        assert col in df.columns
    veg = df[df["task"] == "vegetation"]
    assert veg["rmse"].notna().all() and veg["miou"].isna().all()
    # identical labelled subsets for every method (per fraction and seed), nested across fractions
    by = {}
    for task, seed, n, ids in seen:
        by.setdefault((task, seed, n), set()).add(ids)
    assert all(len(v) == 1 for v in by.values())
    s50 = next(iter(by[("landcover", 0, min(n for t, s, n in by if s == 0))]))
    s100 = next(iter(by[("landcover", 0, max(n for t, s, n in by if s == 0))]))
    assert set(s50) < set(s100)
    assert df.groupby(["task", "limit_pct", "seed"])["n_tiles"].nunique().eq(1).all()
    # resume: a finished sweep trains nothing and leaves the file as it is
    before = csv.read_bytes()
    seen.clear()
    again = _sweep(base, runs, profile, csv)
    assert seen == [] and csv.read_bytes() == before and len(again) == len(df)


def test_append_rows_union_and_finished(tmp_path):
    csv = tmp_path / "r.csv"
    row = dict(task="vegetation", method="mae", protocol="linear", pool="mean", limit_pct=10.0, n_tiles=3, seed=0)
    append_rows(csv, [{**row, "region": "in", "rmse": 1.0, "seconds": 1.0}])
    assert finished_runs(read_results(csv), ["in", "out"]) == set()
    df = append_rows(csv, [{**row, "region": "out", "rmse": 2.0, "miou": 0.5, "seconds": 1.0}])
    assert list(df.columns[:8]) == ["task", "method", "protocol", "pool", "limit_pct", "n_tiles", "seed", "region"]
    assert df.columns[-1] == "seconds" and np.isnan(df["miou"].iloc[0])
    assert finished_runs(read_results(csv), ["in", "out"]) == {("vegetation", "mae", "linear", "mean", 10.0, 0)}


def _synthetic():
    rows = []
    for method, scores in {"scratch": [10, 8, 6], "mae": [7, 6, 5], "dino": [9, 7.5, 6]}.items():
        for n, s in zip([4, 40, 400], scores):
            for seed in (0, 1):
                rows.append(dict(task="vegetation", method=method, protocol="finetune", pool="mean", limit_pct=n / 4,
                                 n_tiles=n,
                                 seed=seed, region="in", rmse=s + 0.1 * seed, r2=0.5))
    return pd.DataFrame(rows)


def test_label_savings_and_summary():
    df = _synthetic()
    s = label_savings(df, "vegetation", "rmse").set_index("method")
    assert "scratch" not in s.index and set(s["control"]) == {"scratch"}  # the control is not its own row
    assert s.loc["mae", "control_tiles"] == 400 and s.loc["mae", "tiles_needed"] == pytest.approx(40)
    assert s.loc["mae", "saving"] == pytest.approx(10.0) and not s.loc["mae", "censored"]
    assert s.loc["mae", "low"] <= 10.0 <= s.loc["mae", "high"]
    assert s.loc["dino", "tiles_needed"] == 400 and s.loc["dino", "saving"] == pytest.approx(1.0)
    summ = summarize(df, ["rmse"])
    row = summ[(summ["method"] == "mae") & (summ["n_tiles"] == 4)].iloc[0]
    assert row["rmse_mean"] == pytest.approx(7.05) and row["rmse_count"] == 2


def test_plots(setup, tmp_path):
    df = _synthetic()
    fig = plot_label_efficiency(df, "rmse", "vegetation")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and len(ax.lines) == 3
    plt.close(fig)
    # probes on two pools: the lines use the pool every arm has, and a seed is counted once
    cls = df[df["method"] != "scratch"].assign(pool="cls", rmse=lambda x: x["rmse"] + 5)
    fig = plot_label_efficiency(pd.concat([df, cls]), "rmse", "vegetation")
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert len(fig.axes[0].lines) == 3 and all("(2 seeds)" in label for label in labels)
    assert max(fig.axes[0].lines[1].get_ydata()) < 8  # mae on mean tokens, not mixed with cls
    plt.close(fig)
    rows = pd.DataFrame([dict(task="landcover", method=m, protocol="linear", pool="grid", limit_pct=100.0, n_tiles=8, seed=s,
                              region="in", miou=0.3, iou_tree_cover=0.2 + s / 10, iou_cropland=0.5)
                         for m in ("scratch", "mae") for s in (0, 1)])
    fig = plot_per_class_iou(rows)
    assert len(fig.axes[0].patches) == 4  # 2 classes x 2 methods
    plt.close(fig)
    fig = plot_sweep(df, "vegetation", ["rmse", "r2"])
    assert len(fig.axes) == 2
    plt.close(fig)
    with pytest.raises(ValueError, match="no rows"):
        plot_label_efficiency(df, "miou", "vegetation")


def test_verdict_pool_is_one_every_arm_has():
    from sarssl.train.sweep import headline_pool

    df = _synthetic()
    cls = df[df["method"] != "scratch"].assign(pool="cls", rmse=lambda d: d["rmse"] + 100)
    assert headline_pool(pd.concat([df, cls])) == "mean"  # every arm has mean: the preferred pool
    # a sweep whose first probe pool is cls trains scratch on cls only: the verdicts read cls for every arm
    only_cls = pd.concat([cls, df[df["method"] == "scratch"].assign(pool="cls"),
                          df[df["method"] != "scratch"]], ignore_index=True)
    assert headline_pool(only_cls) == "cls"
    s = label_savings(only_cls, "vegetation", "rmse").set_index("method")
    assert s.loc["mae", "saving"] == 0.0  # the cls probes (+100 RMSE) never reach scratch, the mean rows are not read


def test_tasks_with_labels():
    from sarssl.train.tasks import tasks_with_labels

    kept, missing = tasks_with_labels(("vegetation", "landcover"), ("s1grd-2020", "modis44b006veg"))
    assert kept == ("vegetation",) and missing == {"landcover": "esaworldcover-2020"}


def test_sweep_csv_and_regions_per_data_source(tmp_path, monkeypatch):
    """Sweeps on different data never share a results file; the out-of-region set follows the data."""
    import sarssl.workspace as ws
    from sarssl.profiles import get_profile

    monkeypatch.setenv("SARSSL_HOME", str(tmp_path / "ws"))
    profile = get_profile("smoke")

    def source(kind, root, aois):
        return ws.DataSource(tmp_path / root, tuple(aois), kind, ("s1grd-2020",), 32, str(root), "")

    sim, one = source("sim", "r", ["sim-a"]), source("m3leo", "r", ["conus"])
    two = source("m3leo", "r", ["conus", "china"])
    other = source("m3leo", "q", ["conus"])
    paths = {ws.sweep_csv(profile, d) for d in (sim, one, two, other)}
    assert len(paths) == 4 and ws.sweep_csv(profile, sim) == ws.sweep_csv(profile)
    assert ws.sweep_regions(profile, two)[0] == (tmp_path / "r", "china")
    ood, note = ws.sweep_regions(profile, one)
    assert ood is None and "one AOI ('conus')" in note
    monkeypatch.setattr(ws, "simulated_region", lambda profile, aoi, seed, progress: tmp_path / f"{aoi}-{seed}")
    assert ws.sweep_regions(profile, sim)[0] == (tmp_path / "sim-b-1", "sim-b")


def test_cli_sweep_takes_data_and_skips_tasks_without_labels(setup, tmp_path, monkeypatch, capsys):
    import shutil

    from sarssl.cli import main
    from sarssl.data.layout import AOILayout
    from sarssl.profiles import get_profile
    from sarssl.workspace import resolve_data, sweep_csv

    base, runs, _ = setup
    monkeypatch.setenv("SARSSL_HOME", str(tmp_path / "ws"))
    root = tmp_path / "data"
    shutil.copytree(base / "a", root)
    shutil.rmtree(AOILayout.find(root, "sim-a").product_dir("esaworldcover-2020"))  # no land-cover labels
    assert main(["sweep", "--profile", "smoke", "--data", str(root), "--tasks", "vegetation", "landcover",
                 "--methods", "random", "--fractions", "100", "--seeds", "0"]) == 0
    out = capsys.readouterr().out
    assert "task 'landcover' skipped: the data holds no 'esaworldcover-2020' labels" in out
    assert "no out-of-region test: the data holds one AOI ('sim-a')" in out
    csv = sweep_csv(get_profile("smoke"), resolve_data(str(root), "smoke", progress=False))
    assert csv.parent.name.startswith("sweep-m3leo-") and f"results: {csv}" in out
    assert set(read_results(csv)["task"]) == {"vegetation"}


def test_saving_text():
    from sarssl.analysis.verdicts import saving_text

    row = dict(saving=2.345, low=1.1, high=4.0, censored=False)
    assert saving_text(row) == "×2.3 (95 % CI 1.1–4.0)"
    assert saving_text({**row, "censored": True}).startswith("at least ×2.3")
    assert saving_text({**row, "saving": 0.0}).startswith("never reaches")
