"""DINO self-distillation (Caron et al. 2021, arXiv 2104.14294) for 12-channel SAR ViTs.

Pieces, each usable alone:

- :class:`DINOHead`: 3-layer MLP (GELU) -> L2-normalised bottleneck -> weight-normalised linear
  layer to ``out_dim`` prototypes (``torch.nn.utils.parametrizations.weight_norm``, so
  ``copy.deepcopy`` works); the norm ``g`` of the last layer is fixed to 1 and not trained.
- :class:`MultiCropWrapper`: runs a timm ViT on crops of several resolutions (one backbone call
  per run of equal-size crops) and the head once on all CLS features.
- :class:`DINOLoss`: cross-entropy between the centred, sharpened teacher softmax of the global
  views and the student softmax of every other view, in fp32; EMA centre (all-reduced under DDP).
- :class:`DINO`: the training task for :mod:`sarssl.train.engine` (student + EMA teacher, the
  teacher-temperature and momentum schedules, last-layer freezing, teacher-entropy monitoring,
  export of the *teacher* encoder with timm key names).

Deviation from the reference, documented: the teacher temperature ramps linearly per iteration
(fractional epoch) instead of per whole epoch, so short runs with fractional warm-up epochs work.
"""

from __future__ import annotations

import copy
import math
from typing import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from sarssl.models.collapse import COLLAPSE_CODES, CollapseMonitor, batch_usage, teacher_entropy
from sarssl.models.task import TrainTask, param_groups_weight_decay


# ------------------------------------------------------------------------------------------------
# schedules (DINO-specific; learning rate and weight decay come from the engine)
# ------------------------------------------------------------------------------------------------
def teacher_temperature(epoch: float, warmup_temp: float = 0.04, final_temp: float = 0.07,
                        warmup_epochs: float = 30.0) -> float:
    """Teacher temperature at (fractional) ``epoch``: linear ``warmup_temp -> final_temp`` over ``warmup_epochs``, then constant."""
    if warmup_epochs <= 0 or epoch >= warmup_epochs:
        return float(final_temp)
    return float(warmup_temp + (final_temp - warmup_temp) * max(epoch, 0.0) / warmup_epochs)


def teacher_momentum(step: int, total_steps: int, base: float = 0.996, final: float = 1.0) -> float:
    """EMA momentum at optimiser step ``step``: half-cosine from ``base`` (step 0) to ``final`` (last step)."""
    if total_steps <= 1:
        return float(base)
    p = min(max(step / (total_steps - 1), 0.0), 1.0)
    return float(final - (final - base) * (math.cos(math.pi * p) + 1.0) / 2.0)


# ------------------------------------------------------------------------------------------------
# head and multi-resolution wrapper
# ------------------------------------------------------------------------------------------------
class DINOHead(nn.Module):
    """(N, in_dim) -> (N, out_dim) prototype logits.

    MLP ``in_dim -> hidden_dim -> hidden_dim -> bottleneck_dim`` (GELU between, ``n_layers`` linear
    layers), L2 normalisation, then a bias-free weight-normalised linear layer with ``g`` fixed to 1
    (``norm_last_layer=True``) so the logits are cosine similarities to ``out_dim`` prototypes.
    """

    def __init__(self, in_dim: int, out_dim: int = 65536, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 n_layers: int = 3, use_bn: bool = False, norm_last_layer: bool = True):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"DINOHead: n_layers={n_layers}, expected >= 1")
        layers: list[nn.Module] = []
        dims = [in_dim] + [hidden_dim] * (n_layers - 1) + [bottleneck_dim]
        for i in range(n_layers):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < n_layers - 1:
                if use_bn:
                    layers.append(nn.BatchNorm1d(dims[i + 1]))
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        self.apply(self._init_weights)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        g = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            g.fill_(1.0)
        if norm_last_layer:
            g.requires_grad_(False)
        self.out_dim = out_dim

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mlp(x)
        x = F.normalize(x, dim=-1, p=2, eps=1e-6)
        return self.last_layer(x)


def enable_dynamic_img_size(vit: nn.Module) -> nn.Module:
    """Let a timm ``VisionTransformer`` take any input size divisible by its patch (position
    embeddings interpolated on the fly), as DINO's local crops need. State-dict keys do not change."""
    pe = getattr(vit, "patch_embed", None)
    if pe is None or not hasattr(vit, "dynamic_img_size"):
        raise TypeError(f"enable_dynamic_img_size: expected a timm VisionTransformer, got {type(vit).__name__}")
    if not vit.dynamic_img_size:
        from timm.layers import Format

        vit.dynamic_img_size = True
        pe.strict_img_size = False
        pe.flatten = False
        pe.output_fmt = Format.NHWC
    return vit


def remove_drop_path(module: nn.Module) -> nn.Module:
    """Replace every timm ``DropPath`` in ``module`` with ``nn.Identity`` (the teacher has no stochastic depth)."""
    from timm.layers import DropPath

    for name, child in list(module.named_children()):
        if isinstance(child, DropPath):
            setattr(module, name, nn.Identity())
        else:
            remove_drop_path(child)
    return module


class MultiCropWrapper(nn.Module):
    """Backbone + head over a list of crops: ``[(B, C, S_i, S_i)] -> (sum_i B, out_dim)``, crop-major order.

    Consecutive crops of equal size go through the backbone as one batch (2 calls for 2 global +
    N local crops).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def features(self, crops: Sequence[torch.Tensor]) -> torch.Tensor:
        """CLS features of all crops, (sum_i B, embed_dim)."""
        if isinstance(crops, torch.Tensor):
            crops = [crops]
        feats, i = [], 0
        while i < len(crops):
            j = i
            while j + 1 < len(crops) and crops[j + 1].shape[-2:] == crops[i].shape[-2:]:
                j += 1
            feats.append(self.backbone(torch.cat(list(crops[i:j + 1]))))
            i = j + 1
        return torch.cat(feats)

    def forward(self, crops: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.head(self.features(crops))


# ------------------------------------------------------------------------------------------------
# loss
# ------------------------------------------------------------------------------------------------
class DINOLoss(nn.Module):
    """DINO cross-entropy with centring and sharpening.

    ``student_out``: (n_crops * B, K) logits, crop-major (all globals first); ``teacher_out``:
    (n_global * B, K). For teacher view ``i`` and student view ``j != i`` the term is
    ``-sum_k softmax((t_i - c) / T_t)_k log_softmax(s_j / T_s)_k`` averaged over the batch; the
    loss is the mean over all such pairs. Computed in fp32 with autocast disabled. ``forward``
    updates the centre ``c`` (EMA of the teacher batch mean, all-reduced under DDP) in training mode.
    """

    def __init__(self, out_dim: int, n_global: int = 2, student_temp: float = 0.1, center_momentum: float = 0.9):
        super().__init__()
        self.out_dim = out_dim
        self.n_global = n_global
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def teacher_probs(self, teacher_out: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        """Centred, sharpened teacher softmax, (n_global * B, K) fp32."""
        return F.softmax((teacher_out.float() - self.center) / teacher_temp, dim=-1)

    def compute(self, student_out: torch.Tensor, teacher_out: torch.Tensor, teacher_temp: float,
                update_center: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, teacher_probs)``; see the class docstring. ``update_center`` defaults to ``self.training``."""
        device_type = student_out.device.type
        with torch.autocast(device_type=device_type, enabled=False):
            s = student_out.float()
            t = teacher_out.detach().float()
            if t.shape[0] % self.n_global or s.shape[0] % (t.shape[0] // self.n_global):
                raise ValueError(f"DINOLoss: teacher rows {t.shape[0]} not n_global={self.n_global} x B, "
                                 f"or student rows {s.shape[0]} not a multiple of B")
            b = t.shape[0] // self.n_global
            n_student = s.shape[0] // b
            if n_student * self.n_global - min(n_student, self.n_global) == 0:
                raise ValueError("DINOLoss: no teacher/student pair of different views")
            probs = self.teacher_probs(t, teacher_temp)
            logp = F.log_softmax(s / self.student_temp, dim=-1)
            # ce[i, j] = mean_b -<p_i,b , log q_j,b>
            ce = -torch.einsum("ibk,jbk->ij", probs.view(self.n_global, b, -1), logp.view(n_student, b, -1)) / b
            n_same = min(self.n_global, n_student)
            same = torch.eye(self.n_global, n_student, dtype=torch.bool, device=ce.device)
            loss = ce.masked_fill(same, 0.0).sum() / (self.n_global * n_student - n_same)
            if update_center if update_center is not None else self.training:
                self.update_center(t)
        return loss, probs

    def forward(self, student_out: torch.Tensor, teacher_out: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        return self.compute(student_out, teacher_out, teacher_temp)[0]

    @torch.no_grad()
    def update_center(self, teacher_out: torch.Tensor) -> None:
        """``c <- m c + (1 - m) mean(teacher_out)``; the mean is over all ranks when distributed."""
        batch_sum = teacher_out.float().sum(dim=0, keepdim=True)
        count = torch.tensor(float(teacher_out.shape[0]), device=teacher_out.device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_sum)
            dist.all_reduce(count)
        self.center.mul_(self.center_momentum).add_(batch_sum / count, alpha=1.0 - self.center_momentum)


# ------------------------------------------------------------------------------------------------
# the task
# ------------------------------------------------------------------------------------------------
class DINO(TrainTask):
    """DINO student/teacher task (see :mod:`sarssl.models.task`).

    ``backbone``: a timm ``VisionTransformer`` with ``num_classes=0`` (its output is the CLS
    feature); it becomes the student's backbone, and a deep copy without drop-path, frozen, is the
    teacher's. Batches are dicts with ``"crops"``: a list of ``n_global + n_local`` tensors
    (B, 12, S, S), globals first (see :class:`sarssl.data.multicrop.MultiCropDataset`), or whole chips
    (``"s1"``, ``"index"``) from an attached :class:`~sarssl.data.multicrop.BatchMultiCropDataset`, whose
    ``batch_views`` makes the crops here, on the device.
    """

    monitor, mode = "loss", "min"  # cross-entropy of student to centred, sharpened teacher

    def __init__(self, backbone: nn.Module, out_dim: int = 65536, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 n_global: int = 2, student_temp: float = 0.1, warmup_teacher_temp: float = 0.04,
                 teacher_temp: float = 0.07, warmup_teacher_temp_epochs: float = 30.0, center_momentum: float = 0.9,
                 momentum_teacher: float = 0.996, freeze_last_layer_epochs: float = 1.0, norm_last_layer: bool = True,
                 use_bn_in_head: bool = False, collapse_high: float = 0.95, collapse_low: float = 0.05,
                 collapse_batch_low: float = 0.25, monitor_every: int = 1, encoder_spec: dict | None = None):
        super().__init__()
        embed_dim = getattr(backbone, "num_features", None) or getattr(backbone, "embed_dim")
        enable_dynamic_img_size(backbone)
        head = DINOHead(embed_dim, out_dim, hidden_dim, bottleneck_dim, use_bn=use_bn_in_head,
                        norm_last_layer=norm_last_layer)
        self.student = MultiCropWrapper(backbone, head)
        self.teacher = remove_drop_path(copy.deepcopy(self.student))
        self.teacher.load_state_dict(self.student.state_dict())
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self.loss_fn = DINOLoss(out_dim, n_global, student_temp, center_momentum)
        self.n_global = n_global
        self.warmup_teacher_temp = warmup_teacher_temp
        self.final_teacher_temp = teacher_temp
        self.warmup_teacher_temp_epochs = warmup_teacher_temp_epochs
        self.momentum_teacher = momentum_teacher
        self.freeze_last_layer_epochs = freeze_last_layer_epochs
        self.collapse_monitor = CollapseMonitor(out_dim, high=collapse_high, low=collapse_low,
                                                batch_low=collapse_batch_low)
        self.monitor_every = max(int(monitor_every), 1)
        self.collapse_high, self.collapse_low, self.collapse_batch_low = collapse_high, collapse_low, collapse_batch_low
        self._momentum = momentum_teacher
        self._encoder_spec = dict(encoder_spec) if encoder_spec is not None else None
        #: datasets whose ``set_epoch`` follows training (e.g. ``MultiCropDataset``); see :meth:`attach_data`
        self._epoch_datasets: list = []
        #: ``batch_views`` of attached datasets whose items are whole chips (views made in :meth:`training_step`)
        self._view_makers: list = []
        #: optional ``fn(encoder) -> dict`` run at each epoch end on rank 0 (e.g. k-NN accuracy)
        self.epoch_end_eval = None

    # the teacher never leaves eval mode (no dropout, no drop-path)
    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()
        return self

    @property
    def student_backbone(self) -> nn.Module:
        return self.student.backbone

    @property
    def teacher_backbone(self) -> nn.Module:
        return self.teacher.backbone

    @staticmethod
    def _epoch(step_info) -> float:
        spe = max(int(getattr(step_info, "steps_per_epoch", 1) or 1), 1)
        return float(step_info.step) / spe

    def forward(self, crops: Sequence[torch.Tensor], teacher_temp: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, teacher_probs)`` for a list of crops (globals first)."""
        with torch.no_grad():
            t_out = self.teacher(list(crops[: self.n_global]))
        s_out = self.student(list(crops))
        return self.loss_fn.compute(s_out, t_out, teacher_temp)

    def training_step(self, batch: dict, step_info) -> dict:
        """Loss and 0-d monitoring tensors (no host sync except the collapse check every ``monitor_every`` steps)."""
        if isinstance(batch, dict) and "crops" not in batch and self._view_makers:
            with torch.autocast(device_type=batch["s1"].device.type, enabled=False):
                batch = self._view_makers[0](batch)  # batched multi-crop on the device, main process
        crops = batch["crops"] if isinstance(batch, dict) else batch
        if len(crops) < 2:
            raise ValueError(f"DINO: got {len(crops)} crop(s); need at least 2 views (globals first)")
        epoch = self._epoch(step_info)
        temp = teacher_temperature(epoch, self.warmup_teacher_temp, self.final_teacher_temp,
                                   self.warmup_teacher_temp_epochs)
        loss, probs = self(crops, temp)
        with torch.no_grad():
            ent = teacher_entropy(probs)
            n_images = probs.shape[0] // self.n_global
            # per global view: the two views of one image agree by design, so each view's batch counts
            usage = torch.stack([batch_usage(p, n_images) for p in probs.view(self.n_global, n_images, -1)]).mean()
            ln_k = math.log(self.loss_fn.out_dim)
            per_image = (ent >= self.collapse_high * ln_k).float() + 2.0 * (ent <= self.collapse_low * ln_k).float()
            collapse = torch.where(per_image > 0, per_image,
                                   float(COLLAPSE_CODES["batch"]) * (usage <= self.collapse_batch_low).float())
        if int(step_info.step) % self.monitor_every == 0 and getattr(step_info, "micro_step", 0) == 0:
            self.collapse_monitor.update(float(ent), step=int(step_info.step), usage=float(usage))
        dev = loss.device
        return {
            "loss": loss,
            "teacher_temp": torch.tensor(temp, device=dev),
            "teacher_momentum": torch.tensor(self._momentum, device=dev),
            "teacher_entropy": ent,
            "teacher_entropy_ratio": ent / ln_k,
            "teacher_image_prototypes": ent.exp(),  # exp of the mean per-image entropy
            "teacher_batch_prototypes": usage * min(self.loss_fn.out_dim, n_images),  # exp H(batch mean)
            "teacher_batch_usage": usage,  # the above / min(K, images per batch)
            "collapse": collapse,  # 0 ok, 1 uniform, 2 one-hot, 3 batch (averaged over the logging window)
        }

    # -------------------------------------------------------------------- engine hooks
    def param_groups(self, weight_decay: float) -> list[dict]:
        """Student parameters only: weight matrices regularised, biases/norms/tokens not."""
        return param_groups_weight_decay(self.student, weight_decay)

    def on_before_optimizer_step(self, step_info) -> None:
        """Freeze the student's last layer during the first ``freeze_last_layer_epochs``."""
        if self._epoch(step_info) < self.freeze_last_layer_epochs:
            for p in self.student.head.last_layer.parameters():
                p.grad = None

    @torch.no_grad()
    def on_after_optimizer_step(self, step_info) -> None:
        """EMA update of the teacher with the cosine momentum schedule."""
        m = teacher_momentum(int(step_info.step), int(step_info.total_steps), self.momentum_teacher, 1.0)
        self._momentum = m
        self.update_teacher(m)

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """``teacher <- m teacher + (1 - m) student`` over all parameters (same order in both)."""
        t = [p.data for p in self.teacher.parameters()]
        s = [p.data.to(p.dtype) for p in self.student.parameters()]
        if len(t) != len(s):
            raise RuntimeError("DINO: teacher and student have different parameter lists")
        torch._foreach_mul_(t, momentum)
        torch._foreach_add_(t, s, alpha=1.0 - momentum)

    def attach_data(self, dataset) -> None:
        """Keep ``dataset.set_epoch`` in step with training (set at each epoch end and on resume); a dataset with
        ``batch_views`` (:class:`~sarssl.data.multicrop.BatchMultiCropDataset`) also makes each batch's views."""
        if not callable(getattr(dataset, "set_epoch", None)):
            raise TypeError(f"DINO.attach_data: {type(dataset).__name__} has no set_epoch(epoch)")
        self._epoch_datasets.append(dataset)
        if callable(getattr(dataset, "batch_views", None)):  # BatchMultiCropDataset: views made per batch here
            self._view_makers.append(dataset.batch_views)

    def _set_data_epoch(self, epoch: int) -> None:
        for ds in self._epoch_datasets:
            ds.set_epoch(epoch)

    def on_epoch_end(self, step_info) -> dict:
        """Advance the crops' epoch; run ``epoch_end_eval(teacher encoder)`` on rank 0 (k-NN accuracy)."""
        self._set_data_epoch(int(step_info.epoch) + 1)
        out = {}
        if self.epoch_end_eval is not None and getattr(step_info, "rank", 0) == 0:
            out = dict(self.epoch_end_eval(self.encoder()) or {})
        return out

    def extra_state(self) -> dict:
        epochs = [getattr(ds, "epoch", 0) for ds in self._epoch_datasets]
        return {"data_epoch": epochs[0] if epochs else None, "momentum": self._momentum,
                "monitor_warned": sorted(self.collapse_monitor.warned)}

    def load_extra_state(self, state: dict) -> None:
        if state.get("data_epoch") is not None:
            self._set_data_epoch(int(state["data_epoch"]))
        self._momentum = float(state.get("momentum", self._momentum))
        self.collapse_monitor.warned = set(state.get("monitor_warned", ()))

    def encoder_spec(self) -> dict | None:
        """``timm.create_model`` keyword arguments of the encoder (``encoder.json``), when known."""
        return self._encoder_spec

    def export_encoder(self) -> dict[str, torch.Tensor]:
        """The teacher backbone's state dict with timm key names (loads strictly into
        ``timm.create_model(name, in_chans=12, num_classes=0, img_size=..., patch_size=...)``)."""
        return {k: v.detach().clone() for k, v in self.teacher.backbone.state_dict().items()}

    def encoder(self) -> nn.Module:
        """The teacher backbone (the network to evaluate, as in the reference)."""
        return self.teacher.backbone


def build_dino(encoder: str = "vit_tiny", patch_size: int = 16, img_size: int = 224, in_chans: int = 12,
               drop_path_rate: float = 0.1, **dino_kwargs) -> DINO:
    """A :class:`DINO` task around ``sarssl.models.vit.create_encoder(...)`` (a timm VisionTransformer)."""
    from sarssl.models.vit import EncoderSpec, create_encoder, resolve_name

    spec = EncoderSpec(resolve_name(encoder), patch_size=patch_size, img_size=img_size, in_chans=in_chans)
    backbone = create_encoder(spec.name, patch_size=patch_size, img_size=img_size, in_chans=in_chans,
                              drop_path_rate=drop_path_rate)
    dino_kwargs.setdefault("encoder_spec", spec.to_dict())
    return DINO(backbone, **dino_kwargs)


__all__ = [
    "DINO", "DINOHead", "DINOLoss", "MultiCropWrapper", "build_dino", "enable_dynamic_img_size", "remove_drop_path",
    "teacher_momentum", "teacher_temperature",
]
