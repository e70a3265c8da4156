"""Download real M3LEO regions from the Hugging Face Hub, resumably, with a progress bar.

Two kinds of dataset repositories (``repo_type="dataset"``), one per area of interest (AOI):

- ``M3LEO/<aoi>`` (the full archive): per product folder, zstd-compressed parquet shards whose rows
  hold one file each (columns ``path``, ``ds``, ``content``; see :mod:`sarssl.data.parquet`), plus the
  chip geojson and the split CSVs (one with a ``parquet_identifier`` column naming the shard of a chip).
- ``M3LEO-miniset/<aoi>`` (about 5000 chips per AOI): the GeoTIFFs directly in the folder layout
  ``<aoi>_partitions_aschips_<hash>/<product>/<identifier>.tif`` with ``..._miniset.geojson`` and
  ``..._60-20-20_miniset.csv``.

Files land under ``<out_root>/<aoi>/`` with their repository paths, so a miniset download *is* an AOI
in the M3LEO layout. Split CSV and geojson names with a ``_miniset`` / ``_parquet`` suffix also get a copy
under the canonical name :class:`~sarssl.data.layout.AOILayout` looks for.

Resuming: a small manifest ``<out_root>/<aoi>/.sarssl_download.json`` records every completed file and
its size; a file whose local size matches (and, when the hub reports sizes, matches the remote size) is
skipped. ``hf_hub_download`` itself resumes partial downloads.

The hub access goes through one small object (``hub_api``) with two methods, ``list_repo_files(repo_id,
repo_type=..., revision=...)`` and ``download(repo_id, filename, local_dir, revision=...) -> path``;
:class:`HubClient` implements them with ``huggingface_hub`` and tests inject a local fake.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path, PurePosixPath

from sarssl.data.products import PRODUCT_FAMILIES, product_family

__all__ = [
    "FULL_ORG", "MINISET_ORG", "KNOWN_AOIS", "MANIFEST_NAME", "HubClient", "repo_id_for", "select_files",
    "download_aoi", "canonicalise_metadata",
]

#: Hugging Face organisations holding the full parquet archive and the GeoTIFF miniset (one repo per AOI)
FULL_ORG = "M3LEO"
MINISET_ORG = "M3LEO-miniset"
#: AOIs published by M3LEO (names of the dataset repositories)
KNOWN_AOIS = ("china", "conus", "europe", "middleeast", "pakin", "southamerica")
MANIFEST_NAME = ".sarssl_download.json"
REPO_TYPE = "dataset"

_META_SUFFIXES = (".csv", ".geojson", ".json")
_DATA_SUFFIXES = (".parquet", ".tif", ".tiff", ".nc")
_SUFFIXED_META = re.compile(r"^(?P<stem>.+_partitions_aschips_[0-9a-zA-Z]+(?:_splits_\d+bands_angle\d+_60-20-20)?)"
                            r"_(?:miniset|parquet)\.(?P<ext>csv|geojson)$")


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
        raise ValueError(f"aoi must be a plain name such as {KNOWN_AOIS[0]!r}, got {aoi!r}")
    return f"{MINISET_ORG if miniset else FULL_ORG}/{aoi}"


def _product_of(path: str) -> str | None:
    """The product folder a repository path lies in (the last folder with a known family), else None."""
    for part in reversed(PurePosixPath(path).parts[:-1]):
        if part.split("-")[0] in PRODUCT_FAMILIES:
            return part
    return None


def _matches(product: str, wanted: set[str]) -> bool:
    return product in wanted or product.split("-")[0] in wanted


def select_files(files, products=None, miniset: bool = False) -> tuple[list[str], list[str]]:
    """Split a repository listing into ``(metadata, data)`` files to fetch.

    Metadata: CSV/geojson/JSON at any level outside product folders (splits, chip polygons). Data: the
    parquet shards (full archive) or GeoTIFFs (miniset) inside product folders, filtered by ``products``
    (exact names such as ``"s1grd-2020"`` or families such as ``"s1grd"``; None keeps all). Raises
    ``ValueError`` naming the products found when a requested product matches no file.
    """
    meta, data, seen = [], [], set()
    wanted = None if products is None else {str(p) for p in products}
    if wanted is not None:
        for p in wanted:
            if p.split("-")[0] not in PRODUCT_FAMILIES:
                product_family(p)  # raises the clear "unknown product" error
    for f in sorted(files):
        name = PurePosixPath(f).name
        if name.startswith(".") or name == "README.md":
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
            raise ValueError(f"product(s) {missing} not in the repository ({kind} products found: "
                             f"{sorted(seen) or 'none'})")
    return meta, data


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

    :class:`~sarssl.data.layout.AOILayout` expects ``<stem>_splits_60bands_angleXX_60-20-20.csv`` and
    ``<stem>.geojson``. Existing canonical files are left alone. Returns the files written.
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


def download_aoi(aoi: str, out_root, products=None, miniset: bool = False, revision: str | None = None,
                 progress: bool = True, hub_api=None, *, max_workers: int = 4) -> Path:
    """Download one M3LEO AOI into ``<out_root>/<aoi>/`` and return that folder.

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

    Files already complete (manifest entry with the same size as the local file, and the remote size
    when the hub reports one) are skipped, so an interrupted run resumes with the same command. Parquet
    shards are *not* unpacked here: use :func:`sarssl.data.parquet.unpack_parquet` or stream them with
    :class:`sarssl.data.parquet.M3LEOParquetStream`.
    """
    from tqdm.auto import tqdm

    repo_id = repo_id_for(aoi, miniset)
    hub = hub_api if hub_api is not None else HubClient()
    aoi_dir = Path(out_root) / aoi
    aoi_dir.mkdir(parents=True, exist_ok=True)
    try:
        files = list(hub.list_repo_files(repo_id, repo_type=REPO_TYPE, revision=revision))
    except Exception as e:  # network, auth, missing repository: say which repository failed
        raise ValueError(f"cannot list dataset repository {repo_id!r} (revision {revision or 'main'}): {e}") from e
    if not files:
        raise ValueError(f"dataset repository {repo_id!r} lists no files")
    meta, data = select_files(files, products, miniset)
    sizes = {}
    if hasattr(hub, "file_sizes"):
        try:
            sizes = hub.file_sizes(repo_id, repo_type=REPO_TYPE, revision=revision)
        except Exception:  # sizes are only a cross-check; the manifest still guards completeness
            sizes = {}

    manifest_path = aoi_dir / MANIFEST_NAME
    manifest = _load_manifest(manifest_path)
    todo, skipped = [], 0
    for f in meta + data:
        local = aoi_dir / f
        rec = manifest.get(f)
        remote = sizes.get(f)
        if (rec is not None and local.is_file() and local.stat().st_size == rec.get("size")
                and (remote is None or remote == rec.get("size"))):
            skipped += 1
        else:
            todo.append(f)

    lock = threading.Lock()
    done_since_save = 0

    def fetch(f: str) -> tuple[str, int]:
        path = Path(hub.download(repo_id, f, aoi_dir, revision=revision))
        if not path.is_file():
            raise OSError(f"download of {f!r} from {repo_id!r} produced no file at {str(path)!r}")
        size = path.stat().st_size
        if sizes.get(f) is not None and size != sizes[f]:
            raise OSError(f"{f!r} from {repo_id!r}: local size {size} differs from the remote size {sizes[f]}")
        if path.resolve() != (aoi_dir / f).resolve():  # a hub that returns a cache path: place it in the layout
            (aoi_dir / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, aoi_dir / f)
        return f, size

    failures = []
    bar = tqdm(total=len(meta) + len(data), initial=skipped, desc=f"download {repo_id}", unit="file",
               disable=not progress)
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
                    manifest[f] = {"size": size}
                    done_since_save += 1
                    if done_since_save >= 200:
                        _save_manifest(manifest_path, repo_id, revision, manifest)
                        done_since_save = 0
                bar.update(1)
    finally:
        bar.close()
        _save_manifest(manifest_path, repo_id, revision, manifest)
    if failures:
        raise OSError(f"{len(failures)} of {len(todo)} file(s) from {repo_id!r} failed (run the same command to "
                      f"resume): " + "; ".join(failures[:5]))
    canonicalise_metadata(aoi_dir)
    return aoi_dir
