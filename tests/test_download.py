"""Downloading M3LEO AOIs, whole or a subset, through a local fake hub with the published listings."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_hub import PUBLISHED, FakeHub, archive_dataset, build_fake_hub, miniset_products  # noqa: E402

from sarssl.data.download import (  # noqa: E402
    KNOWN_AOIS, MANIFEST_NAME, download_aoi, read_subset, repo_id_for, select_chips, select_files,
)
from sarssl.data.layout import AOILayout  # noqa: E402
from sarssl.data.parquet import M3LEOParquetStream, pack_parquet, unpack_parquet  # noqa: E402

AOI = "dl-a"
BOOK = Path(__file__).resolve().parents[1] / "book" / "chapters"


@pytest.fixture(scope="module")
def hub_folder(tmp_path_factory):
    """A miniset repository (GeoTIFF layout, ``_miniset`` metadata names) and a full parquet repository."""
    from sarssl.data.simulate import simulate_region

    base = tmp_path_factory.mktemp("hub")
    layout = simulate_region(base / "src", AOI, n_chips=6, chip_size=16, seed=5, progress=False)
    mini = base / "hub" / repo_id_for(AOI, miniset=True)
    shutil.copytree(layout.chips_dir, mini / layout.stem)
    shutil.copyfile(layout.split_csv, mini / layout.split_csv.name.replace(".csv", "_miniset.csv"))
    shutil.copyfile(layout.geojson, mini / layout.geojson.name.replace(".geojson", "_miniset.geojson"))
    (mini / "README.md").write_text("miniset")
    full = base / "hub" / repo_id_for(AOI)
    pack_parquet(base / "src", AOI, base / "packed", chips_per_shard=3, row_group_size=2, progress=False)
    shutil.copytree(base / "packed" / AOI, full)
    shutil.copyfile(layout.split_csv, full / layout.split_csv.name.replace(".csv", "_parquet.csv"))
    shutil.copyfile(layout.geojson, full / layout.geojson.name)
    return base / "hub", layout


def test_repo_ids_and_selection():
    assert repo_id_for("europe") == "M3LEO/europe"
    assert repo_id_for("europe", miniset=True) == "M3LEO-miniset/europe"
    with pytest.raises(ValueError):
        repo_id_for("../x")
    files = ["a.csv", "README.md", "s_partitions_aschips_1/s1grd-2020/x.tif", "s_partitions_aschips_1/lcci-2020/x.tif"]
    meta, data = select_files(files, ["s1grd"])
    assert meta == ["a.csv"] and data == ["s_partitions_aschips_1/s1grd-2020/x.tif"]
    with pytest.raises(ValueError, match="not in the repository"):
        select_files(files, ["biomass-2020"])
    with pytest.raises(ValueError, match="unknown product"):
        select_files(files, ["sentinel9"])


def test_miniset_download_is_the_layout_and_resumes(hub_folder, tmp_path):
    folder, src = hub_folder
    hub = FakeHub(folder)
    aoi_dir = download_aoi(AOI, tmp_path, miniset=True, progress=False, hub_api=hub)
    assert aoi_dir == tmp_path / AOI and (aoi_dir / MANIFEST_NAME).is_file()
    layout = AOILayout.find(tmp_path, AOI)  # the _miniset split CSV and geojson, read as published
    assert layout.stem == src.stem and layout.geojson.is_file()
    tifs = sorted(src.chips_dir.rglob("*.tif"))
    assert len(hub.calls) == len(tifs) + 2  # GeoTIFFs + split CSV + geojson (README skipped)
    for p in tifs:
        assert (layout.chips_dir / p.relative_to(src.chips_dir)).read_bytes() == p.read_bytes()
    # second run: nothing downloaded; a damaged file is fetched again, alone
    hub.calls.clear()
    download_aoi(AOI, tmp_path, miniset=True, progress=False, hub_api=hub)
    assert hub.calls == []
    victim = layout.chips_dir / tifs[3].relative_to(src.chips_dir)
    victim.write_bytes(b"truncated")
    download_aoi(AOI, tmp_path, miniset=True, progress=False, hub_api=hub)
    assert hub.calls == [victim.relative_to(aoi_dir).as_posix()] and victim.read_bytes() == tifs[3].read_bytes()


def test_products_filter_and_failures(hub_folder, tmp_path):
    folder, src = hub_folder
    first = sorted(src.product_dir("s1grd-2020").glob("*.tif"))[0]
    bad = f"{src.stem}/s1grd-2020/{first.name}"
    hub = FakeHub(folder, fail={bad})
    with pytest.raises(OSError, match="failed"):
        download_aoi(AOI, tmp_path, products=["s1grd-2020"], miniset=True, progress=False, hub_api=hub)
    hub.fail.clear()
    hub.calls.clear()
    aoi_dir = download_aoi(AOI, tmp_path, products=["s1grd-2020"], miniset=True, progress=False, hub_api=hub)
    assert hub.calls == [bad]  # only the failed file is retried
    assert {p.parent.name for p in aoi_dir.rglob("*.tif")} == {"s1grd-2020"}
    with pytest.raises(ValueError, match="not in the repository"):
        download_aoi(AOI, tmp_path, products=["biomass-2019"], miniset=True, progress=False, hub_api=hub)
    with pytest.raises(ValueError, match="cannot list"):
        download_aoi("nowhere", tmp_path, progress=False, hub_api=hub)


def test_full_archive_download_unpack_and_stream(hub_folder, tmp_path):
    folder, src = hub_folder
    hub = FakeHub(folder)
    aoi_dir = download_aoi(AOI, tmp_path, products=["s1grd", "esaworldcover"], progress=False, hub_api=hub)
    shards = sorted(aoi_dir.rglob("*.parquet"))
    assert len(shards) == 4 and {p.parent.name for p in shards} == {"s1grd-2020", "esaworldcover-2020"}
    layout = AOILayout.find(tmp_path, AOI)
    stream = M3LEOParquetStream(shards, products=["s1grd-2020", "esaworldcover-2020"], split="train",
                                split_csv=layout.split_csv)
    assert len(list(stream)) == stream.n_chips > 0
    counts = unpack_parquet(shards, tmp_path, progress=False)
    assert counts["written"] == 12
    for p in sorted(src.product_dir("s1grd-2020").glob("*.tif")):
        assert layout.chip_path("s1grd-2020", p.stem).read_bytes() == p.read_bytes()


# --------------------------------------------------------------------------------------------
# the published listings (tests/fake_hub.py)
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pub(tmp_path_factory):
    """Miniset and archive repositories of conus and middleeast with the published names."""
    return build_fake_hub(tmp_path_factory.mktemp("pubhub"), aois=("conus", "middleeast"), n_chips=10)


@pytest.fixture
def fake_client(pub, monkeypatch):
    """``sarssl data download`` (the CLI) served by the fake hub; returns the FakeHub to inspect calls."""
    hub = FakeHub(pub.folder)
    monkeypatch.setattr("sarssl.data.download.HubClient", lambda *a, **k: hub)
    return hub


def test_fake_listing_is_the_published_one(pub):
    hub = FakeHub(pub.folder)
    prefix, suffix = PUBLISHED["conus"]
    mini = hub.list_repo_files("M3LEO-miniset/conus")
    assert f"{prefix}_miniset.geojson" in mini and f"{prefix}{suffix}_miniset.csv" in mini
    assert suffix == "_splits_60bands_angle09_60-20-20"
    folders = sorted({f.split("/")[1] for f in mini if f.startswith(prefix + "/")})
    assert folders == miniset_products("conus")
    assert {"gssic", "gunw_2020-01-01_2020-03-31", "srtmdem", "s2rgbm-2020"} <= set(folders)
    assert "strmdem" in {f.split("/")[1] for f in hub.list_repo_files("M3LEO-miniset/middleeast") if "/" in f}
    full = hub.list_repo_files("M3LEO/conus")
    shard = re.compile(rf"^conus/{prefix}/(?P<ds>[^/]+)/[0-9a-f]{{13}}\.zstd\.parquet$")
    datasets = {m["ds"] for f in full if (m := shard.match(f))}
    assert {"s1grd-2020", "gssic", "gunw-2020-01-01_2020-03-31", "s2srm-2020"} <= datasets
    assert f"{prefix}{suffix}.csv" in full and f"{prefix}{suffix}_parquet.csv" in full


def test_select_chips_stratified_and_seeded():
    import pandas as pd

    df = pd.DataFrame({"identifier": [f"c{i:03d}" for i in range(50)],
                       "split": ["train"] * 30 + ["val"] * 10 + ["test"] * 10})
    ids = select_chips(df, 10, seed=0)
    split = dict(zip(df["identifier"], df["split"]))
    assert len(ids) == 10 and [split[i] for i in ids].count("train") == 6
    assert sum(split[i] == "val" for i in ids) == 2 and sum(split[i] == "test" for i in ids) == 2
    assert select_chips(df, 10, seed=0) == ids and select_chips(df, 10, seed=1) != ids
    assert select_chips(df, 4, seed=0) and len(select_chips(df, 4, seed=0)) == 4
    tv = select_chips(df, 8, splits=["train", "val"], seed=0)
    assert {split[i] for i in tv} == {"train", "val"} and sum(split[i] == "train" for i in tv) == 6
    assert len(select_chips(df, None, splits="test")) == 10 and len(select_chips(df, 500)) == 50
    with pytest.raises(ValueError, match="unknown split"):
        select_chips(df, 3, splits=["holdout"])


def test_product_spellings_are_matched():
    prefix = PUBLISHED["middleeast"][0]
    files = [f"middleeast/{prefix}/s2srm-2020/ab.zstd.parquet", f"middleeast/{prefix}/strmdem/ab.zstd.parquet",
             f"middleeast/{prefix}/gunw-2020-01-01_2020-03-31/ab.zstd.parquet", f"{prefix}_x_parquet.csv"]
    assert select_files(files, ["s2rgbm-2020"])[1] == files[:1]
    assert select_files(files, ["srtmdem"])[1] == files[1:2]
    assert select_files(files, ["gunw"])[1] == files[2:3]
    assert select_files(files, ["gunw_2020-01-01_2020-03-31"])[1] == files[2:3]


def test_miniset_subset_download(pub, tmp_path):
    hub = FakeHub(pub.folder)
    prefix, suffix = PUBLISHED["conus"]
    products = ["s1grd-2020", "esaworldcover-2020"]
    aoi_dir = download_aoi("conus", tmp_path, products=products, miniset=True, max_chips=5, seed=0,
                           progress=False, hub_api=hub)
    rec = read_subset(aoi_dir)
    chosen = rec["identifiers"]
    assert len(chosen) == 5 and sum(rec["chips"].values()) == 5 and set(rec["chips"]) <= {"train", "val", "test"}
    meta = {f"{prefix}_miniset.geojson", f"{prefix}{suffix}_miniset.csv"}
    tifs = {f"{prefix}/{p}/{i}.tif" for p in products for i in chosen}
    assert set(hub.calls) == meta | tifs and len(hub.calls) == len(meta | tifs)  # the split CSV, then only these
    layout = AOILayout.find(tmp_path, "conus")  # published names, read as they are
    assert layout.split_csv.name == f"{prefix}{suffix}_miniset.csv" and layout.geojson.is_file()
    from sarssl.data.m3leo import read_chips_geojson, read_splits

    assert sorted(read_splits(layout)["identifier"]) == chosen
    assert sorted(f["properties"]["identifier"] for f in read_chips_geojson(layout)["features"]) == chosen
    assert (aoi_dir / ".sarssl" / "hub" / f"{prefix}{suffix}_miniset.csv").is_file()  # the full published file
    from sarssl.data.datasets import M3LEODataset

    ds = M3LEODataset(tmp_path, "conus", split=None, products=products, normalization=None, progress=False)
    assert len(ds) == 5 and not ds.skipped
    # resumable: the same command fetches nothing; a damaged GeoTIFF alone is fetched again
    hub.calls.clear()
    download_aoi("conus", tmp_path, products=products, miniset=True, max_chips=5, seed=0, progress=False, hub_api=hub)
    assert hub.calls == []
    victim = sorted(tifs)[0]
    (aoi_dir / victim).write_bytes(b"x")
    download_aoi("conus", tmp_path, products=products, miniset=True, max_chips=5, seed=0, progress=False, hub_api=hub)
    assert hub.calls == [victim]
    # splits: train and val only
    other = download_aoi("conus", tmp_path / "tv", products=["s1grd-2020"], miniset=True, max_chips=4,
                         splits=["train", "val"], seed=3, progress=False, hub_api=hub)
    assert set(read_subset(other)["chips"]) <= {"train", "val"}


def test_archive_subset_fetches_only_needed_shards(pub, tmp_path):
    hub = FakeHub(pub.folder)
    prefix, suffix = PUBLISHED["conus"]
    aoi_dir = download_aoi("conus", tmp_path, products=["s1grd-2020", "s2rgbm-2020"], max_chips=2, seed=1,
                           progress=False, hub_api=hub)
    rec = read_subset(aoi_dir)
    need = sorted({pub.shards["conus"][i] for i in rec["identifiers"]})
    assert rec["shards"] == need and len(need) < len(set(pub.shards["conus"].values()))
    shards = sorted(p for p in aoi_dir.rglob("*.zstd.parquet"))
    assert {p.parent.name for p in shards} == {"s1grd-2020", "s2srm-2020"}  # the card's dataset names
    assert sorted({p.name.split(".")[0] for p in shards}) == need
    assert all(p.relative_to(tmp_path).parts[:2] == ("conus", prefix) for p in shards)
    layout = AOILayout.find(tmp_path, "conus")
    assert layout.split_csv.name == f"{prefix}{suffix}.csv" and layout.shard_index.name.endswith("_parquet.csv")
    counts = unpack_parquet(aoi_dir, tmp_path, identifiers=rec["identifiers"], progress=False)
    assert counts["written"] == 4  # two chips x two products; the shards' other chips are left packed
    src = pub.folder / "M3LEO-miniset" / "conus" / prefix
    for p in ("s1grd-2020", "s2rgbm-2020"):
        for i in rec["identifiers"]:
            assert layout.chip_path(p, i).read_bytes() == (src / p / f"{i}.tif").read_bytes()
    stream = M3LEOParquetStream(aoi_dir, products=["s1grd-2020", "s2rgbm-2020"], split=None,
                                split_csv=layout.split_csv)
    assert stream.n_chips == 2  # s2srm rows are the s2rgbm product; only the chosen chips are listed
    hub.calls.clear()
    download_aoi("conus", tmp_path, products=["s1grd-2020", "s2rgbm-2020"], max_chips=2, seed=1, progress=False,
                 hub_api=hub)
    assert hub.calls == []


def test_strmdem_spelling_and_unknown_products(pub, tmp_path):
    hub = FakeHub(pub.folder)
    aoi_dir = download_aoi("middleeast", tmp_path, products=["srtmdem", "gssic"], miniset=True, max_chips=2,
                           progress=False, hub_api=hub)
    layout = AOILayout.find(tmp_path, "middleeast")
    assert layout.product_folders() == ["gssic", "strmdem"] == layout.unknown_products()
    assert len(list(aoi_dir.rglob("*.tif"))) == 4


def _book_download_commands() -> list[tuple[str, str]]:
    out = []
    for md in sorted(BOOK.glob("*.md")):
        text = md.read_text().replace("\\\n", " ")  # shell line continuations
        for line in text.splitlines():
            line = " ".join(line.split())
            if line.startswith("sarssl data download"):
                out.append((md.name, line))
    return out


def _run_download_command(line: str, root: Path) -> Path:
    from sarssl.cli import main

    argv = shlex.split(line)[1:]
    argv = [str(root) if a in ("M3LEO_ROOT", "/data/m3leo") or a.startswith("/data/") else a for a in argv]
    assert main(argv + ["--quiet"]) == 0, line
    aoi = argv[argv.index("--aoi") + 1]
    return AOILayout.find(root, aoi).aoi_dir


#: the commands the book should show (chapter 4 "At the study's scale", chapter 7 "The real M3LEO data"),
#: and the subset download of issue 17; each runs against the fake hub below
BOOK_COMMANDS = (
    "sarssl data download --aoi conus --products s1grd-2020 esaworldcover-2020 --unpack --out /data/m3leo",
    "sarssl data download --aoi conus --miniset --out M3LEO_ROOT",
    "sarssl data download --aoi conus --products s1grd-2020 esaworldcover-2020 --unpack --out M3LEO_ROOT",
    "sarssl data download --aoi conus --miniset --max-chips 6 --splits train val "
    "--products s1grd-2020 esaworldcover-2020 --seed 0 --out M3LEO_ROOT",
)


@pytest.mark.parametrize("line", BOOK_COMMANDS)
def test_book_commands_against_the_fake_hub(line, fake_client, tmp_path):
    aoi_dir = _run_download_command(line, tmp_path)
    if "--unpack" in line or "--miniset" in line:  # the folder layout is there: what pretrain/finetune read
        from sarssl.data.datasets import M3LEODataset

        ds = M3LEODataset(tmp_path, "conus", split="train", products=("s1grd-2020", "esaworldcover-2020"),
                          normalization=None, progress=False)
        assert len(ds) > 0 and not ds.skipped
    if "--max-chips" in line:
        assert read_subset(aoi_dir)["n_chips"] == 6


def test_every_book_download_command_runs_against_the_fake_hub(fake_client, tmp_path):
    commands = _book_download_commands()
    assert commands
    for chapter, line in commands:
        argv = shlex.split(line)
        assert argv[argv.index("--aoi") + 1] in KNOWN_AOIS, f"{chapter}: {line} names no M3LEO AOI"
    for k, (chapter, line) in enumerate(commands):
        _run_download_command(line, tmp_path / f"c{k}")


def test_shard_index_of_own_shards(hub_folder, tmp_path):
    """pack_parquet shards + write_shard_index: the archive's ``_parquet.csv`` for your own regions."""
    from sarssl.data.parquet import read_shard_index, shards_for_chips, write_shard_index

    _, src = hub_folder
    shards = pack_parquet(src.root, AOI, tmp_path / "packed", chips_per_shard=4, progress=False)
    index_csv = write_shard_index(src.split_csv, tmp_path / "packed", tmp_path / "index_parquet.csv")
    index = read_shard_index(index_csv)
    assert list(index.columns[:3]) == ["identifier", "split", "parquet_identifier"] and len(index) == 6
    first = sorted(index["identifier"])[:4]
    assert shards_for_chips(index, first) == ["part-00000"] and len({s.name for s in shards}) == 2
    with pytest.raises(ValueError, match="no shard"):
        shards_for_chips(index, ["nope"])
