"""Packed cache: one AOI's chips of several products as memory-mapped numpy arrays, built once.

Layout of a cache (one folder per AOI and product set)::

    <cache_dir>/<aoi>/<key-hash>/index.json      products, ids -> rows, shapes, skipped chips
    <cache_dir>/<aoi>/<key-hash>/<name>.npy      (N, ...) compact arrays, see ``m3leo.RECORD_LAYOUT``

The arrays hold the same compact values :func:`sarssl.data.m3leo.read_record` returns (S1 as
uint8 codes, labels as storage codes on the chip grid), so a sample decoded from the cache is
identical to one decoded from the GeoTIFFs, and a 64 px chip with all products is ~120 kB.
``index.json`` is written last: a build that was interrupted is rebuilt, never half-read.

The key (:func:`cache_key`) is the data's content, not its folder: the AOI, its split file
(:func:`sarssl.data.fingerprint.split_digest`), the size and modification time of every chip file of the
products read (:func:`~sarssl.data.fingerprint.chip_files_digest`, ``stat`` calls only), the product list,
the MODIS year, and the cache and decoder versions. A chip rewritten in place (zeroed, repaired) changes
the key, so the next dataset builds a new cache that sees the change; the index records its key and an
index whose key differs is never used. Older builds stay on disk until their folder is deleted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np

from sarssl.data.fingerprint import DECODER_VERSION, chip_files_digest, split_digest
from sarssl.data.layout import AOILayout
from sarssl.data.m3leo import read_record, read_splits
from sarssl.data.products import INPUT_CHANNELS
from sarssl.errors import UserError

__all__ = ["PackedCache", "cache_key", "cache_path", "build_cache", "open_cache", "CACHE_VERSION"]

#: layout of the cache files (2: keyed by content instead of the data folder)
CACHE_VERSION = 2


def cache_key(layout: AOILayout, products, modis_year=None, channels=INPUT_CHANNELS) -> dict:
    """The content key of ``layout``'s AOI read as ``products``: split file, chip file sizes and mtimes
    (every chip the split file lists), products, MODIS year, cache and decoder versions, and the input
    ``channels`` (the validation recorded in the index depends on them)."""
    ids = read_splits(layout)["identifier"].tolist()
    key = {"version": CACHE_VERSION, "decoder": DECODER_VERSION, "aoi": layout.aoi, "stem": layout.stem,
           "products": list(products), "modis_year": modis_year, "split": split_digest(layout),
           "chips": chip_files_digest(layout, products, ids)}
    if tuple(channels) != tuple(INPUT_CHANNELS):
        key["channels"] = list(channels)
    return key


def cache_path(cache_dir: str | Path, layout: AOILayout, products, modis_year=None, key: dict | None = None) -> Path:
    """Folder of the cache for ``layout``'s AOI and ``products`` under ``cache_dir`` (``key``: :func:`cache_key`,
    computed when not given)."""
    key = cache_key(layout, products, modis_year) if key is None else key
    h = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return Path(cache_dir) / layout.aoi / h


class PackedCache:
    """Read access to a built cache; memmaps open lazily (per DataLoader worker) and are not pickled."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        index = self.folder / "index.json"
        if not index.is_file():
            raise FileNotFoundError(f"no packed cache at {str(self.folder)!r} (index.json missing)")
        try:
            self.index = json.loads(index.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"packed cache index {str(index)!r} cannot be read ({e}): delete the folder "
                            f"{str(self.folder)!r} and it is rebuilt") from e
        self.rows: dict[str, int] = self.index["rows"]
        self.keys: list[str] = list(self.index["arrays"])
        self._mm: dict[str, np.ndarray] | None = None

    def __getstate__(self):
        d = self.__dict__.copy()
        d["_mm"] = None
        return d

    def _arrays(self) -> dict[str, np.ndarray]:
        if self._mm is None:
            self._mm = {k: np.load(self.folder / f"{k}.npy", mmap_mode="r") for k in self.keys}
        return self._mm

    def __contains__(self, identifier: str) -> bool:
        return identifier in self.rows

    def __len__(self) -> int:
        return len(self.rows)

    def read(self, identifier: str) -> dict[str, np.ndarray]:
        """The compact record of one chip (copies out of the memmaps)."""
        try:
            r = self.rows[identifier]
        except KeyError:
            raise KeyError(f"chip {identifier!r} is not in the packed cache {str(self.folder)!r}") from None
        return {k: np.array(a[r]) for k, a in self._arrays().items()}

    @property
    def skipped(self) -> dict[str, list[str]]:
        return self.index.get("skipped", {})

    @property
    def details(self) -> dict[str, str]:
        """id -> message of each skipped chip."""
        return self.index.get("details", {})

    @property
    def validated(self) -> set[str]:
        """Ids whose validation outcome (kept or skipped) the cache records."""
        return set(self.rows) | {i for v in self.skipped.values() for i in v}


def open_cache(cache_dir, layout: AOILayout, products, modis_year=None, key: dict | None = None) -> PackedCache | None:
    """The cache of these products built for the data as it is now (``key``: :func:`cache_key`), else ``None``.

    A cache whose index records another key (a damaged or foreign index) is not used.
    """
    key = cache_key(layout, products, modis_year) if key is None else key
    return _open_folder(cache_path(cache_dir, layout, products, modis_year, key), key)


def _open_folder(folder: Path, key: dict) -> PackedCache | None:
    """The cache in ``folder`` if its index records ``key``, else ``None``."""
    if not (folder / "index.json").is_file():
        return None
    try:
        pc = PackedCache(folder)
    except UserError:
        return None  # an unreadable index: rebuilt
    return pc if pc.index.get("key") == json.loads(json.dumps(key)) else None


def build_cache(cache_dir, layout: AOILayout, products, ids, modis_year=None,
                skipped: dict[str, list[str]] | None = None, progress: bool = True,
                details: dict[str, str] | None = None, key: dict | None = None) -> PackedCache:
    """Read ``ids`` (already validated chips) of ``products`` once and pack them into memmapped arrays.

    ``skipped`` (reason -> ids) and ``details`` (id -> message) are stored in the index so a later run can reuse the validation.
    A chip that fails to read or has a different shape from the first is skipped with a warning
    (reasons ``read_error`` / ``shape``). Returns the opened :class:`PackedCache`.
    """
    from tqdm.auto import tqdm

    key = cache_key(layout, products, modis_year) if key is None else key
    final = cache_path(cache_dir, layout, products, modis_year, key)
    # built in a private folder and renamed into place, so processes packing the same cache at once (DDP ranks)
    # never truncate arrays another one has memmapped (that ended a chapter-7 run in SIGBUS)
    folder = final.with_name(f"{final.name}.building-{os.getpid()}")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    ids = list(ids)
    skipped = {k: list(v) for k, v in (skipped or {}).items()}
    details = dict(details or {})
    if not ids:
        raise UserError(f"build_cache: no chips to cache for AOI {layout.aoi!r}")

    def read(ident):
        try:
            return read_record(layout, products, ident, modis_year)
        except Exception as e:  # a chip that cannot be read is skipped and counted, not faked
            details[ident] = f"packed cache: skipping chip {ident!r} of AOI {layout.aoi!r} (read_error): {e}"
            warnings.warn(details[ident], stacklevel=3)
            skipped.setdefault("read_error", []).append(ident)
            return None

    first, start = None, 0
    for start, ident in enumerate(ids):  # the first readable chip gives the arrays' shapes
        first = read(ident)
        if first is not None:
            break
    if first is None:
        raise UserError(f"build_cache: none of the {len(ids)} chips of AOI {layout.aoi!r} could be read "
                        f"(first error: {details[ids[0]]})")
    mms = {k: np.lib.format.open_memmap(folder / f"{k}.npy", mode="w+", dtype=v.dtype, shape=(len(ids), *v.shape))
           for k, v in first.items()}
    rows: dict[str, int] = {}
    r = 0
    for ident in tqdm(ids[start:], desc=f"packing {layout.aoi}", disable=not progress, leave=False):
        rec = first if ident == ids[start] else read(ident)
        if rec is None:
            continue
        if any(rec[k].shape != mms[k].shape[1:] for k in mms):
            details[ident] = (f"packed cache: skipping chip {ident!r} of AOI {layout.aoi!r} (shape): shape "
                              f"{rec['s1'].shape if 's1' in rec else ''} differs from the first chip's")
            warnings.warn(details[ident], stacklevel=2)
            skipped.setdefault("shape", []).append(ident)
            continue
        for k, a in rec.items():
            mms[k][r] = a
        rows[ident] = r
        r += 1
    for m in mms.values():
        m.flush()
    del mms
    index = {"key": key, "rows": rows,
             "arrays": {k: {"dtype": str(v.dtype), "shape": list(v.shape)} for k, v in first.items()},
             "n": r, "skipped": skipped, "details": details}
    (folder / "index.json").write_text(json.dumps(index))
    return _move_into_place(folder, final, key)


def _move_into_place(built: Path, final: Path, key: dict) -> PackedCache:
    """Rename the folder ``built`` to ``final``; a valid cache another process put there first is kept."""
    try:
        built.rename(final)
    except OSError:  # final exists: a cache another process finished, or a stale or damaged one
        current = _open_folder(final, key)
        if current is not None:
            shutil.rmtree(built, ignore_errors=True)
            return current
        stale = final.with_name(f"{final.name}.stale-{os.getpid()}")
        final.rename(stale)
        built.rename(final)
        shutil.rmtree(stale, ignore_errors=True)
    return PackedCache(final)
