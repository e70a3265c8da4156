"""Figures for the preprocessing chapter: the pipeline diagram, polarisations, histograms, the Gamma fit,
filters side by side, time series by class, terrain effects.

Every function returns the matplotlib ``Figure`` it drew. Images are (y, x) arrays; dB unless named linear.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import to_rgb
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle
from scipy import stats

from sarssl.data.products import SEASONS
from sarssl.errors import UserError

#: Okabe & Ito's colour-blind-safe palette for categorical lines, bars and markers (blue, orange,
#: bluish green, vermillion, reddish purple, sky blue, yellow, black), in the order to use them.
#: :mod:`sarssl.plots` uses it too; WorldCover maps keep the product's official legend colours.
OKABE_ITO: tuple[str, ...] = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442",
                              "#000000")


def categorical_color(i: int) -> str:
    """The ``i``-th colour of :data:`OKABE_ITO` (cycling), for the ``i``-th category of a figure."""
    return OKABE_ITO[i % len(OKABE_ITO)]

#: (title, formula / detail, sarssl function) of each step from raw DN to the 12-channel tensor.
PIPELINE_STEPS: tuple[tuple[str, str, str], ...] = (
    ("GRD DN", "detected amplitude,\nuint16 per pixel", "SAFE measurement/*.tiff"),
    ("Thermal noise", "DN² − N  (noise LUT,\nrange × azimuth)", "read_noise, noise_grid"),
    ("Calibration", "σ0 = (DN² − N) / A²\n(sigmaNought LUT)", "read_calibration, calibrate"),
    ("Speckle filter", "Lee, refined Lee, Frost,\nGamma-MAP, sigma …", "lee, refined_lee, …"),
    ("Terrain", "γ0 = σ0 · A_β/A_γ;\nlayover/shadow mask", "terrain_flatten"),
    ("Geocoding", "onto a map grid,\nco-register labels", "to_grid, from_grid"),
    ("Decibels", "10·log10(σ0)", "to_db"),
    ("Seasonal composite", "median per season,\nascending passes", "seasonal_composite"),
    ("12 channels", "VV−VH, VV, VH\n× winter … fall", "INPUT_CHANNELS"),
    ("Storage / tensor", "uint8: dB = v·30/255 − 30\n→ (12, H, W) float32", "encode_m3leo"),
)


def plot_pipeline(steps: Sequence[tuple[str, str, str]] = PIPELINE_STEPS, ncols: int = 5):
    """Boxes-and-arrows diagram of the preprocessing chain, in rows of ``ncols`` (snake order)."""
    n = len(steps)
    nrows = int(np.ceil(n / ncols))
    w, h, gx, gy = 2.2, 1.35, 0.55, 0.7
    fig, ax = plt.subplots(figsize=(ncols * (w + gx) * 0.95, nrows * (h + gy) * 1.05 + 0.3))
    centres = []
    for i, (title, detail, func) in enumerate(steps):
        r, k = divmod(i, ncols)
        c = k if r % 2 == 0 else ncols - 1 - k
        x, y = c * (w + gx), -r * (h + gy)
        colour = plt.cm.viridis(0.15 + 0.7 * i / max(n - 1, 1))
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.03,rounding_size=0.12",
                                    facecolor=(*colour[:3], 0.22), edgecolor=colour, linewidth=1.5))
        ax.text(x + w / 2, y + h - 0.2, title, ha="center", va="center", fontsize=10, weight="bold")
        ax.text(x + w / 2, y + h / 2 - 0.05, detail, ha="center", va="center", fontsize=8)
        ax.text(x + w / 2, y + 0.15, func, ha="center", va="center", fontsize=7, family="monospace", color="0.3")
        centres.append((x, y, c, r))
    for (x0, y0, c0, r0), (x1, y1, c1, r1) in zip(centres, centres[1:]):
        if r0 == r1:
            right = c1 > c0
            a = (x0 + (w if right else 0), y0 + h / 2)
            b = (x1 + (0 if right else w), y1 + h / 2)
        else:
            a, b = (x0 + w / 2, y0), (x1 + w / 2, y1 + h)
        ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=14, color="0.25", linewidth=1.3))
    ax.set_xlim(-0.2, ncols * (w + gx) - gx + 0.2)
    ax.set_ylim(-(nrows - 1) * (h + gy) - 0.2, h + 0.2)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title("Sentinel-1 GRD: from raw DN to the 12-channel input tensor")
    fig.tight_layout()
    return fig


def _limits(*arrays, q=(2, 98)):
    v = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays])
    v = v[np.isfinite(v)]
    return tuple(np.percentile(v, q)) if v.size else (0.0, 1.0)


def plot_polarisations(vv_db, vh_db, title: str | None = None):
    """VV, VH (shared dB scale) and their ratio VV/VH, i.e. the dB difference VV − VH, side by side."""
    vv_db, vh_db = np.asarray(vv_db, dtype=np.float32), np.asarray(vh_db, dtype=np.float32)
    if vv_db.shape != vh_db.shape:
        raise UserError(f"plot_polarisations: VV {vv_db.shape} and VH {vh_db.shape} differ in shape")
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.6))
    lo, hi = _limits(vv_db, vh_db)
    for ax, img, name in zip(axes[:2], (vv_db, vh_db), ("VV", "VH")):
        im = ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_title(f"σ0 {name} [dB]")
    fig.colorbar(im, ax=axes[:2], shrink=0.85)
    ratio = vv_db - vh_db
    rl, rh = _limits(ratio)
    im = axes[2].imshow(ratio, cmap="magma", vmin=rl, vmax=rh, interpolation="nearest")
    axes[2].set_title("VV/VH = VV − VH [dB]")
    fig.colorbar(im, ax=axes[2], shrink=0.85)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def plot_power_histograms(vv_db, vh_db, bins: int = 80):
    """Histograms of VV and VH in linear power (long right tail) and in dB (near-symmetric)."""
    vv = np.asarray(vv_db, dtype=np.float64).ravel()
    vh = np.asarray(vh_db, dtype=np.float64).ravel()
    vv, vh = vv[np.isfinite(vv)], vh[np.isfinite(vh)]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for data, name, colour in ((vv, "VV", OKABE_ITO[0]), (vh, "VH", OKABE_ITO[1])):
        lin = 10 ** (data / 10)
        axes[0].hist(lin, bins=np.linspace(0, np.percentile(lin, 99.5), bins), alpha=0.6, color=colour, label=name)
        axes[1].hist(data, bins=bins, alpha=0.6, color=colour, label=name)
    axes[0].set_xlabel("σ0 [linear power]")
    axes[1].set_xlabel("σ0 [dB]")
    for ax in axes:
        ax.set_ylabel("pixels")
        ax.legend()
    axes[0].set_title("linear: skewed, a few bright pixels dominate")
    axes[1].set_title("dB: compressed, close to symmetric")
    fig.tight_layout()
    return fig


def plot_gamma_fit(fit: Mapping, nominal_looks: float | None = None, bins: int = 50):
    """Histogram of mean-normalised intensity with the fitted Gamma pdf (from :func:`fit_gamma`), the
    single-look exponential and, if given, the Gamma pdf for ``nominal_looks``."""
    v = np.asarray(fit["values"])
    x = np.linspace(1e-3, max(3.5, np.percentile(v, 99.8)), 400)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.hist(v, bins=bins, density=True, color="0.75", label=f"I / mean, n = {fit['n']}")
    ax.plot(x, stats.gamma.pdf(x, fit["shape"], scale=fit["scale"]), color=OKABE_ITO[3], lw=2,
            label=f"Gamma fit, L = {fit['shape']:.1f}")
    ax.plot(x, stats.expon.pdf(x), "k:", label="1 look (exponential)")
    if nominal_looks:
        ax.plot(x, stats.gamma.pdf(x, nominal_looks, scale=1 / nominal_looks), "--", color=OKABE_ITO[0],
                label=f"L = {nominal_looks}")
    ax.set_xlabel("normalised intensity I / ⟨I⟩")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_filtered(images: Mapping[str, np.ndarray], region: tuple[slice, slice] | None = None, ncols: int = 4,
                  titles: Mapping[str, str] | None = None):
    """Images (linear power) side by side in dB on one grey scale; ``region`` outlined on every panel."""
    names = list(images)
    db = {k: 10 * np.log10(np.where(np.asarray(v) > 0, v, np.nan)) for k, v in images.items()}
    lo, hi = _limits(*db.values())
    nrows = int(np.ceil(len(names) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.8 * ncols, 2.9 * nrows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        im = ax.imshow(db[name], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_title((titles or {}).get(name, name), fontsize=9)
        if region is not None:
            r, c = region
            ax.add_patch(Rectangle((c.start - 0.5, r.start - 0.5), c.stop - c.start, r.stop - r.start,
                                   fill=False, edgecolor="yellow", linewidth=1))
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    fig.colorbar(im, ax=axes, shrink=0.6, label="σ0 [dB]")
    return fig


def plot_class_time_series(stack_db, landcover, class_names: Mapping[int, str], year: int | None = None):
    """Per-class mean VV and VH (dB) over time from a (time, band, y, x) stack; ascending passes as dots,
    descending as crosses; the study's seasons shaded when ``year`` is given."""
    times = np.asarray(stack_db["time"].values)
    passes = np.asarray(stack_db["pass"].values) if "pass" in stack_db.coords else np.array(["asc"] * times.size)
    lc = np.asarray(landcover)
    vals = np.asarray(stack_db.values, dtype=np.float64)  # (t, b, y, x)
    bands = [str(b) for b in stack_db["band"].values]
    fig, axes = plt.subplots(1, len(bands), figsize=(6 * len(bands), 3.6), sharey=True, squeeze=False)
    for j, band in enumerate(bands):
        ax = axes[0, j]
        for k, (code, name) in enumerate(class_names.items()):
            m = lc == code
            if not m.any():
                continue
            series = np.nanmean(vals[:, j][:, m], axis=1)
            for p, marker in (("asc", "o"), ("des", "x")):
                sel = passes == p
                ax.plot(times[sel], series[sel], marker, ms=3, color=categorical_color(k),
                        label=name if p == "asc" else None)
        if year is not None:
            edges = np.array([f"{year - 1}-12-01", f"{year}-03-01", f"{year}-06-01", f"{year}-09-01",
                              f"{year}-12-01"], dtype="datetime64[ns]")
            for s in range(4):
                ax.axvspan(edges[s], edges[s + 1], color="0.5", alpha=0.05 if s % 2 else 0.15, lw=0)
                ax.text(edges[s] + (edges[s + 1] - edges[s]) / 2, 1.01, SEASONS[s], transform=ax.get_xaxis_transform(),
                        ha="center", fontsize=8)
        ax.set_ylabel(f"σ0 {band.upper()} [dB]")
        ax.tick_params(axis="x", labelrotation=30)
    axes[0, 0].legend(fontsize=7, loc="lower left", ncol=2)
    fig.tight_layout()
    return fig


def plot_terrain(dem, local_incidence, sigma0_db, gamma0_db, mask, look_azimuth: float | None = None):
    """Five panels: DEM, local incidence angle, sigma0 (dB), terrain-flattened gamma0 (dB) and the
    layover (1) / shadow (2) mask."""
    from sarssl.preprocess.terrain import LAYOVER, SHADOW

    fig, axes = plt.subplots(1, 5, figsize=(17, 3.6))
    panels = [
        (dem, "terrain", "elevation [m]", None),
        (local_incidence, "coolwarm", "local incidence [deg]", (0, 90)),
        (sigma0_db, "gray", "σ0 (ellipsoid) [dB]", None),
        (gamma0_db, "gray", "γ0 terrain-flattened [dB]", None),
    ]
    lo, hi = _limits(sigma0_db, gamma0_db)
    for ax, (img, cmap, label, lim) in zip(axes, panels):
        lim = lim if lim is not None else ((lo, hi) if "dB" in label else (None, None))
        im = ax.imshow(np.asarray(img, dtype=np.float64), cmap=cmap, vmin=lim[0], vmax=lim[1], interpolation="nearest")
        ax.set_title(label, fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.75)
    m = np.asarray(mask)
    rgb = np.ones(m.shape + (3,))
    rgb[(m & LAYOVER) > 0] = to_rgb(OKABE_ITO[3])  # vermillion
    rgb[(m & SHADOW) > 0] = to_rgb(OKABE_ITO[0])  # blue
    rgb[(m & LAYOVER) & (m & SHADOW) > 0] = to_rgb(OKABE_ITO[4])  # reddish purple
    axes[4].imshow(rgb, interpolation="nearest")
    axes[4].set_title(f"layover (red) {100 * np.mean((m & LAYOVER) > 0):.1f}% · "
                      f"shadow (blue) {100 * np.mean((m & SHADOW) > 0):.1f}%", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if look_azimuth is not None:
        phi = np.deg2rad(look_azimuth)
        axes[0].annotate("", xy=(0.5 + 0.3 * np.sin(phi), 0.12 + 0.0 * np.cos(phi)), xytext=(0.5, 0.12),
                         xycoords="axes fraction", arrowprops=dict(arrowstyle="-|>", color="k"))
        axes[0].text(0.5, 0.2, "look", transform=axes[0].transAxes, fontsize=8)
    fig.tight_layout()
    return fig
