"""Optimiser parameter groups: weight decay on weight matrices only, as the MAE/DINO references do.

A parameter group is a dict with ``params`` plus two scales the engine reads every step:
``wd_scale`` (multiplies the scheduled weight decay; 0 for no-decay groups) and ``lr_scale``
(multiplies the scheduled learning rate; used by layer-wise decay in fine-tuning).
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

#: Parameter-name fragments that never get weight decay (position embeddings and special tokens).
NO_DECAY_NAMES = ("pos_embed", "cls_token", "mask_token", "dist_token", "reg_token", "pos_embed_decoder")


def is_no_decay(name: str, param: torch.Tensor, extra_names: Iterable[str] = ()) -> bool:
    """True for biases, 1-D parameters (norm scales) and tokens/position embeddings."""
    leaf = name.rsplit(".", 1)[-1]
    if param.ndim <= 1 or name.endswith(".bias"):
        return True
    return any(fragment == leaf or fragment in name.split(".") for fragment in (*NO_DECAY_NAMES, *extra_names))


def param_groups_weight_decay(module: nn.Module, weight_decay: float = 0.0,
                              no_decay_names: Iterable[str] = (), lr_scale: float = 1.0) -> list[dict]:
    """Two groups of the trainable parameters of ``module``: with decay (``wd_scale=1``) and without.

    Args:
        module: the model whose ``requires_grad`` parameters are optimised.
        weight_decay: initial decay of the regularised group (the engine rewrites it each step).
        no_decay_names: extra name fragments to exclude from decay.
        lr_scale: learning-rate multiplier for both groups.
    """
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if is_no_decay(name, p, no_decay_names) else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "wd_scale": 1.0, "lr_scale": lr_scale, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "wd_scale": 0.0, "lr_scale": lr_scale, "name": "no_decay"},
    ]
    return [g for g in groups if g["params"]]


def normalise_groups(groups: list[dict], weight_decay: float) -> list[dict]:
    """Fill in ``wd_scale``/``lr_scale`` for groups a task built by hand (``weight_decay == 0`` means no decay)."""
    out = []
    for i, g in enumerate(groups):
        if "params" not in g:
            raise ValueError(f"parameter group {i} has no 'params' entry")
        g = dict(g)
        g["params"] = [p for p in g["params"] if p.requires_grad]
        if "wd_scale" not in g:
            g["wd_scale"] = 0.0 if g.get("weight_decay", weight_decay) == 0 else 1.0
        g.setdefault("lr_scale", 1.0)
        g.setdefault("weight_decay", weight_decay * g["wd_scale"])
        g.setdefault("name", f"group{i}")
        if g["params"]:
            out.append(g)
    if not out:
        raise ValueError("the task has no trainable parameters (no parameter with requires_grad=True)")
    return out
