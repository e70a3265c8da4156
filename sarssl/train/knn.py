"""Weighted k-NN on frozen features: DINO's ``eval_knn`` classifier and chip-majority land-cover labels.

- :func:`knn_predict` / :func:`knn_accuracy`: cosine similarity of L2-normalised features, the ``k``
  nearest training samples vote with weight ``exp(sim / T)`` (k=20, T=0.07 as in DINO);
- :func:`majority_class`: each chip's most frequent valid class, the label k-NN predicts;
- :func:`extract_cls_features` / :func:`knn_land_cover_accuracy`: the encoder's CLS features of a few
  labelled chips and the k-NN top-1 accuracy against their majority WorldCover class (logged by DINO
  at each epoch end, and the ``knn`` fine-tuning protocol via :func:`sarssl.train.metrics.knn_metrics`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sarssl.data.products import IGNORE_INDEX, WORLDCOVER_CODES

__all__ = ["knn_predict", "knn_accuracy", "majority_class", "extract_cls_features", "knn_land_cover_accuracy"]


@torch.no_grad()
def knn_predict(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                num_classes: int, k: int = 20, temperature: float = 0.07, chunk: int = 1024) -> torch.Tensor:
    """Weighted k-NN class scores (N_test, num_classes); ``argmax`` is the prediction.

    Features (N, D) are L2-normalised here; each test sample takes its ``k`` most cosine-similar
    training samples, which vote for their class with weight ``exp(sim / temperature)``.
    """
    if train_features.shape[0] != train_labels.shape[0]:
        raise ValueError(f"knn_predict: {train_features.shape[0]} train features but {train_labels.shape[0]} labels")
    if train_labels.numel() == 0:
        raise ValueError("knn_predict: no training samples")
    tr = F.normalize(train_features.float(), dim=1)
    te = F.normalize(test_features.float(), dim=1)
    k = min(k, tr.shape[0])
    onehot = F.one_hot(train_labels.long(), num_classes).float()  # (N_train, C)
    out = []
    for i in range(0, te.shape[0], chunk):
        sim = te[i:i + chunk] @ tr.T
        w, idx = sim.topk(k, dim=1)
        w = (w / temperature).exp()
        out.append(torch.einsum("nk,nkc->nc", w, onehot[idx]))
    return torch.cat(out) if out else torch.zeros(0, num_classes)


def knn_accuracy(train_features, train_labels, test_features, test_labels, num_classes: int,
                 k: int = 20, temperature: float = 0.07) -> float:
    """Top-1 accuracy of :func:`knn_predict` on ``test_labels``."""
    scores = knn_predict(train_features, train_labels, test_features, num_classes, k, temperature)
    return float((scores.argmax(1) == test_labels.to(scores.device).long()).float().mean())


def majority_class(labels: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Most frequent valid class of each (H, W) map in (B, H, W) ``labels`` -> (B,) int64; all-ignored -> ``ignore_index``."""
    if labels.ndim == 2:
        labels = labels[None]
    flat = labels.reshape(labels.shape[0], -1).long()
    ok = (flat != ignore_index) & (flat >= 0) & (flat < num_classes)
    counts = torch.zeros(flat.shape[0], num_classes, dtype=torch.long)
    counts.scatter_add_(1, torch.where(ok, flat, 0), ok.long())
    out = counts.argmax(1)
    out[counts.sum(1) == 0] = ignore_index
    return out


@torch.no_grad()
def extract_cls_features(encoder: nn.Module, dataset, indices, batch_size: int = 64, device=None,
                         label_key: str = "worldcover", num_classes: int = len(WORLDCOVER_CODES),
                         progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """CLS features (N, D) of ``dataset[indices]["s1"]`` and each chip's majority ``label_key`` class (N,).

    Chips without any valid label are dropped. The encoder's train/eval mode is restored afterwards.
    """
    from torch.utils.data import DataLoader, Subset
    from tqdm.auto import tqdm

    device = torch.device(device) if device is not None else next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    feats, labels = [], []
    loader = DataLoader(Subset(dataset, [int(i) for i in indices]), batch_size=batch_size, shuffle=False,
                        collate_fn=lambda items: {"s1": torch.stack([it["s1"] for it in items]),
                                                  label_key: torch.stack([it[label_key] for it in items])})
    try:
        for batch in tqdm(loader, desc="k-NN features", disable=not progress, leave=False):
            if label_key not in batch:
                raise KeyError(f"extract_cls_features: samples have no {label_key!r} label")
            x = batch["s1"].to(device)
            x = _fit_input(encoder, x)
            feats.append(encoder(x).float().cpu())
            labels.append(majority_class(batch[label_key], num_classes))
    finally:
        encoder.train(was_training)
    f, y = torch.cat(feats), torch.cat(labels)
    keep = y != IGNORE_INDEX
    return f[keep], y[keep]


def _fit_input(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Resize ``x`` to the encoder's fixed input size unless it accepts any size."""
    pe = getattr(encoder, "patch_embed", None)
    if getattr(encoder, "dynamic_img_size", False) or pe is None or getattr(pe, "img_size", None) is None:
        return x
    size = tuple(pe.img_size)
    if tuple(x.shape[-2:]) != size:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return x


def knn_land_cover_accuracy(encoder: nn.Module, train_dataset, test_dataset=None, k: int = 20,
                            temperature: float = 0.07, max_train: int = 512, max_test: int = 256,
                            batch_size: int = 64, seed: int = 0, device=None,
                            num_classes: int = len(WORLDCOVER_CODES), label_key: str = "worldcover") -> dict:
    """k-NN top-1 accuracy of CLS features against chip-majority land cover on a small labelled subset.

    Draws ``max_train`` chips of ``train_dataset`` and ``max_test`` of ``test_dataset`` (seeded);
    without ``test_dataset`` the two subsets are disjoint draws from ``train_dataset``. Returns
    ``{"knn_top1", "knn_majority_baseline", "knn_n_train", "knn_n_test"}`` (the baseline is the
    accuracy of always predicting the most frequent training class).
    """
    rng = np.random.default_rng(seed)
    if test_dataset is None:
        perm = rng.permutation(len(train_dataset))
        n_test = min(max_test, len(perm) // 2)
        test_idx, train_idx = perm[:n_test], perm[n_test:n_test + max_train]
        test_dataset = train_dataset
    else:
        train_idx = rng.permutation(len(train_dataset))[:max_train]
        test_idx = rng.permutation(len(test_dataset))[:max_test]
    ftr, ytr = extract_cls_features(encoder, train_dataset, train_idx, batch_size, device, label_key, num_classes)
    fte, yte = extract_cls_features(encoder, test_dataset, test_idx, batch_size, device, label_key, num_classes)
    if len(ytr) == 0 or len(yte) == 0:
        raise ValueError(f"knn_land_cover_accuracy: no chips with a valid {label_key!r} label "
                         f"({len(ytr)} train, {len(yte)} test)")
    acc = knn_accuracy(ftr, ytr, fte, yte, num_classes, k, temperature)
    baseline = float((yte == torch.bincount(ytr, minlength=num_classes).argmax()).float().mean())
    return {"knn_top1": acc, "knn_majority_baseline": baseline, "knn_n_train": int(len(ytr)),
            "knn_n_test": int(len(yte))}
