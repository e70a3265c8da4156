"""Where sarssl keeps what it makes: the workspace root and every default folder under it.

Layer 0: this module imports nothing from ``sarssl``, so every layer may ask it for a default
folder. Library functions take explicit folders (``data_root``, ``out_dir``, ``cache_dir``) and
fall back to these only when none is given; the memoised recipes of :mod:`sarssl.workspace`
(the book layer) lay their regions and runs out with them.

Layout under the root (``$SARSSL_HOME`` when set, else ``~/.cache/sarssl``)::

    regions/<profile>-n<chips>-s<size>-seed<seed>/<aoi>/   simulated M3LEO regions
    runs/<profile>/<name>/                                 training runs (mae, dino, finetune, ...)
    runs/<profile>/sweep/sweep.csv                         the book's label-efficiency sweep
    norm/norm_<hash>.json                                  fitted normalisation (when no cache_dir)
    packed/<aoi>/<hash>/                                   packed memmap caches of fine-tuning and pretraining data
    bigearthnet/                                           the unpacked BigEarthNet example patches
    data/<kind>/<key>/<aoi>/                               data derived from a chapter's DATA source
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ENV_VAR", "workspace_dir", "regions_dir", "region_dir", "runs_dir", "run_path", "norm_dir",
           "packed_cache_dir", "bigearthnet_dir", "sweep_csv", "derived_data_dir"]

ENV_VAR = "SARSSL_HOME"


def workspace_dir() -> Path:
    """The workspace root (``$SARSSL_HOME`` or ``~/.cache/sarssl``), created if needed."""
    root = Path(os.environ.get(ENV_VAR, Path.home() / ".cache" / "sarssl")).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def regions_dir() -> Path:
    """Folder of the simulated regions (``<root>/regions``)."""
    return workspace_dir() / "regions"


def region_dir(profile_name: str, n_chips: int, chip_size: int, pixel_size: float, simulator_version: str,
               seed: int = 0) -> Path:
    """M3LEO root of the simulated region(s) of a profile's size, pixel size (m), simulator version and
    ``seed`` (not created): a region simulated by another version or at another pixel size is never reused."""
    return regions_dir() / (f"{profile_name}-n{n_chips}-s{chip_size}-px{pixel_size:g}-v{simulator_version}"
                            f"-seed{seed}")


def runs_dir(profile_name: str) -> Path:
    """Folder of the training runs of a profile (``<root>/runs/<profile>``, not created)."""
    return workspace_dir() / "runs" / profile_name


def run_path(profile_name: str, name: str) -> Path:
    """Folder of the run ``name`` (``mae``, ``dino``, ``finetune/...``) of a profile (not created)."""
    return runs_dir(profile_name) / name


def norm_dir(cache_dir: str | Path | None = None) -> Path:
    """Folder of fitted normalisation JSONs: ``<cache_dir>/norm``, else ``<root>/norm``."""
    return (Path(cache_dir) if cache_dir is not None else workspace_dir()) / "norm"


def packed_cache_dir() -> Path:
    """Default folder of the packed memmap caches (``<root>/packed``): fine-tuning data, and pretraining
    data unless ``data.packed_cache`` is off."""
    return workspace_dir() / "packed"


def bigearthnet_dir() -> Path:
    """Default folder the BigEarthNet example patches are unpacked into (``<root>/bigearthnet``)."""
    return workspace_dir() / "bigearthnet"


def sweep_csv(profile_name: str) -> Path:
    """The book's label-efficiency sweep results (``<root>/runs/<profile>/sweep/sweep.csv``, not created)."""
    return run_path(profile_name, "sweep") / "sweep.csv"


def derived_data_dir(kind: str) -> Path:
    """Folder of data derived from a ``DATA`` source (``<root>/data/<kind>``, not created): ``hub`` (subsets
    fetched from the Hub), ``own`` (converted GeoTIFF folders), ``unpacked`` (parquet shards unpacked),
    ``resized`` (chips resized to a profile's image size)."""
    return workspace_dir() / "data" / kind
