"""A local fake of the Hugging Face Hub serving M3LEO repositories with the published names.

The listings mirror what M3LEO publishes (the M3LEO repository and the Hub dataset cards):

- ``M3LEO-miniset/<aoi>``: ``<prefix>_miniset.geojson`` (properties ``area_km2, identifier, original_index``),
  ``<prefix><split>_miniset.csv`` (columns ``identifier, split, original_index``), GeoTIFFs
  ``<prefix>/<product>/<identifier>.tif`` for ``biomass-2020, esaworldcover-2020, ghsbuilts-2020, gssic,
  gunw_2020-01-01_2020-03-31`` (more ``gunw_*`` windows in some AOIs), ``modis44b006veg, s1grd-2020,
  s2rgbm-2020`` and ``srtmdem`` (spelled ``strmdem`` in some AOIs), plus ``README.md`` and ``.gitattributes``.
- ``M3LEO/<aoi>``: zstd parquet shards ``<aoi>/<prefix>/<dataset>/<parquet_identifier>.zstd.parquet`` with
  rows ``path, ds, content`` (one GeoTIFF each), datasets named as in the card (``s1grd-2020``, ``gssic``,
  ``gunw-2020-01-01_2020-03-31``, ``s2srm-2020``...), the split CSV ``<prefix><split>.csv``, the shard
  index ``<prefix><split>_parquet.csv`` (``identifier, split, parquet_identifier, original_index``),
  ``<prefix>.geojson``, ``README.md`` and ``.gitattributes``.

Prefixes and split suffixes are the six published ones (:data:`PUBLISHED`). Chip content comes from one
small simulated region (the same GeoTIFFs for every AOI; products sarssl does not decode -- gssic, gunw,
the DEM -- hold copies of another product's files: they are only listed, never read). Identifiers are
13 hexadecimal characters as in M3LEO.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

#: aoi -> (prefix, split suffix), exactly as published
PUBLISHED = {
    "china": ("china_partitions_aschips_23489d30a312b", "_splits_60bands_angle15_60-20-20"),
    "conus": ("conus_partitions_aschips_293d95e3ee589", "_splits_60bands_angle09_60-20-20"),
    "europe": ("europe_partitions_aschips_2f8bd3f01ddd5", "_splits_60bands_angle09_60-20-20"),
    "middleeast": ("middleeast_partitions_aschips_0a596e5469add", "_splits_60bands_angle15_60-20-20"),
    "pakin": ("pakin_partitions_aschips_0f26dc7030c75", "_splits_60bands_angle15_60-20-20"),
    "southamerica": ("southamerica_partitions_aschips_3219aa0f411c2", "_splits_60bands_angle02_60-20-20"),
}
GUNW_WINDOWS = ("2020-01-01_2020-03-31", "2020-04-01_2020-06-30", "2020-07-01_2020-09-30", "2020-10-01_2020-12-31")
#: AOIs with more than one GUNW window, and the AOIs whose cards spell the DEM ``strmdem``
MORE_GUNW = {"conus": 4, "europe": 2}
STRMDEM = {"middleeast", "pakin"}
#: miniset product -> the simulated product whose files it holds
SOURCE = {"biomass-2020": "biomass-2020", "esaworldcover-2020": "esaworldcover-2020",
          "ghsbuilts-2020": "ghsbuilts-2020", "modis44b006veg": "modis44b006veg", "s1grd-2020": "s1grd-2020",
          "s2rgbm-2020": "s2rgbm-2020", "gssic": "biomass-2020", "srtmdem": "ghsbuilts-2020",
          "strmdem": "ghsbuilts-2020"}
GITATTRIBUTES = "*.tif filter=lfs diff=lfs merge=lfs -text\n*.parquet filter=lfs diff=lfs merge=lfs -text\n"


def miniset_products(aoi: str) -> list[str]:
    """The product folders of ``M3LEO-miniset/<aoi>`` (sorted as the Hub lists them)."""
    gunw = [f"gunw_{w}" for w in GUNW_WINDOWS[: MORE_GUNW.get(aoi, 1)]]
    dem = "strmdem" if aoi in STRMDEM else "srtmdem"
    return sorted(["biomass-2020", "esaworldcover-2020", "ghsbuilts-2020", "gssic", *gunw, "modis44b006veg",
                   "s1grd-2020", "s2rgbm-2020", dem])


def archive_dataset(product: str) -> str:
    """Miniset product -> the archive's dataset name (``s2srm-2020``, ``gunw-<dates>``)."""
    if product.startswith("s2rgbm"):
        return "s2srm" + product[len("s2rgbm"):]
    if product.startswith("gunw_"):
        return "gunw-" + product[len("gunw_"):]
    return product


def chip_id(aoi: str, k: int) -> str:
    return hashlib.sha1(f"{aoi}/{k}".encode()).hexdigest()[:13]


def shard_id(aoi: str, k: int) -> str:
    return hashlib.sha1(f"{aoi}/shard/{k}".encode()).hexdigest()[:13]


@dataclass
class FakeHubData:
    folder: Path  # serves <folder>/<org>/<aoi>/...
    source: object  # the simulated AOILayout the chips come from
    ids: dict  # aoi -> {identifier: source identifier}
    splits: dict  # aoi -> {identifier: split}
    shards: dict  # aoi -> {identifier: parquet_identifier}


def build_fake_hub(base, aois=tuple(PUBLISHED), n_chips: int = 10, chip_size: int = 16,
                   chips_per_shard: int = 3, seed: int = 5) -> FakeHubData:
    """Write miniset and archive repositories of ``aois`` under ``base/hub`` (one simulation shared)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sarssl.data.m3leo import read_splits
    from sarssl.data.simulate import simulate_region

    base = Path(base)
    src = simulate_region(base / "src", "fake", n_chips=n_chips, chip_size=chip_size, seed=seed, progress=False)
    src_splits = read_splits(src)
    src_ids = list(src_splits["identifier"])
    src_geo = {f["properties"]["identifier"]: f for f in json.loads(src.geojson.read_text())["features"]}
    hub = base / "hub"
    data = FakeHubData(hub, src, {}, {}, {})
    schema = pa.schema([("path", pa.string()), ("ds", pa.string()), ("content", pa.binary())])
    for aoi in aois:
        prefix, suffix = PUBLISHED[aoi]
        ids = {chip_id(aoi, k): s for k, s in enumerate(src_ids)}
        split_of = dict(zip(src_splits["identifier"], src_splits["split"]))
        splits = {i: split_of[s] for i, s in ids.items()}
        original = {i: 1000 + k for k, i in enumerate(ids)}
        table = pd.DataFrame({"identifier": list(ids), "split": [splits[i] for i in ids],
                              "original_index": [original[i] for i in ids]})
        feats = [{"type": "Feature", "geometry": src_geo[s]["geometry"],
                  "properties": {"area_km2": 20.07, "identifier": i, "original_index": original[i]}}
                 for i, s in ids.items()]
        geojson = json.dumps({"type": "FeatureCollection", "features": feats})
        # -- the GeoTIFF miniset
        mini = hub / "M3LEO-miniset" / aoi
        mini.mkdir(parents=True, exist_ok=True)
        (mini / f"{prefix}_miniset.geojson").write_text(geojson)
        table.to_csv(mini / f"{prefix}{suffix}_miniset.csv", index=False)
        (mini / "README.md").write_text(f"# M3LEO miniset: {aoi}\n")
        (mini / ".gitattributes").write_text(GITATTRIBUTES)
        for product in miniset_products(aoi):
            folder = mini / prefix / product
            folder.mkdir(parents=True, exist_ok=True)
            from_product = SOURCE.get(product, "ghsbuilts-2020")  # gunw_*
            for i, s in ids.items():
                shutil.copyfile(src.chip_path(from_product, s), folder / f"{i}.tif")
        # -- the parquet archive
        full = hub / "M3LEO" / aoi
        full.mkdir(parents=True, exist_ok=True)
        order = sorted(ids)
        pid = {i: shard_id(aoi, k // chips_per_shard) for k, i in enumerate(order)}
        for product in miniset_products(aoi):
            ds = archive_dataset(product)
            folder = full / aoi / prefix / ds
            folder.mkdir(parents=True, exist_ok=True)
            for shard in sorted(set(pid.values())):
                rows = {"path": [], "ds": [], "content": []}
                for i in order:
                    if pid[i] != shard:
                        continue
                    rows["path"].append(f"{aoi}/{prefix}/{product}/{i}.tif")
                    rows["ds"].append(ds)
                    rows["content"].append((mini / prefix / product / f"{i}.tif").read_bytes())
                pq.write_table(pa.table(rows, schema=schema), folder / f"{shard}.zstd.parquet",
                               compression="zstd", row_group_size=2)
        table[["identifier", "split", "original_index"]].to_csv(full / f"{prefix}{suffix}.csv", index=False)
        table.assign(parquet_identifier=[pid[i] for i in table["identifier"]])[
            ["identifier", "split", "parquet_identifier", "original_index"]].to_csv(
            full / f"{prefix}{suffix}_parquet.csv", index=False)
        (full / f"{prefix}.geojson").write_text(geojson)
        (full / "README.md").write_text(f"# M3LEO: {aoi}\n")
        (full / ".gitattributes").write_text(GITATTRIBUTES)
        data.ids[aoi], data.splits[aoi], data.shards[aoi] = ids, splits, pid
    return data


class FakeHub:
    """Serves ``<folder>/<repo_id>/...`` with the methods ``download_aoi`` uses; records every download.

    ``fail``: repository paths whose download raises ``ConnectionError`` (until removed from the set).
    """

    def __init__(self, folder, fail=None):
        self.folder = Path(folder)
        self.calls: list[str] = []
        self.fail = set(fail or ())

    def list_repo_files(self, repo_id, repo_type="dataset", revision=None):
        assert repo_type == "dataset"
        repo = self.folder / repo_id
        if not repo.is_dir():
            raise FileNotFoundError(f"404 {repo_id}")
        return sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file())

    def file_sizes(self, repo_id, repo_type="dataset", revision=None):
        repo = self.folder / repo_id
        return {p.relative_to(repo).as_posix(): p.stat().st_size for p in repo.rglob("*") if p.is_file()}

    def download(self, repo_id, filename, local_dir, revision=None):
        self.calls.append(filename)
        if filename in self.fail:
            raise ConnectionError("connection reset")
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.folder / repo_id / filename, target)
        return str(target)


def listing(folder, repo_id: str, per_folder: int = 2) -> str:
    """A short printable listing of one fake repository (``per_folder`` files of each product folder)."""
    repo = Path(folder) / repo_id
    lines, shown = [], {}
    for p in sorted(repo.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(repo).as_posix()
        parent = p.parent.relative_to(repo).as_posix()
        shown[parent] = shown.get(parent, 0) + 1
        if parent == "." or shown[parent] <= per_folder:
            lines.append(rel)
        elif shown[parent] == per_folder + 1:
            lines.append(f"{parent}/...")
    return "\n".join(lines)
