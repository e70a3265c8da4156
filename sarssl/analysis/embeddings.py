"""Chip embeddings across regions: extraction, PCA / t-SNE projections, a region distance, a scatter plot.

A chip's embedding is the encoder's CLS token (``pool="cls"``) or the mean of its patch tokens
(``pool="mean"``), both taken from ``forward_features`` (after the final norm): (N, D) float32.

Region distance. :func:`frechet_distance` fits a Gaussian to each set and returns the squared
Fréchet (2-Wasserstein) distance between them, as in FID:
``||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2)``. It is 0 for identical sets and a
pure shift ``v`` of one set adds exactly ``||v||^2``; units are squared embedding units, so only
compare distances computed with the same encoder. :func:`mmd_rbf` (squared maximum mean discrepancy
with a Gaussian kernel, median-heuristic bandwidth) is the kernel alternative, less sensitive to the
Gaussian assumption; :func:`region_distance` picks one by name.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from sarssl.analysis.attention import as_vit

__all__ = [
    "chip_embeddings",
    "region_embeddings",
    "project",
    "frechet_distance",
    "mmd_rbf",
    "region_distance",
    "plot_embeddings",
]


def _batches(data, batch_size: int):
    """Yield (B, C, H, W) tensors from a tensor, or from a loader of tensors / canonical sample dicts."""
    if torch.is_tensor(data):
        for i in range(0, data.shape[0], batch_size):
            yield data[i:i + batch_size]
        return
    for batch in data:
        if isinstance(batch, dict):
            if "s1" not in batch:
                raise KeyError(f"batch has no 's1' input: keys are {sorted(batch)}")
            yield batch["s1"]
        elif isinstance(batch, (list, tuple)):
            yield batch[0]
        else:
            yield batch


@torch.no_grad()
def chip_embeddings(model: nn.Module, data, pool: str = "cls", device=None, batch_size: int = 64,
                    progress: bool = True) -> np.ndarray:
    """Embeddings (N, D) float32 of the chips in ``data``: a (N, C, H, W) tensor or a loader.

    ``pool``: ``"cls"`` (CLS token) or ``"mean"`` (mean of the patch tokens). Eval mode on ``device``
    (default: the model's device); the model's training flag is restored afterwards.
    """
    if pool not in ("cls", "mean"):
        raise ValueError(f"pool must be 'cls' or 'mean', got {pool!r}")
    vit = as_vit(model)
    if device is not None:
        vit.to(device)
    dev = next(vit.parameters()).device
    npt = int(getattr(vit, "num_prefix_tokens", 1))
    if pool == "cls" and getattr(vit, "cls_token", None) is None:
        raise ValueError("pool='cls' but the ViT has no CLS token: use pool='mean'")
    was_training = vit.training
    vit.eval()
    out = []
    try:
        for x in tqdm(_batches(data, batch_size), desc=f"{pool} embeddings", disable=not progress):
            tokens = vit.forward_features(x.float().to(dev))
            emb = tokens[:, 0] if pool == "cls" else tokens[:, npt:].mean(1)
            out.append(emb.float().cpu())
    finally:
        vit.train(was_training)
    if not out:
        raise ValueError("chip_embeddings: no chips in data")
    return torch.cat(out).numpy()


def region_embeddings(model: nn.Module, regions: dict, pool: str = "cls", device=None, batch_size: int = 64,
                      progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``{region name: tensor or loader}`` -> ``(embeddings (N, D), region label per row (N,) str)``."""
    embs, labels = [], []
    for name, data in regions.items():
        e = chip_embeddings(model, data, pool=pool, device=device, batch_size=batch_size, progress=progress)
        embs.append(e)
        labels.append(np.full(len(e), str(name), dtype=object))
    return np.concatenate(embs), np.concatenate(labels)


def project(emb: np.ndarray, method: str = "pca", n_components: int = 2, seed: int = 0,
            perplexity: float = 30.0, standardize: bool = False, init: str = "pca") -> np.ndarray:
    """Project (N, D) embeddings to (N, n_components) with ``"pca"`` or ``"tsne"`` (scikit-learn, seeded).

    t-SNE's perplexity is lowered to (N - 1) / 3 when there are too few points (with a warning);
    ``init`` is ``"pca"`` (a stable layout, nearly independent of the seed) or ``"random"`` (drawn
    from ``seed``); either way the same seed gives the same layout.
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = np.asarray(emb, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"project: expected (N >= 2, D) embeddings, got shape {x.shape}")
    if standardize:
        x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-12)
    if method == "pca":
        return PCA(n_components=n_components, svd_solver="full", random_state=seed).fit_transform(x).astype(np.float32)
    if method == "tsne":
        limit = (x.shape[0] - 1) / 3.0
        if perplexity >= limit:
            new = max(1.0, limit - 1e-3)
            warnings.warn(f"t-SNE perplexity {perplexity} too large for {x.shape[0]} points; using {new:.1f}",
                          stacklevel=2)
            perplexity = new
        tsne = TSNE(n_components=n_components, perplexity=perplexity, init=init, random_state=seed,
                    learning_rate="auto")
        return tsne.fit_transform(x).astype(np.float32)
    raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Squared Fréchet distance between Gaussian fits of a (Na, D) and b (Nb, D) (float64, >= 0)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"frechet_distance: need two (N >= 2, D) arrays with equal D, got {a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False).reshape(a.shape[1], -1), np.cov(b, rowvar=False).reshape(b.shape[1], -1)
    ra = _sqrt_psd(s_a)
    m = ra @ s_b @ ra
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    d = float(np.sum((mu_a - mu_b) ** 2) + np.trace(s_a) + np.trace(s_b) - 2 * cross)
    return max(d, 0.0)


def mmd_rbf(a: np.ndarray, b: np.ndarray, bandwidth: float | None = None) -> float:
    """Squared MMD (biased V-statistic, >= 0) with k(x, y) = exp(-||x - y||^2 / (2 bandwidth^2)).

    ``bandwidth`` defaults to the median pairwise distance of the pooled set (median heuristic).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"mmd_rbf: need two (N, D) arrays with equal D, got {a.shape} and {b.shape}")
    z = np.concatenate([a, b])
    sq = np.square(z).sum(1)
    d2 = np.clip(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0, None)
    if bandwidth is None:
        off = d2[np.triu_indices(len(z), 1)]
        bandwidth = float(np.sqrt(np.median(off))) if off.size and np.median(off) > 0 else 1.0
    k = np.exp(-d2 / (2 * bandwidth ** 2))
    na = len(a)
    kaa, kbb, kab = k[:na, :na].mean(), k[na:, na:].mean(), k[:na, na:].mean()
    return max(float(kaa + kbb - 2 * kab), 0.0)


def region_distance(a: np.ndarray, b: np.ndarray, method: str = "frechet", **kwargs) -> float:
    """Distance between two regions' embeddings: ``"frechet"`` (:func:`frechet_distance`) or ``"mmd"``."""
    if method == "frechet":
        return frechet_distance(a, b)
    if method == "mmd":
        return mmd_rbf(a, b, **kwargs)
    raise ValueError(f"method must be 'frechet' or 'mmd', got {method!r}")


def plot_embeddings(coords: np.ndarray, regions, ax=None, title: str | None = None, colors: dict | None = None,
                    s: float = 12.0, alpha: float = 0.7, axis_label: str = "component"):
    """Scatter (N, 2) ``coords`` coloured by ``regions`` (N,) labels; returns the matplotlib Figure."""
    import matplotlib.pyplot as plt

    coords = np.asarray(coords)
    regions = np.asarray(regions).astype(str)
    if coords.ndim != 2 or coords.shape[1] < 2 or len(coords) != len(regions):
        raise ValueError(f"plot_embeddings: need (N, 2) coords and N labels, got {coords.shape} and {regions.shape}")
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 4.5))
    else:
        fig = ax.figure
    names = list(dict.fromkeys(regions.tolist()))
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, name in enumerate(names):
        sel = regions == name
        color = (colors or {}).get(name, palette[i % len(palette)])
        ax.scatter(coords[sel, 0], coords[sel, 1], s=s, alpha=alpha, color=color, label=f"{name} ({sel.sum()})",
                   edgecolors="none")
    ax.set_xlabel(f"{axis_label} 1")
    ax.set_ylabel(f"{axis_label} 2")
    ax.legend(title="region", frameon=False)
    if title:
        ax.set_title(title)
    return fig
