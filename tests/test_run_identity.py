"""Nothing mixed, nothing lost: run identities, sweep fingerprints, SIGTERM/SIGINT and kill -9 with exact resume.

Fault classes (issue 13): a finished run "resumed" on another data root, another method written into a
run folder, a changed configuration resumed into an old folder, a sweep CSV collecting rows of two data
roots or overwriting an unrelated file, a killed DINO or MAE run (SIGKILL in a real ``sarssl pretrain``
process, SIGTERM and Ctrl-C in the engine). Smoke sizes: the slowest test takes a few tens of seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from sarssl.errors import UserError
from sarssl.train.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
#: 24 chips of 32 px (3 or 4 steps of batch 4 per epoch in the smoke profile)
SIM = dict(aoi="sim-a", n_chips=24, chip_size=32, progress=False)
KW = dict(overrides={"epochs": 1, "batch_size": 4}, progress=False)


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """Two roots holding an AOI 'sim-a': simulated with seed 0 and with seed 1."""
    from sarssl.data.simulate import simulate_region

    base = tmp_path_factory.mktemp("roots")
    simulate_region(base / "a", seed=0, **SIM)
    simulate_region(base / "b", seed=1, **SIM)
    return base / "a", base / "b"


@pytest.fixture
def ws(tmp_path, monkeypatch):
    monkeypatch.setenv("SARSSL_HOME", str(tmp_path / "ws"))
    return tmp_path / "ws"


@pytest.fixture(scope="module")
def mae_run(roots, tmp_path_factory):
    """A finished one-epoch MAE run on root a (its own workspace)."""
    from sarssl.train.pretrain import run_pretrain

    base = tmp_path_factory.mktemp("mae")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SARSSL_HOME", str(base / "ws"))
        out = run_pretrain("mae", "smoke", roots[0], base / "run", **KW)
    return out


def _snapshot(run_dir: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file()}


# ------------------------------------------------------------------------------------------------
# runs
# ------------------------------------------------------------------------------------------------
def test_run_json_records_the_identity(mae_run, roots):
    from sarssl.data.fingerprint import split_digest
    from sarssl.data.layout import AOILayout
    from sarssl.train.pretrain import RESUMABLE_FIELDS

    info = json.loads((mae_run / "run.json").read_text())
    ident = info["identity"]
    assert ident["method"] == "mae" and ident["profile"] == "smoke" and ident["aois"] == ["sim-a"] and ident["seed"] == 0
    assert ident["data_fingerprint"] == {"sim-a": split_digest(AOILayout.find(roots[0], "sim-a"))}
    assert "max_steps" not in ident["config"]["engine"] and "mask_ratio" in ident["config"]["mae"]
    assert "engine.max_steps" in RESUMABLE_FIELDS and len(info["fingerprint"]) == 12
    ckpt = load_checkpoint(mae_run / "checkpoint.pt")
    assert ckpt["step"] == ckpt["steps_per_epoch"] == ckpt["total_steps"]


def test_finished_run_on_another_data_root_is_refused(mae_run, roots, ws):
    from sarssl.train.pretrain import run_pretrain

    before = _snapshot(mae_run)
    with pytest.raises(UserError, match=r"holds another run .*the split file of AOI 'sim-a' differs .*new --out"):
        run_pretrain("mae", "smoke", roots[1], mae_run, **KW)
    assert _snapshot(mae_run) == before  # nothing written: run.json and metrics.csv as they were
    assert run_pretrain("mae", "smoke", roots[0], mae_run, **KW) == mae_run  # the same data: finished, returns
    assert _snapshot(mae_run) == {**before, "run.json": (mae_run / "run.json").read_bytes()}


def test_other_method_into_a_run_folder_is_refused_before_writing(mae_run, roots, ws, capsys):
    from sarssl.cli import main
    from sarssl.train.pretrain import run_pretrain

    before = _snapshot(mae_run)
    with pytest.raises(UserError, match=r"method 'mae' -> 'dino'"):
        run_pretrain("dino", "smoke", roots[0], mae_run, **KW)
    args = ["pretrain", "dino", "--profile", "smoke", "--data", str(roots[0]), "--out", str(mae_run)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "method 'mae' -> 'dino'" in err[0] and "--out" in err[0]
    assert _snapshot(mae_run) == before


@pytest.mark.parametrize("change, match", [
    ({"overrides": {"epochs": 2, "batch_size": 4}}, r"mae\.epochs 1 -> 2"),
    ({"overrides": {"epochs": 1, "batch_size": 4, "mask_ratio": 0.5}}, r"mae\.mask_ratio 0\.75 -> 0\.5"),
    ({"overrides": {"epochs": 1, "batch_size": 8}}, r"mae\.batch_size 4 -> 8"),
    ({"seed": 1}, r"seed 0 -> 1"),
    ({"profile": "cpu"}, r"profile 'smoke' -> 'cpu'"),
])
def test_changed_configuration_is_refused_naming_the_fields(mae_run, roots, ws, change, match):
    from sarssl.train.pretrain import run_pretrain

    kw = {**KW, "profile": "smoke", **change}
    profile = kw.pop("profile")
    with pytest.raises(UserError, match=match):
        run_pretrain("mae", profile, roots[0], mae_run, **kw)


def test_fields_that_do_not_change_the_numbers_may_change_on_resume(mae_run, roots, ws):
    from sarssl.train.pretrain import run_pretrain

    for extra in ({"max_steps": 1}, {"checkpoint_every": 1, "log_every": 1}, {"num_workers": 1},
                  {"tensorboard": False, "decode": "batch"}):
        out = run_pretrain("mae", "smoke", roots[0], mae_run, overrides={**KW["overrides"], **extra}, progress=False)
        assert out == mae_run


def test_legacy_run_json_and_bare_checkpoint_are_compared_on_what_they_record(mae_run, roots, ws, tmp_path):
    import shutil

    from sarssl.train.pretrain import run_pretrain

    legacy = tmp_path / "legacy"
    shutil.copytree(mae_run, legacy)
    info = json.loads((legacy / "run.json").read_text())
    for k in ("identity", "fingerprint"):
        info.pop(k)
    (legacy / "run.json").write_text(json.dumps(info))  # written before identities were saved
    from sarssl.data.simulate import simulate_region

    small = tmp_path / "small"
    simulate_region(small, seed=1, **{**SIM, "n_chips": 10})  # 1 or 2 steps per epoch, not 3 or 4
    before = (legacy / "run.json").read_bytes()
    # no data fingerprint saved: the data folder's path stands in for it
    with pytest.raises(UserError, match=rf"data_root '{roots[0].resolve()}' -> '{small.resolve()}'"):
        run_pretrain("mae", "smoke", small, legacy, **KW)
    assert (legacy / "run.json").read_bytes() == before
    assert run_pretrain("mae", "smoke", roots[0], legacy, **KW) == legacy  # the same run: resumes (finished)
    assert json.loads((legacy / "run.json").read_text())["identity"]["data_fingerprint"]  # now recorded
    (legacy / "run.json").write_text(before.decode())
    with pytest.raises(UserError, match=r"seed 0 -> 2"):
        run_pretrain("mae", "smoke", roots[0], legacy, seed=2, **KW)
    (legacy / "run.json").unlink()  # only the checkpoint's run_config is left
    with pytest.raises(UserError, match=r"method 'mae' -> 'dino'"):
        run_pretrain("dino", "smoke", roots[0], legacy, **KW)
    with pytest.raises(UserError, match=r"mae\.mask_ratio 0\.75 -> 0\.6"):
        run_pretrain("mae", "smoke", roots[0], legacy, overrides={**KW["overrides"], "mask_ratio": 0.6}, progress=False)
    # nothing tells the data apart here; the engine's own check stops the smaller region, and run.json is only
    # written once the engine has accepted the checkpoint: no run.json claims the folder for the wrong data
    with pytest.raises(UserError, match=r"checkpoint .* was written with \d+ steps per epoch .* this run has \d+"):
        run_pretrain("mae", "smoke", small, legacy, **KW)
    assert not (legacy / "run.json").exists()
    (legacy / "run.json").write_text("{not json")
    with pytest.raises(UserError, match=r"run\.json cannot be read"):
        run_pretrain("mae", "smoke", roots[0], legacy, **KW)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        run_pretrain("mae", "smoke", roots[0], a_file, **KW)


def test_every_pretraining_method_checkpoints_each_epoch():
    from sarssl.profiles import PROFILE_NAMES, train_config
    from sarssl.train.dino_setup import dino_train_config
    from sarssl.train.pretrain import mae_train_config

    for name in PROFILE_NAMES:  # None: at each epoch's end (the engine counts the steps); the kill tests below
        assert mae_train_config(train_config("mae", name), 64).checkpoint_every is None
        assert dino_train_config(train_config("dino", name), 64).checkpoint_every is None


# ------------------------------------------------------------------------------------------------
# sweeps
# ------------------------------------------------------------------------------------------------
def _sweep_kw(tiny_profile, cache):
    return dict(methods=("scratch",), fractions=(100,), seeds=(0,), tasks=("vegetation",), protocol="linear",
                aoi="sim-a", cache_dir=cache, progress=False)


def test_sweep_rows_carry_the_identity_and_other_sweeps_are_refused(roots, ws, tmp_path, tiny_profile):
    from sarssl.train.sweep import FINGERPRINT_COLUMN, read_results, run_sweep, sweep_output

    csv = tmp_path / "sweep.csv"
    kw = _sweep_kw(tiny_profile, tmp_path / "cache")
    df = run_sweep(tiny_profile, roots[0], csv, **kw)
    fp = sweep_output(csv, tiny_profile, roots[0], "sim-a").fingerprint
    assert len(df) == 1 and df[FINGERPRINT_COLUMN].tolist() == [fp] and df.columns[-1] == FINGERPRINT_COLUMN
    before = csv.read_bytes()
    assert len(run_sweep(tiny_profile, roots[0], csv, **kw)) == 1 and csv.read_bytes() == before  # resumes
    with pytest.raises(UserError, match=rf"rows of another sweep \(fingerprint {fp}; this sweep is "):
        run_sweep(tiny_profile, roots[1], csv, **kw)  # another data root: refused before any training
    with pytest.raises(UserError, match="rows of another sweep"):
        run_sweep(tiny_profile, roots[0], csv, epochs=3, **kw)
    assert csv.read_bytes() == before
    assert not pd.api.types.is_numeric_dtype(read_results(csv)[FINGERPRINT_COLUMN])  # text, never a number


@pytest.fixture
def no_training(monkeypatch):
    """Fail if a sweep gets as far as building its data (the path checks must come first)."""
    import sarssl.train.finetune_data as fd

    def boom(*a, **k):
        raise AssertionError("the sweep started before checking its output path")

    monkeypatch.setattr(fd, "finetune_normalization", boom)
    monkeypatch.setattr(fd, "finetune_dataset", boom)


def test_sweep_output_path_is_checked_before_anything_runs(roots, ws, tmp_path, tiny_profile, no_training, capsys):
    from sarssl.cli import main
    from sarssl.train.sweep import append_rows, run_sweep

    kw = _sweep_kw(tiny_profile, tmp_path / "cache")
    with pytest.raises(UserError, match="is a folder: pass a CSV file"):
        run_sweep(tiny_profile, roots[0], tmp_path, **kw)
    notes = tmp_path / "notes.csv"
    notes.write_text("my,own\nimportant,file\n")
    with pytest.raises(UserError, match=r"exists and is not a sweep results CSV \(no column\(s\) \['task'"):
        run_sweep(tiny_profile, roots[0], notes, **kw)
    assert notes.read_text() == "my,own\nimportant,file\n"
    binary = tmp_path / "model.pt"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(UserError, match="is not a sweep results CSV"):
        run_sweep(tiny_profile, roots[0], binary, **kw)
    legacy = tmp_path / "legacy.csv"  # rows of an older sarssl: no fingerprint column
    append_rows(legacy, [dict(task="vegetation", method="scratch", protocol="linear", pool="mean", limit_pct=100.0,
                              n_tiles=9,
                              seed=0, region="in", rmse=1.0, seconds=1.0)])
    with pytest.raises(UserError, match="without a 'fingerprint' column"):
        run_sweep(tiny_profile, roots[0], legacy, **kw)
    under_a_file = notes / "sweep.csv"
    with pytest.raises(UserError, match="is a file, not a folder"):
        run_sweep(tiny_profile, roots[0], under_a_file, **kw)
    for out in (tmp_path, notes):
        assert main(["sweep", "--profile", "smoke", "--data", str(roots[0]), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and ("is a folder" in err[0] or "is not a sweep results CSV" in err[0])


# ------------------------------------------------------------------------------------------------
# SIGTERM / SIGINT in the engine
# ------------------------------------------------------------------------------------------------
def _toy(signals=(), at=-1):
    """A tiny task that sends ``signals`` to its own process after optimiser step ``at`` (0-based)."""
    from torch import nn

    from sarssl.models.task import TrainTask

    class Toy(TrainTask):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(6, 16), nn.Dropout(0.2), nn.Linear(16, 1))

        def training_step(self, batch, info):
            x, y = batch
            return {"loss": nn.functional.mse_loss(self.net(x), y)}

        def on_after_optimizer_step(self, info):
            if info.step == at:
                for sig in signals:
                    os.kill(os.getpid(), sig)

    return Toy()


def _toy_fit(out, task, **kw):
    from torch.utils.data import TensorDataset

    from sarssl.train.engine import TrainConfig, Trainer

    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 6, generator=g)
    data = TensorDataset(x, x.sum(1, keepdim=True))
    cfg = TrainConfig(epochs=3, batch_size=4, base_lr=0.5, out_dir=str(out), device="cpu", progress=False,
                      tensorboard=False, log_every=3, checkpoint_every=None, **kw)
    return Trainer(task, data, cfg).fit()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_writes_a_checkpoint_at_the_next_step_and_resume_is_exact(tmp_path, sig):
    from sarssl.train.engine import TrainingInterrupted

    torch.manual_seed(0)
    full = _toy()
    _toy_fit(tmp_path / "full", full)
    handlers = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
    torch.manual_seed(0)
    with pytest.raises(TrainingInterrupted, match=rf"stopped by {sig.name} after step 5 of 24: checkpoint "
                                                  r".*checkpoint\.pt written; run the same command again") as info:
        _toy_fit(tmp_path / "split", _toy([sig], at=4))  # 8 steps per epoch: step 5 is mid-epoch
    assert isinstance(info.value, KeyboardInterrupt) and info.value.exit_code == 128 + sig and info.value.step == 5
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers  # restored
    assert load_checkpoint(tmp_path / "split" / "checkpoint.pt")["step"] == 5
    torch.manual_seed(99)
    resumed = _toy()
    _toy_fit(tmp_path / "split", resumed)
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    rows = pd.read_csv(tmp_path / "split" / "metrics.csv")
    assert rows["step"].tolist() == [3, 5, 6, 8, 9, 12, 15, 16, 18, 21, 24]  # the stop's own row at step 5


def test_second_signal_stops_at_once(tmp_path):
    from sarssl.train.engine import TrainingInterrupted

    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt, match="stopped at once by a second SIGINT") as info:
        _toy_fit(tmp_path, _toy([signal.SIGINT, signal.SIGINT], at=4))
    assert not isinstance(info.value, TrainingInterrupted)
    assert not (tmp_path / "checkpoint.pt").exists()  # no checkpoint: the first one is due after step 8
    assert signal.getsignal(signal.SIGINT) is handler


# ------------------------------------------------------------------------------------------------
# kill -9 of a real `sarssl pretrain` process, then the same command again
# ------------------------------------------------------------------------------------------------
#: runs the CLI after patching the engine to pause (write MARKER, sleep) before optimiser step PAUSE_AT
_PAUSING_CLI = """
import os, sys, time, torch
torch.set_num_threads(int(os.environ["TEST_THREADS"]))
from sarssl.train import engine
real = engine.Trainer._optimizer_step
def pausing(self, batches, info):
    if info.step == int(os.environ["TEST_PAUSE_AT"]):
        open(os.environ["TEST_MARKER"], "w").write(str(self.step))
        time.sleep(float(os.environ.get("TEST_SLEEP", "600")))
    return real(self, batches, info)
engine.Trainer._optimizer_step = pausing
from sarssl.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture
def one_thread():
    """One torch thread here and in the subprocess: the same numerics in both, and fast on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _start_paused(args, ws, marker, pause_at, sleep=600.0):
    env = {**os.environ, "PYTHONPATH": str(REPO), "SARSSL_HOME": str(ws), "TEST_THREADS": str(torch.get_num_threads()),
           "TEST_PAUSE_AT": str(pause_at), "TEST_MARKER": str(marker), "TEST_SLEEP": str(sleep)}
    proc = subprocess.Popen([sys.executable, "-c", _PAUSING_CLI, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before pausing (rc {proc.returncode}): {proc.stderr.read()[-2000:]}")
        if time.time() - t0 > 180:
            proc.kill()
            raise AssertionError("the run did not reach the pause within 180 s")
        time.sleep(0.05)
    return proc


def _assert_same_final_state(a: Path, b: Path, metrics: bool = True):
    ca, cb = load_checkpoint(a / "checkpoint.pt"), load_checkpoint(b / "checkpoint.pt")
    assert ca["step"] == cb["step"] == ca["total_steps"]
    for k, v in ca["task"].items():
        assert torch.equal(v, cb["task"][k]), k
    ea, eb = (torch.load(d / "encoder.pth", weights_only=True) for d in (a, b))
    assert all(torch.equal(ea[k], eb[k]) for k in ea)
    if not metrics:
        return
    ma, mb = pd.read_csv(a / "metrics.csv"), pd.read_csv(b / "metrics.csv")
    assert ma["step"].tolist() == mb["step"].tolist() and ma["loss"].tolist() == mb["loss"].tolist()


@pytest.mark.parametrize("method", ["mae", "dino"])
def test_kill_9_then_the_same_command_resumes_exactly(method, roots, ws, tmp_path, monkeypatch, one_thread):
    from sarssl.cli import main

    monkeypatch.setenv("SARSSL_HOME", str(ws))

    def args(out):  # 2 epochs; a checkpoint at each epoch's end
        return ["pretrain", method, "--profile", "smoke", "--data", str(roots[0]), "--out", str(out),
                "--epochs", "2", "--batch-size", "4", "--precision", "fp32"]  # auto times each process

    assert main(args(tmp_path / "full")) == 0
    spe = load_checkpoint(tmp_path / "full" / "checkpoint.pt")["steps_per_epoch"]
    killed = tmp_path / "killed"
    # paused before step spe + 3: two steps done after the first checkpoint, not saved
    proc = _start_paused(args(killed), ws, tmp_path / "paused", pause_at=spe + 2)
    assert load_checkpoint(killed / "checkpoint.pt")["step"] == spe  # the first checkpoint, at epoch 1's end
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert load_checkpoint(killed / "checkpoint.pt")["step"] == spe
    assert main(args(killed)) == 0  # the same command again
    _assert_same_final_state(tmp_path / "full", killed)


def test_sigterm_to_a_real_pretrain_process_checkpoints_and_exits_143(roots, ws, tmp_path, monkeypatch, one_thread):
    from sarssl.cli import main

    monkeypatch.setenv("SARSSL_HOME", str(ws))

    def args(out):
        return ["pretrain", "mae", "--profile", "smoke", "--data", str(roots[0]), "--out", str(out),
                "--epochs", "2", "--batch-size", "4", "--precision", "fp32"]  # auto times each process

    assert main(args(tmp_path / "full")) == 0
    spe = load_checkpoint(tmp_path / "full" / "checkpoint.pt")["steps_per_epoch"]
    stopped = tmp_path / "stopped"
    proc = _start_paused(args(stopped), ws, tmp_path / "paused", pause_at=spe, sleep=3.0)
    proc.send_signal(signal.SIGTERM)  # during the first step of epoch 2: it finishes, a checkpoint, the exit
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    last = [ln for ln in err.strip().splitlines() if ln.strip()][-1]
    assert last.startswith(f"sarssl pretrain: training stopped by SIGTERM after step {spe + 1} of {2 * spe}: "
                           "checkpoint ") and last.endswith("run the same command again to resume"), last
    assert load_checkpoint(stopped / "checkpoint.pt")["step"] == spe + 1
    assert main(args(stopped)) == 0
    _assert_same_final_state(tmp_path / "full", stopped, metrics=False)  # a row at the stop (as at max_steps)
