"""Patch-grid features and pooled products: what the probes and the head x product correlations read.

Everything lives on the ViT's patch grid (h, w) = (H / patch, W / patch):

- features (:func:`extract_patch_features`): ``"attention"`` CLS attention (heads channels),
  ``"embedding"`` last-block patch tokens after the final norm (D channels), ``"sar"`` the 12 input
  channels averaged over each patch's valid pixels;
- targets: continuous products are averaged over each patch's valid pixels (a patch is valid when at
  least ``min_valid`` of its pixels are); class products take the patch's majority class among
  non-ignored pixels (:data:`IGNORE_INDEX` when none is valid).

The products are the six label products of :data:`sarssl.data.products.LABEL_SPECS` (by sample key).
Chips, not patches, are split between train and test (:func:`split_chips`), so neighbouring patches
never leak.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from sarssl.analysis.attention import as_vit, cls_attention_and_tokens
from sarssl.data.products import IGNORE_INDEX, LABEL_SPECS, ProductSpec

__all__ = ["FEATURE_KINDS", "PatchFeatures", "pool_continuous", "pool_classes", "extract_patch_features",
           "split_chips", "patch_rows"]

FEATURE_KINDS = ("attention", "embedding", "sar")


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
    if spec.key not in batch:
        raise KeyError(f"product {spec.key!r} missing from the batch: keys are {sorted(batch)}")
    y = batch[spec.key]
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

    ``products``: sample keys from :data:`~sarssl.data.products.LABEL_SPECS` (default: those present in the first batch). The model
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
                names = [p for p in LABEL_SPECS if p in batch] if products is None else list(products)
                unknown = [p for p in names if p not in LABEL_SPECS]
                if unknown:
                    raise ValueError(f"unknown products {unknown}: expected some of {list(LABEL_SPECS)}")
                specs = [LABEL_SPECS[p] for p in names]
                targets.update({s.key: [] for s in specs})
                valids.update({s.key: [] for s in specs})
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
                targets[s.key].append(t.cpu())
                valids[s.key].append(ok.cpu())
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


def patch_rows(grid: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) -> (N*h*w, C); (N, h, w) -> (N*h*w,)."""
    if grid.dim() == 3:
        return grid.reshape(-1)
    return grid.permute(0, 2, 3, 1).reshape(-1, grid.shape[1])
