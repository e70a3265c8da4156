"""Optimiser parameter groups as the engine uses them.

A parameter group is a dict with ``params`` plus two scales the engine reads every step:
``wd_scale`` (multiplies the scheduled weight decay; 0 for no-decay groups) and ``lr_scale``
(multiplies the scheduled learning rate; used by layer-wise decay in fine-tuning). The default groups
of a task, :func:`sarssl.models.task.param_groups_weight_decay`, live with the task contract.
"""

from __future__ import annotations


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
