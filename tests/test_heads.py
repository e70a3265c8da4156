"""Heads on timm ViT encoders: shapes, features, cached decode == forward."""

import pytest
import torch

from sarssl.models.heads import (
    PixelRegressionHead, SegmentationHead, TileRegressionHead, default_indices, vit_features,
)
from sarssl.models.vit import create_encoder


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return create_encoder("vit_tiny", patch_size=8, img_size=32).eval()


@pytest.fixture(scope="module")
def x():
    return torch.randn(2, 12, 32, 32, generator=torch.Generator().manual_seed(1))


def test_default_indices():
    assert default_indices(12, 4) == (2, 5, 8, 11)
    assert default_indices(4, 4) == (0, 1, 2, 3)
    assert default_indices(12, 1) == (11,)


def test_vit_features_match_timm(encoder, x):
    with torch.no_grad():
        f = vit_features(encoder, x, (2, -1))
        tokens = encoder.forward_features(x)
        cls = encoder(x)  # num_classes=0, token pooling
    assert f["cls"].shape == (2, 192) and f["grid"].shape == (2, 2, 192, 4, 4)
    torch.testing.assert_close(f["cls"], cls)
    torch.testing.assert_close(f["mean"], tokens[:, 1:].mean(1))
    last = tokens[:, 1:].reshape(2, 4, 4, 192).permute(0, 3, 1, 2)
    torch.testing.assert_close(f["grid"][:, 1], last)
    assert not torch.allclose(f["grid"][:, 0], f["grid"][:, 1])  # block 2 is another level


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_tile_head(encoder, x, pool):
    head = TileRegressionHead(encoder, out_dim=3, pool=pool, hidden=16)
    assert head(x).shape == (2, 3)


@pytest.mark.parametrize("decoder", ["progressive", "linear"])
def test_dense_heads_shapes(encoder, x, decoder):
    pix = PixelRegressionHead(encoder, 1, decoder=decoder, decoder_dim=16)
    seg = SegmentationHead(encoder, 11, decoder=decoder, decoder_dim=16)
    assert pix(x).shape == (2, 1, 32, 32)
    assert seg(x).shape == (2, 11, 32, 32)
    assert seg.indices == (2, 5, 8, 11) and pix.indices == (11,)


def test_patch16_and_non_power_of_two_size():
    enc = create_encoder("vit_tiny", patch_size=16, img_size=48)
    seg = SegmentationHead(enc, 5, n_levels=2, decoder_dim=16)
    assert seg(torch.randn(1, 12, 48, 48)).shape == (1, 5, 48, 48)


def test_cached_decode_equals_forward(encoder, x):
    torch.manual_seed(0)
    seg = SegmentationHead(encoder, 11, decoder_dim=16).eval()
    with torch.no_grad():
        full = seg(x)
        cached = seg.decode(vit_features(encoder, x, seg.indices), (32, 32))
    torch.testing.assert_close(full, cached)


def test_decoder_parameters_exclude_encoder(encoder):
    seg = SegmentationHead(encoder, 11, decoder_dim=16)
    enc_ids = {id(p) for p in encoder.parameters()}
    dec = seg.decoder_parameters()
    assert dec and not any(id(p) in enc_ids for p in dec)


def test_bad_inputs(encoder):
    with pytest.raises(ValueError, match="out of range"):
        SegmentationHead(encoder, 11, indices=(12,))
    with pytest.raises(ValueError, match="pool"):
        TileRegressionHead(encoder, pool="max")
    with pytest.raises(TypeError, match="VisionTransformer"):
        TileRegressionHead(torch.nn.Linear(2, 2))
