"""Run profiles and run configurations: the one place where sizes, step counts and method knobs live.

Every chapter has ``PROFILE = "auto"`` in its ``parameters`` cell and calls :func:`get_profile`.

- ``smoke``: CI. Each chapter under 90 s on 2 CPU cores; the numbers are not meaningful.
- ``cpu``: a laptop. Each chapter under about 10 min on 2 cores, with results that mean something
  on the simulated data. The rendered book is built from this profile.
- ``gpu``: one Colab-class GPU (T4 16 GB and up), each chapter under about 30 min.
- ``paper``: the study's scale (ViT-B/16 at 448 px, 12 channels, real M3LEO, several GPUs via torchrun).

A :class:`Profile` holds one section per method (:class:`MAEConfig`, :class:`DINOConfig`,
:class:`FinetuneConfig`) next to the encoder (:class:`ModelConfig`), the data
(:class:`DataConfig`) and the engine (:class:`EngineConfig`). Every knob is a dataclass field with
a one-line help (``field.metadata["help"]``), from which the command line makes its flags.

:func:`train_config` resolves one run: ``train_config("mae", "cpu", {"mask_ratio": 0.6})`` is a
frozen :class:`RunConfig` with the profile's sections, the overrides applied and the defaults that
depend on other sections filled in. The run saves ``RunConfig.to_dict()`` (``run.json`` and the
checkpoint) and loading rebuilds models from :meth:`RunConfig.from_dict`, never from this table.

This module imports nothing heavy (no torch), so ``sarssl --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, NamedTuple

from sarssl.errors import UserError

PROFILE_NAMES = ("smoke", "cpu", "gpu", "paper")
#: Methods with a section in every profile (and in :class:`RunConfig`).
METHODS = ("mae", "dino", "finetune")


def knob(default: Any = dataclasses.MISSING, help: str = "", cli: bool = True) -> Any:
    """A dataclass field with a one-line ``help``; ``cli=False`` keeps it off the command line."""
    return field(default=default, metadata={"help": help, "cli": cli})


@dataclass(frozen=True)
class DataConfig:
    """Simulated region (or real data) and loading."""

    n_chips: int = knob(help="chips in the simulated pretraining region", cli=False)
    chip_size: int = knob(help="pixels per chip side (chips cover 4.48 km: chip_size x pixel_size)", cli=False)
    pixel_size: float = knob(10.0, "simulated pixel size in metres", cli=False)
    batch_size: int = knob(32, "samples per process and step (methods without their own batch_size use it)")
    num_workers: int = knob(0, "DataLoader worker processes for pretraining")
    norm_tiles: int = knob(64, "train tiles sampled to fit the per-channel normalisation")
    decode_on_device: bool = knob(False, "MAE: workers send compact uint8 records, decoded on the GPU",
                                  cli=False)  # the command line has the MAE section's --decode
    s1_product: str = knob("s1grd-2020", "Sentinel-1 product that pretraining reads")
    packed_cache: bool = knob(True, "pretraining reads the chips through the packed cache (compact arrays "
                                    "under <workspace>/packed, built on first use; a chip reads about 6x "
                                    "faster than from its GeoTIFFs)")
    pool_regions: int = knob(0, "simulator: extra regions in the unlabelled pretraining pool (0: none)", cli=False)
    pool_chips: int = knob(0, "simulator: chips per pool region", cli=False)


@dataclass(frozen=True)
class ModelConfig:
    """Encoder preset (see ``sarssl.models.vit``)."""

    encoder: str = knob(help="timm model name, e.g. vit_tiny_patch16_224 (the patch size is set separately)")
    patch_size: int = knob(help="pixels per patch side")
    img_size: int = knob(help="input side in pixels (the chips' size)")


@dataclass(frozen=True)
class EngineConfig:
    """How the engine runs a method (shared by every method; see ``sarssl.train.engine.TrainConfig``)."""

    grad_accum_steps: int = knob(1, "micro-batches per optimiser step (effective batch = batch x this x processes)")
    precision: str = knob("auto", "auto | bf16 | fp16 | fp32 (auto: bf16 or fp16 on CUDA; on CPU bf16 if measured faster)")
    compile: bool = knob(False, "torch.compile the model before training")
    eps: float = knob(1e-8, "AdamW epsilon")
    max_steps: int | None = knob(None, "stop after this many optimiser steps (with a checkpoint), schedule unchanged")
    drop_last: bool = knob(True, "drop each epoch's last incomplete batch")
    shuffle: bool = knob(True, "shuffle the training order each epoch (seeded)")
    resume: bool = knob(True, "resume from checkpoint.pt in the run folder when there is one")
    find_unused_parameters: bool = knob(False, "DDP: find parameters without gradients in each step")


@dataclass(frozen=True)
class MAEConfig:
    """Masked autoencoder pretraining (He et al. 2021)."""

    epochs: int = knob(help="passes over the training chips")
    batch_size: int | None = knob(None, "samples per process and step (None: data.batch_size)")
    mask_ratio: float = knob(0.75, "fraction of patches masked in each image")
    decoder_dim: int = knob(128, "decoder width")
    decoder_depth: int = knob(1, "decoder transformer blocks")
    decoder_heads: int = knob(4, "decoder attention heads")
    decoder_mlp_ratio: float = knob(4.0, "decoder MLP hidden width / decoder_dim")
    norm_pix_loss: bool = knob(True, "normalised-pixel targets (each target patch standardised)")
    norm_pix_mode: str = knob("patch", "patch (He et al.: stats over each whole patch) | channel (per channel too)")
    drop_path_rate: float = knob(0.0, "stochastic depth of the encoder")
    base_lr: float = knob(1.5e-4, "peak learning rate per 256 samples (lr = base_lr x effective batch / 256)")
    lr: float | None = knob(None, "absolute peak learning rate (None: from base_lr)")
    min_lr: float = knob(0.0, "learning rate at the end of the cosine decay")
    warmup_epochs: float = knob(1.0, "epochs of linear learning-rate warm-up")
    weight_decay: float = knob(0.05, "AdamW weight decay (none on biases, norms, tokens)")
    weight_decay_end: float | None = knob(None, "final weight decay of a cosine schedule (None: constant)")
    betas: tuple[float, float] = knob((0.9, 0.95), "AdamW betas")
    clip_grad: float | None = knob(None, "gradient clipping norm (None: no clipping)")
    clip_mode: str = knob("global", "global (one norm over all gradients) | per_param")
    checkpoint_every: int | None = knob(None, "optimiser steps between checkpoints (None: each epoch; 0: at the end)")
    log_every: int | None = knob(None, "optimiser steps between logged rows (None: min(10, steps per epoch))")
    tensorboard: bool = knob(True, "write TensorBoard logs under tb/")
    decode: str | None = knob(None, "sample (decoded in the workers) | batch (decoded on the device); "
                                    "None: from data.decode_on_device")


@dataclass(frozen=True)
class DINOConfig:
    """DINO self-distillation pretraining (Caron et al. 2021)."""

    epochs: int = knob(help="passes over the training chips")
    batch_size: int | None = knob(None, "samples per process and step (None: data.batch_size)")
    out_dim: int = knob(4096, "prototypes K of the DINO head")
    hidden_dim: int = knob(2048, "hidden width of the head's MLP")
    bottleneck_dim: int = knob(256, "bottleneck width before the prototypes")
    norm_last_layer: bool = knob(True, "fix the norm of the head's last layer to 1 (cosine logits)")
    use_bn_in_head: bool = knob(False, "batch norm in the head's MLP")
    drop_path_rate: float = knob(0.1, "stochastic depth of the student encoder (the teacher has none)")
    n_global_crops: int = knob(2, "global views per chip (the teacher sees these)")
    n_local_crops: int = knob(4, "local views per chip")
    global_crop_size: int = knob(64, "global view side in pixels")
    local_crop_size: int = knob(32, "local view side in pixels")
    global_crops_scale: tuple[float, float] = knob((0.4, 1.0), "area range of a global view, fraction of the chip")
    local_crops_scale: tuple[float, float] = knob((0.05, 0.4), "area range of a local view, fraction of the chip")
    aug_db_offset: float = knob(0.5, "common VV+VH level offset of a view, uniform in +-x dB (S1 radiometric "
                                      "accuracy is about 0.5 dB; larger offsets erase the level that separates classes)")
    aug_db_pol_offset: float = knob(0.25, "VV-VH differential offset of a view, uniform in +-x dB")
    aug_intensity_p: float = knob(0.8, "probability that a view gets a level offset")
    aug_speckle_p: float = knob(0.5, "probability that a view gets fresh multiplicative speckle")
    aug_speckle_looks: float = knob(4.0, "equivalent number of looks of the fresh speckle")
    aug_group_drop_p: float = knob(0.2, "probability that a view loses one season or polarisation (seasonal dropout)")
    aug_rotate_p: float = knob(0.3, "probability of a small rotation (+-10 degrees) on top of flips and 90-degree turns")
    multicrop: str = knob("batch", "batch (views of whole batches on the training device, main process) | "
                                   "sample (per chip in the DataLoader workers)")
    student_temp: float = knob(0.1, "student softmax temperature")
    warmup_teacher_temp: float = knob(0.04, "teacher temperature at the start of its warm-up")
    teacher_temp: float = knob(0.07, "final teacher temperature")
    warmup_teacher_temp_epochs: float = knob(1.0, "epochs of linear teacher-temperature warm-up")
    center_momentum: float = knob(0.9, "EMA momentum of the teacher centre")
    momentum_teacher: float = knob(0.996, "teacher EMA momentum at step 0 (cosine to 1); lower it for short runs")
    freeze_last_layer_epochs: float = knob(1.0, "epochs during which the head's last layer is not trained")
    collapse_high: float = knob(0.95, "teacher entropy above this x ln K counts as uniform collapse")
    collapse_low: float = knob(0.05, "teacher entropy below this x ln K counts as one-hot collapse")
    collapse_batch_low: float = knob(0.25, "batch collapse: the prototypes used across a batch (exp of the batch-mean "
                                          "teacher entropy) at or below this x min(K, images per batch)")
    monitor_every: int = knob(1, "optimiser steps between collapse checks (each one syncs with the host)")
    base_lr: float = knob(5e-4, "peak learning rate per 256 samples (lr = base_lr x effective batch / 256)")
    lr: float | None = knob(None, "absolute peak learning rate (None: from base_lr)")
    min_lr: float = knob(1e-6, "learning rate at the end of the cosine decay")
    warmup_epochs: float = knob(1.0, "epochs of linear learning-rate warm-up")
    weight_decay: float = knob(0.04, "AdamW weight decay at the start (none on biases, norms, tokens)")
    weight_decay_end: float | None = knob(0.4, "weight decay at the end of its cosine schedule (None: constant)")
    betas: tuple[float, float] = knob((0.9, 0.999), "AdamW betas")
    clip_grad: float | None = knob(3.0, "gradient clipping norm (None: no clipping)")
    clip_mode: str = knob("per_param", "global (one norm over all gradients) | per_param (each tensor on its own)")
    checkpoint_every: int | None = knob(None, "optimiser steps between checkpoints (None: each epoch; 0: at the end)")
    log_every: int | None = knob(None, "optimiser steps between logged rows (None: about 4 per epoch, at most 10)")
    tensorboard: bool = knob(True, "write TensorBoard logs under tb/")
    knn_k: int = knob(20, "neighbours of the epoch-end k-NN land-cover monitor")
    knn_temperature: float = knob(0.07, "temperature of the k-NN vote weights")
    knn_max_train: int = knob(512, "labelled train chips the k-NN monitor draws")
    knn_max_test: int = knob(256, "validation chips the k-NN monitor scores")
    knn_batch_size: int | None = knob(None, "batch of the k-NN feature extraction (None: data.batch_size)")


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning and probing with few labels (``sarssl.train.finetune``) and the sweep's grid."""

    epochs: int = knob(help="passes over the labelled chips (at least min_steps optimiser steps)")
    label_fractions: tuple[float, ...] = knob((1, 2, 5, 10, 25, 50, 100), "sweep: label fractions in percent",
                                              cli=False)
    seeds: tuple[int, ...] = knob((0,), "sweep: seeds of the labelled subsets and of training", cli=False)
    protocol: str = knob("finetune", "sweep protocol of the pretrained encoders: finetune | frozen | linear", cli=False)
    tasks: tuple[str, ...] = knob(("vegetation", "landcover"), "sweep: targets", cli=False)
    probe_pools: tuple[str, ...] = knob(("mean", "cls"), "sweep: tokens the tile probes read (the first is the headline)",
                                        cli=False)
    scratch_epochs: int | None = knob(None, "sweep: epochs of the supervised-from-scratch baseline (None: epochs)",
                                      cli=False)
    pool: str = knob("mean", "tile heads read the mean of the patch tokens ('mean') or the CLS token ('cls')")
    batch_size: int = knob(32, "samples per step, capped at the number of labelled tiles")
    min_steps: int = knob(50, "optimiser steps at least, so tiny label fractions still train")
    base_lr: float = knob(1e-3, "fine-tuning: peak learning rate per 256 samples")
    lr: float | None = knob(None, "absolute peak learning rate for every protocol (None: probe_lr or from base_lr)")
    probe_lr: float = knob(3e-3, "absolute peak learning rate of heads on frozen encoders")
    layer_decay: float = knob(0.75, "layer-wise learning-rate decay of the encoder when fine-tuning")
    weight_decay: float = knob(0.05, "AdamW weight decay when fine-tuning")
    probe_weight_decay: float = knob(1e-4, "AdamW weight decay of heads on frozen encoders")
    weight_decay_end: float | None = knob(None, "final weight decay of a cosine schedule (None: constant)")
    min_lr: float = knob(0.0, "learning rate at the end of the cosine decay")
    warmup_epochs: float | None = knob(None, "epochs of linear warm-up (None: min(1, 0.1 x epochs))")
    betas: tuple[float, float] = knob((0.9, 0.999), "AdamW betas")
    clip_grad: float | None = knob(3.0, "gradient clipping norm when fine-tuning (heads on frozen encoders: none)")
    clip_mode: str = knob("global", "global (one norm over all gradients) | per_param")
    decoder_dim: int = knob(128, "width of the dense decoders and of the frozen tile MLP (x 2)")
    num_workers: int = knob(0, "DataLoader worker processes")
    checkpoint_every: int = knob(0, "optimiser steps between checkpoints (0: at the end only)")
    log_every: int | None = knob(None, "optimiser steps between logged rows (None: once per epoch)")
    tensorboard: bool = knob(False, "write TensorBoard logs under tb/")


#: Method -> its section's dataclass (the field of :class:`Profile` with the same name).
METHOD_SECTIONS: dict[str, type] = {"mae": MAEConfig, "dino": DINOConfig, "finetune": FinetuneConfig}


@dataclass(frozen=True)
class Profile:
    """A named preset: the device, the data and encoder, one section per method, and the engine."""

    name: str
    device: str
    data: DataConfig
    model: ModelConfig
    mae: MAEConfig
    dino: DINOConfig
    finetune: FinetuneConfig
    engine: EngineConfig = field(default_factory=EngineConfig)
    notes: str = ""

    def with_overrides(self, **changes) -> "Profile":
        """A copy with top-level fields replaced (``profile.with_overrides(device="cpu")``)."""
        return replace(self, **changes)


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        device="cpu",
        data=DataConfig(n_chips=48, chip_size=32, pixel_size=140.0, batch_size=16, num_workers=0, norm_tiles=16,
                        pool_regions=1, pool_chips=16),  # a tiny pool: CI runs the pool's code path
        model=ModelConfig(encoder="vit_tiny_patch16_224", patch_size=8, img_size=32),
        mae=MAEConfig(epochs=1, decoder_dim=64),
        dino=DINOConfig(epochs=1, out_dim=256, hidden_dim=256, bottleneck_dim=64, n_local_crops=2, global_crop_size=32,
                        local_crop_size=16),  # a small head: smoke checkpoints 90 MB, not 170
        finetune=FinetuneConfig(epochs=1, label_fractions=(10, 100), seeds=(0,), min_steps=5, protocol="linear",
                                decoder_dim=32),
        notes="CI only: tiny data and one epoch; the numbers are not meaningful.",
    ),
    "cpu": Profile(
        name="cpu",
        device="cpu",
        # pretraining pool (issue 16): sim-a (600 chips, 368 train, the labelled ones) + 4 unlabelled regions of 600
        # chips (their 1546 train chips; about 45 s of simulation on 2 idle cores), 1914 train chips in all (5x).
        # Epochs and warm-ups are scaled so the optimiser steps stay those of sim-a alone: MAE 145 (was 30 x 5 = 150),
        # DINO 119 (was 5 x 23 = 115); warm-ups 10 and 24 steps (were 10 and 23)
        data=DataConfig(n_chips=600, chip_size=64, pixel_size=70.0, batch_size=64, num_workers=2, norm_tiles=128,
                        pool_regions=4, pool_chips=600),
        model=ModelConfig(encoder="vit_tiny_patch16_224", patch_size=8, img_size=64),
        # short run: lr above the linear-scaling rule (base_lr 1.5e-4 x 64/256 barely moves in 100 steps)
        mae=MAEConfig(epochs=5, decoder_dim=128, base_lr=1e-3, warmup_epochs=0.35),
        # SAR DINO recipe (issue 16), chosen on val k-NN among 12 recipes: global views at the 64 px evaluation size
        # (the 8 x 8 token grid the encoder is scored on), 4 local views of 32 px (4 x 4 tokens, enough for a field
        # edge); batch 16 for 119 steps (one epoch of the pool), EMA from 0.99 (cosine to 1), K = 1024, constant teacher
        # temperature 0.04, absolute lr 5e-4; flips, quarter turns, small rotations and fresh speckle, but no level
        # offsets and no season/polarisation dropout: on val, dropout alone cost 5-10 points of k-NN (the seasons carry
        # the classes) and +-0.5 dB offsets alone gave nothing. About 2 min on 2 idle cores in bf16. It still only
        # ties random-init encoders (0.79 vs 0.76-0.80 on 96 val chips): a few hundred steps are not enough.
        dino=DINOConfig(epochs=1, batch_size=16, out_dim=1024, n_local_crops=4, global_crop_size=64,
                        local_crop_size=32, lr=5e-4, warmup_epochs=0.2, warmup_teacher_temp_epochs=0.2,
                        freeze_last_layer_epochs=0.2, teacher_temp=0.04, momentum_teacher=0.99,
                        aug_intensity_p=0.0, aug_group_drop_p=0.0),
        # the issue-14 grid: fractions doubling from 1 % and 5 seeds; supervised from scratch gets the probes' budget,
        # 12 epochs and at least 40 steps (15 and 50 made the sweep 34 min, nearly all of it supervised from
        # scratch, and the book 43 min on 2 cores; a step of a few tiles costs almost as much as one of 32)
        finetune=FinetuneConfig(epochs=12, min_steps=40, label_fractions=(1, 2, 4, 8, 16, 32, 64, 100),
                                seeds=(0, 1, 2, 3, 4), protocol="linear"),
        notes="A laptop: each chapter about 10 minutes on 2 cores, but chapter 5's label sweep about an hour.",
    ),
    "gpu": Profile(
        name="gpu",
        device="cuda",
        # pretraining pool: sim-a (4000 chips, ~2440 train, labelled) + 4 unlabelled regions of 2000 chips (~4920 train);
        # ~7360 train chips in all (3x); epochs and warm-ups scaled so the optimiser steps stay about those of sim-a
        # alone (MAE ~1880, was ~1900; DINO ~1840, was ~1900)
        data=DataConfig(n_chips=4000, chip_size=128, pixel_size=35.0, batch_size=128, num_workers=4, norm_tiles=512,
                        decode_on_device=True, pool_regions=4, pool_chips=2000),
        # ViT-T/8 at 128 px: a 16 x 16 token (and attention) grid, where ViT-S/16 gave 8 x 8, for about the same
        # compute (3.4 against 3.0 GFLOP per image forward, sarssl.models.vit.count_flops); a T4 runs it in fp16
        # with a gradient scaler, Ampere and later in bf16 (engine precision "auto")
        model=ModelConfig(encoder="vit_tiny_patch16_224", patch_size=8, img_size=128),
        mae=MAEConfig(epochs=33, decoder_dim=256, decoder_depth=2, decoder_heads=8, warmup_epochs=0.33),
        # DINO: global crops at the chips' 128 px (the evaluation size), local 64 px; batch 64 for ~1850 steps
        # (16 epochs of the pool, 50 of sim-a alone) instead of ~900, EMA from 0.99 (cosine to 1) so the teacher leaves
        # its initialisation, teacher temperature warmed 0.04 -> 0.05 over 10 % of training (5 epochs of sim-a)
        dino=DINOConfig(epochs=16, batch_size=64, out_dim=8192, n_local_crops=6, global_crop_size=128,
                        local_crop_size=64, momentum_teacher=0.99, base_lr=1e-3, warmup_epochs=1.65,
                        warmup_teacher_temp=0.04, teacher_temp=0.05, warmup_teacher_temp_epochs=1.65,
                        freeze_last_layer_epochs=0.33),
        finetune=FinetuneConfig(epochs=40, seeds=(0, 1, 2)),
        notes="One Colab-class GPU (T4 16 GB and up): each chapter under about 30 minutes.",
    ),
    "paper": Profile(
        name="paper",
        device="cuda",
        data=DataConfig(n_chips=0, chip_size=448, pixel_size=10.0, batch_size=256, num_workers=8, norm_tiles=2048,
                        decode_on_device=True, packed_cache=False),  # ~2.4 MB a chip: M3LEO is read in place
        model=ModelConfig(encoder="vit_base_patch16_224", patch_size=16, img_size=448),
        mae=MAEConfig(epochs=100, decoder_dim=512, decoder_depth=1, decoder_heads=16),
        dino=DINOConfig(
            epochs=100, out_dim=65536, n_local_crops=8, global_crop_size=224, local_crop_size=96,
            base_lr=5e-4, warmup_epochs=10, warmup_teacher_temp_epochs=30,
        ),
        finetune=FinetuneConfig(epochs=50, seeds=(0, 1, 2)),
        notes="The study's scale: ViT-B/16 at 448 px on real M3LEO, several GPUs via torchrun.",
    ),
}


def resolve_profile_name(name: str = "auto") -> str:
    """``"auto"`` -> ``"gpu"`` when CUDA is available, else ``"cpu"``; other names are checked."""
    if name == "auto":
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    if name not in PROFILES:
        raise UserError(f"unknown profile {name!r}: expected 'auto' or one of {', '.join(PROFILE_NAMES)}")
    return name


def get_profile(name: str = "auto") -> Profile:
    """The :class:`Profile` called ``name`` (``"auto"``, ``"smoke"``, ``"cpu"``, ``"gpu"`` or ``"paper"``)."""
    return PROFILES[resolve_profile_name(name)]


# ------------------------------------------------------------------------------------------------
# one run's configuration
# ------------------------------------------------------------------------------------------------
class Knob(NamedTuple):
    """One overridable field: its flat ``name``, the ``section`` holding it, its type and help."""

    name: str
    section: str  # "mae" | "dino" | "finetune" | "model" | "data" | "engine"
    type: Any
    help: str
    cli: bool


def _section_knobs(section: str, cls: type) -> list[Knob]:
    hints = typing.get_type_hints(cls)
    return [Knob(f.name, section, hints[f.name], f.metadata.get("help", ""), f.metadata.get("cli", True))
            for f in fields(cls)]


def knobs(method: str) -> list[Knob]:
    """The override names of ``method`` in lookup order: its section, then model, data and engine.

    A name found in an earlier section hides the same name further down (``batch_size`` of a
    method section before ``data.batch_size``).
    """
    _check_method(method)
    out: dict[str, Knob] = {}
    for section, cls in ((method, METHOD_SECTIONS[method]), ("model", ModelConfig), ("data", DataConfig),
                         ("engine", EngineConfig)):
        for k in _section_knobs(section, cls):
            out.setdefault(k.name, k)
    return list(out.values())


def _check_method(method: str) -> None:
    if method not in METHOD_SECTIONS:
        raise UserError(f"unknown method {method!r}: expected one of {', '.join(METHOD_SECTIONS)}")


def _coerce(tp: Any, value: Any) -> Any:
    """JSON/CLI value -> the field's type for containers (lists -> tuples); scalars stay as given."""
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _coerce(args[0], value) if len(args) == 1 else value
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v) for v in value)
        return tuple(_coerce(a, v) for a, v in zip(args, value))
    return value


def _section_from_dict(cls: type, values: dict, where: str):
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UserError(f"{where}: unknown field(s) {unknown} for {cls.__name__}; valid: {sorted(names)}")
    hints = typing.get_type_hints(cls)
    return cls(**{k: _coerce(hints[k], v) for k, v in values.items()})


def _as_json(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_as_json(v) for v in value]
    return value


def _section_to_dict(section) -> dict:
    return {f.name: _as_json(getattr(section, f.name)) for f in fields(section)}


@dataclass(frozen=True)
class RunConfig:
    """The complete, resolved configuration of one run (what ``run.json`` and the checkpoint keep).

    ``method_config`` is the method's section (:class:`MAEConfig`, :class:`DINOConfig` or
    :class:`FinetuneConfig`); ``profile`` the name of the profile it was resolved from; ``device``
    the profile's device (``"cuda"`` runs on CUDA when available).
    """

    method: str
    profile: str
    device: str
    model: ModelConfig
    data: DataConfig
    engine: EngineConfig
    method_config: Any

    def __post_init__(self):
        _check_method(self.method)
        cls = METHOD_SECTIONS[self.method]
        if not isinstance(self.method_config, cls):
            raise TypeError(f"RunConfig({self.method!r}): method_config is a {type(self.method_config).__name__}, "
                            f"expected {cls.__name__}")

    @property
    def engine_device(self) -> str:
        """The engine's device: ``"auto"`` for GPU configs (CUDA when present), else the configured one."""
        return "auto" if self.device == "cuda" else self.device

    def engine_kwargs(self) -> dict:
        """The :class:`~sarssl.train.engine.TrainConfig` fields held in ``engine`` (precision, max_steps...)."""
        return asdict(self.engine)

    def to_dict(self) -> dict:
        """JSON-safe dict (tuples as lists); :meth:`from_dict` gives back an equal RunConfig."""
        return {"method": self.method, "profile": self.profile, "device": self.device,
                "model": _section_to_dict(self.model), "data": _section_to_dict(self.data),
                "engine": _section_to_dict(self.engine), self.method: _section_to_dict(self.method_config)}

    @classmethod
    def from_dict(cls, values: dict) -> "RunConfig":
        """The RunConfig that :meth:`to_dict` wrote; unknown keys raise a clear error."""
        method = values.get("method")
        _check_method(method)
        expected = {"method", "profile", "device", "model", "data", "engine", method}
        unknown = sorted(set(values) - expected)
        missing = sorted(expected - set(values))
        if unknown or missing:
            raise UserError(f"RunConfig.from_dict: unknown keys {unknown}, missing keys {missing}")
        return cls(method=method, profile=values["profile"], device=values["device"],
                   model=_section_from_dict(ModelConfig, values["model"], "model"),
                   data=_section_from_dict(DataConfig, values["data"], "data"),
                   engine=_section_from_dict(EngineConfig, values["engine"], "engine"),
                   method_config=_section_from_dict(METHOD_SECTIONS[method], values[method], method))

    def with_overrides(self, overrides: dict | None = None) -> "RunConfig":
        """A copy with flat field names replaced (see :func:`train_config`), defaults re-resolved."""
        if not overrides:
            return self._resolved()
        by_name = {k.name: k for k in knobs(self.method)}
        changes: dict[str, dict] = {}
        device = self.device
        for key, value in overrides.items():
            if key == "device":
                device = value
                continue
            k = by_name.get(key)
            if k is None:
                kind = "fine-tuning" if self.method == "finetune" else "pretraining"
                raise UserError(f"unknown {kind} override {key!r} for {self.method}: expected one of "
                                 f"{', '.join(sorted(by_name) + ['device'])}")
            changes.setdefault(k.section, {})[key] = _coerce(k.type, value)
        section = "method_config"
        parts = {"model": self.model, "data": self.data, "engine": self.engine, section: self.method_config}
        for name, values in changes.items():
            target = section if name == self.method else name
            parts[target] = replace(parts[target], **values)
        return replace(self, device=device, **parts)._resolved()

    def _resolved(self) -> "RunConfig":
        """Fill the defaults that come from another section (``batch_size=None`` -> ``data.batch_size``...)."""
        m = self.method_config
        fill = {}
        if isinstance(m, (MAEConfig, DINOConfig)) and m.batch_size is None:
            fill["batch_size"] = self.data.batch_size
        if isinstance(m, DINOConfig) and m.knn_batch_size is None:
            fill["knn_batch_size"] = self.data.batch_size
        if isinstance(m, MAEConfig):
            decode = m.decode if m.decode is not None else ("batch" if self.data.decode_on_device else "sample")
            if decode not in ("sample", "batch"):
                raise UserError(f"MAE decode must be 'sample' or 'batch', got {decode!r}")
            fill["decode"] = decode
        return replace(self, method_config=replace(m, **fill)) if fill else self


def train_config(method: str, profile: "str | Profile" = "auto", overrides: dict | None = None) -> RunConfig:
    """The resolved configuration of a ``method`` run (``"mae"``, ``"dino"`` or ``"finetune"``).

    Args:
        profile: a profile name (``"auto"`` included) or a :class:`Profile`.
        overrides: flat field names -> values (``{"mask_ratio": 0.6, "epochs": 2}``), looked up in
            the method's section first, then ``model``, ``data`` and ``engine`` (and ``device``);
            an unknown name raises a ``ValueError`` listing the valid ones.

    Returns:
        A frozen :class:`RunConfig`; defaults that depend on another section are filled in
        (``batch_size=None`` -> ``data.batch_size``; MAE ``decode`` from ``data.decode_on_device``).
    """
    _check_method(method)
    prof = get_profile(profile) if isinstance(profile, str) else profile
    cfg = RunConfig(method=method, profile=prof.name, device=prof.device, model=prof.model, data=prof.data,
                    engine=prof.engine, method_config=getattr(prof, method))
    return cfg.with_overrides(overrides)
