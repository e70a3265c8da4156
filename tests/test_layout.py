"""The M3LEO layout read with the published names: every AOI's prefix and split suffix, unknown products,
ambiguous split files, and ``sarssl stats`` on a folder laid out exactly as the miniset is published."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_hub import PUBLISHED, build_fake_hub, miniset_products  # noqa: E402

from sarssl.data.layout import (  # noqa: E402
    AOILayout, SplitFileError, canonical_product, list_aois, product_family_name,
)
from sarssl.data.m3leo import available_products, read_chips_geojson, read_splits  # noqa: E402

SPLIT_CSV = "identifier,split,original_index\n1a2b3c4d5e6f7,train,11\n2b3c4d5e6f7a8,val,12\n3c4d5e6f7a8b9,test,13\n"
GEOJSON = {"type": "FeatureCollection", "features": [
    {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]},
     "properties": {"area_km2": 20.1, "identifier": i, "original_index": 11 + k}}
    for k, i in enumerate(("1a2b3c4d5e6f7", "2b3c4d5e6f7a8", "3c4d5e6f7a8b9"))]}


def _write_published(root: Path, aoi: str, miniset: bool = True) -> Path:
    """Metadata and (empty) product folders of one AOI, named exactly as published."""
    prefix, suffix = PUBLISHED[aoi]
    d = root / aoi
    d.mkdir(parents=True)
    if miniset:
        (d / f"{prefix}_miniset.geojson").write_text(json.dumps(GEOJSON))
        (d / f"{prefix}{suffix}_miniset.csv").write_text(SPLIT_CSV)
    else:
        (d / f"{prefix}.geojson").write_text(json.dumps(GEOJSON))
        (d / f"{prefix}{suffix}.csv").write_text(SPLIT_CSV)
        (d / f"{prefix}{suffix}_parquet.csv").write_text(
            "identifier,split,parquet_identifier\n1a2b3c4d5e6f7,train,p0\n2b3c4d5e6f7a8,val,p0\n3c4d5e6f7a8b9,test,p1\n")
    for product in miniset_products(aoi):
        (d / prefix / product).mkdir(parents=True)
    return d


@pytest.mark.parametrize("aoi", sorted(PUBLISHED))
def test_published_miniset_names_parse(aoi, tmp_path):
    prefix, suffix = PUBLISHED[aoi]
    _write_published(tmp_path, aoi)
    assert list_aois(tmp_path) == [aoi]
    layout = AOILayout.find(tmp_path, aoi)
    assert layout.stem == prefix and layout.chips_dir == tmp_path / aoi / prefix
    assert layout.split_csv.name == f"{prefix}{suffix}_miniset.csv" and layout.geojson.name == f"{prefix}_miniset.geojson"
    assert layout.angle == int(suffix.split("angle")[1][:2]) and layout.n_stripes == 60
    assert layout.chips_hash == prefix.rsplit("_", 1)[1] and layout.shard_index is None
    assert list(read_splits(layout)["identifier"]) == ["1a2b3c4d5e6f7", "2b3c4d5e6f7a8", "3c4d5e6f7a8b9"]
    assert len(read_chips_geojson(layout)["features"]) == 3
    # every product folder is listed; the ones sarssl does not decode are named, not an error
    assert layout.product_folders() == miniset_products(aoi)
    unknown = layout.unknown_products()
    assert "gssic" in unknown and any(p.startswith("gunw_2020-01-01_2020-03-31") for p in unknown)
    assert ("strmdem" in unknown) != ("srtmdem" in unknown)
    assert set(available_products(layout)) == set(miniset_products(aoi)) - set(unknown)
    assert "s1grd-2020" in available_products(layout)


@pytest.mark.parametrize("aoi", sorted(PUBLISHED))
def test_published_archive_names_parse(aoi, tmp_path):
    prefix, suffix = PUBLISHED[aoi]
    _write_published(tmp_path, aoi, miniset=False)
    layout = AOILayout.find(tmp_path, aoi)
    assert layout.split_csv.name == f"{prefix}{suffix}.csv"  # the shard index is not a second split file
    assert layout.shard_index.name == f"{prefix}{suffix}_parquet.csv" and layout.geojson.name == f"{prefix}.geojson"
    from sarssl.data.parquet import read_shard_index, shards_for_chips

    assert shards_for_chips(read_shard_index(layout.shard_index), ["1a2b3c4d5e6f7", "2b3c4d5e6f7a8"]) == ["p0"]
    # the shard index alone also serves as the split file
    layout.split_csv.unlink()
    assert AOILayout.find(tmp_path, aoi).split_csv == layout.shard_index


def test_two_split_files_are_refused_naming_both(tmp_path):
    d = _write_published(tmp_path, "conus")
    prefix, _ = PUBLISHED["conus"]
    other = d / f"{prefix}_splits_60bands_angle33_60-20-20.csv"
    other.write_text("identifier,split\n1a2b3c4d5e6f7,test\n")
    with pytest.raises(SplitFileError) as err:
        AOILayout.find(tmp_path, "conus")
    msg = str(err.value)
    assert other.name in msg and f"{prefix}_splits_60bands_angle09_60-20-20_miniset.csv" in msg
    # an identical canonical copy (as older `sarssl data download` wrote) is the same split file
    other.unlink()
    (d / f"{prefix}_splits_60bands_angle09_60-20-20.csv").write_text(SPLIT_CSV)
    assert AOILayout.find(tmp_path, "conus").split_csv.name.endswith("_60-20-20.csv")


def test_no_split_file_is_a_clear_error(tmp_path):
    (tmp_path / "conus").mkdir()
    with pytest.raises(FileNotFoundError, match="_miniset.csv"):
        AOILayout.find(tmp_path, "conus")
    assert list_aois(tmp_path) == []


def test_canonical_product_names():
    assert canonical_product("s2srm-2020") == "s2rgbm-2020"
    assert canonical_product("strmdem") == "srtmdem"
    assert canonical_product("gunw-2020-01-01_2020-03-31") == "gunw_2020-01-01_2020-03-31"
    assert canonical_product("s1grd-2020") == "s1grd-2020"
    assert product_family_name("gunw_2020-01-01_2020-03-31") == "gunw" == product_family_name("gunw-2020-04-01_x")
    assert product_family_name("modis44b006veg") == "modis44b006veg"


@pytest.fixture(scope="module")
def published_root(tmp_path_factory):
    """The fake hub's miniset folder: an M3LEO root laid out exactly as ``M3LEO-miniset`` is published."""
    data = build_fake_hub(tmp_path_factory.mktemp("pub"), aois=("conus", "pakin"), n_chips=10)
    return data.folder / "M3LEO-miniset"


def test_stats_on_the_published_miniset(published_root, capsys):
    from sarssl.cli import main

    assert main(["stats", str(published_root), "--n-tiles", "4"]) == 0
    out = capsys.readouterr().out
    assert "conus" in out and "pakin" in out and "s1grd-2020" in out and "vv-vh_winter" in out
    assert "not read by sarssl: gssic, gunw_2020-01-01_2020-03-31" in out and "strmdem" in out and "srtmdem" in out


def test_dataset_reads_the_published_miniset(published_root):
    from sarssl.data.datasets import M3LEODataset

    ds = M3LEODataset(published_root, ["conus", "pakin"], split=None,
                      products=("s1grd-2020", "esaworldcover-2020", "s2rgbm-2020"), normalization=None, progress=False)
    assert len(ds) == 20 and not ds.skipped
    sample = ds[0]
    assert sample["s1"].shape[0] == 12 and "worldcover" in sample and "s2rgb" in sample
