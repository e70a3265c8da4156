"""Evidence: 95 % intervals, paired comparisons, one rule for "better", and label savings.

Every verdict the book states goes through this module, so that a difference smaller than its
uncertainty is never called a win. Pure numpy (layer 0): the sweep, the analysis code and the
chapters all use it.

- :func:`bootstrap_ci`: a statistic over independent units (chips, tiles) with a percentile
  bootstrap interval.
- :func:`seed_interval`: the mean over seeds with a Student-t interval (the seed spread).
- :func:`paired_difference`: mean of ``a - b`` over the same units, with a paired bootstrap interval.
- :func:`compare`: the rule. ``a`` is better than ``b`` when their 95 % intervals are separated in the
  right direction, or when the paired interval of the difference excludes 0 in that direction.
  Anything else is a tie, and a tie never reads "holds".
- :func:`label_saving`: how many times fewer labelled tiles a method needs than a control to reach the
  same score: crossings interpolated in log(tiles), with a bootstrap interval over seeds.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

LEVEL = 0.95  # every interval in the book


@dataclass(frozen=True)
class Estimate:
    """A value with its 95 % interval; ``n`` is the number of units (chips, tiles or seeds) behind it."""

    value: float
    low: float
    high: float
    n: int
    method: str = "bootstrap"

    @property
    def ci(self) -> tuple[float, float]:
        return (self.low, self.high)

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.value:.4g} [{self.low:.4g}, {self.high:.4g}]"


def _finite(values, what: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 0:
        x = x[None]
    x = x[np.isfinite(x)] if x.ndim == 1 else x
    if x.shape[0] == 0:
        raise ValueError(f"{what}: no finite values to estimate from")
    return x


def bootstrap_ci(values, statistic: Callable[[np.ndarray], float] = np.mean, n_boot: int = 2000,
                 level: float = LEVEL, seed: int = 0) -> Estimate:
    """``statistic(values)`` with a percentile bootstrap interval, resampling rows (the units).

    Args:
        values: shape ``(n,)`` or ``(n, ...)``: one row per independent unit (a chip, a tile). NaN rows
            of a 1-D input are dropped (no-data units carry no evidence).
        statistic: maps an array of rows to a float (default the mean).
    """
    x = _finite(values, "bootstrap_ci")
    n = x.shape[0]
    point = float(statistic(x))
    if n == 1:
        return Estimate(point, point, point, 1, "single unit: no interval")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    boots = np.array([statistic(x[i]) for i in idx], dtype=np.float64)
    a = (1 - level) / 2
    low, high = np.quantile(boots, [a, 1 - a])
    return Estimate(point, float(low), float(high), n, "bootstrap")


def seed_interval(values, level: float = LEVEL) -> Estimate:
    """Mean over seeds (or any few repeats) with a Student-t interval: the seed spread."""
    from scipy import stats

    x = _finite(values, "seed_interval")
    n, mean = x.size, float(x.mean())
    if n == 1:
        return Estimate(mean, mean, mean, 1, "single seed: no interval")
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return Estimate(mean, mean - half, mean + half, n, "t over seeds")


def binomial_ci(successes: int, n: int, level: float = LEVEL) -> Estimate:
    """A proportion with its Wilson score interval (accuracy over ``n`` independent chips)."""
    from scipy import stats

    if n <= 0:
        raise ValueError("binomial_ci: n must be positive")
    if not 0 <= successes <= n:
        raise ValueError(f"binomial_ci: successes must be in 0..{n}, got {successes}")
    z = float(stats.norm.ppf(0.5 + level / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Estimate(p, max(0.0, centre - half), min(1.0, centre + half), n, "Wilson")


def paired_difference(a, b, statistic: Callable[[np.ndarray], float] = np.mean, n_boot: int = 2000,
                      level: float = LEVEL, seed: int = 0) -> Estimate:
    """``statistic(a - b)`` over the same units, with a paired bootstrap interval.

    Args:
        a, b: shape ``(n,)``, one value per unit for each of the two compared methods (same order).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired_difference: a and b must hold the same units, got shapes {a.shape} and {b.shape}")
    return bootstrap_ci(a - b, statistic, n_boot=n_boot, level=level, seed=seed)


@dataclass(frozen=True)
class Verdict:
    """The outcome of :func:`compare`: ``better``, ``worse`` or ``tie``; ``holds`` only for ``better``."""

    outcome: str
    reason: str

    @property
    def holds(self) -> bool:
        return self.outcome == "better"

    def __str__(self) -> str:
        return f"{self.outcome} ({self.reason})"


def compare(a: Estimate, b: Estimate, higher_is_better: bool, paired: Estimate | None = None) -> Verdict:
    """Is ``a`` better than ``b``? The book's one rule.

    ``better``: the intervals are separated with ``a`` on the good side, or ``paired`` (the interval of
    ``a - b`` over the same units) excludes 0 on the good side. ``worse``: the same with the roles swapped.
    ``tie`` otherwise.
    """
    sign = 1.0 if higher_is_better else -1.0

    def ahead(x: Estimate, y: Estimate) -> bool:
        return (x.low > y.high) if higher_is_better else (x.high < y.low)

    if ahead(a, b):
        return Verdict("better", f"95 % intervals separated: {a} vs {b}")
    if ahead(b, a):
        return Verdict("worse", f"95 % intervals separated: {a} vs {b}")
    if paired is not None:
        if paired.low > 0 or paired.high < 0:  # the paired interval excludes 0
            good = (sign * paired.value) > 0
            return Verdict("better" if good else "worse", f"paired difference {paired} excludes 0")
        return Verdict("tie", f"intervals overlap ({a} vs {b}) and the paired difference {paired} includes 0")
    return Verdict("tie", f"95 % intervals overlap: {a} vs {b}")


# ------------------------------------------------------------------------------------------------
# label savings
# ------------------------------------------------------------------------------------------------
def tiles_to_reach(tiles: Sequence[float], scores: Sequence[float], target: float, higher_is_better: bool) -> float:
    """Labelled tiles a curve needs to reach ``target``, interpolated linearly in log(tiles).

    ``tiles`` increasing; returns the first crossing. ``0 < result < tiles[0]`` is never returned:
    a curve already past ``target`` at its first point returns ``tiles[0]`` (a lower bound on the
    saving, see :func:`label_saving`); a curve that never reaches it returns ``inf``.
    """
    t = np.asarray(tiles, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if t.ndim != 1 or t.shape != s.shape or t.size < 1:
        raise ValueError("tiles_to_reach: tiles and scores must be 1-D of the same length")
    if np.any(np.diff(t) <= 0) or np.any(t <= 0):
        raise ValueError(f"tiles_to_reach: tiles must be positive and increasing, got {t.tolist()}")
    good = s >= target if higher_is_better else s <= target
    if not good.any():
        return math.inf
    k = int(np.argmax(good))
    if k == 0:
        return float(t[0])
    lt0, lt1, s0, s1 = math.log(t[k - 1]), math.log(t[k]), s[k - 1], s[k]
    frac = (target - s0) / (s1 - s0) if s1 != s0 else 1.0
    if frac >= 1.0:  # reached exactly at a measured point: no round-off through log/exp
        return float(t[k])
    return float(math.exp(lt0 + frac * (lt1 - lt0)))


@dataclass(frozen=True)
class Saving:
    """``value`` = control tiles / method tiles to reach ``target``, with a bootstrap interval over seeds.

    ``censored`` is True when the method already reaches the target at its smallest label count: the
    saving is then at least ``value``.
    """

    value: float
    low: float
    high: float
    target: float
    method_tiles: float
    control_tiles: float
    censored: bool
    n_boot: int

    @property
    def ci(self) -> tuple[float, float]:
        return (self.low, self.high)


def _curve(table: Mapping[float, Sequence[float]], pick=None) -> tuple[np.ndarray, np.ndarray]:
    tiles = np.array(sorted(table), dtype=np.float64)
    if pick is None:
        scores = np.array([np.nanmean(table[t]) for t in sorted(table)])
    else:
        scores = np.array([np.nanmean(np.asarray(table[t], dtype=np.float64)[pick[i]])
                           for i, t in enumerate(sorted(table))])
    return tiles, scores


def label_saving(method: Mapping[float, Sequence[float]], control: Mapping[float, Sequence[float]],
                 higher_is_better: bool, target: float | None = None, n_boot: int = 1000, level: float = LEVEL,
                 seed: int = 0) -> Saving:
    """How many times fewer labelled tiles ``method`` needs than ``control`` to reach the same score.

    Args:
        method, control: labelled tiles -> scores over seeds (one list per label count).
        target: the score to reach; default the control's mean score at its largest label count (the
            control trained with every label).

    The crossing of each mean curve with ``target`` is interpolated in log(tiles). The interval
    resamples seeds within each label count (both curves) and recomputes the saving, ``target``
    included when it is the default.
    """
    def one(pm=None, pc=None) -> tuple[float, float, float, float]:
        tm, sm = _curve(method, pm)
        tc, sc = _curve(control, pc)
        tgt = float(sc[-1]) if target is None else float(target)
        nm = tiles_to_reach(tm, sm, tgt, higher_is_better)
        nc = tiles_to_reach(tc, sc, tgt, higher_is_better)
        return (nc / nm if math.isfinite(nm) else 0.0), tgt, nm, nc

    value, tgt, nm, nc = one()
    rng = np.random.default_rng(seed)

    def draw(table):
        return [rng.integers(0, len(table[t]), len(table[t])) for t in sorted(table)]

    boots = np.array([one(draw(method), draw(control))[0] for _ in range(n_boot)])
    boots = boots[np.isfinite(boots)]
    a = (1 - level) / 2
    low, high = (np.quantile(boots, [a, 1 - a]) if boots.size else (math.nan, math.nan))
    censored = math.isfinite(nm) and nm == float(min(method))
    return Saving(float(value), float(low), float(high), tgt, nm, nc, censored, n_boot)
