"""Radiometric terrain flattening (sigma0 -> gamma0) and layover/shadow masks from a DEM.

Geometry, per map pixel of a projected (metre) grid: DEM slope from ``np.gradient`` with the pixel
spacing gives the unit surface normal ``n``. ``look_azimuth`` is the compass direction (degrees from north,
clockwise) of the horizontal look vector from the sensor to the ground (right-looking Sentinel-1:
heading + 90); ``incidence`` the ellipsoid incidence angle theta (degrees, scalar or per pixel). With ``l``
the horizontal look unit vector, the unit vector to the sensor is ``s = (-sin(theta) l, cos(theta))`` and
the normal of the slant (beta0 reference) plane is ``p = (cos(theta) l, sin(theta))``.

* local incidence angle: ``cos(theta_loc) = n . s``;
* ``method="projected_area"`` (default): per-facet version of Small (2011) "Flattening gamma"
  (IEEE TGRS 49:3081) / Ulander (1996): ``gamma0_T = beta0 * A_beta / A_gamma`` with the facet's area
  projected onto the slant plane ``A_beta ~ n . p`` and onto the plane perpendicular to the look direction
  ``A_gamma ~ n . s``, and ``beta0 = sigma0_ell / sin(theta)``: ``gamma0_T = sigma0_ell (n.p) / (sin(theta) (n.s))``.
  Flat terrain gives the usual ``sigma0 / cos(theta)``. (Small's full method also sums the areas of all
  facets falling into the same radar pixel; this per-facet form does not, so layover is masked instead.)
* ``method="cosine"``: ``gamma0 = sigma0_ell / cos(theta_loc)``, the common simple normalisation that
  ignores the change of the illuminated area with slope.
* layover where ``n . p < 0`` (a slope facing the sensor steeper than theta), shadow where ``n . s < 0``
  (a back slope steeper than 90 - theta).

No-data: a DEM's declared no-data (``rio.nodata``/``_FillValue`` of a DataArray, or ``dem_nodata=``) and
sigma0's (``nodata=``) become NaN first (:mod:`sarssl.preprocess.nodata`), so a DEM void (e.g. -32768)
gives NaN normals and NaN gamma0 around it, never a finite value; ``layover_shadow_mask`` flags it as
``NODATA``. Incidence angles must be degrees in (0, 90), and sigma0 that is clearly dB is refused.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from sarssl.errors import UserError
from sarssl.preprocess.nodata import check_incidence, check_linear_power, in_memory_values, mask_nodata

LAYOVER = 1
SHADOW = 2
NODATA = 4  # no finite geometry: DEM no-data (or a NaN incidence) within one pixel


def look_azimuth(heading: float, right_looking: bool = True) -> float:
    """Compass azimuth (degrees) of the look direction from the platform heading (degrees)."""
    return float((heading + (90.0 if right_looking else -90.0)) % 360.0)


def _spacing(dem, spacing):
    """(dy, dx) in metres as signed steps of the northing/easting per row/column."""
    if spacing is not None:
        dy, dx = spacing
        return float(dy), float(dx)
    if hasattr(dem, "coords") and "y" in dem.coords and "x" in dem.coords and dem.sizes["y"] > 1 and dem.sizes["x"] > 1:
        try:
            crs = dem.rio.crs
            if crs is not None and crs.is_geographic:
                raise UserError(f"terrain: the DEM is in a geographic CRS ({crs}); reproject it to metres first")
        except AttributeError:
            pass
        y, x = dem["y"].values, dem["x"].values
        return float(y[1] - y[0]), float(x[1] - x[0])
    raise UserError("terrain: give spacing=(dy, dx) in metres (dy < 0 when rows go north to south) for a numpy DEM")


def _gradients2d(z, dy, dx):
    """(dz/dnorthing, dz/deasting) of a 2-D (y, x) block by central differences."""
    gy, gx = np.gradient(np.asarray(z, dtype=np.float64), dy, dx)
    return np.stack([gy, gx])


def _check_dem(dem, dem_nodata):
    """The DEM with declared no-data as NaN; a warning when undeclared values look like a no-data code."""
    dem = mask_nodata(dem, dem_nodata)
    vals = in_memory_values(dem)
    if vals is not None and vals.size:
        low = np.count_nonzero(vals < -1000)
        if low:
            warnings.warn(
                f"terrain: dem has {low} value(s) below -1000 m (lowest {np.nanmin(vals):.6g}): if they mark no-data "
                "(e.g. -32768, -9999), declare it (dem_nodata=..., or rio.write_nodata on the DataArray) so they "
                "become NaN instead of cliffs", UserWarning, stacklevel=4)
    return dem


def surface_normal(dem, spacing=None, *, dem_nodata=None):
    """Unit surface normal (east, north, up) of a DEM (y, x) in metres; returns three arrays like ``dem``
    (dask-backed DEMs stay lazy: gradients per chunk with a 1-pixel halo). Declared no-data (``dem_nodata``,
    ``rio.nodata``) is NaN, so the normals of it and its neighbours are NaN."""
    dem = _check_dem(dem, dem_nodata)
    dy, dx = _spacing(dem, spacing)
    data = getattr(dem, "data", dem)
    import dask.array as dsa

    if isinstance(data, dsa.Array):
        # halo 1 and no padding at the outer border: np.gradient's one-sided edges match the numpy path
        z = data.astype(np.float64)
        kw = dict(depth=1, boundary="none", dtype=np.float64)
        gy = z.map_overlap(lambda b: _gradients2d(b, dy, dx)[0], **kw)
        gx = z.map_overlap(lambda b: _gradients2d(b, dy, dx)[1], **kw)
    else:
        gy, gx = _gradients2d(data, dy, dx)
    norm = np.sqrt(gx * gx + gy * gy + 1.0)
    ne, nn, nz = -gx / norm, -gy / norm, 1.0 / norm
    if hasattr(dem, "dims"):
        ne, nn, nz = (dem.copy(data=a) for a in (ne, nn, nz))
    return ne, nn, nz


def _geometry(dem, incidence, look_az, spacing, dem_nodata=None, where="terrain"):
    incidence = check_incidence(incidence, where)
    try:
        ok = math.isfinite(float(look_az))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise UserError(f"{where}: look_azimuth must be a finite angle in degrees from north, got {look_az!r}")
    ne, nn, nz = surface_normal(dem, spacing, dem_nodata=dem_nodata)
    th = np.deg2rad(incidence)
    phi = np.deg2rad(look_az)
    le, ln = np.sin(phi), np.cos(phi)
    n_dot_s = -np.sin(th) * (ne * le + nn * ln) + np.cos(th) * nz
    n_dot_p = np.cos(th) * (ne * le + nn * ln) + np.sin(th) * nz
    return n_dot_s, n_dot_p, th


def local_incidence_angle(dem, incidence, look_azimuth: float, spacing=None, *, dem_nodata=None):
    """Local incidence angle (degrees) between the surface normal and the direction to the sensor."""
    n_dot_s, _, _ = _geometry(dem, incidence, look_azimuth, spacing, dem_nodata, "local_incidence_angle")
    return np.rad2deg(np.arccos(np.clip(n_dot_s, -1.0, 1.0)))


def layover_shadow_mask(dem, incidence, look_azimuth: float, spacing=None, *, dem_nodata=None):
    """uint8 mask: 0 = fine, ``LAYOVER`` = 1 (fore slope steeper than theta), ``SHADOW`` = 2 (back slope
    steeper than 90 - theta), ``NODATA`` = 4 (no finite geometry: DEM no-data next to the pixel).
    Same shape/type as ``dem``."""
    n_dot_s, n_dot_p, _ = _geometry(dem, incidence, look_azimuth, spacing, dem_nodata, "layover_shadow_mask")
    mask = (n_dot_p < 0) * LAYOVER + (n_dot_s < 0) * SHADOW
    mask = mask + ~(np.isfinite(n_dot_s) & np.isfinite(n_dot_p)) * NODATA
    return mask.astype(np.uint8)


def terrain_flatten(sigma0, dem, incidence, look_azimuth: float, method: str = "projected_area",
                    spacing=None, mask_invalid: bool = True, *, nodata=None, dem_nodata=None):
    """Ellipsoid-referenced sigma0 (linear power, on the DEM grid) -> terrain-flattened gamma0 (linear).

    sigma0: (..., y, x) on the same grid as ``dem`` (y, x); incidence: ellipsoid incidence angle (degrees,
    scalar or (y, x)); look_azimuth: degrees from north of the look direction. ``method``:
    "projected_area" (default, Small 2011 per facet) or "cosine" (see module docstring). Layover and shadow
    pixels become NaN when ``mask_invalid``. Declared no-data of sigma0 (``nodata``, ``rio.nodata``) and of
    the DEM (``dem_nodata``, ``rio.nodata``) is NaN, and so is gamma0 wherever the DEM has none (whatever
    ``mask_invalid``). Works lazily on dask-backed DataArrays.
    """
    if method not in ("projected_area", "cosine"):
        raise UserError(f"terrain_flatten: method must be 'projected_area' or 'cosine', got {method!r}")
    if np.shape(sigma0)[-2:] != np.shape(dem)[-2:]:
        raise UserError(f"terrain_flatten: sigma0 grid {np.shape(sigma0)[-2:]} differs from the DEM grid {np.shape(dem)[-2:]}")
    sigma0 = mask_nodata(sigma0, nodata)
    check_linear_power(sigma0, "sigma0", "terrain_flatten")
    n_dot_s, n_dot_p, th = _geometry(dem, incidence, look_azimuth, spacing, dem_nodata, "terrain_flatten")
    if method == "projected_area":
        factor = n_dot_p / (np.sin(th) * n_dot_s)
    else:
        factor = 1.0 / n_dot_s
    bad = (n_dot_p <= 0) | (n_dot_s <= 0)
    if hasattr(factor, "where"):
        factor = factor.where(~bad) if mask_invalid else factor
    elif mask_invalid:
        factor = np.where(bad, np.nan, factor)
    if hasattr(factor, "dims") and hasattr(sigma0, "dims"):
        factor = factor.drop_vars([c for c in factor.coords if c not in sigma0.coords])
        out = sigma0 * factor
    else:
        out = sigma0 * np.asarray(getattr(factor, "data", factor))
    if hasattr(out, "attrs"):
        out.attrs = {**getattr(sigma0, "attrs", {}), "quantity": "gamma0_terrain_flattened", "method": method}
    return out
