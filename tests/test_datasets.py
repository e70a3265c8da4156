"""M3LEODataset: bad-data handling, label fractions, normalisation, the packed cache."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from sarssl.data.datasets import M3LEODataset
from sarssl.data.m3leo import read_splits
from sarssl.data.products import IGNORE_INDEX, INPUT_CHANNELS
from sarssl.data.transforms import Normalization


@pytest.fixture(scope="module")
def fx(tmp_path_factory, write_m3leo):
    return write_m3leo(tmp_path_factory.mktemp("ds"), n_chips=20, size=32, bad=True)


def make(fx, tmp_path, **kw):
    kw.setdefault("normalization", str(tmp_path / "norm.json"))
    kw.setdefault("progress", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = M3LEODataset(fx.layout.root, "fx", **kw)
    return ds, [str(w.message) for w in caught]


def test_bad_chips_skipped_warned_counted(fx, tmp_path):
    ds, msgs = make(fx, tmp_path, split="train")
    assert ds.skip_counts == {"corrupt": 1, "band_count": 1, "all_nodata": 1, "missing": 1}
    for reason, ident in fx.bad.items():
        assert ds.skipped[reason] == [f"fx/{ident}"]
        assert any(ident in m and reason in m and ".tif" in m for m in msgs), reason
    n_train = sum(s == "train" for s in fx.splits.values())
    assert ds.n_tiles == len(ds) == n_train - 4
    assert not {i for _, i in ds.items} & set(fx.bad.values())
    with pytest.raises(ValueError, match="corrupt|band_count|all_nodata|missing"):
        make(fx, tmp_path, split="train", on_bad="raise")


def test_sample_contract(fx, tmp_path):
    ds, _ = make(fx, tmp_path, split="train")
    s = ds[0]
    H = W = 32
    assert s["s1"].shape == (12, H, W) and s["s1"].dtype == torch.float32
    assert s["s1_valid"].dtype == torch.bool and not s["s1_valid"][:, :2, :3].any()
    assert (s["s1"][~s["s1_valid"]] == 0).all() and torch.isfinite(s["s1"]).all()
    assert s["worldcover"].dtype == torch.int64 and s["worldcover"][0, 0] == IGNORE_INDEX
    assert torch.equal(s["worldcover"], torch.from_numpy(fx.truth[s["id"]]["classes"]))
    assert s["lcci"].dtype == torch.int64 and s["lcci"].shape == (H, W)
    assert s["treecover"].shape == (H, W) and torch.isfinite(s["treecover"]).all()
    assert s["treecover"][0, 0] == 0 and s["treecover_valid"][0, 0]  # water (200) -> 0 % in band 2020
    assert not s["biomass_valid"][-1, -1] and s["biomass"][-1, -1] == 0  # NaN agb cell covers the corner
    assert not s["built_valid"][-1, -1] and float(s["built"].max()) <= 1.0
    assert s["s2rgb"].shape == (3, H, W) and not s["s2rgb_valid"][1, 1] and s["s2rgb_valid"].sum() == H * W - 1
    assert s["id"] in fx.ids and s["aoi"] == "fx"
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch["s1"].shape == (3, 12, H, W) and len(batch["id"]) == 3


def test_unnormalised_values_are_db(fx, tmp_path):
    ds, _ = make(fx, tmp_path, split="val", normalization=None)
    s = ds[0]
    t = fx.truth[s["id"]]["s1_db"]
    winter_vv, winter_vh = t[0], t[2]  # winter_vvasc, winter_vhasc
    v = s["s1_valid"][0].numpy()
    assert np.allclose(s["s1"][4].numpy()[v], winter_vv[v], atol=0.06)
    assert np.allclose(s["s1"][0].numpy()[v], (winter_vv - winter_vh)[v], atol=0.12)


def test_splits_and_label_fraction(fx, tmp_path):
    all_ds, _ = make(fx, tmp_path, split=None)
    val, _ = make(fx, tmp_path, split="val")
    assert {fx.splits[i] for _, i in val.items} == {"val"}
    assert all_ds.n_tiles == len(fx.ids) - 4
    a, _ = make(fx, tmp_path, split=None, limit_pct=25, seed=1)
    b, _ = make(fx, tmp_path, split=None, limit_pct=25, seed=1)
    c, _ = make(fx, tmp_path, split=None, limit_pct=50, seed=1)
    assert a.items == b.items and a.n_tiles == 4 and a.summary()["n_tiles"] == 4
    assert set(a.items) <= set(c.items) and c.n_tiles == 8


def test_normalisation_fit_cache_and_reuse(fx, tmp_path, monkeypatch):
    monkeypatch.setenv("SARSSL_HOME", str(tmp_path / "home"))
    ds, _ = make(fx, tmp_path, split="train", normalization="fit", norm_tiles=5)  # default cache root
    assert ds.norm_path.parent == tmp_path / "home" / "norm" and ds.norm_path.is_file()
    ds_fit, _ = make(fx, tmp_path, split="train", normalization="fit", norm_tiles=5,
                     cache_dir=tmp_path / "c")
    path = ds_fit.norm_path
    assert path.is_file() and path.parent == tmp_path / "c" / "norm"
    saved = json.loads(path.read_text())
    assert saved["channels"] == list(INPUT_CHANNELS) and saved["key"]["norm_tiles"] == 5
    # fitted on valid pixels of train chips: normalised train data is ~ zero-mean unit-variance
    x = torch.stack([ds_fit[i]["s1"] for i in range(len(ds_fit))])
    v = torch.stack([ds_fit[i]["s1_valid"] for i in range(len(ds_fit))])
    m = torch.stack([x[:, c][v[:, c]].mean() for c in range(12)])
    assert m.abs().max() < 0.3
    # reuse: a tampered file with the same key is loaded, not refitted
    saved["mean"] = [0.0] * 12
    saved["std"] = [1.0] * 12
    path.write_text(json.dumps(saved))
    again, _ = make(fx, tmp_path, split="val", normalization="fit", norm_tiles=5, cache_dir=tmp_path / "c")
    assert np.allclose(again.norm.mean, 0) and np.allclose(again.norm.std, 1)
    # a different key (tile count) refits
    other, _ = make(fx, tmp_path, split="val", normalization="fit", norm_tiles=4, cache_dir=tmp_path / "c")
    assert not np.allclose(other.norm.mean, 0)
    # explicit object, and channel mismatch is a clear error
    obj = Normalization(INPUT_CHANNELS, np.zeros(12), np.ones(12))
    ds_obj, _ = make(fx, tmp_path, split="val", normalization=obj)
    assert ds_obj.norm is obj
    with pytest.raises(ValueError, match="channels"):
        make(fx, tmp_path, split="val", normalization=Normalization(("vv_winter",), [0.0], [1.0]))


def test_cache_equals_geotiff(fx, tmp_path):
    norm = Normalization(INPUT_CHANNELS, np.full(12, -10.0), np.full(12, 4.0))
    tif, _ = make(fx, tmp_path, split=None, normalization=norm)
    packed, _ = make(fx, tmp_path, split=None, normalization=norm, cache_dir=tmp_path / "cache")
    assert packed.caches and tif.items == packed.items and packed.skipped == tif.skipped
    for i in range(len(tif)):
        a, b = tif[i], packed[i]
        assert a.keys() == b.keys()
        for k in a:
            assert (torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k]), k
    # reopened: validation comes from the cache index, bad chips still warned and counted
    val, msgs = make(fx, tmp_path, split="train", normalization=norm, cache_dir=tmp_path / "cache")
    assert val.skip_counts == {"corrupt": 1, "band_count": 1, "all_nodata": 1, "missing": 1}
    assert any(fx.bad["corrupt"] in m for m in msgs)
    # DataLoader with workers over the memmaps
    dl = torch.utils.data.DataLoader(packed, batch_size=4, num_workers=2)
    n = sum(len(b["id"]) for b in dl)
    assert n == len(packed)


def test_batch_decode_equals_sample_decode(fx, tmp_path):
    norm = Normalization(INPUT_CHANNELS, np.linspace(-20, -5, 12), np.linspace(2, 6, 12))
    kw = dict(split=None, normalization=norm, cache_dir=tmp_path / "cache")
    per_sample, _ = make(fx, tmp_path, **kw)
    compact, _ = make(fx, tmp_path, decode="batch", **kw)
    assert compact.chip_shape == (32, 32)
    item = compact[0]
    assert item["record"]["s1"].dtype == torch.uint8 and "s1" not in item
    collate = torch.utils.data.default_collate
    dl = torch.utils.data.DataLoader(compact, batch_size=5, num_workers=2)
    for j, raw in enumerate(dl):
        batch = compact.decode_batch(raw)
        expected = collate([per_sample[i] for i in range(5 * j, min(5 * j + 5, len(per_sample)))])
        assert batch.keys() == expected.keys() and compact.decode_batch(batch) is batch
        for k, v in expected.items():
            assert (torch.equal(v, batch[k]) if torch.is_tensor(v) else v == batch[k]), k
    with pytest.raises(ValueError, match="decode must be"):
        make(fx, tmp_path, decode="gpu", **kw)


def test_layout_errors(fx, tmp_path, write_m3leo):
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        M3LEODataset(tmp_path / "nowhere", "fx", progress=False)
    with pytest.raises(FileNotFoundError, match="nope.*does not exist"):
        M3LEODataset(fx.layout.root, "nope", progress=False)
    with pytest.raises(ValueError, match="unknown split"):
        M3LEODataset(fx.layout.root, "fx", split="training", progress=False)
    with pytest.raises(FileNotFoundError, match="product folder.*s1grd-2019"):
        M3LEODataset(fx.layout.root, "fx", products=("s1grd-2019",), progress=False)
    # a garbled split file
    bad = write_m3leo(tmp_path / "garbled", n_chips=5, size=16, bad=False)
    bad.layout.split_csv.write_text("id;part\nx;train\n")
    with pytest.raises(ValueError, match="missing column"):
        M3LEODataset(bad.layout.root, "fx", progress=False)
    bad.layout.split_csv.write_text("identifier,split\nfx_0000,holdout\n")
    with pytest.raises(ValueError, match="unknown split value"):
        read_splits(bad.layout)
    bad.layout.split_csv.unlink()
    with pytest.raises(FileNotFoundError, match="no split file"):
        M3LEODataset(bad.layout.root, "fx", progress=False)


def test_a_second_process_packing_the_same_cache_leaves_the_first_ones_arrays_alone(fx, tmp_path, monkeypatch):
    # DDP ranks pack the same cache at once: one rank's rebuild must not truncate arrays another has memmapped
    # (it did: a chapter-7 run ended in SIGBUS)
    import sarssl.data.cache as cache_mod

    norm = Normalization(INPUT_CHANNELS, np.full(12, -10.0), np.full(12, 4.0))
    first, _ = make(fx, tmp_path, split=None, normalization=norm, cache_dir=tmp_path / "cache")
    pc = next(iter(first.caches.values()))
    ident = max(pc.rows, key=pc.rows.get)  # the last row: a rebuild in place rewrites it last
    before = pc.read(ident)
    real_read = cache_mod.read_record

    def read_while_checking(*args, **kwargs):  # the first process keeps reading during the rebuild
        now = pc.read(ident)
        assert all(np.array_equal(now[k], before[k], equal_nan=True) for k in before)
        return real_read(*args, **kwargs)

    monkeypatch.setattr(cache_mod, "read_record", read_while_checking)
    again = cache_mod.build_cache(tmp_path / "cache", first.layouts["fx"],
                                  first.products, list(pc.rows), first.year, progress=False, key=pc.index["key"])
    assert again.folder == pc.folder and again.index["rows"] == pc.rows
    assert [p.name for p in pc.folder.parent.iterdir()] == [pc.folder.name]  # no building or stale folder left
    assert all(np.array_equal(again.read(ident)[k], before[k], equal_nan=True) for k in before)
