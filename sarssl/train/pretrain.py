"""Pretraining entry point: ``run_pretrain("mae" | "dino", profile, data_root, out_dir)``.

Resolves the run's configuration (:func:`sarssl.profiles.train_config`: the profile's sections
plus overrides), builds the dataset, the model/task and the :class:`~sarssl.train.engine.Trainer`
from it, and trains into ``out_dir``. The resolved configuration is saved in ``run.json`` and in
``checkpoint.pt`` (``"run_config"``); loaders rebuild models from it. Running the same call again
resumes from ``out_dir/checkpoint.pt``; a finished run returns at once.

Run identity: a run folder belongs to one run. :func:`run_identity` is what makes a run: the method, the
profile, the AOIs with a content fingerprint of their split files (:func:`sarssl.data.fingerprint.split_digest`,
so another region, another simulation seed or another chip subset is another run), the seed and the
complete resolved configuration except :data:`RESUMABLE_FIELDS`. Before anything is written,
:func:`check_run_folder` compares it with the identity saved in ``out_dir/run.json`` (or, for folders
written before identities were saved, the saved method, profile, AOIs, seed and configuration): a
different run is refused with one line naming the differing fields and suggesting a new ``--out``.
``run.json`` is written after the check, once the engine has accepted the folder's checkpoint. The data folder's path is recorded but not compared: a region
moved elsewhere (with the same split files) resumes.

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

from sarssl.errors import UserError
from sarssl.profiles import RunConfig
from sarssl.train.engine import TrainConfig, Trainer

#: The S1 product pretraining reads by default (the study's 2020 seasonal composites; ``data.s1_product``).
S1_PRODUCT = "s1grd-2020"

#: Configuration fields (``section.field``; ``*`` = the method's section) a resumed run may change: they
#: change when a run stops, how often it checkpoints and logs, and how the data is loaded, never the
#: trained numbers. ``max_steps`` splits a run in pieces (the chapters do). Everything else, ``epochs``
#: included (it sets the learning-rate and momentum schedules), is part of the run's identity: to train
#: longer, start a new run folder.
RESUMABLE_FIELDS = ("engine.max_steps", "engine.resume", "engine.find_unused_parameters", "data.num_workers",
                    "data.decode_on_device", "data.packed_cache", "*.checkpoint_every", "*.log_every", "*.tensorboard",
                    "mae.decode")


@dataclass
class PretrainContext:
    """What a method builder receives."""

    config: RunConfig  # resolved: the builder reads every knob from here
    data_root: Path
    aois: list[str]
    out_dir: Path
    seed: int = 0
    progress: bool = True
    #: the AOIs (of ``aois``) whose train chips fit the normalisation and whose land cover DINO's k-NN
    #: monitor scores (None: ``aois``); the rest is an unlabelled pool
    labelled_aois: list[str] | None = None

    def __post_init__(self):
        self.labelled_aois = list(self.labelled_aois or self.aois)
        extra = sorted(set(self.labelled_aois) - set(self.aois))
        if extra:
            raise UserError(f"labelled AOIs {extra} are not among the pretraining AOIs {self.aois}")


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


def labelled_normalization(ctx: PretrainContext, s1_product: str = S1_PRODUCT):
    """The normalisation of every dataset of a pretraining run: fitted on the train chips of
    ``ctx.labelled_aois`` (as fine-tuning fits it), so the unlabelled pool does not shift it."""
    from sarssl.data.datasets import M3LEODataset

    return M3LEODataset(ctx.data_root, ctx.labelled_aois, products=(s1_product,), norm_tiles=ctx.config.data.norm_tiles,
                        seed=ctx.seed, progress=ctx.progress, cache_dir=_cache_dir(ctx)).norm


def _cache_dir(ctx: PretrainContext):
    """The packed cache the run reads through (``None``: the chip files, ``data.packed_cache`` off)."""
    from sarssl.paths import packed_cache_dir

    return packed_cache_dir() if ctx.config.data.packed_cache else None


def pretrain_dataset(ctx: PretrainContext, norm, s1_product: str = S1_PRODUCT, split="train", products=None,
                     decode: str = "sample", labelled: bool = False):
    """The M3LEO chips of ``ctx.aois`` (``labelled``: of ``ctx.labelled_aois``) in ``split`` with
    ``s1``/``s1_valid``, normalised with ``norm`` (:func:`labelled_normalization`).

    ``decode="batch"``: items hold compact records, decoded per batch by ``ds.decode_batch``.
    """
    from sarssl.data.datasets import M3LEODataset

    aois = ctx.labelled_aois if labelled else ctx.aois
    ds = M3LEODataset(ctx.data_root, aois, split=split, products=products or (s1_product,), normalization=norm,
                      decode=decode, norm_tiles=ctx.config.data.norm_tiles, seed=ctx.seed, progress=ctx.progress,
                      cache_dir=_cache_dir(ctx))
    if len(ds) == 0:
        raise UserError(f"no {split} chips with {s1_product} under {ctx.data_root} for AOIs {aois}")
    return ds


def _check_size(ds, img_size: int, what: str) -> None:
    h, w = ds.chip_shape
    if (h, w) != (img_size, img_size):
        raise UserError(f"{what}: chips are {h}x{w} px but the encoder expects {img_size}x{img_size}; "
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
        checkpoint_every=m.checkpoint_every,  # None: at the end of each epoch (the engine counts the steps)
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
    s1 = cfg.data.s1_product
    ds = pretrain_dataset(ctx, labelled_normalization(ctx, s1), s1, decode=cfg.method_config.decode)
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
    chips and k-NN land-cover accuracy (train vs val chips of ``ctx.labelled_aois``) at each epoch end."""
    from sarssl.train.checkpoint import seed_everything
    from sarssl.train.dino_setup import prepare_dino

    cfg = ctx.config
    s1 = cfg.data.s1_product
    norm = labelled_normalization(ctx, s1)
    ds = pretrain_dataset(ctx, norm, s1)
    knn_train = knn_test = None
    year = s1.rsplit("-", 1)[-1]
    try:
        knn_train = pretrain_dataset(ctx, norm, s1, "train", (s1, f"esaworldcover-{year}"), labelled=True)
        knn_test = pretrain_dataset(ctx, norm, s1, "val", (s1, f"esaworldcover-{year}"), labelled=True)
    except (FileNotFoundError, ValueError) as err:  # no land cover: train without the k-NN monitor
        import warnings

        warnings.warn(f"DINO k-NN monitor disabled: {err}")
    seed_everything(ctx.seed)
    task, data, config = prepare_dino(cfg, ds, knn_train=knn_train, knn_test=knn_test, out_dir=ctx.out_dir,
                                      seed=ctx.seed, progress=ctx.progress)
    return PretrainSetup(task, data, config)


def run_pretrain(method: str, profile="auto", data_root: str | Path = ".", out_dir: str | Path = "run",
                 aoi=None, overrides: dict | None = None, progress: bool = True, seed: int | None = None,
                 labelled_aois=None) -> Path:
    """Pretrain ``method`` (``"mae"`` or ``"dino"``) on the M3LEO root ``data_root`` into ``out_dir``.

    Args:
        profile: profile name (``"auto"``, ``"smoke"``, ``"cpu"``, ``"gpu"``, ``"paper"``) or a Profile.
        aoi: AOI name or list (default: every AOI under ``data_root``); an AOI given twice is refused.
        labelled_aois: the AOIs of ``aoi`` that fit the normalisation and feed DINO's k-NN monitor
            (default all of them); the others are an unlabelled pool.
        overrides: flat configuration names (:func:`sarssl.profiles.train_config`): the method's
            section (``epochs``, ``batch_size``, ``base_lr``, ``mask_ratio``, ``out_dim``...), then
            ``model``, ``data`` and ``engine`` fields (``max_steps``, ``precision``...).
        seed: run seed (default ``overrides["seed"]`` or 0).

    Returns:
        ``out_dir`` holding ``checkpoint.pt``, ``encoder.pth``/``encoder.json``, ``metrics.csv``,
        ``tb/`` and ``run.json`` (method, profile, data root, AOIs, labelled AOIs, seed, the resolved ``config``
        and the run's ``identity``). The same call again resumes; a call describing another run (another
        method, data, seed or configuration, see :data:`RESUMABLE_FIELDS`) is refused before anything
        is written (:class:`~sarssl.errors.UserError`).
    """
    from sarssl.data.layout import check_unique_aois, list_aois
    from sarssl.profiles import train_config
    from sarssl.train.checkpoint import atomic_write_text

    if method not in PRETRAIN_METHODS:
        raise UserError(f"unknown pretraining method {method!r}: expected one of {sorted(PRETRAIN_METHODS)}")
    overrides = dict(overrides or {})
    run_seed = int(seed if seed is not None else overrides.get("seed", 0))
    overrides.pop("seed", None)
    cfg = train_config(method, profile, overrides)
    root = Path(data_root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {str(root)!r} does not exist")
    aois = check_unique_aois(aoi) if aoi else list_aois(root)
    if not aois:
        raise FileNotFoundError(f"no AOI folder with a split file under {str(root)!r}")
    out = Path(out_dir)
    ctx = PretrainContext(cfg, root, aois, out, run_seed, progress, check_unique_aois(labelled_aois or aois))
    identity = run_identity(method, cfg, root, aois, run_seed, ctx.labelled_aois)
    check_run_folder(out, identity, root)  # before anything is built or written
    setup = PRETRAIN_METHODS[method](ctx)
    trainer = Trainer(setup.task, setup.data, setup.config, collate_fn=setup.collate_fn,
                      batch_transform=setup.batch_transform, run_config=cfg.to_dict())
    info = {"method": method, "profile": cfg.profile, "data_root": str(root), "aois": aois,
            "labelled_aois": ctx.labelled_aois, "overrides": overrides, "seed": run_seed, "config": cfg.to_dict(),
            "identity": identity, "fingerprint": identity_fingerprint(identity)}

    def write_run_json():  # once the engine accepted the folder's checkpoint (if any), before the first step
        if trainer.is_main:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(json.dumps(info, indent=2, default=str), out / "run.json")

    try:
        trainer.fit(on_ready=write_run_json)
    finally:
        trainer.close()
    return out


# --------------------------------------------------------------------------------------------
# Run identity
# --------------------------------------------------------------------------------------------
def _resumable(method: str) -> set[str]:
    return {f.replace("*", method, 1) for f in RESUMABLE_FIELDS}


def identity_config(config: dict, method: str) -> dict:
    """``RunConfig.to_dict()`` without the :data:`RESUMABLE_FIELDS` (and without ``method``/``profile``,
    which the identity holds at its top level): the configuration part of a run's identity."""
    drop = _resumable(method)
    return {k: ({f: v2 for f, v2 in v.items() if f"{k}.{f}" not in drop} if isinstance(v, dict) else v)
            for k, v in config.items() if k not in ("method", "profile")}


def run_identity(method: str, config: RunConfig, data_root, aois, seed: int, labelled_aois=None) -> dict:
    """What makes a run: method, profile, AOIs, the labelled ones (default all), the split files'
    fingerprints, seed, configuration.

    ``data_fingerprint`` maps each AOI to :func:`sarssl.data.fingerprint.split_digest` of its split file
    (cheap: one small file per AOI); ``config`` is :func:`identity_config` of the resolved configuration.
    """
    from sarssl.data.fingerprint import data_fingerprint

    return {"method": method, "profile": config.profile, "aois": list(aois),
            "labelled_aois": list(labelled_aois or aois), "data_fingerprint": data_fingerprint(data_root, aois),
            "seed": int(seed), "config": identity_config(config.to_dict(), method)}


def identity_fingerprint(identity: dict) -> str:
    """A short hash of a run identity (12 hex digits)."""
    from sarssl.data.fingerprint import short_hash

    return short_hash(json.dumps(identity, sort_keys=True, default=str), 12)


def saved_identity(run_dir: str | Path) -> dict | None:
    """The identity of the run in ``run_dir`` (``None`` for a folder holding no run).

    From ``run.json``'s ``identity``; for a run written before identities were saved, the parts its
    ``run.json`` (or, without one, its checkpoint's ``run_config``) records, with the data folder's path
    (``data_root``) standing in for the data fingerprint it lacks; a part it does not record is not compared.
    """
    run_dir = Path(run_dir)
    info_path = run_dir / "run.json"
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"{info_path} cannot be read ({e}): it is not a run record of sarssl; pass a new --out "
                            "folder") from e
        if not isinstance(info, dict):
            raise UserError(f"{info_path} is not a run record of sarssl (not a JSON object); pass a new --out folder")
        if isinstance(info.get("identity"), dict):
            return info["identity"]
        out = {k: info[k] for k in ("method", "profile", "aois", "seed") if k in info}
        if info.get("data_root"):  # no data fingerprint: the data folder is the evidence there is
            out["data_root"] = str(Path(info["data_root"]).resolve())
        method = info.get("method")
        if method in PRETRAIN_METHODS:
            try:
                out["config"] = identity_config(load_run_config(run_dir).to_dict(), method)
            except (ValueError, TypeError, KeyError):
                pass  # an unreadable legacy configuration: compared on the other parts only
        return out
    ckpt_path = run_dir / "checkpoint.pt"
    if ckpt_path.is_file():
        from sarssl.train.checkpoint import load_checkpoint

        run_config = load_checkpoint(ckpt_path, map_location="cpu").get("run_config")
        if not isinstance(run_config, dict) or "method" not in run_config:
            return {}
        return {"method": run_config["method"], "profile": run_config.get("profile"),
                "config": identity_config(run_config, run_config["method"])}
    return None


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def _field_defaults(method: str) -> dict:
    """``config.<section>.<field>`` -> the field's default, for fields that have one (to compare a
    configuration saved before a field existed: it ran with the default)."""
    import dataclasses

    from sarssl.profiles import METHOD_SECTIONS, DataConfig, EngineConfig, ModelConfig

    out = {}
    sections = {"model": ModelConfig, "data": DataConfig, "engine": EngineConfig}
    if method in METHOD_SECTIONS:
        sections[method] = METHOD_SECTIONS[method]
    for name, cls in sections.items():
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                value = f.default
                out[f"config.{name}.{f.name}"] = list(value) if isinstance(value, tuple) else value
    return out


_ORDER = ("method", "profile", "aois", "labelled_aois", "data_fingerprint", "data_root", "seed")


def identity_differences(saved: dict, current: dict) -> list[str]:
    """Human-readable differences between two run identities (parts ``saved`` lacks are not compared)."""
    if saved.get("method") not in (None, current.get("method")):  # another method: the sections differ anyway
        saved = {k: v for k, v in saved.items() if k != "config"}
    a, b = _flat(saved), _flat(current)
    defaults = _field_defaults(str(current.get("method")))
    missing = "<none>"
    diffs = []
    for key in sorted(set(a) | set(b), key=lambda k: (k.split(".")[0] not in _ORDER, k)):
        top = key.split(".", 1)[0]
        if top not in saved:
            continue
        old = a.get(key, defaults.get(key, missing))
        new = b.get(key, missing)
        if old == new:
            continue
        if top == "data_fingerprint":
            if key in a and key in b:
                diffs.append(f"the split file of AOI {key.split('.', 1)[1]!r} differs (data fingerprint {old} -> {new})")
            continue  # an AOI added or removed shows in 'aois'
        name = key[len("config."):] if top == "config" else key
        limit = 1000 if top == "data_root" else 60  # a folder is shown whole
        diffs.append(f"{name} {_short(old, limit)} -> {_short(new, limit)}")
    return diffs


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def check_run_folder(out_dir: str | Path, identity: dict, data_root=None) -> None:
    """Refuse (:class:`~sarssl.errors.UserError`) an ``out_dir`` that holds another run than ``identity``.

    A missing or empty folder, or one holding this run (to resume or already finished), passes. A run saved
    before identities were (no data fingerprint) is compared on its data folder's path, ``data_root``.
    Nothing is written.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"run folder {str(out)!r} is a file, not a folder: pass a folder to --out")
    if not out.is_dir():
        return
    saved = saved_identity(out)
    if saved is None:
        return
    if "data_root" in saved and data_root is not None:
        identity = {**identity, "data_root": str(Path(data_root).resolve())}
    diffs = identity_differences(saved, identity)
    if not diffs:
        return
    shown = "; ".join(diffs[:6]) + (f"; and {len(diffs) - 6} more" if len(diffs) > 6 else "")
    raise UserError(f"run folder {str(out)!r} holds another run (saved -> now: {shown}): pass a new --out folder "
                    "for this run, or resume this one with the settings it was started with")


def load_run_config(run_dir: str | Path, method: str | None = None) -> RunConfig:
    """The resolved :class:`~sarssl.profiles.RunConfig` saved in ``run_dir/run.json``.

    Runs written before configurations were saved (``run.json`` with only ``profile`` and
    ``overrides``) are resolved from today's profile with their overrides.
    """
    from sarssl.profiles import knobs, train_config

    info_path = Path(run_dir) / "run.json"
    if not info_path.is_file():
        raise FileNotFoundError(f"{info_path} does not exist: was {run_dir} written by run_pretrain?")
    try:
        info = json.loads(info_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{info_path} cannot be read as a run record: {e}") from e
    if method is not None and info.get("method") != method:
        raise UserError(f"{info_path} describes a {info.get('method')!r} run, expected {method!r}")
    if "config" in info:
        return RunConfig.from_dict(info["config"])
    known = {k.name for k in knobs(info["method"])} | {"device"}
    legacy = {k: v for k, v in info.get("overrides", {}).items() if k in known}
    return train_config(info["method"], info["profile"], legacy)
