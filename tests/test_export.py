"""``sarssl export``: a pretraining run as a timm / Hugging Face Hub model folder, loaded back offline by timm."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from sarssl.cli import main
from sarssl.data.products import INPUT_CHANNELS


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real (two-step) MAE run of the smoke profile on a tiny simulated region, its own workspace."""
    from sarssl.data.simulate import simulate_region
    from sarssl.train.pretrain import run_pretrain

    base = tmp_path_factory.mktemp("export")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SARSSL_HOME", str(base / "ws"))
        simulate_region(base / "data", "sim-a", n_chips=16, chip_size=32, seed=0, progress=False)
        out = run_pretrain("mae", "smoke", base / "data", base / "run", overrides={"max_steps": 2, "batch_size": 4},
                           progress=False)
        yield out, base


@pytest.fixture
def ws(run, monkeypatch):
    monkeypatch.setenv("SARSSL_HOME", str(run[1] / "ws"))
    return run[1] / "ws"


def _fitted_norm(base: Path):
    from sarssl.data.datasets import M3LEODataset

    ds = M3LEODataset(base / "data", "sim-a", split="train", products=("s1grd-2020",), normalization="fit",
                      norm_tiles=16, seed=0, progress=False)  # what run_pretrain fitted (smoke: 16 tiles)
    return ds.norm


def test_export_is_loaded_by_timm_offline(run, ws, tmp_path):
    import timm

    from sarssl.train.checkpoint import load_encoder

    run_dir, base = run
    out = tmp_path / "model"
    assert main(["export", str(run_dir), str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    cfg = json.loads((out / "config.json").read_text())
    spec = json.loads((run_dir / "encoder.json").read_text())
    assert cfg["architecture"] == spec["name"] and cfg["num_classes"] == 0
    assert cfg["model_args"] == {"in_chans": 12, "img_size": 32, "patch_size": 8}
    pc = cfg["pretrained_cfg"]
    norm = _fitted_norm(base)
    assert pc["input_size"] == [12, 32, 32]
    assert np.allclose(pc["mean"], norm.mean) and np.allclose(pc["std"], norm.std)
    assert any(", ".join(INPUT_CHANNELS) in n for n in pc["notes"]) and any("dB = v * 30 / 255 - 30" in n for n in pc["notes"])
    inp = cfg["sarssl_input"]
    assert inp["channels"] == list(INPUT_CHANNELS) and inp["units"] == "dB"
    assert inp["decoding"]["scale"] == pytest.approx(30 / 255) and inp["decoding"]["offset"] == -30.0
    assert inp["decoding"]["nodata_code"] == 0

    ref = load_encoder(run_dir).eval()
    x = torch.randn(3, 12, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = ref(x)
    # timm's local-folder source: config.json + model.safetensors, no network
    model = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    assert model.num_classes == 0 and model.pretrained_cfg["mean"] == pc["mean"]
    with torch.no_grad():
        assert torch.equal(model(x), expected)
    # the same weights through an explicit file overlay
    model2 = timm.create_model(cfg["architecture"], pretrained=True, num_classes=0,
                               pretrained_cfg_overlay=dict(file=str(out / "model.safetensors")), **cfg["model_args"])
    with torch.no_grad():
        assert torch.equal(model2.eval()(x), expected)
    data_cfg = timm.data.resolve_data_config({}, model=model)
    assert data_cfg["input_size"] == (12, 32, 32) and len(data_cfg["mean"]) == 12


def test_model_card(run, ws, tmp_path):
    run_dir, _ = run
    out = tmp_path / "model"
    assert main(["export", str(run_dir), str(out)]) == 0
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: timm\nlicense: mit\n")
    assert "masked autoencoder" in card and "simulated" in card and '"profile": "smoke"' in card
    last = (run_dir / "metrics.csv").read_text().strip().splitlines()
    header, row = last[0].split(","), last[-1].split(",")
    assert f"| loss | {float(row[header.index('loss')]):.6g} |" in card
    assert "vv-vh_winter" in card and "dB = v * 30 / 255 - 30" in card
    assert "@misc{allen2023sslsar" in card and "@misc{allen2024m3leo" in card and "MIT licence" in card
    assert "local-dir:" in card


def test_export_refuses_to_overwrite_and_takes_a_normalisation(run, ws, tmp_path, capsys):
    run_dir, base = run
    out = tmp_path / "model"
    assert main(["export", str(run_dir), str(out)]) == 0
    assert main(["export", str(run_dir), str(out)]) == 2
    assert "already holds an export" in capsys.readouterr().err
    norm = _fitted_norm(base)
    norm.mean = norm.mean + 1.0
    path = norm.save(tmp_path / "norm.json")
    assert main(["export", str(run_dir), str(out), "--overwrite", "--normalization", str(path)]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert np.allclose(cfg["pretrained_cfg"]["mean"], norm.mean)


def test_normalisation_is_refitted_when_the_cache_is_gone(run, tmp_path, monkeypatch):
    from sarssl.export import find_run_normalization

    run_dir, base = run
    monkeypatch.setenv("SARSSL_HOME", str(tmp_path / "empty-ws"))  # no cached normalisation here
    norm = find_run_normalization(run_dir)
    monkeypatch.setenv("SARSSL_HOME", str(base / "ws"))
    ref = _fitted_norm(base)
    assert np.array_equal(norm.mean, ref.mean) and np.array_equal(norm.std, ref.std)


def test_not_a_run_is_a_clear_error(tmp_path, capsys):
    assert main(["export", str(tmp_path), str(tmp_path / "out")]) == 2
    assert "encoder spec" in capsys.readouterr().err


class FakeHfApi:
    calls: list = []

    def __init__(self, token=None, **kw):
        self.token = token

    def create_repo(self, repo_id, repo_type=None, private=False, exist_ok=False):
        FakeHfApi.calls.append(("create_repo", repo_id, repo_type, private, self.token))

    def upload_folder(self, folder_path, repo_id, repo_type=None, commit_message=None, allow_patterns=None):
        FakeHfApi.calls.append(("upload_folder", repo_id, repo_type, sorted(os.listdir(folder_path)), allow_patterns))


def test_push_to_hub_with_a_token(run, ws, tmp_path, monkeypatch, capsys):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    FakeHfApi.calls = []
    out = tmp_path / "model"
    assert main(["export", str(run[0]), str(out), "--hub-repo", "someone/sarssl-mae-smoke"]) == 0
    assert FakeHfApi.calls[0] == ("create_repo", "someone/sarssl-mae-smoke", "model", False, "hf_test")
    assert FakeHfApi.calls[1][:4] == ("upload_folder", "someone/sarssl-mae-smoke", "model",
                                      ["README.md", "config.json", "model.safetensors"])
    assert "https://huggingface.co/someone/sarssl-mae-smoke" in capsys.readouterr().out
    assert "hf-hub:someone/sarssl-mae-smoke" in (out / "README.md").read_text()


def test_push_without_a_token_is_one_line(run, ws, tmp_path, monkeypatch, capsys):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    FakeHfApi.calls = []
    assert main(["export", str(run[0]), str(tmp_path / "model"), "--hub-repo", "someone/x"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no Hugging Face token" in err and len(err.splitlines()) == 1 and FakeHfApi.calls == []
    assert (tmp_path / "model" / "model.safetensors").is_file()  # the export itself was written
