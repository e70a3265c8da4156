"""MAE reconstruction helpers: loading a run's MAE, nested masks, dB de-normalisation, RMSE, figures."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch

from sarssl.analysis.reconstruction import (
    load_mae, plot_masking, plot_reconstructions, plot_training_curves, reconstruction_rmse, reconstructions_db,
)
from sarssl.data.products import INPUT_CHANNELS
from sarssl.models.mae import mae_from_profile
from sarssl.profiles import get_profile


def smoke_mae():
    torch.manual_seed(0)
    mae, _ = mae_from_profile(get_profile("smoke"), norm_pix_loss=True)
    return mae.eval()


def batch(b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 12, 32, 32, generator=g)
    valid = torch.ones_like(x, dtype=torch.bool)
    valid[0, :, :3, :5] = False  # a no-data corner
    return x.masked_fill(~valid, 0.0), valid


def invert(y):  # a fake normalisation: mean -10 dB, std 2 dB
    return y * 2.0 - 10.0


def test_reconstructions_db_nested_masks_units_and_nodata():
    mae = smoke_mae()
    x, valid = batch()
    res = reconstructions_db(mae, x, valid, invert, ratios=(0.5, 0.75), seed=3)
    assert list(res) == [0.5, 0.75]
    a, b = res[0.5], res[0.75]
    assert a["mask"].shape == (2, 32, 32) and a["reconstruction"].shape == (2, 12, 32, 32)
    assert np.all(b["mask"][a["mask"]])  # same noise: what is masked at 0.5 is masked at 0.75
    assert abs(a["mask"].mean() - 0.5) < 1e-6 and abs(b["mask"].mean() - 0.75) < 1e-6
    expected = invert(x).masked_fill(~valid, float("nan")).numpy()
    np.testing.assert_allclose(a["input"], expected, rtol=1e-6)
    vis = ~a["mask"][:, None] & valid.numpy()  # visible pixels are copied from the input, in dB
    np.testing.assert_allclose(a["reconstruction"][vis], expected[vis], rtol=1e-5, atol=1e-5)
    assert np.isnan(a["reconstruction"][0, :, :3, :5]).all() and np.isnan(a["masked_input"][a["mask"][:, None].repeat(12, 1)]).all()
    assert np.isfinite(a["loss"])
    # the patch-mean reference is constant inside each patch (per channel, in dB)
    pm = a["patch_mean"][1].reshape(12, 4, 8, 4, 8)
    np.testing.assert_allclose(pm, pm[:, :, :1, :, :1].repeat(8, 2).repeat(8, 4), rtol=1e-5)


def test_reconstruction_rmse_against_known_errors():
    mask = np.zeros((1, 4, 4), bool)
    mask[0, :2] = True  # top half masked
    truth = np.zeros((1, 12, 4, 4), np.float32)
    truth[0, :, :2] = 3.0  # masked pixels 3 dB above the visible ones (0 dB)
    recon = truth.copy()
    recon[0, :, :2] += 1.0  # MAE off by 1 dB on masked pixels
    truth[0, 0, 0, 0] = np.nan  # no-data pixel is not counted
    df = reconstruction_rmse({0.5: {"input": truth, "reconstruction": recon, "mask": mask, "patch_mean": truth + 2}})
    assert df.loc[(0.5, "all"), "patch_mean_rmse_db"] == pytest.approx(2.0)
    assert df.loc[(0.5, INPUT_CHANNELS[1]), "mae_rmse_db"] == pytest.approx(1.0)
    assert df.loc[(0.5, INPUT_CHANNELS[1]), "baseline_rmse_db"] == pytest.approx(3.0)
    assert df.loc[(0.5, INPUT_CHANNELS[0]), "n_pixels"] == 7
    assert df.loc[(0.5, "all"), "n_pixels"] == 7 + 11 * 8


def test_load_mae_roundtrip(tmp_path):
    from sarssl.models.mae import MAEPretrainTask

    mae = smoke_mae()
    torch.save({"task": MAEPretrainTask(mae).state_dict()}, tmp_path / "checkpoint.pt")
    (tmp_path / "run.json").write_text(json.dumps({"method": "mae", "profile": "smoke", "overrides": {"seed": 0}}))
    loaded = load_mae(tmp_path)
    x, valid = batch()
    noise = torch.rand(2, mae.num_patches)
    assert torch.equal(loaded(x, noise=noise, valid=valid).loss, mae(x, noise=noise, valid=valid).loss)
    (tmp_path / "run.json").write_text(json.dumps({"method": "dino", "profile": "smoke"}))
    with pytest.raises(ValueError, match="expected 'mae'"):
        load_mae(tmp_path)
    with pytest.raises(FileNotFoundError, match="run.json"):
        load_mae(tmp_path / "missing")


def test_figures():
    import pandas as pd
    import matplotlib.pyplot as plt

    mae = smoke_mae()
    x, valid = batch()
    res = reconstructions_db(mae, x, valid, invert, ratios=(0.5, 0.9))
    fig = plot_masking(res[0.9]["input"][0], res[0.9]["mask"][0], patch_size=mae.patch_size)
    assert len([a for a in fig.axes if a.get_visible()]) == 24
    fig2 = plot_reconstructions(res, channels=["vv_summer", "vh_summer"])
    assert len(fig2.axes) == 5 * 2
    with pytest.raises(ValueError, match="unknown channel"):
        plot_reconstructions(res, channels=["nope"])
    with pytest.raises(ValueError, match="do not match"):
        plot_masking(res[0.9]["input"][0], res[0.9]["mask"][0][:5])
    fig3 = plot_training_curves(pd.DataFrame({"step": [1, 2], "loss": [1.0, 0.9], "lr": [1e-4, 2e-4]}))
    assert len(fig3.axes) == 2
    plt.close("all")
