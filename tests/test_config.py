"""Run configurations: every knob documented, one resolver, saved with the run, rebuilt from the saved copy."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from sarssl.profiles import (
    METHOD_SECTIONS, PROFILE_NAMES, PROFILES, DataConfig, EngineConfig, ModelConfig, RunConfig, get_profile, knobs,
    train_config,
)

SECTIONS = (DataConfig, ModelConfig, EngineConfig, *METHOD_SECTIONS.values())


@pytest.mark.parametrize("cls", SECTIONS, ids=lambda c: c.__name__)
def test_every_field_has_a_one_line_help(cls):
    for f in dataclasses.fields(cls):
        text = f.metadata.get("help", "")
        assert text and "\n" not in text, f"{cls.__name__}.{f.name} has no one-line help"


@pytest.mark.parametrize("name", PROFILE_NAMES)
@pytest.mark.parametrize("method", tuple(METHOD_SECTIONS))
def test_defaults_are_the_profile_and_round_trip_through_json(method, name):
    prof = get_profile(name)
    cfg = train_config(method, name)
    assert (cfg.method, cfg.profile, cfg.device) == (method, name, prof.device)
    assert (cfg.model, cfg.data, cfg.engine) == (prof.model, prof.data, prof.engine)
    section = getattr(prof, method)
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if value is None and f.name in ("batch_size", "knn_batch_size"):
            value = prof.data.batch_size
        elif value is None and f.name == "decode":
            value = "batch" if prof.data.decode_on_device else "sample"
        assert getattr(cfg.method_config, f.name) == value, f.name
    text = json.dumps(cfg.to_dict())
    back = RunConfig.from_dict(json.loads(text))
    assert back == cfg and type(back.method_config) is type(cfg.method_config)
    assert json.dumps(back.to_dict()) == text
    assert train_config(method, prof) == cfg  # a Profile resolves like its name


def test_values_that_builders_used_to_hard_code():
    """The defaults equal what the builders used before every knob became a field (cpu profile)."""
    mae = train_config("mae", "cpu").method_config
    assert (mae.norm_pix_loss, mae.norm_pix_mode, mae.betas, mae.min_lr, mae.drop_path_rate) == (
        True, "patch", (0.9, 0.95), 0.0, 0.0)
    assert (mae.batch_size, mae.decode, mae.checkpoint_every, mae.log_every) == (64, "sample", None, None)
    dino = train_config("dino", "cpu").method_config
    assert (dino.min_lr, dino.weight_decay, dino.weight_decay_end, dino.betas, dino.clip_grad, dino.clip_mode) == (
        1e-6, 0.04, 0.4, (0.9, 0.999), 3.0, "per_param")
    assert (dino.drop_path_rate, dino.hidden_dim, dino.bottleneck_dim, dino.student_temp, dino.center_momentum,
            dino.warmup_teacher_temp, dino.freeze_last_layer_epochs) == (0.1, 2048, 256, 0.1, 0.9, 0.04, 0.2)
    assert (dino.knn_k, dino.knn_temperature, dino.knn_max_train, dino.knn_max_test, dino.knn_batch_size) == (
        20, 0.07, 512, 256, 64)
    assert (dino.batch_size, dino.teacher_temp, dino.momentum_teacher) == (16, 0.04, 0.99)
    assert (dino.global_crop_size, dino.local_crop_size, dino.n_local_crops, dino.out_dim) == (64, 32, 4, 1024)
    assert (dino.aug_db_offset, dino.aug_intensity_p, dino.aug_group_drop_p, dino.multicrop) == (0.5, 0.0, 0.0, "batch")
    ft = train_config("finetune", "cpu").method_config
    assert (ft.probe_lr, ft.probe_weight_decay, ft.weight_decay, ft.clip_grad, ft.betas, ft.num_workers) == (
        3e-3, 1e-4, 0.05, 3.0, (0.9, 0.999), 0)
    assert train_config("mae", "gpu").method_config.decode == "batch"  # from data.decode_on_device


def test_train_configs_of_the_cpu_book_are_unchanged():
    """The engine configurations the builders make for the cpu profile, written out by hand.

    ``checkpoint_every=None``: a checkpoint at each epoch's end (the engine counts the steps); MAE's was
    ``steps per epoch`` (5), the same steps here, and DINO's was 0 (only at the end): a cadence, never a number.
    Epochs and warm-ups are those of the pretraining pool (about 5x the 360 chips here).
    """
    from sarssl.train.dino_setup import dino_train_config
    from sarssl.train.engine import TrainConfig
    from sarssl.train.finetune import finetune_train_config
    from sarssl.train.pretrain import mae_train_config

    assert mae_train_config(train_config("mae", "cpu"), 360, "out", seed=0, progress=False) == TrainConfig(
        epochs=5, batch_size=64, base_lr=1e-3, min_lr=0.0, warmup_epochs=0.35, weight_decay=0.05, betas=(0.9, 0.95),
        num_workers=2, device="cpu", seed=0, out_dir="out", checkpoint_every=None, log_every=5, progress=False)
    assert dino_train_config(train_config("dino", "cpu"), 360, "out", seed=0, progress=False) == TrainConfig(
        epochs=1, batch_size=16, base_lr=5e-4, lr=5e-4, min_lr=1e-6, warmup_epochs=0.2, weight_decay=0.04,
        weight_decay_end=0.4, betas=(0.9, 0.999), clip_grad=3.0, clip_mode="per_param", num_workers=2,
        device="cpu", out_dir="out", seed=0, log_every=5, progress=False, checkpoint_every=None)
    prof = get_profile("cpu")
    assert finetune_train_config(prof, 20, "linear", seed=1) == TrainConfig(
        epochs=40, batch_size=20, base_lr=1e-3, lr=3e-3, warmup_epochs=1.0, weight_decay=1e-4, betas=(0.9, 0.999),
        seed=1, out_dir=None, checkpoint_every=0, log_every=1, device="cpu", tensorboard=False, progress=False,
        clip_grad=None, num_workers=0, precision="fp32")  # 'auto' fine-tunes in fp32 off CUDA
    assert finetune_train_config(prof, 200, "finetune", seed=0, epochs=20) == TrainConfig(
        epochs=20, batch_size=32, base_lr=1e-3, lr=None, warmup_epochs=1.0, weight_decay=0.05, betas=(0.9, 0.999),
        seed=0, out_dir=None, checkpoint_every=0, log_every=6, device="cpu", tensorboard=False, progress=False,
        clip_grad=3.0, num_workers=0, precision="fp32")
    # overrides are configuration names; the resolved RunConfig is accepted as well
    cfg = train_config("finetune", prof, {"batch_size": 8, "probe_lr": 0.01})
    assert finetune_train_config(cfg, 40, "linear") == finetune_train_config(prof, 40, "linear", batch_size=8,
                                                                             probe_lr=0.01)
    assert finetune_train_config(cfg, 40, "linear").lr == 0.01


def test_override_precedence_and_unknown_names():
    cfg = train_config("mae", "cpu", {"batch_size": 8, "mask_ratio": 0.6, "num_workers": 0, "encoder": "vit_small",
                                      "precision": "fp32", "device": "cuda", "betas": [0.8, 0.9]})
    assert cfg.method_config.batch_size == 8 and cfg.data.batch_size == 64  # the method section first
    assert cfg.method_config.mask_ratio == 0.6 and cfg.data.num_workers == 0  # then data
    assert cfg.model.encoder == "vit_small" and cfg.engine.precision == "fp32" and cfg.device == "cuda"
    assert cfg.method_config.betas == (0.8, 0.9)  # lists (CLI, JSON) become tuples
    assert train_config("finetune", "cpu", {"num_workers": 3}).method_config.num_workers == 3
    assert train_config("finetune", "cpu", {"num_workers": 3}).data.num_workers == 2
    assert train_config("dino", "cpu", {"batch_size": 4}).method_config.knn_batch_size == 64
    with pytest.raises(ValueError, match=r"unknown pretraining override 'mask_ration'.*mask_ratio"):
        train_config("mae", "cpu", {"mask_ration": 0.5})
    with pytest.raises(ValueError, match=r"unknown pretraining override 'mask_ratio' for dino.*out_dim"):
        train_config("dino", "cpu", {"mask_ratio": 0.5})
    with pytest.raises(ValueError, match=r"unknown fine-tuning override 'out_dim'.*probe_lr"):
        train_config("finetune", "cpu", {"out_dim": 8})
    with pytest.raises(ValueError, match="decode must be"):
        train_config("mae", "cpu", {"decode": "gpu"})
    with pytest.raises(ValueError, match="unknown method"):
        train_config("byol", "cpu")
    with pytest.raises(ValueError, match="unknown field"):
        RunConfig.from_dict({**cfg.to_dict(), "mae": {**cfg.to_dict()["mae"], "maskratio": 0.5}})
    names = [k.name for k in knobs("mae")]
    assert len(names) == len(set(names)) and names.index("batch_size") < names.index("encoder")


def test_saved_config_is_what_loading_rebuilds(tmp_path, monkeypatch):
    import torch

    from sarssl.analysis.reconstruction import load_mae
    from sarssl.data.simulate import simulate_region
    from sarssl.train.checkpoint import load_checkpoint
    from sarssl.train.pretrain import load_run_config, run_pretrain

    simulate_region(tmp_path / "root", aoi="sim-a", n_chips=24, chip_size=32, seed=0, progress=False)
    overrides = {"epochs": 1, "batch_size": 4, "max_steps": 1, "mask_ratio": 0.5, "decoder_depth": 2}
    out = run_pretrain("mae", "smoke", tmp_path / "root", tmp_path / "run", overrides=overrides, progress=False)
    expected = train_config("mae", "smoke", overrides)
    info = json.loads((out / "run.json").read_text())
    assert info["config"] == expected.to_dict() and info["seed"] == 0 and info["aois"] == ["sim-a"]
    assert load_checkpoint(out / "checkpoint.pt")["run_config"] == expected.to_dict()
    assert load_run_config(out, "mae") == expected
    before = load_mae(out)
    # editing the profile table after the run changes nothing that loading rebuilds
    smoke = PROFILES["smoke"]
    edited = dataclasses.replace(smoke, mae=dataclasses.replace(smoke.mae, decoder_dim=32, decoder_depth=3,
                                                                 mask_ratio=0.9, norm_pix_loss=False))
    monkeypatch.setitem(PROFILES, "smoke", edited)
    assert train_config("mae", "smoke").method_config.decoder_dim == 32
    after = load_mae(out)
    assert len(after.decoder_blocks) == 2 and after.decoder_embed.out_features == 64
    assert after.mask_ratio == 0.5 and after.norm_pix_loss
    sa, sb = before.state_dict(), after.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_cli_flags_come_from_the_fields(monkeypatch, tmp_path, capsys):
    from sarssl import cli
    from sarssl.profiles import MAEConfig

    args = cli.build_parser().parse_args([
        "pretrain", "mae", "--data", str(tmp_path), "--out", "run", "--mask-ratio", "0.6", "--decoder-depth", "2",
        "--no-norm-pix-loss", "--betas", "0.9", "0.99", "--lr", "none", "--precision", "fp32", "--epochs", "3"])
    assert cli.config_overrides(args) == {"mask_ratio": 0.6, "decoder_depth": 2, "norm_pix_loss": False,
                                          "betas": [0.9, 0.99], "lr": None, "precision": "fp32"}
    seen = {}
    monkeypatch.setattr("sarssl.train.pretrain.run_pretrain", lambda method, profile, data, out, aoi, overrides:
                        seen.update(method=method, overrides=overrides) or out)
    from sarssl.workspace import DataSource

    monkeypatch.setattr("sarssl.workspace.resolve_data", lambda data, profile, aoi, band_map: DataSource(
        tmp_path, ("sim-a",), "m3leo", ("s1grd-2020",), 32, str(data), "a stand-in"))
    assert cli.main(["pretrain", "dino", "--profile", "smoke", "--data", str(tmp_path), "--out", "run",
                     "--out-dim", "1024", "--batch-size", "8", "--global-crops-scale", "0.5", "1"]) == 0
    assert seen == {"method": "dino", "overrides": {"batch_size": 8, "out_dim": 1024, "global_crops_scale": [0.5, 1.0]}}
    assert train_config("dino", "smoke", seen["overrides"]).method_config.global_crops_scale == (0.5, 1.0)
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["pretrain", "dino", "--data", str(tmp_path), "--out", "r", "--mask-ratio", "1"])
    args = cli.build_parser().parse_args(["finetune", "vegetation", "linear", "--data", str(tmp_path),
                                          "--probe-lr", "0.01", "--max-steps", "5", "--epochs", "2"])
    assert cli.config_overrides(args) == {"probe_lr": 0.01, "max_steps": 5} and args.epochs == 2
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["pretrain", "mae", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    mask_help = next(f for f in dataclasses.fields(MAEConfig) if f.name == "mask_ratio").metadata["help"]
    assert f"--mask-ratio FLOAT {mask_help}" in help_text and "--no-norm-pix-loss" in help_text
    assert "--n-chips" not in help_text  # simulator-only fields stay off the command line


def test_profiles_and_the_parser_stay_free_of_torch():
    code = "import sys; from sarssl.cli import build_parser; build_parser(); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
