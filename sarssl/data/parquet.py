"""M3LEO parquet shards: unpack them into the folder layout, or stream chips straight out of them.

The full M3LEO archive stores files as rows of zstd-compressed parquet shards with three columns:

=========  ==========  ===================================================================================
column     type        meaning
=========  ==========  ===================================================================================
``path``   string      file path relative to the M3LEO root: ``<aoi>/<aoi>_partitions_aschips_<hash>/<product>/<identifier>.tif``
``ds``     string      the product (dataset) name, e.g. ``s1grd-2020``
``content`` binary     the file's bytes (a GeoTIFF)
=========  ==========  ===================================================================================

- :func:`unpack_parquet` writes every ``content`` to ``<out_root>/<path>`` (pyarrow, batch by batch, no
  Spark), skipping files already there with the same size.
- :func:`pack_parquet` writes shards in that format from an AOI folder (tests, benchmarks, and readers who
  want to ship their own regions the same way).
- :class:`M3LEOParquetStream` is a ``torch.utils.data.IterableDataset`` that decodes GeoTIFF bytes in memory
  and yields the canonical sample dict of :class:`sarssl.data.datasets.M3LEODataset`, sharded by row group
  across DataLoader workers and DDP ranks, with a seeded, per-epoch shuffle.

The archive names its shards ``<aoi>/<prefix>/<dataset>/<parquet_identifier>.zstd.parquet`` and ships a
*shard index*, ``<prefix>_splits_..._60-20-20_parquet.csv`` (columns ``identifier, split,
parquet_identifier``), naming the shard that holds each chip (the same identifier in every dataset's
folder): :func:`read_shard_index`, :func:`shards_for_chips`, and :func:`shard_index_from_shards` /
:func:`write_shard_index` to build one for shards of your own. Dataset names of the archive
(``s2srm-<year>``, ``gunw-<dates>``) are read as the products sarssl names (``s2rgbm-<year>``...).
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from pathlib import Path, PurePosixPath

import numpy as np
from torch.utils.data import IterableDataset

from sarssl.data.layout import AOILayout, canonical_product, parse_splits
from sarssl.data.products import INPUT_CHANNELS
from sarssl.errors import UserError

__all__ = [
    "PARQUET_COLUMNS", "find_shards", "unpack_parquet", "pack_parquet", "record_from_bytes", "M3LEOParquetStream",
    "SHARD_INDEX_COLUMNS", "shard_file_name", "parquet_identifier", "read_shard_index", "shards_for_chips",
    "shard_index_from_shards", "write_shard_index",
]

PARQUET_COLUMNS = ("path", "ds", "content")
PARQUET_CODEC = "zstd"
#: columns of the archive's shard index (``..._parquet.csv``); more columns (``original_index``) may follow
SHARD_INDEX_COLUMNS = ("identifier", "split", "parquet_identifier")


# --------------------------------------------------------------------------------------------
# shard discovery and validation
# --------------------------------------------------------------------------------------------
def find_shards(shards) -> list[Path]:
    """A shard path, a folder (searched recursively for ``*.parquet``) or a list of either -> sorted files."""
    items = [shards] if isinstance(shards, (str, os.PathLike)) else list(shards)
    out = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*.parquet") if q.is_file()))
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"parquet shard or folder {str(p)!r} does not exist")
    if not out:
        raise FileNotFoundError(f"no parquet shards found in {[str(i) for i in items]}")
    return sorted(dict.fromkeys(out))


def _check_schema(pf, path: Path, need=("path", "ds", "content")) -> None:
    names = pf.schema_arrow.names
    missing = [c for c in need if c not in names]
    if missing:
        raise UserError(f"parquet shard {str(path)!r}: missing column(s) {missing}; expected columns "
                         f"{list(PARQUET_COLUMNS)}, found {names}")


def _safe_relpath(path: str, shard: Path) -> PurePosixPath:
    rel = PurePosixPath(str(path).replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise UserError(f"parquet shard {str(shard)!r}: row path {path!r} is not a relative path inside the M3LEO root")
    return rel


def _wanted(ds: str, products) -> bool:
    ds = canonical_product(ds)
    return products is None or ds in products or ds.split("-")[0] in products


# --------------------------------------------------------------------------------------------
# the shard index (``<prefix>_splits_..._60-20-20_parquet.csv``)
# --------------------------------------------------------------------------------------------
def shard_file_name(parquet_id: str) -> str:
    """``"a1b2"`` -> ``"a1b2.zstd.parquet"`` (the archive's shard file name)."""
    return f"{parquet_id}.{PARQUET_CODEC}.parquet"


def parquet_identifier(path) -> str:
    """A shard path -> its ``parquet_identifier`` (the file name without ``.zstd.parquet`` / ``.parquet``)."""
    name = PurePosixPath(str(path).replace("\\", "/")).name
    for ext in (f".{PARQUET_CODEC}.parquet", ".parquet"):
        if name.endswith(ext):
            return name[: -len(ext)]
    raise UserError(f"{str(path)!r} is not a parquet shard (expected '<parquet_identifier>.{PARQUET_CODEC}.parquet')")


def read_shard_index(path):
    """The shard index CSV as a DataFrame with string columns ``identifier, split, parquet_identifier`` (+ others).

    Raises ``FileNotFoundError`` when absent, ``ValueError`` naming the file for missing columns or a chip
    listed twice.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"shard index {str(path)!r} does not exist (expected columns "
                                f"{', '.join(SHARD_INDEX_COLUMNS)})")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in ("identifier", "parquet_identifier") if c not in df.columns]
    if missing:
        raise UserError(f"shard index {str(path)!r}: missing column(s) {missing}; expected "
                         f"{list(SHARD_INDEX_COLUMNS)}, found {list(df.columns)}")
    df = df.assign(identifier=df["identifier"].str.strip(), parquet_identifier=df["parquet_identifier"].str.strip())
    dup = df["identifier"][df["identifier"].duplicated()]
    if len(dup):
        raise UserError(f"shard index {str(path)!r}: chip(s) listed twice: {list(dup[:5])}")
    return df.reset_index(drop=True)


def shards_for_chips(index, identifiers) -> list[str]:
    """The sorted ``parquet_identifier`` values holding ``identifiers`` (a shard index DataFrame or its CSV path).

    Raises ``ValueError`` naming chips the index does not list.
    """
    df = read_shard_index(index) if not hasattr(index, "columns") else index
    ids = {str(i) for i in identifiers}
    table = dict(zip(df["identifier"], df["parquet_identifier"]))
    unknown = sorted(ids - set(table))
    if unknown:
        raise UserError(f"shard index lists no shard for {len(unknown)} chip(s) (first: {unknown[:5]})")
    return sorted({table[i] for i in ids})


def shard_index_from_shards(shards):
    """Read the ``path`` column of shards -> DataFrame ``identifier, parquet_identifier`` (one row per chip).

    A chip must sit in shards of the same ``parquet_identifier`` in every dataset (as in the archive);
    otherwise ``ValueError`` names the chip and both shards.
    """
    import pandas as pd
    import pyarrow.parquet as pq

    table: dict[str, tuple[str, str]] = {}
    for f in find_shards(shards):
        pf = pq.ParquetFile(f)
        _check_schema(pf, f, need=("path",))
        pid = parquet_identifier(f)
        for path in pf.read(columns=["path"]).column("path").to_pylist():
            ident = _chip_key(path)[1]
            prev = table.setdefault(ident, (pid, str(f)))
            if prev[0] != pid:
                raise UserError(f"chip {ident!r} is in shard {prev[1]!r} and in shard {str(f)!r} with another "
                                 "parquet_identifier: a shard index needs one shard identifier per chip")
    ids = sorted(table)
    return pd.DataFrame({"identifier": ids, "parquet_identifier": [table[i][0] for i in ids]})


def write_shard_index(split_csv, shards, out_csv) -> Path:
    """Write the archive's shard index: the split CSV's rows plus ``parquet_identifier`` from ``shards``.

    Chips of the split CSV that no shard holds are left out (and so are shards' chips the split CSV does
    not list). Returns ``out_csv``.
    """
    import pandas as pd

    splits = pd.read_csv(split_csv, dtype=str, keep_default_na=False)
    if not {"identifier", "split"} <= set(splits.columns):
        raise UserError(f"split file {str(split_csv)!r}: expected columns identifier,split, found {list(splits.columns)}")
    index = shard_index_from_shards(shards)
    out = splits.assign(identifier=splits["identifier"].str.strip()).merge(index, on="identifier", how="inner")
    cols = ["identifier", "split", "parquet_identifier"] + [c for c in out.columns if c not in SHARD_INDEX_COLUMNS]
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    out[cols].to_csv(out_csv, index=False)
    return out_csv


# --------------------------------------------------------------------------------------------
# unpacking
# --------------------------------------------------------------------------------------------
def unpack_parquet(shards, out_root, products=None, progress: bool = True, batch_size: int = 64,
                   identifiers=None) -> dict:
    """Write the files held in parquet shards to ``<out_root>/<path>``.

    Args:
        shards: shard file(s) or folder(s) (see :func:`find_shards`).
        out_root: M3LEO root folder; row paths start with the AOI folder.
        products: keep only rows whose ``ds`` is one of these products (or families); None keeps all.
        progress: tqdm bar over rows.
        identifiers: keep only these chips (e.g. a subset download's; a shard holds other chips too).
        batch_size: rows read at a time (memory is about ``batch_size`` files).

    Returns:
        counts ``{"written", "skipped_existing", "filtered", "bytes_written", "shards"}``. A file is skipped
        when it already exists with the same size; writes go to a temporary name first, so an interrupted
        run leaves no truncated GeoTIFF behind.
    """
    import pyarrow.parquet as pq
    from tqdm.auto import tqdm

    files = find_shards(shards)
    out_root = Path(out_root)
    want = None if products is None else {canonical_product(str(p)) for p in products}
    keep_ids = None if identifiers is None else {str(i) for i in identifiers}
    counts = {"written": 0, "skipped_existing": 0, "filtered": 0, "bytes_written": 0, "shards": len(files)}
    total = 0
    handles = []
    for f in files:
        pf = pq.ParquetFile(f)
        _check_schema(pf, f)
        handles.append(pf)
        total += pf.metadata.num_rows
    bar = tqdm(total=total, desc="unpack parquet", unit="file", disable=not progress)
    made_dirs: set[Path] = set()
    try:
        for f, pf in zip(files, handles):
            for batch in pf.iter_batches(batch_size=max(1, int(batch_size)), columns=list(PARQUET_COLUMNS)):
                paths = batch.column("path").to_pylist()
                dss = batch.column("ds").to_pylist()
                content = batch.column("content")
                for i, (path, ds) in enumerate(zip(paths, dss)):
                    bar.update(1)
                    if not _wanted(ds, want) or (keep_ids is not None and _chip_key(path)[1] not in keep_ids):
                        counts["filtered"] += 1
                        continue
                    rel = _safe_relpath(path, f)
                    blob = content[i].as_py()
                    if blob is None:
                        raise UserError(f"parquet shard {str(f)!r}: row {path!r} has no content")
                    target = out_root.joinpath(*rel.parts)
                    if target.is_file() and target.stat().st_size == len(blob):
                        counts["skipped_existing"] += 1
                        continue
                    if target.parent not in made_dirs:
                        target.parent.mkdir(parents=True, exist_ok=True)
                        made_dirs.add(target.parent)
                    tmp = target.with_name(target.name + ".part")
                    tmp.write_bytes(blob)
                    tmp.replace(target)
                    counts["written"] += 1
                    counts["bytes_written"] += len(blob)
    finally:
        bar.close()
    return counts


# --------------------------------------------------------------------------------------------
# packing (the same format, from an AOI folder)
# --------------------------------------------------------------------------------------------
def pack_parquet(root, aoi: str, out_dir, products=None, chips_per_shard: int = 256, row_group_size: int = 16,
                 progress: bool = True) -> list[Path]:
    """Write the GeoTIFFs of one AOI as zstd parquet shards (columns ``path``, ``ds``, ``content``).

    Like the M3LEO archive there is one folder per product, ``<out_dir>/<aoi>/<stem>/<product>/``, and
    shard ``part-NNNNN.zstd.parquet`` of every product holds the same chips (sorted identifiers, cut
    every ``chips_per_shard``), ``row_group_size`` rows per row group. Returns the shard files written.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm.auto import tqdm

    from sarssl.data.m3leo import available_products, read_splits

    layout = AOILayout.find(root, aoi)
    have = available_products(layout)
    prods = have if products is None else [p for p in have if _wanted(p, {str(q) for q in products})]
    if not prods:
        raise UserError(f"no product of AOI {aoi!r} matches {products} (products: {have})")
    ids = sorted(read_splits(layout)["identifier"])
    if chips_per_shard < 1 or row_group_size < 1:
        raise UserError("chips_per_shard and row_group_size must be >= 1")
    schema = pa.schema([("path", pa.string()), ("ds", pa.string()), ("content", pa.binary())])
    out = []
    bar = tqdm(total=len(prods) * len(ids), desc=f"pack {aoi}", unit="file", disable=not progress)
    for product in prods:
        folder = Path(out_dir) / aoi / layout.stem / product
        folder.mkdir(parents=True, exist_ok=True)
        for k, s in enumerate(range(0, len(ids), chips_per_shard)):
            rows = {"path": [], "ds": [], "content": []}
            for ident in ids[s:s + chips_per_shard]:
                p = layout.chip_path(product, ident)
                bar.update(1)
                if not p.is_file():
                    continue  # chips missing from a product are missing from its shards too
                rows["path"].append(p.relative_to(layout.root).as_posix())
                rows["ds"].append(product)
                rows["content"].append(p.read_bytes())
            if not rows["path"]:
                continue
            target = folder / f"part-{k:05d}.{PARQUET_CODEC}.parquet"
            pq.write_table(pa.table(rows, schema=schema), target, compression=PARQUET_CODEC,
                           row_group_size=row_group_size)
            out.append(target)
    bar.close()
    return out


# --------------------------------------------------------------------------------------------
# decoding GeoTIFF bytes into the compact record of sarssl.data.m3leo.read_record
# --------------------------------------------------------------------------------------------
def record_from_bytes(blobs: dict[str, bytes], products, modis_year: int | None = None,
                      what: str = "chip") -> dict[str, np.ndarray]:
    """GeoTIFF bytes per product -> the compact record of :func:`sarssl.data.m3leo.read_record`.

    Same checks and resampling as the folder reader (header band count/dtype, nearest-neighbour onto the
    reference grid, S2 median codes), decoded in memory with ``rasterio.MemoryFile``. Raises
    ``ValueError`` naming ``what`` and the product on a bad file.
    """
    from rasterio.io import MemoryFile

    from sarssl.data.m3leo import read_chip_array, reference_product

    ref = reference_product(products)
    order = [ref] + [p for p in products if p != ref]
    out: dict[str, np.ndarray] = {}
    grid = None
    for product in order:
        if product not in blobs:
            raise UserError(f"{what}: product {product!r} missing")
        with MemoryFile(blobs[product]) as mem, mem.open() as src:
            key, out[key], grid = read_chip_array(src, product, grid, f"{what} / {product}", modis_year)
    return out


# --------------------------------------------------------------------------------------------
# streaming dataset
# --------------------------------------------------------------------------------------------
def _chip_key(path: str) -> tuple[str, str]:
    """Row path -> (aoi, identifier): the first folder and the file stem."""
    parts = PurePosixPath(str(path).replace("\\", "/")).parts
    name = parts[-1]
    ident = name[: -len(PurePosixPath(name).suffix)] if PurePosixPath(name).suffix else name
    return parts[0] if len(parts) > 1 else "", ident


def _load_split_table(split_csv) -> dict[tuple[str, str] | str, str]:
    """``split_csv``: a CSV path (identifiers of any AOI), or a mapping aoi -> CSV path. -> key -> split."""
    import pandas as pd

    items = split_csv.items() if isinstance(split_csv, dict) else [(None, split_csv)]
    table: dict = {}
    for aoi, path in items:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"split file {str(path)!r} does not exist (expected columns identifier,split)")
        df = pd.read_csv(path, dtype=str)
        if not {"identifier", "split"} <= set(df.columns):
            raise UserError(f"split file {str(path)!r}: expected columns identifier,split, found {list(df.columns)}")
        for ident, split in zip(df["identifier"].str.strip(), df["split"].str.strip().str.lower()):
            table[(aoi, ident) if aoi is not None else ident] = split
    return table


class M3LEOParquetStream(IterableDataset):
    """Chips read straight from M3LEO parquet shards, as canonical sample dicts (an ``IterableDataset``).

    Args:
        shards: shard file(s) or folder(s); rows of several products (in the same or in separate shards,
            e.g. one folder per product as in the archive) are grouped by ``(aoi, identifier)``.
        products: products per sample, as in ``M3LEODataset`` (default ``ALL_PRODUCTS``; the S1 product gives
            the chip grid and ``s1``).
        split: ``"train"``/``"val"``/``"test"``, a list of them, or None (all chips).
        split_csv: the AOI's split CSV (columns ``identifier,split``) or a dict aoi -> CSV; needed with ``split``.
        normalization: a :class:`sarssl.data.transforms.Normalization`, a JSON path of one, or None (``s1``
            in dB with no-data 0).
        channels: input channel names (default ``INPUT_CHANNELS``).
        shuffle: shuffle the row-group order (same permutation on every rank) and use a shuffle buffer.
        shuffle_buffer: samples held by the buffer (per worker). seed: shuffle seed; with :meth:`set_epoch`
            the order is a function of ``(seed, epoch)`` only.
        rank, world_size: the DDP process; default: from ``torch.distributed`` when initialised, else 0, 1.
        year: MODIS tree-cover year (default: the S1 product's year).
        skip_all_nodata: drop chips whose S1 is all no-data (as the map-style dataset does).

    Work is split by *row group of the reference product's shards*: the global list of row groups
    (optionally permuted by ``(seed, epoch)``) is dealt round-robin to ``world_size * num_workers`` readers,
    reader ``rank * num_workers + worker_id``. Every chip lives in exactly one reference row group, so each
    chip is seen exactly once per epoch across all ranks and workers; a reader with no row group yields
    nothing (use at least as many row groups as readers). Memory per reader: one reference row group plus
    the row groups of the other products that hold its chips (an LRU of ``cache_row_groups``), plus the
    shuffle buffer. Chips missing a product or failing to decode are skipped with a warning naming them.
    """

    def __init__(self, shards, products=None, split=None, split_csv=None, normalization=None,
                 channels=INPUT_CHANNELS, shuffle: bool = False, shuffle_buffer: int = 64, seed: int = 0,
                 rank: int | None = None, world_size: int | None = None, year: int | None = None,
                 skip_all_nodata: bool = True, cache_row_groups: int = 4, progress: bool = False):
        import pyarrow.parquet as pq

        from sarssl.data.m3leo import ALL_PRODUCTS, chip_reading

        self.files = [str(f) for f in find_shards(shards)]
        self.products, self.ref_product, self.channels, self.specs, self.year = chip_reading(
            ALL_PRODUCTS if products is None else products, channels, year)
        self.splits = parse_splits(split)
        if self.splits is not None:
            if split_csv is None:
                raise UserError("split given but no split_csv: pass the AOI's split CSV (columns identifier,split)")
        self.shuffle = bool(shuffle)
        self.shuffle_buffer = max(1, int(shuffle_buffer))
        self.seed = int(seed)
        self.epoch = 0
        self._rank, self._world = rank, world_size
        self.skip_all_nodata = bool(skip_all_nodata)
        self.cache_row_groups = max(1, int(cache_row_groups))
        self.norm = self._resolve_norm(normalization)

        splits = _load_split_table(split_csv) if split_csv is not None else None
        # index: chip -> {product: (file index, row group, row in group)}; only the path/ds columns are read
        index: dict[tuple[str, str], dict[str, tuple[int, int, int]]] = {}
        from tqdm.auto import tqdm

        for fi, f in enumerate(tqdm(self.files, desc="index parquet shards", disable=not progress, leave=False)):
            pf = pq.ParquetFile(f)
            _check_schema(pf, Path(f))
            for rg in range(pf.metadata.num_row_groups):
                t = pf.read_row_group(rg, columns=["path", "ds"])
                for j, (path, ds) in enumerate(zip(t.column("path").to_pylist(), t.column("ds").to_pylist())):
                    ds = canonical_product(ds)  # the archive's s2srm-<year> is the s2rgbm-<year> product
                    if ds not in self.products:
                        continue
                    key = _chip_key(path)
                    if splits is not None:
                        s = splits.get(key, splits.get(key[1]))
                        if s is None or (self.splits is not None and s not in self.splits):
                            continue
                    slot = index.setdefault(key, {})
                    if ds in slot:
                        raise UserError(f"chip {key[1]!r} of AOI {key[0]!r} appears twice for product {ds!r} "
                                         f"(in {self.files[slot[ds][0]]!r} and {f!r})")
                    slot[ds] = (fi, rg, j)
        # units of work: reference row groups, each with the (sorted) chips whose reference row is in it
        units: dict[tuple[int, int], list[tuple[str, str]]] = {}
        self.incomplete: list[str] = []
        for key in sorted(index):
            slot = index[key]
            missing = [p for p in self.products if p not in slot]
            if missing:
                self.incomplete.append(f"{key[0]}/{key[1]}")
                continue
            fi, rg, _ = slot[self.ref_product]
            units.setdefault((fi, rg), []).append(key)
        if self.incomplete:
            warnings.warn(f"parquet stream: {len(self.incomplete)} chip(s) lack a requested product and are skipped "
                          f"(first: {self.incomplete[:3]})", stacklevel=2)
        self.units = sorted(units.items())
        self.index = index
        self.n_chips = sum(len(v) for _, v in self.units)
        if self.n_chips == 0:
            raise UserError(f"no chip with all products {list(self.products)} (split {self.splits}) in "
                             f"{len(self.files)} shard(s)")
        self.skipped: dict[str, list[str]] = {}

    # -- configuration -----------------------------------------------------------------------
    def _resolve_norm(self, normalization):
        from sarssl.data.transforms import Normalization

        if normalization is None:
            return None
        if isinstance(normalization, Normalization):
            norm = normalization
        elif isinstance(normalization, (str, Path)) and Path(normalization).is_file():
            norm = Normalization.load(normalization)
        else:
            raise UserError(f"normalization must be a Normalization, an existing JSON path or None, got "
                             f"{normalization!r} (fit one with M3LEODataset(..., normalization=<path>) first)")
        if tuple(norm.channels) != self.channels:
            raise UserError(f"normalisation channels {list(norm.channels)} do not match the stream's {list(self.channels)}")
        return norm

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch (call before each epoch on every rank): the shuffle depends on ``(seed, epoch)``.

        DataLoader workers get a copy of the dataset when they start, so use ``persistent_workers=False``
        (the default) for the new epoch to reach them.
        """
        self.epoch = int(epoch)

    def _dist(self) -> tuple[int, int]:
        if self._rank is not None or self._world is not None:
            rank, world = int(self._rank or 0), int(self._world or 1)
        else:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                rank, world = dist.get_rank(), dist.get_world_size()
            else:
                rank, world = 0, 1
        if not 0 <= rank < world:
            raise UserError(f"rank {rank} is outside world_size {world}")
        return rank, world

    def __len__(self) -> int:
        """Chips per epoch over all ranks and workers (an upper bound when chips fail to decode)."""
        return self.n_chips

    # -- iteration ---------------------------------------------------------------------------
    def unit_order(self) -> list[int]:
        """Indices into ``self.units`` in this epoch's order (identical on every rank and worker)."""
        n = len(self.units)
        if not self.shuffle:
            return list(range(n))
        return np.random.default_rng([self.seed, self.epoch]).permutation(n).tolist()

    def iter_partition(self, rank: int, world_size: int, worker_id: int = 0, num_workers: int = 1):
        """Samples of reader ``rank * num_workers + worker_id`` of ``world_size * num_workers``."""
        reader, n_readers = rank * num_workers + worker_id, world_size * num_workers
        mine = self.unit_order()[reader::n_readers]
        samples = self._samples(mine)
        if not self.shuffle:
            yield from samples
            return
        rng = np.random.default_rng([self.seed, self.epoch, reader, 1])
        buf: list = []
        for s in samples:
            if len(buf) < self.shuffle_buffer:
                buf.append(s)
                continue
            j = int(rng.integers(len(buf)))
            buf[j], s = s, buf[j]
            yield s
        rng.shuffle(buf)
        yield from buf

    def __iter__(self):
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        rank, world = self._dist()
        return self.iter_partition(rank, world, wid, nw)

    def _samples(self, unit_ids):
        import pyarrow.parquet as pq

        from sarssl.data.datasets import record_to_sample

        handles: dict[int, object] = {}
        cache: OrderedDict = OrderedDict()

        def row_group(fi: int, rg: int):
            k = (fi, rg)
            if k in cache:
                cache.move_to_end(k)
                return cache[k]
            if fi not in handles:
                handles[fi] = pq.ParquetFile(self.files[fi])
            col = handles[fi].read_row_group(rg, columns=["content"]).column("content")
            cache[k] = col
            while len(cache) > self.cache_row_groups:
                cache.popitem(last=False)
            return col

        for u in unit_ids:
            _, keys = self.units[u]
            for aoi, ident in keys:
                slot = self.index[(aoi, ident)]
                what = f"chip {ident!r} of AOI {aoi!r}"
                try:
                    blobs = {}
                    for p in self.products:
                        fi, rg, j = slot[p]
                        blobs[p] = row_group(fi, rg)[j].as_py()
                    rec = record_from_bytes(blobs, self.products, self.year, what=what)
                except Exception as e:  # noqa: BLE001 - a bad tile is skipped and counted, never replaced
                    warnings.warn(f"parquet stream: skipping {what} (corrupt): {e}", stacklevel=2)
                    self.skipped.setdefault("corrupt", []).append(f"{aoi}/{ident}")
                    continue
                if self.skip_all_nodata and "s1" in rec and not rec["s1"].any():
                    self.skipped.setdefault("all_nodata", []).append(f"{aoi}/{ident}")
                    continue
                sample = record_to_sample(rec, self.specs, self.norm)
                sample["id"] = ident
                sample["aoi"] = aoi
                yield sample

