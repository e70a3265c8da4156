"""Light patch-level probes: what do attention maps, patch embeddings and raw SAR tell about six products?

The probe (:class:`PatchProbe`) is the same for every feature kind of
:func:`sarssl.analysis.patch_features.extract_patch_features`: per-patch standardisation, then a
linear map (a 1x1 convolution on the grid) or, with ``hidden > 0``, a 2-layer MLP; trained with AdamW
and a cosine schedule for a fixed number of steps on random mini-batches of patches, seeded.

Metrics (valid patches only; :mod:`sarssl.train.metrics`): Sentinel-2 RGB -> R2 and PSNR (data range
1); land cover -> mIoU over classes present in the target or the prediction; tree cover, biomass,
built -> RMSE (product units) and R2. Chips, not patches, are split between train and test, so
neighbouring patches never leak.

:func:`probe_intervals` compares feature sets per product on the headline metric with 95 % bootstrap
intervals over test chips (the same resampled chips for both sets, so the difference is paired) and
the verdict of :func:`sarssl.evidence.compare`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from sarssl.analysis.patch_features import FEATURE_KINDS, PatchFeatures, patch_rows, split_chips
from sarssl.data.products import IGNORE_INDEX, LABEL_SPECS
from sarssl.evidence import LEVEL, Estimate, compare
from sarssl.train.metrics import higher_is_better, mean_iou, regression_metrics

__all__ = ["PatchProbe", "fit_probe", "evaluate_probe", "METRIC_COLUMNS", "probe_table", "chip_statistics",
           "bootstrap_headline", "probe_intervals"]


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


# --------------------------------------------------------------------------------------------
# Intervals over chips
# --------------------------------------------------------------------------------------------
def chip_statistics(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, task: str,
                    n_classes: int | None = None) -> np.ndarray:
    """Per-chip sufficient statistics of the headline metric, summable over any set of chips.

    Args:
        pred, target: (N, [K,] h, w) regression values in target units, or (N, h, w) int64 classes.
        valid: (N, h, w) bool patches to score (class targets at :data:`IGNORE_INDEX` are dropped too).

    Returns:
        Regression: (N, 4, K) float64 rows ``count, sum y, sum y^2, sum (y - pred)^2`` per output;
        classification: (N, n_classes * n_classes) confusion counts (row = target, col = prediction).
    """
    if task == "classification":
        if not n_classes:
            raise ValueError("chip_statistics: classification needs n_classes")
        ok = valid.bool() & (target != IGNORE_INDEX)
        idx = target.long().clamp_min(0) * n_classes + pred.long().clamp(0, n_classes - 1)
        flat = torch.where(ok, idx, torch.full_like(idx, n_classes * n_classes)).reshape(len(idx), -1)
        counts = torch.zeros(len(idx), n_classes * n_classes + 1, dtype=torch.float64)
        counts.scatter_add_(1, flat, torch.ones_like(flat, dtype=torch.float64))
        return counts[:, :-1].numpy()
    p = pred.double().reshape(pred.shape[0], -1, *pred.shape[-2:])
    y = target.double().reshape(target.shape[0], -1, *target.shape[-2:])
    ok = (valid.bool() & torch.isfinite(y).all(1) & torch.isfinite(p).all(1)).unsqueeze(1).double()
    y, p = torch.nan_to_num(y), torch.nan_to_num(p)
    sums = [ok.expand_as(y), y * ok, y * y * ok, (y - p) ** 2 * ok]
    return torch.stack([t.sum(dim=(-2, -1)) for t in sums], dim=1).numpy()


def _headline_from(stats: np.ndarray, task: str) -> np.ndarray:
    """(B, ...) summed chip statistics -> (B,) R2 (mean over outputs) or mIoU."""
    if task == "classification":
        k = int(round(np.sqrt(stats.shape[-1])))
        cm = stats.reshape(-1, k, k)
        inter = np.diagonal(cm, axis1=1, axis2=2)
        union = cm.sum(1) + cm.sum(2) - inter
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
            return np.nanmean(iou, axis=1)
    n, s, ss, sse = stats[:, 0], stats[:, 1], stats[:, 2], stats[:, 3]
    with np.errstate(invalid="ignore", divide="ignore"):
        sst = ss - s * s / n
        return np.mean(np.where((n > 1) & (sst > 0), 1 - sse / sst, np.nan), axis=1)


def bootstrap_headline(stats: Mapping[str, np.ndarray], task: str, n_boot: int = 1000, seed: int = 0
                       ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """The headline metric of each feature set on all chips, and on ``n_boot`` resamples of the chips.

    Args:
        stats: label -> :func:`chip_statistics` of the same N chips (in the same order).

    Returns:
        ``(value, draws)``: label -> the metric on all chips, and label -> (n_boot,) the metric on each
        resample; every label sees the same resampled chips, so differences of draws are paired.
    """
    n = {len(v) for v in stats.values()}
    if len(n) != 1:
        raise ValueError(f"bootstrap_headline: the feature sets hold different numbers of chips: {sorted(n)}")
    n_chips = n.pop()
    weights = np.zeros((n_boot, n_chips))
    picks = np.random.default_rng(seed).integers(0, n_chips, size=(n_boot, n_chips))
    np.add.at(weights, (np.arange(n_boot)[:, None], picks), 1.0)
    value, draws = {}, {}
    for label, st in stats.items():
        flat = st.reshape(n_chips, -1)
        value[label] = float(_headline_from(flat.sum(0, keepdims=True).reshape(1, *st.shape[1:]), task)[0])
        draws[label] = _headline_from((weights @ flat).reshape(n_boot, *st.shape[1:]), task)
    return value, draws


def _interval(value: float, draws: np.ndarray, n: int) -> Estimate:
    d = draws[np.isfinite(draws)]
    if n < 2 or d.size == 0:
        return Estimate(value, value, value, n, "single unit: no interval")
    a = (1 - LEVEL) / 2
    low, high = np.quantile(d, [a, 1 - a])
    return Estimate(value, float(low), float(high), n, "bootstrap over chips")


def _split_label(label: str, encoders: Sequence[str]) -> tuple[str, str]:
    if label == "raw SAR":
        return encoders[0], "sar"
    name, _, kind = label.rpartition(" ")
    if name not in encoders or kind not in FEATURE_KINDS:
        raise KeyError(f"probe_intervals: feature set {label!r} is not '<encoder> <kind>' with an encoder of "
                       f"{list(encoders)} and a kind of {FEATURE_KINDS}, nor 'raw SAR'")
    return name, kind


def probe_intervals(features: Mapping[str, tuple], comparisons: Sequence[tuple[str, str]], products=None,
                    steps: int = 300, seed: int = 0, n_boot: int = 1000, device=None) -> pd.DataFrame:
    """Feature sets compared per product on the headline metric, with 95 % bootstrap intervals over test chips.

    Args:
        features: encoder name -> ``(train, test)`` :class:`PatchFeatures` (as for
            :func:`sarssl.analysis.attention_plots.compare_probes`).
        comparisons: ``(model, control)`` feature-set labels, ``"<encoder> <kind>"`` or ``"raw SAR"``
            (``("DINO attention", "random attention")``).
        products: sample keys (default: every product of the first encoder's train features).

    Each feature set gets the probe of :func:`probe_table` (same steps and seed); the test chips are
    resampled ``n_boot`` times, the same resamples for both sets of a comparison, so the difference has
    a paired interval. Returns one row per (product, comparison): ``product`` (title), ``metric`` (R2
    or mIoU), ``comparison``, ``model``, ``control`` and ``difference`` (:class:`Estimate`, ``model -
    control``), ``chips`` and ``verdict`` (``better`` / ``worse`` / ``tie`` from
    :func:`sarssl.evidence.compare`).
    """
    encoders = list(features)
    if not encoders or not comparisons:
        raise ValueError("probe_intervals: give features of at least one encoder and at least one comparison")
    labels = list(dict.fromkeys(label for pair in comparisons for label in pair))
    parts = {label: _split_label(label, encoders) for label in labels}
    names = list(features[encoders[0]][0].targets) if products is None else list(products)
    rows = []
    for name in names:
        spec = LABEL_SPECS[name]
        stats = {}
        for label, (enc, kind) in parts.items():
            train, test = features[enc]
            probe = fit_probe(train.features[kind], train.targets[name], train.valid[name], kind=spec.task,
                              n_classes=spec.n_classes, steps=steps, seed=seed, device=device)
            pred = probe.predict_grid(test.features[kind]).cpu()
            stats[label] = chip_statistics(pred, test.targets[name], test.valid[name], spec.task, spec.n_classes)
        value, draws = bootstrap_headline(stats, spec.task, n_boot=n_boot, seed=seed)
        n_chips = len(next(iter(stats.values())))
        metric = "miou" if spec.task == "classification" else "r2"
        for a, b in comparisons:
            model, control = _interval(value[a], draws[a], n_chips), _interval(value[b], draws[b], n_chips)
            diff = _interval(value[a] - value[b], draws[a] - draws[b], n_chips)
            rows.append({"product": spec.title, "metric": metric, "comparison": f"{a} vs {b}", "model": model,
                         "control": control, "difference": diff, "chips": n_chips,
                         "verdict": compare(model, control, higher_is_better(metric), paired=diff).outcome})
    return pd.DataFrame(rows, columns=["product", "metric", "comparison", "model", "control", "difference",
                                       "chips", "verdict"])
