"""timm ``VisionTransformer`` encoders for 12-channel SAR inputs, presets per profile, FLOP counting.

Encoders are plain timm models (``num_classes=0``, CLS-token pooling, fused attention), so any
state dict they save loads back with ``timm.create_model(name, in_chans=12, num_classes=0,
img_size=..., patch_size=...)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

import timm
import torch
from torch import nn
from timm.models.vision_transformer import VisionTransformer

from sarssl.data.products import INPUT_CHANNELS
from sarssl.errors import UserError

#: Short names -> timm architecture names (the patch size is overridden at creation).
ENCODER_NAMES = {
    "vit_tiny": "vit_tiny_patch16_224",
    "vit_small": "vit_small_patch16_224",
    "vit_base": "vit_base_patch16_224",
    "vit_large": "vit_large_patch16_224",
}


@dataclass(frozen=True)
class EncoderSpec:
    """Keyword arguments for ``timm.create_model`` (what ``encoder.json`` stores)."""

    name: str
    patch_size: int
    img_size: int
    in_chans: int = len(INPUT_CHANNELS)

    def create(self, **kw) -> VisionTransformer:
        return create_encoder(self.name, patch_size=self.patch_size, img_size=self.img_size,
                              in_chans=self.in_chans, **kw)

    def to_dict(self) -> dict:
        return asdict(self)


#: The study's encoder: ViT-B/16 at 448 px on 12 channels.
STUDY_ENCODER = EncoderSpec("vit_base_patch16_224", patch_size=16, img_size=448)


def resolve_name(name: str) -> str:
    """Short name (``vit_tiny``...) or timm name -> timm name; a clear error for unknown names."""
    full = ENCODER_NAMES.get(name, name)
    if not timm.is_model(full):
        raise UserError(f"unknown encoder {name!r}: expected one of {sorted(ENCODER_NAMES)} or a timm model name")
    return full


def set_fused_attn(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Switch every timm attention layer to ``scaled_dot_product_attention`` (or back)."""
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = enabled
    return model


def create_encoder(name: str = "vit_tiny", patch_size: int = 16, img_size: int = 224,
                   in_chans: int = len(INPUT_CHANNELS), drop_path_rate: float = 0.0, fused_attn: bool = True,
                   **kw: Any) -> VisionTransformer:
    """A randomly initialised timm ViT with ``num_classes=0`` (forward returns CLS features (B, D)).

    Args:
        name: ``vit_tiny`` | ``vit_small`` | ``vit_base`` | ``vit_large`` or a timm ViT name.
        patch_size: pixels per patch side; ``img_size`` must be a multiple of it.
        img_size: input side in pixels. in_chans: input channels (12 for the study).
        drop_path_rate: stochastic depth. kw: passed on to ``timm.create_model``.
    """
    if img_size % patch_size:
        raise UserError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
    model = timm.create_model(resolve_name(name), pretrained=False, in_chans=in_chans, num_classes=0,
                              img_size=img_size, patch_size=patch_size, drop_path_rate=drop_path_rate, **kw)
    if not isinstance(model, VisionTransformer):
        raise UserError(f"encoder {name!r} is a {type(model).__name__}, expected a timm VisionTransformer")
    return set_fused_attn(model, fused_attn)


def spec_from_profile(profile) -> EncoderSpec:
    """The :class:`EncoderSpec` of a :class:`sarssl.profiles.Profile` (its ``model`` section)."""
    m = profile.model
    return EncoderSpec(resolve_name(m.encoder), patch_size=m.patch_size, img_size=m.img_size)


def encoder_from_profile(profile, **kw) -> VisionTransformer:
    """The profile's encoder (``profile.model``: timm name, patch size, image size), 12 channels."""
    return spec_from_profile(profile).create(**kw)


def _cpu_sdpa_flops(q_shape, k_shape, v_shape, *args, **kwargs) -> int:
    """Forward FLOPs of CPU flash attention: Q K^T and P V (PyTorch's counter lacks this op)."""
    *batch, s_q, d = q_shape
    s_k, d_v = k_shape[-2], v_shape[-1]
    b = 1
    for n in batch:
        b *= n
    return 2 * b * s_q * s_k * d + 2 * b * s_q * s_k * d_v


def _cpu_sdpa_backward_flops(grad_shape, q_shape, k_shape, v_shape, *args, **kwargs) -> int:
    """Backward FLOPs of CPU flash attention: twice the forward (dQ, dK, dV, dP)."""
    return 2 * _cpu_sdpa_flops(q_shape, k_shape, v_shape)


def flop_counter():
    """A ``FlopCounterMode`` that also counts attention on CPU (so CPU and GPU counts agree)."""
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    mapping = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_sdpa_flops
        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = _cpu_sdpa_backward_flops
    return FlopCounterMode(display=False, custom_mapping=mapping)


def count_flops(fn: Callable | nn.Module, *inputs, **kwargs) -> int:
    """FLOPs (multiply-add = 2 FLOPs) of one call ``fn(*inputs, **kwargs)``, from ``FlopCounterMode``.

    Matrix products, convolutions and attention are counted; element-wise operations are not.
    """
    counter = flop_counter()
    with torch.no_grad(), counter:
        fn(*inputs, **kwargs)
    return int(counter.get_total_flops())


def count_train_flops(fn: Callable[[], torch.Tensor]) -> int:
    """FLOPs of ``fn()`` (returning a scalar loss) plus its backward pass."""
    counter = flop_counter()
    with counter:
        fn().backward()
    return int(counter.get_total_flops())
