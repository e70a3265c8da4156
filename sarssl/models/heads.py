"""Task heads on any timm ``VisionTransformer`` encoder: tile regression, pixel regression, segmentation.

Every head is an ``nn.Module`` holding the encoder as ``.encoder`` and splits its forward pass in two,
so frozen-encoder protocols can cache the first half:

- ``features(x) -> dict``: what the decoder reads from the encoder, computed by :func:`vit_features`
  (``"cls"`` (B, D) and ``"mean"`` (B, D) from the last block after the final norm; ``"grid"``
  (B, K, D, h, w): patch tokens of the blocks ``head.indices``, each after the final norm);
- ``decode(features, size=None) -> Tensor``: the trainable decoder;
- ``forward(x) = decode(features(x), x.shape[-2:])``.

Heads:

- :class:`TileRegressionHead` -> (B, out_dim): CLS or mean-pooled tokens, a linear layer or an MLP
  (the study's vegetation target, the tile mean of MODIS percent tree cover);
- :class:`PixelRegressionHead` -> (B, out_channels, H, W): the last block's patch grid upsampled
  progressively (x2 per stage: bilinear, 3x3 conv, GroupNorm, GELU) to the input size;
- :class:`SegmentationHead` -> (B, n_classes, H, W) logits: intermediate blocks (default 4, evenly
  spaced) projected by 1x1 convs, fused, then the same progressive upsampling (a SETR-MLA-style decoder).

``decoder="linear"`` in the dense heads swaps the decoder for a 1x1 convolution on the (concatenated)
patch features with bilinear upsampling of its output (the usual linear segmentation probe).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["vit_features", "default_indices", "ProgressiveUpsampler", "TileRegressionHead", "PixelRegressionHead",
           "SegmentationHead", "DenseHead", "encoder_patch_size", "encoder_depth"]


def encoder_patch_size(encoder: nn.Module) -> int:
    """Patch side in pixels of a timm ViT (square patches)."""
    ps = encoder.patch_embed.patch_size
    ps = ps if isinstance(ps, int) else ps[0]
    return int(ps)


def encoder_depth(encoder: nn.Module) -> int:
    """Number of transformer blocks."""
    return len(encoder.blocks)


def default_indices(depth: int, n: int = 4) -> tuple[int, ...]:
    """``n`` evenly spaced block indices ending with the last block: depth 12, n 4 -> (2, 5, 8, 11)."""
    n = max(1, min(n, depth))
    step = depth / n
    return tuple(int(round(step * (i + 1))) - 1 for i in range(n))


def vit_features(encoder: nn.Module, x: torch.Tensor, indices: Sequence[int] = (-1,), grid: bool = True) -> dict:
    """One pass of a timm ViT returning pooled and grid features (all after the encoder's final norm).

    Args:
        x: (B, C, H, W) input. indices: blocks whose patch tokens go into ``"grid"`` (negative
            indices count from the end; the last block is always run for ``"cls"``/``"mean"``).
        grid: also return ``"grid"``.

    Returns:
        ``{"cls": (B, D), "mean": (B, D), "grid": (B, K, D, h, w)}`` with K = len(indices).
    """
    depth = encoder_depth(encoder)
    idx = sorted({i % depth for i in indices} | {depth - 1})
    final, inter = encoder.forward_intermediates(x, indices=idx, norm=True, return_prefix_tokens=False,
                                                 output_fmt="NCHW", intermediates_only=False)
    # ``final`` (B, N, D) is forward_features' output: the final norm of the last block.
    npt = getattr(encoder, "num_prefix_tokens", 1)
    out = {"cls": final[:, 0] if npt else final.mean(1), "mean": final[:, npt:].mean(1)}
    if grid:
        pos = {b: j for j, b in enumerate(idx)}
        out["grid"] = torch.stack([inter[pos[i % depth]] for i in indices], dim=1)
    return out


class _EncoderHead(nn.Module):
    """Shared plumbing: ``encoder``, ``features``/``decode``/``forward``; subclasses set ``uses``."""

    uses: tuple[str, ...] = ("grid",)

    def __init__(self, encoder: nn.Module, indices: Sequence[int] = (-1,)):
        super().__init__()
        if not hasattr(encoder, "forward_intermediates"):
            raise TypeError(f"the encoder is a {type(encoder).__name__}; expected a timm VisionTransformer "
                            "(with forward_intermediates)")
        self.encoder = encoder
        depth = encoder_depth(encoder)
        for i in indices:
            if not -depth <= i < depth:
                raise ValueError(f"block index {i} out of range for an encoder with {depth} blocks")
        self.indices = tuple(int(i) % depth for i in indices)
        self.patch_size = encoder_patch_size(encoder)
        self.embed_dim = int(encoder.embed_dim)

    def features(self, x: torch.Tensor) -> dict:
        """Encoder outputs the decoder reads (see :func:`vit_features`)."""
        return vit_features(self.encoder, x, self.indices, grid="grid" in self.uses)

    def decode(self, feats: dict, size=None) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.features(x), tuple(x.shape[-2:]))

    def decoder_parameters(self):
        """Parameters of everything but the encoder."""
        return [p for n, p in self.named_parameters() if not n.startswith("encoder.")]


class TileRegressionHead(_EncoderHead):
    """Tile-level regression: (B, C, H, W) -> (B, out_dim).

    Args:
        encoder: timm ViT. out_dim: outputs per tile. pool: ``"cls"`` or ``"mean"`` (patch tokens).
        hidden: 0 for a linear layer, else a 2-layer MLP of that width. dropout: before the last layer.
    """

    def __init__(self, encoder: nn.Module, out_dim: int = 1, pool: str = "cls", hidden: int = 0, dropout: float = 0.0):
        super().__init__(encoder, (-1,))
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean', got {pool!r}")
        self.pool = pool
        self.uses = (pool,)
        d = self.embed_dim
        layers: list[nn.Module] = []
        if hidden:
            layers += [nn.Linear(d, hidden), nn.GELU()]
            d = hidden
        layers += [nn.Dropout(dropout), nn.Linear(d, out_dim)]
        self.mlp = nn.Sequential(*layers)
        nn.init.trunc_normal_(self.mlp[-1].weight, std=0.01)
        nn.init.zeros_(self.mlp[-1].bias)

    def features(self, x: torch.Tensor) -> dict:
        return vit_features(self.encoder, x, (-1,), grid=False)

    def decode(self, feats: dict, size=None) -> torch.Tensor:
        return self.mlp(feats[self.pool])

    def init_output_bias(self, value: float | torch.Tensor) -> None:
        """Start predictions at ``value`` (e.g. the mean target of the labelled tiles)."""
        with torch.no_grad():
            self.mlp[-1].bias.fill_(float(value)) if not torch.is_tensor(value) else self.mlp[-1].bias.copy_(value)


def _norm(channels: int) -> nn.GroupNorm:
    groups = math.gcd(channels, 8) or 1
    return nn.GroupNorm(groups, channels)


class ProgressiveUpsampler(nn.Module):
    """(B, C_in, h, w) -> (B, C_out, h * 2^S, w * 2^S): S stages of bilinear x2, 3x3 conv, GroupNorm, GELU
    (channels halved each stage, at least ``min_dim``), then a 1x1 conv to ``out_channels``."""

    def __init__(self, in_channels: int, out_channels: int, n_stages: int, min_dim: int = 16):
        super().__init__()
        stages, c = [], in_channels
        for _ in range(n_stages):
            nxt = max(min_dim, c // 2)
            stages.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                        nn.Conv2d(c, nxt, 3, padding=1, bias=False), _norm(nxt), nn.GELU()))
            c = nxt
        self.stages = nn.Sequential(*stages)
        self.out = nn.Conv2d(c, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.stages(x))


class DenseHead(_EncoderHead):
    """Dense prediction from patch grids of blocks ``indices``: (B, C, H, W) -> (B, out_channels, H, W).

    Args:
        encoder: timm ViT. out_channels: output maps (classes for segmentation).
        indices: blocks read (default: the last one).
        decoder: ``"progressive"`` (1x1 projection of each block to ``decoder_dim``, concatenation,
            3x3 fusion conv, log2(patch) upsampling stages) or ``"linear"`` (1x1 conv on the
            concatenated features, bilinear upsampling of the output).
        decoder_dim: width after fusion (halved per upsampling stage).
    """

    def __init__(self, encoder: nn.Module, out_channels: int, indices: Sequence[int] = (-1,),
                 decoder: str = "progressive", decoder_dim: int = 128):
        super().__init__(encoder, indices)
        if decoder not in ("progressive", "linear"):
            raise ValueError(f"decoder must be 'progressive' or 'linear', got {decoder!r}")
        self.decoder = decoder
        self.out_channels = out_channels
        k, d = len(self.indices), self.embed_dim
        if decoder == "linear":
            self.norm = nn.BatchNorm2d(k * d, affine=False, track_running_stats=True)
            self.classifier = nn.Conv2d(k * d, out_channels, 1)
        else:
            self.proj = nn.ModuleList([nn.Conv2d(d, decoder_dim, 1) for _ in range(k)])
            self.fuse = nn.Sequential(nn.Conv2d(k * decoder_dim, decoder_dim, 3, padding=1, bias=False),
                                      _norm(decoder_dim), nn.GELU())
            n_stages = max(0, int(math.floor(math.log2(self.patch_size))))
            self.upsampler = ProgressiveUpsampler(decoder_dim, out_channels, n_stages)

    def decode(self, feats: dict, size=None) -> torch.Tensor:
        g = feats["grid"]  # (B, K, D, h, w)
        if g.dim() != 5 or g.shape[1] != len(self.indices):
            raise ValueError(f"expected grid features (B, {len(self.indices)}, D, h, w), got {tuple(g.shape)}")
        B, K, D, h, w = g.shape
        size = tuple(size) if size is not None else (h * self.patch_size, w * self.patch_size)
        if self.decoder == "linear":
            y = self.classifier(self.norm(g.reshape(B, K * D, h, w)))
        else:
            y = torch.cat([p(g[:, i]) for i, p in enumerate(self.proj)], dim=1)
            y = self.upsampler(self.fuse(y))
        if tuple(y.shape[-2:]) != size:
            y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
        return y

    def init_output_bias(self, value: float | torch.Tensor) -> None:
        """Start predictions at ``value`` (per output channel or one number)."""
        layer = self.classifier if self.decoder == "linear" else self.upsampler.out
        with torch.no_grad():
            if torch.is_tensor(value):
                layer.bias.copy_(value)
            else:
                layer.bias.fill_(float(value))


class PixelRegressionHead(DenseHead):
    """Per-pixel regression (tree cover, biomass, built surface): -> (B, out_channels, H, W).

    Reads the last block's patch grid (``indices`` to change) and upsamples it progressively.
    """

    def __init__(self, encoder: nn.Module, out_channels: int = 1, indices: Sequence[int] = (-1,),
                 decoder: str = "progressive", decoder_dim: int = 128):
        super().__init__(encoder, out_channels, indices, decoder, decoder_dim)


class SegmentationHead(DenseHead):
    """Semantic segmentation (11 ESA WorldCover classes by default): -> (B, n_classes, H, W) logits.

    Reads ``n_levels`` evenly spaced intermediate blocks (or explicit ``indices``) through
    ``forward_intermediates`` and decodes them with a multi-level fusion + progressive upsampling.
    """

    def __init__(self, encoder: nn.Module, n_classes: int = 11, indices: Sequence[int] | None = None,
                 n_levels: int = 4, decoder: str = "progressive", decoder_dim: int = 128):
        if indices is None:
            indices = default_indices(encoder_depth(encoder), n_levels)
        super().__init__(encoder, n_classes, indices, decoder, decoder_dim)
        self.n_classes = n_classes
