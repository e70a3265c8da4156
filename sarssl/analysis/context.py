"""How much spatial context the land-cover labels of a region need (chapter 2).

Per-pixel classifiers that see the 12 input channels of one pixel, or averaged over a 5 x 5 box
(local means, a little speckle filtering, no shape), are set against a small supervised CNN with
spatial context (a one-level U-Net with dilated convolutions, a receptive field of 36 pixels), on the
same region, labels and train split, each trained for a fixed small budget and scored on the test
split. The gap (the CNN against the better per-pixel classifier) is what spatial structure adds
beyond local means: parcel geometry and the mosaic of crop calendars, settlement blocks, riparian
forest, wetland beside water. When the gap is small the labels are nearly a function of the local
mean, and a pretrained encoder has little to learn that averaging does not give.

:func:`chip_class_mix` summarises how many classes the chips hold (the study's 4.48 km chips hold
several land-cover segments), :func:`region_context_gap` runs the comparison from an M3LEO root.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from sarssl.data.products import IGNORE_INDEX, WORLDCOVER_NAMES

__all__ = ["load_labelled_chips", "chip_class_mix", "box_filter", "PixelMLP", "ContextCNN", "fit_segmenter",
           "fit_pixel_classifier", "evaluate_segmenter", "context_gap", "region_context_gap"]


def load_labelled_chips(root, aoi: str, split: str, year: int = 2020, progress: bool = False):
    """The 12 input channels (dB, ``(N, 12, H, W)`` float32, NaN no-data) and WorldCover classes
    (``(N, H, W)`` int64, ``IGNORE_INDEX`` no-data) of one split of an AOI, in the dataset's chip order."""
    from sarssl.data.datasets import M3LEODataset

    ds = M3LEODataset(root, aoi, split=split, products=(f"s1grd-{year}", f"esaworldcover-{year}"),
                      normalization=None, progress=progress)
    xs, ys = [], []
    for i in range(len(ds)):
        s = ds[i]
        x = s["s1"].numpy().copy()
        x[~s["s1_valid"].numpy()] = np.nan
        xs.append(x)
        ys.append(s["worldcover"].numpy())
    return np.stack(xs).astype(np.float32), np.stack(ys).astype(np.int64)


def chip_class_mix(labels: np.ndarray, min_share: float = 0.02, n_classes: int = len(WORLDCOVER_NAMES)) -> dict:
    """How mixed the chips are: ``labels`` ``(N, H, W)`` class indices (``IGNORE_INDEX`` skipped).

    Returns ``classes_per_chip`` (mean number of classes holding at least ``min_share`` of a chip's
    labelled pixels), ``dominant_share`` (mean share of a chip's largest class), ``single_class_chips``
    (share of chips with one such class), ``n_chips`` and ``per_chip`` (an ``(N, n_classes)`` array of shares).
    """
    lab = np.asarray(labels).reshape(len(labels), -1)
    counts = np.stack([np.bincount(r[(r >= 0) & (r < n_classes)], minlength=n_classes) for r in lab]).astype(float)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    k = (shares >= min_share).sum(axis=1)
    return {"classes_per_chip": float(k.mean()), "dominant_share": float(shares.max(axis=1).mean()),
            "single_class_chips": float((k == 1).mean()), "n_chips": int(len(lab)), "per_chip": shares}


def _normalise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy((x - mean[None, :, None, None]) / std[None, :, None, None])
    return torch.nan_to_num(t, nan=0.0).float()


def box_filter(x: torch.Tensor, size: int = 5) -> torch.Tensor:
    """Per-channel mean over a ``size`` x ``size`` box (windows cut at the chip edge), ``(N, C, H, W)``."""
    return F.avg_pool2d(x, size, stride=1, padding=size // 2, count_include_pad=False)


class PixelMLP(nn.Module):
    """Per-pixel classifier: an MLP on one pixel's channel vector ``(M, C)`` (use it on
    :func:`box_filter` ed channels); ``hidden=0`` is multinomial logistic regression."""

    def __init__(self, in_ch: int, n_classes: int, hidden: int = 64):
        super().__init__()
        if hidden:
            self.net = nn.Sequential(nn.Linear(in_ch, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                     nn.Linear(hidden, n_classes))
        else:
            self.net = nn.Linear(in_ch, n_classes)

    def forward(self, x):
        return self.net(x)


class _PixelSegmenter(nn.Module):
    """A :class:`PixelMLP` applied to every pixel of box-filtered chips ``(N, C, H, W)`` -> logits."""

    def __init__(self, mlp: PixelMLP, box: int):
        super().__init__()
        self.mlp, self.box = mlp, box

    def forward(self, x):
        z = box_filter(x, self.box) if self.box > 1 else x
        n, c, h, w = z.shape
        return self.mlp(z.permute(0, 2, 3, 1).reshape(-1, c)).reshape(n, h, w, -1).permute(0, 3, 1, 2)


class ContextCNN(nn.Module):
    """A small segmentation CNN with spatial context, cheap enough for a CPU: a full-resolution 3 x 3
    stem, a body at half resolution (3 x 3 convolutions dilated 1, 2, 4 and 1), upsampled and joined
    with the stem (a one-level U-Net), then a 1 x 1 classifier. Receptive field 36 pixels."""

    def __init__(self, in_ch: int, n_classes: int, width: int = 32, dilations=(1, 2, 4, 1)):
        super().__init__()
        stem = max(8, 3 * width // 4)

        def block(ci, co, d=1):
            return [nn.Conv2d(ci, co, 3, padding=d, dilation=d, bias=False), nn.BatchNorm2d(co), nn.ReLU()]

        self.stem = nn.Sequential(*block(in_ch, stem))
        layers, c = [], stem
        for d in dilations:
            layers += block(c, width, d)
            c = width
        self.body = nn.Sequential(*layers)
        self.fuse = nn.Sequential(nn.Conv2d(stem + width, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.head = nn.Conv2d(width, n_classes, 1)
        self._dilations = tuple(dilations)

    @property
    def receptive_field(self) -> int:
        """Pixels (full resolution) that reach one output pixel."""
        return 3 + 2 * (1 + 2 * sum(self._dilations)) - 1

    def forward(self, x):
        s = self.stem(x)
        b = self.body(F.avg_pool2d(s, 2, ceil_mode=True))
        b = F.interpolate(b, size=s.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(self.fuse(torch.cat([s, b], 1)))


def _crops(x: torch.Tensor, y: torch.Tensor, n: int, size: int, g: torch.Generator):
    N, _, H, W = x.shape
    size = min(size, H, W)
    idx = torch.randint(0, N, (n,), generator=g)
    i0 = torch.randint(0, H - size + 1, (n,), generator=g)
    j0 = torch.randint(0, W - size + 1, (n,), generator=g)
    xb = torch.stack([x[k, :, a:a + size, b:b + size] for k, a, b in zip(idx.tolist(), i0.tolist(), j0.tolist())])
    yb = torch.stack([y[k, a:a + size, b:b + size] for k, a, b in zip(idx.tolist(), i0.tolist(), j0.tolist())])
    flip = torch.rand(n, generator=g) < 0.5  # north-south flips (the look direction stays roughly east)
    xb[flip] = xb[flip].flip(-2)
    yb[flip] = yb[flip].flip(-2)
    return xb, yb


def _warmup_cosine(opt, steps: int):
    """Linear warm-up over a tenth of the steps, then cosine decay to zero."""
    warm = max(1, steps // 10)

    def factor(i):
        if i < warm:
            return (i + 1) / warm
        return 0.5 * (1 + np.cos(np.pi * min(1.0, (i - warm) / max(1, steps - warm))))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def fit_segmenter(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 300, batch: int = 16,
                  crop: int = 48, lr: float = 3e-3, seed: int = 0) -> dict:
    """Train a segmentation ``model`` on random crops of the chips ``x`` ``(N, C, H, W)`` (normalised)
    with labels ``y`` ``(N, H, W)`` for ``steps`` AdamW steps (warm-up, then cosine decay);
    returns ``{"steps", "seconds"}``."""
    g = torch.Generator().manual_seed(seed)
    model.to(memory_format=torch.channels_last)  # a quarter faster on CPUs (oneDNN)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = _warmup_cosine(opt, steps)
    model.train()
    t0 = time.perf_counter()
    for _ in range(steps):
        xb, yb = _crops(x, y, batch, crop, g)
        loss = F.cross_entropy(model(xb.contiguous(memory_format=torch.channels_last)), yb, ignore_index=IGNORE_INDEX)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return {"steps": steps, "seconds": time.perf_counter() - t0}


def fit_pixel_classifier(mlp: PixelMLP, x: torch.Tensor, y: torch.Tensor, box: int = 5, steps: int = 1000,
                         batch: int = 4096, lr: float = 3e-3, seed: int = 0) -> dict:
    """Train ``mlp`` on pixels of the box-filtered chips ``x`` (labels ``y``), ``batch`` random labelled
    pixels a step for ``steps`` AdamW steps; returns ``{"steps", "seconds"}``."""
    t0 = time.perf_counter()
    z = box_filter(x, box) if box > 1 else x
    z = z.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
    t = y.reshape(-1)
    ok = t != IGNORE_INDEX
    z, t = z[ok], t[ok]
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(mlp.parameters(), lr=lr, weight_decay=1e-4)
    sched = _warmup_cosine(opt, steps)
    mlp.train()
    for _ in range(steps):
        i = torch.randint(0, len(t), (batch,), generator=g)
        loss = F.cross_entropy(mlp(z[i]), t[i])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return {"steps": steps, "seconds": time.perf_counter() - t0}


@torch.no_grad()
def evaluate_segmenter(model: nn.Module, x: torch.Tensor, y: torch.Tensor, n_classes: int, batch: int = 32) -> dict:
    """Pixel accuracy, mIoU (over classes present in the labels or predictions) and per-class IoU on ``x, y``."""
    model.eval()
    conf = torch.zeros(n_classes, n_classes, dtype=torch.int64)
    for i in range(0, len(x), batch):
        pred = model(x[i:i + batch]).argmax(1)
        t = y[i:i + batch]
        ok = t != IGNORE_INDEX
        conf += torch.bincount(t[ok] * n_classes + pred[ok], minlength=n_classes ** 2).reshape(n_classes, n_classes)
    conf = conf.double()
    tp = conf.diag()
    union = conf.sum(0) + conf.sum(1) - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.nan)
    present = conf.sum(1) > 0
    return {"accuracy": float(tp.sum() / conf.sum().clamp(min=1)), "miou": float(torch.nanmean(iou[present])),
            "iou": iou.numpy(), "support": conf.sum(1).numpy()}


def context_gap(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                steps: int = 1000, seed: int = 0, width: int = 32, boxes=(5, 1), hidden: int = 64,
                pixel_steps: int = 1500, n_classes: int = len(WORLDCOVER_NAMES),
                threads: int | None = None) -> pd.DataFrame:
    """Per-pixel classifiers (box-filtered channels) against a small CNN with spatial context.

    Args:
        x_train, x_test: ``(N, C, H, W)`` channels in dB (NaN no-data), y_train, y_test: ``(N, H, W)``
            class indices (``IGNORE_INDEX`` no-data). The channels are normalised with train statistics.
        steps: AdamW steps of the CNN (16 crops of 48 px a step). width: its channels.
        boxes: box filters of the per-pixel classifiers (5: the 5 x 5 mean; 1: the pixel's own values,
            which beats the mean when speckle is low, as in large pixels). hidden: their hidden units
            (0: logistic regression). pixel_steps: their AdamW steps (4096 pixels a step; they are cheap,
            so they are trained to convergence).
        threads: torch threads while training (default: unchanged).

    Returns:
        One row per model (``"per-pixel (5x5 mean)"``, ``"per-pixel (1x1)"``, ``"CNN (context)"``), then
        ``"gap"``: the CNN minus the *best* per-pixel model, with ``accuracy``, ``miou`` (percent),
        ``seconds`` and ``receptive_field`` (pixels); ``attrs["iou"]`` holds per-class IoU of every model.
    """
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        mean = np.nanmean(x_train, axis=(0, 2, 3))
        std = np.nanstd(x_train, axis=(0, 2, 3)) + 1e-6
        xtr, xte = _normalise(x_train, mean, std), _normalise(x_test, mean, std)
        ytr, yte = torch.from_numpy(np.asarray(y_train, np.int64)), torch.from_numpy(np.asarray(y_test, np.int64))
        C = xtr.shape[1]
        rows, ious = [], {}
        for box in boxes:
            torch.manual_seed(seed)
            mlp = PixelMLP(C, n_classes, hidden=hidden)
            fit = fit_pixel_classifier(mlp, xtr, ytr, box=box, steps=pixel_steps, seed=seed)
            ev = evaluate_segmenter(_PixelSegmenter(mlp, box), xte, yte, n_classes)
            rows.append({"model": f"per-pixel ({box}x{box}{' mean' if box > 1 else ''})", "accuracy": 100 * ev["accuracy"],
                         "miou": 100 * ev["miou"], "seconds": fit["seconds"], "receptive_field": box})
            ious[rows[-1]["model"]] = ev["iou"]
        torch.manual_seed(seed)
        cnn = ContextCNN(C, n_classes, width=width)
        fit = fit_segmenter(cnn, xtr, ytr, steps=steps, seed=seed)
        ev = evaluate_segmenter(cnn, xte, yte, n_classes)
        rows.append({"model": "CNN (context)", "accuracy": 100 * ev["accuracy"], "miou": 100 * ev["miou"],
                     "seconds": fit["seconds"], "receptive_field": cnn.receptive_field})
        ious[rows[-1]["model"]] = ev["iou"]
        best_acc = max(r["accuracy"] for r in rows[:-1])
        best_miou = max(r["miou"] for r in rows[:-1])
        gap = {"model": "gap", "accuracy": rows[-1]["accuracy"] - best_acc, "miou": rows[-1]["miou"] - best_miou,
               "seconds": sum(r["seconds"] for r in rows), "receptive_field": np.nan}
        df = pd.DataFrame(rows + [gap]).set_index("model")
        df.attrs["iou"] = pd.DataFrame({k: 100 * v for k, v in ious.items()}, index=list(WORLDCOVER_NAMES)[:n_classes])
        return df
    finally:
        torch.set_num_threads(old)


def _subsample(x, y, max_chips, seed):
    if max_chips is None or len(x) <= max_chips:
        return x, y
    keep = np.sort(np.random.default_rng(seed).choice(len(x), size=int(max_chips), replace=False))
    return x[keep], y[keep]


def region_context_gap(root, aoi: str = "sim-a", year: int = 2020, steps: int = 1000, seed: int = 0,
                       threads: int | None = None, max_chips: int | None = None, **kwargs) -> pd.DataFrame:
    """:func:`context_gap` on an AOI's train and test splits (WorldCover labels, the 12 input channels),
    at most ``max_chips`` chips of each (a seeded sample); ``attrs`` also hold ``train_chips``,
    ``test_chips`` and the test chips' :func:`chip_class_mix`."""
    x_tr, y_tr = _subsample(*load_labelled_chips(root, aoi, "train", year), max_chips, seed)
    x_te, y_te = _subsample(*load_labelled_chips(root, aoi, "test", year), max_chips, seed + 1)
    df = context_gap(x_tr, y_tr, x_te, y_te, steps=steps, seed=seed, threads=threads, **kwargs)
    mix = chip_class_mix(y_te)
    df.attrs.update(train_chips=len(x_tr), test_chips=len(x_te),
                    class_mix={k: v for k, v in mix.items() if k != "per_chip"})
    return df
