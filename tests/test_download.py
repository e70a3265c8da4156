"""Downloading M3LEO AOIs through an injected fake hub that serves repositories from a local folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sarssl.data.download import MANIFEST_NAME, download_aoi, repo_id_for, select_files
from sarssl.data.layout import AOILayout
from sarssl.data.parquet import M3LEOParquetStream, pack_parquet, unpack_parquet

AOI = "dl-a"


class FakeHub:
    """Serves ``<folder>/<repo_id>/...`` with the two methods ``download_aoi`` uses; counts downloads."""

    def __init__(self, folder: Path, fail: set[str] | None = None):
        self.folder = Path(folder)
        self.calls: list[str] = []
        self.fail = set(fail or ())

    def list_repo_files(self, repo_id, repo_type="dataset", revision=None):
        assert repo_type == "dataset"
        repo = self.folder / repo_id
        if not repo.is_dir():
            raise FileNotFoundError(f"404 {repo_id}")
        return sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file())

    def download(self, repo_id, filename, local_dir, revision=None):
        self.calls.append(filename)
        if filename in self.fail:
            raise ConnectionError("connection reset")
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.folder / repo_id / filename, target)
        return str(target)


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
    layout = AOILayout.find(tmp_path, AOI)  # canonical split CSV written next to the _miniset one
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
