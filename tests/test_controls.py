"""sarssl.analysis.controls: an encoder against random-initialised encoders and brightness, per chip."""

from __future__ import annotations

import torch
from torch import nn

from sarssl.analysis.controls import attention_against_controls, knn_against_random, random_encoders


def _chips(n: int = 48, size: int = 32, seed: int = 0) -> list[dict]:
    """Noise chips whose chip-majority class (0 or 3) is hidden in the sign of one pixel."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        cls = 3 * (i % 2)
        s1 = torch.randn(12, size, size, generator=g)
        s1[5, 0, 0] = 5.0 if cls else -5.0
        labels = torch.full((size, size), cls, dtype=torch.long)
        labels[:, : size // 4] = 6  # a second class on a quarter of the chip
        out.append({"s1": s1, "worldcover": labels, "id": str(i)})
    return out


class Oracle(nn.Module):
    """Reads the hidden pixel: features that separate the classes exactly."""

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))  # a device to report

    def forward(self, x):
        return torch.stack([x[:, 5, 0, 0], torch.ones(len(x))], dim=1)


def test_knn_oracle_beats_random_and_a_copy_ties(tiny_vit):
    train, test = _chips(48, seed=0), _chips(32, seed=1)
    controls = {s: tiny_vit(seed=s).eval() for s in (0, 1)}
    res = knn_against_random(Oracle(), controls, train, test, k=5)
    assert res.n == 32 and res.model.value == 1.0
    assert set(res.per_seed) == {0, 1} and res.control.value < 0.9
    assert res.verdict.outcome == "better" and res.paired.low > 0
    same = knn_against_random(controls[0], {0: controls[0]}, train, test, k=5)
    assert same.paired.value == 0 and same.verdict.outcome == "tie"  # the same encoder is no evidence
    f = same.claim_fields()
    assert set(f) == {"value", "ci", "control_value", "control_ci", "paired_ci", "higher_is_better"}


def test_attention_against_controls_scores_the_same_chips(tiny_vit):
    chips = _chips(12)
    enc = tiny_vit(seed=0).eval()
    res = attention_against_controls(enc, {0: enc, 1: tiny_vit(seed=1).eval()}, chips, patch=8)
    assert set(res) == {"random", "brightness"}
    assert res["random"].n == res["brightness"].n == 12  # every chip holds 2 classes
    for r in res.values():
        assert 0 <= r.model.low <= r.model.value <= r.model.high <= 1
    assert (res["random"].model_scores == res["brightness"].model_scores).all()


def test_random_encoders_are_seeded(tiny_profile):
    a, b = random_encoders(tiny_profile, (0, 1)), random_encoders(tiny_profile, (0,))
    pa, pb, p1 = (next(e.parameters()) for e in (a[0], b[0], a[1]))
    assert torch.equal(pa, pb) and not torch.equal(pa, p1)
