"""Download real M3LEO regions from the Hugging Face Hub, resumably, with a progress bar; whole or a subset.

Two kinds of dataset repositories (``repo_type="dataset"``), one per area of interest (AOI), listed as
published (``<prefix> = <aoi>_partitions_aschips_<hash>``, ``<split> = _splits_60bands_angleNN_60-20-20``):

- ``M3LEO-miniset/<aoi>`` (about 5000 chips per AOI): ``<prefix>_miniset.geojson``,
  ``<prefix><split>_miniset.csv`` (columns ``identifier, split, original_index``) and the GeoTIFFs
  ``<prefix>/<product>/<identifier>.tif`` (products ``biomass-2020, esaworldcover-2020, ghsbuilts-2020,
  gssic, gunw_<start>_<end>, modis44b006veg, s1grd-2020, s2rgbm-2020, srtmdem`` or ``strmdem``).
- ``M3LEO/<aoi>`` (the full archive): zstd parquet shards
  ``<aoi>/<prefix>/<dataset>/<parquet_identifier>.zstd.parquet`` whose rows hold one file each (columns
  ``path``, ``ds``, ``content``; see :mod:`sarssl.data.parquet`), the split CSV ``<prefix><split>.csv`` and the
  shard index ``<prefix><split>_parquet.csv`` naming each chip's ``parquet_identifier``. Dataset names
  follow the card (``s2srm-<year>`` for ``s2rgbm-<year>``, ``gunw-<dates>``); ``products`` may use either
  spelling (:func:`sarssl.data.layout.canonical_product`).

Files land under ``<out_root>/<aoi>/`` with their published names (a shard path's leading ``<aoi>/`` is the
AOI folder itself), so a miniset download *is* an AOI that :class:`~sarssl.data.layout.AOILayout` reads,
no renaming needed.

Subsets (``max_chips`` and/or ``splits``): the split CSV is fetched first, chips are picked from it
stratified by split (:func:`select_chips`, seeded), and only their files are fetched: their GeoTIFFs from
the miniset, or from the archive only the shards the shard index names for them. The published metadata
are kept under ``<aoi>/.sarssl/hub/``; the AOI folder gets the split CSV, the shard index and the geojson
under their published names restricted to the chosen chips, and ``.sarssl/subset.json`` records the choice.

Resuming: a small manifest ``<out_root>/<aoi>/.sarssl_download.json`` records every completed file and
its size; a file whose local size matches (and, when the hub reports sizes, matches the remote size) is
skipped. ``hf_hub_download`` itself resumes partial downloads.

The hub access goes through one small object (``hub_api``) with two methods, ``list_repo_files(repo_id,
repo_type=..., revision=...)`` and ``download(repo_id, filename, local_dir, revision=...) -> path``
(the file lands at ``local_dir/filename``); :class:`HubClient` implements them with ``huggingface_hub``
and tests inject a local fake (``tests/fake_hub.py``).
"""

from __future__ import annotations

import json
import re
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path, PurePosixPath

from sarssl.data.layout import (
    SHARD_INDEX_SUFFIX, SPLIT_FILE_RE, SPLITS, canonical_product, parse_splits, product_family_name,
)
from sarssl.data.products import PRODUCT_FAMILIES
from sarssl.errors import UserError

__all__ = [
    "DownloadError",
    "FULL_ORG", "MINISET_ORG", "KNOWN_AOIS", "MANIFEST_NAME", "SUBSET_NAME", "HubClient", "repo_id_for",
    "select_files", "select_chips", "download_aoi", "read_subset", "canonicalise_metadata", "DOWNLOAD_FAMILIES",
]


class DownloadError(UserError, OSError):
    """A download that failed (network, disk, a size mismatch): the message names the files and says to
    retry with the same command, which resumes. An ``OSError`` and a :class:`~sarssl.errors.UserError`."""


#: Hugging Face organisations holding the full parquet archive and the GeoTIFF miniset (one repo per AOI)
FULL_ORG = "M3LEO"
MINISET_ORG = "M3LEO-miniset"
#: AOIs published by M3LEO (names of the dataset repositories)
KNOWN_AOIS = ("china", "conus", "europe", "middleeast", "pakin", "southamerica")
MANIFEST_NAME = ".sarssl_download.json"
#: folder (inside the AOI folder) for the published metadata of a subset and the record of the choice
STATE_DIR = ".sarssl"
SUBSET_NAME = "subset.json"
REPO_TYPE = "dataset"
#: product families that can be downloaded: those sarssl reads plus the ones it only lists
DOWNLOAD_FAMILIES = tuple(PRODUCT_FAMILIES) + ("gssic", "gunw", "srtmdem")

_META_SUFFIXES = (".csv", ".geojson", ".json")
_DATA_SUFFIXES = (".parquet", ".tif", ".tiff", ".nc")
_SUFFIXED_META = re.compile(r"^(?P<stem>.+_partitions_aschips_[0-9a-zA-Z]+(?:_splits_\d+bands_angle\d+_60-20-20)?)"
                            r"_(?:miniset|parquet)\.(?P<ext>csv|geojson)$")
_PREFIX_DIR = re.compile(r"^.+_partitions_aschips_[0-9a-zA-Z]+$")


class HubClient:
    """The real hub access: ``huggingface_hub.HfApi`` listing and ``hf_hub_download`` into a folder."""

    def __init__(self, token: str | None = None, endpoint: str | None = None):
        from huggingface_hub import HfApi

        self.api = HfApi(token=token, endpoint=endpoint)
        self.token = token
        self.endpoint = endpoint

    def list_repo_files(self, repo_id: str, repo_type: str = REPO_TYPE, revision: str | None = None) -> list[str]:
        return self.api.list_repo_files(repo_id, repo_type=repo_type, revision=revision)

    def file_sizes(self, repo_id: str, repo_type: str = REPO_TYPE, revision: str | None = None) -> dict[str, int]:
        """Remote size in bytes of every file of the repository (for the completeness check)."""
        out = {}
        for entry in self.api.list_repo_tree(repo_id, repo_type=repo_type, revision=revision, recursive=True):
            size = getattr(entry, "size", None)
            if size is not None and not hasattr(entry, "tree_id"):  # RepoFile, not RepoFolder
                out[entry.path] = int(size)
        return out

    def download(self, repo_id: str, filename: str, local_dir, revision: str | None = None) -> str:
        from huggingface_hub import hf_hub_download

        return hf_hub_download(repo_id=repo_id, filename=filename, repo_type=REPO_TYPE, revision=revision,
                               local_dir=str(local_dir), token=self.token, endpoint=self.endpoint)


def repo_id_for(aoi: str, miniset: bool = False) -> str:
    """``"europe"`` -> ``"M3LEO/europe"`` (or ``"M3LEO-miniset/europe"``); raises naming the known AOIs."""
    if not isinstance(aoi, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", aoi):
        raise UserError(f"aoi must be a plain name such as {KNOWN_AOIS[0]!r}, got {aoi!r}")
    return f"{MINISET_ORG if miniset else FULL_ORG}/{aoi}"


def _product_of(path: str) -> str | None:
    """The product (dataset) folder a repository path lies in, else None.

    The folder right under an ``<aoi>_partitions_aschips_<hash>`` folder, whatever its name (unknown
    products such as ``gssic`` included); otherwise the last folder with a downloadable family.
    """
    parts = PurePosixPath(path).parts[:-1]
    for i in range(len(parts) - 1, 0, -1):
        if _PREFIX_DIR.match(parts[i - 1]):
            return parts[i]
    for part in reversed(parts):
        if product_family_name(part) in DOWNLOAD_FAMILIES:
            return part
    return None


def _matches(product: str, wanted: set[str]) -> bool:
    """``product`` (any published spelling) is one of ``wanted`` (names or families, canonical spellings)."""
    canon = canonical_product(product)
    return canon in wanted or product_family_name(canon) in wanted


def _check_products(products) -> set[str] | None:
    if products is None:
        return None
    wanted = {canonical_product(str(p)) for p in products}
    for p in sorted(wanted):
        if product_family_name(p) not in DOWNLOAD_FAMILIES:
            raise UserError(f"unknown product {p!r}: expected a name or family of "
                             + ", ".join(f"{f}-<year>" if f in PRODUCT_FAMILIES and f != "modis44b006veg" else f
                                         for f in DOWNLOAD_FAMILIES))
    return wanted


def select_files(files, products=None, miniset: bool = False) -> tuple[list[str], list[str]]:
    """Split a repository listing into ``(metadata, data)`` files to fetch.

    Metadata: CSV/geojson/JSON at any level outside product folders (splits, shard index, chip polygons).
    Data: the parquet shards (full archive) or GeoTIFFs (miniset) inside product folders, filtered by
    ``products`` (exact names such as ``"s1grd-2020"`` or families such as ``"s1grd"``, in any published
    spelling: ``s2rgbm``/``s2srm``, ``gunw_``/``gunw-``, ``srtmdem``/``strmdem``; None keeps all). Raises
    ``ValueError`` naming the products found when a requested product matches no file.
    """
    meta, data, seen = [], [], set()
    wanted = _check_products(products)
    for f in sorted(files):
        name = PurePosixPath(f).name
        if name.startswith(".") or name == "README.md" or any(q.startswith(".") for q in PurePosixPath(f).parts):
            continue
        product = _product_of(f)
        if product is None:
            if name.endswith(_META_SUFFIXES):
                meta.append(f)
            continue
        if not name.lower().endswith(_DATA_SUFFIXES):
            continue
        seen.add(product)
        if wanted is None or _matches(product, wanted):
            data.append(f)
    if wanted is not None:
        missing = sorted(p for p in wanted if not any(_matches(s, {p}) for s in seen))
        if missing:
            kind = "GeoTIFF" if miniset else "parquet"
            raise UserError(f"product(s) {missing} not in the repository ({kind} products found: "
                             f"{sorted(seen) or 'none'})")
    return meta, data


def select_chips(split_table, max_chips: int | None = None, splits=None, seed: int = 0) -> list[str]:
    """Identifiers of a seeded subset of a split table, stratified by split.

    Args:
        split_table: DataFrame (or CSV path) with columns ``identifier`` and ``split``.
        max_chips: chips to pick in all (None: every chip of ``splits``). Each split gets its share of
            ``max_chips`` in proportion to its size (largest remainders; ties in the order train, val, test).
        splits: the splits to draw from (default all three).
        seed: the draw's seed; per split the chips are a seeded permutation of the sorted identifiers,
            so the same table, ``max_chips``, ``splits`` and ``seed`` always give the same chips.

    Returns:
        The chosen identifiers, sorted.
    """
    import numpy as np
    import pandas as pd

    df = split_table if isinstance(split_table, pd.DataFrame) else pd.read_csv(split_table, dtype=str)
    if not {"identifier", "split"} <= set(df.columns):
        raise UserError(f"split table: expected columns identifier,split, found {list(df.columns)}")
    chosen_splits = parse_splits(splits) or list(SPLITS)
    split_col = df["split"].astype(str).str.strip().str.lower()
    ids = df["identifier"].astype(str).str.strip()
    pools = {s: sorted(ids[split_col == s]) for s in SPLITS if s in chosen_splits}
    total = sum(len(v) for v in pools.values())
    if total == 0:
        raise UserError(f"split table has no chip in split(s) {chosen_splits} (splits present: "
                         f"{sorted(set(split_col))})")
    if max_chips is None or max_chips >= total:
        quota = {s: len(v) for s, v in pools.items()}
    else:
        if int(max_chips) < 1:
            raise UserError(f"max_chips must be >= 1, got {max_chips}")
        exact = {s: int(max_chips) * len(v) / total for s, v in pools.items()}
        quota = {s: int(q) for s, q in exact.items()}
        left = int(max_chips) - sum(quota.values())
        order = sorted(pools, key=lambda s: (-(exact[s] - quota[s]), SPLITS.index(s)))
        for s in order[:left]:
            quota[s] += 1
    out = []
    for k, s in enumerate(SPLITS):
        if s not in pools:
            continue
        perm = np.random.default_rng([int(seed), k]).permutation(len(pools[s]))
        out.extend(pools[s][j] for j in perm[:quota[s]])
    return sorted(out)


def _load_manifest(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        d = json.loads(path.read_text())
        return d.get("files", {}) if isinstance(d, dict) else {}
    except (OSError, json.JSONDecodeError):
        return {}  # a damaged manifest only costs re-checking files


def _save_manifest(path: Path, repo_id: str, revision, files: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"repo_id": repo_id, "revision": revision, "files": files}, indent=0, sort_keys=True))
    tmp.replace(path)


def canonicalise_metadata(aoi_dir: str | Path) -> list[Path]:
    """Copy ``..._miniset.csv`` / ``..._parquet.csv`` / ``..._miniset.geojson`` to the canonical names.

    Not needed any more (:class:`~sarssl.data.layout.AOILayout` reads the published names, and
    :func:`download_aoi` no longer calls it); kept for tools that want the canonical names. An identical
    copy next to the published file is accepted by the reader. Existing files are left alone. Returns the
    files written.
    """
    aoi_dir = Path(aoi_dir)
    written = []
    for p in sorted(aoi_dir.iterdir()):
        m = _SUFFIXED_META.match(p.name)
        if not m or not p.is_file():
            continue
        target = aoi_dir / f"{m['stem']}.{m['ext']}"
        if not target.exists():
            shutil.copyfile(p, target)
            written.append(target)
    return written


def _local_dir(f: str, aoi: str, out_root: Path, aoi_dir: Path, hidden: set[str]) -> Path:
    """Folder ``f`` is written into (the file lands at ``<folder>/<f>``)."""
    if f in hidden:
        return aoi_dir / STATE_DIR / "hub"
    parts = PurePosixPath(f).parts
    if len(parts) > 1 and parts[0] == aoi:  # archive shards: <aoi>/<prefix>/<dataset>/<id>.zstd.parquet
        return out_root
    return aoi_dir


def _root_meta(meta: list[str]) -> dict[str, list[str]]:
    """Root-level metadata of a listing: ``split`` files, shard ``index`` files and ``geojson`` files."""
    out: dict[str, list[str]] = {"split": [], "index": [], "geojson": []}
    for f in meta:
        if "/" in f:
            continue
        m = SPLIT_FILE_RE.match(f)
        if m:
            out["index" if m["suffix"] == SHARD_INDEX_SUFFIX else "split"].append(f)
        elif f.endswith(".geojson") and "_partitions_aschips_" in f:
            out["geojson"].append(f)
    return out


def _write_subset_metadata(src: Path, target: Path, ids: set[str]) -> int:
    """Copy a published split CSV / shard index / geojson restricted to ``ids``; returns rows kept."""
    import pandas as pd

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    if src.suffix == ".csv":
        df = pd.read_csv(src, dtype=str, keep_default_na=False)
        df = df[df["identifier"].str.strip().isin(ids)]
        df.to_csv(tmp, index=False)
        n = len(df)
    else:
        gj = json.loads(src.read_text())
        feats = [ft for ft in gj.get("features", []) if str((ft.get("properties") or {}).get("identifier")) in ids]
        gj["features"] = feats
        tmp.write_text(json.dumps(gj))
        n = len(feats)
    tmp.replace(target)
    return n


def _shard_id(f: str) -> str:
    name = PurePosixPath(f).name
    for ext in (".zstd.parquet", ".parquet"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def download_aoi(aoi: str, out_root, products=None, miniset: bool = False, revision: str | None = None,
                 progress: bool = True, hub_api=None, *, max_workers: int = 4, max_chips: int | None = None,
                 splits=None, seed: int = 0) -> Path:
    """Download one M3LEO AOI (or a subset of its chips) into ``<out_root>/<aoi>/`` and return that folder.

    Args:
        aoi: AOI name (``"europe"``, ``"conus"``, ...; the repository is ``M3LEO/<aoi>`` or
            ``M3LEO-miniset/<aoi>``, see :func:`repo_id_for`).
        out_root: M3LEO root folder (created).
        products: product names or families to fetch (None: all); metadata files always come.
        miniset: fetch the GeoTIFF miniset instead of the parquet archive.
        revision: git revision (branch, tag or commit) of the repository; None = main.
        progress: tqdm bar over files.
        hub_api: the hub access object (default :class:`HubClient`); see the module docstring.
        max_workers: parallel downloads.
        max_chips: fetch only this many chips, picked from the split CSV stratified by split
            (:func:`select_chips` with ``seed``); from the archive only the shards holding them.
        splits: draw the chips from these splits only (with or without ``max_chips``).
        seed: seed of the chip draw.

    Files already complete (manifest entry with the same size as the local file, and the remote size
    when the hub reports one) are skipped, so an interrupted run resumes with the same command. Parquet
    shards are *not* unpacked here: use :func:`sarssl.data.parquet.unpack_parquet` (``identifiers=`` for a
    subset) or stream them with :class:`sarssl.data.parquet.M3LEOParquetStream`.
    """
    from tqdm.auto import tqdm

    repo_id = repo_id_for(aoi, miniset)
    hub = hub_api if hub_api is not None else HubClient()
    out_root = Path(out_root)
    aoi_dir = out_root / aoi
    aoi_dir.mkdir(parents=True, exist_ok=True)
    subset = max_chips is not None or splits is not None
    try:
        files = list(hub.list_repo_files(repo_id, repo_type=REPO_TYPE, revision=revision))
    except Exception as e:  # network, auth, missing repository: say which repository failed
        raise DownloadError(f"cannot list dataset repository {repo_id!r} (revision {revision or 'main'}): {e}; "
                            "check the network (and HF_TOKEN), then run the same command again") from e
    if not files:
        raise UserError(f"dataset repository {repo_id!r} lists no files")
    meta, data = select_files(files, products, miniset)
    sizes = {}
    if hasattr(hub, "file_sizes"):
        try:
            sizes = hub.file_sizes(repo_id, repo_type=REPO_TYPE, revision=revision)
        except Exception:  # sizes are only a cross-check; the manifest still guards completeness
            sizes = {}

    manifest_path = aoi_dir / MANIFEST_NAME
    manifest = _load_manifest(manifest_path)
    hidden: set[str] = set()
    roots = _root_meta(meta)
    if subset:
        hidden = set(roots["split"] + roots["index"] + roots["geojson"])

    def local(f: str) -> Path:
        return _local_dir(f, aoi, out_root, aoi_dir, hidden) / f

    def key(f: str) -> str:
        return local(f).relative_to(aoi_dir).as_posix()

    def fetch(f: str) -> tuple[str, int]:
        target = local(f)
        path = Path(hub.download(repo_id, f, _local_dir(f, aoi, out_root, aoi_dir, hidden), revision=revision))
        if not path.is_file():
            raise OSError(f"download of {f!r} from {repo_id!r} produced no file at {str(path)!r}")
        size = path.stat().st_size
        if sizes.get(f) is not None and size != sizes[f]:
            raise OSError(f"{f!r} from {repo_id!r}: local size {size} differs from the remote size {sizes[f]}")
        if path.resolve() != target.resolve():  # a hub that returns a cache path: place it in the layout
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        return f, size

    def fetch_all(todo_files: list[str], desc: str) -> None:
        todo, skipped = [], 0
        for f in todo_files:
            rec = manifest.get(key(f))
            remote = sizes.get(f)
            p = local(f)
            if (rec is not None and p.is_file() and p.stat().st_size == rec.get("size")
                    and (remote is None or remote == rec.get("size"))):
                skipped += 1
            else:
                todo.append(f)
        lock = threading.Lock()
        done_since_save = 0
        failures = []
        bar = tqdm(total=len(todo_files), initial=skipped, desc=desc, unit="file", disable=not progress)
        try:
            with ThreadPoolExecutor(max_workers=max(1, int(max_workers))) as pool:
                futures = {pool.submit(fetch, f): f for f in todo}
                for fut in as_completed(futures):
                    try:
                        f, size = fut.result()
                    except Exception as e:  # keep going; report all failures at the end
                        failures.append(f"{futures[fut]}: {e}")
                        continue
                    with lock:
                        manifest[key(f)] = {"size": size}
                        done_since_save += 1
                        if done_since_save >= 200:
                            _save_manifest(manifest_path, repo_id, revision, manifest)
                            done_since_save = 0
                    bar.update(1)
        finally:
            bar.close()
            _save_manifest(manifest_path, repo_id, revision, manifest)
        if failures:
            raise DownloadError(f"{len(failures)} of {len(todo)} file(s) from {repo_id!r} failed (run the same command "
                                f"again to retry; the files already fetched are kept): " + "; ".join(failures[:5]))

    if not subset:
        fetch_all(meta + data, f"download {repo_id}")
        (aoi_dir / STATE_DIR / SUBSET_NAME).unlink(missing_ok=True)  # the folder now holds every chip
        return aoi_dir

    # -- subset: the split CSV first, then the chosen chips' files only ----------------------
    if not roots["split"] and not roots["index"]:
        raise UserError(f"dataset repository {repo_id!r} lists no split CSV "
                         f"('<aoi>_partitions_aschips_<hash>_splits_60bands_angleXX_60-20-20*.csv') to draw chips from")
    if len(roots["split"]) > 1 or len(roots["index"]) > 1:
        raise UserError(f"dataset repository {repo_id!r} lists more than one split CSV: "
                         f"{roots['split'] + roots['index']}")
    if not miniset and not roots["index"]:
        raise UserError(f"dataset repository {repo_id!r} lists no shard index ('..._60-20-20_parquet.csv'): "
                         "cannot tell which shards hold the chosen chips")
    fetch_all(sorted(hidden), f"metadata {repo_id}")
    split_src = local((roots["split"] or roots["index"])[0])
    chosen = select_chips(split_src, max_chips, splits, seed)
    ids = set(chosen)
    import pandas as pd

    table = pd.read_csv(split_src, dtype=str)
    counts = {s: int(n) for s, n in table[table["identifier"].str.strip().isin(ids)]["split"].str.strip()
              .str.lower().value_counts().items()}
    if miniset:
        wanted_data = [f for f in data if PurePosixPath(f).stem in ids]
        shard_ids: list[str] = []
    else:
        index = pd.read_csv(local(roots["index"][0]), dtype=str)
        if not {"identifier", "parquet_identifier"} <= set(index.columns):
            raise UserError(f"shard index {roots['index'][0]!r}: expected columns identifier, parquet_identifier; "
                             f"found {list(index.columns)}")
        shard_ids = sorted(set(index.loc[index["identifier"].str.strip().isin(ids), "parquet_identifier"].str.strip()))
        wanted_data = [f for f in data if _shard_id(f) in set(shard_ids)]
    for f in sorted(hidden):
        _write_subset_metadata(local(f), aoi_dir / f, ids)
    record = {"repo_id": repo_id, "revision": revision, "seed": int(seed), "max_chips": max_chips,
              "splits": parse_splits(splits), "products": sorted(products) if products is not None else None,
              "chips": counts, "n_chips": len(chosen), "identifiers": chosen, "shards": shard_ids,
              "files": len(wanted_data)}
    state = aoi_dir / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    (state / SUBSET_NAME).write_text(json.dumps(record, indent=1))
    fetch_all(wanted_data, f"download {repo_id} ({len(chosen)} chips)")
    return aoi_dir


def read_subset(aoi_dir) -> dict | None:
    """The record :func:`download_aoi` wrote for a subset download of ``aoi_dir`` (None for a full one)."""
    path = Path(aoi_dir) / STATE_DIR / SUBSET_NAME
    return json.loads(path.read_text()) if path.is_file() else None
