"""Run profiles: the one place where sizes and step counts live.

Every chapter has ``PROFILE = "auto"`` in its ``parameters`` cell and calls :func:`get_profile`.

- ``smoke``: CI. Each chapter under 90 s on 2 CPU cores; the numbers are not meaningful.
- ``cpu``: a laptop. Each chapter under about 10 min on 2 cores, with results that mean something
  on the simulated data. The rendered book is built from this profile.
- ``gpu``: one Colab-class GPU (T4 16 GB and up), each chapter under about 30 min.
- ``paper``: the study's scale (ViT-B/16 at 448 px, 12 channels, real M3LEO, several GPUs via torchrun).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

PROFILE_NAMES = ("smoke", "cpu", "gpu", "paper")


@dataclass(frozen=True)
class DataConfig:
    """Simulated region (or real data) and loading."""

    n_chips: int  # chips in the simulated pretraining region
    chip_size: int  # pixels per side at 10 m
    pixel_size: float = 10.0  # metres
    batch_size: int = 32
    num_workers: int = 0
    norm_tiles: int = 64  # train tiles sampled to fit per-channel normalisation
    decode_on_device: bool = False  # MAE: workers send compact uint8 records, decoded on the GPU


@dataclass(frozen=True)
class ModelConfig:
    """Encoder preset (see ``sarssl.models.vit``)."""

    encoder: str  # timm model name, e.g. "vit_tiny_patch16_224"
    patch_size: int
    img_size: int


@dataclass(frozen=True)
class MAEConfig:
    epochs: int
    decoder_dim: int = 128
    decoder_depth: int = 1
    decoder_heads: int = 4
    mask_ratio: float = 0.75
    base_lr: float = 1.5e-4
    warmup_epochs: float = 1.0
    weight_decay: float = 0.05


@dataclass(frozen=True)
class DINOConfig:
    epochs: int
    out_dim: int = 4096
    n_local_crops: int = 4
    global_crop_size: int = 64
    local_crop_size: int = 32
    base_lr: float = 5e-4
    warmup_epochs: float = 1.0
    warmup_teacher_temp_epochs: float = 1.0
    teacher_temp: float = 0.07  # final teacher temperature (warm-up starts at 0.04)
    momentum_teacher: float = 0.996  # EMA momentum at step 0 (cosine to 1); lower it for short runs
    batch_size: int | None = None  # None: data.batch_size


@dataclass(frozen=True)
class FinetuneConfig:
    epochs: int
    label_fractions: tuple[float, ...] = (1, 2, 5, 10, 25, 50, 100)
    seeds: tuple[int, ...] = (0,)
    base_lr: float = 1e-3
    layer_decay: float = 0.75
    # fine-tuning runs and the label-efficiency sweep (sarssl.train.finetune / sweep)
    batch_size: int = 32  # capped at the number of labelled tiles
    min_steps: int = 50  # optimiser steps at least, so tiny label fractions still train
    probe_lr: float = 3e-3  # absolute peak lr of heads on frozen encoders
    weight_decay: float = 0.05
    decoder_dim: int = 128
    protocol: str = "finetune"  # sweep protocol: finetune | frozen | linear (scratch = random init)
    tasks: tuple[str, ...] = ("vegetation", "landcover")


@dataclass(frozen=True)
class Profile:
    name: str
    device: str
    data: DataConfig
    model: ModelConfig
    mae: MAEConfig
    dino: DINOConfig
    finetune: FinetuneConfig
    notes: str = ""
    extra: dict = field(default_factory=dict)

    def with_overrides(self, **changes) -> "Profile":
        """A copy with top-level fields replaced (``profile.with_overrides(device="cpu")``)."""
        return replace(self, **changes)


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        device="cpu",
        data=DataConfig(n_chips=48, chip_size=32, pixel_size=140.0, batch_size=16, num_workers=0, norm_tiles=16),
        model=ModelConfig(encoder="vit_tiny_patch16_224", patch_size=8, img_size=32),
        mae=MAEConfig(epochs=1, decoder_dim=64),
        dino=DINOConfig(epochs=1, out_dim=256, n_local_crops=2, global_crop_size=32, local_crop_size=16),
        finetune=FinetuneConfig(epochs=1, label_fractions=(10, 100), seeds=(0,), min_steps=5, protocol="linear",
                                decoder_dim=32),
        notes="CI only: tiny data and one epoch; the numbers are not meaningful.",
    ),
    "cpu": Profile(
        name="cpu",
        device="cpu",
        data=DataConfig(n_chips=600, chip_size=64, pixel_size=70.0, batch_size=64, num_workers=2, norm_tiles=128),
        model=ModelConfig(encoder="vit_tiny_patch16_224", patch_size=8, img_size=64),
        # short run: lr above the linear-scaling rule (base_lr 1.5e-4 x 64/256 barely moves in 100 steps)
        mae=MAEConfig(epochs=30, decoder_dim=128, base_lr=1e-3, warmup_epochs=2.0),
        # short-run DINO (tuned for ~6 min on 2 cores): smaller crops and batch for more steps, higher lr,
        # EMA momentum 0.97 so the teacher moves within ~55 steps, constant teacher temperature 0.04
        dino=DINOConfig(epochs=5, out_dim=512, n_local_crops=2, global_crop_size=48, local_crop_size=24,
                        base_lr=4e-3, teacher_temp=0.04, momentum_teacher=0.97, batch_size=32),
        # linear probes on cached features: the whole 3 x 4 x 3 x 2-task sweep takes about a minute on 2 cores
        finetune=FinetuneConfig(epochs=15, label_fractions=(2, 10, 25, 100), seeds=(0, 1, 2), protocol="linear"),
        notes="A laptop: each chapter under about 10 minutes on 2 cores.",
    ),
    "gpu": Profile(
        name="gpu",
        device="cuda",
        data=DataConfig(n_chips=4000, chip_size=128, pixel_size=35.0, batch_size=128, num_workers=4, norm_tiles=512,
                        decode_on_device=True),
        model=ModelConfig(encoder="vit_small_patch16_224", patch_size=16, img_size=128),
        mae=MAEConfig(epochs=100, decoder_dim=256, decoder_depth=2, decoder_heads=8),
        dino=DINOConfig(epochs=50, out_dim=8192, n_local_crops=6, global_crop_size=128, local_crop_size=64),
        finetune=FinetuneConfig(epochs=40, seeds=(0, 1, 2)),
        notes="One Colab-class GPU (T4 16 GB and up): each chapter under about 30 minutes.",
    ),
    "paper": Profile(
        name="paper",
        device="cuda",
        data=DataConfig(n_chips=0, chip_size=448, pixel_size=10.0, batch_size=256, num_workers=8, norm_tiles=2048,
                        decode_on_device=True),
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
        raise ValueError(f"unknown profile {name!r}: expected 'auto' or one of {', '.join(PROFILE_NAMES)}")
    return name


def get_profile(name: str = "auto") -> Profile:
    """The :class:`Profile` called ``name`` (``"auto"``, ``"smoke"``, ``"cpu"``, ``"gpu"`` or ``"paper"``)."""
    return PROFILES[resolve_profile_name(name)]
