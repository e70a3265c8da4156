"""Head x product correlation: how much each attention head's map follows each product, at patch level."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from sarssl.analysis.patch_features import PatchFeatures, patch_rows
from sarssl.data.products import IGNORE_INDEX, LABEL_SPECS

__all__ = ["head_product_correlation"]


def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Columns of a (P, H) against b (P,) -> (H,)."""
    a = a - a.mean(0)
    b = (b - b.mean()).unsqueeze(1)
    den = (a.square().sum(0) * b.square().sum(0)).sqrt()
    return torch.where(den > 0, (a * b).sum(0) / den.clamp_min(1e-30), torch.full_like(den, float("nan")))


def _eta(a: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Correlation ratio of columns of a (P, H) grouped by classes (P,) -> (H,) in [0, 1]."""
    uniq, inv = torch.unique(classes, return_inverse=True)
    n = torch.bincount(inv, minlength=len(uniq)).double()
    sums = torch.zeros(len(uniq), a.shape[1], dtype=torch.float64).index_add_(0, inv, a.double())
    mean = a.double().mean(0)
    between = (n.unsqueeze(1) * (sums / n.unsqueeze(1) - mean).square()).sum(0)
    total = (a.double() - mean).square().sum(0)
    return torch.where(total > 0, (between / total.clamp_min(1e-30)).sqrt(), torch.full_like(total, float("nan"))).float()


def head_product_correlation(attn_maps, targets: dict | None = None, valid: dict | None = None) -> pd.DataFrame:
    """Per head, how much its attention map follows each product, at patch level (pooled over chips).

    ``attn_maps`` (N, heads, h, w) with ``targets`` {product: (N, [C,] h, w)} and optional ``valid``
    {product: (N, h, w) bool}; or a :class:`PatchFeatures` alone. Continuous products: Pearson r
    (signed, -1..1); Sentinel-2 RGB uses its brightness (mean of R, G, B). Class products: the
    correlation ratio eta (0..1): sqrt(between-class / total variance of the attention), i.e. how much
    of the head's attention variance the classes explain (eta^2 = R^2 of attention on class dummies).
    Rows ``head 0..``; columns products; ``df.attrs["measure"]`` names the measure per column.
    """
    if isinstance(attn_maps, PatchFeatures):
        feats = attn_maps
        attn_maps, targets, valid = feats.features["attention"], feats.targets, feats.valid
    if targets is None:
        raise ValueError("head_product_correlation: targets are required")
    valid = valid or {}
    rows = patch_rows(attn_maps.float())
    out, measure = {}, {}
    for name, t in targets.items():
        spec = LABEL_SPECS.get(name)
        is_class = (spec.task == "classification") if spec else not t.is_floating_point()
        ok = patch_rows(valid[name].bool()) if name in valid else torch.ones(rows.shape[0], dtype=torch.bool)
        if is_class:
            y = patch_rows(t.long())
            ok = ok & (y != IGNORE_INDEX)
            out[name] = _eta(rows[ok], y[ok]).numpy() if ok.sum() > 1 else np.full(rows.shape[1], np.nan)
            measure[name] = "eta"
        else:
            tt = t.float().mean(1) if t.dim() == 4 else t.float()
            y = patch_rows(tt)
            ok = ok & torch.isfinite(y)
            out[name] = _pearson(rows[ok], y[ok]).numpy() if ok.sum() > 1 else np.full(rows.shape[1], np.nan)
            measure[name] = "pearson_r" + (" (brightness)" if t.dim() == 4 else "")
    df = pd.DataFrame(out, index=[f"head {i}" for i in range(rows.shape[1])])
    df.attrs["measure"] = measure
    return df
