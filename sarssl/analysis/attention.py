"""CLS-token attention maps of a timm Vision Transformer, without touching fused attention.

timm's ``Attention`` uses ``F.scaled_dot_product_attention`` (``attn.fused_attn = True``), which never
materialises the attention weights. Instead of switching that off, :func:`capture_cls_attention`
registers a forward pre-hook on *one* block's ``attn`` module for the duration of a ``with`` block.
The hook receives the block's normed input ``x`` (B, N, D) and recomputes, with the module's own
weights (``attn.qkv``, ``attn.q_norm``, ``attn.k_norm``, ``attn.scale``, ``attn.num_heads``), the
CLS row of ``softmax(q k^T * scale)`` only: a (B, heads, 1, N) product, cheap next to the block.
The module itself still runs its fused path, every ``fused_attn`` flag is left as it was, and the
hook is removed on exit, so the model's outputs are bit-identical with and without extraction.

Shapes: ``x`` is (B, C, H, W); maps are (B, heads, h, w) on the patch grid (h = H // patch); the
CLS row sums to 1 over *all* N tokens (CLS, register tokens, patches), so a map sums to <= 1.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "as_vit",
    "capture_cls_attention",
    "cls_attention",
    "cls_attention_and_tokens",
    "cls_attention_shares",
    "threshold_attention",
    "upsample_to_pixels",
    "attention_maps",
    "patch_grid",
]


class _StopForward(Exception):
    """Raised inside a hook to end a forward pass once the wanted block has been read."""


def as_vit(model: nn.Module) -> nn.Module:
    """The timm ``VisionTransformer`` inside ``model`` (itself, or ``.backbone`` / ``.encoder`` chains).

    Accepts e.g. a bare encoder, a ``MultiCropWrapper`` (``.backbone``) or a wrapper with ``.encoder``.
    """
    seen = model
    for _ in range(4):
        if hasattr(seen, "blocks") and hasattr(seen, "patch_embed"):
            return seen
        nxt = getattr(seen, "backbone", None) or getattr(seen, "encoder", None)
        if nxt is None:
            break
        seen = nxt
    raise TypeError(
        f"expected a timm VisionTransformer (with .blocks and .patch_embed) or a wrapper exposing it as "
        f".backbone/.encoder, got {type(model).__name__}"
    )


def _block_index(vit: nn.Module, block: int) -> int:
    depth = len(vit.blocks)
    if not -depth <= block < depth:
        raise IndexError(f"block={block} out of range for a ViT with {depth} blocks (use -{depth}..{depth - 1})")
    return block % depth


def _check_attn(attn: nn.Module, idx: int) -> None:
    for name in ("qkv", "num_heads", "scale"):
        if not hasattr(attn, name):
            raise TypeError(
                f"blocks[{idx}].attn ({type(attn).__name__}) has no '{name}': expected timm's Attention "
                "with a fused qkv projection"
            )


def _patch_size(vit: nn.Module) -> tuple[int, int]:
    ps = vit.patch_embed.patch_size
    return (ps, ps) if isinstance(ps, int) else tuple(ps)


def patch_grid(model: nn.Module, image_size: tuple[int, int]) -> tuple[int, int]:
    """Patch grid (h, w) of ``model`` for an input of ``image_size`` = (H, W) pixels."""
    vit = as_vit(model)
    pe = vit.patch_embed
    if hasattr(pe, "dynamic_feat_size"):  # input size / patch (ceil with dynamic padding)
        return tuple(int(s) for s in pe.dynamic_feat_size(tuple(int(s) for s in image_size)))
    ph, pw = _patch_size(vit)
    return image_size[0] // ph, image_size[1] // pw


def _cls_row(attn: nn.Module, x: torch.Tensor, attn_mask: torch.Tensor | None, is_causal: bool = False
             ) -> torch.Tensor:
    """softmax(q_cls k^T * scale) for one timm Attention: (B, heads, N), float32."""
    B, N, _ = x.shape
    heads = attn.num_heads
    head_dim = getattr(attn, "head_dim", None) or attn.qkv.out_features // (3 * heads)
    qkv = attn.qkv(x).reshape(B, N, 3, heads, head_dim).permute(2, 0, 3, 1, 4)  # 3, B, h, N, d
    q, k = qkv[0], qkv[1]
    q, k = attn.q_norm(q), attn.k_norm(k)
    q_cls = q[:, :, :1].float() * attn.scale  # B, h, 1, d
    logits = q_cls @ k.float().transpose(-2, -1)  # B, h, 1, N
    if attn_mask is not None:
        mask = attn_mask[..., :1, :] if attn_mask.dim() >= 2 else attn_mask
        if mask.dtype == torch.bool:
            logits = logits.masked_fill(~mask, float("-inf"))
        else:
            logits = logits + mask.float()
    if is_causal:  # row 0 of a causal mask sees only itself
        logits[..., 1:] = float("-inf")
    return logits.softmax(dim=-1)[:, :, 0]


@dataclass
class CapturedAttention:
    """Filled by :func:`capture_cls_attention`: ``cls_row`` is (B, heads, N) over all tokens."""

    block: int
    num_prefix_tokens: int
    cls_row: torch.Tensor | None = None
    calls: int = field(default=0)

    def patches(self, grid: tuple[int, int]) -> torch.Tensor:
        """CLS-to-patch attention on the patch grid: (B, heads, h, w)."""
        if self.cls_row is None:
            raise RuntimeError(f"no attention captured from block {self.block}: run a forward pass inside the context")
        row = self.cls_row[:, :, self.num_prefix_tokens:]
        h, w = grid
        if row.shape[-1] != h * w:
            raise ValueError(
                f"block {self.block}: {row.shape[-1]} patch tokens after {self.num_prefix_tokens} prefix tokens, "
                f"expected a {h}x{w} grid"
            )
        return row.reshape(*row.shape[:2], h, w)


@contextlib.contextmanager
def capture_cls_attention(model: nn.Module, block: int = -1, stop: bool = False):
    """Context manager recording the CLS attention row of ``model.blocks[block]`` during forward passes.

    Only a forward pre-hook is added to that block's ``attn`` (removed on exit, even on error); no
    attention flag or weight changes. With ``stop=True`` the forward pass ends (silently, inside
    :func:`cls_attention`) right after the row is computed. Yields a :class:`CapturedAttention`.
    """
    vit = as_vit(model)
    idx = _block_index(vit, block)
    if getattr(vit, "cls_token", None) is None:
        raise ValueError("the ViT has no CLS token (class_token=False): CLS attention is undefined")
    attn = vit.blocks[idx].attn
    _check_attn(attn, idx)
    record = CapturedAttention(block=idx, num_prefix_tokens=int(getattr(vit, "num_prefix_tokens", 1)))

    def hook(module, args, kwargs):
        x = args[0] if args else kwargs["x"]
        with torch.no_grad():
            record.cls_row = _cls_row(module, x, kwargs.get("attn_mask"), bool(kwargs.get("is_causal", False)))
        record.calls += 1
        if stop:
            raise _StopForward
        return None

    handle = attn.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield record
    finally:
        handle.remove()


def _features(vit: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return vit.forward_features(x)


@torch.no_grad()
def cls_attention(model: nn.Module, x: torch.Tensor, block: int = -1) -> torch.Tensor:
    """Per-head CLS-to-patch attention of ``blocks[block]``: (B, C, H, W) -> (B, heads, h, w), float32.

    Runs on the model's device (``x`` is moved there) and stops the forward pass after the block.
    """
    vit = as_vit(model)
    device = next(vit.parameters()).device
    x = x.to(device)
    with capture_cls_attention(vit, block, stop=True) as rec:
        try:
            _features(vit, x)
        except _StopForward:
            pass
    return rec.patches(patch_grid(vit, x.shape[-2:]))


def cls_attention_shares(model: nn.Module, x: torch.Tensor, block: int = -1) -> torch.Tensor:
    """:func:`cls_attention` in eval mode (the training flag is restored afterwards), on the CPU, each
    head's map rescaled to sum to 1 over the patches (the CLS token's attention to itself left out).

    Returns (B, heads, h, w) float32 shares of the attention mass, as the thresholded figures use them.
    """
    was_training = model.training
    model.eval()
    try:
        attn = cls_attention(model, x, block=block).cpu()
    finally:
        model.train(was_training)
    return attn / attn.sum(dim=(-2, -1), keepdim=True).clamp_min(1e-12)


@torch.no_grad()
def cls_attention_and_tokens(model: nn.Module, x: torch.Tensor, block: int = -1
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One full forward pass: ``(attention (B, heads, h, w), patch_tokens (B, D, h, w), cls (B, D))``.

    Tokens are the output of ``forward_features`` (last block + final norm), prefix tokens removed.
    """
    vit = as_vit(model)
    device = next(vit.parameters()).device
    x = x.to(device)
    grid = patch_grid(vit, x.shape[-2:])
    with capture_cls_attention(vit, block) as rec:
        tokens = _features(vit, x)
    npt = rec.num_prefix_tokens
    patches = tokens[:, npt:].float()
    B, P, D = patches.shape
    patches = patches.transpose(1, 2).reshape(B, D, *grid)
    return rec.patches(grid), patches, tokens[:, 0].float()


def threshold_attention(attn: torch.Tensor, mass: float = 0.6) -> torch.Tensor:
    """Smallest set of patches per map holding ``mass`` of its attention: (..., h, w) -> bool (..., h, w).

    Each map is normalised to sum 1 over its patches, sorted in decreasing order and cumulated; a
    patch is kept while the mass *before* it is below ``mass`` (so the kept mass is >= ``mass`` and
    dropping the smallest kept patch would fall below it), as in the DINO figures.
    """
    if not 0.0 < mass <= 1.0:
        raise ValueError(f"mass must be in (0, 1], got {mass}")
    *lead, h, w = attn.shape
    flat = attn.reshape(-1, h * w).float()
    flat = flat / flat.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(flat.dtype).tiny)
    vals, order = torch.sort(flat, dim=-1, descending=True)
    before = torch.cumsum(vals, dim=-1) - vals
    keep_sorted = before < mass - 1e-6  # tolerance: float round-off on the cumulative sum
    keep_sorted[:, 0] = True
    keep = torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted)
    return keep.reshape(*lead, h, w)


def upsample_to_pixels(maps: torch.Tensor, size, mode: str = "nearest") -> torch.Tensor:
    """Patch-grid maps (..., h, w) -> pixel grid (..., H, W); ``size`` is H or (H, W).

    ``mode`` is ``"nearest"`` (blocky, keeps bool masks bool) or ``"bilinear"`` (float output).
    """
    if mode not in ("nearest", "bilinear"):
        raise ValueError(f"mode must be 'nearest' or 'bilinear', got {mode!r}")
    size = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
    *lead, h, w = maps.shape
    is_bool = maps.dtype == torch.bool
    flat = maps.reshape(1, -1, h, w)
    flat = flat.float() if (is_bool or not flat.is_floating_point()) else flat
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    out = F.interpolate(flat, size=size, mode=mode, **kwargs).reshape(*lead, *size)
    if is_bool and mode == "nearest":
        out = out > 0.5
    return out


@torch.no_grad()
def attention_maps(model: nn.Module, x: torch.Tensor, block: int = -1, mass: float | None = None,
                   pixel_size=None, mode: str = "nearest") -> torch.Tensor:
    """Convenience: :func:`cls_attention`, then optionally :func:`threshold_attention` (``mass``) and
    :func:`upsample_to_pixels` (``pixel_size``: int, (H, W), or ``"input"`` for x's size).

    Returns (B, heads, h, w) float, or bool when ``mass`` is given, on the pixel grid if requested.
    """
    maps = cls_attention(model, x, block=block)
    if mass is not None:
        maps = threshold_attention(maps, mass)
    if pixel_size is not None:
        size = tuple(x.shape[-2:]) if pixel_size == "input" else pixel_size
        maps = upsample_to_pixels(maps, size, mode=mode)
    return maps
