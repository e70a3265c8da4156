"""The M3LEO folder layout and the study's geographic stripe splits.

An area of interest (AOI) lives under ``<root>/<aoi>/``::

    <aoi>_partitions_aschips_<hash>.geojson                                   chip polygons (property ``identifier``)
    <aoi>_partitions_aschips_<hash>_splits_60bands_angle<XX>_60-20-20.csv     columns ``identifier,split``
    <aoi>_partitions_aschips_<hash>/<product>/<identifier>.tif                one GeoTIFF per chip and product

Splits are geographic stripes: the AOI is cut into 60 parallel bands at an angle, and the bands
repeat ``train, train, train, test, val``, which gives the 60-20-20 proportions while keeping
neighbouring chips in the same split.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
            raise ValueError(f"unknown split {s!r}: expected one of {list(SPLITS)} or None")
    return splits

_SPLIT_RE = re.compile(r"^(?P<stem>.+_partitions_aschips_(?P<hash>[0-9a-zA-Z]+))_splits_(?P<n>\d+)bands_angle(?P<angle>\d+)_60-20-20\.csv$")


@dataclass(frozen=True)
class AOILayout:
    """Paths of one AOI in the M3LEO layout."""

    root: Path
    aoi: str
    chips_hash: str
    angle: int = 0
    n_stripes: int = N_STRIPES

    @property
    def aoi_dir(self) -> Path:
        return Path(self.root) / self.aoi

    @property
    def stem(self) -> str:
        return f"{self.aoi}_partitions_aschips_{self.chips_hash}"

    @property
    def chips_dir(self) -> Path:
        return self.aoi_dir / self.stem

    @property
    def geojson(self) -> Path:
        return self.aoi_dir / f"{self.stem}.geojson"

    @property
    def split_csv(self) -> Path:
        return self.aoi_dir / f"{self.stem}_splits_{self.n_stripes}bands_angle{self.angle:02d}_60-20-20.csv"

    def product_dir(self, product: str) -> Path:
        return self.chips_dir / product

    def chip_path(self, product: str, identifier: str) -> Path:
        return self.product_dir(product) / f"{identifier}.tif"

    @classmethod
    def find(cls, root: str | Path, aoi: str) -> "AOILayout":
        """Locate an AOI under ``root`` from its split CSV; clear errors when the layout is not there."""
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"M3LEO root {str(root)!r} is not a directory")
        aoi_dir = root / aoi
        if not aoi_dir.is_dir():
            found = sorted(p.name for p in root.iterdir() if p.is_dir())
            raise FileNotFoundError(f"AOI folder {str(aoi_dir)!r} does not exist (AOIs under {str(root)!r}: {found or 'none'})")
        matches = [m for p in sorted(aoi_dir.glob("*.csv")) if (m := _SPLIT_RE.match(p.name))]
        if not matches:
            raise FileNotFoundError(
                f"no split file in {str(aoi_dir)!r}: expected "
                f"'{aoi}_partitions_aschips_<hash>_splits_60bands_angleXX_60-20-20.csv'"
            )
        m = matches[0]
        return cls(root=root, aoi=aoi, chips_hash=m["hash"], angle=int(m["angle"]), n_stripes=int(m["n"]))


def list_aois(root: str | Path) -> list[str]:
    """Names of the AOI folders under ``root`` that hold a split file."""
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
