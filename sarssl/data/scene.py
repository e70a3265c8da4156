"""The physical scene behind the simulated Sentinel-1 region (used by :mod:`sarssl.data.simulate`).

One landscape is built for the whole region, then every product is derived from it:

1. **Terrain**: a fractal DEM (sum of Matérn-spectrum Gaussian fields, 110 m to 4 km) with a river
   valley carved in, lakes filled flat in the lowest basins.
2. **Land cover** (ESA WorldCover class indices): water (lakes + a meandering river), herbaceous
   wetland next to water, built-up around settlement centres, bare ground on steep summits, tree
   cover on slopes and heights (deciduous or coniferous stands), cropland and grassland allocated
   *per field* on a rotated grid of parcels, shrubland in what is left. Class shares vary with the seed.
3. **Backscatter**: a per-class sigma0 table at the reference incidence angle (below), seasonal
   dynamics (crop phenology per field type with a field-specific phase shift and soil offset,
   leaf-off deciduous forest, flooded wetland in winter/spring, wind-roughened water in some
   acquisitions), within-class texture, urban double bounce with a street-orientation (cardinal)
   effect, mixed built-up pixels, cosine-power incidence dependence with class exponents
   (``sigma0(theta) = sigma0_ref * (cos theta / cos 37.5 deg)^n``, Ulaby & Long 2014; Mladenova et
   al. 2013), the terrain's local incidence angle and illuminated-area factor (brighter foreslopes,
   dark shadows, Small 2011), additive thermal noise (NESZ -26 dB), then multiplicative Gamma speckle
   (GRD IW, ENL 4.4; Wilson-Hilferty sampler, see :func:`gamma_speckle`) per acquisition and the seasonal **median** of ``n_acquisitions`` acquisitions,
   as in the M3LEO product. Ascending passes look east-north-east (azimuth 78 deg), descending passes
   west-north-west (282 deg); the ellipsoid incidence angle grows 15 deg over a 250 km swath
   (30-45 deg) and the region sits at a seed-dependent place in each pass's swath.
4. **No-data**: for some seeds a far-range swath edge cuts a corner of the descending pass, and one
   season of one pass misses a frame at the northern edge (a few percent of the area each).
5. **Labels**: per-pixel tree cover (%), above-ground biomass (Mg/ha), built-up fraction and
   Sentinel-2 monthly RGB (class colours with per-field phenology, rapeseed flowering, cloudy
   areas and cloudy months as no-data), aggregated to the products' grids by the simulator.

Reference sigma0 (dB) at 37.5 deg incidence, seasons winter/spring/summer/fall
(``VV | VH``). Levels follow C-band literature and Sentinel-1 statistics: Ulaby & Long (2014)
*Microwave Radar and Radiometric Remote Sensing* (ch. 11-12, land and sea); Small (2011) *Flattening
gamma: radiometric terrain correction for SAR imagery*, IEEE TGRS 49(8); Veloso et al. (2017)
*Understanding the temporal behavior of crops using Sentinel-1 and Sentinel-2-like data*, RSE 199;
Khabbazan et al. (2019) *Crop monitoring using Sentinel-1 data: a case study from The Netherlands*,
Remote Sensing 11(16); Dostálová et al. (2018) *Forest area derivation from Sentinel-1 data*,
ISPRS Annals IV-7; Mladenova et al. (2013) *Incidence angle normalization of radar backscatter
data*, IEEE TGRS 51(3); Zanaga et al. (2021) *ESA WorldCover 10 m 2020 v100* (S1 input statistics);
Santoro et al. (2011) on C-band water / wind roughening; Kasischke et al. (1997) on flooded vegetation.

=========================  ==============================  ==============================  =====
class (variant)            VV                              VH                              n VV/VH
=========================  ==============================  ==============================  =====
tree, deciduous            -8.3  -7.6  -7.2  -7.6          -14.5 -13.6 -13.0 -13.5          1.2/1.0
tree, coniferous           -7.2  -7.2  -7.1  -7.2          -12.9 -12.8 -12.7 -12.8          1.2/1.0
shrubland                  -9.8  -9.5  -9.6  -9.7          -16.5 -16.0 -16.0 -16.3          1.8/1.4
grassland                  -10.0 -10.2 -11.5 -10.5         -17.5 -16.5 -18.0 -17.5          2.2/1.6
cropland: winter cereal    -11.0 -13.0 -11.5  -9.5         -18.5 -16.5 -19.5 -17.5          2.2/1.6
cropland: maize            -11.0 -12.5  -8.0 -10.0         -19.0 -20.0 -13.5 -16.5          2.2/1.6
cropland: rapeseed         -10.0  -9.0 -12.0 -11.0         -15.5 -13.0 -19.0 -17.5          2.2/1.6
built-up                   -2.5 (all seasons)              -10.5                           1.5/1.5
bare / sparse              -13.5 -13.5 -14.5 -13.5         -22.5 -22.5 -23.5 -22.5          3.0/2.2
permanent water (calm)     -22.0                           -28.0                           8.0/5.0
herbaceous wetland         -7.0  -7.5 -11.5 -10.5          -16.5 -16.0 -18.0 -17.5          2.0/1.6
=========================  ==============================  ==============================  =====

Windy acquisitions (35 %) raise water by 5-12 dB (VH by 70 % of that); wetland parts flooded as open
water in winter/spring take the water values. After speckle and medians class distributions
overlap (grass/shrub/crop within 1-3 dB), so labels need spatial context, as with real data.

All random choices come from ``numpy.random.default_rng([seed, stream, ...])``: the landscape
depends on ``seed`` only; crops, wind, speckle and clouds on ``seed`` and ``year``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------
#: WorldCover class indices (0..10) used here.
TREE, SHRUB, GRASS, CROP, BUILT, BARE, SNOW, WATER, WETLAND, MANGROVE, MOSS = range(11)
#: Extra backscatter / colour variants beyond the 11 WorldCover classes.
CONIFER, WHEAT, MAIZE, RAPESEED = 11, 12, 13, 14
CROP_TYPES = (WHEAT, MAIZE, RAPESEED)
CROP_TYPE_NAMES = ("winter cereal", "maize", "rapeseed")
CROP_TYPE_PROBS = (0.45, 0.35, 0.20)
N_VARIANTS = 15

SEASON_NAMES = ("winter", "spring", "summer", "fall")
POL_NAMES = ("vv", "vh")
PASS_NAMES = ("asc", "des")
#: Horizontal look direction (deg clockwise from north) of the right-looking sensor per pass.
LOOK_AZIMUTH = {"asc": 78.0, "des": 282.0}
THETA_REF = 37.5  # deg, reference incidence of the sigma0 table
SWATH_GRADIENT = 15.0 / 250_000.0  # deg per metre of ground range (30-45 deg over 250 km)
NESZ_DB = -26.0  # Sentinel-1 IW noise-equivalent sigma0
ENL = 4.4  # equivalent number of looks of Sentinel-1 IW GRD (high resolution)
SPECKLE_BLOCK_ROWS = 64  # speckle is drawn per block of rows so any strip decomposition is identical

# sigma0 (dB) at THETA_REF: [variant][season][pol]
_S = np.full((N_VARIANTS, 4, 2), np.nan, dtype=np.float32)
_S[TREE] = np.array([[-8.3, -14.5], [-7.6, -13.6], [-7.2, -13.0], [-7.6, -13.5]])
_S[CONIFER] = np.array([[-7.2, -12.9], [-7.2, -12.8], [-7.1, -12.7], [-7.2, -12.8]])
_S[SHRUB] = np.array([[-9.8, -16.5], [-9.5, -16.0], [-9.6, -16.0], [-9.7, -16.3]])
_S[GRASS] = np.array([[-10.0, -17.5], [-10.2, -16.5], [-11.5, -18.0], [-10.5, -17.5]])
_S[WHEAT] = np.array([[-11.0, -18.5], [-13.0, -16.5], [-11.5, -19.5], [-9.5, -17.5]])
_S[MAIZE] = np.array([[-11.0, -19.0], [-12.5, -20.0], [-8.0, -13.5], [-10.0, -16.5]])
_S[RAPESEED] = np.array([[-10.0, -15.5], [-9.0, -13.0], [-12.0, -19.0], [-11.0, -17.5]])
_S[CROP] = _S[[WHEAT, MAIZE, RAPESEED]].mean(axis=0)
_S[BUILT] = np.array([[-2.5, -10.5]] * 4)
_S[BARE] = np.array([[-13.5, -22.5], [-13.5, -22.5], [-14.5, -23.5], [-13.5, -22.5]])
_S[SNOW] = np.array([[-12.0, -20.0]] * 4)
_S[WATER] = np.array([[-22.0, -28.0]] * 4)
_S[WETLAND] = np.array([[-7.0, -16.5], [-7.5, -16.0], [-11.5, -18.0], [-10.5, -17.5]])
_S[MANGROVE] = np.array([[-7.0, -13.0]] * 4)
_S[MOSS] = np.array([[-12.0, -20.0]] * 4)
SIGMA0_REF_DB = _S

#: cosine-power exponent per variant and polarisation
COS_EXPONENT = np.ones((N_VARIANTS, 2), dtype=np.float32)
for _v, _n in {TREE: (1.2, 1.0), CONIFER: (1.2, 1.0), SHRUB: (1.8, 1.4), GRASS: (2.2, 1.6), CROP: (2.2, 1.6),
               WHEAT: (2.2, 1.6), MAIZE: (2.2, 1.6), RAPESEED: (2.2, 1.6), BUILT: (1.5, 1.5), BARE: (3.0, 2.2),
               SNOW: (2.0, 2.0), WATER: (8.0, 5.0), WETLAND: (2.0, 1.6), MANGROVE: (1.2, 1.0), MOSS: (2.5, 2.0)}.items():
    COS_EXPONENT[_v] = _n

#: within-class texture (dB std): small scale (~20 m) and stand / moisture scale (~250 m)
TEXTURE_SMALL = np.array([0.8, 1.0, 0.7, 0.5, 2.5, 1.0, 0.5, 0.3, 1.0, 0.8, 0.8, 0.8, 0.5, 0.5, 0.5], np.float32)
TEXTURE_LARGE = np.array([0.8, 0.8, 1.0, 0.3, 1.0, 1.2, 0.5, 0.5, 1.0, 0.8, 0.8, 0.8, 0.3, 0.3, 0.3], np.float32)

#: Sentinel-2-like colours (reflectance-like 0..1): (bare / senescent, green) per variant
_C = np.zeros((N_VARIANTS, 2, 3), np.float32)
_C[TREE] = [[0.22, 0.19, 0.15], [0.08, 0.17, 0.07]]
_C[CONIFER] = [[0.10, 0.13, 0.08], [0.06, 0.12, 0.06]]
_C[SHRUB] = [[0.40, 0.35, 0.27], [0.22, 0.27, 0.14]]
_C[GRASS] = [[0.50, 0.45, 0.30], [0.20, 0.36, 0.13]]
_C[CROP] = _C[WHEAT] = _C[MAIZE] = _C[RAPESEED] = [[0.45, 0.36, 0.28], [0.16, 0.40, 0.11]]
_C[BUILT] = [[0.55, 0.52, 0.50], [0.55, 0.52, 0.50]]
_C[BARE] = [[0.66, 0.58, 0.48], [0.66, 0.58, 0.48]]
_C[SNOW] = [[0.90, 0.90, 0.92], [0.90, 0.90, 0.92]]
_C[WATER] = [[0.05, 0.09, 0.15], [0.05, 0.09, 0.15]]
_C[WETLAND] = [[0.14, 0.16, 0.13], [0.14, 0.30, 0.14]]
_C[MANGROVE] = [[0.08, 0.16, 0.08], [0.08, 0.16, 0.08]]
_C[MOSS] = [[0.45, 0.42, 0.35], [0.35, 0.38, 0.25]]
S2_COLORS = _C
RAPESEED_FLOWER = np.array([0.75, 0.68, 0.15], np.float32)  # April

#: monthly greenness (0 = bare/senescent colour, 1 = green) per variant, Jan..Dec
_G = np.zeros((N_VARIANTS, 12), np.float32)
_G[TREE] = [0.15, 0.15, 0.3, 0.65, 0.95, 1, 1, 1, 0.9, 0.6, 0.3, 0.15]
_G[CONIFER] = 0.9
_G[SHRUB] = [0.5, 0.5, 0.6, 0.7, 0.75, 0.7, 0.55, 0.5, 0.5, 0.55, 0.55, 0.5]
_G[GRASS] = [0.5, 0.55, 0.7, 0.9, 1, 0.8, 0.5, 0.4, 0.5, 0.7, 0.6, 0.5]
_G[WHEAT] = [0.3, 0.35, 0.55, 0.85, 1, 0.7, 0.1, 0, 0, 0.1, 0.2, 0.25]
_G[MAIZE] = [0, 0, 0, 0, 0.1, 0.5, 0.95, 1, 0.8, 0.3, 0, 0]
_G[RAPESEED] = [0.5, 0.5, 0.7, 0.9, 0.8, 0.5, 0.1, 0, 0.2, 0.5, 0.55, 0.5]
_G[CROP] = _G[[WHEAT, MAIZE, RAPESEED]].mean(axis=0)
_G[WETLAND] = [0.3, 0.3, 0.4, 0.6, 0.85, 1, 0.9, 0.8, 0.7, 0.5, 0.35, 0.3]
_G[MANGROVE] = 1.0
_G[MOSS] = 0.5
S2_GREENNESS = _G
#: monthly cloud cover probability (temperate climate), Jan..Dec
CLOUD_COVER = np.array([0.6, 0.55, 0.45, 0.4, 0.35, 0.25, 0.15, 0.2, 0.3, 0.45, 0.55, 0.6])

#: base class shares (of the region's area) before the per-seed perturbation
BASE_SHARES = {WATER: 0.06, WETLAND: 0.04, BUILT: 0.06, BARE: 0.03, TREE: 0.30, CROP: 0.28, GRASS: 0.15, SHRUB: 0.08}

_STREAMS = {name: i + 1 for i, name in enumerate((
    "shares", "dem", "river", "lake", "wetland", "urban", "bare", "forest", "crop", "grass", "parcels",
    "conifer", "treecover", "texture", "passes", "nodata", "crop_year", "wind", "speckle", "clouds", "flood",
    "biomass", "s2tex", "modis", "agb_noise",
))}


def stream_rng(seed: int, name: str, *keys: int) -> np.random.Generator:
    """Independent generator for stream ``name`` (and integer ``keys``, e.g. the year) of ``seed``."""
    return np.random.default_rng([int(seed), _STREAMS[name], *[int(k) for k in keys]])


# --------------------------------------------------------------------------------------------
# Coherent noise
# --------------------------------------------------------------------------------------------
@dataclass
class NoiseField:
    """A unit-variance Gaussian random field with a Matérn-like spectrum, sampled on demand.

    The field lives on a grid ``factor`` times coarser than the pixels (``factor`` grows with the
    correlation length, so smooth fields are cheap) and is bilinearly interpolated to pixel rows.
    """

    coarse: np.ndarray  # (hc, wc) float32, with one cell of margin on each side
    factor: int
    height: int
    width: int

    @classmethod
    def make(cls, height: int, width: int, corr_px: float, rng: np.random.Generator, beta: float = 4.0) -> "NoiseField":
        """``corr_px``: correlation length in pixels; ``beta``: spectral slope (power ~ k^-beta at small scales)."""
        f = int(np.clip(corr_px // 6, 1, 64))
        hc, wc = -(-height // f) + 3, -(-width // f) + 3
        lc = max(corr_px / f, 0.5)
        ph = sfft.next_fast_len(hc + int(2 * lc) + 8, real=True)
        pw = sfft.next_fast_len(wc + int(2 * lc) + 8, real=True)
        white = rng.standard_normal((ph, pw), dtype=np.float32)
        ky = sfft.fftfreq(ph).astype(np.float32)[:, None]
        kx = sfft.rfftfreq(pw).astype(np.float32)[None, :]
        amp = (1.0 + (2 * np.pi * lc) ** 2 * (ky * ky + kx * kx)) ** np.float32(-beta / 4.0)
        g = sfft.irfft2(sfft.rfft2(white) * amp, s=(ph, pw))[:hc, :wc].astype(np.float32)
        g -= g.mean()
        g /= max(float(g.std()), 1e-12)
        return cls(g, f, height, width)

    def rows(self, r0: int = 0, r1: int | None = None) -> np.ndarray:
        """Field values for pixel rows ``r0:r1``, shape ``(r1 - r0, width)`` float32."""
        r1 = self.height if r1 is None else r1
        f = self.factor
        if f == 1:
            return self.coarse[1 + r0:1 + r1, 1:1 + self.width].copy()
        yi = (np.arange(r0, r1, dtype=np.float32) + 0.5) / f - 0.5 + 1
        xi = (np.arange(self.width, dtype=np.float32) + 0.5) / f - 0.5 + 1
        y0 = np.floor(yi).astype(np.intp)
        x0 = np.floor(xi).astype(np.intp)
        ty = (yi - y0)[:, None]
        tx = (xi - x0)[None, :]
        c = self.coarse
        top = c[y0][:, x0] * (1 - tx) + c[y0][:, x0 + 1] * tx
        bot = c[y0 + 1][:, x0] * (1 - tx) + c[y0 + 1][:, x0 + 1] * tx
        return (top * (1 - ty) + bot * ty).astype(np.float32)


def _take_top(score: np.ndarray, avail: np.ndarray, n: int) -> np.ndarray:
    """Mask of (about) the ``n`` available pixels with the highest ``score``."""
    n = int(min(n, avail.sum()))
    if n <= 0:
        return np.zeros_like(avail)
    vals = score[avail]
    thr = np.partition(vals, vals.size - n)[vals.size - n]
    return avail & (score >= thr)


# --------------------------------------------------------------------------------------------
# The landscape
# --------------------------------------------------------------------------------------------
@dataclass
class Landscape:
    """Static fields of the whole region (dims ``(H, W)``, row 0 = north) plus per-year parameters."""

    height: int
    width: int
    pixel_size: float
    seed: int
    year: int
    x0: float  # UTM easting of the west edge (m)
    y0: float  # UTM northing of the north edge (m)
    landcover: np.ndarray  # uint8 WorldCover class index
    variant: np.ndarray  # uint8 backscatter/colour variant (class, conifer, crop types)
    dem: np.ndarray  # float32 m
    dzde: np.ndarray  # float32 slope east (m/m)
    dzdn: np.ndarray  # float32 slope north (m/m)
    parcel: np.ndarray  # int32 field id
    parcel_sigma: np.ndarray  # (n_parcels, 4, 2) float32 dB, crop parcels' seasonal sigma0
    parcel_green: np.ndarray  # (n_parcels, 12) float32 crop greenness per month
    treecover: np.ndarray  # float32 percent
    biomass: np.ndarray  # float32 Mg/ha
    built: np.ndarray  # float32 built-up fraction 0..1
    urban_orient: np.ndarray  # float32 rad, street grid orientation
    flood_open: np.ndarray  # bool, wetland flooded as open water in winter/spring
    tex_small: NoiseField
    tex_large: NoiseField
    s2_tex: NoiseField
    theta0: dict  # pass -> incidence at the region centre (deg)
    wind_db: np.ndarray  # (4 seasons, 2 passes, K) dB added to water (0 = calm)
    wind_dir: np.ndarray  # (4, 2, K) rad, direction of the wind-speed ramp
    nodata: list  # dicts describing the no-data areas
    clouds: list  # 12 x (NoiseField, threshold) ; threshold = inf for clear, -inf for fully cloudy
    shares: dict = field(default_factory=dict)  # target class shares

    @property
    def n_acquisitions(self) -> int:
        return self.wind_db.shape[2]

    def coords(self, r0: int = 0, r1: int | None = None):
        """Pixel-centre eastings ``(W,)`` and northings ``(r1 - r0,)`` in metres."""
        r1 = self.height if r1 is None else r1
        px = self.pixel_size
        x = self.x0 + (np.arange(self.width) + 0.5) * px
        y = self.y0 - (np.arange(r0, r1) + 0.5) * px
        return x, y

    def ground_coords(self, r0: int, r1: int):
        """Offsets east ``(1, W)`` and north ``(h, 1)`` from the region centre, metres (float32)."""
        px = self.pixel_size
        e = ((np.arange(self.width, dtype=np.float32) + 0.5) - self.width / 2) * px
        n = -((np.arange(r0, r1, dtype=np.float32) + 0.5) - self.height / 2) * px
        return e[None, :], n[:, None]


def _dem(h: int, w: int, px: float, rng: np.random.Generator):
    """Fractal DEM (m) as a sum of octaves, scaled to a seed-dependent RMS slope."""
    dem = np.zeros((h, w), np.float32)
    for L in (4000.0, 1200.0, 360.0, 110.0):
        dem += (L ** 0.9) * NoiseField.make(h, w, L / px, rng, beta=3.5).rows()
    gy, gx = np.gradient(dem, px)
    rms = float(np.sqrt(np.mean(gx * gx + gy * gy)))
    target = np.tan(np.deg2rad(rng.uniform(3.0, 12.0)))
    dem *= np.float32(target / max(rms, 1e-9))
    dem += np.float32(rng.uniform(100, 800) - dem.min())
    return dem


def _river(h: int, w: int, px: float, rng: np.random.Generator):
    """Distance (m) to a meandering river centreline crossing the region, and its width (m)."""
    ang = rng.uniform(0, np.pi)
    rows = np.arange(h, dtype=np.float32)[:, None] * px
    cols = np.arange(w, dtype=np.float32)[None, :] * px
    cx, cy = w * px / 2, h * px / 2
    u = (cols - cx) * np.float32(np.cos(ang)) + (rows - cy) * np.float32(np.sin(ang))
    v = -(cols - cx) * np.float32(np.sin(ang)) + (rows - cy) * np.float32(np.cos(ang))
    half = 0.75 * np.hypot(h, w) * px
    n = 512
    uu = np.linspace(-half, half, n)
    meander = NoiseField.make(1, n, n * 600.0 / (2 * half), rng, beta=4.0).rows()[0]
    span = min(h, w) * px
    centre = rng.uniform(-0.25, 0.25) * span + meander * min(0.12 * span, 400.0)
    vc = np.interp(u.ravel(), uu, centre).reshape(u.shape).astype(np.float32)
    width = rng.uniform(15.0, 50.0)
    return np.abs(v - vc), width


def _parcels(h: int, w: int, px: float, rng: np.random.Generator) -> np.ndarray:
    """Field ids on a rotated grid of strips (80-300 m wide) cut into fields (100-500 m long)."""
    ang = np.deg2rad(rng.uniform(-30, 30))
    rows = np.arange(h, dtype=np.float64)[:, None] * px
    cols = np.arange(w, dtype=np.float64)[None, :] * px
    u = cols * np.cos(ang) + rows * np.sin(ang)
    v = -cols * np.sin(ang) + rows * np.cos(ang)
    corners_u = np.array([0, w * px * np.cos(ang), h * px * np.sin(ang), w * px * np.cos(ang) + h * px * np.sin(ang)])
    corners_v = np.array([0, -w * px * np.sin(ang), h * px * np.cos(ang), -w * px * np.sin(ang) + h * px * np.cos(ang)])
    umin, umax = corners_u.min() - 1, corners_u.max() + 1
    vmin, vmax = corners_v.min() - 1, corners_v.max() + 1
    n_strips = int((vmax - vmin) / 80.0) + 2
    v_edges = vmin + np.concatenate([[0.0], np.cumsum(rng.uniform(80, 300, n_strips))])
    n_f = int((umax - umin) / 100.0) + 2
    u_edges = umin - rng.uniform(0, 400, (n_strips, 1)) + np.concatenate(
        [np.zeros((n_strips, 1)), np.cumsum(rng.uniform(100, 500, (n_strips, n_f - 1)), axis=1)], axis=1)
    strip = np.clip(np.searchsorted(v_edges, v, side="right") - 1, 0, n_strips - 1)
    big = (umax - umin) + 1e4
    flat = (u_edges + (np.arange(n_strips) * big)[:, None]).ravel()
    j = np.searchsorted(flat, u + strip * big, side="right") - 1 - strip * n_f
    return (strip * n_f + np.clip(j, 0, n_f - 1)).astype(np.int32)


def build_landscape(height: int, width: int, pixel_size: float = 10.0, seed: int = 0, year: int = 2020,
                    n_acquisitions: int = 5, x0: float = 400_000.0, y0: float = 4_480_000.0) -> Landscape:
    """Build the region's landscape: terrain, land cover, per-pixel label fields and per-year dynamics.

    Args:
        height, width: region size in pixels. pixel_size: metres. seed: landscape seed.
        year: drives crop rotation, wind, speckle and clouds. n_acquisitions: per season and pass.
        x0, y0: UTM coordinates of the region's north-west corner (m).
    """
    if height < 2 or width < 2:
        raise ValueError(f"region must be at least 2x2 pixels, got height={height}, width={width}")
    if pixel_size <= 0:
        raise ValueError(f"pixel_size must be > 0 metres, got {pixel_size}")
    if n_acquisitions < 1:
        raise ValueError(f"n_acquisitions must be >= 1, got {n_acquisitions}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    h, w, px = int(height), int(width), float(pixel_size)
    N = h * w
    mk = lambda name, corr_m, beta=4.0, *k: NoiseField.make(h, w, corr_m / px, stream_rng(seed, name, *k), beta)

    # class shares
    r = stream_rng(seed, "shares")
    keys = list(BASE_SHARES)
    raw = np.array([BASE_SHARES[k] for k in keys]) * np.exp(r.normal(0, 0.35, len(keys)))
    if r.random() < 0.3:
        raw[keys.index(WETLAND)] = 0.0
    shares = dict(zip(keys, raw / raw.sum()))

    # terrain and water
    dem = _dem(h, w, px, stream_rng(seed, "dem"))
    relief = float(dem.std()) + 1.0
    dist_river, river_w = _river(h, w, px, stream_rng(seed, "river"))
    dem -= np.float32(1.2 * relief) * np.exp(-(dist_river / np.float32(400.0)) ** 2)
    river = dist_river < river_w / 2
    lake_score = -dem + np.float32(0.15 * relief) * mk("lake", 300.0).rows()
    n_lake = max(int(shares[WATER] * N) - int(river.sum()), 0)
    lakes = _take_top(lake_score, ~river, n_lake)
    water = river | lakes
    if lakes.any():
        dem[lakes] = dem[lakes].max()
    if river.any():
        dem[river] = np.minimum(dem[river], np.float32(np.percentile(dem[river], 5)))
    dem = ndimage.uniform_filter(dem, 3).astype(np.float32)
    gy, gx = np.gradient(dem, px)
    dzde, dzdn = gx.astype(np.float32), (-gy).astype(np.float32)
    slope = np.hypot(dzde, dzdn)
    slope_n = (slope - slope.mean()) / (slope.std() + 1e-9)
    elev_n = (dem - dem.mean()) / (dem.std() + 1e-9)

    lc = np.full((h, w), SHRUB, np.uint8)
    lc[water] = WATER
    avail = ~water

    # wetland next to water, low
    f = 4
    hp, wp = -(-h // f) * f, -(-w // f) * f
    wpad = np.zeros((hp, wp), bool)
    wpad[:h, :w] = water
    wc = wpad.reshape(hp // f, f, wp // f, f).any(axis=(1, 3))
    if wc.any():
        dist = ndimage.distance_transform_edt(~wc, sampling=f * px).astype(np.float32)
        dist = np.repeat(np.repeat(dist, f, 0), f, 1)[:h, :w]
    else:
        dist = np.full((h, w), 1e4, np.float32)
    wet_score = -dist / 200.0 - 0.5 * elev_n + 0.6 * mk("wetland", 150.0).rows()
    wetland = _take_top(wet_score, avail, int(shares[WETLAND] * N))
    lc[wetland] = WETLAND
    avail &= ~wetland

    # settlements
    r = stream_rng(seed, "urban")
    area_km2 = N * px * px / 1e6
    n_c = max(1, int(r.poisson(area_km2 / 30.0)))
    density = np.zeros((h, w), np.float32)
    orient = np.zeros((h, w), np.float32)
    best = np.zeros((h, w), np.float32)
    for _ in range(n_c):
        ci, cj = r.uniform(0, h), r.uniform(0, w)
        rad = float(np.clip(r.lognormal(np.log(600.0), 0.5), 200, 2000)) / px
        th = r.uniform(0, np.pi / 2)
        i0, i1 = int(max(0, ci - 3 * rad)), int(min(h, ci + 3 * rad + 1))
        j0, j1 = int(max(0, cj - 3 * rad)), int(min(w, cj + 3 * rad + 1))
        if i1 <= i0 or j1 <= j0:
            continue
        ii = (np.arange(i0, i1, dtype=np.float32)[:, None] - ci) / rad
        jj = (np.arange(j0, j1, dtype=np.float32)[None, :] - cj) / rad
        d = np.exp(-(ii * ii + jj * jj))
        density[i0:i1, j0:j1] += d
        sel = d > best[i0:i1, j0:j1]
        orient[i0:i1, j0:j1][sel] = th
        best[i0:i1, j0:j1] = np.maximum(best[i0:i1, j0:j1], d)
    urb_score = density + 0.25 * mk("urban", 60.0).rows()
    n_built = int(shares[BUILT] * N)
    built_m = _take_top(urb_score, avail, n_built)
    lc[built_m] = BUILT
    # built-up fraction: high in built pixels, low in a suburban fringe of other classes
    fringe = _take_top(urb_score, avail & ~built_m, n_built)
    thr_hi = urb_score[built_m].min() if built_m.any() else np.inf
    thr_lo = urb_score[fringe].min() if fringe.any() else thr_hi
    tnoise = mk("texture", 30.0, 4.0, 1).rows()
    built = np.zeros((h, w), np.float32)
    built[built_m] = np.clip(0.65 + 0.2 * tnoise[built_m] + 0.3 * np.tanh(urb_score[built_m] - thr_hi), 0.3, 1.0)
    span = max(float(thr_hi - thr_lo), 1e-6)
    built[fringe] = np.clip(0.35 * (urb_score[fringe] - thr_lo) / span + 0.05 * tnoise[fringe], 0.0, 0.4)
    avail &= ~built_m

    # bare summits, forest on slopes and heights
    bare = _take_top(0.6 * elev_n + 0.8 * slope_n + 0.8 * mk("bare", 300.0).rows(), avail, int(shares[BARE] * N))
    lc[bare] = BARE
    avail &= ~bare
    forest = _take_top(0.8 * slope_n + 0.5 * elev_n + 1.0 * mk("forest", 700.0).rows(), avail, int(shares[TREE] * N))
    lc[forest] = TREE
    avail &= ~forest

    # cropland and grassland by whole fields
    parcel = _parcels(h, w, px, stream_rng(seed, "parcels"))
    n_par = int(parcel.max()) + 1

    def by_parcel(score):
        a = parcel[avail]
        num = np.bincount(a, weights=score[avail], minlength=n_par)
        den = np.bincount(a, minlength=n_par)
        return (num / np.maximum(den, 1)).astype(np.float32)[parcel]

    crop = _take_top(by_parcel(-1.0 * slope_n - 0.3 * elev_n + 1.0 * mk("crop", 1500.0).rows()), avail,
                     int(shares[CROP] * N))
    lc[crop] = CROP
    avail &= ~crop
    grass = _take_top(by_parcel(0.3 * slope_n + 1.0 * mk("grass", 800.0).rows()), avail, int(shares[GRASS] * N))
    lc[grass] = GRASS
    avail &= ~grass  # the rest stays shrubland

    # variants: conifer stands, crop types per field and year
    variant = lc.copy()
    conifer_score = 0.8 * elev_n + 1.0 * mk("conifer", 1000.0).rows()
    conifer = _take_top(conifer_score, forest, int(0.4 * forest.sum()))
    variant[conifer] = CONIFER
    r = stream_rng(seed, "crop_year", year)
    ctype = np.asarray(CROP_TYPES)[r.choice(3, size=n_par, p=CROP_TYPE_PROBS)]
    phase = np.clip(r.normal(0, 0.2, n_par), -0.5, 0.5).astype(np.float32)  # seasons
    offset = r.normal(0, 0.8, (n_par, 4, 1)).astype(np.float32) + r.normal(0, 0.3, (n_par, 4, 2)).astype(np.float32)
    variant[crop] = ctype[parcel[crop]].astype(np.uint8)
    base = SIGMA0_REF_DB[ctype]  # (P, 4, 2)
    nxt = np.where(phase[:, None, None] >= 0, np.roll(base, -1, axis=1), np.roll(base, 1, axis=1))
    a = np.abs(phase)[:, None, None]
    parcel_sigma = ((1 - a) * base + a * nxt + offset).astype(np.float32)
    gbase = S2_GREENNESS[ctype]  # (P, 12) ; shift by phase*3 months
    shift = phase * 3.0
    months = np.arange(12, dtype=np.float32)[None, :] + shift[:, None]
    m0 = np.floor(months).astype(int)
    t = months - m0
    rows_ = np.arange(n_par)[:, None]
    parcel_green = ((1 - t) * gbase[rows_, m0 % 12] + t * gbase[rows_, (m0 + 1) % 12]).astype(np.float32)

    # tree cover (%) and biomass (Mg/ha)
    stand = mk("treecover", 400.0).rows()
    crown = mk("treecover", 30.0, 4.0, 1).rows()
    tc = np.zeros((h, w), np.float32)
    tc[forest] = np.clip(78 + 12 * stand[forest] + 8 * crown[forest], 35, 100)
    tc[lc == SHRUB] = np.clip(12 + 6 * stand[lc == SHRUB] + 4 * crown[lc == SHRUB], 0, 40)
    tc[lc == GRASS] = np.clip(3 + 3 * crown[lc == GRASS], 0, 20)
    tc[lc == WETLAND] = np.clip(4 + 4 * crown[lc == WETLAND], 0, 25)
    tc[lc == BUILT] = np.clip(8 + 6 * crown[lc == BUILT], 0, 30)
    tc[lc == CROP] = np.clip(0.5 + 1.0 * crown[lc == CROP], 0, 5)
    agb = 240.0 * (tc / 100.0) ** 1.4 * np.exp(0.25 * mk("biomass", 250.0).rows())
    agb[variant == CONIFER] *= 1.15
    agb[lc == SHRUB] += 12.0
    agb[lc == GRASS] += 2.0
    agb = agb.astype(np.float32)

    # per-year dynamics: flooding, wind, clouds
    r = stream_rng(seed, "flood", year)
    flood_open = np.zeros((h, w), bool)
    if wetland.any():
        flood_open = _take_top(-elev_n + 0.5 * mk("flood", 150.0, 4.0, year).rows(), wetland,
                               int(r.uniform(0.1, 0.4) * wetland.sum()))
    r = stream_rng(seed, "wind", year)
    K = int(n_acquisitions)
    windy = r.random((4, 2, K)) < 0.35
    wind_db = np.where(windy, r.uniform(5.0, 12.0, (4, 2, K)), 0.0).astype(np.float32)
    wind_dir = r.uniform(0, 2 * np.pi, (4, 2, K)).astype(np.float32)
    r = stream_rng(seed, "passes")
    theta0 = {"asc": float(r.uniform(32.0, 43.0)), "des": float(r.uniform(32.0, 43.0))}
    # no-data areas (fractions of the region area)
    r = stream_rng(seed, "nodata")
    nodata = []
    if r.random() < 0.6:
        nodata.append({"kind": "swath_edge", "pass": "des", "season": None, "fraction": float(r.uniform(0.02, 0.07))})
    if r.random() < 0.6:
        nodata.append({"kind": "missing_frame", "pass": PASS_NAMES[r.integers(2)],
                       "season": SEASON_NAMES[r.integers(4)], "fraction": float(r.uniform(0.03, 0.08))})
    rc = stream_rng(seed, "clouds", year)
    clouds = []
    for m in range(12):
        cover = float(np.clip(CLOUD_COVER[m] + rc.normal(0, 0.15), 0, 1))
        fld = NoiseField.make(h, w, 1500.0 / px, rc, 4.0)
        if cover > 0.85:
            thr = -np.inf  # fully cloudy month
        elif cover < 0.08:
            thr = np.inf
        else:
            sub = fld.coarse[1:-2, 1:-2]
            thr = float(np.quantile(sub, 1 - cover))
        clouds.append((fld, thr))

    land = Landscape(
        height=h, width=w, pixel_size=px, seed=int(seed), year=int(year), x0=float(x0), y0=float(y0),
        landcover=lc, variant=variant, dem=dem, dzde=dzde, dzdn=dzdn, parcel=parcel,
        parcel_sigma=parcel_sigma, parcel_green=parcel_green, treecover=tc, biomass=agb, built=built,
        urban_orient=orient, flood_open=flood_open,
        tex_small=mk("texture", 20.0, 4.0, 2), tex_large=mk("texture", 250.0, 4.0, 3),
        s2_tex=mk("s2tex", 40.0, 4.0, year), theta0=theta0, wind_db=wind_db, wind_dir=wind_dir,
        nodata=nodata, clouds=clouds, shares={int(k): float(v) for k, v in shares.items()},
    )
    # no-data thresholds on the along-range / along-track coordinates (from a subsampled grid)
    step = max(1, min(h, w) // 64)
    e, n = land.ground_coords(0, h)
    e, n = e[:, ::step], n[::step]
    for nd in nodata:
        az = np.deg2rad(LOOK_AZIMUTH[nd["pass"]])
        if nd["kind"] == "swath_edge":
            coord = e * np.sin(az) + n * np.cos(az)  # ground range, grows to far range
        else:
            coord = np.broadcast_to(n, (n.shape[0], e.shape[1]))  # northing
        nd["threshold"] = float(np.quantile(coord, 1 - nd["fraction"]))
    return land


# --------------------------------------------------------------------------------------------
# Sentinel-1
# --------------------------------------------------------------------------------------------
def incidence_angles(land: Landscape, r0: int = 0, r1: int | None = None):
    """Ellipsoid and local incidence angles (deg), each ``(2 passes, h, W)`` float32, and the
    terrain's illuminated-area factor ``sin(theta_ell) / sin(theta_range_local)`` (0 in shadow)."""
    r1 = land.height if r1 is None else r1
    e, n = land.ground_coords(r0, r1)
    sl = slice(r0, r1)
    dzde, dzdn = land.dzde[sl], land.dzdn[sl]
    norm = np.sqrt(1.0 + dzde * dzde + dzdn * dzdn)
    out_e, out_l, out_a = [], [], []
    for p in PASS_NAMES:
        az = np.deg2rad(LOOK_AZIMUTH[p])
        sa, ca = np.float32(np.sin(az)), np.float32(np.cos(az))
        rng_coord = e * sa + n * ca
        th = np.deg2rad(land.theta0[p] + SWATH_GRADIENT * rng_coord).astype(np.float32)
        th = np.broadcast_to(th, dzde.shape)
        s_r = dzde * sa + dzdn * ca  # terrain rise per metre away from the sensor (foreslope > 0)
        cos_loc = (np.sin(th) * s_r + np.cos(th)) / norm
        th_loc = np.arccos(np.clip(cos_loc, -1, 1))
        th_rng = th - np.arctan(s_r)  # local angle in the range plane
        area = np.sin(th) / np.sin(np.clip(th_rng, np.deg2rad(3.0), np.pi / 2))
        area = np.where(th_rng >= np.deg2rad(89.0), 0.0, area)  # radar shadow
        out_e.append(np.rad2deg(th))
        out_l.append(np.rad2deg(th_loc))
        out_a.append(area)
    f32 = lambda xs: np.stack(xs).astype(np.float32)
    return f32(out_e), f32(out_l), f32(out_a)


def clean_sigma0(land: Landscape, r0: int = 0, r1: int | None = None) -> np.ndarray:
    """Noise-free sigma0 (linear, incl. thermal noise), ``(4 seasons, 2 pols, 2 passes, h, W)`` float32."""
    r1 = land.height if r1 is None else r1
    sl = slice(r0, r1)
    var = land.variant[sl]
    lc = land.landcover[sl]
    parcel = land.parcel[sl]
    is_crop = lc == CROP
    is_built = lc == BUILT
    tsmall = land.tex_small.rows(r0, r1)
    tex = tsmall * TEXTURE_SMALL[var] + land.tex_large.rows(r0, r1) * TEXTURE_LARGE[var]
    bf = land.built[sl]
    mixed = (bf > 0) & ~is_built
    flood = land.flood_open[sl]
    _, th_l, area = incidence_angles(land, r0, r1)
    cos_ref = np.float32(np.cos(np.deg2rad(THETA_REF)))
    cos_l = np.clip(np.cos(np.deg2rad(th_l)), 0.02, 1.0) / cos_ref
    # urban cardinal effect: +-2 dB with the street grid's orientation relative to the look direction
    orient = land.urban_orient[sl]
    card = [np.float32(2.0) * np.cos(4 * (orient - np.float32(np.deg2rad(LOOK_AZIMUTH[p])))) for p in PASS_NAMES]
    nesz = np.float32(10 ** (NESZ_DB / 10))
    out = np.empty((4, 2, 2, r1 - r0, land.width), np.float32)
    for pi in range(2):
        expo = COS_EXPONENT[var, pi]
        fac_dry = [cos_l[d] ** expo * area[d] for d in range(2)]
        if flood.any():
            expo_w = np.where(flood, COS_EXPONENT[WATER, pi], expo)
            fac_wet = [cos_l[d] ** expo_w * area[d] for d in range(2)]
        else:
            fac_wet = fac_dry
        urb_lin = None
        if mixed.any():  # scattered buildings in other classes: linear mixture with built-up sigma0
            urb_lin = [(10 ** ((SIGMA0_REF_DB[BUILT, 0, pi] + card[d] + 2.5 * tsmall) / 10)).astype(np.float32)
                       for d in range(2)]
        card_b = [np.where(is_built, card[d], np.float32(0)) for d in range(2)] if is_built.any() else None
        for si in range(4):
            ref = SIGMA0_REF_DB[var, si, pi]
            if is_crop.any():
                ref = np.where(is_crop, land.parcel_sigma[parcel, si, pi], ref)
            if si < 2 and flood.any():
                ref = np.where(flood, SIGMA0_REF_DB[WATER, si, pi], ref)
            ref_db = ref + tex
            for d in range(2):
                db = ref_db + card_b[d] if card_b is not None else ref_db
                lin = (10 ** (db / 10)).astype(np.float32)
                if urb_lin is not None:
                    lin = np.where(mixed, (1 - bf) * lin + bf * urb_lin[d], lin)
                out[si, pi, d] = lin * (fac_wet[d] if si < 2 else fac_dry[d]) + nesz
    return out


def _median(stack: np.ndarray) -> np.ndarray:
    """Median along axis 0 (min/max network for 3 and 5 samples, partition otherwise)."""
    k = stack.shape[0]
    if k == 1:
        return stack[0]
    if k == 3:
        a, b, c = stack
        return np.maximum(np.minimum(a, b), np.minimum(np.maximum(a, b), c))
    if k == 5:
        a, b, c, d, e = stack
        lo1, hi1 = np.minimum(a, b), np.maximum(a, b)
        lo2, hi2 = np.minimum(c, d), np.maximum(c, d)
        x, y = np.maximum(lo1, lo2), np.minimum(hi1, hi2)
        return np.maximum(np.minimum(x, y), np.minimum(np.maximum(x, y), e))
    return np.median(stack, axis=0).astype(np.float32)


def nodata_mask(land: Landscape, season: int, pass_: int, r0: int, r1: int) -> np.ndarray:
    """True where the (season, pass) composite has no acquisition, ``(h, W)``."""
    e, n = land.ground_coords(r0, r1)
    mask = np.zeros((r1 - r0, land.width), bool)
    for nd in land.nodata:
        if nd["pass"] != PASS_NAMES[pass_] or (nd["season"] is not None and nd["season"] != SEASON_NAMES[season]):
            continue
        az = np.deg2rad(LOOK_AZIMUTH[nd["pass"]])
        coord = e * np.float32(np.sin(az)) + n * np.float32(np.cos(az)) if nd["kind"] == "swath_edge" else n + 0 * e
        mask |= coord > nd["threshold"]
    return mask


def gamma_speckle(rng: np.random.Generator, enl: float, shape, exact: bool = False) -> np.ndarray:
    """Unit-mean multiplicative speckle ``~ Gamma(enl, 1/enl)``, float32 of ``shape``.

    By default uses the Wilson-Hilferty (1931) transform ``(1 - c + sqrt(c) z)^3`` with ``c = 1/(9 enl)``
    and ``z ~ N(0, 1)``: mean 1 and variance 1/enl to within 1e-4 and quantiles within a fraction of a
    percent for ``enl >= 1``, at 1.5x the speed of numpy's exact sampler (``exact=True``).
    """
    if exact:
        out = rng.standard_gamma(enl, size=shape, dtype=np.float32)
        out *= np.float32(1.0 / enl)
        return out
    c = np.float32(1.0 / (9.0 * enl))
    z = rng.standard_normal(size=shape, dtype=np.float32)
    z *= np.sqrt(c)
    z += 1 - c
    np.maximum(z, 0, out=z)
    return z * z * z


def seasonal_medians(land: Landscape, r0: int = 0, r1: int | None = None, enl: float = ENL,
                     keep_acquisitions: bool = False, exact_gamma: bool = False):
    """Speckled acquisitions and their seasonal medians for pixel rows ``r0:r1``.

    Each acquisition is ``clean * wind(water) * Gamma(enl, 1/enl)``; VV and VH of one acquisition share
    its wind. Speckle is drawn per block of ``SPECKLE_BLOCK_ROWS`` rows from its own seeded stream,
    so the result does not depend on how the region is cut into strips.

    Returns:
        ``(median_db, clean_lin, acq_lin)``: ``(4, 2, 2, h, W)`` float32 dB with NaN where no data,
        the clean linear sigma0 of the same shape, and ``(K, 4, 2, 2, h, W)`` linear acquisitions
        (``None`` unless ``keep_acquisitions``).
    """
    r1 = land.height if r1 is None else r1
    B = SPECKLE_BLOCK_ROWS
    b0, b1 = r0 // B, (r1 - 1) // B + 1
    ra, rb = b0 * B, min(b1 * B, land.height)
    clean = clean_sigma0(land, ra, rb)
    h = rb - ra
    K = land.n_acquisitions
    water_dry = (land.landcover[ra:rb] == WATER).astype(np.float32)
    water = np.maximum(water_dry, land.flood_open[ra:rb].astype(np.float32))  # flooded in winter/spring
    e, n = land.ground_coords(ra, rb)
    ext = np.float32(max(land.height, land.width) * land.pixel_size)
    med = np.empty_like(clean)
    acq = np.empty((K,) + clean.shape, np.float32) if keep_acquisitions else None
    for si in range(4):
        for d in range(2):
            wind = []
            for k in range(K):
                wdb = land.wind_db[si, d, k]
                if wdb > 0:
                    ang = land.wind_dir[si, d, k]
                    ramp = 2.0 * (e * np.float32(np.cos(ang)) + n * np.float32(np.sin(ang))) / ext
                    wind.append((wdb + ramp).astype(np.float32))
                else:
                    wind.append(None)
            for pi in range(2):
                stack = np.empty((K, h, land.width), np.float32)
                for b in range(b0, b1):
                    g = stream_rng(land.seed, "speckle", land.year, si, pi, d, b)
                    lo, hi = b * B - ra, min((b + 1) * B, land.height) - ra
                    stack[:, lo:hi] = gamma_speckle(g, enl, (K, hi - lo, land.width), exact=exact_gamma)
                base = clean[si, pi, d]
                wat = water if si < 2 else water_dry
                for k in range(K):
                    if wind[k] is None:
                        stack[k] *= base
                    else:
                        gain = 10 ** ((wind[k] * (1.0 if pi == 0 else 0.7)) / 10)
                        stack[k] *= base * (1 + wat * (gain - 1))
                if keep_acquisitions:
                    acq[:, si, pi, d] = stack
                m = _median(stack)
                db = 10 * np.log10(np.maximum(m, 1e-10))
                db[nodata_mask(land, si, d, ra, rb)] = np.nan
                med[si, pi, d] = db
    s = slice(r0 - ra, r1 - ra)
    return med[..., s, :], clean[..., s, :], (acq[..., s, :] if keep_acquisitions else None)


# --------------------------------------------------------------------------------------------
# Sentinel-2 monthly RGB
# --------------------------------------------------------------------------------------------
def s2_monthly(land: Landscape, r0: int = 0, r1: int | None = None) -> np.ndarray:
    """Monthly RGB (reflectance-like 0..1) with NaN under clouds, ``(12, 3, h, W)`` float32."""
    r1 = land.height if r1 is None else r1
    sl = slice(r0, r1)
    var = land.variant[sl]
    lc = land.landcover[sl]
    is_crop = lc == CROP
    parcel = land.parcel[sl]
    bf = land.built[sl][None]
    tex = 1.0 + 0.08 * land.s2_tex.rows(r0, r1)
    bare_c = np.stack([S2_COLORS[:, 0, ch][var] for ch in range(3)])  # (3, h, W), contiguous
    green_c = np.stack([S2_COLORS[:, 1, ch][var] for ch in range(3)])
    urban_c = S2_COLORS[BUILT, 0][:, None, None]
    water_c = S2_COLORS[WATER, 0][:, None, None]
    flood = land.flood_open[sl]
    rape = var == RAPESEED
    out = np.empty((12, 3, r1 - r0, land.width), np.float32)
    for m in range(12):
        g = S2_GREENNESS[var, m]
        if is_crop.any():
            g = np.where(is_crop, land.parcel_green[parcel, m], g)
        rgb = bare_c * (1 - g) + green_c * g
        if m == 3 and rape.any():
            rgb = np.where(rape[None], RAPESEED_FLOWER[:, None, None], rgb)
        if m in (0, 1, 2, 3, 10, 11) and flood.any():
            rgb = np.where(flood[None], water_c, rgb)
        rgb = (rgb * (1 - bf) + urban_c * bf) * tex
        fld, thr = land.clouds[m]
        if thr == -np.inf:
            rgb = np.full_like(rgb, np.nan)
        elif thr != np.inf:
            rgb = np.where((fld.rows(r0, r1) > thr)[None], np.nan, rgb)
        out[m] = rgb
    return np.clip(out, 0.0, 1.0)


# --------------------------------------------------------------------------------------------
# The full scene as an xarray Dataset (for plots and chapters)
# --------------------------------------------------------------------------------------------
SCENE_CRS = "EPSG:32630"  # WGS 84 / UTM zone 30N


def simulate_scene(height: int, width: int, pixel_size: float = 10.0, seed: int = 0, year: int = 2020,
                   n_acquisitions: int = 5, enl: float = ENL, keep_acquisitions: bool = False,
                   exact_gamma: bool = False):
    """The simulated region's underlying fields as an ``xarray.Dataset`` (UTM 30N, row 0 = north).

    Variables (dims; units):
        ``landcover`` (y, x; WorldCover class index 0..10), ``field_id`` (y, x), ``dem`` (y, x; m),
        ``incidence`` / ``local_incidence`` (pass, y, x; deg), ``sigma0_clean`` (season, pol, pass,
        y, x; dB before speckle, incl. thermal noise), ``sigma0`` (same; dB seasonal median of
        ``n_acquisitions`` speckled acquisitions, NaN = no data), ``treecover`` (y, x; %),
        ``biomass`` (y, x; Mg/ha), ``built`` (y, x; fraction 0..1), ``s2rgb`` (month, colour, y, x;
        0..1, NaN under clouds), and with ``keep_acquisitions`` ``sigma0_acq`` (acquisition, season,
        pol, pass, y, x; dB). The pixels equal those :func:`sarssl.data.simulate.simulate_region`
        writes for the same region size, seed and year.
    """
    import xarray as xr
    import rioxarray  # noqa: F401  (registers .rio)

    land = build_landscape(height, width, pixel_size, seed, year, n_acquisitions)
    med, clean, acq = seasonal_medians(land, enl=enl, keep_acquisitions=keep_acquisitions, exact_gamma=exact_gamma)
    th_e, th_l, _ = incidence_angles(land)
    s2 = s2_monthly(land)
    x, y = land.coords()
    db = lambda a: (10 * np.log10(np.maximum(a, 1e-10))).astype(np.float32)
    s1dims = ("season", "pol", "pass", "y", "x")
    data = {
        "landcover": (("y", "x"), land.landcover, {"long_name": "ESA WorldCover class index (0..10)"}),
        "field_id": (("y", "x"), land.parcel, {"long_name": "agricultural field (parcel) id"}),
        "dem": (("y", "x"), land.dem, {"units": "m"}),
        "incidence": (("pass", "y", "x"), th_e, {"units": "deg", "long_name": "ellipsoid incidence angle"}),
        "local_incidence": (("pass", "y", "x"), th_l, {"units": "deg"}),
        "sigma0_clean": (s1dims, db(clean), {"units": "dB", "long_name": "sigma0 before speckle"}),
        "sigma0": (s1dims, med, {"units": "dB", "long_name": "seasonal median of speckled sigma0"}),
        "treecover": (("y", "x"), land.treecover, {"units": "%"}),
        "biomass": (("y", "x"), land.biomass, {"units": "Mg/ha"}),
        "built": (("y", "x"), land.built, {"units": "1", "long_name": "built-up fraction"}),
        "s2rgb": (("month", "colour", "y", "x"), s2, {"long_name": "Sentinel-2 monthly RGB, NaN = cloud"}),
    }
    if keep_acquisitions:
        data["sigma0_acq"] = (("acquisition",) + s1dims, db(acq), {"units": "dB"})
    ds = xr.Dataset(
        data,
        coords={"x": x, "y": y, "season": list(SEASON_NAMES), "pol": list(POL_NAMES), "pass": list(PASS_NAMES),
                "month": [f"{m:02d}" for m in range(1, 13)], "colour": ["red", "green", "blue"]},
        attrs={"seed": int(seed), "year": int(year), "pixel_size": float(pixel_size), "enl": float(enl),
               "n_acquisitions": int(n_acquisitions), "theta0_asc": land.theta0["asc"],
               "theta0_des": land.theta0["des"]},
    )
    return ds.rio.write_crs(SCENE_CRS)
