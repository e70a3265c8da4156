"""timm encoders: presets, any size, fused attention, FLOP counting."""

from __future__ import annotations

import pytest
import timm
import torch

from sarssl.models.pos_embed import sincos_2d
from sarssl.models.vit import (
    STUDY_ENCODER, count_flops, create_encoder, encoder_from_profile, resolve_name, spec_from_profile,
)
from sarssl.profiles import get_profile


def test_create_encoder_shapes_and_fused_attention():
    enc = create_encoder("vit_tiny", patch_size=8, img_size=48)
    assert isinstance(enc, timm.models.vision_transformer.VisionTransformer)
    assert enc.pos_embed.shape == (1, 1 + 36, 192)
    assert all(b.attn.fused_attn for b in enc.blocks)
    out = enc(torch.randn(2, 12, 48, 48))
    assert out.shape == (2, 192)


def test_bad_names_and_sizes():
    with pytest.raises(ValueError, match="unknown encoder"):
        resolve_name("vit_gigantic_nope")
    with pytest.raises(ValueError, match="multiple of patch_size"):
        create_encoder("vit_tiny", patch_size=16, img_size=40)


def test_profile_presets():
    spec = spec_from_profile(get_profile("smoke"))
    assert (spec.name, spec.patch_size, spec.img_size, spec.in_chans) == ("vit_tiny_patch16_224", 8, 32, 12)
    assert encoder_from_profile(get_profile("smoke")).patch_embed.grid_size == (4, 4)
    assert (STUDY_ENCODER.name, STUDY_ENCODER.patch_size, STUDY_ENCODER.img_size) == ("vit_base_patch16_224", 16, 448)


def test_count_flops_matches_hand_count():
    lin = torch.nn.Linear(10, 7, bias=False)
    assert count_flops(lin, torch.randn(3, 10)) == 2 * 3 * 10 * 7
    enc = create_encoder("vit_tiny", patch_size=8, img_size=32)
    n, d, depth = 17, 192, 12
    expected = depth * (2 * n * d * (3 * d + d + 8 * d) + 2 * 2 * n * n * d) + 2 * 16 * 8 * 8 * 12 * d
    assert count_flops(enc, torch.randn(1, 12, 32, 32)) == expected  # attention counted on CPU too


def test_sincos_2d():
    e = sincos_2d(8, (2, 3), cls_token=True)
    assert e.shape == (7, 8) and torch.all(e[0] == 0)
    assert torch.allclose(e[1], torch.tensor([0.0, 0, 1, 1, 0, 0, 1, 1]))  # position (0, 0)
    assert len({tuple(r.tolist()) for r in e[1:]}) == 6
    with pytest.raises(ValueError, match="multiple of 4"):
        sincos_2d(6, 2)
