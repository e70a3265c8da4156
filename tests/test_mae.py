"""MAE: patchify, masking, loss on masked valid pixels, norm-pix, reconstruction, encoder export."""

from __future__ import annotations

import pytest
import timm
import torch

from sarssl.models.mae import (
    MAE, MAEPretrainTask, compute_table, export_encoder_state_dict, mae_flops, patchify, random_masking,
    reconstruct, unpatchify,
)
from sarssl.models.pos_embed import sincos_2d
from sarssl.models.vit import EncoderSpec, create_encoder


def small_mae(**kw):
    torch.manual_seed(0)
    args = dict(decoder_dim=32, decoder_depth=1, decoder_heads=4)
    args.update(kw)
    return MAE(create_encoder("vit_tiny", patch_size=8, img_size=32), **args)


def test_patchify_roundtrip_and_layout():
    x = torch.randn(2, 5, 16, 24)
    p = patchify(x, 8)
    assert p.shape == (2, 6, 8 * 8 * 5)
    assert torch.equal(p[0, 1].view(8, 8, 5)[2, 3], x[0, :, 2, 8 + 3])  # patch (0, 1), pixel (2, 3)
    assert torch.equal(unpatchify(p, 8, 5, (2, 3)), x)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        patchify(x, 5)


def test_random_masking_from_noise():
    noise = torch.rand(3, 16, generator=torch.Generator().manual_seed(1))
    ids_keep, mask, ids_restore, ids_masked = random_masking(noise, 0.75)
    assert ids_keep.shape == (3, 4) and ids_masked.shape == (3, 12) and mask.sum(1).tolist() == [12.0] * 3
    for b in range(3):  # the kept patches are the lowest-noise ones
        assert set(ids_keep[b].tolist()) == set(torch.argsort(noise[b])[:4].tolist())
        assert torch.all(mask[b, ids_keep[b]] == 0) and torch.all(mask[b, ids_masked[b]] == 1)
    assert torch.equal(torch.gather(torch.argsort(noise, 1), 1, ids_restore), torch.arange(16).expand(3, -1))


def test_forward_shapes_reproducible_and_fixed_pos_embed():
    mae = small_mae()
    x = torch.randn(2, 12, 32, 32)
    noise = torch.rand(2, 16)
    a, b = mae(x, noise=noise, predict_all=True), mae(x, noise=noise, predict_all=True)
    assert a.pred.shape == (2, 16, 8 * 8 * 12) and a.mask.shape == (2, 16)
    assert torch.equal(a.loss, b.loss) and torch.equal(a.mask, b.mask)
    assert not mae.encoder.pos_embed.requires_grad
    assert torch.allclose(mae.encoder.pos_embed[0], sincos_2d(192, 4, cls_token=True))
    a.loss.backward()
    assert mae.encoder.pos_embed.grad is None and mae.mask_token.grad is not None


def test_loss_only_on_masked_valid_pixels():
    mae = small_mae()
    x = torch.randn(2, 12, 32, 32)
    noise = torch.rand(2, 16)
    out = mae(x, noise=noise, predict_all=True)
    target = patchify(x, 8)
    per_patch = ((out.pred - target) ** 2).mean(-1)
    expected = (per_patch * out.mask).sum() / out.mask.sum()  # the reference formula
    assert torch.allclose(out.loss, expected, rtol=1e-5)
    # Corrupting visible pixels or invalid pixels must not change the loss.
    visible = unpatchify((1 - out.mask).unsqueeze(-1).expand(-1, -1, 768), 8, 12).bool()
    valid = torch.rand(2, 12, 32, 32) > 0.3
    ref = mae(x, noise=noise, valid=valid).loss
    x2 = x.clone()
    x2[~valid & ~visible] = 1e3
    # the encoder sees visible pixels, so only change masked+invalid pixels: loss must be identical
    assert torch.allclose(mae(x2, noise=noise, valid=valid).loss, ref, rtol=1e-6)
    x3 = x.clone()
    x3[valid & ~visible] += 1.0
    assert not torch.allclose(mae(x3, noise=noise, valid=valid).loss, ref)


@pytest.mark.parametrize("mode", ["patch", "channel"])
def test_norm_pix_targets_and_reconstruction_denormalises(mode):
    mae = small_mae(norm_pix_loss=True, norm_pix_mode=mode)
    x = torch.randn(2, 12, 32, 32) * 5 + 3
    target, _, (mean, std) = mae.targets(x)
    if mode == "patch":
        assert torch.allclose(target.mean(-1), torch.zeros(2, 16), atol=1e-4)
    else:
        t = target.view(2, 16, 64, 12)
        assert torch.allclose(t.mean(2), torch.zeros(2, 16, 12), atol=1e-4)
    noise = torch.rand(2, 16)
    rec = reconstruct(mae, x, noise=noise)
    assert rec["reconstruction"].shape == x.shape and rec["mask"].shape == (2, 1, 32, 32)
    vis = rec["mask"].expand_as(x) == 0
    assert torch.equal(rec["reconstruction"][vis], x[vis])  # visible patches pasted back
    assert torch.isnan(rec["masked_input"][~vis]).all()
    out = mae(x, noise=noise, predict_all=True)
    assert torch.allclose(patchify(rec["prediction"], 8), out.pred * std + mean, atol=1e-4)


@pytest.mark.parametrize("norm_pix", [False, True])
def test_training_path_predicts_masked_patches_only_with_the_same_loss_and_grads(norm_pix):
    mae = small_mae(norm_pix_loss=norm_pix)
    x = torch.randn(2, 12, 32, 32)
    valid = torch.rand(2, 12, 32, 32) > 0.2
    noise = torch.rand(2, 16)
    grads = []
    for predict_all in (False, True):
        mae.zero_grad()
        out = mae(x, noise=noise, valid=valid, predict_all=predict_all)
        assert (out.pred is None) != predict_all
        out.loss.backward()
        grads.append((out.loss.detach(), [p.grad.clone() for p in mae.parameters() if p.grad is not None]))
    (l0, g0), (l1, g1) = grads
    assert torch.allclose(l0, l1, rtol=1e-5) and len(g0) == len(g1)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(g0, g1))


def test_norm_pix_ignores_invalid_pixels_in_stats():
    mae = small_mae(norm_pix_loss=True)
    x = torch.randn(1, 12, 32, 32)
    valid = torch.ones_like(x, dtype=torch.bool)
    valid[..., :4, :] = False
    x2 = x.clone()
    x2[~valid] = 500.0
    t1, w, _ = mae.targets(x, valid)
    t2, _, _ = mae.targets(x2, valid)
    assert torch.allclose(t1[w.bool()], t2[w.bool()], atol=1e-5)


def test_export_loads_into_plain_timm_strict():
    mae = small_mae()
    state = export_encoder_state_dict(mae)
    fresh = timm.create_model("vit_tiny_patch16_224", pretrained=False, in_chans=12, num_classes=0,
                              img_size=32, patch_size=8)
    fresh.load_state_dict(state, strict=True)
    assert torch.equal(fresh.pos_embed, mae.encoder.pos_embed)
    x = torch.randn(1, 12, 32, 32)
    mae.eval()
    assert torch.allclose(fresh(x), mae.encoder(x), atol=1e-6)
    task = MAEPretrainTask(mae, EncoderSpec("vit_tiny_patch16_224", 8, 32))
    assert task.encoder_spec()["patch_size"] == 8 and set(task.export_encoder()) == set(state)


def test_flops_encoder_sees_only_visible_tokens():
    mae = small_mae()
    f = mae_flops(mae, 0.75)
    assert 0 < f["encoder"] < f["encoder_full"] / 3  # 5 of 17 tokens
    assert f["decoder"] > 0
    table = compute_table(("smoke",))
    assert table.loc[0, "visible"] == 4 and table.loc[0, "decoder"] == "64x1"


def test_training_reduces_loss():
    mae = small_mae()
    x = torch.randn(4, 12, 32, 32)
    x = x.cumsum(-1) / 10  # smooth, learnable structure
    opt = torch.optim.AdamW(mae.parameters(), lr=1e-3)
    noise = torch.rand(4, 16, generator=torch.Generator().manual_seed(0))
    first = None
    for _ in range(30):
        loss = mae(x, noise=noise).loss
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first
