"""Content fingerprints of M3LEO data: what run identities and cache keys are made of.

Two kinds, both cheap:

- :func:`split_digest`: a hash of an AOI's split file (its name and bytes; the name carries the chip
  hash of the layout). Split files are small, so they are read whole. Run identities
  (:func:`sarssl.train.pretrain.run_identity`) and sweep fingerprints use it: a different region,
  another simulation seed or another chip subset has another split file.
- :func:`chip_files_digest`: a hash of the size, modification and change times (nanoseconds) and inode of
  each chip file of the products read, from ``stat`` calls only (no file is read). The change time and the
  inode catch what a restored modification time hides (``touch -d``, ``rsync -a``, a file moved into place). The packed cache and the normalisation
  file are keyed by it, so a chip rewritten in place (zeroed, repaired, re-simulated) changes the key and
  what was derived from it is rebuilt. A missing file hashes as missing.

:data:`DECODER_VERSION` is part of every cache key: bump it when :func:`sarssl.data.m3leo.read_record` or
the decoders in :mod:`sarssl.data.products` change what a chip file decodes to.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable

from sarssl.data.layout import AOILayout

__all__ = ["DECODER_VERSION", "split_digest", "chip_files_digest", "data_fingerprint", "short_hash"]

#: version of the chip decoding (records and decoders); part of the packed cache and normalisation keys
DECODER_VERSION = 1


def short_hash(text: str | bytes, n: int = 16) -> str:
    """The first ``n`` hex digits of the SHA-1 of ``text``."""
    return hashlib.sha1(text if isinstance(text, bytes) else text.encode()).hexdigest()[:n]


def split_digest(layout: AOILayout) -> str:
    """Hash of the AOI's split file: its name and its bytes (and the shard index's, when there is one)."""
    paths = [layout.split_csv]
    if layout.shard_index is not None and layout.shard_index != layout.split_csv:
        paths.append(layout.shard_index)
    h = hashlib.sha1()
    for path in paths:
        h.update(path.name.encode() + b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:16]


def chip_files_digest(layout: AOILayout, products: Iterable[str], ids: Iterable[str]) -> str:
    """Hash of ``(product, id, size, mtime_ns, ctime_ns, inode)`` of every chip file of ``products`` x ``ids``
    (``stat`` only).

    Sorted by product and id, so the order of the arguments does not matter; a missing file counts as
    missing (so it appearing later changes the digest too).
    """
    h = hashlib.sha1()
    for product in sorted(set(products)):
        folder = layout.product_dir(product)
        h.update(product.encode() + b"\0")
        for ident in sorted(set(ids)):
            try:
                st = os.stat(folder / f"{ident}.tif")
                entry = f"{ident}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}\n"
            except FileNotFoundError:
                entry = f"{ident}:missing\n"
            h.update(entry.encode())
    return h.hexdigest()[:16]


def data_fingerprint(root: str | Path, aois: Iterable[str]) -> dict[str, str]:
    """AOI -> :func:`split_digest` for the AOIs under ``root`` (the data part of a run's identity)."""
    return {aoi: split_digest(AOILayout.find(root, aoi)) for aoi in aois}
