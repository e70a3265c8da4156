"""Real Sentinel-1 (and paired Sentinel-2) patches from the six BigEarthNet v1 examples.

The PyPI wheel ``bigearthnet-common`` ships ``BigEarthNet-S1-Example.tar.bz2`` and
``BigEarthNet-S2-Example.tar.bz2``: 120 x 120 px patches at 10 m in UTM, S1 as float32 sigma0 in
dB (VV and VH files), S2 L2A as uint16 bands. These functions unpack them into a cache folder once
and open them as ``xarray.DataArray`` with CRS. Data: Contains modified Copernicus Sentinel data
2017-2018; BigEarthNet (Sumbul et al.), CDLA-Permissive-1.0.
"""

from __future__ import annotations

import json
import tarfile
from importlib import resources
from pathlib import Path

import numpy as np
import xarray as xr

from sarssl import paths

__all__ = ["bigearthnet_s1_patches", "bigearthnet_s2_patches", "open_bigearthnet_s1", "open_bigearthnet_s2_rgb",
           "s2_patch_for"]


def _default_dest() -> Path:
    return paths.bigearthnet_dir()


def _unpack(archive_name: str, dest) -> list[Path]:
    dest = Path(dest) if dest is not None else _default_dest()
    folder = dest / archive_name.replace(".tar.bz2", "")
    marker = folder / ".complete"
    if not marker.is_file():
        ref = resources.files("bigearthnet_common") / archive_name
        if not ref.is_file():
            raise FileNotFoundError(f"{archive_name} not found in the installed bigearthnet_common package "
                                    f"(expected bigearthnet-common>=2.8)")
        dest.mkdir(parents=True, exist_ok=True)
        with resources.as_file(ref) as path, tarfile.open(path, "r:bz2") as tar:
            members = tar.getmembers()
            for m in members:  # refuse absolute paths and parent references
                if m.name.startswith("/") or ".." in Path(m.name).parts:
                    raise ValueError(f"{archive_name}: unsafe member path {m.name!r}")
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, members=members, filter="data")
            else:  # pragma: no cover - Python < 3.11.4
                tar.extractall(dest, members=members)
        marker.write_text("ok\n")
    return sorted(p for p in folder.iterdir() if p.is_dir())


def bigearthnet_s1_patches(dest=None) -> list[Path]:
    """Unpack the six S1 example patches (once) under ``dest`` (default :func:`sarssl.paths.bigearthnet_dir`); their folders."""
    return _unpack("BigEarthNet-S1-Example.tar.bz2", dest)


def bigearthnet_s2_patches(dest=None) -> list[Path]:
    """Unpack the six paired S2 L2A example patches (once) under ``dest``; their folders."""
    return _unpack("BigEarthNet-S2-Example.tar.bz2", dest)


def _open_band(path: Path) -> xr.DataArray:
    import rioxarray

    if not path.is_file():
        raise FileNotFoundError(f"BigEarthNet band file {str(path)!r} does not exist")
    return rioxarray.open_rasterio(path, masked=False).load().squeeze("band", drop=True)


def open_bigearthnet_s1(patch_dir) -> xr.DataArray:
    """One S1 patch -> ``DataArray`` (band=["vv", "vh"], y, x) float32 sigma0 in dB with CRS.

    ``attrs["labels"]`` holds the CORINE labels and ``attrs["metadata"]`` the whole labels JSON.
    """
    patch_dir = Path(patch_dir)
    name = patch_dir.name
    bands = [_open_band(patch_dir / f"{name}_{p}.tif") for p in ("VV", "VH")]
    da = xr.concat(bands, dim="band").assign_coords(band=["vv", "vh"]).astype(np.float32)
    da = da.rio.write_crs(bands[0].rio.crs).rio.write_transform(bands[0].rio.transform())
    meta_path = patch_dir / f"{name}_labels_metadata.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    da.name = "sigma0"
    da.attrs = {"units": "dB", "patch": name, "labels": list(meta.get("labels", [])),
                "metadata": json.dumps(meta)}
    return da


def s2_patch_for(s1_patch_dir, s2_patches: list[Path] | None = None) -> Path:
    """The S2 patch folder paired with an S1 patch (``corresponding_s2_patch`` in its labels JSON)."""
    s1_patch_dir = Path(s1_patch_dir)
    meta = json.loads((s1_patch_dir / f"{s1_patch_dir.name}_labels_metadata.json").read_text())
    target = meta.get("corresponding_s2_patch")
    if not target:
        raise ValueError(f"{str(s1_patch_dir)!r}: labels JSON has no 'corresponding_s2_patch'")
    for p in s2_patches if s2_patches is not None else bigearthnet_s2_patches():
        if p.name == target:
            return p
    raise FileNotFoundError(f"S2 patch {target!r} paired with {s1_patch_dir.name!r} not found")


def open_bigearthnet_s2_rgb(patch_dir) -> xr.DataArray:
    """One S2 L2A patch -> ``DataArray`` (band=["red", "green", "blue"], y, x) float32 reflectance (B04/B03/B02 / 10000)."""
    patch_dir = Path(patch_dir)
    name = patch_dir.name
    bands = [_open_band(patch_dir / f"{name}_{b}.tif") for b in ("B04", "B03", "B02")]
    da = (xr.concat(bands, dim="band").assign_coords(band=["red", "green", "blue"]).astype(np.float32) / 10000.0)
    da = da.rio.write_crs(bands[0].rio.crs).rio.write_transform(bands[0].rio.transform())
    da.name = "reflectance"
    da.attrs = {"units": "1", "patch": name}
    return da


#: CORINE Land Cover labels (BigEarthNet's 43 classes) grouped as four of the simulator's classes
CORINE_GROUPS = {
    "forest": ("Broad-leaved forest", "Coniferous forest", "Mixed forest"),
    "arable": ("Non-irrigated arable land", "Permanently irrigated land", "Rice fields"),
    "pasture": ("Pastures", "Natural grassland"),
    "water": ("Water bodies", "Water courses", "Sea and ocean", "Coastal lagoons", "Estuaries"),
}
_SEASON_OF_MONTH = ("winter", "winter", "spring", "spring", "spring", "summer", "summer", "summer", "fall", "fall",
                    "fall", "winter")


def patch_season(patch: xr.DataArray) -> str:
    """Season (winter/spring/summer/fall, northern hemisphere) of an S1 patch's acquisition."""
    meta = json.loads(patch.attrs.get("metadata") or "{}")
    when = meta.get("acquisition_time")
    if not when:
        raise ValueError(f"patch {patch.attrs.get('patch')!r}: no acquisition_time in its labels JSON")
    return _SEASON_OF_MONTH[int(when[5:7]) - 1]


def bigearthnet_groups(patches: list[xr.DataArray] | None = None, dest=None) -> dict[str, list[xr.DataArray]]:
    """The S1 example patches by :data:`CORINE_GROUPS`: each patch goes to every group one of its
    CORINE labels belongs to. The labels are per patch (1.2 km), so a patch's pixels mix all its classes."""
    if patches is None:
        patches = [open_bigearthnet_s1(d) for d in bigearthnet_s1_patches(dest)]
    out = {g: [] for g in CORINE_GROUPS}
    for p in patches:
        labels = set(p.attrs.get("labels", []))
        for g, names in CORINE_GROUPS.items():
            if labels & set(names):
                out[g].append(p)
    return out
