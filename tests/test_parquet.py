"""Parquet shards in the real M3LEO format: unpacking to the folder layout and streaming chips."""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from sarssl.data.datasets import M3LEODataset
from sarssl.data.parquet import M3LEOParquetStream, find_shards, pack_parquet, unpack_parquet
from sarssl.data.transforms import Normalization

AOI = "pq-a"


@pytest.fixture(scope="module")
def region(tmp_path_factory):
    from sarssl.data.simulate import simulate_region

    base = tmp_path_factory.mktemp("parquet")
    layout = simulate_region(base / "root", AOI, n_chips=16, chip_size=16, seed=3, progress=False)
    shards = pack_parquet(base / "root", AOI, base / "shards", chips_per_shard=8, row_group_size=2, progress=False)
    return layout, base / "shards", shards


def _ids(samples):
    return [s["id"] for s in samples]


def test_shards_have_the_real_format(region):
    layout, folder, shards = region
    assert len(shards) == 7 * 2  # seven products, two shards each
    pf = pq.ParquetFile(shards[0])
    assert pf.schema_arrow.names == ["path", "ds", "content"]
    assert pf.schema_arrow.field("content").type == pa.binary()
    assert pf.metadata.row_group(0).column(2).compression == "ZSTD"
    row = pf.read_row_group(0).to_pylist()[0]
    assert row["path"].startswith(f"{AOI}/{layout.stem}/{row['ds']}/") and row["path"].endswith(".tif")
    assert row["content"] == (layout.root / row["path"]).read_bytes()


def test_unpack_is_byte_identical_and_resumable(region, tmp_path):
    layout, folder, _ = region
    out = tmp_path / "unpacked"
    counts = unpack_parquet(folder, out, progress=False)
    originals = sorted(p for p in layout.chips_dir.rglob("*.tif"))
    assert counts["written"] == len(originals) == 16 * 7
    for p in originals:
        q = out / p.relative_to(layout.root)
        assert q.read_bytes() == p.read_bytes(), q
    assert not list(out.rglob("*.part"))
    again = unpack_parquet(folder, out, progress=False)
    assert again["written"] == 0 and again["skipped_existing"] == len(originals)
    # a truncated file is rewritten, the rest skipped
    victim = out / originals[5].relative_to(layout.root)
    victim.write_bytes(b"xx")
    third = unpack_parquet(folder, out, progress=False)
    assert third["written"] == 1 and victim.read_bytes() == originals[5].read_bytes()


def test_unpack_filters_products(region, tmp_path):
    _, folder, _ = region
    counts = unpack_parquet(folder, tmp_path / "o", products=["s1grd"], progress=False)
    assert counts["written"] == 16 and counts["filtered"] == 16 * 6
    assert {p.parent.name for p in (tmp_path / "o").rglob("*.tif")} == {"s1grd-2020"}


def test_unpack_rejects_bad_shards(tmp_path):
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"path": ["../evil.tif"], "ds": ["s1grd-2020"], "content": [b"x"]}), bad)
    with pytest.raises(ValueError, match="not a relative path"):
        unpack_parquet(bad, tmp_path / "o", progress=False)
    nocol = tmp_path / "nocol.parquet"
    pq.write_table(pa.table({"path": ["a/b.tif"], "data": [b"x"]}), nocol)
    with pytest.raises(ValueError, match="missing column"):
        unpack_parquet(nocol, tmp_path / "o", progress=False)
    with pytest.raises(FileNotFoundError):
        find_shards(tmp_path / "absent")


def test_stream_equals_folder_dataset(region):
    layout, folder, _ = region
    ds = M3LEODataset(layout.root, AOI, split=None, normalization=None, progress=False)
    want = {ds[i]["id"]: ds[i] for i in range(len(ds))}
    stream = M3LEOParquetStream(folder, split=None)
    got = {s["id"]: s for s in stream}
    assert sorted(got) == sorted(want)
    for ident, s in got.items():
        ref = want[ident]
        assert set(s) == set(ref)
        for k, v in ref.items():
            if isinstance(v, torch.Tensor):
                assert v.dtype == s[k].dtype and torch.equal(v, s[k]), (ident, k)
            else:
                assert v == s[k]


def test_stream_split_and_normalization(region):
    layout, folder, _ = region
    norm = Normalization(M3LEOParquetStream(folder, products=["s1grd-2020"]).channels,
                         np.linspace(-15, -5, 12), np.linspace(2, 4, 12))
    ds = M3LEODataset(layout.root, AOI, split="train", products=["s1grd-2020"], normalization=norm, progress=False)
    stream = M3LEOParquetStream(folder, products=["s1grd-2020"], split="train", split_csv=layout.split_csv,
                                normalization=norm)
    got = {s["id"]: s for s in stream}
    assert sorted(got) == sorted(i for _, i in ds.items)
    for i in range(len(ds)):
        ref = ds[i]
        assert set(got[ref["id"]]) == set(ref)
        assert torch.allclose(got[ref["id"]]["s1"], ref["s1"])
    with pytest.raises(ValueError, match="split_csv"):
        M3LEOParquetStream(folder, split="train")
    with pytest.raises(ValueError, match="normalization"):
        M3LEOParquetStream(folder, normalization="fit")


def test_every_chip_once_per_epoch_across_ranks_and_workers(region):
    _, folder, _ = region
    stream = M3LEOParquetStream(folder, products=["s1grd-2020", "esaworldcover-2020"], shuffle=True,
                                shuffle_buffer=3, seed=7)
    all_ids = sorted(k[1] for _, keys in stream.units for k in keys)
    assert len(all_ids) == 16 and len(stream.units) == 8
    orders = []
    for epoch in (0, 1):
        stream.set_epoch(epoch)
        parts = {(r, w): _ids(stream.iter_partition(r, 2, w, 2)) for r in range(2) for w in range(2)}
        seen = [i for p in parts.values() for i in p]
        assert sorted(seen) == all_ids  # exactly once: no duplicate, none missing
        assert all(parts.values())  # every reader got work
        again = {(r, w): _ids(stream.iter_partition(r, 2, w, 2)) for r in range(2) for w in range(2)}
        assert again == parts  # deterministic for (seed, epoch)
        orders.append(parts)
    assert orders[0] != orders[1]  # the epoch changes the order


def test_dataloader_workers_shard_the_rank(region):
    _, folder, _ = region
    stream = M3LEOParquetStream(folder, products=["s1grd-2020"], rank=1, world_size=2, shuffle=True, seed=1)
    loader = DataLoader(stream, batch_size=2, num_workers=2)
    got = sorted(i for batch in loader for i in batch["id"])
    expect = sorted(_ids(stream.iter_partition(1, 2, 0, 2)) + _ids(stream.iter_partition(1, 2, 1, 2)))
    assert got == expect and len(got) == len(set(got)) > 0
    batch = next(iter(DataLoader(stream, batch_size=2, num_workers=0)))
    assert batch["s1"].shape == (2, 12, 16, 16) and batch["s1_valid"].dtype == torch.bool


def test_stream_skips_and_counts_corrupt_chips(region, tmp_path):
    layout, folder, _ = region
    s1 = sorted((folder / AOI / layout.stem / "s1grd-2020").glob("*.parquet"))
    t = pq.read_table(s1[0]).to_pylist()
    t[0]["content"] = b"not a tiff"
    pq.write_table(pa.Table.from_pylist(t, schema=pq.read_schema(s1[0])), tmp_path / "bad.zstd.parquet",
                   compression="zstd", row_group_size=2)
    stream = M3LEOParquetStream([tmp_path / "bad.zstd.parquet"], products=["s1grd-2020"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ids = _ids(stream)
    assert len(ids) == len(t) - 1 and t[0]["path"].split("/")[-1][:-4] not in ids
    assert stream.skipped["corrupt"] and any("corrupt" in str(w.message) for w in caught)
