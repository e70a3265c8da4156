"""Terrain flattening and layover/shadow on synthetic planar DEMs with analytic answers."""

import numpy as np
import pytest
import rioxarray  # noqa: F401
import xarray as xr

from sarssl.preprocess import LAYOVER, SHADOW, layover_shadow_mask, local_incidence_angle, look_azimuth, terrain_flatten

THETA = 35.0
LOOK = 90.0  # looking east: the sensor is to the west, west-facing slopes face it
SP = 10.0


def plane(slope_deg, n=16):
    """DEM falling towards the east at ``slope_deg``: faces away from the west-side sensor when > 0,
    towards it (a fore slope, rising towards the east) when < 0."""
    x = np.arange(n) * SP
    z = -np.tan(np.deg2rad(slope_deg)) * x[None, :] * np.ones((n, 1))
    return xr.DataArray(z, dims=("y", "x"), coords={"y": 5000.0 - SP * np.arange(n), "x": 300000.0 + x}).rio.write_crs("EPSG:32633")


@pytest.mark.parametrize("alpha", [-20.0, -5.0, 0.0, 10.0, 30.0])  # alpha < 0: slope faces the sensor
def test_local_incidence_and_flattening_on_planes(alpha):
    dem = plane(alpha)
    lia = local_incidence_angle(dem, THETA, LOOK)
    np.testing.assert_allclose(lia.values, THETA + alpha, atol=1e-6)
    gamma_true = 0.1
    th, tl = np.deg2rad(THETA), np.deg2rad(THETA + alpha)
    # brightness a flat-gamma surface of gamma_true gives, per unit ellipsoid area, on this slope
    sigma_ell = gamma_true * np.sin(th) * np.cos(tl) / np.sin(tl)
    s0 = xr.full_like(dem, sigma_ell)
    g0 = terrain_flatten(s0, dem, THETA, LOOK)
    np.testing.assert_allclose(g0.values, gamma_true, rtol=1e-6)
    cos = terrain_flatten(s0, dem, THETA, LOOK, method="cosine")
    np.testing.assert_allclose(cos.values, sigma_ell / np.cos(tl), rtol=1e-6)


def test_flat_terrain_is_sigma_over_cos():
    dem = plane(0.0)
    g0 = terrain_flatten(xr.full_like(dem, 0.05), dem, THETA, LOOK)
    np.testing.assert_allclose(g0.values, 0.05 / np.cos(np.deg2rad(THETA)), rtol=1e-9)


def test_azimuth_slope_changes_local_incidence_not_sign():
    # slope rising to the north, perpendicular to the look direction
    n = 12
    z = np.tan(np.deg2rad(20)) * (SP * np.arange(n))[::-1, None] * np.ones((1, n))  # row 0 = north = highest
    dem = xr.DataArray(z, dims=("y", "x"), coords={"y": 5000.0 - SP * np.arange(n), "x": SP * np.arange(n)})
    lia = local_incidence_angle(dem, THETA, LOOK)
    expect = np.rad2deg(np.arccos(np.cos(np.deg2rad(THETA)) * np.cos(np.deg2rad(20))))
    np.testing.assert_allclose(lia.values, expect, atol=1e-6)


def test_layover_and_shadow():
    assert layover_shadow_mask(plane(-(THETA + 5)), THETA, LOOK).values.max() == LAYOVER
    assert (layover_shadow_mask(plane(-(THETA - 5)), THETA, LOOK).values == 0).all()
    assert (layover_shadow_mask(plane(90 - THETA + 5), THETA, LOOK).values == SHADOW).all()
    assert (layover_shadow_mask(plane(90 - THETA - 5), THETA, LOOK).values == 0).all()
    g0 = terrain_flatten(xr.full_like(plane(-40.0), 0.1), plane(-40.0), THETA, LOOK)
    assert np.isnan(g0.values).all()


def test_look_azimuth_and_numpy_spacing():
    assert look_azimuth(350.0) == pytest.approx(80.0)
    assert look_azimuth(190.0, right_looking=True) == pytest.approx(280.0)
    dem = plane(10.0)
    lia = local_incidence_angle(dem.values, THETA, LOOK, spacing=(-SP, SP))
    np.testing.assert_allclose(lia, THETA + 10, atol=1e-6)
    with pytest.raises(ValueError, match="spacing"):
        local_incidence_angle(dem.values, THETA, LOOK)
    with pytest.raises(ValueError, match="geographic"):
        local_incidence_angle(dem.rio.write_crs("EPSG:4326"), THETA, LOOK)


def test_dask_dem_stays_lazy():
    rng = np.random.default_rng(0)
    dem = plane(5.0, n=40) + xr.DataArray(rng.normal(0, 3, (40, 40)), dims=("y", "x"))
    s0 = xr.full_like(dem, 0.1)
    ref = terrain_flatten(s0, dem, THETA, LOOK)
    lazy = terrain_flatten(s0.chunk(16), dem.chunk(16), THETA, LOOK)
    assert lazy.chunks is not None
    np.testing.assert_allclose(lazy.values, ref.values, rtol=1e-9, equal_nan=True)
