"""Tests for sarssl.analysis.patch_features, .probes and .correlation (pooling, probes, tables, head
correlations); the probe metrics are tested in test_metrics.py."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from sarssl.analysis.correlation import head_product_correlation
from sarssl.analysis.patch_features import (
    PatchFeatures,
    extract_patch_features,
    pool_classes,
    pool_continuous,
    split_chips,
)
from sarssl.analysis.probes import evaluate_probe, fit_probe, probe_table
from sarssl.data.products import IGNORE_INDEX


# ---------------------------------------------------------------- pooling
def test_pool_classes_majority_ignoring():
    lab = torch.full((1, 4, 4), IGNORE_INDEX, dtype=torch.long)
    lab[0, :2, :2] = torch.tensor([[1, 1], [2, IGNORE_INDEX]])  # majority 1
    lab[0, :2, 2:] = torch.tensor([[3, IGNORE_INDEX], [IGNORE_INDEX, IGNORE_INDEX]])  # only valid pixel: 3
    lab[0, 2:, :2] = torch.tensor([[0, 2], [2, 0]])  # tie 0/2 -> 0
    out = pool_classes(lab, n_classes=4, patch=2)
    assert out.tolist() == [[[1, 3], [0, IGNORE_INDEX]]]
    with pytest.raises(ValueError, match="0..3"):
        pool_classes(torch.full((1, 2, 2), 7), n_classes=4, patch=2)


def test_pool_continuous_masked_mean():
    v = torch.tensor([[[1.0, 3.0], [100.0, 5.0]]])  # (1, 2, 2)
    valid = torch.tensor([[[True, True], [False, True]]])
    mean, ok = pool_continuous(v, valid, patch=2)
    assert mean.shape == (1, 1, 1) and ok.all()
    assert mean.item() == pytest.approx(3.0)
    _, ok = pool_continuous(v, valid, patch=2, min_valid=0.8)
    assert not ok.any()
    rgb = torch.stack([v, 2 * v], 1)  # (1, 2, 2, 2)
    m2, _ = pool_continuous(rgb, valid, patch=2)
    assert m2.shape == (1, 2, 1, 1) and m2[0, 1].item() == pytest.approx(6.0)


# ---------------------------------------------------------------- probe evaluation
def test_evaluate_excludes_masked_patches():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(6, 4, 3, 3, generator=g)
    y = 2 * f[:, 0] + f[:, 1]
    probe = fit_probe(f, y, kind="regression", steps=200, seed=0)
    bad = y.clone()
    valid = torch.ones_like(y, dtype=torch.bool)
    bad[:, 0, 0] = 1e6
    valid[:, 0, 0] = False
    clean = evaluate_probe(probe, f, bad, valid)
    assert clean["r2"] > 0.99 and clean["n"] == 6 * 8
    assert evaluate_probe(probe, f, bad)["r2"] < 0.5


# ---------------------------------------------------------------- probes
def synthetic_grid(n=40, c=8, hw=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, hw, hw, generator=g), g


def test_probe_learns_linear_regression_and_not_noise():
    f, g = synthetic_grid()
    w = torch.randn(8, 3, generator=g)
    y = torch.einsum("nchw,ck->nkhw", f, w) + 0.05 * torch.randn(40, 3, 6, 6, generator=g)
    noise = torch.randn(40, 3, 6, 6, generator=g)
    tr, te = slice(0, 30), slice(30, 40)
    good = evaluate_probe(fit_probe(f[tr], y[tr], steps=300, seed=0), f[te], y[te])
    rand = evaluate_probe(fit_probe(f[tr], noise[tr], steps=300, seed=0), f[te], noise[te])
    assert good["r2"] > 0.95
    assert rand["r2"] < 0.05


def test_probe_learns_classes_and_not_noise():
    f, g = synthetic_grid()
    w = torch.randn(8, 4, generator=g)
    labels = torch.einsum("nchw,ck->nkhw", f, w).argmax(1)
    labels[:, 0, 0] = IGNORE_INDEX
    noise = torch.randint(0, 4, (40, 6, 6), generator=g)
    tr, te = slice(0, 30), slice(30, 40)
    good = evaluate_probe(fit_probe(f[tr], labels[tr], kind="classification", n_classes=4, steps=300), f[te], labels[te])
    rand = evaluate_probe(fit_probe(f[tr], noise[tr], kind="classification", n_classes=4, steps=300), f[te], noise[te])
    assert good["miou"] > 0.8
    assert rand["miou"] < 0.35  # chance for 4 balanced classes is about 0.14..0.25
    with pytest.raises(ValueError, match="n_classes"):
        fit_probe(f, labels, kind="classification")


def test_mlp_probe_and_seed_determinism():
    f, g = synthetic_grid(n=20)
    y = (f[:, 0] * f[:, 1]).unsqueeze(1)  # not linear: needs the hidden layer
    a = fit_probe(f[:15], y[:15], hidden=64, steps=400, lr=5e-3, seed=3)
    b = fit_probe(f[:15], y[:15], hidden=64, steps=400, lr=5e-3, seed=3)
    assert torch.equal(a.predict_grid(f), b.predict_grid(f))
    assert evaluate_probe(a, f[15:], y[15:])["r2"] > 0.6
    lin = fit_probe(f[:15], y[:15], hidden=0, steps=400, seed=3)
    assert evaluate_probe(lin, f[15:], y[15:])["r2"] < 0.2
    assert a.predict_grid(f).shape == (20, 1, 6, 6)


# ---------------------------------------------------------------- extraction + table
def make_samples(n=12, size=32, seed=0):
    """Synthetic canonical samples whose products are simple functions of the SAR input."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        # blocky SAR: constant per 8x8 patch so that patch-level relations are exact
        s1 = torch.randn(12, size // 8, size // 8, generator=g).repeat_interleave(8, 1).repeat_interleave(8, 2)
        s1 = s1 + 0.05 * torch.randn(12, size, size, generator=g)
        valid = torch.ones(12, size, size, dtype=torch.bool)
        wc = (s1[0] > 0).long() + (s1[1] > 0).long()  # 0..2
        wc[:4, :4] = IGNORE_INDEX
        tc = (50 + 20 * s1[2]).clamp(0, 100)
        tcv = torch.ones(size, size, dtype=torch.bool)
        tcv[-8:, -8:] = False
        out.append({
            "s1": s1, "s1_valid": valid,
            "worldcover": wc, "lcci": (s1[3] > 0).long() * 5,
            "treecover": tc, "treecover_valid": tcv,
            "biomass": 10 * torch.relu(s1[4]), "biomass_valid": torch.ones(size, size, dtype=torch.bool),
            "built": torch.sigmoid(s1[5]), "built_valid": torch.ones(size, size, dtype=torch.bool),
            "s2rgb": torch.sigmoid(s1[6:9]), "s2rgb_valid": torch.ones(size, size, dtype=torch.bool),
            "id": f"chip{i}", "aoi": "sim",
        })
    return out


def test_extract_and_probe_table(tiny_vit):
    samples = make_samples()
    loader = DataLoader(samples, batch_size=5)
    model = tiny_vit().train()
    feats = extract_patch_features(model, loader, progress=False)
    assert model.training  # mode restored
    assert len(feats) == 12 and feats.ids[:2] == ["chip0", "chip1"] and feats.aois[0] == "sim"
    assert feats.features["attention"].shape == (12, 3, 4, 4)
    assert feats.features["embedding"].shape == (12, 192, 4, 4)
    assert feats.features["sar"].shape == (12, 12, 4, 4)
    assert feats.cls.shape == (12, 192)
    assert feats.targets["s2rgb"].shape == (12, 3, 4, 4)
    assert feats.targets["worldcover"].dtype == torch.long
    # pooled targets are correct for one patch, masks reach the patch grid
    s = samples[0]
    assert feats.features["sar"][0, :, 1, 2] == pytest.approx(s["s1"][:, 8:16, 16:24].mean((1, 2)), abs=1e-5)
    assert feats.targets["treecover"][0, 1, 2].item() == pytest.approx(s["treecover"][8:16, 16:24].mean().item(), abs=1e-4)
    assert not feats.valid["treecover"][:, 3, 3].any() and feats.valid["treecover"][:, 0, 0].all()
    assert feats.valid["worldcover"][:, 0, 0].all()  # 16 of 64 pixels ignored: majority of the rest

    table = probe_table(feats, steps=150, seed=0, progress=False)
    assert len(table) == 3 * 6
    assert set(table["feature"]) == {"attention", "embedding", "sar"}
    reg = table[table["product"] == "treecover"]
    assert reg["rmse"].notna().all() and reg["miou"].isna().all() and reg["psnr"].isna().all()
    assert table.loc[table["product"] == "s2rgb", "psnr"].notna().all()
    assert table.loc[table["task"] == "classification", "miou"].notna().all()
    sar = table[table["feature"] == "sar"].set_index("product")
    # treecover, built, s2rgb are (clipped) monotone functions of one pooled SAR channel
    assert sar.loc["treecover", "r2"] > 0.8 and sar.loc["s2rgb", "r2"] > 0.7


def test_split_chips_disjoint_and_seeded():
    f = PatchFeatures({"sar": torch.arange(10.0).reshape(10, 1, 1, 1)}, {}, {}, ids=[str(i) for i in range(10)])
    tr, te = split_chips(f, 0.3, seed=1)
    assert len(tr) == 7 and len(te) == 3 and not set(tr.ids) & set(te.ids)
    assert split_chips(f, 0.3, seed=1)[1].ids == te.ids


# ---------------------------------------------------------------- head x product
def test_head_product_correlation():
    g = torch.Generator().manual_seed(0)
    n, hw = 10, 5
    tc = torch.rand(n, hw, hw, generator=g)
    classes = torch.randint(0, 3, (n, hw, hw), generator=g)
    attn = torch.stack([tc, -tc, torch.rand(n, hw, hw, generator=g), classes.float() * 2 + 1], 1)
    targets = {"treecover": tc, "worldcover": classes, "s2rgb": tc.unsqueeze(1).repeat(1, 3, 1, 1)}
    valid = {"treecover": torch.ones(n, hw, hw, dtype=torch.bool)}
    df = head_product_correlation(attn, targets, valid)
    assert list(df.index) == ["head 0", "head 1", "head 2", "head 3"]
    assert df.loc["head 0", "treecover"] == pytest.approx(1.0, abs=1e-5)
    assert df.loc["head 1", "treecover"] == pytest.approx(-1.0, abs=1e-5)
    assert abs(df.loc["head 2", "treecover"]) < 0.3
    assert df.loc["head 0", "s2rgb"] == pytest.approx(1.0, abs=1e-5)
    assert df.loc["head 3", "worldcover"] == pytest.approx(1.0, abs=1e-5)  # attention determined by class
    assert 0 <= df.loc["head 2", "worldcover"] < 0.3
    assert df.attrs["measure"]["worldcover"] == "eta"
