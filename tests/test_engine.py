"""The training engine: schedules, param groups, exact resume, non-finite stop, logging, export."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from sarssl.models.task import TrainTask, param_groups_weight_decay
from sarssl.train.checkpoint import load_checkpoint
from sarssl.train.engine import (
    EpochSampler, NonFiniteLossError, StepInfo, TrainConfig, Trainer, clip_gradients, resolve_precision,
)
from sarssl.train.schedules import cosine_value, warmup_cosine


class ToyData(Dataset):
    """Fixed random regression data; ``__getitem__`` adds noise from the global torch RNG."""

    def __init__(self, n=40, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 6, generator=g)
        self.y = self.x @ torch.randn(6, 1, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i] + 0.01 * torch.randn(6), "y": self.y[i]}


class ToyTask(TrainTask):
    """Linear model with dropout (global RNG), a buffer EMA, and every hook recorded."""

    def __init__(self, fail_at=None, nan_at=None, epoch_scalars=False):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.Dropout(0.2), nn.Linear(16, 1))
        self.pos_embed = nn.Parameter(torch.zeros(1, 3, 16))
        self.register_buffer("ema", torch.zeros(()))
        self.fail_at, self.nan_at, self.epoch_scalars = fail_at, nan_at, epoch_scalars
        self.calls = []
        self.counter = 0  # non-buffer state that must resume

    def training_step(self, batch, info: StepInfo):
        loss = nn.functional.mse_loss(self.net(batch["x"]), batch["y"]) + 0 * self.pos_embed.sum()
        if self.nan_at is not None and info.step >= self.nan_at:
            loss = loss * float("nan")
        return {"loss": loss, "progress": torch.tensor(info.progress)}

    def param_groups(self, weight_decay):
        self.calls.append(("param_groups", None))
        return super().param_groups(weight_decay)

    def on_before_optimizer_step(self, info):
        self.calls.append(("before", info.step))
        if self.fail_at is not None and info.step == self.fail_at:
            raise KeyboardInterrupt("simulated kill")

    def on_after_optimizer_step(self, info):
        self.calls.append(("after", info.step))
        self.counter += 1
        with torch.no_grad():
            self.ema.mul_(0.9).add_(0.1 * self.net[0].weight.mean())

    def on_epoch_end(self, info):
        self.calls.append(("epoch_end", info.step))
        return {"epoch_counter": float(self.counter)} if self.epoch_scalars else None

    def extra_state(self):
        self.calls.append(("extra_state", None))
        return {"counter": self.counter}

    def load_extra_state(self, state):
        self.counter = state["counter"]

    def export_encoder(self):
        self.calls.append(("export", None))
        return self.net[0].state_dict()


def _cfg(tmp_path, **kw):
    base = dict(epochs=3, batch_size=4, base_lr=0.5, warmup_epochs=1, weight_decay=0.04, weight_decay_end=0.4,
                checkpoint_every=2, log_every=1, out_dir=str(tmp_path), seed=3, device="cpu", progress=False,
                tensorboard=False, grad_accum_steps=2, clip_grad=1.0)
    base.update(kw)
    return TrainConfig(**base)


def test_schedules():
    assert warmup_cosine(0, 100, 1.0, 0.1, warmup_steps=10) == 0.0
    assert warmup_cosine(5, 100, 1.0, 0.1, warmup_steps=10) == pytest.approx(0.5)
    assert warmup_cosine(10, 100, 1.0, 0.1, warmup_steps=10) == pytest.approx(1.0)
    assert warmup_cosine(99, 100, 1.0, 0.1, warmup_steps=10) == pytest.approx(0.1)
    vals = [warmup_cosine(s, 100, 1.0, 0.1, 10) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))
    assert cosine_value(0.996, 1.0, 0.5) == pytest.approx(0.998)


def test_param_groups_exclude_norms_biases_tokens():
    task = ToyTask()
    groups = param_groups_weight_decay(task, 0.05)
    decay = {id(p) for p in groups[0]["params"]}
    names = {n for n, p in task.named_parameters() if id(p) in decay}
    assert names == {"net.0.weight", "net.3.weight"}
    assert groups[1]["wd_scale"] == 0.0


def test_epoch_sampler_deterministic_and_skips():
    s = EpochSampler(20, seed=1)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, skip=8)
    assert list(s) == full[8:] and len(s) == 12
    s.set_epoch(3)
    assert list(s) != full and sorted(full) == list(range(20))
    shards = [EpochSampler(21, seed=1, rank=r, world_size=2) for r in range(2)]
    for sh in shards:
        sh.set_epoch(0)
    a, b = list(shards[0]), list(shards[1])
    assert len(a) == len(b) == 10 and not set(a) & set(b)


def test_clip_per_param_and_global():
    ps = [nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(2))]
    ps[0].grad, ps[1].grad = torch.tensor([3.0, 4.0, 0.0]), torch.tensor([0.3, 0.4])
    total = clip_gradients(ps, 1.0, "per_param")
    assert total.item() == pytest.approx(math.sqrt(25.25))
    assert ps[0].grad.norm().item() == pytest.approx(1.0, rel=1e-4)
    assert ps[1].grad.norm().item() == pytest.approx(0.5)
    clip_gradients(ps, 0.5, "global")
    assert torch.linalg.vector_norm(torch.cat([p.grad for p in ps])).item() == pytest.approx(0.5, rel=1e-4)


def test_precision_on_cpu(monkeypatch):
    from sarssl.train import engine

    monkeypatch.setattr(engine, "cpu_bf16_speedup", lambda: 1.0)  # a CPU without fast bf16
    assert resolve_precision("auto", torch.device("cpu")) == (None, False)
    monkeypatch.setattr(engine, "cpu_bf16_speedup", lambda: 2.0)  # AMX / AVX512-BF16
    assert resolve_precision("auto", torch.device("cpu")) == (torch.bfloat16, False)
    assert resolve_precision("bf16", torch.device("cpu")) == (torch.bfloat16, False)
    with pytest.raises(ValueError, match="fp16"):
        resolve_precision("fp16", torch.device("cpu"))


def test_resumed_auto_precision_keeps_the_checkpoints(tmp_path, monkeypatch):
    """A run resumed in another process keeps the precision it started with, whatever ``auto`` measures now."""
    from sarssl.train import engine

    monkeypatch.setattr(engine, "cpu_bf16_speedup", lambda: 2.0)
    with pytest.raises(KeyboardInterrupt):
        Trainer(ToyTask(fail_at=7), ToyData(), _cfg(tmp_path, precision="auto")).fit()
    assert load_checkpoint(tmp_path / "checkpoint.pt")["precision"] == "bf16"
    monkeypatch.setattr(engine, "cpu_bf16_speedup", lambda: 1.0)  # a fresh measurement now says fp32
    resumed = Trainer(ToyTask(), ToyData(), _cfg(tmp_path, precision="auto"))
    resumed.fit()
    assert resumed.amp_dtype == torch.bfloat16
    assert load_checkpoint(tmp_path / "checkpoint.pt")["precision"] == "bf16"
    fixed = Trainer(ToyTask(), ToyData(), _cfg(tmp_path / "fp32", precision="fp32"))
    fixed.fit()
    assert fixed.amp_dtype is None and load_checkpoint(tmp_path / "fp32" / "checkpoint.pt")["precision"] == "fp32"


def test_exact_resume_matches_uninterrupted(tmp_path):
    data = ToyData()
    torch.manual_seed(0)
    full = ToyTask()
    Trainer(full, data, _cfg(tmp_path / "full")).fit()
    # 40 samples / 4 per batch / 2 accum = 5 steps per epoch, 15 in all
    ckpt = load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    assert ckpt["step"] == 15 and ckpt["steps_per_epoch"] == 5

    torch.manual_seed(0)
    part = ToyTask(fail_at=7)  # killed inside step 7 (after checkpoint at step 6)
    with pytest.raises(KeyboardInterrupt):
        Trainer(part, data, _cfg(tmp_path / "split")).fit()
    assert load_checkpoint(tmp_path / "split" / "checkpoint.pt")["step"] == 6
    torch.manual_seed(123)  # a different initialisation: the checkpoint must override it
    resumed = ToyTask()
    Trainer(resumed, data, _cfg(tmp_path / "split", max_steps=11)).fit()  # stop and resume once more
    assert load_checkpoint(tmp_path / "split" / "checkpoint.pt")["step"] == 11
    resumed2 = ToyTask()
    Trainer(resumed2, data, _cfg(tmp_path / "split")).fit()
    for (name, a), b in zip(full.state_dict().items(), resumed2.state_dict().values()):
        assert torch.equal(a, b), name
    assert resumed2.counter == 15 - 11 + 11  # restored extra state then 4 more steps
    with open(tmp_path / "split" / "metrics.csv") as fh:
        steps = [int(r["step"]) for r in csv.DictReader(fh)]
    assert steps == list(range(1, 16))
    assert (tmp_path / "split" / "encoder.pth").is_file()


def test_step_info_and_hooks(tmp_path):
    task = ToyTask()
    tr = Trainer(task, ToyData(), _cfg(tmp_path, epochs=2, grad_accum_steps=1, checkpoint_every=0))
    row = tr.fit()
    assert tr.steps_per_epoch == 10 and tr.total_steps == 20
    assert [c for c in task.calls if c[0] == "after"] == [("after", s) for s in range(20)]
    assert row["step"] == 20 and row["wd"] == pytest.approx(0.4)
    info = tr.step_info(10)
    assert info.epoch == 1 and info.progress == 0.5
    assert tr.peak_lr == pytest.approx(0.5 * 4 / 256)
    assert tr.schedule(0)[0] == 0.0 and tr.schedule(10)[0] == pytest.approx(tr.peak_lr)


def test_cpu_optimizer_is_fused_adamw(tmp_path):
    """One fused AdamW kernel on CPU too (the per-tensor loop costs a large share of a ViT-tiny step)."""
    tr = Trainer(ToyTask(), ToyData(), _cfg(tmp_path, epochs=1, grad_accum_steps=1, checkpoint_every=0))
    tr.fit()
    assert isinstance(tr.optimizer, torch.optim.AdamW) and tr.optimizer.defaults["fused"] is True
    assert all(torch.isfinite(p).all() for p in tr.params)


def test_non_finite_loss_names_step_and_checkpoint(tmp_path):
    task = ToyTask(nan_at=5)
    with pytest.raises(NonFiniteLossError, match=r"step 5 .*checkpoint.pt \(step 4\)"):
        Trainer(task, ToyData(), _cfg(tmp_path, grad_accum_steps=1)).fit()
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 4


def test_run_pretrain_mae_resumes_and_exports(tmp_path, monkeypatch):
    import timm

    from sarssl.data.simulate import simulate_region
    from sarssl.train.checkpoint import load_encoder
    from sarssl.train.pretrain import run_pretrain

    monkeypatch.setenv("SARSSL_HOME", str(tmp_path / "cache"))
    simulate_region(tmp_path / "root", aoi="sim-a", n_chips=24, chip_size=32, seed=0, progress=False)
    kw = dict(overrides={"epochs": 2, "batch_size": 4, "max_steps": 3}, progress=False)
    out = run_pretrain("mae", "smoke", tmp_path / "root", tmp_path / "run", **kw)
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 3
    kw["overrides"].pop("max_steps")
    run_pretrain("mae", "smoke", tmp_path / "root", tmp_path / "run", **kw)  # same command resumes
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["step"] == 2 * ckpt["steps_per_epoch"]
    enc = load_encoder(out)
    assert isinstance(enc, timm.models.vision_transformer.VisionTransformer)
    state = torch.load(out / "encoder.pth", weights_only=True)
    plain = timm.create_model("vit_tiny_patch16_224", in_chans=12, num_classes=0, img_size=32, patch_size=8)
    plain.load_state_dict(state, strict=True)
    with pytest.raises(ValueError, match="unknown pretraining override"):
        run_pretrain("mae", "smoke", tmp_path / "root", tmp_path / "run2", overrides={"epochz": 1}, progress=False)
    # compact records decoded per batch on the device train exactly like decoded samples
    kw = dict(overrides={"epochs": 1, "batch_size": 4, "max_steps": 2}, progress=False)
    a = run_pretrain("mae", "smoke", tmp_path / "root", tmp_path / "sample", **kw)
    kw["overrides"]["decode"] = "batch"
    b = run_pretrain("mae", "smoke", tmp_path / "root", tmp_path / "batch", **kw)
    sa, sb = (torch.load(d / "encoder.pth", weights_only=True) for d in (a, b))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_bf16_autocast_on_cpu_runs(tmp_path):
    tr = Trainer(ToyTask(), ToyData(), _cfg(tmp_path, epochs=1, precision="bf16", grad_accum_steps=1, max_steps=2))
    row = tr.fit()
    assert row["step"] == 2 and math.isfinite(row["loss"])


def test_hooks_called_in_order(tmp_path):
    task = ToyTask(epoch_scalars=True)
    tr = Trainer(task, ToyData(n=16), _cfg(tmp_path, epochs=2, grad_accum_steps=1, checkpoint_every=3, log_every=2))
    tr.fit()
    # 16 samples / 4 per batch: 4 steps per epoch, 8 in all; checkpoints after steps 3, 6 and 8
    expected = [("param_groups", None)]
    for step in range(8):
        expected += [("before", step), ("after", step)]
        if step + 1 in (4, 8):
            expected.append(("epoch_end", step))
        if step + 1 in (3, 6, 8):
            expected += [("extra_state", None), ("export", None)]
    assert task.calls == expected
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [2, 3, 4, 6, 8]
    assert float(rows[2]["epoch_counter"]) == 4.0  # on_epoch_end scalars join that step's row


def test_monitored_metric_last_and_best(tmp_path):
    tr = Trainer(ToyTask(), ToyData(), _cfg(tmp_path, epochs=2, grad_accum_steps=1, checkpoint_every=0))
    tr.fit()
    losses = [float(r["loss"]) for r in csv.DictReader(open(tmp_path / "metrics.csv"))]
    m = tr.monitored
    assert (m["metric"], m["mode"]) == ("loss", "min")
    assert m["last"] == losses[-1] and m["best"] == min(losses) and m["best_step"] == 1 + losses.index(min(losses))
    # kept in the checkpoint: a finished run resumed with nothing left to do still knows them
    again = Trainer(ToyTask(), ToyData(), _cfg(tmp_path, epochs=2, grad_accum_steps=1, checkpoint_every=0))
    again.fit()
    assert again.monitored == m

    class MaxTask(ToyTask):
        monitor, mode = "progress", "max"

    tr = Trainer(MaxTask(), ToyData(), _cfg(tmp_path / "max", epochs=1, grad_accum_steps=1))
    tr.fit()
    assert tr.monitored["best"] == tr.monitored["last"] == pytest.approx(0.9) and tr.monitored["best_step"] == 10


def test_monitor_and_mode_are_validated():
    with pytest.raises(ValueError, match="Bad.mode must be one of"):
        type("Bad", (TrainTask,), {"mode": "lowest"})
    with pytest.raises(ValueError, match="Nameless.monitor"):
        type("Nameless", (TrainTask,), {"monitor": ""})
    task = ToyTask()
    task.mode = "down"  # set per instance (as FinetuneTask does): checked when the Trainer takes it
    with pytest.raises(ValueError, match="ToyTask.mode"):
        Trainer(task, ToyData(), TrainConfig(device="cpu", progress=False))


def test_trainer_requires_a_train_task():
    class Plain(nn.Module):
        def training_step(self, batch, info):
            return {"loss": torch.zeros(())}

    with pytest.raises(TypeError, match="Plain.*TrainTask"):
        Trainer(Plain(), ToyData(), TrainConfig(device="cpu", progress=False))

    class NoStep(TrainTask):
        pass

    with pytest.raises(TypeError, match="NoStep does not implement training_step"):
        Trainer(NoStep(), ToyData(), TrainConfig(device="cpu", progress=False))
    with pytest.raises(NotImplementedError, match="NoStep must implement training_step"):
        NoStep().training_step({}, None)
