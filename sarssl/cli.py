"""The ``sarssl`` command line.

``sarssl simulate``  write a simulated region in the M3LEO layout
``sarssl stats``     chip counts, splits and per-channel statistics of a region
``sarssl book``      execute every chapter with papermill and build the HTML book
``sarssl pretrain``  MAE or DINO pretraining (resumable with the same command)
``sarssl finetune``  fine-tune or probe an encoder on one target with few labels
``sarssl sweep``     the label-efficiency sweep (resumable)
``sarssl data``      download real M3LEO regions, whole or a subset of chips (needs internet)
``sarssl export``    a pretrained encoder as a timm / Hugging Face Hub model folder

``pretrain mae|dino`` and ``finetune`` get one flag per field of the method's configuration
(:mod:`sarssl.profiles`: ``--mask-ratio 0.6``, ``--out-dim 1024``, ``--probe-lr 0.01``,
``--no-norm-pix-loss``), with the field's help; only the flags given override the profile.

A user error (missing folder, unknown product, bad number: :class:`sarssl.errors.UserError`, and a
missing or already existing path) prints one line and exits with status 2; ``--debug`` shows the traceback
instead. Any other exception is unexpected: its traceback is printed, followed by a one-line hint.
Training stopped by SIGTERM or Ctrl-C writes a checkpoint first, prints where it is and exits with
128 + the signal number (143, 130); the same command resumes.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from sarssl.errors import UserError
from sarssl.profiles import PROFILE_NAMES

#: errors shown as one line (exit status 2): the project's user errors and paths the user gave that are
#: missing, already there or of the wrong kind. Everything else keeps its traceback.
USER_ERRORS = (UserError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError)
BUG_HINT = ("this is an unexpected error, not a usage error: unless it comes from the system (disk, memory, GPU), "
            "it is a bug in sarssl; please report it with the traceback above")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit status 2); ``--help`` still shows the full usage."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def _existing_dir(text: str) -> Path:
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"folder {text!r} does not exist")
    return path


def _optional(base):
    """``base`` parser that also takes ``none`` (-> None)."""
    def parse(text: str):
        return None if text.strip().lower() == "none" else base(text)

    parse.__name__ = base.__name__  # argparse names the type in its error message
    return parse


def _flag_kwargs(tp) -> dict:
    """argparse keyword arguments for a configuration field of type ``tp``."""
    import types
    import typing

    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)][0]
        kw = _flag_kwargs(inner)
        kw["type"] = _optional(kw.get("type", str))
        kw["metavar"] = f"{kw.get('metavar', inner.__name__.upper())}|none"
        return kw
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": args[0], "nargs": "+", "metavar": args[0].__name__.upper()}
        return {"type": args[0], "nargs": len(args), "metavar": args[0].__name__.upper()}
    if tp is bool:
        return {"action": argparse.BooleanOptionalAction}
    return {"type": tp, "metavar": tp.__name__.upper()}


def add_config_flags(parser: argparse.ArgumentParser, method: str, sections=None, skip=()) -> None:
    """One flag per configuration field of ``method`` (:func:`sarssl.profiles.knobs`), e.g. ``--mask-ratio``:
    the field's help, the type from its annotation, ``--flag/--no-flag`` for booleans. Only flags given
    on the command line become overrides (:func:`config_overrides`)."""
    from sarssl.profiles import knobs

    groups: dict = {}
    names = []
    for k in knobs(method):
        if not k.cli or k.name in skip or (sections is not None and k.section not in sections):
            continue
        if k.section not in groups:
            groups[k.section] = parser.add_argument_group(
                f"{k.section} configuration", "defaults: the profile's values ('none' where a value may be None)"
                if not groups else None)
        groups[k.section].add_argument("--" + k.name.replace("_", "-"), dest=f"cfg_{k.name}",
                                       default=argparse.SUPPRESS, help=k.help.replace("%", "%%"),
                                       **_flag_kwargs(k.type))
        names.append(k.name)
    parser.set_defaults(config_flags=tuple(names))


def config_overrides(args) -> dict:
    """The configuration flags given on the command line, as ``{field name: value}``."""
    return {n: getattr(args, f"cfg_{n}") for n in getattr(args, "config_flags", ()) if hasattr(args, f"cfg_{n}")}


def cmd_simulate(args) -> int:
    from sarssl.data.scene import STUDY_CHIP_M
    from sarssl.data.simulate import simulate_region

    pixel_size = args.pixel_size or STUDY_CHIP_M / args.size  # default: the study's 4.48 km footprint
    layout = simulate_region(
        args.out_dir, aoi=args.aoi, n_chips=args.n_chips, chip_size=args.size,
        pixel_size=pixel_size, seed=args.seed, year=args.year, progress=not args.quiet,
        overwrite=args.overwrite,
    )
    print(f"wrote {args.n_chips} chips of {args.size}x{args.size} px at {pixel_size:g} m to {layout.aoi_dir}")
    return 0


def cmd_stats(args) -> int:
    from sarssl.data.stats import region_summary

    print(region_summary(args.root, aois=args.aoi, n_tiles=args.n_tiles, seed=args.seed))
    return 0


def cmd_book(args) -> int:
    from sarssl.book import ChapterError, build_book
    from sarssl.profiles import resolve_profile_name

    try:
        html = build_book(profile=resolve_profile_name(args.profile), out_dir=args.out, strict=not args.no_strict,
                          reuse_executed=args.reuse)
    except ChapterError as err:
        print(f"sarssl book: {err}", file=sys.stderr)
        return 1
    print(f"book built: {html / 'index.html'}")
    return 0


def _resolve_data(args, profile: str):
    """``--data`` (and ``--band-map``) -> :class:`sarssl.workspace.DataSource`; its note is printed."""
    from sarssl.workspace import resolve_data

    data = resolve_data(args.data, profile, aoi=args.aoi, band_map=args.band_map)
    print(f"data: {data.note}")
    return data


def cmd_pretrain(args) -> int:
    from sarssl.profiles import resolve_profile_name
    from sarssl.train.pretrain import run_pretrain

    overrides = {k: v for k, v in {"epochs": args.epochs, "batch_size": args.batch_size}.items() if v is not None}
    overrides.update(config_overrides(args))
    profile = resolve_profile_name(args.profile)
    data = _resolve_data(args, profile)
    out = run_pretrain(args.method, profile, str(data.root), str(args.out), aoi=list(data.aois), overrides=overrides)
    print(f"pretraining done: {out}")
    return 0


def _pretrained(args) -> dict | None:
    runs = {"mae": args.pretrained_mae, "dino": args.pretrained_dino}
    return {k: str(v) for k, v in runs.items() if v is not None} or None


def cmd_finetune(args) -> int:
    from sarssl.profiles import resolve_profile_name
    from sarssl.train.finetune import run_finetune

    profile = resolve_profile_name(args.profile)
    data = _resolve_data(args, profile)
    result = run_finetune(task=args.task, protocol=args.protocol, init=args.init, profile=profile,
                          data_root=str(data.root), aoi=data.aoi, limit_pct=args.limit_pct, seed=args.seed,
                          out_dir=args.out, epochs=args.epochs, pretrained=_pretrained(args),
                          **config_overrides(args))
    for key, value in result.items():
        print(f"{key}: {value}")
    return 0


def _add_data_args(p, one_aoi: bool = False) -> None:
    """``--data`` (resolved by :func:`sarssl.workspace.resolve_data`) and ``--band-map`` of pretrain / finetune / sweep."""
    p.add_argument("--data", required=True,
                   help="an M3LEO root or AOI folder (GeoTIFFs or parquet shards), your own GeoTIFF folder with a "
                        "bandmap.json, 'hub:M3LEO-miniset/<aoi>' (a subset fetched once) or 'sim'; chips of another "
                        "size than the profile's image size are resized to it, the footprint kept")
    p.add_argument("--band-map", type=Path,
                   help="band map JSON of a GeoTIFF folder (default: DATA/bandmap.json; see sarssl.data.own_geotiffs)")
    if one_aoi:
        p.add_argument("--aoi", help="AOI to train and test on (default: the data's first AOI)")


def cmd_sweep(args) -> int:
    from sarssl.profiles import get_profile, resolve_profile_name
    from sarssl.train.sweep import run_sweep, summarize
    from sarssl.train.tasks import tasks_with_labels
    from sarssl.workspace import sweep_csv, sweep_regions

    profile = get_profile(resolve_profile_name(args.profile))
    data = _resolve_data(args, profile)
    ood, note = (None, "no out-of-region test (--no-ood)") if args.no_ood else sweep_regions(profile, data)
    print(note)
    tasks, missing = tasks_with_labels(args.tasks or profile.finetune.tasks, data.products)
    for task, product in missing.items():
        print(f"task {task!r} skipped: the data holds no {product!r} labels")
    if not tasks:
        raise UserError(f"--data {args.data!r} holds the labels of none of the tasks {list(missing)}")
    out = args.out if args.out is not None else sweep_csv(profile, data)
    df = run_sweep(profile=profile, data_root=str(data.root), out_csv=out,
                   methods=args.methods, fractions=args.fractions, seeds=args.seeds, tasks=tasks,
                   protocol=args.protocol, pretrained=_pretrained(args), aoi=data.aoi,
                   ood=ood, max_runs=args.max_runs)
    print(summarize(df).to_string())
    print(f"results: {out} ({len(df)} rows)")
    return 0


def cmd_data_download(args) -> int:
    from sarssl.data.download import download_aoi, read_subset
    from sarssl.data.parquet import unpack_parquet

    aoi_dir = download_aoi(args.aoi, args.out, products=args.products, miniset=args.miniset, revision=args.revision,
                           max_chips=args.max_chips, splits=args.splits, seed=args.seed,
                           progress=not getattr(args, "quiet", False))
    subset = read_subset(aoi_dir)
    if subset is not None:
        per_split = ", ".join(f"{s} {n}" for s, n in sorted(subset["chips"].items()))
        shards = f", {len(subset['shards'])} shard(s) per dataset" if not args.miniset else ""
        print(f"downloaded {subset['n_chips']} chips of {args.aoi} ({per_split}; seed {subset['seed']}{shards}) "
              f"to {aoi_dir}")
    else:
        print(f"downloaded {args.aoi} to {aoi_dir}")
    if args.unpack and not args.miniset:
        ids = subset["identifiers"] if subset is not None else None
        counts = unpack_parquet(aoi_dir, args.out, products=args.products, identifiers=ids,
                                progress=not getattr(args, "quiet", False))
        print(f"unpacked parquet shards into the M3LEO layout under {args.out}: {counts}")
    return 0


def _add_download_subset_args(d) -> None:
    """Subset flags of ``sarssl data download`` (chips drawn from the split CSV, stratified by split)."""
    d.add_argument("--max-chips", type=_positive_int,
                   help="fetch only N chips, drawn from the split CSV stratified by split (default: all)")
    d.add_argument("--splits", nargs="+", choices=("train", "val", "test"),
                   help="draw chips from these splits only (default: all three)")
    d.add_argument("--seed", type=int, default=0, help="seed of the chip draw (default 0)")
    d.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_export(args) -> int:
    from sarssl.export import export_run, push_to_hub

    out = export_run(args.run, args.out, normalization=args.normalization, overwrite=args.overwrite,
                     repo_hint=args.hub_repo)
    print(f"exported {args.run} to {out} (model.safetensors, config.json, README.md)")
    if args.hub_repo:
        url = push_to_hub(out, args.hub_repo, private=args.private)
        print(f"pushed to {url}")
    return 0


def _add_export_parser(sub) -> None:
    p = sub.add_parser("export", help="write a pretrained encoder as a timm / Hugging Face Hub model folder",
                       description="Export a pretraining run's encoder as model.safetensors + config.json (timm's "
                                   "pretrained_cfg with channels, units, mean/std in dB, M3LEO decoding) + README.md "
                                   "model card. Load it with timm.create_model('local-dir:OUT', pretrained=True).")
    p.add_argument("run", type=_existing_dir, help="pretraining run folder (encoder.pth, encoder.json, run.json)")
    p.add_argument("out", type=Path, help="folder to write the model into")
    p.add_argument("--normalization", type=Path,
                   help="normalisation JSON of the run's data (default: found from run.json in the workspace)")
    p.add_argument("--hub-repo", help="also push the folder to this Hugging Face model repository (needs a token)")
    p.add_argument("--private", action="store_true", help="create the Hub repository as private")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export in OUT")
    p.set_defaults(func=cmd_export)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sarssl", description="Self-supervised learning for SAR: data, pretraining, book.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("simulate", help="write a simulated region in the M3LEO layout",
                       description="Write a simulated Sentinel-1 region (all M3LEO products) in the M3LEO folder layout.")
    p.add_argument("out_dir", type=Path, help="M3LEO root to write into (the AOI goes to OUT_DIR/AOI)")
    p.add_argument("--n-chips", type=_positive_int, default=64, help="number of chips (default 64)")
    p.add_argument("--size", type=_positive_int, default=64, help="chip size in pixels (default 64)")
    p.add_argument("--pixel-size", type=_positive_float, default=None,
                   help="pixel size in metres (default 4480 / size: chips cover the study's 4.48 km)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--aoi", default="sim-a", help="AOI name (default sim-a)")
    p.add_argument("--year", type=int, default=2020, help="product year (default 2020)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true", help="replace an existing AOI folder")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("stats", help="chip counts, splits and per-channel statistics of a region",
                       description="Summarise an M3LEO root: chips per AOI, split and product, and per-channel statistics.")
    p.add_argument("root", type=_existing_dir, help="M3LEO root folder")
    p.add_argument("--aoi", action="append", help="AOI to summarise (repeatable; default: all)")
    p.add_argument("--n-tiles", type=_positive_int, default=32, help="train tiles sampled for channel statistics")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("book", help="execute every chapter and build the HTML book",
                       description="Execute every chapter with papermill and build the HTML book into OUT/html.")
    p.add_argument("--profile", default="cpu", choices=("auto",) + PROFILE_NAMES, help="run profile (default cpu)")
    p.add_argument("--out", type=Path, default=Path("_build"), help="output folder (default _build)")
    p.add_argument("--reuse", action="store_true", help="reuse executed chapters newer than their source")
    p.add_argument("--no-strict", action="store_true", help="do not turn Sphinx warnings into errors")
    p.set_defaults(func=cmd_book)

    p = sub.add_parser("pretrain", help="MAE or DINO pretraining on 12-channel SAR composites",
                       description="Pretrain an encoder with MAE or DINO. Running the same command again resumes. "
                                   "The run folder's run.json keeps the complete resolved configuration.")
    methods = p.add_subparsers(dest="method", required=True, metavar="METHOD", parser_class=_Parser)
    for method, title in (("mae", "masked autoencoder (He et al. 2021)"),
                          ("dino", "self-distillation with no labels (Caron et al. 2021)")):
        m = methods.add_parser(method, help=title, description=f"Pretrain an encoder with {method.upper()}, {title}. "
                               "Running the same command again resumes.")
        m.add_argument("--profile", default="auto", choices=("auto",) + PROFILE_NAMES,
                       help="run profile (default auto)")
        _add_data_args(m)
        m.add_argument("--aoi", action="append", help="AOI to train on (repeatable; default: all)")
        m.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, metrics, encoder.pth)")
        m.add_argument("--epochs", type=_positive_int, help="override the profile's epoch count")
        m.add_argument("--batch-size", type=_positive_int,
                       help="samples per process and step (under torchrun the global batch is this x processes)")
        add_config_flags(m, method, skip=("epochs", "batch_size"))
        m.set_defaults(func=cmd_pretrain)

    from sarssl.train.tasks import METHODS, PROTOCOLS, TARGETS

    p = sub.add_parser("finetune", help="fine-tune or probe an encoder on one labelled target",
                       description="Fine-tune (or probe) a scratch, MAE or DINO encoder on one target with a label fraction, "
                                   "and report test metrics with no-data masked.")
    p.add_argument("task", choices=sorted(TARGETS), help="target to predict")
    p.add_argument("protocol", choices=PROTOCOLS, help="training protocol")
    p.add_argument("--init", default="scratch", help="scratch, mae, dino or a pretraining run folder (default scratch)")
    p.add_argument("--profile", default="auto", choices=("auto",) + PROFILE_NAMES, help="run profile (default auto)")
    _add_data_args(p, one_aoi=True)
    p.add_argument("--limit-pct", type=_positive_float, default=100.0, help="percent of labelled train tiles (default 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the labelled subset and of training")
    p.add_argument("--out", type=Path, help="folder for the fine-tuned model and its metrics")
    p.add_argument("--epochs", type=_positive_int, help="override the profile's epoch count")
    p.add_argument("--pretrained-mae", type=_existing_dir, help="MAE pretraining run folder (with encoder.pth)")
    p.add_argument("--pretrained-dino", type=_existing_dir, help="DINO pretraining run folder (with encoder.pth)")
    add_config_flags(p, "finetune", sections=("finetune", "engine"), skip=("epochs",))
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("sweep", help="label-efficiency sweep: methods x label fractions x seeds x regions",
                       description="Run {random, scratch, MAE, DINO} x label fractions x seeds (in and out of region) into a "
                                   "tidy CSV. "
                                   "Finished runs in the CSV are skipped, so the same command resumes.")
    p.add_argument("--profile", default="auto", choices=("auto",) + PROFILE_NAMES, help="run profile (default auto)")
    _add_data_args(p)
    p.add_argument("--aoi", action="append",
                   help="AOI (repeatable): the first is trained and tested in-region, a second is the out-of-region "
                        "test (default: the data's AOIs; 'sim' adds a second simulated region)")
    p.add_argument("--out", type=Path, help="results CSV, one row per run and region (default: the workspace "
                                            "runs/<profile>/sweep/sweep.csv, as in chapter 5)")
    p.add_argument("--methods", nargs="+", choices=METHODS, help="methods (default all)")
    p.add_argument("--fractions", nargs="+", type=_positive_float, help="label fractions in percent (default: profile's)")
    p.add_argument("--seeds", nargs="+", type=int, help="seeds (default: profile's)")
    p.add_argument("--tasks", nargs="+", choices=sorted(TARGETS), help="targets (default: profile's)")
    p.add_argument("--protocol", choices=PROTOCOLS, help="protocol (default: profile's)")
    p.add_argument("--pretrained-mae", type=_existing_dir, help="MAE pretraining run folder (with encoder.pth)")
    p.add_argument("--pretrained-dino", type=_existing_dir, help="DINO pretraining run folder (with encoder.pth)")
    p.add_argument("--no-ood", action="store_true", help="skip the out-of-region evaluation")
    p.add_argument("--max-runs", type=_positive_int, help="stop after this many new runs")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("data", help="real M3LEO data (needs internet)", description="Real M3LEO data from the Hugging Face Hub.")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION", parser_class=_Parser)
    d = data_sub.add_parser("download", help="download one M3LEO AOI (resumable)",
                            description="Download one M3LEO AOI: the parquet shards of M3LEO/<aoi> or, with --miniset, the "
                                        "GeoTIFFs of M3LEO-miniset/<aoi>, under their published names. With --max-chips "
                                        "and/or --splits only the chips drawn from the split CSV (stratified by split, "
                                        "seeded) are fetched, from the archive only the shards holding them. Running the "
                                        "same command again resumes.")
    d.add_argument("--aoi", required=True,
                   help="AOI name: china, conus, europe, middleeast, pakin or southamerica")
    d.add_argument("--out", type=Path, required=True, help="M3LEO root to write into")
    d.add_argument("--miniset", action="store_true", help="the small GeoTIFF miniset instead of the parquet archives")
    d.add_argument("--products", nargs="+", help="products or families to fetch (default: all)")
    d.add_argument("--revision", help="dataset revision (branch, tag or commit)")
    d.add_argument("--unpack", action="store_true", help="unpack the parquet shards into the folder layout")
    _add_download_subset_args(d)
    d.set_defaults(func=cmd_data_download)
    _add_export_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as err:
        if args.debug:
            raise
        message = " ".join(line.strip() for line in str(err).splitlines() if line.strip())  # always one line
        print(f"sarssl {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # TrainingInterrupted (SIGTERM/SIGINT in training) says where its checkpoint is
        print(f"sarssl {args.command}: {str(err) or 'interrupted'}", file=sys.stderr)
        return int(getattr(err, "exit_code", 130))
    except Exception:  # noqa: BLE001 - unexpected: keep the traceback, add the hint
        if args.debug:
            raise
        traceback.print_exc()
        print(f"sarssl {args.command}: {BUG_HINT}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
