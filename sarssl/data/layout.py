"""The M3LEO folder layout and the study's geographic stripe splits.

An area of interest (AOI) lives under ``<root>/<aoi>/``::

    <prefix>.geojson                                          chip polygons (property ``identifier``)
    <prefix>_splits_60bands_angle<XX>_60-20-20.csv            columns ``identifier,split`` (+ ``original_index``)
    <prefix>/<product>/<identifier>.tif                       one GeoTIFF per chip and product

with ``<prefix> = <aoi>_partitions_aschips_<hash>``. The names are read exactly as M3LEO publishes
them, no renaming needed:

- the GeoTIFF miniset (``M3LEO-miniset/<aoi>``) adds a ``_miniset`` suffix to the geojson and the split
  CSV (``<prefix>_miniset.geojson``, ``<prefix>_splits_..._60-20-20_miniset.csv``);
- the parquet archive (``M3LEO/<aoi>``) has the split CSV plus a *shard index*
  ``<prefix>_splits_..._60-20-20_parquet.csv`` (column ``parquet_identifier`` naming each chip's shard);
  the shard index is not a second split file, and serves as the split file when it is the only one.

Product folders are listed as they are: the ones sarssl decodes (:data:`sarssl.data.products.PRODUCT_FAMILIES`)
and any other (``gssic``, ``gunw_<start>_<end>``, ``srtmdem``, ...), see :meth:`AOILayout.product_folders`.
Some published names differ between the miniset, the archive and the dataset cards (``s2srm`` for
``s2rgbm``, ``gunw-`` for ``gunw_``, ``strmdem`` for ``srtmdem``): :func:`canonical_product` maps them.

Splits are geographic stripes: the AOI is cut into 60 parallel bands at an angle, and the bands
repeat ``train, train, train, test, val``, which gives the 60-20-20 proportions while keeping
neighbouring chips in the same split.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sarssl.errors import UserError

STRIPE_PATTERN = ("train", "train", "train", "test", "val")
N_STRIPES = 60
SPLITS = ("train", "val", "test")


def parse_splits(split) -> list[str] | None:
    """A split name or a list of them -> a checked list; ``None`` stays ``None`` (the caller's default)."""
    if split is None:
        return None
    splits = [split] if isinstance(split, str) else list(split)
    for s in splits:
        if s not in SPLITS:
            raise UserError(f"unknown split {s!r}: expected one of {list(SPLITS)} or None")
    return splits


def check_unique_aois(aois) -> list[str]:
    """``aois`` as a list; an AOI given more than once is refused naming it (it would double the data)."""
    aois = [aois] if isinstance(aois, str) else list(aois)
    seen, repeated = set(), []
    for a in aois:
        if a in seen and a not in repeated:
            repeated.append(a)
        seen.add(a)
    if repeated:
        names = ", ".join(repr(a) for a in repeated)
        raise UserError(f"AOI {names} given more than once (AOIs: {aois}): each AOI counts once; "
                        "remove the repeated --aoi")
    return aois

_SPLIT_RE = re.compile(r"^(?P<stem>(?P<aoi>.+)_partitions_aschips_(?P<hash>[0-9a-zA-Z]+))_splits_(?P<n>\d+)bands"
                       r"_angle(?P<angle>\d+)_60-20-20(?P<suffix>_miniset|_parquet)?\.csv$")
#: split file names as published: groups ``stem`` (the prefix), ``aoi``, ``hash``, ``n``, ``angle``, ``suffix``
SPLIT_FILE_RE = _SPLIT_RE
#: suffix of the parquet archive's shard index (``<prefix>_splits_..._60-20-20_parquet.csv``)
SHARD_INDEX_SUFFIX = "_parquet"
#: suffix of the GeoTIFF miniset's metadata names
MINISET_SUFFIX = "_miniset"

#: published spellings -> the name sarssl reads (prefix replacements, applied to the product's start)
PRODUCT_ALIASES = (("s2srm", "s2rgbm"), ("strmdem", "srtmdem"), ("gunw-", "gunw_"))


def canonical_product(name: str) -> str:
    """A product or dataset name as published anywhere -> the name sarssl uses.

    ``"s2srm-2020"`` (the archive's dataset name) -> ``"s2rgbm-2020"``; ``"strmdem"`` -> ``"srtmdem"``;
    ``"gunw-2020-01-01_2020-03-31"`` -> ``"gunw_2020-01-01_2020-03-31"``; other names are unchanged.
    """
    for old, new in PRODUCT_ALIASES:
        if name.startswith(old):
            return new + name[len(old):]
    return name


def product_family_name(name: str) -> str:
    """The family of any product name, known or not: ``"s1grd-2020"`` -> ``"s1grd"``, ``"gunw_2020-..."`` -> ``"gunw"``."""
    return re.split(r"[-_]", canonical_product(name), maxsplit=1)[0]


class SplitFileError(UserError):
    """An AOI folder with no split file, or with two of them (the message names both)."""


def split_files(aoi_dir: str | Path) -> tuple[list[Path], list[Path]]:
    """``(split files, shard indexes)`` directly in ``aoi_dir`` (published names, any suffix), sorted."""
    splits, indexes = [], []
    for p in sorted(Path(aoi_dir).glob("*.csv")):
        m = _SPLIT_RE.match(p.name)
        if m and p.is_file():
            (indexes if m["suffix"] == SHARD_INDEX_SUFFIX else splits).append(p)
    return splits, indexes


def _pick_split_file(aoi_dir: Path) -> tuple[Path, Path | None]:
    """The AOI's one split file and its shard index (or None); raises :class:`SplitFileError`."""
    splits, indexes = split_files(aoi_dir)
    if len(splits) > 1:
        # a canonical copy of a published file (older ``sarssl data download``) is the same split file
        first = splits[0].read_bytes()
        if any(p.read_bytes() != first for p in splits[1:]):
            names = " and ".join(repr(p.name) for p in splits)
            raise SplitFileError(f"AOI folder {str(aoi_dir)!r} holds more than one split file: {names}; "
                                 "keep one of them (move the others out of the folder)")
        plain = [p for p in splits if _SPLIT_RE.match(p.name)["suffix"] is None]
        splits = plain[:1] or splits[:1]
    if len(indexes) > 1:
        names = " and ".join(repr(p.name) for p in indexes)
        raise SplitFileError(f"AOI folder {str(aoi_dir)!r} holds more than one parquet shard index: {names}")
    if splits:
        split = splits[0]
        index = indexes[0] if indexes else None
        if index is not None and _SPLIT_RE.match(index.name)["stem"] != _SPLIT_RE.match(split.name)["stem"]:
            raise SplitFileError(f"AOI folder {str(aoi_dir)!r}: split file {split.name!r} and shard index "
                                 f"{index.name!r} name different chip sets")
        return split, index
    if indexes:
        return indexes[0], indexes[0]
    raise SplitFileError(
        f"no split file in {str(aoi_dir)!r}: expected '<aoi>_partitions_aschips_<hash>_splits_60bands_angleXX_60-20-20.csv' "
        "(or the published '..._60-20-20_miniset.csv' / '..._60-20-20_parquet.csv')")


@dataclass(frozen=True)
class AOILayout:
    """Paths of one AOI in the M3LEO layout.

    ``prefix`` (default ``<aoi>_partitions_aschips_<chips_hash>``), ``split_name``, ``geojson_name`` and
    ``shard_index_name`` hold the file names found on disk (:meth:`find` fills them in, so published names
    with a ``_miniset`` suffix are read as they are); when left ``None`` the canonical names are used,
    which is what the simulator writes.
    """

    root: Path
    aoi: str
    chips_hash: str
    angle: int = 0
    n_stripes: int = N_STRIPES
    prefix: str | None = None
    split_name: str | None = None
    geojson_name: str | None = None
    shard_index_name: str | None = None

    @property
    def aoi_dir(self) -> Path:
        return Path(self.root) / self.aoi

    @property
    def stem(self) -> str:
        return self.prefix or f"{self.aoi}_partitions_aschips_{self.chips_hash}"

    @property
    def chips_dir(self) -> Path:
        return self.aoi_dir / self.stem

    @property
    def geojson(self) -> Path:
        return self.aoi_dir / (self.geojson_name or f"{self.stem}.geojson")

    @property
    def split_csv(self) -> Path:
        return self.aoi_dir / (self.split_name or
                               f"{self.stem}_splits_{self.n_stripes}bands_angle{self.angle:02d}_60-20-20.csv")

    @property
    def shard_index(self) -> Path | None:
        """The parquet archive's ``..._parquet.csv`` (chip -> ``parquet_identifier``), or None."""
        return self.aoi_dir / self.shard_index_name if self.shard_index_name else None

    def product_dir(self, product: str) -> Path:
        return self.chips_dir / product

    def chip_path(self, product: str, identifier: str) -> Path:
        return self.product_dir(product) / f"{identifier}.tif"

    def product_folders(self) -> list[str]:
        """Every product folder under ``chips_dir`` as it is named on disk, known to sarssl or not (sorted)."""
        if not self.chips_dir.is_dir():
            return []
        return sorted(p.name for p in self.chips_dir.iterdir() if p.is_dir() and not p.name.startswith("."))

    def unknown_products(self) -> list[str]:
        """Product folders sarssl does not decode (``gssic``, ``gunw_*``, ``srtmdem``...): listed, never an error."""
        from sarssl.data.products import PRODUCT_FAMILIES

        return [p for p in self.product_folders() if p.split("-")[0] not in PRODUCT_FAMILIES]

    @classmethod
    def find(cls, root: str | Path, aoi: str) -> "AOILayout":
        """Locate an AOI under ``root`` from its split CSV; clear errors when the layout is not there.

        Published names are accepted as they are (``_miniset`` split CSV and geojson, the archive's
        ``_parquet`` shard index). Two different split files in one AOI folder raise
        :class:`SplitFileError` naming both.
        """
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"M3LEO root {str(root)!r} is not a directory")
        aoi_dir = root / aoi
        if not aoi_dir.is_dir():
            found = sorted(p.name for p in root.iterdir() if p.is_dir())
            raise FileNotFoundError(f"AOI folder {str(aoi_dir)!r} does not exist (AOIs under {str(root)!r}: {found or 'none'})")
        try:
            split, index = _pick_split_file(aoi_dir)
        except SplitFileError as e:
            if "no split file" in str(e):
                raise FileNotFoundError(str(e)) from None
            raise
        m = _SPLIT_RE.match(split.name)
        stem = m["stem"]
        geojson = None
        for suffix in (m["suffix"] or "", "", MINISET_SUFFIX):
            if (aoi_dir / f"{stem}{suffix}.geojson").is_file():
                geojson = f"{stem}{suffix}.geojson"
                break
        return cls(root=root, aoi=aoi, chips_hash=m["hash"], angle=int(m["angle"]), n_stripes=int(m["n"]),
                   prefix=stem, split_name=split.name, geojson_name=geojson,
                   shard_index_name=index.name if index is not None else None)


def list_aois(root: str | Path) -> list[str]:
    """Names of the AOI folders under ``root`` that hold a split file (published names included)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"M3LEO root {str(root)!r} is not a directory")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and any(_SPLIT_RE.match(c.name) for c in p.glob("*.csv")))


#: Simulated regions: each stripe at least this many chips wide across the stripes.
MIN_STRIPE_CHIPS = 3


def chip_width_across(angle_deg: float, chip_extent: float = 1.0) -> float:
    """Width of one square chip measured across stripes at ``angle_deg``: ``extent (|sin| + |cos|)``."""
    theta = np.deg2rad(angle_deg)
    return float(chip_extent * (abs(np.sin(theta)) + abs(np.cos(theta))))


def _across(x, y, angle_deg):
    theta = np.deg2rad(angle_deg)
    return -np.asarray(x, dtype=np.float64) * np.sin(theta) + np.asarray(y, dtype=np.float64) * np.cos(theta)


def stripe_count(x: np.ndarray, y: np.ndarray, angle_deg: float, chip_extent: float,
                 min_chips: float = MIN_STRIPE_CHIPS) -> int:
    """Number of stripes for a simulated region: the study's method with stripes that do not leak.

    The count follows from the region's extent: the largest multiple of 5 (so the pattern
    ``train, train, train, test, val`` repeats whole and keeps 60-20-20) whose stripes are each at
    least ``min_chips`` chips wide, a chip's width being measured across the stripes
    (:func:`chip_width_across`). Then a test chip touches a train chip only within about one chip
    width of the one train stripe beside it, at most about a third of the test chips. Never fewer than 5
    stripes (every split present), so a region narrower than ``5 * min_chips`` chips gets narrower ones.

    Args:
        x, y: chip centre coordinates (same unit as ``chip_extent``), shape ``(N,)``.
        angle_deg: direction of the stripes (degrees from the x axis), as in :func:`stripe_splits`.
        chip_extent: side of a (square) chip.
    """
    d = _across(x, y, angle_deg)
    span = float(d.max() - d.min()) if d.size else 0.0
    width = min_chips * chip_width_across(angle_deg, chip_extent)
    return 5 * max(1, int(span / (5 * width) + 1e-9))


def stripe_splits(x: np.ndarray, y: np.ndarray, angle_deg: float, n_stripes: int = N_STRIPES) -> np.ndarray:
    """Assign chips to train/val/test by geographic stripes.

    Args:
        x, y: chip centre coordinates (any linear unit), shape ``(N,)``.
        angle_deg: direction of the stripes in degrees from the x axis (0 = stripes run east-west).
        n_stripes: number of parallel bands the AOI extent is cut into (60 in M3LEO; simulated
            regions use :func:`stripe_count`).

    Returns:
        ``(N,)`` array of split names following ``STRIPE_PATTERN`` per band.
    """
    # distance across the stripes: project on the stripes' normal
    d = _across(x, y, angle_deg)
    lo, hi = d.min(), d.max()
    span = max(hi - lo, 1e-9)
    band = np.minimum(((d - lo) / span * n_stripes).astype(int), n_stripes - 1)
    return np.asarray(STRIPE_PATTERN)[band % len(STRIPE_PATTERN)]
