"""DINO collapse monitoring: the teacher's entropy against ``ln K``, per image and across a batch.

:func:`teacher_entropy` / :func:`collapse_status` / :class:`CollapseMonitor`: the mean entropy ``H``
of the teacher softmax against ``ln K`` (K prototypes). ``H ~ ln K`` means every output is uniform
(collapse to the centre), ``H ~ 0`` means one prototype wins for every image (one-hot collapse);
both are DINO's failure modes that centring and sharpening are there to balance.

The per-image entropy cannot see the third failure: every image sharp (a few prototypes each) but
all images on the *same* few prototypes. :func:`batch_prototypes` is the effective number of
prototypes used across a batch, ``exp H(mean_b p_b)`` (the perplexity of the batch-mean teacher
distribution); :func:`batch_usage` divides it by ``min(K, images)``, one prototype per image. A
usage at or below ``batch_low`` (default 0.25) is the ``"batch"`` status: the teacher no longer tells
the batch's images apart. (On the ``cpu`` region a teacher temperature of 0.02 drove 16 images onto
2.6 prototypes, a usage of 0.16, while the per-image check read "ok" and the k-NN accuracy fell.)
``exp H`` of the per-image distributions (:func:`image_prototypes`) is logged beside it. The DINO task
(:mod:`sarssl.models.dino`) updates a :class:`CollapseMonitor` every step; the plots of
:mod:`sarssl.analysis.dino_plots` read :func:`collapse_status` off a run's metrics.
"""

from __future__ import annotations

import logging
import math
import warnings

import torch

__all__ = ["COLLAPSE_CODES", "teacher_entropy", "batch_entropy", "batch_prototypes", "image_prototypes",
           "batch_usage", "collapse_status", "CollapseMonitor"]

log = logging.getLogger(__name__)

COLLAPSE_CODES = {"ok": 0, "uniform": 1, "one-hot": 2, "batch": 3}


def teacher_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Mean entropy (nats) of the rows of ``probs`` (N, K), a scalar tensor in [0, ln K]."""
    p = probs.float()
    return -(p * torch.log(p.clamp_min(1e-12))).sum(-1).mean()


def batch_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of the batch-mean distribution ``mean_n probs[n]`` of (N, K) ``probs``, in [0, ln K]."""
    q = probs.float().mean(0)
    return -(q * torch.log(q.clamp_min(1e-12))).sum()


def batch_prototypes(probs: torch.Tensor) -> torch.Tensor:
    """Effective number of prototypes used across the batch, ``exp H(mean_n p_n)``, in [1, K]."""
    return batch_entropy(probs).exp()


def image_prototypes(probs: torch.Tensor) -> torch.Tensor:
    """Effective number of prototypes per image, ``exp(mean_n H(p_n))`` (the per-sample view), in [1, K]."""
    return teacher_entropy(probs).exp()


def batch_usage(probs: torch.Tensor, n_images: int | None = None) -> torch.Tensor:
    """:func:`batch_prototypes` over ``min(K, n_images)`` (default: the rows): about 1 or more when every image
    has prototypes of its own (above 1 when images spread over several), near ``1 / n_images`` when all share one."""
    n = probs.shape[0] if n_images is None else int(n_images)
    return batch_prototypes(probs) / float(max(1, min(probs.shape[-1], n)))


def collapse_status(entropy: float, n_prototypes: int, high: float = 0.95, low: float = 0.05,
                    usage: float | None = None, batch_low: float = 0.25) -> str:
    """``"uniform"`` if ``entropy >= high ln K``, ``"one-hot"`` if ``entropy <= low ln K``, ``"batch"`` if the
    batch usage (:func:`batch_usage`, when given) is ``<= batch_low``, else ``"ok"``."""
    if not 0 <= low < high <= 1:
        raise ValueError(f"collapse_status: expected 0 <= low < high <= 1, got low={low} high={high}")
    if not 0 <= batch_low < 1:
        raise ValueError(f"collapse_status: expected 0 <= batch_low < 1, got {batch_low}")
    ln_k = math.log(n_prototypes)
    if entropy >= high * ln_k:
        return "uniform"
    if entropy <= low * ln_k:
        return "one-hot"
    if usage is not None and usage <= batch_low:
        return "batch"
    return "ok"


class CollapseMonitor:
    """Track teacher entropy (and batch usage); warn once when a collapse lasts ``patience`` consecutive updates."""

    def __init__(self, n_prototypes: int, high: float = 0.95, low: float = 0.05, patience: int = 20,
                 batch_low: float = 0.25):
        self.n_prototypes = n_prototypes
        self.high, self.low, self.patience, self.batch_low = high, low, patience, batch_low
        self.run_status, self.run_length = "ok", 0
        self.warned: set[str] = set()

    def update(self, entropy: float, step: int | None = None, usage: float | None = None) -> str:
        """Status of this update (``"ok"``, ``"uniform"``, ``"one-hot"`` or ``"batch"``); warns on a sustained collapse."""
        status = collapse_status(entropy, self.n_prototypes, self.high, self.low, usage, self.batch_low)
        self.run_length = self.run_length + 1 if status == self.run_status else 1
        self.run_status = status
        if status != "ok" and self.run_length >= self.patience and status not in self.warned:
            self.warned.add(status)
            ln_k = math.log(self.n_prototypes)
            if status == "batch":
                msg = (f"DINO teacher batch collapse at step {step}: the batch's images share few prototypes "
                       f"(usage {usage:.3f} of min(K, images) <= {self.batch_low}) for {self.run_length} steps, "
                       f"while the per-image entropy {entropy:.3f} looks healthy; raise the teacher temperature, "
                       "the centre momentum's weight on new batches, or the augmentation strength")
            else:
                msg = (f"DINO teacher {status} collapse at step {step}: entropy {entropy:.3f} vs ln K = {ln_k:.3f} "
                       f"(ratio {entropy / ln_k:.3f}) for {self.run_length} steps; "
                       + ("lower the teacher temperature or the centre momentum" if status == "uniform"
                          else "raise the teacher temperature or check the centring"))
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
            log.warning(msg)
        return status
