"""DINO: head, loss, centre, schedules, teacher EMA, monitoring, export, and an engine run."""

import copy
import math
from types import SimpleNamespace

import pytest
import timm
import torch
import torch.nn.functional as F

from sarssl.models.collapse import CollapseMonitor, collapse_status, teacher_entropy
from sarssl.train.knn import knn_accuracy, knn_land_cover_accuracy, majority_class
from sarssl.models.dino import (
    DINO, DINOHead, DINOLoss, build_dino, teacher_momentum, teacher_temperature,
)

NAME, PATCH, IMG = "vit_tiny_patch16_224", 8, 32


def _backbone(drop_path_rate=0.1, depth=2):
    return timm.create_model(NAME, pretrained=False, in_chans=12, num_classes=0, img_size=IMG, patch_size=PATCH,
                             depth=depth, drop_path_rate=drop_path_rate)


def _crops(b=2, n_local=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, 12, IMG, IMG, generator=g) for _ in range(2)] + \
           [torch.randn(b, 12, 16, 16, generator=g) for _ in range(n_local)]


def _info(step, total=10, spe=5):
    return SimpleNamespace(step=step, epoch=step // spe, total_steps=total, steps_per_epoch=spe, lr=1e-3, wd=0.04,
                           progress=step / total)


# ---------------------------------------------------------------------------------------------- head
def test_head_shapes_norm_and_frozen_g():
    head = DINOHead(32, out_dim=50, hidden_dim=64, bottleneck_dim=16)
    y = head(torch.randn(5, 32))
    assert y.shape == (5, 50)
    g = head.last_layer.parametrizations.weight.original0
    assert not g.requires_grad and torch.all(g == 1)
    # logits are cosines: |y| <= 1 since bottleneck and prototypes have unit norm
    assert float(y.detach().abs().max()) <= 1.0 + 1e-5
    w = head.last_layer.weight
    assert torch.allclose(w.norm(dim=1), torch.ones(50), atol=1e-5)
    y.sum().backward()
    assert g.grad is None and head.last_layer.parametrizations.weight.original1.grad is not None
    twin = copy.deepcopy(head)  # the parametrizations API survives deepcopy (the old hook API does not)
    assert torch.equal(twin(torch.ones(2, 32)), head(torch.ones(2, 32)))
    assert DINOHead(32, 50, 64, 16, norm_last_layer=False).last_layer.parametrizations.weight.original0.requires_grad


# ---------------------------------------------------------------------------------------------- loss
def test_loss_matches_hand_computation_and_excludes_identical_views():
    torch.manual_seed(0)
    b, k, n_crops = 3, 7, 4
    s = torch.randn(n_crops * b, k)
    t = torch.randn(2 * b, k)
    loss_fn = DINOLoss(k, n_global=2, student_temp=0.1)
    loss_fn.center.copy_(torch.randn(1, k) * 0.1)
    c = loss_fn.center.clone()
    loss = loss_fn(s, t, teacher_temp=0.05)
    tp = F.softmax((t - c) / 0.05, -1).chunk(2)
    sl = F.log_softmax(s / 0.1, -1).chunk(n_crops)
    terms = []
    for i in range(2):
        for j in range(n_crops):
            if i == j:
                continue
            terms.append(-(tp[i] * sl[j]).sum(-1).mean())
    assert len(terms) == 2 * n_crops - 2
    assert torch.allclose(loss, torch.stack(terms).mean(), atol=1e-6)
    # identical views give no term: the (0, 0) and (1, 1) pairs are absent, so with a student that
    # equals the teacher on the global views the loss is still the cross-view mean computed above
    full = torch.stack([-(tp[i] * sl[j]).sum(-1).mean() for i in range(2) for j in range(n_crops)]).mean()
    assert not torch.allclose(loss, full)


def test_loss_fp32_under_autocast_and_student_only_global():
    loss_fn = DINOLoss(11, 2)
    s = torch.randn(4, 11, dtype=torch.bfloat16, requires_grad=True)
    t = torch.randn(4, 11, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = loss_fn(s, t, 0.04)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert s.grad is not None


def test_centre_ema_update():
    k = 5
    loss_fn = DINOLoss(k, 2, center_momentum=0.9)
    t = torch.randn(6, k)
    loss_fn.train()
    loss_fn(torch.randn(12, k), t, 0.04)
    assert torch.allclose(loss_fn.center, 0.1 * t.mean(0, keepdim=True), atol=1e-6)
    prev = loss_fn.center.clone()
    t2 = torch.randn(6, k)
    loss_fn(torch.randn(12, k), t2, 0.04)
    assert torch.allclose(loss_fn.center, 0.9 * prev + 0.1 * t2.mean(0, keepdim=True), atol=1e-6)
    loss_fn.eval()
    loss_fn(torch.randn(12, k), t2 + 5, 0.04)
    assert torch.allclose(loss_fn.center, 0.9 * prev + 0.1 * t2.mean(0, keepdim=True), atol=1e-6)


# ---------------------------------------------------------------------------------------------- schedules
def test_teacher_temperature_schedule():
    assert teacher_temperature(0, 0.04, 0.07, 30) == pytest.approx(0.04)
    assert teacher_temperature(15, 0.04, 0.07, 30) == pytest.approx(0.055)
    assert teacher_temperature(30, 0.04, 0.07, 30) == pytest.approx(0.07)
    assert teacher_temperature(99, 0.04, 0.07, 30) == pytest.approx(0.07)
    assert teacher_temperature(0.5, 0.04, 0.07, 0) == pytest.approx(0.07)


def test_momentum_schedule():
    assert teacher_momentum(0, 101) == pytest.approx(0.996)
    assert teacher_momentum(50, 101) == pytest.approx(0.998)
    assert teacher_momentum(100, 101) == pytest.approx(1.0)
    vals = [teacher_momentum(s, 101) for s in range(101)]
    assert all(a <= b for a, b in zip(vals, vals[1:]))


# ---------------------------------------------------------------------------------------------- task
def _task(out_dim=64, **kw):
    torch.manual_seed(0)
    return DINO(_backbone(), out_dim=out_dim, hidden_dim=64, bottleneck_dim=16, warmup_teacher_temp_epochs=1, **kw)


def test_teacher_is_copy_without_drop_path_and_gets_no_gradients():
    task = _task()
    from timm.layers import DropPath

    assert any(isinstance(m, DropPath) for m in task.student.modules())
    assert not any(isinstance(m, DropPath) for m in task.teacher.modules())
    for (n, ps), pt in zip(task.student.state_dict().items(), task.teacher.state_dict().values()):
        assert torch.equal(ps, pt), n
    assert all(not p.requires_grad for p in task.teacher.parameters())
    task.train()
    assert not task.teacher.training and task.student.training
    out = task.training_step({"crops": _crops()}, _info(0))
    out["loss"].backward()
    assert all(p.grad is None for p in task.teacher.parameters())
    assert task.student.backbone.cls_token.grad is not None
    ids_groups = {id(p) for g in task.param_groups(0.04) for p in g["params"]}
    assert ids_groups.isdisjoint({id(p) for p in task.teacher.parameters()})
    assert id(task.student.head.last_layer.parametrizations.weight.original0) not in ids_groups
    assert 0.0 < float(out["teacher_entropy"]) <= math.log(64) + 1e-4
    assert all(torch.is_tensor(v) and v.ndim == 0 for v in out.values())
    assert float(out["teacher_temp"]) == pytest.approx(0.04)


def test_ema_moves_teacher_towards_student_and_last_layer_freeze():
    task = _task()
    with torch.no_grad():
        for p in task.student.parameters():
            p.add_(0.5)
    before = [p.clone() for p in task.teacher.parameters()]
    dist0 = sum(float((s.detach() - t).norm()) for s, t in zip(task.student.parameters(), before))
    task.on_after_optimizer_step(_info(0, total=10))
    after = list(task.teacher.parameters())
    dist1 = sum(float((s.detach() - t).norm()) for s, t in zip(task.student.parameters(), after))
    assert dist1 < dist0
    m = teacher_momentum(0, 10)
    p_s, p_b, p_a = next(task.student.parameters()), before[0], after[0]
    assert torch.allclose(p_a, m * p_b + (1 - m) * p_s, atol=1e-6)
    # last layer: gradients cancelled in epoch 0, kept in epoch 1
    out = task.training_step({"crops": _crops()}, _info(0))
    out["loss"].backward()
    task.on_before_optimizer_step(_info(1, spe=5))
    assert task.student.head.last_layer.parametrizations.weight.original1.grad is None
    out = task.training_step({"crops": _crops()}, _info(6))
    out["loss"].backward()
    task.on_before_optimizer_step(_info(6, spe=5))
    assert task.student.head.last_layer.parametrizations.weight.original1.grad is not None


def test_multicrop_wrapper_runs_each_resolution_once():
    task = _task()
    calls = []
    h = task.student.backbone.register_forward_hook(lambda m, i, o: calls.append(tuple(i[0].shape)))
    out = task.student(_crops(b=3, n_local=4))
    h.remove()
    assert out.shape == (6 * 3, 64)
    assert calls == [(6, 12, IMG, IMG), (12, 12, 16, 16)]


def test_exported_teacher_loads_strictly_into_timm():
    task = _task()
    with torch.no_grad():
        for p in task.student.parameters():
            p.add_(0.1)
    task.update_teacher(0.5)
    sd = task.export_encoder()
    model = timm.create_model(NAME, pretrained=False, in_chans=12, num_classes=0, img_size=IMG, patch_size=PATCH,
                              depth=2)
    model.load_state_dict(sd, strict=True)
    model.eval()
    x = torch.randn(2, 12, IMG, IMG)
    assert torch.allclose(model(x), task.teacher.backbone(x), atol=1e-5)
    assert torch.equal(sd["cls_token"], task.teacher.backbone.cls_token)


# ---------------------------------------------------------------------------------------------- monitoring
def test_entropy_and_collapse_detection():
    k = 100
    uniform = torch.full((8, k), 1.0 / k)
    onehot = F.one_hot(torch.arange(8) % k, k).float()
    assert float(teacher_entropy(uniform)) == pytest.approx(math.log(k), rel=1e-5)
    assert float(teacher_entropy(onehot)) == pytest.approx(0.0, abs=1e-6)
    assert collapse_status(math.log(k), k) == "uniform"
    assert collapse_status(0.0, k) == "one-hot"
    assert collapse_status(0.5 * math.log(k), k) == "ok"
    mon = CollapseMonitor(k, patience=3)
    assert mon.update(math.log(k), 0) == "uniform"
    mon.update(math.log(k), 1)
    with pytest.warns(RuntimeWarning, match="uniform collapse"):
        mon.update(math.log(k), 2)


def test_knn_accuracy_separable_and_random():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=g) * 5
    ytr = torch.arange(200) % 4
    yte = torch.arange(80) % 4
    ftr = centres[ytr] + 0.3 * torch.randn(200, 16, generator=g)
    fte = centres[yte] + 0.3 * torch.randn(80, 16, generator=g)
    assert knn_accuracy(ftr, ytr, fte, yte, num_classes=4) == pytest.approx(1.0)
    rnd = knn_accuracy(torch.randn(200, 16, generator=g), ytr, torch.randn(80, 16, generator=g), yte, 4)
    assert rnd < 0.6


def test_majority_class():
    lab = torch.full((3, 4, 4), -100)
    lab[0, :3] = 2
    lab[0, 3] = 1
    lab[1, :, :1] = 5
    assert majority_class(lab, 11).tolist() == [2, 5, -100]


class _Labelled(torch.utils.data.Dataset):
    """Chips whose class is a channel offset (separable) with a worldcover map of that class."""

    def __len__(self):
        return 40

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        cls = i % 3
        x = 0.1 * torch.randn(12, IMG, IMG, generator=g)
        x[cls * 4:(cls + 1) * 4] += 3.0
        wc = torch.full((IMG, IMG), cls, dtype=torch.long)
        wc[:2] = -100
        return {"s1": x, "s1_valid": torch.ones(12, IMG, IMG, dtype=torch.bool), "worldcover": wc}


def test_knn_land_cover_accuracy_runs_on_a_dataset():
    enc = _backbone(0.0)
    res = knn_land_cover_accuracy(enc, _Labelled(), k=5, max_train=24, max_test=12, batch_size=8)
    assert res["knn_n_train"] == 24 and res["knn_n_test"] == 12
    assert res["knn_top1"] > 0.9  # random features of a random ViT still separate strong channel offsets


# ---------------------------------------------------------------------------------------------- engine
class _RandomChips(torch.utils.data.Dataset):
    """Random 12-channel normalised chips with a no-data corner and a land-cover map; carries ``norm``."""

    def __init__(self, n=12, size=IMG):
        self.n, self.size = n, size
        self.norm = SimpleNamespace(channels=__import__("sarssl.data.products", fromlist=["x"]).INPUT_CHANNELS,
                                    std=[2.0] * 4 + [3.0] * 8)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(100 + i)
        x = torch.randn(12, self.size, self.size, generator=g)
        v = torch.ones_like(x, dtype=torch.bool)
        v[:, :4, :4] = False
        wc = torch.full((self.size, self.size), i % 3, dtype=torch.long)
        return {"s1": torch.where(v, x, torch.zeros(())), "s1_valid": v, "worldcover": wc, "id": f"c{i}"}


def _engine_setup(tmp_path, name, **train_overrides):
    from sarssl.profiles import get_profile

    profile = get_profile("smoke")
    profile = profile.with_overrides(
        model=type(profile.model)(encoder=NAME, patch_size=PATCH, img_size=IMG),
        dino=type(profile.dino)(epochs=2, out_dim=64, n_local_crops=2, global_crop_size=IMG, local_crop_size=16))
    from sarssl.profiles import train_config
    from sarssl.train.dino_setup import prepare_dino

    config = train_config("dino", profile, dict(
        knn_k=3, knn_max_train=6, knn_max_test=4, batch_size=4, num_workers=0, tensorboard=False, log_every=1,
        precision="fp32", device="cpu", **train_overrides))
    torch.manual_seed(0)
    base = _RandomChips()
    task, data, cfg = prepare_dino(config, base, knn_train=base, out_dir=tmp_path / name, progress=False)
    return task, data, cfg


def test_engine_runs_dino_and_exports_teacher(tmp_path):
    from sarssl.train.engine import Trainer

    task, data, cfg = _engine_setup(tmp_path, "run")
    assert cfg.clip_mode == "per_param" and cfg.clip_grad == 3.0
    assert (cfg.weight_decay, cfg.weight_decay_end) == (0.04, 0.4)
    teacher0 = [p.clone() for p in task.teacher.parameters()]
    last0 = task.student.head.last_layer.parametrizations.weight.original1.clone()
    trainer = Trainer(task, data, cfg)
    row = trainer.fit()
    assert trainer.step == 6 and trainer.steps_per_epoch == 3
    assert math.isfinite(row["loss"]) and "teacher_entropy" in row and "knn_top1" in row
    assert 0.0 <= row["knn_top1"] <= 1.0
    assert data.epoch == 2  # the crops' epoch followed training
    assert any(not torch.equal(a, b) for a, b in zip(teacher0, task.teacher.parameters()))
    assert not torch.equal(last0, task.student.head.last_layer.parametrizations.weight.original1)
    import csv

    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert {"teacher_temp", "teacher_entropy_ratio", "collapse", "wd"} <= set(rows[0])
    assert float(rows[0]["wd"]) == pytest.approx(0.04) and float(rows[-1]["wd"]) == pytest.approx(0.4)
    sd = torch.load(tmp_path / "run" / "encoder.pth", weights_only=True)
    model = timm.create_model(NAME, pretrained=False, in_chans=12, num_classes=0, img_size=IMG, patch_size=PATCH)
    model.load_state_dict(sd, strict=True)
    for k, v in task.teacher.backbone.state_dict().items():
        assert torch.equal(sd[k], v), k


def test_engine_resume_gives_identical_dino_weights(tmp_path):
    from sarssl.train.engine import Trainer

    task, data, cfg = _engine_setup(tmp_path, "full")
    Trainer(task, data, cfg).fit()
    full = {k: v.clone() for k, v in task.state_dict().items()}
    task2, data2, cfg2 = _engine_setup(tmp_path, "split", max_steps=4)
    Trainer(task2, data2, cfg2).fit()  # stops mid-epoch 1
    task3, data3, cfg3 = _engine_setup(tmp_path, "split")
    Trainer(task3, data3, cfg3).fit()
    for k, v in task3.state_dict().items():
        assert torch.equal(v, full[k]), k  # exact, as for MAE


def test_batch_collapse_seen_when_per_image_entropy_is_healthy():
    from sarssl.models.collapse import batch_prototypes, batch_usage, image_prototypes

    k, b = 64, 32
    # every image spread over the same 3 prototypes: per-image entropy ln 3 looks fine, the batch uses 3
    same = torch.zeros(b, k)
    same[:, :3] = 1.0 / 3
    assert float(image_prototypes(same)) == pytest.approx(3.0, rel=1e-5)
    assert float(batch_prototypes(same)) == pytest.approx(3.0, rel=1e-5)
    assert float(batch_usage(same)) == pytest.approx(3.0 / 32, rel=1e-5)
    ent = float(teacher_entropy(same))
    assert collapse_status(ent, k) == "ok"  # the per-image view alone misses it
    assert collapse_status(ent, k, usage=float(batch_usage(same))) == "batch"
    # each image on its own 2 prototypes: the batch uses all 64, usage 64 / min(K, B) = 2
    spread = torch.zeros(b, k)
    spread[torch.arange(b), 2 * torch.arange(b)] = 0.5
    spread[torch.arange(b), 2 * torch.arange(b) + 1] = 0.5
    assert float(batch_prototypes(spread)) == pytest.approx(64.0, rel=1e-4)
    assert float(batch_usage(spread)) == pytest.approx(2.0, rel=1e-4)
    assert collapse_status(float(teacher_entropy(spread)), k, usage=float(batch_usage(spread))) == "ok"
    mon = CollapseMonitor(k, patience=2, batch_low=0.1)
    mon.update(ent, 0, usage=0.05)
    with pytest.warns(RuntimeWarning, match="batch collapse"):
        mon.update(ent, 1, usage=0.05)
    with pytest.raises(ValueError):
        collapse_status(ent, k, batch_low=1.5)


def test_training_step_logs_batch_prototypes():
    task = build_dino("vit_tiny", patch_size=8, img_size=16, out_dim=32, hidden_dim=32, bottleneck_dim=16,
                      n_global=2, collapse_batch_low=0.1)
    g = torch.Generator().manual_seed(0)
    crops = [torch.randn(4, 12, 16, 16, generator=g) for _ in range(2)] + [torch.randn(4, 12, 8, 8, generator=g)]
    info = type("S", (), {"step": 0, "steps_per_epoch": 10, "total_steps": 10, "micro_step": 0})()
    out = task.training_step({"crops": crops}, info)
    assert 1.0 <= float(out["teacher_batch_prototypes"]) <= 32.0 + 1e-3  # at most K
    assert float(out["teacher_batch_usage"]) == pytest.approx(float(out["teacher_batch_prototypes"]) / 4, rel=1e-4)
    assert float(out["teacher_image_prototypes"]) >= 1.0
    assert float(out["collapse"]) in (0.0, 1.0, 2.0, 3.0)


def test_multicrop_config_carries_the_sar_augmentations():
    from sarssl.profiles import train_config
    from sarssl.train.dino_setup import multicrop_config

    cfg = multicrop_config(train_config("dino", "cpu"))
    assert cfg.global_size == 64  # global views at the evaluation size
    assert cfg.global_aug.db_offset <= 0.5  # within Sentinel-1's radiometric accuracy
    cfg = multicrop_config(train_config("dino", "cpu", {"aug_db_offset": 0.3, "aug_speckle_p": 0.0,
                                                        "aug_group_drop_p": 0.1}))
    for aug in (cfg.global_aug, cfg.local_aug):
        assert (aug.db_offset, aug.speckle_p, aug.group_drop_p) == (0.3, 0.0, 0.1)
    with pytest.raises(ValueError, match="multicrop"):
        from sarssl.train.dino_setup import prepare_dino

        prepare_dino(train_config("dino", "smoke", {"multicrop": "gpu"}), SimpleNamespace(norm=_norm12()))


def _norm12():
    from sarssl.data.products import INPUT_CHANNELS

    return SimpleNamespace(channels=INPUT_CHANNELS, std=[3.0] * 12, mean=[0.0] * 12)
