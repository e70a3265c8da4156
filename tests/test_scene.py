"""The simulated world at the study's scale (sarssl.data.scene): footprint physics, structure, regions, water."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from sarssl.analysis.context import chip_class_mix
from sarssl.data import scene as sc


@pytest.fixture(scope="module")
def cpu_scene():
    """6 x 6 chips of 64 px at 70 m: the cpu profile's chips (4.48 km), seed 0."""
    return sc.simulate_scene(384, 384, 70.0, seed=0)


def _chips(a, cs):
    h, w = a.shape
    return a[: h // cs * cs, : w // cs * cs].reshape(h // cs, cs, w // cs, cs).transpose(0, 2, 1, 3).reshape(-1, cs, cs)


def test_effective_enl_grows_with_pixel_area():
    assert sc.effective_enl(10.0) == pytest.approx(sc.ENL)
    assert sc.effective_enl(20.0) == pytest.approx(sc.ENL)  # below the 20 x 22 m resolution cell
    assert sc.effective_enl(70.0) == pytest.approx(sc.ENL * 4900 / 440)
    assert sc.effective_enl(140.0) == pytest.approx(4 * sc.effective_enl(70.0))


def test_speckle_follows_the_pixel_size():
    for px in (10.0, 70.0):
        ds = sc.simulate_scene(96, 96, px, seed=2, keep_acquisitions=True, n_acquisitions=3)
        acq = 10 ** (ds["sigma0_acq"].values / 10)
        clean = 10 ** (ds["sigma0_clean"].values / 10)
        land = ~np.isin(ds["landcover"].values, (sc.WATER, sc.WETLAND))
        ratio = (acq / clean[None])[..., land]
        assert ds.attrs["enl"] == pytest.approx(sc.effective_enl(px))
        assert abs(ratio.std() / ratio.mean() - 1 / math.sqrt(sc.effective_enl(px))) < 0.15 / math.sqrt(sc.effective_enl(px))


def test_cpu_chips_hold_several_segments(cpu_scene):
    mix = chip_class_mix(_chips(cpu_scene["landcover"].values, 64))
    assert mix["classes_per_chip"] >= 3.0
    assert mix["dominant_share"] <= 0.6
    assert mix["single_class_chips"] < 0.1


def test_region_styles_differ():
    lands = [sc.build_landscape(128, 128, 70.0, seed=s) for s in range(5)]
    names = [land.style.name for land in lands]
    assert len(set(names)) == 5
    for land in lands:
        lo, hi = land.style.incidence
        assert all(lo <= t <= hi for t in land.theta0.values())
    # the plains region is mostly cropland with large fields, the boreal one mostly forest, later in phenology
    a, b, d = sc.REGION_STYLES[0], sc.REGION_STYLES[1], sc.REGION_STYLES[3]
    assert b.shares[sc.CROP] > a.shares[sc.CROP] and b.field_scale > a.field_scale
    assert d.shares[sc.TREE] > a.shares[sc.TREE] and d.phenology > a.phenology
    assert sc.REGION_STYLES[2].incidence[1] < sc.REGION_STYLES[1].incidence[0]  # no overlap of incidence ranges
    # phenology and soil moisture change the region's sigma0 table
    tab0, tab1 = sc.seasonal_table(a), sc.seasonal_table(b)
    assert not np.allclose(tab0[sc.MAIZE], tab1[sc.MAIZE])
    assert np.allclose(tab0[sc.BUILT], tab1[sc.BUILT])  # no phenology, no soil in built-up
    # seeds from 5 on perturb the base style; the same seed gives the same style
    s7 = sc.region_style(7)
    assert s7 == sc.region_style(7) and s7.name.startswith(sc.REGION_STYLES[2].name) and s7 != sc.REGION_STYLES[2]
    assert sc.region_style(sc.REGION_STYLES[4].name) is sc.REGION_STYLES[4]
    with pytest.raises(ValueError, match="unknown region style"):
        sc.region_style("atlantis")
    table = sc.region_styles_table()
    assert len(table) == 5 and "incidence [deg]" in table.columns


def test_shift_seasons_is_a_circular_interpolation():
    t = np.arange(8, dtype=np.float32).reshape(4, 2)
    assert np.allclose(sc._shift_seasons(t, 0.0), t)
    assert np.allclose(sc._shift_seasons(t, 1.0), np.roll(t, 1, axis=0))  # one season later
    assert np.allclose(sc._shift_seasons(t, 0.5), 0.5 * (t + np.roll(t, 1, axis=0)))


def test_calm_water_below_minus_18_db_outside_wind_events():
    for seed in (0, 2):  # 33-39 deg and the low-incidence 30-35 deg style
        ds = sc.simulate_scene(256, 256, 70.0, seed=seed)
        inner = ndimage.binary_erosion(ds["landcover"].values == sc.WATER, iterations=1)
        assert inner.sum() > 50
        events = set(ds.attrs["wind_events"])
        for s in sc.SEASON_NAMES:
            for p in sc.PASS_NAMES:
                vv = ds["sigma0"].sel(season=s, pol="vv", **{"pass": p}).values[inner]
                vv = vv[np.isfinite(vv)]
                if f"{s}_{p}" in events:
                    assert np.median(vv) > -18.0
                else:
                    assert np.median(vv) < -18.0, (seed, s, p)
                    assert np.percentile(vv, 90) < -17.0, (seed, s, p)


def test_wind_events_are_declared():
    land = sc.build_landscape(64, 64, 70.0, seed=1, n_acquisitions=5)
    windy = land.wind_db >= 5.0
    assert land.wind_event.any()
    assert (windy[land.wind_event].sum(-1) >= 3).all()  # the median is windy
    assert (windy[~land.wind_event].sum(-1) <= 2).all()  # the median stays calm


def test_rivers_mix_into_bank_pixels():
    land = sc.build_landscape(256, 256, 70.0, seed=0)
    fw = land.water_frac
    assert fw.min() >= 0 and fw.max() <= 1
    assert (fw[land.landcover == sc.WATER] == 1).all()
    bank = (fw > 0) & (fw < 0.5)
    assert bank.any() and not (land.landcover[bank] == sc.WATER).any()
    own = sc._own_sigma0(land, 0, 256)
    ref = sc._own_sigma0(sc.Landscape(**{**land.__dict__, "water_frac": np.where(fw >= 1, fw, 0).astype(np.float32)}), 0, 256)
    assert (own[2, 0, 0][bank] < ref[2, 0, 0][bank]).mean() > 0.95  # water darkens its bank pixels


def test_boundary_pixels_mix_and_keep_their_label():
    land = sc.build_landscape(128, 128, 70.0, seed=3)
    own = sc._own_sigma0(land, 0, 128)
    mixed = sc._mix_boundaries(land, own, 0, 128, 0, 128)
    seg = sc._segments(land, 0, 128)
    edge = np.zeros_like(seg, bool)
    edge[1:] |= seg[1:] != seg[:-1]
    edge[:-1] |= seg[1:] != seg[:-1]
    edge[:, 1:] |= seg[:, 1:] != seg[:, :-1]
    edge[:, :-1] |= seg[:, 1:] != seg[:, :-1]
    edge &= ~((land.water_frac > 0) & (land.water_frac < 1))
    changed = ~np.isclose(mixed, own).all(axis=(0, 1, 2))
    assert not changed[~edge].any()
    assert 0.3 < changed[edge].mean() < 0.7  # half the boundary pixels are pure
    # strips give the same result as the whole region (one row of halo)
    assert np.allclose(sc.clean_sigma0(land, 40, 90), sc.clean_sigma0(land)[..., 40:90, :])


def test_cropland_needs_its_neighbours():
    """Temporary grassland is a crop with the pasture calendar: single parcels do not tell, the mosaic does."""
    assert np.array_equal(sc.SIGMA0_REF_DB[sc.LEY], sc.SIGMA0_REF_DB[sc.PASTURE])
    land = sc.build_landscape(256, 256, 70.0, seed=0)
    crop = land.landcover == sc.CROP
    assert (land.variant[crop] == sc.LEY).mean() > 0.1
    assert (land.variant[land.landcover == sc.GRASS] == sc.PASTURE).mean() > 0.4
    # neighbouring crop parcels differ more than neighbouring pastures (between-parcel seasonal contrast)
    ps = land.parcel_sigma[:, :, 0]

    def contrast(mask):
        a, b = land.parcel[:, :-1], land.parcel[:, 1:]
        m = mask[:, :-1] & mask[:, 1:] & (a != b)
        return np.abs(ps[a[m]] - ps[b[m]]).mean()

    assert contrast(crop) > 1.5 * contrast(land.variant == sc.PASTURE)


def test_settlements_have_blocks_and_streets():
    land = sc.build_landscape(256, 256, 35.0, seed=2)
    built = land.landcover == sc.BUILT
    assert built.mean() > 0.03
    assert (land.street[built] > 0).mean() > 0.5  # streets in most built-up pixels
    assert 0.1 < land.built[built].mean() < 0.9
    assert land.urban_db[built].std() > 1.0  # block-to-block brightness
    u = np.linspace(0, 1000, 1001)
    cov = sc._street_cover(u, 100.0, 10.0, 50.0)
    assert np.allclose(cov.mean(), 0.1, atol=0.01) and cov.max() <= 0.2 + 1e-6
    assert np.allclose(sc._street_cover(np.array([5.0]), 100.0, 10.0, 10.0), 1.0)


def test_threads_do_not_change_the_result():
    land = sc.build_landscape(200, 96, 70.0, seed=4)
    one, _, _ = sc.seasonal_medians(land, 10, 190, threads=1)
    two, _, _ = sc.seasonal_medians(land, 10, 190, threads=3)
    assert np.array_equal(one, two, equal_nan=True)
    assert np.array_equal(sc.s2_monthly(land, threads=1), sc.s2_monthly(land, threads=2), equal_nan=True)


def test_tables_cover_every_variant():
    for table in (sc.SIGMA0_REF_DB, sc.COS_EXPONENT, sc.TEXTURE_SMALL, sc.TEXTURE_LARGE, sc.S2_COLORS, sc.S2_GREENNESS,
                  sc.SOIL_SENSITIVITY, sc.VARIANT_CLASS):
        assert len(table) == sc.N_VARIANTS
    assert not np.isnan(sc.SIGMA0_REF_DB).any()
    assert (sc.VARIANT_CLASS[list(sc.CROP_TYPES)] == sc.CROP).all() and sc.VARIANT_CLASS[sc.PASTURE] == sc.GRASS
    assert sum(sc.CROP_TYPE_PROBS) == pytest.approx(1.0)
    for s in sc.REGION_STYLES:
        assert sum(s.shares.values()) == pytest.approx(1.0, abs=0.01)
