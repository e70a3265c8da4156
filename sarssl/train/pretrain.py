"""Pretraining entry point: ``run_pretrain("mae" | "dino", profile, data_root, out_dir)``.

Builds the dataset, the model/task and the :class:`~sarssl.train.engine.Trainer` from a profile
(:mod:`sarssl.profiles`) plus overrides, and trains into ``out_dir``. Running the same call again
resumes from ``out_dir/checkpoint.pt``; a finished run returns at once.

Methods live in :data:`PRETRAIN_METHODS`: ``name -> builder(ctx) -> PretrainSetup``. A builder gets
a :class:`PretrainContext` (profile, data root, AOIs, output folder, seed, its share of the
overrides) and returns the task, the training dataset, the :class:`TrainConfig` and an optional
``collate_fn``. Add a method with :func:`register_method`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from sarssl.train.engine import TrainConfig, Trainer

#: The S1 product pretraining reads (the study's 2020 seasonal composites).
S1_PRODUCT = "s1grd-2020"
#: MAE model options accepted in ``overrides`` (the rest go to :class:`TrainConfig`).
MAE_MODEL_KEYS = ("mask_ratio", "decoder_dim", "decoder_depth", "decoder_heads", "norm_pix_loss", "norm_pix_mode",
                  "drop_path_rate")
DATA_KEYS = ("s1_product", "decode")


@dataclass
class PretrainContext:
    """What a method builder receives."""

    profile: Any  # sarssl.profiles.Profile
    data_root: Path
    aois: list[str]
    out_dir: Path
    seed: int = 0
    overrides: dict = field(default_factory=dict)
    progress: bool = True

    def split_overrides(self, model_keys) -> tuple[dict, dict, dict]:
        """(model overrides, TrainConfig overrides, data overrides); unknown keys raise a clear error."""
        train_keys = {f.name for f in fields(TrainConfig)}
        model, train, data = {}, {}, {}
        for k, v in self.overrides.items():
            if k in model_keys:
                model[k] = v
            elif k in DATA_KEYS:
                data[k] = v
            elif k in train_keys:
                train[k] = v
            else:
                raise ValueError(f"unknown pretraining override {k!r}: expected a TrainConfig field "
                                 f"({', '.join(sorted(train_keys))}) or one of {', '.join(model_keys + DATA_KEYS)}")
        return model, train, data


@dataclass
class PretrainSetup:
    """What a method builder returns."""

    task: Any
    data: Any
    config: TrainConfig
    collate_fn: Callable | None = None
    batch_transform: Callable | None = None  # applied on the device (see ``Trainer``)


PRETRAIN_METHODS: dict[str, Callable[[PretrainContext], PretrainSetup]] = {}


def register_method(name: str):
    """Decorator registering ``builder(ctx) -> PretrainSetup`` under ``name``."""
    def wrap(fn):
        PRETRAIN_METHODS[name] = fn
        return fn
    return wrap


def device_for(profile) -> str:
    """``"auto"`` for GPU profiles (CUDA when present), else the profile's device."""
    return "auto" if profile.device == "cuda" else profile.device


def pretrain_dataset(ctx: PretrainContext, s1_product: str = S1_PRODUCT, split="train", products=None,
                     decode: str = "sample"):
    """The M3LEO chips of ``ctx.aois`` (``split``) with ``s1``/``s1_valid``; normalisation fitted on train.

    ``decode="batch"``: items hold compact records, decoded per batch by ``ds.decode_batch``.
    """
    from sarssl.data.datasets import M3LEODataset

    ds = M3LEODataset(ctx.data_root, ctx.aois, split=split, products=products or (s1_product,),
                      normalization="fit", norm_tiles=ctx.profile.data.norm_tiles, seed=ctx.seed,
                      progress=ctx.progress, decode=decode)
    if len(ds) == 0:
        raise ValueError(f"no {split} chips with {s1_product} under {ctx.data_root} for AOIs {ctx.aois}")
    return ds


def _check_size(ds, img_size: int, what: str) -> None:
    h, w = ds.chip_shape
    if (h, w) != (img_size, img_size):
        raise ValueError(f"{what}: chips are {h}x{w} px but the encoder expects {img_size}x{img_size}; "
                         "pick a profile whose model.img_size matches the data's chip size")


@register_method("mae")
def build_mae(ctx: PretrainContext) -> PretrainSetup:
    """MAE (He et al.) with the profile's encoder and decoder; AdamW betas (0.9, 0.95), wd 0.05,
    lr = base_lr x batch / 256 with warmup + cosine, normalised-pixel targets per patch."""
    from sarssl.models.mae import MAE, MAEPretrainTask, MaskNoiseDataset
    from sarssl.models.vit import spec_from_profile
    from sarssl.train.checkpoint import seed_everything

    p = ctx.profile
    model_kw, train_kw, data_kw = ctx.split_overrides(MAE_MODEL_KEYS)
    data_kw.setdefault("decode", "batch" if p.data.decode_on_device else "sample")
    ds = pretrain_dataset(ctx, **data_kw)
    _check_size(ds, p.model.img_size, f"MAE on {ctx.data_root}")
    spec = spec_from_profile(p)
    seed_everything(ctx.seed)
    encoder = spec.create(drop_path_rate=model_kw.pop("drop_path_rate", 0.0))
    mae_kw = dict(decoder_dim=p.mae.decoder_dim, decoder_depth=p.mae.decoder_depth,
                  decoder_heads=p.mae.decoder_heads, mask_ratio=p.mae.mask_ratio, norm_pix_loss=True)
    mae_kw.update(model_kw)
    task = MAEPretrainTask(MAE(encoder, **mae_kw), spec)
    ds = MaskNoiseDataset(ds, task.mae.num_patches, seed=ctx.seed)  # masks independent of rank and worker
    batch = train_kw.get("batch_size", p.data.batch_size)
    values = dict(epochs=p.mae.epochs, batch_size=batch, base_lr=p.mae.base_lr, min_lr=0.0,
                  warmup_epochs=p.mae.warmup_epochs, weight_decay=p.mae.weight_decay, betas=(0.9, 0.95),
                  num_workers=p.data.num_workers, device=device_for(p), seed=ctx.seed, out_dir=str(ctx.out_dir),
                  checkpoint_every=max(1, len(ds) // batch), log_every=max(1, min(10, len(ds) // batch)),
                  progress=ctx.progress)
    values.update(train_kw)
    return PretrainSetup(task, ds, TrainConfig(**values), batch_transform=ds.decode_batch)


@register_method("dino")
def build_dino_run(ctx: PretrainContext) -> PretrainSetup:
    """DINO (Caron et al.) via :func:`sarssl.models.dino.prepare_dino`: multi-crop views of the train
    chips and k-NN land-cover accuracy (train vs val chips) at each epoch end."""
    from sarssl.models.dino import prepare_dino
    from sarssl.train.checkpoint import seed_everything

    _, train_kw, data_kw = ctx.split_overrides(())
    s1 = data_kw.get("s1_product", S1_PRODUCT)
    if data_kw.get("decode", "sample") != "sample":
        raise ValueError("DINO makes its crops in the data workers from decoded samples: decode='batch' is for MAE only")
    ds = pretrain_dataset(ctx, s1)
    knn_train = knn_test = None
    year = s1.rsplit("-", 1)[-1]
    try:
        knn_train = pretrain_dataset(ctx, s1, "train", (s1, f"esaworldcover-{year}"))
        knn_test = pretrain_dataset(ctx, s1, "val", (s1, f"esaworldcover-{year}"))
    except (FileNotFoundError, ValueError) as err:  # no land cover: train without the k-NN monitor
        import warnings

        warnings.warn(f"DINO k-NN monitor disabled: {err}")
    seed_everything(ctx.seed)
    train_kw.setdefault("progress", ctx.progress)
    train_kw.pop("seed", None)  # passed explicitly
    task, data, config = prepare_dino(ctx.profile, ds, knn_train=knn_train, knn_test=knn_test,
                                      out_dir=ctx.out_dir, seed=ctx.seed, **train_kw)
    return PretrainSetup(task, data, config)


def run_pretrain(method: str, profile: str = "auto", data_root: str | Path = ".", out_dir: str | Path = "run",
                 aoi=None, overrides: dict | None = None, progress: bool = True, seed: int | None = None) -> Path:
    """Pretrain ``method`` (``"mae"`` or ``"dino"``) on the M3LEO root ``data_root`` into ``out_dir``.

    Args:
        profile: profile name (``"auto"``, ``"smoke"``, ``"cpu"``, ``"gpu"``, ``"paper"``) or a Profile.
        aoi: AOI name or list (default: every AOI under ``data_root``).
        overrides: TrainConfig fields (``epochs``, ``batch_size``, ``base_lr``, ``max_steps``...) and
            model options (MAE: ``mask_ratio``, ``decoder_dim``, ``norm_pix_loss``...).
        seed: run seed (default ``overrides["seed"]`` or 0).

    Returns:
        ``out_dir`` holding ``checkpoint.pt``, ``encoder.pth``/``encoder.json``, ``metrics.csv``,
        ``tb/`` and ``run.json``. The same call again resumes.
    """
    from sarssl.data.layout import list_aois
    from sarssl.profiles import get_profile

    if method not in PRETRAIN_METHODS:
        raise ValueError(f"unknown pretraining method {method!r}: expected one of {sorted(PRETRAIN_METHODS)}")
    prof = get_profile(profile) if isinstance(profile, str) else profile
    root = Path(data_root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {str(root)!r} does not exist")
    aois = [aoi] if isinstance(aoi, str) else list(aoi) if aoi else list_aois(root)
    if not aois:
        raise FileNotFoundError(f"no AOI folder with a split file under {str(root)!r}")
    overrides = dict(overrides or {})
    run_seed = int(seed if seed is not None else overrides.get("seed", 0))
    overrides["seed"] = run_seed
    out = Path(out_dir)
    ctx = PretrainContext(prof, root, aois, out, run_seed, overrides, progress)
    setup = PRETRAIN_METHODS[method](ctx)
    trainer = Trainer(setup.task, setup.data, setup.config, collate_fn=setup.collate_fn,
                      batch_transform=setup.batch_transform)
    if trainer.is_main:
        out.mkdir(parents=True, exist_ok=True)
        info = {"method": method, "profile": prof.name, "data_root": str(root), "aois": aois,
                "overrides": {k: v for k, v in overrides.items()}, "seed": run_seed}
        (out / "run.json").write_text(json.dumps(info, indent=2, default=str))
    try:
        trainer.fit()
    finally:
        trainer.close()
    return out
