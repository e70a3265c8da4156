"""Monitoring self-distillation: teacher entropy and collapse.

- :func:`teacher_entropy` / :func:`collapse_status` / :class:`CollapseMonitor`: the mean entropy
  ``H`` of the teacher softmax against ``ln K`` (K prototypes). ``H ~ ln K`` means every output is
  uniform (collapse to the centre), ``H ~ 0`` means one prototype wins for every image (one-hot
  collapse); both are DINO's failure modes that centring and sharpening are there to balance.

The k-NN land-cover accuracy lives in :mod:`sarssl.train.knn`.
"""

from __future__ import annotations

import logging
import math
import warnings

import torch

log = logging.getLogger(__name__)

COLLAPSE_CODES = {"ok": 0, "uniform": 1, "one-hot": 2}


# ------------------------------------------------------------------------------------------------
# teacher entropy and collapse
# ------------------------------------------------------------------------------------------------
def teacher_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Mean entropy (nats) of the rows of ``probs`` (N, K), a scalar tensor in [0, ln K]."""
    p = probs.float()
    return -(p * torch.log(p.clamp_min(1e-12))).sum(-1).mean()


def collapse_status(entropy: float, n_prototypes: int, high: float = 0.95, low: float = 0.05) -> str:
    """``"uniform"`` if ``entropy >= high ln K``, ``"one-hot"`` if ``entropy <= low ln K``, else ``"ok"``."""
    if not 0 <= low < high <= 1:
        raise ValueError(f"collapse_status: expected 0 <= low < high <= 1, got low={low} high={high}")
    ln_k = math.log(n_prototypes)
    if entropy >= high * ln_k:
        return "uniform"
    if entropy <= low * ln_k:
        return "one-hot"
    return "ok"


class CollapseMonitor:
    """Track teacher entropy; warn once when a collapse lasts ``patience`` consecutive updates."""

    def __init__(self, n_prototypes: int, high: float = 0.95, low: float = 0.05, patience: int = 20):
        self.n_prototypes = n_prototypes
        self.high, self.low, self.patience = high, low, patience
        self.run_status, self.run_length = "ok", 0
        self.warned: set[str] = set()

    def update(self, entropy: float, step: int | None = None) -> str:
        """Status of this update (``"ok"``, ``"uniform"`` or ``"one-hot"``); warns on a sustained collapse."""
        status = collapse_status(entropy, self.n_prototypes, self.high, self.low)
        self.run_length = self.run_length + 1 if status == self.run_status else 1
        self.run_status = status
        if status != "ok" and self.run_length >= self.patience and status not in self.warned:
            self.warned.add(status)
            ln_k = math.log(self.n_prototypes)
            msg = (f"DINO teacher {status} collapse at step {step}: entropy {entropy:.3f} vs ln K = {ln_k:.3f} "
                   f"(ratio {entropy / ln_k:.3f}) for {self.run_length} steps; "
                   + ("lower the teacher temperature or the centre momentum" if status == "uniform"
                      else "raise the teacher temperature or check the centring"))
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
            log.warning(msg)
        return status
