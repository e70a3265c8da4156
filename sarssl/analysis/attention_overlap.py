"""Does attention follow land cover? Overlap of each head's top-mass patches with WorldCover classes.

For a chip with at least two land-cover classes, each head's attention is reduced to the smallest set
of patches holding ``mass`` of it (:func:`sarssl.analysis.attention.threshold_attention`), and that
set is scored by its intersection-over-union with the best-matching class mask on the same patch grid.
A chip's score is the mean over heads. Two baselines get the same treatment, so that the scores can be
compared with intervals:

- a random-initialised encoder of the same architecture (the control for "training taught this");
- brightness saliency: for each head, the same number of patches as that head kept, taken as the
  brightest in VV (a map a model gets for free from the input).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sarssl.data.products import IGNORE_INDEX


def class_masks_on_patches(labels: torch.Tensor, patch: int, n_classes: int, min_share: float = 0.02,
                           ignore_index: int = IGNORE_INDEX) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class patch masks and which classes a chip holds.

    Args:
        labels: (B, H, W) class indices, ``ignore_index`` for no-data; H and W multiples of ``patch``.
        min_share: a class is present when it covers at least this share of the chip's valid pixels.

    Returns:
        ``masks`` (B, C, h, w) bool: the patch is mostly (> 50 % of its valid pixels) class c;
        ``present`` (B, C) bool.
    """
    if labels.ndim != 3:
        raise ValueError(f"labels must be (B, H, W), got shape {tuple(labels.shape)}")
    B, H, W = labels.shape
    if H % patch or W % patch:
        raise ValueError(f"labels of {H}x{W} px do not tile into {patch}-px patches")
    valid = labels != ignore_index
    onehot = F.one_hot(labels.clamp(0, n_classes - 1).long(), n_classes).permute(0, 3, 1, 2).float()
    onehot = onehot * valid[:, None].float()
    counts = F.avg_pool2d(onehot, patch) * patch * patch  # (B, C, h, w) pixels of each class per patch
    n_valid = counts.sum(dim=1, keepdim=True)
    masks = (counts > 0.5 * n_valid) & (n_valid > 0)
    share = onehot.sum(dim=(-2, -1)) / valid.sum(dim=(-2, -1)).clamp_min(1)[:, None]
    return masks, share >= min_share


def best_class_iou(sets: torch.Tensor, masks: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """IoU of each patch set with its best-matching present class: (B, K, h, w), (B, C, h, w) -> (B, K)."""
    s = sets.flatten(2).float()  # (B, K, P)
    m = masks.flatten(2).float()  # (B, C, P)
    inter = torch.einsum("bkp,bcp->bkc", s, m)
    union = s.sum(-1)[:, :, None] + m.sum(-1)[:, None, :] - inter
    iou = inter / union.clamp_min(1)
    iou = iou.masked_fill(~present[:, None, :], -1.0)
    return iou.max(dim=-1).values.clamp_min(0.0)


def brightness_sets(s1: torch.Tensor, sizes: torch.Tensor, patch: int, channel: int) -> torch.Tensor:
    """For each chip and head, the ``sizes[b, k]`` brightest patches of channel ``channel``.

    Args:
        s1: (B, 12, H, W) input channels (any monotone scaling of dB; no-data as NaN or already filled).
        sizes: (B, K) patch counts (the heads' own set sizes).

    Returns:
        (B, K, h, w) bool.
    """
    x = torch.nan_to_num(s1[:, channel:channel + 1].float(), nan=float("-inf"))
    x = torch.where(torch.isinf(x), torch.full_like(x, -1e6), x)
    bright = F.avg_pool2d(x, patch)[:, 0]  # (B, h, w)
    B, h, w = bright.shape
    order = torch.argsort(bright.flatten(1), dim=-1, descending=True)  # (B, P)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(h * w).expand(B, -1))
    keep = rank[:, None, :] < sizes[:, :, None]  # (B, K, P)
    return keep.reshape(B, sizes.shape[1], h, w)


def chips_with_classes(present: torch.Tensor, min_classes: int = 2) -> torch.Tensor:
    """Indices of chips holding at least ``min_classes`` present classes."""
    return torch.nonzero(present.sum(dim=1) >= min_classes).flatten()


def attention_overlap(sets: torch.Tensor, labels: torch.Tensor, patch: int, n_classes: int,
                      s1: torch.Tensor | None = None, brightness_channel: int | None = None,
                      min_classes: int = 2, min_share: float = 0.02) -> dict:
    """Per-chip overlap scores of attention sets with land cover (and of size-matched brightness sets).

    Args:
        sets: (B, heads, h, w) bool top-mass patch sets.
        labels: (B, H, W) WorldCover class indices.
        s1, brightness_channel: when given, the brightness baseline is scored too.

    Returns:
        ``{"chips": (n,) indices of the chips scored (>= min_classes classes), "score": (n,) mean over
        heads of the best-class IoU, "per_head": (n, heads), "brightness": (n,) or None}``, numpy.
    """
    masks, present = class_masks_on_patches(labels, patch, n_classes, min_share)
    if masks.shape[-2:] != sets.shape[-2:]:
        raise ValueError(f"attention grid {tuple(sets.shape[-2:])} does not match the label patch grid "
                         f"{tuple(masks.shape[-2:])} (patch {patch})")
    keep = chips_with_classes(present, min_classes)
    per_head = best_class_iou(sets[keep], masks[keep], present[keep])
    out = {"chips": keep.numpy(), "score": per_head.mean(dim=1).numpy(), "per_head": per_head.numpy(),
           "brightness": None}
    if s1 is not None and brightness_channel is not None:
        sizes = sets[keep].flatten(2).sum(-1)
        bsets = brightness_sets(s1[keep], sizes, patch, brightness_channel)
        out["brightness"] = best_class_iou(bsets, masks[keep], present[keep]).mean(dim=1).numpy()
    return out

