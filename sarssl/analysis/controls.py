"""A pretrained encoder against its controls, per chip, with 95 % intervals (chapters 4 and 6).

- :func:`random_encoders`: the controls, the profile's architecture with random weights, one per seed
  (seed 0 gives the weights a pretraining run of seed 0 started from);
- :func:`knn_against_random`: k-NN land-cover accuracy of CLS features (chip-majority WorldCover)
  for the encoder and each random encoder, scored on the same chips;
- :func:`attention_against_controls`: the best-class IoU of each head's top-mass patch set with the
  WorldCover segments (:mod:`sarssl.analysis.attention_overlap`) for the encoder, the random encoders
  and a brightness-saliency map of the same size.

Both return :class:`ControlComparison`: per-chip scores of the encoder and of the control (the mean
over control seeds), bootstrap intervals over chips, and the paired interval of the difference, ready
for :func:`sarssl.evidence.compare` and :func:`sarssl.claims.record_claim`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn

from sarssl.evidence import Verdict, bootstrap_ci, compare, paired_difference

__all__ = ["ControlComparison", "random_encoders", "knn_against_random", "attention_against_controls"]


@dataclass
class ControlComparison:
    """Per-chip scores of a model and of its control (``(n,)`` arrays over the same chips).

    ``model``/``control``: bootstrap intervals over chips; ``paired``: interval of ``model - control``;
    ``per_seed``: the control's score for each seed (its spread), ``n``: chips scored.
    """

    name: str
    control_name: str
    model_scores: np.ndarray
    control_scores: np.ndarray
    higher_is_better: bool = True
    per_seed: dict = field(default_factory=dict)

    def __post_init__(self):
        self.model = bootstrap_ci(self.model_scores)
        self.control = bootstrap_ci(self.control_scores)
        self.paired = paired_difference(self.model_scores, self.control_scores)

    @property
    def n(self) -> int:
        return int(len(self.model_scores))

    @property
    def verdict(self) -> Verdict:
        return compare(self.model, self.control, self.higher_is_better, paired=self.paired)

    def claim_fields(self) -> dict:
        """The numeric keyword arguments of :func:`sarssl.claims.record_claim`."""
        return {"value": self.model.value, "ci": self.model.ci, "control_value": self.control.value,
                "control_ci": self.control.ci, "paired_ci": self.paired.ci, "higher_is_better": self.higher_is_better}

    def row(self) -> dict:
        """One table row: the two estimates, the difference and the verdict."""
        return {"model": str(self.model), "control": f"{self.control_name}: {self.control}",
                "difference": str(self.paired), "chips": self.n, "verdict": self.verdict.outcome}


def random_encoders(profile, seeds: Sequence[int] = (0, 1, 2), device=None) -> dict[int, nn.Module]:
    """``{seed: encoder}``: the profile's encoder with random weights drawn after ``torch.manual_seed(seed)``."""
    from sarssl.models.vit import encoder_from_profile

    out = {}
    for s in seeds:
        torch.manual_seed(int(s))
        out[int(s)] = encoder_from_profile(profile).eval().to(device or "cpu")
    return out


def _knn_correct(encoder, train_ds, eval_ds, k, temperature, batch_size, device) -> np.ndarray:
    from sarssl.data.products import WORLDCOVER_CODES
    from sarssl.train.knn import extract_cls_features, knn_predict

    n_classes = len(WORLDCOVER_CODES)
    ftr, ytr = extract_cls_features(encoder, train_ds, range(len(train_ds)), batch_size, device, num_classes=n_classes)
    fte, yte = extract_cls_features(encoder, eval_ds, range(len(eval_ds)), batch_size, device, num_classes=n_classes)
    if len(ytr) == 0 or len(yte) == 0:
        raise ValueError(f"knn_against_random: no chips with a valid WorldCover label ({len(ytr)} train, {len(yte)} "
                         f"evaluation)")
    pred = knn_predict(ftr, ytr, fte, n_classes, k, temperature).argmax(1)
    return (pred == yte).numpy().astype(np.float64)


def knn_against_random(encoder: nn.Module, controls: dict[int, nn.Module], train_ds, eval_ds, k: int = 20,
                       temperature: float = 0.07, batch_size: int = 64, device=None) -> ControlComparison:
    """k-NN land-cover accuracy of ``encoder`` against the random ``controls``, on every chip of ``eval_ds``.

    Every train chip is a neighbour candidate. The control's per-chip score is the share of control
    seeds that classify the chip correctly, so its mean is the mean accuracy over seeds.
    """
    model = _knn_correct(encoder, train_ds, eval_ds, k, temperature, batch_size, device)
    per_seed = {s: _knn_correct(e, train_ds, eval_ds, k, temperature, batch_size, device) for s, e in controls.items()}
    control = np.mean(np.stack(list(per_seed.values())), axis=0)
    return ControlComparison("k-NN accuracy", "random-initialised encoders", model, control,
                             per_seed={s: float(v.mean()) for s, v in per_seed.items()})


def _attention_sets(encoder, s1, mass, block, batch_size) -> torch.Tensor:
    from sarssl.analysis.attention import cls_attention_shares, threshold_attention

    out = []
    with torch.no_grad():
        for i in range(0, len(s1), batch_size):
            attn = cls_attention_shares(encoder, s1[i:i + batch_size], block=block)
            out.append(threshold_attention(attn, mass))
    return torch.cat(out)


def attention_against_controls(encoder: nn.Module, controls: dict[int, nn.Module], dataset, patch: int,
                               mass: float = 0.6, block: int = -1, brightness_channel: str = "vv_summer",
                               min_classes: int = 2, batch_size: int = 64) -> dict[str, ControlComparison]:
    """Attention overlap with land cover: ``encoder`` against the random ``controls`` and brightness saliency.

    On every chip of ``dataset`` with at least ``min_classes`` WorldCover classes (2 % of the patches
    each), the score is the head-mean of each head's best-class IoU between its ``mass`` set and the
    class masks on the patch grid. The brightness baseline takes, per head, the same number of the
    brightest patches of ``brightness_channel``.

    Returns:
        ``{"random": ..., "brightness": ...}`` comparisons over the same chips.
    """
    from sarssl.analysis.attention_overlap import attention_overlap
    from sarssl.data.products import INPUT_CHANNELS, WORLDCOVER_CODES

    samples = [dataset[i] for i in range(len(dataset))]
    s1 = torch.stack([s["s1"] for s in samples])
    labels = torch.stack([s["worldcover"] for s in samples])
    n_classes, channel = len(WORLDCOVER_CODES), list(INPUT_CHANNELS).index(brightness_channel)
    ours = attention_overlap(_attention_sets(encoder, s1, mass, block, batch_size), labels, patch, n_classes, s1=s1,
                             brightness_channel=channel, min_classes=min_classes)
    if len(ours["chips"]) == 0:
        raise ValueError(f"attention_against_controls: no chip holds {min_classes} or more land-cover classes")
    per_seed = {s: attention_overlap(_attention_sets(e, s1, mass, block, batch_size), labels, patch, n_classes,
                                     min_classes=min_classes)["score"] for s, e in controls.items()}
    control = np.mean(np.stack(list(per_seed.values())), axis=0)
    return {"random": ControlComparison("attention IoU", "random-initialised encoders", ours["score"], control,
                                        per_seed={s: float(v.mean()) for s, v in per_seed.items()}),
            "brightness": ControlComparison("attention IoU", f"brightness saliency ({brightness_channel})",
                                            ours["score"], ours["brightness"])}
