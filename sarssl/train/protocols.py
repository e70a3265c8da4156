"""What each fine-tuning protocol trains: the head it puts on the encoder and the optimiser groups.

- :func:`build_head`: the head of a target for a protocol (``linear``: linear decoders; ``frozen``:
  an MLP on tiles or the upsampling decoder; ``finetune``/``scratch``: the full decoders);
- :func:`layer_decay_groups`: layer-wise lr decay for fine-tuning (block ``i`` of ``L`` gets
  ``layer_decay ** (L + 1 - (i + 1))``; patch/position embeddings the smallest, the head 1).
"""

from __future__ import annotations

from torch import nn

from sarssl.models.heads import PixelRegressionHead, SegmentationHead, TileRegressionHead
from sarssl.models.task import is_no_decay
from sarssl.train.tasks import TargetSpec, get_target

__all__ = ["build_head", "layer_decay_groups"]


def build_head(task: str | TargetSpec, encoder: nn.Module, protocol: str = "finetune", decoder_dim: int = 128,
               n_levels: int = 4, pool: str = "mean") -> nn.Module:
    """The head of ``task`` on ``encoder`` for ``protocol`` (``linear`` -> linear decoders).

    ``pool``: what tile heads read, the mean of the patch tokens (``"mean"``) or the CLS token (``"cls"``).
    """
    spec = get_target(task)
    linear = protocol == "linear"
    if spec.kind == "tile":
        return TileRegressionHead(encoder, 1, pool=pool, hidden=0 if protocol != "frozen" else decoder_dim * 2)
    if spec.kind == "pixel":
        return PixelRegressionHead(encoder, 1, decoder="linear" if linear else "progressive", decoder_dim=decoder_dim)
    return SegmentationHead(encoder, spec.n_classes, n_levels=n_levels, decoder="linear" if linear else "progressive",
                            decoder_dim=decoder_dim)


def _vit_layer_id(name: str, depth: int) -> int:
    """Layer index of an encoder parameter: embeddings 0, block i -> i + 1, final norm depth + 1."""
    if name.startswith(("cls_token", "pos_embed", "patch_embed", "reg_token", "mask_token", "dist_token")):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def layer_decay_groups(model: nn.Module, weight_decay: float, layer_decay: float = 0.75,
                       encoder_attr: str = "encoder") -> list[dict]:
    """Optimiser groups with layer-wise lr decay for a head holding a timm ViT as ``model.encoder``.

    Encoder layer ``l`` (0 = embeddings, i + 1 = block i, depth + 1 = final norm) gets
    ``lr_scale = layer_decay ** (depth + 1 - l)``; decoder parameters get 1. Biases, 1-D parameters,
    tokens and position embeddings get no weight decay (``wd_scale = 0``).
    """

    encoder = getattr(model, encoder_attr)
    depth = len(encoder.blocks)
    prefix = encoder_attr + "."
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith(prefix):
            sub = name[len(prefix):]
            layer = _vit_layer_id(sub, depth)
            no_decay = is_no_decay(sub, p)
        else:
            layer = depth + 1
            no_decay = is_no_decay(name, p)
        key = (layer, no_decay)
        if key not in groups:
            groups[key] = {"params": [], "lr_scale": float(layer_decay ** (depth + 1 - layer)),
                           "wd_scale": 0.0 if no_decay else 1.0, "weight_decay": 0.0 if no_decay else weight_decay,
                           "name": f"layer{layer}_{'no_decay' if no_decay else 'decay'}"}
        groups[key]["params"].append(p)
    return [groups[k] for k in sorted(groups)]
