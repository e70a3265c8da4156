"""Tests for sarssl.analysis.attention (CLS attention maps with fused attention left on)."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

from sarssl.analysis.attention import (
    attention_maps,
    capture_cls_attention,
    cls_attention,
    cls_attention_and_tokens,
    patch_grid,
    threshold_attention,
    upsample_to_pixels,
)


@pytest.fixture
def vit(tiny_vit):
    """The shared tiny ViT (conftest), 3 blocks unless told, in eval mode: ``vit(depth=3, seed=0, **timm_kwargs)``."""
    return lambda depth=3, seed=0, **kw: tiny_vit(seed, depth, **kw).eval()


def manual_attention(model, x, block):
    """Reference: run the ViT by hand with explicit (non-fused) attention; full (B, heads, N, N) at ``block``."""
    with torch.no_grad():
        t = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))
        for i, blk in enumerate(model.blocks):
            if i == block % len(model.blocks):
                a = blk.attn
                y = blk.norm1(t)
                B, N, _ = y.shape
                qkv = a.qkv(y).reshape(B, N, 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4)
                q, k = a.q_norm(qkv[0]), a.k_norm(qkv[1])
                return ((q * a.scale) @ k.transpose(-2, -1)).softmax(-1)
            t = blk(t)
    raise AssertionError("block not reached")


@pytest.mark.parametrize("block", [0, 1, -1])
@pytest.mark.parametrize("kw", [{}, {"qk_norm": True}, {"reg_tokens": 2}])
def test_matches_manual_non_fused(block, kw, vit):
    m = vit(**kw)
    x = torch.randn(3, 12, 32, 32, generator=torch.Generator().manual_seed(1))
    full = manual_attention(m, x, block)
    assert torch.allclose(full.sum(-1), torch.ones(full.shape[:-1]), atol=1e-5)  # rows sum to 1 over all tokens
    maps = cls_attention(m, x, block=block)
    npt = m.num_prefix_tokens
    assert maps.shape == (3, m.blocks[0].attn.num_heads, 4, 4)
    ref = full[:, :, 0, npt:].reshape(maps.shape)
    assert torch.allclose(maps, ref, atol=1e-5)
    # the captured CLS row over all tokens sums to 1 and patches alone to <= 1
    with capture_cls_attention(m, block) as rec:
        m(x)
    assert rec.cls_row.shape == (3, 3, npt + 16)
    assert torch.allclose(rec.cls_row.sum(-1), torch.ones(3, 3), atol=1e-5)
    assert (maps.sum((-1, -2)) <= 1 + 1e-5).all()


def test_fused_flags_outputs_and_other_blocks_unchanged(monkeypatch, vit):
    m = vit(depth=4)
    flags = [b.attn.fused_attn for b in m.blocks]
    x = torch.randn(2, 12, 32, 32)
    with torch.no_grad():
        before = m(x)
        calls = {"n": 0}
        real_sdpa = F.scaled_dot_product_attention

        def counting_sdpa(*a, **k):
            calls["n"] += 1
            return real_sdpa(*a, **k)

        monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counting_sdpa)
        with capture_cls_attention(m, block=2) as rec:
            during = m(x)
        n_during = calls["n"]
        monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", real_sdpa)
        after = m(x)
    if all(flags):  # every block, the captured one included, still went through fused SDPA
        assert n_during == len(m.blocks)
    assert rec.calls == 1
    assert [b.attn.fused_attn for b in m.blocks] == flags
    assert torch.equal(before, during) and torch.equal(before, after)
    # hooks are gone after the context
    assert all(len(b.attn._forward_pre_hooks) == 0 for b in m.blocks)


def test_hooks_removed_on_error(vit):
    m = vit()
    with pytest.raises(RuntimeError):
        with capture_cls_attention(m, block=-1):
            m(torch.randn(1, 5, 32, 32))  # wrong channel count
    assert all(len(b.attn._forward_pre_hooks) == 0 for b in m.blocks)


def test_block_index_and_no_cls_errors(vit):
    m = vit(depth=2)
    with pytest.raises(IndexError, match="block=5"):
        cls_attention(m, torch.randn(1, 12, 32, 32), block=5)
    nocls = vit(depth=2, class_token=False, global_pool="avg")
    with pytest.raises(ValueError, match="CLS"):
        cls_attention(nocls, torch.randn(1, 12, 32, 32))


def test_spec_model_shapes_and_tokens():
    torch.manual_seed(0)
    m = timm.create_model("vit_tiny_patch16_224", pretrained=False, in_chans=12, num_classes=0,
                          img_size=64, patch_size=8).eval()
    x = torch.randn(2, 12, 64, 64)
    assert patch_grid(m, (64, 64)) == (8, 8)
    a_first = cls_attention(m, x, block=0)
    a_last = cls_attention(m, x, block=-1)
    assert a_first.shape == a_last.shape == (2, 3, 8, 8)
    assert not torch.allclose(a_first, a_last)
    att, tokens, cls = cls_attention_and_tokens(m, x, block=-1)
    assert torch.allclose(att, a_last, atol=1e-6)
    feats = m.forward_features(x)
    assert tokens.shape == (2, 192, 8, 8) and cls.shape == (2, 192)
    assert torch.allclose(tokens[:, :, 0, 1], feats[:, 1 + 1]) and torch.allclose(cls, feats[:, 0])


def test_wrapper_with_backbone(vit):
    class Wrap(torch.nn.Module):
        def __init__(self, backbone):
            super().__init__()
            self.backbone = backbone

    m = vit()
    x = torch.randn(1, 12, 32, 32)
    assert torch.equal(cls_attention(Wrap(m), x), cls_attention(m, x))


def brute_force_min_patches(p, mass):
    """Smallest k such that the k largest values hold >= mass of the total."""
    v = torch.sort(p.flatten() / p.sum(), descending=True).values
    return int((torch.cumsum(v, 0) < mass - 1e-6).sum()) + 1


@pytest.mark.parametrize("mass", [0.1, 0.6, 0.9, 1.0])
def test_threshold_keeps_mass_with_minimal_patches(mass):
    g = torch.Generator().manual_seed(0)
    attn = torch.rand(4, 3, 6, 5, generator=g) ** 3
    keep = threshold_attention(attn, mass)
    assert keep.dtype == torch.bool and keep.shape == attn.shape
    norm = attn / attn.sum((-1, -2), keepdim=True)
    kept_mass = (norm * keep).sum((-1, -2))
    assert (kept_mass >= mass - 1e-5).all()
    for b in range(4):
        for h in range(3):
            k = int(keep[b, h].sum())
            assert k == brute_force_min_patches(attn[b, h], mass)
            # the kept patches are the largest ones
            kept_min = attn[b, h][keep[b, h]].min()
            if k < attn[b, h].numel():
                assert kept_min >= attn[b, h][~keep[b, h]].max()


def test_threshold_bad_mass():
    with pytest.raises(ValueError, match="mass"):
        threshold_attention(torch.rand(1, 1, 2, 2), 0.0)


def test_upsample_modes():
    maps = torch.arange(4.0).reshape(1, 1, 2, 2)
    up = upsample_to_pixels(maps, 4)
    assert up.shape == (1, 1, 4, 4) and torch.equal(up[0, 0, :2, :2], torch.zeros(2, 2))
    assert up[0, 0, 3, 3] == 3
    bil = upsample_to_pixels(maps, (4, 6), mode="bilinear")
    assert bil.shape == (1, 1, 4, 6) and bil.dtype == torch.float32
    mask = maps > 1.5
    upm = upsample_to_pixels(mask, 4)
    assert upm.dtype == torch.bool and int(upm.sum()) == 8
    with pytest.raises(ValueError, match="mode"):
        upsample_to_pixels(maps, 4, mode="cubic")


def test_attention_maps_convenience(vit):
    m = vit()
    x = torch.randn(2, 12, 32, 32)
    out = attention_maps(m, x, mass=0.6, pixel_size="input")
    assert out.shape == (2, 3, 32, 32) and out.dtype == torch.bool
    raw = attention_maps(m, x)
    assert torch.equal(raw, cls_attention(m, x))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(vit):
    m = vit()
    x = torch.randn(2, 12, 32, 32)
    cpu = cls_attention(m, x)
    gpu = cls_attention(m.cuda(), x)
    assert gpu.device.type == "cuda"
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-4)
