"""Light patch-level probes: what do attention maps, patch embeddings and raw SAR tell about six products?

Everything lives on the ViT's patch grid (h, w) = (H / patch, W / patch):

- features (:func:`extract_patch_features`): ``"attention"`` CLS attention (heads channels),
  ``"embedding"`` last-block patch tokens after the final norm (D channels), ``"sar"`` the 12 input
  channels averaged over each patch's valid pixels;
- targets: continuous products are averaged over each patch's valid pixels (a patch is valid when at
  least ``min_valid`` of its pixels are); class products take the patch's majority class among
  non-ignored pixels (:data:`IGNORE_INDEX` when none is valid).

The probe (:class:`PatchProbe`) is the same for every feature kind: per-patch standardisation, then a
linear map (a 1x1 convolution on the grid) or, with ``hidden > 0``, a 2-layer MLP; trained with AdamW
and a cosine schedule for a fixed number of steps on random mini-batches of patches, seeded.

Metrics (valid patches only): Sentinel-2 RGB -> R2 and PSNR (data range 1); land cover -> mIoU over
classes present in the target or the prediction; tree cover, biomass, built -> RMSE (product units)
and R2. Chips, not patches, are split between train and test, so neighbouring patches never leak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchmetrics.functional import r2_score
from torchmetrics.functional.image import peak_signal_noise_ratio
from tqdm.auto import tqdm

from sarssl.analysis.attention import as_vit, cls_attention_and_tokens
from sarssl.data.products import IGNORE_INDEX, LCCI_CODES, WORLDCOVER_CODES

__all__ = [
    "ProductSpec",
    "PRODUCTS",
    "FEATURE_KINDS",
    "PatchFeatures",
    "pool_continuous",
    "pool_classes",
    "extract_patch_features",
    "split_chips",
    "PatchProbe",
    "fit_probe",
    "evaluate_probe",
    "regression_metrics",
    "mean_iou",
    "probe_table",
    "head_product_correlation",
]

FEATURE_KINDS = ("attention", "embedding", "sar")


@dataclass(frozen=True)
class ProductSpec:
    """How a product is probed: ``task`` is ``"regression"`` or ``"classification"``."""

    name: str
    title: str
    task: str
    channels: int = 1
    n_classes: int | None = None
    valid_key: str | None = None
    metrics: tuple[str, ...] = ()
    data_range: float | None = None  # for PSNR


PRODUCTS: dict[str, ProductSpec] = {
    "s2rgb": ProductSpec("s2rgb", "Sentinel-2 RGB", "regression", channels=3, valid_key="s2rgb_valid",
                         metrics=("r2", "psnr"), data_range=1.0),
    "worldcover": ProductSpec("worldcover", "high-res land cover", "classification",
                              n_classes=len(WORLDCOVER_CODES), metrics=("miou",)),
    "lcci": ProductSpec("lcci", "medium-res land cover", "classification", n_classes=len(LCCI_CODES),
                        metrics=("miou",)),
    "treecover": ProductSpec("treecover", "tree cover (%)", "regression", valid_key="treecover_valid",
                             metrics=("rmse", "r2")),
    "biomass": ProductSpec("biomass", "biomass (Mg/ha)", "regression", valid_key="biomass_valid",
                           metrics=("rmse", "r2")),
    "built": ProductSpec("built", "built surface (fraction)", "regression", valid_key="built_valid",
                         metrics=("rmse", "r2")),
}


# --------------------------------------------------------------------------------------------
# Pooling to the patch grid
# --------------------------------------------------------------------------------------------
def _crop(t: torch.Tensor, patch: int) -> torch.Tensor:
    H, W = t.shape[-2:]
    return t[..., : H - H % patch, : W - W % patch]


def pool_continuous(values: torch.Tensor, valid: torch.Tensor | None, patch: int, min_valid: float = 0.5
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked patch means: values (B, [C,] H, W), valid (B, H, W) or (B, C, H, W) bool or None.

    Returns ``(mean (B, [C,] h, w) float32, valid (B, h, w) bool)``; a patch is valid when at least
    ``min_valid`` of its pixels are (for a per-channel mask: of every channel). Invalid patches hold 0.
    """
    squeeze = values.dim() == 3
    v = (values.unsqueeze(1) if squeeze else values).float()
    if valid is None:
        valid = torch.isfinite(v).all(dim=1)
    m = valid.unsqueeze(1) if valid.dim() == 3 else valid
    m = m.to(v.dtype).expand_as(v)
    v = torch.where(m > 0, torch.nan_to_num(v), torch.zeros((), dtype=v.dtype, device=v.device))
    v, m = _crop(v, patch), _crop(m, patch)
    frac = F.avg_pool2d(m, patch)
    mean = F.avg_pool2d(v, patch) / frac.clamp_min(1e-12)
    ok = (frac >= min_valid - 1e-9).all(dim=1) & (frac > 0).all(dim=1)
    mean = torch.where(ok.unsqueeze(1), mean, torch.zeros((), dtype=mean.dtype, device=mean.device))
    return (mean[:, 0] if squeeze else mean), ok


def pool_classes(labels: torch.Tensor, n_classes: int, patch: int, ignore_index: int = IGNORE_INDEX
                 ) -> torch.Tensor:
    """Majority class per patch, ignoring ``ignore_index``: (B, H, W) int64 -> (B, h, w) int64.

    Patches without any valid pixel get ``ignore_index``; ties go to the lower class index.
    """
    lab = _crop(labels.long(), patch)
    B, H, W = lab.shape
    h, w = H // patch, W // patch
    bad = (lab == ignore_index) | (lab < 0) | (lab >= n_classes)
    if ((lab != ignore_index) & bad).any():
        raise ValueError(f"class labels must be in 0..{n_classes - 1} or {ignore_index}, got "
                         f"{lab[(lab != ignore_index) & bad].unique()[:5].tolist()}")
    idx = torch.where(bad, torch.full_like(lab, n_classes), lab)  # ignored pixels -> extra bin
    idx = idx.reshape(B, h, patch, w, patch).permute(0, 1, 3, 2, 4).reshape(B, h, w, patch * patch)
    counts = torch.zeros(B, h, w, n_classes + 1, device=lab.device).scatter_add_(-1, idx, torch.ones_like(idx, dtype=torch.float32))
    majority = counts[..., :n_classes].argmax(-1)
    return torch.where(counts[..., :n_classes].sum(-1) > 0, majority, torch.full_like(majority, ignore_index))


# --------------------------------------------------------------------------------------------
# Feature extraction
# --------------------------------------------------------------------------------------------
@dataclass
class PatchFeatures:
    """Per-chip patch-grid features and pooled targets (all CPU tensors, N chips).

    ``features[kind]``: (N, C, h, w) float32; ``targets[product]``: (N, [C,] h, w) float32, or int64
    classes; ``valid[product]``: (N, h, w) bool; ``cls``: (N, D) CLS embeddings; ``ids``/``aois``.
    """

    features: dict[str, torch.Tensor]
    targets: dict[str, torch.Tensor]
    valid: dict[str, torch.Tensor]
    cls: torch.Tensor | None = None
    ids: list = field(default_factory=list)
    aois: list = field(default_factory=list)

    def __len__(self) -> int:
        return next(iter(self.features.values())).shape[0]

    def subset(self, index) -> "PatchFeatures":
        """Chips ``index`` (a sequence of ints or a bool mask)."""
        idx = torch.as_tensor(index)
        if idx.dtype == torch.bool:
            idx = idx.nonzero().flatten()
        pick = lambda d: {k: v[idx] for k, v in d.items()}  # noqa: E731
        ii = idx.tolist()
        return PatchFeatures(
            pick(self.features), pick(self.targets), pick(self.valid),
            None if self.cls is None else self.cls[idx],
            [self.ids[i] for i in ii] if self.ids else [], [self.aois[i] for i in ii] if self.aois else [],
        )


def _pool_target(batch: dict, spec: ProductSpec, patch: int, min_valid: float):
    if spec.name not in batch:
        raise KeyError(f"product {spec.name!r} missing from the batch: keys are {sorted(batch)}")
    y = batch[spec.name]
    if spec.task == "classification":
        t = pool_classes(y, spec.n_classes, patch)
        return t, t != IGNORE_INDEX
    valid = batch.get(spec.valid_key) if spec.valid_key else None
    if valid is not None:
        valid = valid.bool()
    return pool_continuous(y, valid, patch, min_valid)


@torch.no_grad()
def extract_patch_features(model: nn.Module, loader, products=None, block: int = -1, device=None,
                           min_valid: float = 0.5, max_batches: int | None = None, progress: bool = True
                           ) -> PatchFeatures:
    """Run ``model`` over ``loader`` (canonical sample dicts) and collect patch-grid features and targets.

    ``products``: names from :data:`PRODUCTS` (default: those present in the first batch). The model
    runs in eval mode on ``device`` (default: its own); attention comes from ``blocks[block]``.
    """
    vit = as_vit(model)
    if device is not None:
        vit.to(device)
    was_training = vit.training
    vit.eval()
    patch = vit.patch_embed.patch_size
    patch = patch if isinstance(patch, int) else patch[0]
    feats = {k: [] for k in FEATURE_KINDS}
    targets, valids, cls_all, ids, aois = {}, {}, [], [], []
    specs = None
    try:
        for bi, batch in enumerate(tqdm(loader, desc="patch features", disable=not progress)):
            if max_batches is not None and bi >= max_batches:
                break
            if "s1" not in batch:
                raise KeyError(f"batch has no 's1' input: keys are {sorted(batch)}")
            if specs is None:
                names = [p for p in PRODUCTS if p in batch] if products is None else list(products)
                unknown = [p for p in names if p not in PRODUCTS]
                if unknown:
                    raise ValueError(f"unknown products {unknown}: expected some of {list(PRODUCTS)}")
                specs = [PRODUCTS[p] for p in names]
                targets.update({s.name: [] for s in specs})
                valids.update({s.name: [] for s in specs})
            x = batch["s1"].float()
            att, tok, cls = cls_attention_and_tokens(vit, x, block=block)
            feats["attention"].append(att.cpu())
            feats["embedding"].append(tok.cpu())
            cls_all.append(cls.cpu())
            s1_valid = batch.get("s1_valid")
            sar, _ = pool_continuous(x, s1_valid.bool() if s1_valid is not None else torch.ones_like(x, dtype=torch.bool),
                                     patch, min_valid=1e-9)
            feats["sar"].append(sar)
            for s in specs:
                t, ok = _pool_target(batch, s, patch, min_valid)
                targets[s.name].append(t.cpu())
                valids[s.name].append(ok.cpu())
            ids += list(batch.get("id", [])) if not torch.is_tensor(batch.get("id")) else batch["id"].tolist()
            aois += list(batch.get("aoi", []))
    finally:
        vit.train(was_training)
    if not feats["attention"]:
        raise ValueError("extract_patch_features: the loader yielded no batches")
    cat = lambda d: {k: torch.cat(v) for k, v in d.items()}  # noqa: E731
    return PatchFeatures(cat(feats), cat(targets), cat(valids), torch.cat(cls_all), ids, aois)


def split_chips(data: PatchFeatures, test_fraction: float = 0.3, seed: int = 0
                ) -> tuple[PatchFeatures, PatchFeatures]:
    """Random chip-level split into (train, test), seeded."""
    n = len(data)
    if not 0 < test_fraction < 1 or n < 2:
        raise ValueError(f"need 0 < test_fraction < 1 and >= 2 chips, got {test_fraction} and {n} chips")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = min(max(1, round(n * test_fraction)), n - 1)
    return data.subset(perm[n_test:].sort().values), data.subset(perm[:n_test].sort().values)


# --------------------------------------------------------------------------------------------
# Probe
# --------------------------------------------------------------------------------------------
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
        out = self(_rows(features.to(self.feat_mean.device)))
        if self.task == "classification":
            return out.argmax(-1).reshape(N, h, w)
        out = out * self.target_std + self.target_mean
        return out.reshape(N, h, w, -1).permute(0, 3, 1, 2)


def _rows(grid: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) -> (N*h*w, C); (N, h, w) -> (N*h*w,)."""
    if grid.dim() == 3:
        return grid.reshape(-1)
    return grid.permute(0, 2, 3, 1).reshape(-1, grid.shape[1])


def _training_rows(features, targets, valid, task):
    x = _rows(features.float())
    if task == "classification":
        y = _rows(targets.long())
        ok = y != IGNORE_INDEX
    else:
        t = targets.float()
        y = _rows(t.unsqueeze(1) if t.dim() == 3 else t)
        ok = torch.isfinite(y).all(-1)
    if valid is not None:
        ok &= _rows(valid.bool())
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


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------
def regression_metrics(pred: torch.Tensor, target: torch.Tensor, data_range: float | None = None) -> dict:
    """Masked-out rows already removed: pred/target (P, K) or (P,). Returns rmse, r2, psnr.

    RMSE pools all values (target units); R2 is averaged over the K outputs (torchmetrics); PSNR uses
    ``data_range`` (default: the target's max - min).
    """
    pred, target = pred.float().reshape(pred.shape[0], -1), target.float().reshape(target.shape[0], -1)
    if pred.shape[0] < 2:
        return {"rmse": float("nan"), "r2": float("nan"), "psnr": float("nan")}
    mse = F.mse_loss(pred, target)
    rng = float(target.max() - target.min()) if data_range is None else float(data_range)
    r2 = r2_score(pred.squeeze(-1) if pred.shape[1] == 1 else pred,
                  target.squeeze(-1) if target.shape[1] == 1 else target, multioutput="uniform_average")
    psnr = peak_signal_noise_ratio(pred, target, data_range=rng) if rng > 0 else torch.tensor(float("nan"))
    return {"rmse": float(mse.sqrt()), "r2": float(r2), "psnr": float(psnr)}


def mean_iou(pred: torch.Tensor, target: torch.Tensor, n_classes: int, ignore_index: int = IGNORE_INDEX) -> float:
    """mIoU over classes present in ``target`` or ``pred`` (union > 0); ``ignore_index`` targets excluded."""
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    ok = target != ignore_index
    pred, target = pred[ok], target[ok]
    if target.numel() == 0:
        return float("nan")
    cm = torch.bincount(target * n_classes + pred.clamp(0, n_classes - 1), minlength=n_classes ** 2)
    cm = cm.reshape(n_classes, n_classes).double()
    inter = cm.diag()
    union = cm.sum(0) + cm.sum(1) - inter
    present = union > 0
    return float((inter[present] / union[present]).mean())


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
        spec = PRODUCTS[name]
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
# Head x product correlation
# --------------------------------------------------------------------------------------------
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
    rows = _rows(attn_maps.float())
    out, measure = {}, {}
    for name, t in targets.items():
        spec = PRODUCTS.get(name)
        is_class = (spec.task == "classification") if spec else not t.is_floating_point()
        ok = _rows(valid[name].bool()) if name in valid else torch.ones(rows.shape[0], dtype=torch.bool)
        if is_class:
            y = _rows(t.long())
            ok = ok & (y != IGNORE_INDEX)
            out[name] = _eta(rows[ok], y[ok]).numpy() if ok.sum() > 1 else np.full(rows.shape[1], np.nan)
            measure[name] = "eta"
        else:
            tt = t.float().mean(1) if t.dim() == 4 else t.float()
            y = _rows(tt)
            ok = ok & torch.isfinite(y)
            out[name] = _pearson(rows[ok], y[ok]).numpy() if ok.sum() > 1 else np.full(rows.shape[1], np.nan)
            measure[name] = "pearson_r" + (" (brightness)" if t.dim() == 4 else "")
    df = pd.DataFrame(out, index=[f"head {i}" for i in range(rows.shape[1])])
    df.attrs["measure"] = measure
    return df
