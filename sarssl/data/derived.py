"""AOIs derived from other data (converted GeoTIFF folders, resized chips): keyed, written once, moved into place.

A derived AOI folder holds a small JSON record (its maker's report with a ``key`` of what it was made from).
:func:`saved_record` returns that record when its key matches, so the same input is reused;
:func:`publish` writes the record into a finished temporary folder and moves the folder into place,
replacing an older one, so a reader never sees a half-written AOI.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

__all__ = ["saved_record", "publish"]


def saved_record(aoi_dir: str | Path, name: str, key: str) -> dict | None:
    """The record ``aoi_dir/name`` when it exists and was made for ``key``, else None."""
    path = Path(aoi_dir) / name
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError:  # a damaged record: made again
        return None
    return record if record.get("key") == key else None


def publish(tmp_aoi_dir: str | Path, target: str | Path, name: str, record: dict) -> None:
    """Write ``record`` as ``tmp_aoi_dir/name`` and move ``tmp_aoi_dir`` to ``target`` (replacing it)."""
    tmp_aoi_dir, target = Path(tmp_aoi_dir), Path(target)
    (tmp_aoi_dir / name).write_text(json.dumps(record, indent=1))
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp_aoi_dir, target)
