"""The task contract: what :class:`sarssl.train.engine.Trainer` trains.

A task is a :class:`TrainTask`: an ``nn.Module`` that implements :meth:`~TrainTask.training_step` and
overrides the no-op hooks it needs. The engine calls, per optimiser step::

    for each of grad_accum_steps micro-batches:
        out = task.training_step(batch, step_info)      # {"loss": 0-d tensor, other 0-d tensors}
        backward(out["loss"] / grad_accum_steps)
    unscale, clip
    task.on_before_optimizer_step(step_info)
    optimizer.step()
    task.on_after_optimizer_step(step_info)
    at an epoch end:  row.update(task.on_epoch_end(step_info))

and once: :meth:`~TrainTask.param_groups` when it builds the optimiser, :meth:`~TrainTask.compile_for_training`
when ``TrainConfig.compile`` is set, :meth:`~TrainTask.extra_state`/:meth:`~TrainTask.load_extra_state` and
:meth:`~TrainTask.export_encoder`/:meth:`~TrainTask.encoder_spec` at each checkpoint / resume.

The monitored metric is declared once, as torchgeo's ``BaseTask`` does: ``monitor`` (a key of the
logged rows, e.g. ``"loss"``) and ``mode`` (``"min"``: lower is better, ``"max"``: higher is better).
Class attributes, or instance attributes set in ``__init__`` when they depend on the target.

Also here (models must not import the training layer): the default optimiser groups,
:func:`param_groups_weight_decay` (weight decay on weight matrices only, as the MAE/DINO references do).
A parameter group is a dict with ``params`` plus two scales the engine applies every step: ``wd_scale``
(multiplies the scheduled weight decay; 0 for no-decay groups) and ``lr_scale`` (multiplies the scheduled
learning rate; layer-wise decay in fine-tuning).
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

__all__ = ["MODES", "NO_DECAY_NAMES", "TrainTask", "check_monitor", "is_no_decay", "param_groups_weight_decay"]

#: Directions of a monitored metric: ``"min"`` (lower is better) or ``"max"`` (higher is better).
MODES = ("min", "max")

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


def check_monitor(monitor: Any, mode: Any, owner: str) -> None:
    """Raise ``ValueError`` naming ``owner`` unless ``monitor`` is a non-empty str and ``mode`` is in :data:`MODES`."""
    if not isinstance(monitor, str) or not monitor:
        raise ValueError(f"{owner}.monitor must be the name of a logged metric (a non-empty str), got {monitor!r}")
    if mode not in MODES:
        raise ValueError(f"{owner}.mode must be one of {MODES} (the direction of {monitor!r}), got {mode!r}")


class TrainTask(nn.Module):
    """Base class of everything the engine trains: :meth:`training_step` plus named no-op hooks.

    ``step_info`` below is a :class:`sarssl.train.engine.StepInfo`: ``step`` (0-based optimiser step),
    ``epoch``, ``total_steps``, ``steps_per_epoch``, ``lr``, ``wd``, ``progress``, ``epoch_float``,
    ``micro_step``, ``rank``, ``world_size``, ``device``.
    """

    #: Key of the logged rows the run is judged by (a ``training_step`` output or an ``on_epoch_end`` scalar).
    monitor: str = "loss"
    #: ``"min"`` when lower ``monitor`` is better, ``"max"`` when higher is.
    mode: str = "min"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        check_monitor(cls.monitor, cls.mode, cls.__name__)

    def check_monitor(self) -> None:
        """Validate this instance's ``monitor``/``mode`` (they may be set in ``__init__``)."""
        check_monitor(self.monitor, self.mode, type(self).__name__)

    def training_step(self, batch: dict, step_info) -> dict[str, torch.Tensor]:
        """Loss of one micro-batch: ``{"loss": 0-d tensor, name: 0-d tensor, ...}``.

        ``batch`` is what the loader yields, on the device (e.g. ``s1`` (B, 12, H, W) float, ``s1_valid``
        (B, 12, H, W) bool). The engine back-propagates ``loss / grad_accum_steps``; every other 0-d
        entry is averaged over the logging window and written to ``metrics.csv``.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement training_step(batch, step_info) -> dict "
                                  "with a 'loss' entry")

    # ---------------------------------------------------------------------------- optimiser
    def param_groups(self, weight_decay: float) -> list[dict]:
        """Optimiser groups (see the module docstring); default :func:`param_groups_weight_decay` of ``self``."""
        return param_groups_weight_decay(self, weight_decay)

    def on_before_optimizer_step(self, step_info) -> None:
        """After backward, unscaling and clipping, before ``optimizer.step`` (e.g. cancel some gradients)."""

    def on_after_optimizer_step(self, step_info) -> None:
        """After ``optimizer.step`` (e.g. an EMA teacher update)."""

    def on_epoch_end(self, step_info) -> dict | None:
        """After the last step of each epoch; returned scalars are added to that step's logged row."""
        return None

    # ---------------------------------------------------------------------------- checkpoints
    def extra_state(self) -> dict | None:
        """Non-parameter, non-buffer state that must survive a resume (``None``: nothing beyond the state dict)."""
        return None

    def load_extra_state(self, state: dict) -> None:
        """Restore what :meth:`extra_state` returned."""

    def export_encoder(self) -> dict[str, torch.Tensor] | None:
        """timm-named encoder state dict saved as ``encoder.pth`` with each checkpoint (``None``: no export)."""
        return None

    def encoder_spec(self) -> dict | None:
        """``timm.create_model`` keyword arguments of the exported encoder, saved as ``encoder.json``."""
        return None

    def compile_for_training(self) -> None:
        """Called when ``TrainConfig.compile`` is set; default: ``.compile()`` on each child module."""
        for child in self.children():
            child.compile()
