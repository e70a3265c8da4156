"""The book's quantitative verdicts, recorded where they are computed and collected by ``sarssl book``.

A chapter calls :func:`record_claim` with the value, its 95 % interval and its control. The call
returns the :class:`Claim` and, inside a notebook, displays it as a small table whose raw JSON rides
along under the MIME type :data:`CLAIM_MIME`. ``sarssl book`` reads those outputs back from the
executed notebooks (:func:`claims_from_notebook`), writes them all to ``_build/claims.json`` and renders
the page "The study's claims and this build" (:func:`claims_page`). Nothing is typed in by hand: a
claim exists only if a chapter computed it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from sarssl.evidence import Estimate, compare

CLAIM_MIME = "application/vnd.sarssl.claim+json"
FIELDS = ("id", "chapter", "statement", "metric", "higher_is_better", "value", "ci", "control", "control_value",
          "control_ci", "study")


@dataclass(frozen=True)
class Claim:
    """One verdict: this build's ``value`` and ``ci`` against ``control`` (its value and interval).

    ``verdict`` is derived with :func:`sarssl.evidence.compare`: ``holds`` only when the intervals say so.
    """

    id: str
    chapter: str
    statement: str
    metric: str
    higher_is_better: bool
    value: float
    ci: tuple[float, float]
    control: str
    control_value: float
    control_ci: tuple[float, float]
    study: str
    paired_ci: tuple[float, float] | None = None  # interval of value - control over the same units, if paired

    @property
    def verdict(self) -> str:
        a = Estimate(self.value, *self.ci, n=0)
        b = Estimate(self.control_value, *self.control_ci, n=0)
        paired = None if self.paired_ci is None else Estimate(self.value - self.control_value, *self.paired_ci, n=0)
        outcome = compare(a, b, self.higher_is_better, paired=paired).outcome
        return {"better": "holds", "worse": "reversed", "tie": "not shown (intervals overlap)"}[outcome]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ci"], d["control_ci"] = list(self.ci), list(self.control_ci)
        if self.paired_ci is not None:
            d["paired_ci"] = list(self.paired_ci)
        d["verdict"] = self.verdict
        return d

    def _repr_html_(self) -> str:
        fmt = _fmt
        return (f"<table><tr><th>claim</th><th>this build</th><th>{self.control}</th><th>verdict</th></tr>"
                f"<tr><td>{self.statement}</td><td>{fmt(self.value, self.ci)}</td>"
                f"<td>{fmt(self.control_value, self.control_ci)}</td><td>{self.verdict}</td></tr></table>")

    def _repr_mimebundle_(self, include=None, exclude=None):
        return {CLAIM_MIME: self.to_dict(), "text/html": self._repr_html_(),
                "text/plain": f"{self.id}: {_fmt(self.value, self.ci)} vs {self.control} "
                              f"{_fmt(self.control_value, self.control_ci)} -> {self.verdict}"}


def _fmt(value: float, ci) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.3g} [{ci[0]:.3g}, {ci[1]:.3g}]"


def _pair(x, what: str) -> tuple[float, float]:
    lo, hi = (float(v) for v in x)
    if not (math.isnan(lo) and math.isnan(hi)) and lo > hi:
        raise ValueError(f"record_claim: {what} must be (low, high), got ({lo}, {hi})")
    return lo, hi


def record_claim(id: str, chapter: str, statement: str, metric: str, higher_is_better: bool, value: float, ci,
                 control: str, control_value: float, control_ci, study: str, paired_ci=None,
                 display: bool = True) -> Claim:
    """Make a :class:`Claim` and show it in the running notebook (where ``sarssl book`` collects it).

    Args:
        ci, control_ci: 95 % intervals ``(low, high)`` of ``value`` and ``control_value``.
        study: the study's own statement of the claim, in words.
        paired_ci: optional interval of ``value - control_value`` over the same chips or tiles.
    """
    claim = Claim(id, chapter, statement, metric, bool(higher_is_better), float(value), _pair(ci, "ci"), control,
                  float(control_value), _pair(control_ci, "control_ci"), study,
                  None if paired_ci is None else _pair(paired_ci, "paired_ci"))
    if display:
        try:
            from IPython.display import display as show
        except ImportError:  # plain Python: nothing to show
            return claim
        show(claim)
    return claim


def claims_from_notebook(path: str | Path) -> list[dict]:
    """Every claim displayed in an executed notebook, in order.

    A claim shown twice with the same content (displayed by :func:`record_claim` and again as the
    cell's value) counts once.
    """
    nb = json.loads(Path(path).read_text())
    found = []
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []):
            claim = out.get("data", {}).get(CLAIM_MIME)
            if claim is not None and claim not in found:
                found.append(claim)
    return found


def claims_page(claims: list[dict], profile: str) -> str:
    """MyST markdown for the page "The study's claims and this build"."""
    lines = [
        "# The study's claims and this build", "",
        f"Every quantitative verdict the chapters state, as measured by this build (profile `{profile}`). "
        "Each value carries its 95 % interval and is set against its control; a claim *holds* only when "
        "the intervals are separated (see `sarssl.evidence`). The same table is in `_build/claims.json`.", "",
    ]
    if not claims:
        lines.append("No chapter recorded a claim in this build.")
        return "\n".join(lines) + "\n"
    lines += ["| claim | chapter | the study | this build (95 % CI) | control (95 % CI) | verdict |",
              "|---|---|---|---|---|---|"]
    for c in claims:
        lines.append(f"| {c['statement']} (`{c['id']}`, {c['metric']}) | {c['chapter']} | {c['study']} | "
                     f"{_fmt(c['value'], c['ci'])} | {c['control']}: {_fmt(c['control_value'], c['control_ci'])} | "
                     f"{c['verdict']} |")
    return "\n".join(lines) + "\n"
