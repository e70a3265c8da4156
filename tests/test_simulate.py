"""Tests of the SAR-world simulator (sarssl.data.scene and sarssl.data.simulate)."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import rasterio

from sarssl.data import scene as sc
from sarssl.data.layout import AOILayout
from sarssl.data.products import (
    BIOMASS_BANDS, S1GRD_BANDS, S2RGB_BANDS, decode_modis_treecover, decode_worldcover, encode_s1,
)
from sarssl.data.simulate import _area_weights, region_products, simulate_region, simulate_scene

N, CS, SEED = 18, 32, 3  # 5 columns x 4 rows, last row partly filled


@pytest.fixture(scope="module")
def region(tmp_path_factory):
    return simulate_region(tmp_path_factory.mktemp("a"), n_chips=N, chip_size=CS, seed=SEED, progress=False)


@pytest.fixture(scope="module")
def scene():
    return simulate_scene(192, 192, seed=1, keep_acquisitions=True)


def _read(path):
    with rasterio.open(path) as src:
        return src.read(), src


def _ids(layout):
    return pd.read_csv(layout.split_csv)["identifier"].tolist()


def test_layout_files(region):
    assert re.fullmatch(r"sim-a_partitions_aschips_[0-9a-f]{8}_splits_\d+bands_angle\d\d_60-20-20\.csv", region.split_csv.name)
    assert region.geojson.is_file() and (region.aoi_dir / "simulation.json").is_file()
    found = AOILayout.find(region.root, "sim-a")
    assert (found.chips_hash, found.angle) == (region.chips_hash, region.angle)
    ids = _ids(region)
    assert len(ids) == N == len(set(ids))
    for p in region_products(2020):
        assert sorted(f.stem for f in region.product_dir(p).glob("*.tif")) == sorted(ids)
    info = json.loads((region.aoi_dir / "simulation.json").read_text())
    assert info["parameters"]["n_chips"] == N and info["parameters"]["seed"] == SEED
    assert abs(sum(info["class_shares"].values()) - 1) < 1e-3
    assert {"tree cover", "cropland", "permanent water", "built-up"} <= set(info["class_shares"])


def test_split_csv(region):
    df = pd.read_csv(region.split_csv)
    assert list(df.columns) == ["identifier", "split"]
    assert set(df["split"]) <= {"train", "val", "test"}
    gj = json.loads(region.geojson.read_text())
    assert "32630" in gj["crs"]["properties"]["name"]
    assert sorted(f["properties"]["identifier"] for f in gj["features"]) == sorted(df["identifier"])


def test_product_formats_and_footprints(region):
    gj = json.loads(region.geojson.read_text())
    polys = {f["properties"]["identifier"]: np.asarray(f["geometry"]["coordinates"][0]) for f in gj["features"]}
    ext = CS * 10.0
    expect = {  # family -> (bands, dtype, pixels per side)
        "s1grd": (S1GRD_BANDS, "uint8", CS), "esaworldcover": (("map",), "uint8", CS),
        "modis44b006veg": (("2018", "2019", "2020"), "uint8", math.ceil(ext / 250)),
        "biomass": (BIOMASS_BANDS, "float32", math.ceil(ext / 100)),
        "ghsbuilts": (("built_surface",), "uint16", CS), "s2rgbm": (S2RGB_BANDS, "uint8", CS),
        "lcci": (("lccs_class",), "uint8", math.ceil(ext / 300)),
    }
    for ident in _ids(region)[:: 5]:
        poly = polys[ident]
        for p in region_products(2020):
            bands, dtype, n = expect[p.split("-")[0]]
            with rasterio.open(region.chip_path(p, ident)) as src:
                assert src.count == len(bands), p
                assert src.dtypes[0] == dtype, p
                assert src.crs.to_epsg() == 32630, p
                assert (src.height, src.width) == (n, n), p
                assert tuple(src.descriptions) == tuple(bands), p
                b = src.bounds
                assert np.allclose([b.left, b.bottom, b.right, b.top],
                                   [poly[:, 0].min(), poly[:, 1].min(), poly[:, 0].max(), poly[:, 1].max()]), p
                assert math.isclose(src.transform.a, ext / n) and math.isclose(src.transform.e, -ext / n)


def test_determinism_and_seed(region, tmp_path):
    same = simulate_region(tmp_path / "b", n_chips=N, chip_size=CS, seed=SEED, progress=False)
    other = simulate_region(tmp_path / "c", n_chips=N, chip_size=CS, seed=SEED + 1, progress=False)
    assert same.chips_hash == region.chips_hash and other.chips_hash != region.chips_hash
    for p in region_products(2020):
        for ident in _ids(region):
            a, _ = _read(region.chip_path(p, ident))
            b, _ = _read(same.chip_path(p, ident))
            assert np.array_equal(a, b, equal_nan=True), (p, ident)
    for p in ("s1grd-2020", "esaworldcover-2020"):
        diff = [not np.array_equal(_read(region.chip_path(p, i))[0], _read(other.chip_path(p, i))[0]) for i in _ids(region)]
        assert np.mean(diff) > 0.5, p


def test_scene_matches_written_chips(region):
    ds = simulate_scene(4 * CS, 5 * CS, seed=SEED)
    s1 = encode_s1(ds["sigma0"].values.reshape(16, 4 * CS, 5 * CS))
    for r, c in ((0, 0), (1, 3), (3, 2)):
        chip, _ = _read(region.chip_path("s1grd-2020", f"sim-a_r{r:03d}_c{c:03d}"))
        assert np.array_equal(chip, s1[:, r * CS:(r + 1) * CS, c * CS:(c + 1) * CS])
        wc, _ = _read(region.chip_path("esaworldcover-2020", f"sim-a_r{r:03d}_c{c:03d}"))
        assert np.array_equal(decode_worldcover(wc[0]), ds["landcover"].values[r * CS:(r + 1) * CS, c * CS:(c + 1) * CS])


def test_strips_give_same_speckle():
    land = sc.build_landscape(160, 96, seed=5)
    full, _, _ = sc.seasonal_medians(land)
    part, _, _ = sc.seasonal_medians(land, 40, 150)
    assert np.array_equal(full[..., 40:150, :], part, equal_nan=True)


def test_class_backscatter_ordering(scene):
    lc = scene["landcover"].values
    vv = scene["sigma0"].sel({"pol": "vv", "pass": "asc", "season": "summer"}).values
    means = {c: np.nanmean(vv[lc == c]) for c in (sc.BUILT, sc.TREE, sc.WATER)}
    assert means[sc.BUILT] > means[sc.TREE] > means[sc.WATER]
    vh = scene["sigma0"].sel({"pol": "vh", "pass": "asc", "season": "summer"}).values
    assert np.nanmean(vh[lc == sc.TREE]) < means[sc.TREE] - 3  # VH well below VV
    # per-pixel classes overlap after speckle: grass and shrub/crop medians are not separable by threshold
    g, c = vv[lc == sc.GRASS], vv[lc == sc.CROP]
    if g.size > 100 and c.size > 100:
        assert np.nanpercentile(g, 90) > np.nanpercentile(c, 10)


def test_seasonal_dynamics_crop_over_forest(scene):
    lc = scene["landcover"].values
    clean = scene["sigma0_clean"].sel({"pol": "vv", "pass": "asc"}).values  # (season, y, x) dB
    temporal_std = clean.std(axis=0)
    assert temporal_std[lc == sc.CROP].mean() > 2 * temporal_std[lc == sc.TREE].mean()


def test_speckle_statistics(scene):
    acq = 10 ** (scene["sigma0_acq"].values / 10)  # (K, season, pol, pass, y, x)
    clean = 10 ** (scene["sigma0_clean"].values / 10)
    land = ~np.isin(scene["landcover"].values, (sc.WATER, sc.WETLAND))  # wind roughening of (flooded) water
    ratio = (acq / clean[None])[..., land]
    assert abs(ratio.mean() - 1) < 0.01
    assert abs(ratio.std() / ratio.mean() - 1 / math.sqrt(sc.ENL)) < 0.02
    # homogeneous area: constant intensity through the exact sampler too
    rng = np.random.default_rng(0)
    for exact in (False, True):
        x = 0.1 * sc.gamma_speckle(rng, sc.ENL, (400, 400), exact=exact)
        assert abs(x.std() / x.mean() - 1 / math.sqrt(sc.ENL)) < 0.01
    # the seasonal median of 5 acquisitions is less speckled than one acquisition
    med = 10 ** (scene["sigma0"].values / 10)
    r_med = (med / clean)[..., land]
    assert np.nanstd(r_med) < 0.7 * ratio.std()


def test_nodata_is_rare_but_present():
    seeds = [s for s in range(12) if sc.build_landscape(64, 64, seed=s).nodata]
    assert 0 < len(seeds) < 12
    land = sc.build_landscape(128, 128, seed=seeds[0])
    med, _, _ = sc.seasonal_medians(land)
    frac = np.isnan(med).mean()
    assert 0 < frac < 0.1


def test_treecover_product_matches_forest(region):
    xs, ys = [], []
    for ident in _ids(region):
        wc, _ = _read(region.chip_path("esaworldcover-2020", ident))
        modis, _ = _read(region.chip_path("modis44b006veg", ident))
        n = modis.shape[1]
        A = _area_weights(CS, n)
        forest = A @ (decode_worldcover(wc[0]) == sc.TREE).astype(np.float32) @ A.T
        xs.append(forest.ravel())
        ys.append(decode_modis_treecover(modis[-1]).ravel())
    x, y = np.concatenate(xs), np.concatenate(ys)
    assert np.corrcoef(x, y)[0, 1] > 0.8
    assert y[x > 0.9].mean() > 60 and y[x < 0.05].mean() < 20


def test_stripe_proportions(tmp_path):
    layout = simulate_region(tmp_path, n_chips=400, chip_size=16, seed=0, progress=False)
    share = pd.read_csv(layout.split_csv)["split"].value_counts(normalize=True)
    assert abs(share["train"] - 0.6) < 0.08
    assert abs(share["val"] - 0.2) < 0.06 and abs(share["test"] - 0.2) < 0.06


def test_bad_parameters(tmp_path):
    with pytest.raises(ValueError, match="n_chips"):
        simulate_region(tmp_path, n_chips=0, progress=False)
    with pytest.raises(ValueError, match="aoi"):
        simulate_region(tmp_path, aoi="bad_name", n_chips=2, chip_size=8, progress=False)
    simulate_region(tmp_path, n_chips=2, chip_size=8, progress=False)
    with pytest.raises(FileExistsError, match="overwrite"):
        simulate_region(tmp_path, n_chips=2, chip_size=8, progress=False)
    layout = simulate_region(tmp_path, n_chips=3, chip_size=8, progress=False, overwrite=True)
    assert len(pd.read_csv(layout.split_csv)) == 3


# ---------------------------------------------------------------------------------------------
# Splits that do not leak
# ---------------------------------------------------------------------------------------------
from sarssl.data.layout import chip_width_across, stripe_count, stripe_splits  # noqa: E402
from sarssl.data.simulate import simulated_stripe_count  # noqa: E402
from sarssl.data.stats import aoi_split_contact, region_summary, split_contact, split_leakage  # noqa: E402


def _grid_bounds(rows, cols, ext=1.0):
    r, c = np.divmod(np.arange(rows * cols), cols)
    return np.column_stack([c * ext, -(r + 1) * ext, (c + 1) * ext, -r * ext])


def test_split_contact_counts_edges_and_corners():
    b = _grid_bounds(3, 3, ext=4480.0)
    s = np.array(["val"] * 9, dtype=object)
    s[4] = "test"  # the centre chip
    assert split_contact(b, s) == {"n": 1, "touching": 0, "share": 0.0}
    for k in (0, 1):  # a corner neighbour, then an edge neighbour
        t = s.copy()
        t[k] = "train"
        assert split_contact(b, t)["touching"] == 1
    far = s.copy()
    far[:] = "train"
    far[4] = "test"
    assert split_contact(np.delete(b, [0, 1, 2, 3, 5, 6, 7, 8], 0)[:1].repeat(2, 0) + [[0, 0, 0, 0], [3e4, 0, 3e4, 0]],
                         ["test", "train"])["touching"] == 0  # 30 km apart
    assert np.isnan(split_contact(b, ["train"] * 9)["share"])


@pytest.mark.parametrize("angle", [10, 27, 45, 63, 80])
def test_stripes_are_three_chips_wide_and_test_rarely_touches_train(angle):
    rows, cols = 24, 25  # the cpu region's grid
    b = _grid_bounds(rows, cols)
    x, y = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    n = stripe_count(x, y, angle, chip_extent=1.0)
    assert n % 5 == 0 and n >= 5
    d = -x * np.sin(np.deg2rad(angle)) + y * np.cos(np.deg2rad(angle))
    assert (d.max() - d.min()) / n >= 3 * chip_width_across(angle)
    splits = stripe_splits(x, y, angle, n)
    assert split_contact(b, splits)["share"] <= 0.4
    share = pd.Series(splits).value_counts(normalize=True)
    assert abs(share["train"] - 0.6) < 0.1
    # the study's 60 stripes over the same grid: nearly every test chip touches a train chip
    assert split_contact(b, stripe_splits(x, y, angle, 60))["share"] > 0.9


def test_stripe_count_follows_the_extent():
    assert simulated_stripe_count(600, 0) == 5
    assert simulated_stripe_count(4000, 0) >= 15  # the gpu region: 64 x 63 chips
    assert simulated_stripe_count(48, 0) == 5  # never fewer than 5 (every split present)


def test_simulated_split_file_and_stats(tmp_path):
    layout = simulate_region(tmp_path, n_chips=300, chip_size=4, pixel_size=1120.0, seed=2, progress=False)
    assert layout.n_stripes == simulated_stripe_count(300, 2)
    assert f"_splits_{layout.n_stripes}bands_" in layout.split_csv.name
    assert AOILayout.find(tmp_path, "sim-a").n_stripes == layout.n_stripes
    c = aoi_split_contact(layout)
    assert c["n"] > 0 and c["share"] <= 0.4
    table = split_leakage(tmp_path)
    assert table.loc["sim-a", "share touching train"] == pytest.approx(c["share"])
    text = region_summary(tmp_path, n_tiles=4)
    assert "test chips sharing an edge or a corner with a train chip" in text and "share touching train" in text


def test_footprint_and_physics_at_70_m(tmp_path):
    layout = simulate_region(tmp_path, n_chips=4, chip_size=64, pixel_size=70.0, seed=1, aoi="sim-b", progress=False)
    ident = _ids(layout)[0]
    with rasterio.open(layout.chip_path("s1grd-2020", ident)) as src:
        assert src.width == 64 and src.transform.a == 70.0
        assert src.bounds.right - src.bounds.left == pytest.approx(4480.0)
    with rasterio.open(layout.chip_path("modis44b006veg", ident)) as src:
        assert src.width == math.ceil(4480 / 250)
    ghs, _ = _read(layout.chip_path("ghsbuilts-2020", ident))
    assert ghs.max() <= 100  # m^2 per 100 m^2 of ground at any pixel size
    info = json.loads((layout.aoi_dir / "simulation.json").read_text())
    assert info["region_style"] == sc.REGION_STYLES[1].name
    assert info["speckle_enl"] == pytest.approx(sc.effective_enl(70.0))
    assert info["chip_extent_m"] == pytest.approx(4480.0) and info["stripes"] == layout.n_stripes
    assert isinstance(info["wind_events"], list)
    lo, hi = sc.REGION_STYLES[1].incidence
    assert all(lo <= t <= hi for t in info["incidence_deg_at_centre"].values())
