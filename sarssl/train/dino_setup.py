"""DINO wired to a resolved run configuration and the engine (moved here from ``sarssl.models.dino``).

Every knob comes from ``config.method_config`` (a :class:`~sarssl.profiles.DINOConfig` in a
:class:`~sarssl.profiles.RunConfig` from :func:`sarssl.profiles.train_config`):

- :func:`multicrop_config`: the :class:`~sarssl.data.multicrop.MultiCropConfig` (views, sizes, scales);
- :func:`dino_from_config`: the :class:`~sarssl.models.dino.DINO` task around the configured encoder;
- :func:`dino_train_config`: the engine's :class:`~sarssl.train.engine.TrainConfig`;
- :func:`prepare_dino`: all three plus the multi-crop dataset and the epoch-end k-NN monitor.
"""

from __future__ import annotations

from sarssl.profiles import RunConfig, train_config
from sarssl.train.engine import TrainConfig

__all__ = ["multicrop_config", "multicrop_config_from_profile", "dino_from_config", "dino_train_config",
           "prepare_dino"]


def _dino(config: RunConfig):
    if config.method != "dino":
        raise ValueError(f"expected a DINO run configuration, got method {config.method!r}")
    return config.method_config


def multicrop_config(config: RunConfig, **overrides):
    """:class:`sarssl.data.multicrop.MultiCropConfig` of the DINO section (views, sizes, area scales);
    ``overrides`` are MultiCropConfig fields."""
    from sarssl.data.multicrop import MultiCropConfig, ViewAugment

    d = _dino(config)
    aug = ViewAugment(db_offset=d.aug_db_offset, db_pol_offset=d.aug_db_pol_offset, intensity_p=d.aug_intensity_p,
                      speckle_p=d.aug_speckle_p, speckle_looks=d.aug_speckle_looks, group_drop_p=d.aug_group_drop_p,
                      rotate_p=d.aug_rotate_p)
    values = dict(n_global=d.n_global_crops, n_local=d.n_local_crops, global_size=d.global_crop_size,
                  local_size=d.local_crop_size, global_scale=d.global_crops_scale, local_scale=d.local_crops_scale,
                  global_aug=aug, local_aug=aug)
    values.update(overrides)
    return MultiCropConfig(**values)


def multicrop_config_from_profile(profile, **overrides):
    """:func:`multicrop_config` of ``train_config("dino", profile)``."""
    return multicrop_config(train_config("dino", profile), **overrides)


def dino_from_config(config: RunConfig):
    """The configured encoder wrapped in a :class:`~sarssl.models.dino.DINO` task (head, temperatures, EMA)."""
    from sarssl.models.dino import build_dino

    d = _dino(config)
    m = config.model
    return build_dino(
        m.encoder, patch_size=m.patch_size, img_size=m.img_size, drop_path_rate=d.drop_path_rate,
        out_dim=d.out_dim, hidden_dim=d.hidden_dim, bottleneck_dim=d.bottleneck_dim, n_global=d.n_global_crops,
        student_temp=d.student_temp, warmup_teacher_temp=d.warmup_teacher_temp, teacher_temp=d.teacher_temp,
        warmup_teacher_temp_epochs=d.warmup_teacher_temp_epochs, center_momentum=d.center_momentum,
        momentum_teacher=d.momentum_teacher, freeze_last_layer_epochs=d.freeze_last_layer_epochs,
        norm_last_layer=d.norm_last_layer, use_bn_in_head=d.use_bn_in_head, collapse_high=d.collapse_high,
        collapse_low=d.collapse_low, collapse_batch_low=d.collapse_batch_low, monitor_every=d.monitor_every)


def dino_train_config(config: RunConfig, n_train: int, out_dir=None, seed: int = 0, progress: bool = True
                      ) -> TrainConfig:
    """The engine's :class:`TrainConfig` for DINO on ``n_train`` chips: by default lr ``base_lr x batch / 256``
    with warmup + cosine to 1e-6, weight decay cosine 0.04 -> 0.4 on the regularised group, AdamW betas
    (0.9, 0.999), per-parameter gradient clipping at 3.0, as in the reference; about four logged rows per epoch;
    a checkpoint at the end of each epoch (``checkpoint_every=None``) unless set."""
    d = _dino(config)
    log_every = max(1, min(10, n_train // d.batch_size // 4)) if d.log_every is None else d.log_every
    return TrainConfig(
        epochs=d.epochs, batch_size=d.batch_size, base_lr=d.base_lr, lr=d.lr, min_lr=d.min_lr,
        warmup_epochs=d.warmup_epochs, weight_decay=d.weight_decay, weight_decay_end=d.weight_decay_end,
        betas=d.betas, clip_grad=d.clip_grad, clip_mode=d.clip_mode, checkpoint_every=d.checkpoint_every,
        log_every=log_every, tensorboard=d.tensorboard, num_workers=config.data.num_workers,
        device=config.engine_device, seed=seed, out_dir=str(out_dir) if out_dir is not None else None,
        progress=progress, **config.engine_kwargs())


def prepare_dino(config: RunConfig, train_dataset, knn_train=None, knn_test=None, out_dir=None, seed: int = 0,
                 progress: bool = True):
    """``(task, data, train_config)`` for :class:`sarssl.train.engine.Trainer`.

    ``train_dataset`` yields canonical samples (normalised ``s1``) and carries the dataset's
    ``norm`` (:class:`~sarssl.data.transforms.Normalization`; its per-channel std drives the dB
    augmentations). With ``multicrop="batch"`` (the default) the items are whole chips and
    :class:`~sarssl.data.multicrop.BatchMultiCropDataset` makes each batch's views on the training
    device in the main process (the task calls its ``batch_views`` on each batch), seeded by
    ``(seed, epoch, the batch's indices)``; with ``"sample"`` :class:`~sarssl.data.multicrop.MultiCropDataset`
    makes them per chip in the DataLoader workers, seeded by ``(seed, epoch, index)``. With ``knn_train`` (labelled with
    ``worldcover``), each epoch end logs the teacher's k-NN land-cover accuracy
    (:func:`sarssl.train.knn.knn_land_cover_accuracy`; ``knn_test`` optional).
    """
    from sarssl.train.knn import knn_land_cover_accuracy
    from sarssl.data.multicrop import BatchMultiCrop, BatchMultiCropDataset, MultiCrop, MultiCropDataset

    d = _dino(config)
    norm = getattr(train_dataset, "norm", None)
    if norm is None:
        raise ValueError("prepare_dino: the training dataset has no 'norm' (normalisation statistics); "
                         "DINO's dB augmentations need the per-channel std in dB")
    if d.multicrop == "batch":
        data = BatchMultiCropDataset(train_dataset, BatchMultiCrop.from_normalization(multicrop_config(config), norm),
                                     seed=seed, keep=())
    elif d.multicrop == "sample":
        data = MultiCropDataset(train_dataset, MultiCrop.from_normalization(multicrop_config(config), norm),
                                seed=seed, keep=())
    else:
        raise ValueError(f"DINO multicrop={d.multicrop!r}: expected 'batch' or 'sample'")
    task = dino_from_config(config)
    task.attach_data(data)
    if knn_train is not None:
        kw = dict(k=d.knn_k, temperature=d.knn_temperature, max_train=d.knn_max_train, max_test=d.knn_max_test,
                  batch_size=d.knn_batch_size, seed=seed)
        task.epoch_end_eval = lambda enc: knn_land_cover_accuracy(enc, knn_train, knn_test, **kw)
    return task, data, dino_train_config(config, len(train_dataset), out_dir, seed, progress)

