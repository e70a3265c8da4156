"""The label-efficiency sweep: {random, scratch, MAE, DINO} x label fractions x seeds x region, to a tidy CSV.

The arms (:data:`~sarssl.train.tasks.METHODS`): ``mae`` and ``dino`` run the profile's protocol on
their pretrained encoders; ``random`` runs the same probe on a frozen random-initialised encoder
(random features: what the architecture gives without any training); ``scratch`` trains the same
encoder end to end from a random init on the labelled tiles only, with the full decoders, no
layer decay and ``scratch_epochs`` (supervised from scratch: the study's baseline). Tile targets
are probed on each of ``probe_pools`` (mean-pooled patch tokens and CLS); the ``pool`` column says
which (``grid`` for dense targets).

Every run trains one head on ``limit_pct`` % of the pretraining region's labelled train chips (the
subset comes from the dataset's ``limit_pct`` + ``seed``, so every method sees the same chips, and
smaller fractions are nested in larger ones) and is evaluated on the test split (``eval_split``) of the
same region (``region = "in"``) and, when given, on the test split of a second region
(``region = "out"``, e.g. a simulated AOI ``sim-b`` drawn with another seed), with one normalisation
for both.

The CSV has one row per (run, region): ``task, method, protocol, limit_pct, n_tiles, seed, region``,
the metrics (``rmse, mae, r2`` or ``miou, accuracy, iou_<class>``), ``n_eval`` (tiles or pixels
scored), ``steps`` and ``seconds`` (training + evaluation; cached feature extraction excluded). Rows
are written atomically after each run (the file is rewritten through a temporary file), and a run
whose rows are all present is skipped, so an interrupted sweep resumes with the same call.

Frozen protocols extract each encoder's features once per method (per seed for random encoders)
and train every fraction and seed on the cache.

Every row carries the sweep's identity as a short ``fingerprint`` column (:func:`sweep_identity`:
the profile, its encoder and fine-tuning configuration without the grid, the split files of the
in-region and out-of-region data, the year, ``epochs`` and the overrides). Before anything runs,
:func:`check_sweep_csv` refuses an output path that is a folder, an existing file that is not a sweep
CSV, or a sweep CSV with rows of another identity (or of an older sarssl, without the column), so two
sweeps never mix in one file.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sarssl.errors import UserError
from sarssl.train.metrics import higher_is_better
from sarssl.train.tasks import FROZEN_PROTOCOLS, METHODS, PROTOCOLS, TARGETS, get_target, products_for

__all__ = ["SweepRun", "KEY_COLUMNS", "RUN_KEY", "FINGERPRINT_COLUMN", "plan_runs", "method_protocol", "read_results",
           "append_rows", "finished_runs", "run_sweep", "summarize", "label_savings", "seed_table", "headline_pool",
           "METHODS", "sweep_identity", "sweep_output", "SweepOutput", "check_sweep_csv"]

KEY_COLUMNS = ("task", "method", "protocol", "pool", "limit_pct", "n_tiles", "seed", "region")
RUN_KEY = ("task", "method", "protocol", "pool", "limit_pct", "seed")
#: the column holding the sweep's identity (:func:`sweep_identity`) as 12 hex digits, last in every row
FINGERPRINT_COLUMN = "fingerprint"
#: fine-tuning fields that are not part of a sweep's identity: the grid (each row names its point) and
#: what does not change the numbers
_GRID_FIELDS = ("label_fractions", "seeds", "protocol", "tasks", "num_workers", "checkpoint_every", "log_every",
                "tensorboard")


@dataclass(frozen=True)
class SweepRun:
    """One training run of the sweep (evaluated on every region)."""

    task: str
    method: str
    protocol: str
    pool: str  # "mean" | "cls" for tile targets, "grid" for dense ones
    limit_pct: float
    seed: int

    @property
    def key(self) -> tuple:
        return (self.task, self.method, self.protocol, self.pool, round(float(self.limit_pct), 6), int(self.seed))


def _protocol_for(task: str, protocol) -> str:
    p = protocol.get(task, "finetune") if isinstance(protocol, dict) else protocol
    if p not in PROTOCOLS:
        raise ValueError(f"unknown protocol {p!r} for task {task!r}: expected one of {PROTOCOLS}")
    if p == "knn" and get_target(task).kind != "segmentation":
        raise ValueError(f"protocol 'knn' needs a classification task; {task!r} is a regression")
    return p


def method_protocol(method: str, protocol: str) -> str:
    """The protocol an arm runs: ``scratch`` trains end to end (protocol ``scratch``); ``random`` probes
    frozen features (the sweep's protocol when it is frozen, else ``linear``); pretrained encoders run
    ``protocol``."""
    if method == "scratch":
        return "scratch"
    if method == "random":
        return protocol if protocol in FROZEN_PROTOCOLS else "linear"
    return protocol


def plan_runs(tasks, methods, fractions, seeds, protocol="finetune", pools=("mean",)) -> list[SweepRun]:
    """Every (method, task, pool, fraction, seed) run, method-major (the order the sweep runs them, so an
    interrupted sweep resumes without re-extracting features); ``protocol``: one name or task -> name.

    Tile targets get one run per pool in ``pools`` when the encoder is frozen, the first pool when it
    is trained; dense targets get ``pool = "grid"``.
    """
    for m in methods:
        if not isinstance(m, str):
            raise ValueError(f"methods must be names, got {m!r}")
    for f in fractions:
        if not 0 < float(f) <= 100:
            raise ValueError(f"label fractions are percentages in (0, 100], got {f}")
    bad = [p for p in pools if p not in ("mean", "cls")]
    if not pools or bad:
        raise ValueError(f"pools must be a non-empty list of 'mean' / 'cls', got {list(pools)}")
    runs = []
    for m in methods:
        for t in tasks:
            p = method_protocol(m, _protocol_for(t, protocol))
            if get_target(t).kind != "tile":
                task_pools = ("grid",)
            else:
                task_pools = tuple(pools) if p in FROZEN_PROTOCOLS else tuple(pools[:1])
            runs += [SweepRun(t, m, p, pool, float(f), int(s)) for pool in task_pools for f in fractions for s in seeds]
    return runs


# --------------------------------------------------------------------------------------------
# The results file: identity, checks, reading and appending
# --------------------------------------------------------------------------------------------
def sweep_identity(profile, data_root, aoi: str, ood=None, year: int = 2020, epochs: int | None = None,
                   overrides: dict | None = None, eval_split: str = "test") -> dict:
    """What makes a sweep's rows comparable: the profile's name, encoder and fine-tuning configuration
    (without the grid: fractions, seeds, tasks and protocol are in every row), the split-file fingerprints
    (:func:`sarssl.data.fingerprint.split_digest`) of the in-region AOI and of the out-of-region one, the
    year, ``epochs``, the overrides of :func:`run_sweep` and the scored split when it is not ``test``."""
    from sarssl.data.fingerprint import data_fingerprint
    from sarssl.profiles import get_profile

    prof = get_profile(profile) if isinstance(profile, str) else profile
    ft = {k: v for k, v in asdict(prof.finetune).items() if k not in _GRID_FIELDS}
    data = {"in": data_fingerprint(data_root, [aoi])}
    if ood:
        data["out"] = data_fingerprint(ood[0], [ood[1]])
    identity = {"profile": prof.name, "model": asdict(prof.model), "finetune": ft, "data": data, "year": int(year),
                "epochs": epochs, "overrides": dict(sorted((overrides or {}).items()))}
    if eval_split != "test":  # test sweeps keep the fingerprints they always had
        identity["eval_split"] = eval_split
    return json.loads(json.dumps(identity, default=str))


class SweepOutput(os.PathLike):
    """A results path with the sweep's identity: :func:`append_rows` writes its :attr:`fingerprint` into
    every row. Made (and checked) by :func:`sweep_output`; usable wherever a path is."""

    def __init__(self, path, identity: dict):
        from sarssl.data.fingerprint import short_hash

        self.path = Path(path)
        self.identity = identity
        self.fingerprint = short_hash(json.dumps(identity, sort_keys=True), 12)

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"SweepOutput({str(self.path)!r}, fingerprint={self.fingerprint!r})"


def sweep_output(out_csv, profile, data_root, aoi: str, ood=None, year: int = 2020, epochs: int | None = None,
                 overrides: dict | None = None, eval_split: str = "test") -> SweepOutput:
    """``out_csv`` with the sweep's identity (:func:`sweep_identity`), checked by :func:`check_sweep_csv`
    before anything runs."""
    out = SweepOutput(out_csv.path if isinstance(out_csv, SweepOutput) else out_csv,
                      sweep_identity(profile, data_root, aoi, ood, year, epochs, overrides, eval_split))
    check_sweep_csv(out.path, out.fingerprint)
    return out


def check_sweep_csv(path, fingerprint: str | None = None) -> None:
    """Refuse (:class:`~sarssl.errors.UserError`) a results path a sweep must not write to.

    A folder, a path under a file, an existing file that is not a sweep CSV (no key columns), and, with
    ``fingerprint``, a sweep CSV holding rows of another sweep identity or rows without a fingerprint
    (written by an older sarssl). A missing or empty file passes.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"sweep results path {str(path)!r} is a folder: pass a CSV file, e.g. {str(path / 'sweep.csv')!r}")
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise UserError(f"sweep results path {str(path)!r}: {str(parent)!r} is a file, not a folder")
    if not path.exists() or path.stat().st_size == 0:
        return
    hint = "pass another --out (out_csv), or delete the file to start this sweep afresh"
    try:
        df = pd.read_csv(path, dtype={FINGERPRINT_COLUMN: str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError, OSError) as e:
        raise UserError(f"{str(path)!r} exists and is not a sweep results CSV ({type(e).__name__}): {hint}") from e
    missing = [c for c in KEY_COLUMNS if c not in df.columns]
    if missing == ["pool"]:
        raise UserError(f"{str(path)!r} holds sweep rows without a 'pool' column (an older sarssl wrote them, before "
                        f"the random-features and supervised-from-scratch arms): {hint}")
    if missing:
        raise UserError(f"{str(path)!r} exists and is not a sweep results CSV (no column(s) {missing}): {hint}")
    if fingerprint is None or df.empty:
        return
    if FINGERPRINT_COLUMN not in df.columns or df[FINGERPRINT_COLUMN].isna().any():
        raise UserError(f"{str(path)!r} holds sweep rows without a {FINGERPRINT_COLUMN!r} column (an older sarssl "
                        f"wrote them, so their data and configuration are unknown): {hint}")
    other = sorted(set(df[FINGERPRINT_COLUMN]) - {fingerprint})
    if other:
        raise UserError(f"{str(path)!r} holds rows of another sweep (fingerprint {', '.join(other)}; this sweep is "
                        f"{fingerprint}: another profile, data region, fine-tuning configuration, epochs or "
                        f"overrides): {hint}")


def read_results(path) -> pd.DataFrame:
    """The sweep CSV as a DataFrame (empty, with the key columns, when the file does not exist)."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame(columns=list(KEY_COLUMNS))
    return pd.read_csv(path, dtype={FINGERPRINT_COLUMN: str})


def append_rows(path, rows: list[dict]) -> pd.DataFrame:
    """Append ``rows`` to the CSV at ``path`` atomically (rewrite via a temporary file + ``os.replace``).

    New metric columns are added (missing values empty); key columns stay first. With a
    :class:`SweepOutput` each row gets its ``fingerprint`` (the last column).
    """
    if isinstance(path, SweepOutput):
        rows = [{**r, FINGERPRINT_COLUMN: path.fingerprint} for r in rows]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    old = read_results(path)
    new = pd.DataFrame(rows)
    df = new if old.empty else pd.concat([old, new], ignore_index=True)
    first = [c for c in KEY_COLUMNS if c in df.columns]
    last = [c for c in ("n_eval", "steps", "seconds", FINGERPRINT_COLUMN) if c in df.columns]
    df = df[first + [c for c in df.columns if c not in first and c not in last] + last]
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return df


def finished_runs(df: pd.DataFrame, regions) -> set[tuple]:
    """Run keys (:attr:`SweepRun.key`) whose rows exist for every region in ``regions``."""
    if df.empty:
        return set()
    got: dict[tuple, set] = {}
    for row in df[list(RUN_KEY) + ["region"]].itertuples(index=False):
        key = SweepRun(str(row.task), str(row.method), str(row.protocol), str(row.pool), row.limit_pct, row.seed).key
        got.setdefault(key, set()).add(str(row.region))
    need = set(regions)
    return {k for k, v in got.items() if need <= v}


def _subset_ids(ds) -> list[str]:
    return [ident for _, ident in ds.items]


def run_sweep(profile, data_root, out_csv, methods=METHODS, fractions=None, seeds=None,
              tasks=None, protocol=None, pretrained: dict | None = None, aoi: str = "sim-a", ood=None,
              cache_dir=None, epochs: int | None = None, year: int = 2020, device: str | None = None,
              progress: bool = True, max_runs: int | None = None, eval_split: str = "test",
              **overrides) -> pd.DataFrame:
    """Run (or resume) the label-efficiency sweep and return the CSV's rows.

    Args:
        profile: profile name or Profile; ``profile.finetune`` gives the default fractions, seeds,
            tasks, protocol, epochs and learning rates.
        data_root / aoi: the pretraining region (an M3LEO root and the AOI in it; the book and the CLI
            pass a :func:`sarssl.workspace.resolve_data` source's ``root`` and ``aoi``).
        out_csv: results file (the book and the CLI use ``sarssl.workspace.sweep_csv(profile, data)``, one
            per data source; rows of another data source in the file are refused).
        methods: arms among ``random``, ``scratch``, ``mae``, ``dino`` or run folders (named by folder,
            run like ``mae``/``dino``).
        pretrained: ``{"mae": run_dir, "dino": run_dir}`` (default: the workspace runs).
        protocol: the pretrained encoders' protocol, one for every task or a dict task -> protocol
            (``random`` and ``scratch`` follow :func:`method_protocol`).
        ood: out-of-region test set ``(root, aoi)``, or ``None`` for none.
        max_runs: stop after this many new runs (the next call resumes).
        eval_split: the split scored (``"test"``; ``"val"`` for model selection and ablations), in region
            ``in`` and in ``ood``.
        overrides: TrainConfig fields for every run (``batch_size``, ``lr``...).
    """
    from tqdm.auto import tqdm

    from sarssl.profiles import get_profile
    from sarssl.train.featurebank import extract_bank
    from sarssl.train.finetune import load_init_encoder, train_and_evaluate
    from sarssl.train.finetune_data import finetune_dataset, finetune_normalization
    from sarssl.train.protocols import build_head

    if data_root is None or out_csv is None:
        raise ValueError("run_sweep needs data_root (an M3LEO root) and out_csv (the results file); the book "
                         "layer's are sarssl.workspace.resolve_data(DATA, profile).root and sweep_csv(profile, data)")
    prof = get_profile(profile) if isinstance(profile, str) else profile
    # identity; path checked first
    out_csv = sweep_output(out_csv, prof, data_root, aoi, ood, year, epochs, overrides, eval_split)
    ft = prof.finetune
    tasks = tuple(tasks or ft.tasks)
    fractions = tuple(fractions or ft.label_fractions)
    seeds = tuple(seeds if seeds is not None else ft.seeds)
    protocol = protocol or ft.protocol
    regions = ["in"] + (["out"] if ood else [])
    names = {m: (m if m in METHODS else Path(str(m)).name) for m in methods}
    plan = [SweepRun(r.task, names[r.method], r.protocol, r.pool, r.limit_pct, r.seed)
            for r in plan_runs(tasks, methods, fractions, seeds, protocol, ft.probe_pools)]
    init_of = {names[m]: ("scratch" if m == "random" else m) for m in methods}
    done = finished_runs(read_results(out_csv), regions)
    todo = [r for r in plan if r.key not in done]
    if max_runs is not None:
        todo = todo[:max_runs]
    if not todo:
        return read_results(out_csv)

    norm = finetune_normalization(data_root, aoi, prof, f"s1grd-{year}")
    products = products_for(tasks, year)
    full_train = finetune_dataset(data_root, aoi, "train", products, norm, 100.0, 0, cache_dir)
    tests = {"in": finetune_dataset(data_root, aoi, eval_split, products, norm, cache_dir=cache_dir)}
    if ood:
        tests["out"] = finetune_dataset(ood[0], ood[1], eval_split, products, norm, cache_dir=cache_dir)
    subsets: dict[tuple, object] = {}

    def subset(pct, seed):
        key = (round(float(pct), 6), int(seed))
        if key not in subsets:
            subsets[key] = finetune_dataset(data_root, aoi, "train", products, norm, pct, seed, cache_dir)
        return subsets[key]

    bar = tqdm(total=len(plan), initial=len(plan) - len(todo), desc="sweep", unit="run", disable=not progress)
    try:
        for method in dict.fromkeys(r.method for r in todo):
            runs_m = [r for r in todo if r.method == method]
            init = init_of[method]
            base = None if init == "scratch" else load_init_encoder(init, prof, pretrained)
            groups = sorted({r.seed for r in runs_m}) if base is None else [None]
            for enc_seed in groups:
                runs = [r for r in runs_m if enc_seed is None or r.seed == enc_seed]
                encoder = base if base is not None else load_init_encoder("scratch", prof, seed=enc_seed)
                banks = None
                if any(r.protocol in FROZEN_PROTOCOLS for r in runs):
                    idx = sorted({i for r in runs
                                  for i in getattr(build_head(r.task, encoder, r.protocol), "indices", ())})
                    bar.set_postfix_str(f"{method}: features")
                    banks = {"train": extract_bank(encoder, full_train, idx or (-1,), device=device)}
                    banks.update({k: extract_bank(encoder, v, idx or (-1,), device=device) for k, v in tests.items()})
                for r in runs:
                    bar.set_postfix_str(f"{r.task} {method} {r.pool} {r.limit_pct:g}% seed {r.seed}")
                    ds = subset(r.limit_pct, r.seed)
                    if r.protocol in FROZEN_PROTOCOLS:
                        train, evals = banks["train"].rows(_subset_ids(ds)), {k: banks[k] for k in tests}
                    else:
                        train, evals = ds, tests
                    run_epochs = epochs if epochs is not None or r.protocol != "scratch" else ft.scratch_epochs
                    run = train_and_evaluate(r.task, r.protocol, encoder, prof, train, evals, seed=r.seed,
                                             epochs=run_epochs, device=device,
                                             layer_decay=1.0 if init == "scratch" else None,
                                             pool=r.pool if r.pool != "grid" else None, **overrides)
                    rows = []
                    for region in regions:
                        m = dict(run.metrics[region])
                        n_eval = m.pop("n", None)
                        rows.append({"task": r.task, "method": method, "protocol": r.protocol, "pool": r.pool,
                                     "limit_pct": float(r.limit_pct), "n_tiles": run.n_tiles, "seed": r.seed,
                                     "region": region, **m, "n_eval": n_eval, "steps": run.steps,
                                     "seconds": round(run.seconds, 3)})
                    append_rows(out_csv, rows)
                    bar.update(1)
    finally:
        bar.close()
    return read_results(out_csv)


# --------------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------------
def summarize(df: pd.DataFrame, metrics=None) -> pd.DataFrame:
    """Mean, std and count over seeds per (task, method, protocol, region, limit_pct, n_tiles)."""
    if df.empty:
        return df
    keys = ["task", "method", "protocol", "pool", "region", "limit_pct", "n_tiles"]
    metrics = list(metrics) if metrics else [c for c in df.columns if c not in KEY_COLUMNS and c not in
                                              ("n_eval", "steps", "seconds") and pd.api.types.is_numeric_dtype(df[c])]
    g = df.groupby(keys, sort=True)[metrics]
    out = g.agg(["mean", "std", "count"])
    out.columns = [f"{m}_{s}" for m, s in out.columns]
    return out.reset_index()


def headline_pool(df: pd.DataFrame) -> str:
    """The pool whose rows carry a target's verdicts: of the pools every arm (method) in ``df`` has,
    ``mean`` first, then ``cls``, then ``grid``, so trained arms (one pool) and probes (every pool)
    are compared on the same tokens."""
    if "pool" not in df.columns or df.empty:
        return "grid"
    shared = set.intersection(*(set(g) for _, g in df.groupby("method")["pool"]))
    return next((p for p in ("mean", "cls", "grid") if p in shared), "grid")


def seed_table(df: pd.DataFrame, task: str, method: str, metric: str, region: str = "in",
               pool: str | None = None) -> dict[float, list[float]]:
    """``{n_tiles: [score per seed, in seed order]}`` of one arm on ``pool`` (default
    :func:`headline_pool` of the task's rows): the curve :func:`sarssl.evidence.label_saving` reads."""
    d = df[(df["task"] == task) & (df["region"] == region)]
    if "pool" in d.columns and not d.empty:
        d = d[d["pool"] == (pool or headline_pool(d))]
    d = d[d["method"] == method].sort_values("seed")
    table: dict[float, list[float]] = {}
    for row in d.itertuples(index=False):
        table.setdefault(float(row.n_tiles), []).append(float(getattr(row, metric)))
    return table


def label_savings(df: pd.DataFrame, task: str, metric: str | None = None, region: str = "in",
                  control: str = "scratch", methods=None, n_boot: int = 1000) -> pd.DataFrame:
    """How many times fewer labelled tiles each method needs than ``control`` to reach the control's
    score with all its tiles (:func:`sarssl.evidence.label_saving`: crossings interpolated in
    log(tiles), a bootstrap interval over seeds).

    Columns: ``method, metric, control, target, tiles_needed, control_tiles, saving, low, high,
    censored`` (``censored``: the method beats the target already at its smallest label count, so the
    saving is at least ``saving``; ``saving = 0``: the method never reaches the target).
    """
    from sarssl.evidence import label_saving

    spec = get_target(task) if task in TARGETS else None
    metric = metric or (spec.primary if spec else "rmse")
    d = df[(df["task"] == task) & (df["region"] == region)]
    if d.empty:
        raise ValueError(f"no rows for task {task!r} and region {region!r}")
    if control not in set(d["method"]):
        raise ValueError(f"control {control!r} is not in the results (methods: {sorted(d['method'].unique())})")
    pool = headline_pool(d)
    ctrl = seed_table(d, task, control, metric, region, pool)
    rows = []
    for method in methods or [m for m in dict.fromkeys(d["method"]) if m != control]:
        curve = seed_table(d, task, method, metric, region, pool)
        if not curve:
            continue
        s = label_saving(curve, ctrl, higher_is_better(metric), n_boot=n_boot)
        rows.append({"method": method, "metric": metric, "control": control, "target": s.target,
                     "tiles_needed": s.method_tiles, "control_tiles": s.control_tiles, "saving": s.value,
                     "low": s.low, "high": s.high, "censored": s.censored})
    return pd.DataFrame(rows)
