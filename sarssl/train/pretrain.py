"""Pretraining entry point: ``run_pretrain("mae" | "dino", profile, data_root, out_dir)``.

Resolves the run's configuration (:func:`sarssl.profiles.train_config`: the profile's sections
plus overrides), builds the dataset, the model/task and the :class:`~sarssl.train.engine.Trainer`
from it, and trains into ``out_dir``. The resolved configuration is saved in ``run.json`` and in
``checkpoint.pt`` (``"run_config"``); loaders rebuild models from it. Running the same call again
resumes from ``out_dir/checkpoint.pt``; a finished run returns at once.

Methods live in :data:`PRETRAIN_METHODS`: ``name -> builder(ctx) -> PretrainSetup``. A builder gets
a :class:`PretrainContext` (the resolved :class:`~sarssl.profiles.RunConfig`, data root, AOIs,
output folder, seed) and returns the task, the training dataset, the :class:`TrainConfig` and an
optional ``collate_fn``. Add a method with :func:`register_method` (and a section in the profiles).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from sarssl.profiles import RunConfig
from sarssl.train.engine import TrainConfig, Trainer

#: The S1 product pretraining reads by default (the study's 2020 seasonal composites; ``data.s1_product``).
S1_PRODUCT = "s1grd-2020"


@dataclass
class PretrainContext:
    """What a method builder receives."""

    config: RunConfig  # resolved: the builder reads every knob from here
    data_root: Path
    aois: list[str]
    out_dir: Path
    seed: int = 0
    progress: bool = True


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


def pretrain_dataset(ctx: PretrainContext, s1_product: str = S1_PRODUCT, split="train", products=None,
                     decode: str = "sample"):
    """The M3LEO chips of ``ctx.aois`` (``split``) with ``s1``/``s1_valid``; normalisation fitted on train.

    ``decode="batch"``: items hold compact records, decoded per batch by ``ds.decode_batch``.
    """
    from sarssl.data.datasets import M3LEODataset

    ds = M3LEODataset(ctx.data_root, ctx.aois, split=split, products=products or (s1_product,),
                      normalization="fit", norm_tiles=ctx.config.data.norm_tiles, seed=ctx.seed,
                      progress=ctx.progress, decode=decode)
    if len(ds) == 0:
        raise ValueError(f"no {split} chips with {s1_product} under {ctx.data_root} for AOIs {ctx.aois}")
    return ds


def _check_size(ds, img_size: int, what: str) -> None:
    h, w = ds.chip_shape
    if (h, w) != (img_size, img_size):
        raise ValueError(f"{what}: chips are {h}x{w} px but the encoder expects {img_size}x{img_size}; "
                         "pick a profile whose model.img_size matches the data's chip size")


def mae_train_config(config: RunConfig, n_train: int, out_dir=None, seed: int = 0, progress: bool = True
                     ) -> TrainConfig:
    """The engine's :class:`TrainConfig` of an MAE run on ``n_train`` chips (``config.method_config``:
    AdamW betas, lr ``base_lr x batch / 256`` with warmup + cosine to ``min_lr``; a checkpoint per
    epoch and a logged row every ``min(10, steps per epoch)`` steps unless set)."""
    m = config.method_config
    steps = n_train // m.batch_size
    return TrainConfig(
        epochs=m.epochs, batch_size=m.batch_size, base_lr=m.base_lr, lr=m.lr, min_lr=m.min_lr,
        warmup_epochs=m.warmup_epochs, weight_decay=m.weight_decay, weight_decay_end=m.weight_decay_end,
        betas=m.betas, clip_grad=m.clip_grad, clip_mode=m.clip_mode,
        checkpoint_every=max(1, steps) if m.checkpoint_every is None else m.checkpoint_every,
        log_every=max(1, min(10, steps)) if m.log_every is None else m.log_every,
        tensorboard=m.tensorboard, num_workers=config.data.num_workers, device=config.engine_device, seed=seed,
        out_dir=str(out_dir) if out_dir is not None else None, progress=progress, **config.engine_kwargs())


@register_method("mae")
def build_mae(ctx: PretrainContext) -> PretrainSetup:
    """MAE (He et al.) with the configured encoder and decoder (:func:`sarssl.models.mae.mae_from_config`)
    on the train chips; per-sample mask noise seeded by ``(seed, epoch, index)``."""
    from sarssl.models.mae import MAEPretrainTask, MaskNoiseDataset, mae_from_config
    from sarssl.train.checkpoint import seed_everything

    cfg = ctx.config
    ds = pretrain_dataset(ctx, cfg.data.s1_product, decode=cfg.method_config.decode)
    _check_size(ds, cfg.model.img_size, f"MAE on {ctx.data_root}")
    seed_everything(ctx.seed)
    mae, spec = mae_from_config(cfg)
    task = MAEPretrainTask(mae, spec)
    ds = MaskNoiseDataset(ds, task.mae.num_patches, seed=ctx.seed)  # masks independent of rank and worker
    train = mae_train_config(cfg, len(ds), ctx.out_dir, ctx.seed, ctx.progress)
    return PretrainSetup(task, ds, train, batch_transform=ds.decode_batch)


@register_method("dino")
def build_dino_run(ctx: PretrainContext) -> PretrainSetup:
    """DINO (Caron et al.) via :func:`sarssl.train.dino_setup.prepare_dino`: multi-crop views of the train
    chips and k-NN land-cover accuracy (train vs val chips) at each epoch end."""
    from sarssl.train.checkpoint import seed_everything
    from sarssl.train.dino_setup import prepare_dino

    cfg = ctx.config
    s1 = cfg.data.s1_product
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
    task, data, config = prepare_dino(cfg, ds, knn_train=knn_train, knn_test=knn_test, out_dir=ctx.out_dir,
                                      seed=ctx.seed, progress=ctx.progress)
    return PretrainSetup(task, data, config)


def run_pretrain(method: str, profile="auto", data_root: str | Path = ".", out_dir: str | Path = "run",
                 aoi=None, overrides: dict | None = None, progress: bool = True, seed: int | None = None) -> Path:
    """Pretrain ``method`` (``"mae"`` or ``"dino"``) on the M3LEO root ``data_root`` into ``out_dir``.

    Args:
        profile: profile name (``"auto"``, ``"smoke"``, ``"cpu"``, ``"gpu"``, ``"paper"``) or a Profile.
        aoi: AOI name or list (default: every AOI under ``data_root``).
        overrides: flat configuration names (:func:`sarssl.profiles.train_config`): the method's
            section (``epochs``, ``batch_size``, ``base_lr``, ``mask_ratio``, ``out_dim``...), then
            ``model``, ``data`` and ``engine`` fields (``max_steps``, ``precision``...).
        seed: run seed (default ``overrides["seed"]`` or 0).

    Returns:
        ``out_dir`` holding ``checkpoint.pt``, ``encoder.pth``/``encoder.json``, ``metrics.csv``,
        ``tb/`` and ``run.json`` (method, profile, data root, AOIs, seed and the resolved ``config``).
        The same call again resumes.
    """
    from sarssl.data.layout import list_aois
    from sarssl.profiles import train_config

    if method not in PRETRAIN_METHODS:
        raise ValueError(f"unknown pretraining method {method!r}: expected one of {sorted(PRETRAIN_METHODS)}")
    overrides = dict(overrides or {})
    run_seed = int(seed if seed is not None else overrides.get("seed", 0))
    overrides.pop("seed", None)
    cfg = train_config(method, profile, overrides)
    root = Path(data_root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {str(root)!r} does not exist")
    aois = [aoi] if isinstance(aoi, str) else list(aoi) if aoi else list_aois(root)
    if not aois:
        raise FileNotFoundError(f"no AOI folder with a split file under {str(root)!r}")
    out = Path(out_dir)
    ctx = PretrainContext(cfg, root, aois, out, run_seed, progress)
    setup = PRETRAIN_METHODS[method](ctx)
    trainer = Trainer(setup.task, setup.data, setup.config, collate_fn=setup.collate_fn,
                      batch_transform=setup.batch_transform, run_config=cfg.to_dict())
    if trainer.is_main:
        out.mkdir(parents=True, exist_ok=True)
        info = {"method": method, "profile": cfg.profile, "data_root": str(root), "aois": aois,
                "overrides": overrides, "seed": run_seed, "config": cfg.to_dict()}
        (out / "run.json").write_text(json.dumps(info, indent=2, default=str))
    try:
        trainer.fit()
    finally:
        trainer.close()
    return out


def load_run_config(run_dir: str | Path, method: str | None = None) -> RunConfig:
    """The resolved :class:`~sarssl.profiles.RunConfig` saved in ``run_dir/run.json``.

    Runs written before configurations were saved (``run.json`` with only ``profile`` and
    ``overrides``) are resolved from today's profile with their overrides.
    """
    from sarssl.profiles import knobs, train_config

    info_path = Path(run_dir) / "run.json"
    if not info_path.is_file():
        raise FileNotFoundError(f"{info_path} does not exist: was {run_dir} written by run_pretrain?")
    info = json.loads(info_path.read_text())
    if method is not None and info.get("method") != method:
        raise ValueError(f"{info_path} describes a {info.get('method')!r} run, expected {method!r}")
    if "config" in info:
        return RunConfig.from_dict(info["config"])
    known = {k.name for k in knobs(info["method"])} | {"device"}
    legacy = {k: v for k, v in info.get("overrides", {}).items() if k in known}
    return train_config(info["method"], info["profile"], legacy)
