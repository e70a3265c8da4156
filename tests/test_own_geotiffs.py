"""Your own GeoTIFF folder with a band map -> an M3LEO AOI the dataset reads; every bad input named."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from sarssl.data.datasets import M3LEODataset
from sarssl.data.layout import AOILayout
from sarssl.data.m3leo import read_splits
from sarssl.data.own_geotiffs import BandMapError, GeoTIFFFolderError, convert_folder, load_band_map
from sarssl.data.products import SEASONS, decode_s1

CRS = "EPSG:32631"


def write_tif(path, bands, crs=CRS, origin=(500000.0, 4000000.0), nodata=None, descriptions=None, pixel=10.0):
    arr = np.stack(bands).astype(np.float32)
    with rasterio.open(path, "w", driver="GTiff", width=arr.shape[2], height=arr.shape[1], count=arr.shape[0],
                       dtype="float32", crs=crs, transform=from_origin(*origin, pixel, pixel), nodata=nodata) as dst:
        dst.write(arr)
        if descriptions:
            dst.descriptions = tuple(descriptions)


def make_folder(folder, tiles=("a", "b"), size=(40, 48), units="dB", seed=0, labels=True, **extra):
    """Per tile and season one file with bands VV, VH (Earth Engine style descriptions); returns the truth (dB)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for k, tile in enumerate(tiles):
        origin = (500000.0 + k * size[1] * 10.0, 4000000.0)
        for s, season in enumerate(SEASONS):
            vv = rng.uniform(-20, -5, size)
            vh = vv - rng.uniform(5, 10, size)
            truth[(tile, season)] = (vv, vh)
            data = [10 ** (vv / 10), 10 ** (vh / 10)] if units == "linear" else [vv, vh]
            write_tif(folder / f"{tile}_{season}.tif", data, origin=origin, descriptions=("VV", "VH"))
        if labels:
            wc = rng.choice([10, 30, 40, 80], size).astype(np.float32)
            write_tif(folder / f"{tile}_wc.tif", [wc], origin=origin)
    bands = {f"{s}_{p}": {"file": f"{{tile}}_{s}.tif", "band": p.upper()} for s in SEASONS for p in ("vv", "vh")}
    bm = {"units": units, "chip_size": 16, "aoi": "mine", "bands": bands, **extra}
    if labels:
        bm["labels"] = {"worldcover": {"file": "{tile}_wc.tif", "band": 1}}
    (folder / "bandmap.json").write_text(json.dumps(bm))
    return truth


def edit_map(folder, **changes):
    path = folder / "bandmap.json"
    bm = json.loads(path.read_text())
    bm.update(changes)
    path.write_text(json.dumps(bm))
    return bm


def test_folder_converts_to_m3leo_and_the_dataset_reads_it(tmp_path):
    truth = make_folder(tmp_path / "gt")
    conv = convert_folder(tmp_path / "gt", tmp_path / "root", progress=False)
    # 40x48 px tiles in 16 px chips: 2 x 3 chips each, 8 rows and 0 cols left over
    assert conv.n_chips == 12 and conv.chip_size == 16 and conv.cropped_px == {"a": (8, 0), "b": (8, 0)}
    assert conv.products == ["s1grd-2020", "esaworldcover-2020"] and conv.generated_splits
    assert "12 chips of 16 px" in conv.note() and "left out" in conv.note()
    layout = AOILayout.find(tmp_path / "root", "mine")
    splits = read_splits(layout)
    assert set(splits["split"]) <= {"train", "val", "test"} and len(splits) == 12
    with rasterio.open(layout.chip_path("s1grd-2020", "b_r001_c002")) as src:
        codes = src.read()
    vv, vh = truth[("b", "summer")]
    got = decode_s1(codes)
    assert np.allclose(got[8], vv[16:32, 32:48], atol=0.07)  # summer_vvasc, 30/255 dB steps
    assert np.allclose(got[10], vh[16:32, 32:48], atol=0.07)
    assert not codes[9].any()  # descending bands not declared: no-data
    ds = M3LEODataset(tmp_path / "root", "mine", split=None, products=("s1grd-2020", "esaworldcover-2020"),
                      normalization="fit", norm_tiles=4, progress=False, cache_dir=tmp_path / "cache")
    sample = ds[0]
    assert sample["s1"].shape == (12, 16, 16) and sample["s1_valid"].all()
    assert set(np.unique(sample["worldcover"].numpy())) <= {0, 2, 3, 7}
    # the same files again: reused, not rewritten
    mtime = layout.split_csv.stat().st_mtime_ns
    assert convert_folder(tmp_path / "gt", tmp_path / "root", progress=False).key == conv.key
    assert layout.split_csv.stat().st_mtime_ns == mtime


def test_linear_power_and_nodata(tmp_path):
    truth = make_folder(tmp_path / "gt", tiles=("a",), size=(32, 32), units="linear", labels=False, nodata=-1)
    path = tmp_path / "gt" / "a_winter.tif"
    with rasterio.open(path) as src:
        data = src.read()
    data[:, :16, :16] = -1  # one chip's winter no-data through the declared value
    write_tif(path, list(data), descriptions=("VV", "VH"))
    conv = convert_folder(tmp_path / "gt", tmp_path / "root", progress=False)
    layout = conv.layout
    with rasterio.open(layout.chip_path("s1grd-2020", "a_r000_c001")) as src:
        db = decode_s1(src.read())
    assert np.allclose(db[0], truth[("a", "winter")][0][:16, 16:], atol=0.07)
    with rasterio.open(layout.chip_path("s1grd-2020", "a_r000_c000")) as src:
        assert not src.read()[0:2].any() and src.read()[4].all()  # winter no-data, spring valid


def test_all_nodata_and_descending_only_chips_are_counted(tmp_path):
    make_folder(tmp_path / "gt", tiles=("a",), size=(32, 32), labels=False, nodata=-999)
    for season in SEASONS:
        path = tmp_path / "gt" / f"a_{season}.tif"
        with rasterio.open(path) as src:
            data = src.read()
        data[:, :16, :] = -999  # top row of chips: no ascending pixel
        write_tif(path, list(data), descriptions=("VV", "VH"))
        write_tif(tmp_path / "gt" / f"a_{season}_des.tif", [np.where(np.arange(32)[None, :] < 16, -10.0, -999.0)
                                                             * np.ones((32, 1))] * 2, nodata=-999)
    bm = json.loads((tmp_path / "gt" / "bandmap.json").read_text())
    des = {f"{s}_{p}_des": {"file": f"{{tile}}_{s}_des.tif", "band": i + 1}
           for s in SEASONS for i, p in enumerate(("vv", "vh"))}
    edit_map(tmp_path / "gt", bands={**bm["bands"], **des})
    conv = convert_folder(tmp_path / "gt", tmp_path / "root", progress=False)
    assert conv.descending_only == ["a_r000_c000"] and conv.all_nodata == ["a_r000_c001"]
    assert "descending-only" in conv.note()
    with pytest.warns(UserWarning, match="skipping chip"):
        ds = M3LEODataset(tmp_path / "root", "mine", split=None, products=("s1grd-2020",), normalization=None,
                          progress=False)
    assert ds.skip_counts == {"input_nodata": 1, "all_nodata": 1} and len(ds) == 2


@pytest.mark.parametrize("change, error, match", [
    ({"bands": {"winter_vv": {"file": "a.tif", "band": 1}}}, BandMapError, r"lacks \['winter_vh'"),
    ({"bands": {"autumn_vv": {"file": "a.tif", "band": 1}}}, BandMapError, r"unknown band 'autumn_vv'"),
    ({"units": "amplitude"}, BandMapError, "units must be 'dB' or 'linear'"),
    ({"labels": {"biomass": {"file": "{tile}_wc.tif", "band": 1}}}, BandMapError, "unknown label 'biomass'"),
    ({"chip_size": 64}, GeoTIFFFolderError, r"40x48 px, smaller than one chip of 64 px"),
    ({"units": "linear"}, GeoTIFFFolderError, r"units 'linear' but .*looks like dB"),
    ({"colour": "red"}, BandMapError, r"unknown key\(s\) \['colour'\]"),
])
def test_bad_band_maps_are_named(tmp_path, change, error, match):
    make_folder(tmp_path / "gt", tiles=("a",), labels=True)
    bm = json.loads((tmp_path / "gt" / "bandmap.json").read_text())
    if "bands" in change and "winter_vv" in change["bands"]:
        pass  # a map with one band only
    elif "bands" in change:
        change = {"bands": {**bm["bands"], **change["bands"]}}
    edit_map(tmp_path / "gt", **change)
    with pytest.raises(error, match=match):
        convert_folder(tmp_path / "gt", tmp_path / "root", progress=False)


def test_bad_files_are_named(tmp_path):
    gt = tmp_path / "gt"
    make_folder(gt, tiles=("a",), labels=True)
    bm = json.loads((gt / "bandmap.json").read_text())
    # a band index past the file's band count
    edit_map(gt, bands={**bm["bands"], "fall_vh": {"file": "{tile}_fall.tif", "band": 3}})
    with pytest.raises(GeoTIFFFolderError, match=r"a_fall.tif' has 2 band\(s\), but the band map's 'fall_vhasc'"):
        convert_folder(gt, tmp_path / "root", progress=False)
    # a band description that is not there
    edit_map(gt, bands={**bm["bands"], "fall_vh": {"file": "{tile}_fall.tif", "band": "HV"}})
    with pytest.raises(GeoTIFFFolderError, match=r"no band described 'HV'.*\['VV', 'VH'\]"):
        convert_folder(gt, tmp_path / "root", progress=False)
    edit_map(gt, bands=bm["bands"])
    # mismatched shape, then CRS, inside a tile
    write_tif(gt / "a_wc.tif", [np.full((40, 40), 10.0)])
    with pytest.raises(GeoTIFFFolderError, match=r"a_wc.tif' is 40x40 px but .* is 40x48"):
        convert_folder(gt, tmp_path / "root", progress=False)
    write_tif(gt / "a_wc.tif", [np.full((40, 48), 10.0)], crs="EPSG:32632")
    with pytest.raises(GeoTIFFFolderError, match="is in CRS EPSG:32632 but"):
        convert_folder(gt, tmp_path / "root", progress=False)
    # unknown WorldCover codes
    write_tif(gt / "a_wc.tif", [np.full((40, 48), 33.0)])
    with pytest.raises(GeoTIFFFolderError, match=r"value\(s\) \[33\] are not ESA WorldCover codes"):
        convert_folder(gt, tmp_path / "root", progress=False)
    # a band that is all no-data
    write_tif(gt / "a_wc.tif", [np.full((40, 48), 10.0)])
    write_tif(gt / "a_spring.tif", [np.full((40, 48), np.nan)] * 2, descriptions=("VV", "VH"))
    with pytest.raises(GeoTIFFFolderError, match=r"band 'VV' of .*a_spring.tif' .* holds no valid pixel"):
        convert_folder(gt, tmp_path / "root", progress=False)
    # a file missing for one tile
    (gt / "a_spring.tif").unlink()
    with pytest.raises(GeoTIFFFolderError, match=r"a_spring.tif' does not exist: the band map's 'spring_vvasc'"):
        convert_folder(gt, tmp_path / "root", progress=False)
    assert not (tmp_path / "root" / "mine").exists()  # nothing half-written


def test_tiles_must_share_a_crs_and_dB_must_not_be_linear(tmp_path):
    gt = tmp_path / "gt"
    make_folder(gt, labels=False)
    for season in SEASONS:
        with rasterio.open(gt / f"b_{season}.tif") as src:
            data = src.read()
        write_tif(gt / f"b_{season}.tif", list(data), crs="EPSG:32632", descriptions=("VV", "VH"))
    with pytest.raises(GeoTIFFFolderError, match=r"tile 'b' .* is in CRS EPSG:32632, other tiles in EPSG:32631"):
        convert_folder(gt, tmp_path / "root", progress=False)
    make_folder(tmp_path / "lin", tiles=("a",), units="linear", labels=False)
    edit_map(tmp_path / "lin", units="dB")
    with pytest.raises(GeoTIFFFolderError, match=r"units 'dB' but the median value .* is it linear power"):
        convert_folder(tmp_path / "lin", tmp_path / "root", progress=False)


def test_splits_file_by_tile(tmp_path):
    gt = tmp_path / "gt"
    make_folder(gt, labels=False, splits="splits.csv")
    (gt / "splits.csv").write_text("identifier,split\na,train\nb,test\n")
    conv = convert_folder(gt, tmp_path / "root", progress=False)
    assert conv.split_counts == {"train": 6, "val": 0, "test": 6} and not conv.generated_splits
    (gt / "splits.csv").write_text("identifier,split\na,train\n")
    with pytest.raises(GeoTIFFFolderError, match=r"names neither chip nor tile of 6 chip\(s\)"):
        convert_folder(gt, tmp_path / "root", progress=False)


def test_band_map_without_tiles(tmp_path):
    gt = tmp_path / "gt"
    make_folder(gt, tiles=("x",), labels=False)
    bm = json.loads((gt / "bandmap.json").read_text())
    bm["bands"] = {k: {**v, "file": v["file"].replace("{tile}", "x")} for k, v in bm["bands"].items()}
    (gt / "bandmap.json").write_text(json.dumps(bm))
    assert load_band_map(gt / "bandmap.json").bands["winter_vvasc"].file == "x_winter.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no chip is skipped or warned about
        conv = convert_folder(gt, tmp_path / "root", progress=False)
    assert conv.tiles == [""] and conv.n_chips == 6 and AOILayout.find(tmp_path / "root", "mine").split_csv.is_file()


def test_cli_pretrains_on_a_geotiff_folder_with_a_band_map_elsewhere(tmp_path, monkeypatch, capsys):
    from sarssl.cli import main

    monkeypatch.setenv("SARSSL_HOME", str(tmp_path / "ws"))
    make_folder(tmp_path / "gt", size=(64, 64))  # 2 tiles x 16 chips of 16 px, resized to smoke's 32 px
    (tmp_path / "gt" / "bandmap.json").rename(tmp_path / "my_map.json")
    out = tmp_path / "run"
    assert main(["pretrain", "mae", "--profile", "smoke", "--data", str(tmp_path / "gt"), "--band-map",
                 str(tmp_path / "my_map.json"), "--out", str(out), "--batch-size", "4", "--max-steps", "1"]) == 0
    printed = capsys.readouterr().out
    assert "your GeoTIFFs in" in printed and "resized from 16 px" in printed
    assert (out / "encoder.pth").is_file() and json.loads((out / "run.json").read_text())["aois"] == ["mine"]
    assert main(["pretrain", "mae", "--profile", "smoke", "--data", str(tmp_path / "gt"), "--out", str(out)]) == 2
    assert "neither an M3LEO root" in capsys.readouterr().err  # no band map: not a folder sarssl can read
