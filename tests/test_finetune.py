"""Fine-tuning: targets, masked losses and metrics, layer decay, frozen encoders, run_finetune end to end."""

import math

import numpy as np
import pytest
import torch

from sarssl.data.products import IGNORE_INDEX
from sarssl.data.simulate import simulate_region
from sarssl.models.heads import SegmentationHead
from sarssl.models.vit import create_encoder, spec_from_profile
from sarssl.train.checkpoint import save_encoder
from sarssl.train.evaluation import predict_examples
from sarssl.train.finetune import FinetuneTask, load_finetuned, run_finetune
from sarssl.train.losses import target_tensors, task_loss
from sarssl.train.metrics import RegressionMeter, SegmentationMeter
from sarssl.train.protocols import layer_decay_groups
from sarssl.train.tasks import TARGETS


@pytest.fixture(scope="module")
def region(tmp_path_factory):
    root = tmp_path_factory.mktemp("region")
    simulate_region(root, aoi="sim-a", n_chips=32, chip_size=32, seed=0, progress=False)
    return root


@pytest.fixture(scope="module")
def mae_dir(tmp_path_factory, tiny_profile):
    d = tmp_path_factory.mktemp("mae")
    spec = spec_from_profile(tiny_profile)
    torch.manual_seed(3)
    save_encoder(spec.create().state_dict(), d, spec.to_dict())
    return d


# ---------------------------------------------------------------------------------------------
def test_tile_target_is_masked_mean():
    tc = torch.tensor([[[10.0, 20.0], [30.0, 99.0]], [[5.0, 5.0], [5.0, 5.0]]])
    ok = torch.tensor([[[True, True], [True, False]], [[False, False], [False, True]]])
    t, v = target_tensors({"treecover": tc, "treecover_valid": ok}, TARGETS["vegetation"])
    torch.testing.assert_close(t, torch.tensor([20.0, 5.0]))
    assert v.tolist() == [True, False]  # second tile has 1/4 valid pixels < 0.5


def test_regression_loss_ignores_invalid_pixels():
    spec = TARGETS["built"]  # scale 1
    target = torch.tensor([[[0.5, 0.2], [1.0, 0.0]]])
    valid = torch.tensor([[[True, False], [True, False]]])
    out = torch.tensor([[[[0.0, 100.0], [1.0, -50.0]]]])
    loss = task_loss(spec, out, target, valid)
    assert loss.item() == pytest.approx(math.sqrt((0.25 + 0.0) / 2), rel=1e-5)
    empty = task_loss(spec, out.requires_grad_(), target, torch.zeros_like(valid))
    assert empty.item() == 0.0 and empty.requires_grad


def test_segmentation_loss_ignore_index():
    logits = torch.zeros(1, 11, 2, 2, requires_grad=True)
    target = torch.full((1, 2, 2), IGNORE_INDEX)
    target[0, 0, 0] = 3
    loss = task_loss(TARGETS["landcover"], logits, target, target != IGNORE_INDEX)
    assert loss.item() == pytest.approx(math.log(11), rel=1e-5)


def test_regression_meter_accumulates_exactly():
    rng = np.random.default_rng(0)
    p, t = rng.normal(size=(2, 50)), rng.normal(size=(2, 50))
    v = rng.random((2, 50)) > 0.3
    m = RegressionMeter()
    for i in range(2):
        m.update(torch.tensor(p[i]), torch.tensor(t[i]), torch.tensor(v[i]))
    out = m.compute()
    pv, tv = p[v], t[v]
    assert out["n"] == v.sum()
    assert out["rmse"] == pytest.approx(np.sqrt(np.mean((pv - tv) ** 2)), rel=1e-6)
    assert out["mae"] == pytest.approx(np.mean(np.abs(pv - tv)), rel=1e-6)
    r2 = 1 - np.sum((pv - tv) ** 2) / np.sum((tv - tv.mean()) ** 2)
    assert out["r2"] == pytest.approx(r2, rel=1e-6)


def test_segmentation_meter_by_hand():
    target = torch.tensor([[0, 0, 1, IGNORE_INDEX], [1, 2, 2, 2]])
    pred = torch.tensor([[0, 1, 1, 2], [1, 2, 0, 2]])
    m = SegmentationMeter(4, class_names=["a", "b", "c", "d"])
    m.update(pred[:1], target[:1])
    m.update(pred[1:], target[1:])
    out = m.compute()
    # class 0: inter 1, union (2 target + 2 pred - 1) = 3; class 1: inter 2, union 3+3-2... by hand:
    # targets 0,0,1,1,2,2,2 ; preds 0,1,1,1,2,0,2
    assert out["n"] == 7
    assert out["accuracy"] == pytest.approx(5 / 7)
    assert out["iou_a"] == pytest.approx(1 / 3)
    assert out["iou_b"] == pytest.approx(2 / 3)
    assert out["iou_c"] == pytest.approx(2 / 3)
    assert math.isnan(out["iou_d"])
    assert out["miou"] == pytest.approx((1 / 3 + 2 / 3 + 2 / 3) / 3)


def test_layer_decay_scales():
    enc = create_encoder("vit_tiny", patch_size=8, img_size=32, depth=4)
    head = SegmentationHead(enc, 11, decoder_dim=16)
    groups = layer_decay_groups(head, 0.05, layer_decay=0.5)
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    wd = {id(p): g["wd_scale"] for g in groups for p in g["params"]}
    assert len(scale) == sum(1 for p in head.parameters())
    assert scale[id(enc.patch_embed.proj.weight)] == pytest.approx(0.5 ** 5)
    assert scale[id(enc.pos_embed)] == pytest.approx(0.5 ** 5)
    assert scale[id(enc.blocks[0].mlp.fc1.weight)] == pytest.approx(0.5 ** 4)
    assert scale[id(enc.blocks[3].mlp.fc1.weight)] == pytest.approx(0.5)
    assert scale[id(enc.norm.weight)] == 1.0
    assert scale[id(head.upsampler.out.weight)] == 1.0
    assert wd[id(enc.blocks[0].mlp.fc1.bias)] == 0.0 and wd[id(enc.blocks[0].mlp.fc1.weight)] == 1.0
    assert wd[id(enc.pos_embed)] == 0.0


def test_frozen_encoder_gets_no_grad():
    enc = create_encoder("vit_tiny", patch_size=8, img_size=32, depth=2)
    task = FinetuneTask(SegmentationHead(enc, 11, indices=(0, 1), decoder_dim=16), "landcover", "frozen")
    task.train()
    assert not task.head.encoder.training and task.head.upsampler.training
    batch = {"s1": torch.randn(2, 12, 32, 32), "worldcover": torch.randint(0, 11, (2, 32, 32))}
    task.training_step(batch)["loss"].backward()
    assert all(p.grad is None for p in task.head.encoder.parameters())
    assert all(p.grad is not None for p in task.head.decoder_parameters())
    names = {n for g in task.param_groups(0.05) for n in [id(p) for p in g["params"]]}
    assert not names & {id(p) for p in enc.parameters()}


# ---------------------------------------------------------------------------------------------
def test_run_finetune_scratch_vegetation(region, tmp_path, tiny_profile):
    prof = tiny_profile
    out = tmp_path / "run"
    r = run_finetune("vegetation", "scratch", "scratch", prof, region, "sim-a", limit_pct=50, seed=0,
                     out_dir=out, progress=False, cache_dir=tmp_path / "cache")
    assert r["method"] == "scratch" and r["steps"] >= 2 and r["n_tiles"] > 0
    assert np.isfinite(r["rmse"]) and r["rmse"] >= r["mae"] >= 0
    import json

    from sarssl.profiles import train_config

    saved = json.loads((out / "finetune.json").read_text())["config"]
    assert saved == train_config("finetune", prof).to_dict()  # the resolved configuration is saved with the model
    task = load_finetuned(out)
    from sarssl.train.finetune_data import finetune_dataset, finetune_normalization
    from sarssl.train.tasks import products_for

    norm = finetune_normalization(region, "sim-a", prof)
    ds = finetune_dataset(region, "sim-a", "test", products_for("vegetation"), norm, cache_dir=tmp_path / "cache")
    rows = predict_examples(task, ds, n=2)
    assert len(rows) == 2 and rows[0]["pred"].shape == (32, 32) and np.isfinite(rows[0]["pred_value"])


def test_run_finetune_linear_landcover_pretrained(region, mae_dir, tmp_path, tiny_profile):
    prof = tiny_profile
    r = run_finetune("landcover", "linear", "mae", prof, region, "sim-a", limit_pct=100, seed=1,
                     pretrained={"mae": mae_dir}, progress=False, cache_dir=tmp_path / "cache",
                     eval_regions={"again": (region, "sim-a")})
    assert 0 <= r["miou"] <= 1 and 0 <= r["accuracy"] <= 1
    assert "iou_tree_cover" in r
    assert r["regions"]["again"]["miou"] == pytest.approx(r["miou"])  # same test set, same model
    k = run_finetune("landcover", "knn", mae_dir, prof, region, "sim-a", limit_pct=100, progress=False,
                     cache_dir=tmp_path / "cache")
    assert 0 <= k["accuracy"] <= 1 and k["steps"] == 0


def test_strict_encoder_loading(region, mae_dir, tmp_path, tiny_profile):
    bad = tmp_path / "bad"
    state = torch.load(mae_dir / "encoder.pth", weights_only=True)
    state["extra.weight"] = torch.zeros(1)
    import json

    save_encoder(state, bad, json.loads((mae_dir / "encoder.json").read_text()))
    with pytest.raises(RuntimeError, match="extra"):
        run_finetune("vegetation", "linear", bad, tiny_profile, region, "sim-a", progress=False,
                     cache_dir=tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match="encoder.pth"):
        run_finetune("vegetation", "linear", tmp_path / "nowhere", tiny_profile, region, "sim-a", progress=False)
    with pytest.raises(ValueError, match="classification"):
        run_finetune("vegetation", "knn", mae_dir, tiny_profile, region, "sim-a", progress=False,
                     cache_dir=tmp_path / "cache")


def test_auto_precision_fine_tunes_in_fp32_off_cuda(monkeypatch):
    """bf16 autocast on a CPU wrecked supervised training from scratch: ``auto`` means fp32 there, an explicit
    precision is kept, and on CUDA (the gpu profile's device ``auto`` where CUDA is present) ``auto`` is left
    to the engine."""
    import torch

    from sarssl.train.finetune import finetune_train_config

    assert finetune_train_config("cpu", 64, "scratch", device="cpu").precision == "fp32"
    assert finetune_train_config("cpu", 64, "linear", device="cpu", precision="bf16").precision == "bf16"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert finetune_train_config("gpu", 64, "scratch").precision == "fp32"  # a gpu profile on a CPU machine
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert finetune_train_config("gpu", 64, "scratch").precision == "auto"
