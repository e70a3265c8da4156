"""SAR multi-crop: shapes, determinism, valid masks, speckle statistics, dB offsets, channel groups, seasons."""

import math

import pytest
import torch

from sarssl.data.multicrop import (
    CHANNEL_GROUPS, MultiCrop, MultiCropConfig, MultiCropDataset, ViewAugment, add_db_offset, add_speckle,
    drop_channel_group, item_seed, remap_seasons, sample_gamma, season_index,
)

STD = torch.tensor([2.0, 2.0, 2.0, 2.0, 3.0, 3.0, 3.0, 3.0, 4.0, 4.0, 4.0, 4.0])
NO_AUG = ViewAugment(hflip_p=0, vflip_p=0, rot90=False, rotate_p=0, intensity_p=0, speckle_p=0, group_drop_p=0)


def _chip(h=48, w=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(12, h, w, generator=g)
    valid = torch.ones(12, h, w, dtype=torch.bool)
    valid[:, :10, :] = False  # a no-data strip at the top
    return torch.where(valid, x, torch.zeros(())), valid


def test_shapes_order_and_types():
    cfg = MultiCropConfig(n_global=2, n_local=3, global_size=32, local_size=16)
    x, v = _chip()
    crops, valids = MultiCrop(cfg, STD)(x, v, torch.Generator().manual_seed(1))
    assert [tuple(c.shape) for c in crops] == [(12, 32, 32)] * 2 + [(12, 16, 16)] * 3
    assert all(c.dtype == torch.float32 for c in crops) and all(m.dtype == torch.bool for m in valids)
    assert all(m.shape == c.shape for c, m in zip(crops, valids))
    for c, m in zip(crops, valids):
        assert torch.all(c[~m] == 0), "no-data pixels must stay 0"


def test_deterministic_with_seed_and_differs_across_seeds():
    mc = MultiCrop(MultiCropConfig(n_local=2, global_size=32, local_size=16), STD)
    x, v = _chip()
    a, _ = mc(x, v, torch.Generator().manual_seed(5))
    b, _ = mc(x, v, torch.Generator().manual_seed(5))
    c, _ = mc(x, v, torch.Generator().manual_seed(6))
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not all(torch.equal(p, q) for p, q in zip(a, c))


def test_full_scale_crop_without_aug_is_identity_and_mask_tracks_nodata():
    cfg = MultiCropConfig(n_global=1, n_local=0, global_size=48, global_scale=(1.0, 1.0), ratio=(1.0, 1.0),
                          global_aug=NO_AUG)
    x, v = _chip()
    crops, valids = MultiCrop(cfg)(x, v, torch.Generator().manual_seed(0))
    assert torch.equal(crops[0], x) and torch.equal(valids[0], v)


def test_flip_keeps_mask_aligned_with_nodata():
    aug = ViewAugment(hflip_p=0, vflip_p=1.0, rot90=False, rotate_p=0, intensity_p=0, speckle_p=0, group_drop_p=0)
    cfg = MultiCropConfig(n_global=1, n_local=0, global_size=48, global_scale=(1.0, 1.0), ratio=(1.0, 1.0),
                          global_aug=aug)
    x, v = _chip()
    crops, valids = MultiCrop(cfg)(x, v, torch.Generator().manual_seed(0))
    assert not valids[0][:, -10:, :].any() and valids[0][:, :-10, :].all()  # strip moved to the bottom


def test_resized_mask_is_nearest_and_consistent():
    cfg = MultiCropConfig(n_global=2, n_local=4, global_size=32, local_size=16)
    x, v = _chip(64, 64)
    x = torch.where(v, torch.ones_like(x), torch.zeros(()))  # constant 1 on valid pixels
    aug = ViewAugment(intensity_p=0, speckle_p=0, group_drop_p=0)
    crops, valids = MultiCrop(MultiCropConfig(**{**cfg.__dict__, "global_aug": aug, "local_aug": aug}))(
        x, v, torch.Generator().manual_seed(3))
    for c, m in zip(crops, valids):
        assert m.dtype == torch.bool
        assert torch.all(c[~m] == 0)
        # away from the no-data edge a valid pixel of a constant image stays 1
        assert torch.isclose(c[m].median(), torch.tensor(1.0))


def test_gamma_speckle_moments():
    g = torch.Generator().manual_seed(0)
    for looks in (1.0, 4.0, 0.5):
        s = sample_gamma((200_000,), looks, g, dtype=torch.float64)
        assert abs(float(s.mean()) - 1.0) < 0.02
        assert abs(float(s.var()) - 1.0 / looks) / (1.0 / looks) < 0.05


@pytest.mark.parametrize("looks", [1.0, 4.0])
def test_speckle_cv_of_linear_intensity(looks):
    x = torch.zeros(12, 128, 128)  # constant backscatter, normalised value 0
    y = add_speckle(x, STD, looks, torch.Generator().manual_seed(1))
    for ch in (range(4, 8), range(8, 12)):
        for c in ch:
            lin = 10 ** (y[c] * STD[c] / 10)  # back to a linear ratio to the original intensity
            cv = float(lin.std() / lin.mean())
            assert abs(cv - 1 / math.sqrt(looks)) < 0.05 / math.sqrt(looks) + 0.02
    # VV-VH is recomputed from the speckled VV and VH
    vv_db, vh_db, d_db = y[4:8] * STD[4:8, None, None], y[8:12] * STD[8:12, None, None], y[0:4] * STD[0:4, None, None]
    assert torch.allclose(d_db, vv_db - vh_db, atol=1e-4)


def test_db_offset_is_consistent_across_polarisations():
    x = torch.zeros(12, 4, 4)
    y = add_db_offset(x, STD, 1.5, 0.5)
    db = y * STD[:, None, None]
    assert torch.allclose(db[4:8], torch.full_like(db[4:8], 1.5))
    assert torch.allclose(db[8:12], torch.full_like(db[8:12], 0.5))
    assert torch.allclose(db[0:4], torch.full_like(db[0:4], 1.0))


def test_channel_group_dropout():
    x, v = _chip(8, 8)
    x = x + 5.0
    for name, idx in CHANNEL_GROUPS.items():
        y, m = drop_channel_group(x, v, name)
        idx = list(idx)
        other = [c for c in range(12) if c not in idx]
        assert torch.all(y[idx] == 0) and not m[idx].any()
        assert torch.equal(y[other], x[other]) and torch.equal(m[other], v[other])
    assert set(CHANNEL_GROUPS["winter"]) == {0, 4, 8}
    assert set(CHANNEL_GROUPS["vv"]) == set(range(8))
    with pytest.raises(ValueError, match="group"):
        drop_channel_group(x, v, "hh")


def test_season_views():
    x = torch.arange(12, dtype=torch.float32)[:, None, None].expand(12, 2, 2).clone()
    v = torch.ones(12, 2, 2, dtype=torch.bool)
    g = torch.Generator().manual_seed(0)
    src = season_index("single", g)
    y, _ = remap_seasons(x, v, src)
    s = int(src[0])
    assert torch.equal(y[:, 0, 0], torch.tensor([s] * 4 + [4 + s] * 4 + [8 + s] * 4, dtype=torch.float32))
    src = season_index("roll", g)
    y, _ = remap_seasons(x, v, src)
    assert sorted(y[:4, 0, 0].tolist()) == [0, 1, 2, 3] and not torch.equal(y, x)


def test_missing_std_is_a_clear_error_and_shape_checks():
    with pytest.raises(ValueError, match="std_db"):
        MultiCrop(MultiCropConfig())
    mc = MultiCrop(MultiCropConfig(), STD)
    with pytest.raises(ValueError, match="INPUT_CHANNELS"):
        mc(torch.zeros(3, 16, 16))
    with pytest.raises(ValueError, match="season_mode"):
        ViewAugment(season_mode="shuffle")


class _Base(torch.utils.data.Dataset):
    def __len__(self):
        return 6

    def __getitem__(self, i):
        x, v = _chip(32, 32, seed=i)
        return {"s1": x, "s1_valid": v, "id": f"chip{i}", "worldcover": torch.zeros(32, 32, dtype=torch.long)}


def test_dataset_wrapper_collates_and_is_worker_independent():
    mc = MultiCrop(MultiCropConfig(n_local=2, global_size=32, local_size=16), STD)
    ds = MultiCropDataset(_Base(), mc, seed=7, keep=("id",))
    loader = torch.utils.data.DataLoader(ds, batch_size=3)
    batch = next(iter(loader))
    assert len(batch["crops"]) == 4 and batch["crops"][0].shape == (3, 12, 32, 32)
    assert batch["crops"][2].shape == (3, 12, 16, 16) and batch["crops_valid"][3].dtype == torch.bool
    assert batch["id"] == ["chip0", "chip1", "chip2"] and "worldcover" not in batch
    a = ds[4]["crops"][0]
    _ = ds[1]  # order of access does not matter
    assert torch.equal(a, ds[4]["crops"][0])
    ds.set_epoch(1)
    assert not torch.equal(a, ds[4]["crops"][0])
    assert item_seed(0, 0, 1) != item_seed(0, 1, 0)


# ---------------------------------------------------------------------------------------------- batched
def _batch(b=3, h=32, w=32, seed=0):
    xs, vs = zip(*[_chip(h, w, seed + i) for i in range(b)])
    return torch.stack(xs), torch.stack(vs)


def test_view_theta_reproduces_crop_flips_and_quarter_turns():
    import torch.nn.functional as F
    from sarssl.data.multicrop import _view_theta

    x = torch.randn(1, 3, 8, 8)

    def sample(theta, size=8):
        grid = F.affine_grid(theta[None].float(), [1, 3, size, size], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", align_corners=False)

    full = (0, 0, 8, 8)
    assert torch.allclose(sample(_view_theta(full, 8, 8, False, False, 0, 0.0)), x, atol=1e-5)
    assert torch.allclose(sample(_view_theta(full, 8, 8, True, False, 0, 0.0)), x.flip(-1), atol=1e-5)
    assert torch.allclose(sample(_view_theta(full, 8, 8, False, True, 0, 0.0)), x.flip(-2), atol=1e-5)
    for k in range(4):
        assert torch.allclose(sample(_view_theta(full, 8, 8, False, False, k, 0.0)), torch.rot90(x, k, (-2, -1)),
                              atol=1e-5)
    assert torch.allclose(sample(_view_theta((2, 1, 4, 4), 8, 8, False, False, 0, 0.0), 4), x[..., 2:6, 1:5],
                          atol=1e-5)


def test_batch_multicrop_shapes_masks_and_identity():
    from sarssl.data.multicrop import BatchMultiCrop

    x, v = _batch()
    cfg = MultiCropConfig(n_global=2, n_local=2, global_size=32, local_size=16)
    crops, valids = BatchMultiCrop(cfg, STD).batch(x, v, torch.Generator().manual_seed(0))
    assert [tuple(c.shape) for c in crops] == [(3, 12, 32, 32)] * 2 + [(3, 12, 16, 16)] * 2
    for c, m in zip(crops, valids):
        assert m.dtype == torch.bool and torch.all(c[~m] == 0)
    ident = MultiCropConfig(n_global=1, n_local=0, global_size=32, global_scale=(1.0, 1.0), ratio=(1.0, 1.0),
                            global_aug=NO_AUG)
    (c,), (m,) = BatchMultiCrop(ident).batch(x, v)
    assert torch.allclose(c, x, atol=1e-5) and torch.equal(m, v)


def test_batch_multicrop_offsets_speckle_and_dropout():
    from sarssl.data.multicrop import BatchMultiCrop

    x = torch.zeros(64, 12, 16, 16)
    only = dict(hflip_p=0, vflip_p=0, rot90=False, rotate_p=0, speckle_p=0, group_drop_p=0)
    cfg = MultiCropConfig(n_global=1, n_local=0, global_size=16, global_scale=(1.0, 1.0), ratio=(1.0, 1.0),
                          global_aug=ViewAugment(intensity_p=1.0, db_offset=0.5, db_pol_offset=0.0, **only))
    (c,), _ = BatchMultiCrop(cfg, STD).batch(x, None, torch.Generator().manual_seed(0))
    db = c * STD[None, :, None, None]
    assert float(db[:, 4:].abs().max()) <= 0.5 + 1e-5  # within the +-0.5 dB calibration offset
    assert torch.allclose(db[:, 4:8], db[:, 8:12], atol=1e-5) and float(db[:, :4].abs().max()) < 1e-5
    assert float(db[:, 4, 0, 0].std()) > 0.1  # offsets differ per image
    cfg = MultiCropConfig(n_global=1, n_local=0, global_size=16, global_scale=(1.0, 1.0), ratio=(1.0, 1.0),
                          global_aug=ViewAugment(intensity_p=0, speckle_looks=4.0, **{**only, "speckle_p": 1.0}))
    (c,), _ = BatchMultiCrop(cfg, STD).batch(x, None, torch.Generator().manual_seed(0))
    lin = 10 ** (c[:, 4:8] * 3.0 / 10)  # VV in linear power: Gamma(4, 1/4), mean 1, variance 1/4
    assert float(lin.mean()) == pytest.approx(1.0, abs=0.03) and float(lin.var()) == pytest.approx(0.25, abs=0.03)
    cfg = MultiCropConfig(n_global=1, n_local=0, global_size=16, global_scale=(1.0, 1.0), ratio=(1.0, 1.0),
                          global_aug=ViewAugment(intensity_p=0, **{**only, "group_drop_p": 1.0}))
    x1 = torch.ones(8, 12, 16, 16)
    (c,), (m,) = BatchMultiCrop(cfg, STD).batch(x1, None, torch.Generator().manual_seed(0))
    dropped = ~m[:, :, 0, 0]
    for i in range(8):  # each image lost exactly one whole season or polarisation group
        assert tuple(torch.nonzero(dropped[i]).flatten().tolist()) in {tuple(g) for g in CHANNEL_GROUPS.values()}
        assert torch.all(c[i][dropped[i]] == 0)


def test_batch_multicrop_dataset_views_are_seeded_by_epoch_and_items():
    from torch.utils.data import default_collate
    from sarssl.data.multicrop import BatchMultiCrop, BatchMultiCropDataset

    x, v = _batch(4)
    base = [{"s1": x[i], "s1_valid": v[i], "id": f"c{i}"} for i in range(4)]
    cfg = MultiCropConfig(n_local=2, global_size=32, local_size=16)
    ds = BatchMultiCropDataset(base, BatchMultiCrop(cfg, STD), seed=3)
    batch = default_collate([ds[i] for i in (2, 0)])
    a = ds.batch_views(batch)
    assert a["id"] == ["c2", "c0"] and len(a["crops"]) == 4 and "s1" not in a
    assert all(torch.equal(p, q) for p, q in zip(a["crops"], ds.batch_views(batch)["crops"]))
    ds.set_epoch(1)
    assert not torch.equal(a["crops"][0], ds.batch_views(batch)["crops"][0])
    with pytest.raises(TypeError):
        BatchMultiCropDataset(base, MultiCrop(cfg, STD))
