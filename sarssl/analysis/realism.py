"""The simulator's backscatter against real Sentinel-1 data (chapter 2).

Real: the six BigEarthNet Sentinel-1 example patches (single GRD acquisitions, 10 m, 2017-2018),
grouped by their CORINE labels (:func:`sarssl.data.bigearthnet.bigearthnet_groups`). Simulated:
single acquisitions of a 10 m scene (:func:`sarssl.data.scene.simulate_scene` with
``keep_acquisitions``) for the matching classes, in the seasons of the real patches of each group,
both passes. Both are sigma0 in dB; the comparison is of distributions, the real labels being per patch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sarssl.data import scene as sc

#: simulator classes standing for each CORINE group of :data:`sarssl.data.bigearthnet.CORINE_GROUPS`
GROUP_CLASSES = {"forest": (sc.TREE,), "arable": (sc.CROP,), "pasture": (sc.GRASS,), "water": (sc.WATER,)}

__all__ = ["GROUP_CLASSES", "real_group_pixels", "simulated_group_pixels", "level_comparison", "plot_level_histograms"]


def real_group_pixels(groups: dict) -> dict[str, dict]:
    """``{group: {"vv", "vh": pooled dB values, "seasons": set, "patches": n}}`` from
    :func:`~sarssl.data.bigearthnet.bigearthnet_groups`."""
    from sarssl.data.bigearthnet import patch_season

    out = {}
    for g, patches in groups.items():
        if not patches:
            continue
        vals = {pol: np.concatenate([p.sel(band=pol).values.ravel() for p in patches]) for pol in ("vv", "vh")}
        vals = {k: v[np.isfinite(v)] for k, v in vals.items()}
        out[g] = {**vals, "seasons": sorted({patch_season(p) for p in patches}), "patches": len(patches)}
    return out


def simulated_group_pixels(scene, seasons_of: dict[str, list[str]]) -> dict[str, dict]:
    """Single speckled acquisitions (dB) of ``scene`` (a :func:`~sarssl.data.scene.simulate_scene` Dataset
    with ``sigma0_acq``) per group of :data:`GROUP_CLASSES`, in the group's seasons, both passes."""
    if "sigma0_acq" not in scene:
        raise ValueError("scene has no 'sigma0_acq': simulate it with keep_acquisitions=True")
    lc = scene["landcover"].values
    out = {}
    for g, seasons in seasons_of.items():
        mask = np.isin(lc, GROUP_CLASSES[g])
        vals = {}
        for pol in ("vv", "vh"):
            a = scene["sigma0_acq"].sel(pol=pol, season=list(seasons)).values  # (K, S, pass, y, x)
            v = a[..., mask].ravel()
            vals[pol] = v[np.isfinite(v)]
        out[g] = {**vals, "seasons": list(seasons), "pixels": int(mask.sum())}
    return out


def level_comparison(real: dict, sim: dict) -> pd.DataFrame:
    """Median and 10th-90th percentiles (dB) of real and simulated sigma0 per group and polarisation,
    and the difference of the medians (simulated minus real)."""
    rows = []
    for g in real:
        if g not in sim:
            continue
        for pol in ("vv", "vh"):
            r, s = real[g][pol], sim[g][pol]
            if r.size == 0 or s.size == 0:
                continue
            rq, sq = np.percentile(r, [10, 50, 90]), np.percentile(s, [10, 50, 90])
            rows.append({"group": g, "pol": pol.upper(), "seasons": "/".join(real[g]["seasons"]),
                         "real median": rq[1], "real p10-p90": f"{rq[0]:.1f} … {rq[2]:.1f}",
                         "sim median": sq[1], "sim p10-p90": f"{sq[0]:.1f} … {sq[2]:.1f}",
                         "sim - real": sq[1] - rq[1]})
    return pd.DataFrame(rows).set_index(["group", "pol"])


def plot_level_histograms(real: dict, sim: dict, bins=np.arange(-32, 4, 0.5)):
    """Histograms (density) of real and simulated VV and VH per group: 2 rows x groups."""
    import matplotlib.pyplot as plt

    groups = [g for g in real if g in sim]
    fig, axes = plt.subplots(2, len(groups), figsize=(3.6 * len(groups), 5.6), sharex=True, squeeze=False)
    for j, g in enumerate(groups):
        for i, pol in enumerate(("vv", "vh")):
            ax = axes[i, j]
            ax.hist(real[g][pol], bins=bins, density=True, histtype="stepfilled", alpha=0.4, color="C0",
                    label=f"BigEarthNet ({real[g]['patches']} patch{'es' if real[g]['patches'] > 1 else ''})")
            ax.hist(sim[g][pol], bins=bins, density=True, histtype="step", lw=1.8, color="C3", label="simulated")
            ax.set_title(f"{g}: {pol.upper()} ({'/'.join(real[g]['seasons'])})", fontsize=10)
            ax.set_xlabel("σ0 [dB]") if i == 1 else None
    axes[0, 0].legend(fontsize=8)
    axes[0, 0].set_ylabel("density")
    axes[1, 0].set_ylabel("density")
    fig.tight_layout()
    return fig
