"""Light patch-level probes: what do attention maps, patch embeddings and raw SAR tell about six products?

The probe (:class:`PatchProbe`) is the same for every feature kind of
:func:`sarssl.analysis.patch_features.extract_patch_features`: per-patch standardisation, then a
linear map (a 1x1 convolution on the grid) or, with ``hidden > 0``, a 2-layer MLP; trained with AdamW
and a cosine schedule for a fixed number of steps on random mini-batches of patches, seeded.

Metrics (valid patches only; :mod:`sarssl.train.metrics`): Sentinel-2 RGB -> R2 and PSNR (data range
1); land cover -> mIoU over classes present in the target or the prediction; tree cover, biomass,
built -> RMSE (product units) and R2. Chips, not patches, are split between train and test, so
neighbouring patches never leak.
"""

from __future__ import annotations

import math

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from sarssl.analysis.patch_features import FEATURE_KINDS, PatchFeatures, patch_rows, split_chips
from sarssl.data.products import IGNORE_INDEX, LABEL_SPECS
from sarssl.train.metrics import mean_iou, regression_metrics

__all__ = ["PatchProbe", "fit_probe", "evaluate_probe", "METRIC_COLUMNS", "probe_table"]


class PatchProbe(nn.Module):
    """Per-patch probe: standardise features, then linear (``hidden=0``) or Linear-GELU-Linear.

    Applied to (P, C) patch rows or, via :meth:`predict_grid`, to (N, C, h, w) grids (a 1x1 conv).
    """

    def __init__(self, in_channels: int, out_channels: int, task: str, hidden: int = 0):
        super().__init__()
        if task not in ("regression", "classification"):
            raise ValueError(f"task must be 'regression' or 'classification', got {task!r}")
        self.task = task
        self.register_buffer("feat_mean", torch.zeros(in_channels))
        self.register_buffer("feat_std", torch.ones(in_channels))
        self.register_buffer("target_mean", torch.zeros(out_channels))
        self.register_buffer("target_std", torch.ones(out_channels))
        self.net = (nn.Linear(in_channels, out_channels) if hidden <= 0 else
                    nn.Sequential(nn.Linear(in_channels, hidden), nn.GELU(), nn.Linear(hidden, out_channels)))

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        """(P, C) -> (P, K): logits, or standardised regression outputs."""
        return self.net((rows - self.feat_mean) / self.feat_std)

    @torch.no_grad()
    def predict_grid(self, features: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) -> regression values (N, K, h, w) in target units, or classes (N, h, w) int64."""
        N, C, h, w = features.shape
        out = self(patch_rows(features.to(self.feat_mean.device)))
        if self.task == "classification":
            return out.argmax(-1).reshape(N, h, w)
        out = out * self.target_std + self.target_mean
        return out.reshape(N, h, w, -1).permute(0, 3, 1, 2)


def _training_rows(features, targets, valid, task):
    x = patch_rows(features.float())
    if task == "classification":
        y = patch_rows(targets.long())
        ok = y != IGNORE_INDEX
    else:
        t = targets.float()
        y = patch_rows(t.unsqueeze(1) if t.dim() == 3 else t)
        ok = torch.isfinite(y).all(-1)
    if valid is not None:
        ok &= patch_rows(valid.bool())
    ok &= torch.isfinite(x).all(-1)
    return x[ok], y[ok]


def fit_probe(features: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor | None = None,
              kind: str = "regression", n_classes: int | None = None, hidden: int = 0, steps: int = 300,
              lr: float = 3e-2, weight_decay: float = 1e-4, batch_size: int = 4096, seed: int = 0,
              device=None) -> PatchProbe:
    """Train a :class:`PatchProbe` on (N, C, h, w) ``features`` against pooled ``targets``.

    ``targets``: (N, [K,] h, w) float for ``kind="regression"`` (standardised internally), or (N, h, w)
    int64 classes with :data:`IGNORE_INDEX` for ``kind="classification"`` (``n_classes`` required).
    ``valid`` (N, h, w) bool restricts training patches. AdamW + cosine decay, ``steps`` mini-batches
    of ``batch_size`` patches drawn with a generator seeded by ``seed`` (global RNG untouched).
    """
    if kind == "classification" and not n_classes:
        raise ValueError("fit_probe: kind='classification' needs n_classes")
    if features.dim() != 4:
        raise ValueError(f"fit_probe: features must be (N, C, h, w), got shape {tuple(features.shape)}")
    if features.shape[0] != targets.shape[0] or features.shape[-2:] != targets.shape[-2:]:
        raise ValueError(f"fit_probe: features {tuple(features.shape)} and targets {tuple(targets.shape)} "
                         "disagree on chips or patch grid")
    x, y = _training_rows(features, targets, valid, kind)
    if x.shape[0] < 2:
        raise ValueError(f"fit_probe: only {x.shape[0]} valid training patches")
    device = torch.device(device) if device is not None else torch.device("cpu")
    out_ch = n_classes if kind == "classification" else y.shape[-1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        probe = PatchProbe(x.shape[1], out_ch, kind, hidden)
    probe.feat_mean.copy_(x.mean(0))
    probe.feat_std.copy_(x.std(0).clamp_min(1e-6))
    if kind == "regression":
        probe.target_mean.copy_(y.mean(0))
        probe.target_std.copy_(y.std(0).clamp_min(1e-6))
        y = (y - probe.target_mean) / probe.target_std
    probe.to(device)
    x, y = x.to(device), y.to(device)
    opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / max(1, steps))))
    gen = torch.Generator(device=device).manual_seed(seed)
    probe.train()
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (min(batch_size, x.shape[0]),), generator=gen, device=device)
        out = probe(x[idx])
        loss = F.cross_entropy(out, y[idx]) if kind == "classification" else F.mse_loss(out, y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    probe.eval()
    return probe


def evaluate_probe(probe: PatchProbe, features: torch.Tensor, targets: torch.Tensor,
                   valid: torch.Tensor | None = None, n_classes: int | None = None,
                   data_range: float | None = None) -> dict:
    """Metrics of ``probe`` on held-out (N, C, h, w) ``features`` over valid patches.

    Regression -> ``{"rmse", "r2", "psnr", "n"}``; classification -> ``{"miou", "accuracy", "n"}``.
    """
    x, y = _training_rows(features, targets, valid, probe.task)
    with torch.no_grad():
        out = probe(x.to(probe.feat_mean.device)).cpu()
    if probe.task == "classification":
        n_classes = n_classes or out.shape[-1]
        pred = out.argmax(-1)
        acc = float((pred == y).float().mean()) if y.numel() else float("nan")
        return {"miou": mean_iou(pred, y, n_classes), "accuracy": acc, "n": int(y.numel())}
    pred = out * probe.target_std.cpu() + probe.target_mean.cpu()
    return {**regression_metrics(pred, y, data_range), "n": int(y.shape[0])}


METRIC_COLUMNS = ("r2", "psnr", "rmse", "miou", "accuracy")


def probe_table(train: PatchFeatures, test: PatchFeatures | None = None, products=None, feature_kinds=FEATURE_KINDS,
                test_fraction: float = 0.3, hidden: int = 0, steps: int = 300, lr: float = 3e-2,
                batch_size: int = 4096, seed: int = 0, device=None, progress: bool = True) -> pd.DataFrame:
    """Fit and evaluate the same probe for every (feature kind, product): one row each.

    Without ``test``, chips of ``train`` are split with :func:`split_chips`. Columns: ``feature``,
    ``product``, ``title``, ``task``, ``n_train``, ``n_test`` (patches) and ``r2, psnr, rmse, miou,
    accuracy`` (NaN where the product's metric set does not include it; accuracy for classes only).
    """
    if test is None:
        train, test = split_chips(train, test_fraction, seed)
    names = list(train.targets) if products is None else list(products)
    rows = []
    jobs = [(k, p) for k in feature_kinds for p in names]
    for kind, name in tqdm(jobs, desc="probes", disable=not progress):
        if kind not in train.features:
            raise KeyError(f"feature kind {kind!r} not extracted: have {list(train.features)}")
        if name not in train.targets:
            raise KeyError(f"product {name!r} not extracted: have {list(train.targets)}")
        spec = LABEL_SPECS[name]
        probe = fit_probe(train.features[kind], train.targets[name], train.valid[name], kind=spec.task,
                          n_classes=spec.n_classes, hidden=hidden, steps=steps, lr=lr, batch_size=batch_size,
                          seed=seed, device=device)
        res = evaluate_probe(probe, test.features[kind], test.targets[name], test.valid[name],
                             n_classes=spec.n_classes, data_range=spec.data_range)
        row = {"feature": kind, "product": name, "title": spec.title, "task": spec.task,
               "n_train": int(train.valid[name].sum()), "n_test": res["n"]}
        keep = set(spec.metrics) | ({"accuracy"} if spec.task == "classification" else set())
        row.update({m: (res.get(m, float("nan")) if m in keep else float("nan")) for m in METRIC_COLUMNS})
        rows.append(row)
    return pd.DataFrame(rows, columns=["feature", "product", "title", "task", "n_train", "n_test", *METRIC_COLUMNS])
