"""The book layer's memoised recipes: simulated regions, data sources and pretrained runs, made once and reused.

Chapters can run on their own (on Colab, say) or in sequence: each one asks the workspace for the
region (:func:`resolve_data`, from the chapter's ``DATA`` parameter) or the pretrained encoder it needs,
and the workspace makes it once and reuses it.
The folders come from :mod:`sarssl.paths` (root ``$SARSSL_HOME`` when set, else ``~/.cache/sarssl``);
this module sits on top of every other layer (it calls the simulator and the pretraining entry
point), so library code never imports it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from sarssl import paths
from sarssl.errors import UserError
from sarssl.paths import workspace_dir  # re-exported: a public name of this module
from sarssl.profiles import DataConfig, Profile

__all__ = ["workspace_dir", "region_root", "simulated_region", "POOL_SEED0", "pretraining_pool", "run_dir",
           "pretrained_run", "variant_name", "DATA_ENV", "DataSource", "resolve_data", "sweep_csv", "sweep_regions"]

#: environment variable a chapter's ``DATA = "auto"`` reads (unset: ``"sim"``, the simulator)
DATA_ENV = "SARSSL_DATA"
HUB_PREFIX = "hub:"


def region_root(profile: Profile, seed: int = 0) -> Path:
    """Folder that holds the simulated region(s) for ``profile`` and ``seed`` (one M3LEO root)."""
    from sarssl.data.simulate import SIMULATOR_VERSION

    d = profile.data
    return paths.region_dir(profile.name, d.n_chips, d.chip_size, d.pixel_size, SIMULATOR_VERSION, seed)


def simulated_region(profile: Profile, aoi: str = "sim-a", seed: int = 0, progress: bool = True,
                     root: Path | None = None, n_chips: int | None = None) -> Path:
    """M3LEO root holding the simulated AOI ``aoi`` for ``profile``; simulated on first use.

    ``root``: the M3LEO root to write into (default :func:`region_root` of ``seed``); ``n_chips``: chips
    of the AOI (default ``data.n_chips``). The AOI is written to a temporary folder and moved into place,
    so concurrent callers and interrupted runs never see a half-written region.

    Returns:
        The root folder to pass to the M3LEO readers (the AOI is ``root / aoi``).
    """
    from sarssl.data.simulate import simulate_region

    root = Path(root) if root is not None else region_root(profile, seed)
    target = root / aoi
    if target.is_dir():
        return root
    tmp_root = root.parent / f".tmp-{uuid.uuid4().hex}"
    d = profile.data
    simulate_region(
        tmp_root, aoi=aoi, n_chips=n_chips or d.n_chips, chip_size=d.chip_size, pixel_size=d.pixel_size,
        seed=seed, progress=progress,
    )
    root.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp_root / aoi, target)
    except OSError:
        if not target.is_dir():  # lost a race only if the winner's copy is there
            raise
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return root


#: Seed of the first pretraining-pool region: 0 is sim-a, 1 sim-b (the sweep's out-of-region test) and 2-4
#: chapter 6's transfer regions sim-c..e, so the pool starts well clear of every region a chapter tests on.
POOL_SEED0 = 100


def pretraining_pool(profile: Profile, root: Path | None = None, progress: bool = True,
                     config: DataConfig | None = None) -> list[str]:
    """The unlabelled pretraining pool of the simulator, simulated on first use: AOI names.

    ``config.pool_regions`` AOIs ``sim-pool-<seed>`` (seeds ``POOL_SEED0``, +1, ...) of ``config.pool_chips``
    chips each (``config``: default ``profile.data``), written into ``root`` (default sim-a's root: a
    pretraining run reads one M3LEO root).
    """
    d = config or profile.data
    root = Path(root) if root is not None else region_root(profile)
    aois = []
    for seed in range(POOL_SEED0, POOL_SEED0 + d.pool_regions):
        aoi = f"sim-pool-{seed}"
        simulated_region(profile, aoi, seed, progress, root=root, n_chips=d.pool_chips)
        made = json.loads((root / aoi / "simulation.json").read_text())["parameters"]["n_chips"]
        if made != d.pool_chips:
            raise UserError(f"pool region {str(root / aoi)!r} holds {made} chips, not pool_chips={d.pool_chips}: "
                            "remove that folder to simulate it again")
        aois.append(aoi)
    return aois


def run_dir(profile: Profile, name: str) -> Path:
    """Folder for a training run (``mae``, ``dino``, ``finetune/...``) of ``profile``."""
    path = paths.run_path(profile.name, name)
    path.mkdir(parents=True, exist_ok=True)
    return path


def sweep_csv(profile: Profile, data: "DataSource | None" = None) -> Path:
    """The label-efficiency sweep's results CSV of ``profile`` on ``data`` (default the simulator), one
    folder per data source (:meth:`DataSource.run_name`): the default of chapter 5 and ``sarssl sweep``."""
    return run_dir(profile, data.run_name("sweep") if data is not None else "sweep") / "sweep.csv"


def sweep_regions(profile: Profile, data: "DataSource", progress: bool = True) -> tuple[tuple | None, str]:
    """The out-of-region test set of a sweep on ``data``, as ``(root, aoi)`` or ``None``, and a note.

    The simulator gets a second region drawn with another seed (``sim-b``, seed 1); other data uses its
    second AOI when it has one and has no out-of-region test otherwise.
    """
    if data.kind == "sim":
        return (simulated_region(profile, "sim-b", seed=1, progress=progress), "sim-b"), \
            "out-of-region: simulated region 'sim-b' (seed 1)"
    if len(data.aois) > 1:
        return (data.root, data.aois[1]), f"out-of-region: AOI {data.aois[1]!r}"
    return None, f"no out-of-region test: the data holds one AOI ({data.aoi!r}); give two AOIs for one"


def pretrained_run(profile: Profile, method: str, seed: int = 0, progress: bool = True,
                   data: "DataSource | None" = None, **overrides) -> Path:
    """Run folder of ``method`` (``"mae"`` or ``"dino"``) pretrained on ``data`` (a :func:`resolve_data`
    result; default the simulated region of ``profile``), one run folder per data source.

    Trains on first use and resumes an interrupted run; a finished run is reused as it is. The folder
    holds ``encoder.pth``/``encoder.json`` (timm-named encoder), ``metrics.csv``, ``checkpoint.pt`` and
    ``run.json`` (the resolved configuration that loaders rebuild from). ``overrides``: flat
    configuration names (:func:`sarssl.profiles.train_config`), e.g. ``mask_ratio=0.9``; overrides that
    change the run's identity name their own folder (:func:`variant_name`, ``mae-norm_pix_loss-false``),
    and overrides equal to the profile's values reuse the profile's run.

    On the simulator the run pretrains on the labelled region and the unlabelled pool
    (:func:`pretraining_pool`, ``data.pool_regions`` x ``data.pool_chips``); the normalisation and DINO's
    k-NN monitor use the labelled region only.
    """
    from sarssl.profiles import train_config
    from sarssl.train.pretrain import run_pretrain

    data = data if data is not None else resolve_data("sim", profile, seed=seed, progress=progress)
    base = variant_name(profile, method, overrides)
    name = data.run_name(base if seed == 0 else f"{base}-seed{seed}")
    labelled = list(data.aois)
    pool = []
    if data.kind == "sim":
        pool = pretraining_pool(profile, data.root, progress, train_config(method, profile, overrides).data)
    return run_pretrain(method, profile, data.root, run_dir(profile, name), aoi=labelled + pool,
                        overrides=overrides or None, progress=progress, seed=seed, labelled_aois=labelled)


def variant_name(profile: Profile, method: str, overrides: dict | None = None) -> str:
    """Run name of ``method`` with ``overrides``: ``method`` plus ``-<field>-<value>`` for each field of the
    run's identity (:func:`sarssl.train.pretrain.identity_config`) that the overrides change, sorted;
    ``method`` alone when they change none (resumable fields such as ``max_steps`` change none)."""
    import re

    from sarssl.profiles import train_config
    from sarssl.train.pretrain import identity_config

    base, new = (identity_config(train_config(method, profile, o).to_dict(), method) for o in (None, overrides))
    changed = [(f, v) for s, sec in sorted(new.items()) if isinstance(sec, dict)
               for f, v in sorted(sec.items()) if v != base[s].get(f)]
    changed += [(s, v) for s, v in sorted(new.items()) if not isinstance(v, dict) and v != base[s]]
    return "-".join([method] + [f"{f}-{re.sub(r'[^a-z0-9.]+', '_', str(v).lower()).strip('_')}" for f, v in changed])


# --------------------------------------------------------------------------------------------
# DATA: the simulator, a local folder or a Hub subset
# --------------------------------------------------------------------------------------------
def _key(*parts) -> str:
    """12 hex digits of the SHA-1 of ``parts`` joined by ``|``: the name of a derived folder."""
    return hashlib.sha1("|".join(str(p) for p in parts).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class DataSource:
    """Where a chapter's ``DATA`` resolved to (:func:`resolve_data`).

    ``root``: the M3LEO root the readers get; ``aois``: the AOIs to use (``aoi`` is the first);
    ``kind``: ``"sim"``, ``"m3leo"`` (GeoTIFF folders), ``"parquet"`` (shards, unpacked), ``"geotiff"``
    (your own folder, converted) or ``"hub"``; ``products``: the products sarssl decodes present in every
    AOI; ``chip_size``: px of the chips as read (the profile's image size); ``source``: what ``DATA`` said;
    ``note``: a paragraph for the reader (what was fetched, converted, resized, left out).
    """

    root: Path
    aois: tuple
    kind: str
    products: tuple
    chip_size: int
    source: str
    note: str

    @property
    def aoi(self) -> str:
        return self.aois[0]

    def has(self, product: str) -> bool:
        """Whether every AOI holds ``product`` (``"esaworldcover-2020"``...): else a chapter skips its panel."""
        return product in self.products

    def run_name(self, name: str) -> str:
        """A run folder name for this data: ``name`` on the simulator, ``<name>-<kind>-<hash>`` otherwise."""
        if self.kind == "sim":
            return name
        return f"{name}-{self.kind}-{_key(Path(self.root).resolve(), ','.join(self.aois))[:8]}"


def _from_hub(spec: str, profile: Profile, seed: int, progress: bool, hub_api, max_chips) -> tuple[Path, list, str]:
    """``hub:M3LEO-miniset/<aoi>`` or ``hub:M3LEO/<aoi>`` -> (M3LEO root, [aoi], note): a seeded subset of
    ``max_chips`` chips (default the profile's ``data.n_chips``; 0 = all), fetched once."""
    from sarssl.data.download import FULL_ORG, MINISET_ORG, download_aoi

    org, _, aoi = spec[len(HUB_PREFIX):].partition("/")
    if org not in (MINISET_ORG, FULL_ORG) or not aoi or "/" in aoi:
        raise UserError(f"DATA {spec!r}: expected 'hub:{MINISET_ORG}/<aoi>' or 'hub:{FULL_ORG}/<aoi>'")
    n = profile.data.n_chips if max_chips is None else max_chips
    root = paths.derived_data_dir("hub") / f"{org}-n{n or 'all'}-seed{seed}"
    download_aoi(aoi, root, miniset=org == MINISET_ORG, max_chips=n or None, seed=seed, progress=progress,
                 hub_api=hub_api)
    return root, [aoi], f"fetched {'all' if not n else f'a subset of {n}'} chips of {org}/{aoi} from the Hub (seed {seed})"


def _unpacked(layout, out: Path, progress: bool):
    """An AOI whose S1 folder holds parquet shards, not GeoTIFFs -> its layout unpacked under ``out``."""
    from sarssl.data.layout import AOILayout
    from sarssl.data.m3leo import read_splits
    from sarssl.data.parquet import unpack_parquet

    target = out / layout.aoi
    target.mkdir(parents=True, exist_ok=True)
    for meta in (layout.split_csv, layout.geojson, layout.shard_index):
        if meta is not None and meta.is_file():
            shutil.copyfile(meta, target / meta.name)
    unpack_parquet(layout.aoi_dir, out, identifiers=read_splits(layout)["identifier"].tolist(), progress=progress)
    return AOILayout.find(out, layout.aoi)


def _has_parquet_only(layout, product: str) -> bool:
    folder = layout.product_dir(product)
    return folder.is_dir() and not any(folder.glob("*.tif")) and any(folder.glob("*.parquet"))


def _local_aois(folder: Path, aoi) -> tuple[Path, list]:
    """A local folder -> (M3LEO root, AOIs): a root holding AOI folders, or one AOI folder itself."""
    from sarssl.data.layout import check_unique_aois, list_aois, split_files

    found = list_aois(folder)
    if found:
        return folder, check_unique_aois(aoi) if aoi else found
    if any(split_files(folder)):
        if aoi and check_unique_aois(aoi) != [folder.name]:
            raise UserError(f"DATA folder {str(folder)!r} is the AOI {folder.name!r}, not {aoi!r}")
        return folder.parent, [folder.name]
    raise UserError(f"DATA folder {str(folder)!r} is neither an M3LEO root (AOI folders with a split file), an AOI "
                    "folder (with its split file), nor a GeoTIFF folder with a bandmap.json "
                    "(see sarssl.data.own_geotiffs)")


def resolve_data(data: str | os.PathLike = "auto", profile: Profile | str = "auto", aoi=None, seed: int = 0,
                 progress: bool = True, band_map=None, hub_api=None, max_chips: int | None = None) -> DataSource:
    """The one resolver of a chapter's (or the command line's) ``DATA``.

    Args:
        data: ``"auto"`` (``$SARSSL_DATA`` when set, else ``"sim"``); ``"sim"`` (the simulator: the
            profile's region, AOI ``aoi`` or ``"sim-a"``); a local folder: an M3LEO root or one AOI folder,
            in either published layout (GeoTIFFs, or the archive's parquet shards, unpacked into the
            workspace), or your own GeoTIFF folder with a ``bandmap.json`` (converted,
            :mod:`sarssl.data.own_geotiffs`); or ``"hub:M3LEO-miniset/<aoi>"`` / ``"hub:M3LEO/<aoi>"`` (a
            seeded subset of ``max_chips`` chips, default the profile's ``data.n_chips``, fetched once).
        profile: a :class:`~sarssl.profiles.Profile` or its name.
        aoi: an AOI name or list (default: every AOI of the folder).
        band_map: a band map JSON for a GeoTIFF folder (default ``<folder>/bandmap.json``).
        hub_api: the hub access for ``hub:`` sources (default the real Hub; tests pass a fake).

    Chips of another size than the profile's ``model.img_size`` are resized to it with the footprint kept
    (:mod:`sarssl.data.resample`, once, into the workspace). Returns a :class:`DataSource`.
    """
    from sarssl.data.layout import AOILayout
    from sarssl.data.m3leo import available_products
    from sarssl.data.own_geotiffs import convert_folder, has_band_map
    from sarssl.data.resample import chip_size_of, resample_aoi
    from sarssl.profiles import get_profile

    profile = get_profile(profile) if isinstance(profile, str) else profile
    spec = str(data)
    if spec == "auto":
        spec = os.environ.get(DATA_ENV, "").strip() or "sim"
    notes = []
    if spec == "sim":
        name = aoi or "sim-a"
        if not isinstance(name, str):
            raise UserError(f"DATA 'sim' simulates one AOI: give aoi as a name, got {aoi!r}")
        root, aois, kind = simulated_region(profile, aoi=name, seed=seed, progress=progress), [name], "sim"
        d = profile.data
        notes.append(f"simulated region {name!r} ({d.n_chips} chips, seed {seed})")
    elif spec.startswith(HUB_PREFIX):
        root, aois, note = _from_hub(spec, profile, seed, progress, hub_api, max_chips)
        kind = "hub"
        notes.append(note)
    else:
        folder = Path(spec).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"DATA folder {spec!r} does not exist; DATA is 'auto', 'sim', a folder (an M3LEO "
                                    "root, an AOI folder or a GeoTIFF folder with bandmap.json) or "
                                    "'hub:M3LEO-miniset/<aoi>'")
        if band_map is not None or has_band_map(folder):
            conv = convert_folder(folder, paths.derived_data_dir("own") / _key(folder.resolve()), band_map,
                                  progress=progress)
            root, aois, kind = Path(conv.root), [conv.aoi], "geotiff"
            notes.append(f"your GeoTIFFs in {str(folder)!r} converted: {conv.note()}")
        else:
            root, aois = _local_aois(folder, aoi)
            kind = "m3leo"
            notes.append(f"M3LEO data in {str(root)!r}")
    layouts = [AOILayout.find(root, a) for a in aois]
    ref = profile.data.s1_product
    if kind != "sim" and any(_has_parquet_only(lay, ref) for lay in layouts):
        if not all(_has_parquet_only(lay, ref) for lay in layouts):
            raise UserError(f"DATA {spec!r}: AOIs {aois} mix parquet shards and GeoTIFFs; use them one at a time")
        out = paths.derived_data_dir("unpacked") / _key(Path(root).resolve())
        layouts = [_unpacked(lay, out, progress) for lay in layouts]
        kind = "parquet" if kind == "m3leo" else kind
        notes.append("parquet shards unpacked into the workspace")
    size = profile.model.img_size
    if any(chip_size_of(lay)[0] != size for lay in layouts):
        out = paths.derived_data_dir("resized") / _key(*(lay.aoi_dir.resolve() for lay in layouts), size)
        done = [resample_aoi(lay, out, size, progress=progress) for lay in layouts]
        layouts = [AOILayout.find(out, lay.aoi) for lay in layouts]
        notes.append(f"{done[0].note()} to the {profile.name} profile's image size")
        left_out = sorted({p for r in done for p in r.left_out})
        if left_out:
            notes.append(f"product folders sarssl does not read, not resized: {', '.join(left_out)}")
    root = layouts[0].root
    present = [set(available_products(lay)) for lay in layouts]
    products = tuple(p for p in available_products(layouts[0]) if all(p in s for s in present))
    if ref not in products:
        raise UserError(f"DATA {spec!r}: AOI(s) {aois} hold no {ref!r} product folder (products: {list(products)}); "
                        "the input channels are read from it")
    notes.append(f"AOI(s) {', '.join(aois)}: chips of {size} px; products {', '.join(products)}")
    return DataSource(Path(root), tuple(aois), kind, products, size, spec, "; ".join(notes) + ".")
