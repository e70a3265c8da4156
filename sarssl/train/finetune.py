"""Fine-tuning with few labels: the engine task and one run (``train_and_evaluate``, ``run_finetune``).

Targets (:data:`sarssl.train.tasks.TARGETS`): ``vegetation`` (the study's target: the tile mean of
MODIS percent tree cover, RMSE loss), ``vegetation_pixel``, ``biomass`` and ``built`` (per-pixel
regression), and ``landcover`` (11 ESA WorldCover classes, cross-entropy with the no-data ignore index).

Protocols (:data:`sarssl.train.tasks.PROTOCOLS`):

- ``finetune``: every weight trained, layer-wise lr decay on the encoder (block ``i`` of ``L`` gets
  ``layer_decay ** (L + 1 - (i + 1))``; patch/position embeddings the smallest, the head 1);
- ``scratch``: ``finetune`` from a randomly initialised encoder without layer decay;
- ``frozen``: encoder frozen, the full head trained (an MLP for tiles, the upsampling decoder);
- ``linear``: encoder frozen, a linear head (a 1x1 conv + bilinear upsampling for dense targets);
- ``knn``: no training; weighted k-NN (k=20, T=0.07) on frozen CLS features of the labelled tiles,
  against each chip's majority class (land cover; accuracy).

Frozen protocols train on cached features (:mod:`sarssl.train.featurebank`), so a run costs
the head's training only. Losses and metrics skip no-data (``*_valid`` masks, the ignore index).
Regression heads predict ``value / scale`` (scale per target) and metrics are in product units.

The pieces: targets and losses :mod:`sarssl.train.losses`; heads and layer-decay groups per
protocol :mod:`sarssl.train.protocols`; evaluation and example predictions
:mod:`sarssl.train.evaluation`; normalisation and labelled subsets :mod:`sarssl.train.finetune_data`;
metrics :mod:`sarssl.train.metrics`.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sarssl.errors import UserError
from sarssl.models.task import TrainTask, param_groups_weight_decay
from sarssl.paths import run_path
from sarssl.train.evaluation import evaluate
from sarssl.train.finetune_data import finetune_dataset, finetune_normalization
from sarssl.train.losses import target_tensors, task_loss
from sarssl.train.metrics import higher_is_better, knn_metrics
from sarssl.train.protocols import build_head, layer_decay_groups
from sarssl.train.tasks import FROZEN_PROTOCOLS, PROTOCOLS, TargetSpec, get_target, products_for

__all__ = ["FinetuneTask", "load_init_encoder", "finetune_train_config", "FinetuneRun", "train_and_evaluate",
           "run_finetune", "load_finetuned"]


class FinetuneTask(TrainTask):
    """Engine task: ``head`` (a module from :mod:`sarssl.models.heads`) trained on ``spec`` with ``protocol``.

    Batches are either raw samples (``s1`` + labels) or cached features (``{"feats": ..., "target",
    "valid"}`` from a :class:`~sarssl.train.featurebank.BankLoader`). With a frozen protocol the
    encoder has ``requires_grad=False`` and stays in eval mode.
    """

    def __init__(self, head: nn.Module, spec: TargetSpec | str, protocol: str = "finetune", layer_decay: float = 0.75):
        super().__init__()
        if protocol not in PROTOCOLS or protocol == "knn":
            raise ValueError(f"protocol {protocol!r} cannot be trained: expected one of "
                             f"{[p for p in PROTOCOLS if p != 'knn']}")
        self.head = head
        self.spec = get_target(spec)
        # judged by the target's headline metric (from evaluate(); training rows log the loss)
        self.monitor, self.mode = self.spec.primary, ("max" if higher_is_better(self.spec.primary) else "min")
        self.protocol = protocol
        self.frozen = protocol in FROZEN_PROTOCOLS
        self.layer_decay = 1.0 if protocol == "scratch" else float(layer_decay)
        head.encoder.requires_grad_(not self.frozen)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.head.encoder.eval()
        return self

    def targets(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if "target" in batch:
            return batch["target"], batch["valid"]
        return target_tensors(batch, self.spec)

    def predict(self, batch: dict, size=None) -> torch.Tensor:
        """Raw head output for a batch: (B, 1) tiles, (B, 1, H, W) maps (``value / scale``) or logits."""
        if "feats" in batch:
            return self.head.decode(batch["feats"], size)
        x = batch["s1"]
        if self.frozen:
            with torch.no_grad():
                feats = self.head.features(x)
            return self.head.decode(feats, tuple(x.shape[-2:]))
        return self.head(x)

    def training_step(self, batch: dict, step_info=None) -> dict:
        target, valid = self.targets(batch)
        size = tuple(target.shape[-2:]) if self.spec.kind != "tile" else None
        out = self.predict(batch, size)
        return {"loss": task_loss(self.spec, out, target, valid), "valid_frac": valid.float().mean()}

    def param_groups(self, weight_decay: float) -> list[dict]:
        if self.frozen:
            return [g for g in param_groups_weight_decay(self.head, weight_decay) if g["params"]]
        return layer_decay_groups(self.head, weight_decay, self.layer_decay)


# --------------------------------------------------------------------------------------------
# Encoders, data, configs
# --------------------------------------------------------------------------------------------
def load_init_encoder(init: str | Path, profile, pretrained: dict | None = None, seed: int = 0) -> nn.Module:
    """The encoder a run starts from.

    ``"scratch"``: the profile's encoder, randomly initialised with ``seed``. ``"mae"``/``"dino"``:
    ``pretrained[init]`` (a run folder) or the workspace run folder of that method for ``profile``.
    Any other value: a run folder holding ``encoder.pth`` + ``encoder.json`` (strict loading).
    """
    from sarssl.models.vit import set_fused_attn, spec_from_profile
    from sarssl.train.checkpoint import load_encoder, seed_everything

    if str(init) == "scratch":
        seed_everything(seed)
        return spec_from_profile(profile).create()
    if isinstance(init, str) and init in ("mae", "dino"):
        path = (pretrained or {}).get(init)
        if path is None:
            path = run_path(profile.name, init)
        hint = (f"pretrain it first (sarssl.workspace.pretrained_run(profile, {init!r}) or "
                f"`sarssl pretrain {init} ...`) or pass its run folder")
    else:
        path, hint = init, "pass a run folder written by sarssl pretraining"
    path = Path(path)
    if not (path / "encoder.pth").is_file() or not (path / "encoder.json").is_file():
        raise FileNotFoundError(f"no encoder.pth + encoder.json in {str(path)!r} for init {str(init)!r}: {hint}")
    return set_fused_attn(load_encoder(path))


def finetune_train_config(profile, n_train: int, protocol: str, seed: int = 0, epochs: int | None = None,
                          out_dir=None, progress: bool = False, device: str | None = None, **overrides):
    """The :class:`TrainConfig` of one run, from ``train_config("finetune", profile, overrides)`` (or a
    fine-tuning :class:`~sarssl.profiles.RunConfig` given as ``profile``): the section's epochs (or
    ``epochs``), but at least ``min_steps`` optimiser steps (so tiny label fractions still train), batch
    ``min(batch_size, n_train)``; heads on frozen encoders use the absolute ``probe_lr`` and
    ``probe_weight_decay`` without clipping, fine-tuning ``base_lr x batch / 256``, ``weight_decay``
    and ``clip_grad``; precision ``auto`` is fp32 off CUDA. ``overrides``: flat configuration names (``batch_size``,
    ``lr``, ``probe_lr``...)."""
    from sarssl.profiles import RunConfig, train_config
    from sarssl.train.engine import TrainConfig, resolve_device

    if isinstance(profile, RunConfig):
        if profile.method != "finetune":
            raise ValueError(f"expected a fine-tuning run configuration, got method {profile.method!r}")
        cfg = profile.with_overrides(overrides)
    else:
        cfg = train_config("finetune", profile, overrides)
    ft = cfg.method_config
    bs = max(1, min(int(ft.batch_size), n_train))
    steps_per_epoch = n_train // bs
    ep = int(epochs if epochs is not None else ft.epochs)
    ep = max(ep, math.ceil(ft.min_steps / max(steps_per_epoch, 1)))
    frozen = protocol in FROZEN_PROTOCOLS
    engine = cfg.engine_kwargs()
    device = device or cfg.engine_device
    if engine["precision"] == "auto" and resolve_device(device).type != "cuda":
        # bf16 autocast on a CPU wrecked supervised training from scratch (vegetation RMSE 10.6 % against 3.8 %
        # in fp32, 59 tiles, 40 steps) and was no faster: 'auto' fine-tunes in fp32 off CUDA
        engine["precision"] = "fp32"
    return TrainConfig(
        epochs=ep, batch_size=bs, base_lr=ft.base_lr,
        lr=ft.lr if ft.lr is not None else ft.probe_lr if frozen else None,
        min_lr=ft.min_lr, warmup_epochs=min(1.0, 0.1 * ep) if ft.warmup_epochs is None else ft.warmup_epochs,
        weight_decay=ft.probe_weight_decay if frozen else ft.weight_decay, weight_decay_end=ft.weight_decay_end,
        betas=ft.betas, clip_grad=None if frozen else ft.clip_grad, clip_mode=ft.clip_mode, seed=seed,
        out_dir=str(out_dir) if out_dir else None, checkpoint_every=ft.checkpoint_every,
        log_every=max(1, steps_per_epoch) if ft.log_every is None else ft.log_every,
        device=device, tensorboard=ft.tensorboard, progress=progress, num_workers=ft.num_workers, **engine)


# --------------------------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------------------------
@dataclass
class FinetuneRun:
    """What :func:`train_and_evaluate` returns: the trained task, metrics per evaluation set, sizes, time."""

    task: Any  # FinetuneTask, or None for k-NN
    metrics: dict  # eval name -> metrics dict
    n_tiles: int
    steps: int
    seconds: float


def _bank_inputs(bank, head, spec):
    """(features, {"target", "valid"}) tensors of a FeatureBank for ``spec``."""
    target, valid = target_tensors(bank.tensors, spec)
    return bank.features_for(head), {"target": target, "valid": valid}


def _mean_target(dataset, spec: TargetSpec, batch_size: int = 64) -> float:
    """Mean of the valid target values over a dataset (NaN when none is valid)."""
    from torch.utils.data import DataLoader

    total, count = 0.0, 0
    keys = [spec.key] + ([spec.valid_key] if spec.valid_key else [])
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                        collate_fn=lambda items: {k: torch.stack([it[k] for it in items]) for k in keys})
    for batch in loader:
        t, v = target_tensors(batch, spec)
        total += float(t[v].double().sum())
        count += int(v.sum())
    return total / count if count else float("nan")


def train_and_evaluate(spec: TargetSpec | str, protocol: str, encoder: nn.Module, profile, train, evals: dict,
                       seed: int = 0, epochs: int | None = None, out_dir=None, progress: bool = False,
                       device: str | None = None, layer_decay: float | None = None, pool: str | None = None,
                       **overrides) -> FinetuneRun:
    """Train one head and evaluate it.

    Args:
        encoder: the initial encoder (never updated: trained protocols train a copy; frozen
            protocols share it and switch its ``requires_grad`` off).
        train / evals values: both :class:`~sarssl.train.featurebank.FeatureBank` (frozen protocols on
            cached features) or both datasets of canonical samples.
        evals: name -> evaluation set (e.g. ``{"in": ..., "out": ...}``).
        pool: tokens a tile head reads, ``"mean"`` or ``"cls"`` (None: ``profile.finetune.pool``).
    """
    from sarssl.train.engine import Trainer
    from sarssl.train.featurebank import BankLoader, FeatureBank

    spec = get_target(spec)
    t0 = time.perf_counter()
    cached = isinstance(train, FeatureBank)
    if protocol == "knn":
        if spec.kind != "segmentation":
            raise ValueError(f"the k-NN protocol needs a classification target; {spec.name!r} is a {spec.kind} target")
        if not cached:
            from sarssl.train.featurebank import extract_bank

            train = extract_bank(encoder, train, grid=False, device=device)
            evals = {k: extract_bank(encoder, v, grid=False, device=device) for k, v in evals.items()}
        metrics = {k: knn_metrics(train.tensors["cls"], train.tensors[spec.key], v.tensors["cls"], v.tensors[spec.key],
                                  spec.n_classes) for k, v in evals.items()}
        return FinetuneRun(None, metrics, len(train), 0, time.perf_counter() - t0)

    torch.manual_seed(seed)
    # heads on frozen encoders share the (never updated) encoder; trained encoders are copies
    enc = encoder if protocol in FROZEN_PROTOCOLS else copy.deepcopy(encoder)
    head = build_head(spec, enc, protocol, decoder_dim=profile.finetune.decoder_dim, pool=pool or profile.finetune.pool)
    ft = profile.finetune
    task = FinetuneTask(head, spec, protocol, ft.layer_decay if layer_decay is None else layer_decay)
    if cached:
        feats, extra = _bank_inputs(train, head, spec)
        data = BankLoader(feats, extra)
        eval_data = {k: BankLoader(*_bank_inputs(v, head, spec)) for k, v in evals.items()}
        target, valid = extra["target"], extra["valid"]
    else:
        data, eval_data = train, evals
    n = len(train)
    if spec.kind != "segmentation":  # start regressions at the labelled mean
        mean = float(target[valid].float().mean()) if cached and valid.any() else (
            None if cached else _mean_target(train, spec))
        if mean is not None and math.isfinite(mean):
            head.init_output_bias(mean / spec.scale)
    cfg = finetune_train_config(profile, n, protocol, seed=seed, epochs=epochs, out_dir=out_dir,
                                progress=progress, device=device, **overrides)
    trainer = Trainer(task, data, cfg)
    try:
        trainer.fit()
    finally:
        trainer.close()
    metrics = {k: evaluate(task, v, device=trainer.device) for k, v in eval_data.items()}
    return FinetuneRun(task, metrics, n, trainer.total_steps, time.perf_counter() - t0)


def run_finetune(task: str = "vegetation", protocol: str = "finetune", init: str | Path = "scratch",
                 profile="auto", data_root=None, aoi: str = "sim-a", limit_pct: float = 100.0, seed: int = 0,
                 out_dir=None, epochs: int | None = None, pretrained: dict | None = None,
                 eval_regions: dict | None = None, cache_dir=None, year: int = 2020, progress: bool = True,
                 device: str | None = None, **overrides) -> dict:
    """Fine-tune ``init`` on ``limit_pct`` % of the labelled train chips of ``aoi`` and test it.

    Args:
        task: a key of :data:`TARGETS` (``vegetation``, ``landcover``, ``biomass``, ``built``...).
        protocol: ``finetune`` | ``scratch`` | ``frozen`` | ``linear`` | ``knn``.
        init: ``"scratch"``, ``"mae"``, ``"dino"`` (see :func:`load_init_encoder`) or a run folder.
        profile: profile name or :class:`~sarssl.profiles.Profile` (sizes, epochs, lr, layer decay).
        data_root: M3LEO root holding ``aoi`` (required).
        limit_pct, seed: the labelled subset (same for every init) and the run seed.
        out_dir: when given, ``checkpoint.pt``, ``metrics.csv``, ``model.pt`` and ``finetune.json``
            are written there (a finished run is reloaded, not retrained).
        eval_regions: extra test sets, name -> ``(root, aoi)`` (e.g. an out-of-region AOI).
        overrides: flat configuration names (:func:`sarssl.profiles.train_config` for ``"finetune"``:
            ``batch_size``, ``lr``, ``probe_lr``, ``decoder_dim``, ``layer_decay``, ``max_steps``...).

    Returns:
        ``{"task", "method", "protocol", "limit_pct", "n_tiles", "seed", "steps", "seconds", <metrics>}``
        for the in-region test split, plus ``"regions": {name: metrics}`` with ``eval_regions``.
    """
    from sarssl.profiles import get_profile, train_config

    prof = get_profile(profile) if isinstance(profile, str) else profile
    if epochs is not None:
        overrides["epochs"] = epochs
    cfg = train_config("finetune", prof, overrides)  # saved with the model
    # the helpers below read the profile: give them the resolved sections (overrides applied)
    prof = prof.with_overrides(device=cfg.device, model=cfg.model, data=cfg.data, engine=cfg.engine,
                               finetune=cfg.method_config)
    spec = get_target(task)
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}: expected one of {PROTOCOLS}")
    if protocol == "scratch":
        init = "scratch"
    if data_root is None:
        raise UserError("run_finetune: data_root is required (an M3LEO root holding the AOI; "
                        "sarssl.workspace.simulated_region(profile) makes the simulated one)")
    t0 = time.perf_counter()
    encoder = load_init_encoder(init, prof, pretrained, seed)
    init_dir = None if str(init) == "scratch" else (pretrained or {}).get(init, init if Path(str(init)).is_dir() else None)
    norm = finetune_normalization(data_root, aoi, prof, f"s1grd-{year}", init_dir=init_dir)
    products = products_for(spec, year)
    train = finetune_dataset(data_root, aoi, "train", products, norm, limit_pct, seed, cache_dir)
    evals = {"in": finetune_dataset(data_root, aoi, "test", products, norm, cache_dir=cache_dir)}
    for name, (root, other) in (eval_regions or {}).items():
        evals[name] = finetune_dataset(root, other, "test", products, norm, cache_dir=cache_dir)
    if protocol in FROZEN_PROTOCOLS:
        from sarssl.train.featurebank import extract_bank

        head = build_head(spec, encoder, protocol, pool=prof.finetune.pool)
        idx = getattr(head, "indices", (-1,))
        train = extract_bank(encoder, train, idx, device=device, progress=progress, desc="train features")
        evals = {k: extract_bank(encoder, v, idx, device=device, progress=progress, desc=f"{k} features")
                 for k, v in evals.items()}
    run = train_and_evaluate(spec, protocol, encoder, prof, train, evals, seed=seed, epochs=epochs, out_dir=out_dir,
                             progress=progress, device=device,
                             layer_decay=1.0 if str(init) == "scratch" else None)
    method = str(init) if str(init) in ("scratch", "mae", "dino") else Path(str(init)).name
    if method == "scratch" and protocol in FROZEN_PROTOCOLS:
        method = "random"  # a frozen random encoder: random features, not a network trained from scratch
    result = {"task": spec.name, "method": method, "protocol": protocol, "limit_pct": float(limit_pct),
              "n_tiles": run.n_tiles, "seed": seed, "steps": run.steps, "seconds": time.perf_counter() - t0,
              **run.metrics["in"]}
    if eval_regions:
        result["regions"] = {k: v for k, v in run.metrics.items() if k != "in"}
    if out_dir is not None and run.task is not None:
        from sarssl.train.checkpoint import atomic_save, atomic_write_text

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_save(run.task.head.state_dict(), out / "model.pt")
        info = {"result": result, "encoder": _encoder_spec(run.task.head.encoder, prof),
                "head": {"task": spec.name, "protocol": protocol, "decoder_dim": cfg.method_config.decoder_dim,
                         "pool": cfg.method_config.pool},
                "config": cfg.to_dict(),
                "data": {"root": str(data_root), "aoi": aoi, "year": year, "norm": norm.to_dict()
                         if hasattr(norm, "to_dict") else None}}
        atomic_write_text(json.dumps(info, indent=2, default=str), out / "finetune.json")
    return result


def _encoder_spec(encoder: nn.Module, profile) -> dict:
    from sarssl.models.heads import encoder_patch_size
    from sarssl.models.vit import spec_from_profile

    spec = spec_from_profile(profile).to_dict()
    spec.update(patch_size=encoder_patch_size(encoder), img_size=int(encoder.patch_embed.img_size[0]),
                in_chans=int(encoder.patch_embed.proj.in_channels))
    return spec


def load_finetuned(out_dir) -> FinetuneTask:
    """The trained :class:`FinetuneTask` of a ``run_finetune(..., out_dir=...)`` folder (eval mode, CPU)."""
    from sarssl.models.vit import create_encoder

    out = Path(out_dir)
    info_path = out / "finetune.json"
    if not info_path.is_file():
        raise FileNotFoundError(f"{info_path} does not exist: was this folder written by run_finetune(out_dir=...)?")
    info = json.loads(info_path.read_text())
    e = info["encoder"]
    encoder = create_encoder(e["name"], patch_size=e["patch_size"], img_size=e["img_size"], in_chans=e["in_chans"])
    h = info["head"]
    head = build_head(h["task"], encoder, h["protocol"], decoder_dim=h["decoder_dim"], pool=h.get("pool", "cls"))
    from sarssl.train.checkpoint import load_state_dict_checked, safe_load

    weights = out / "model.pt"  # safe load, and a mismatch or a truncated file named in one line
    load_state_dict_checked(head, safe_load(weights, "cpu", "fine-tuned weights"), weights,
                            f"the {h['task']} {h['protocol']} head described by {info_path}")
    task = FinetuneTask(head, h["task"], h["protocol"] if h["protocol"] != "knn" else "frozen")
    return task.eval()
