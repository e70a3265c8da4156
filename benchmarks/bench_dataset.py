"""Dataset feed rate: GeoTIFF reading vs the packed cache, next to the raw rasterio read limit.

On a simulated region (``sarssl.data.simulate``), for each chip size it prints samples/s of

- ``raw rasterio``: open every product file of a chip and read all its bands, no decoding (the limit
  of GeoTIFF reading);
- ``dataset (GeoTIFF)``: ``M3LEODataset`` with 12 channels + all six labels, decoded and normalised;
- ``dataset (packed)``: the same dataset reading the packed memmap cache (``cache_dir=``);
- ``compact``: the packed dataset with ``decode="batch"``: workers send the compact uint8 records,
  whose decoding ``decode_batch`` leaves to the device the batch is sent to (a GPU: not counted);
- ``compact + CPU decode``: the same with ``decode_batch`` run in the main process on the CPU
  (one thread), counted;

all through a ``DataLoader`` with ``--workers`` workers (default 2), after one warm-up pass (files
in the OS page cache). Default run: 256 chips at 64 px, batch 32 (< 1 min); ``--big`` adds 64
chips at 448 px (the study's chip size), batch 8, so that both workers get batches.

    python benchmarks/bench_dataset.py [--big] [--workers 2] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from sarssl.data.datasets import M3LEODataset
from sarssl.data.layout import AOILayout
from sarssl.data.m3leo import GDAL_READ_OPTIONS, default_products, read_splits
from sarssl.data.simulate import simulate_region
from sarssl.data.transforms import Normalization
from sarssl.data.products import INPUT_CHANNELS

PRODUCTS = default_products(2020)


class RawRead(Dataset):
    """Every product file of a chip opened once and read whole with rasterio; no decoding."""

    def __init__(self, layout: AOILayout, ids):
        self.layout, self.ids = layout, list(ids)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        import rasterio

        n = 0
        with rasterio.Env(**GDAL_READ_OPTIONS):
            for p in PRODUCTS:
                with rasterio.open(self.layout.chip_path(p, self.ids[i])) as src:
                    n += src.read().nbytes
        return n


def _rate(ds, workers: int, batch: int = 32, passes: int = 1, transform=lambda b: b) -> float:
    dl = DataLoader(ds, batch_size=batch, num_workers=workers, persistent_workers=workers > 0,
                    collate_fn=None if not isinstance(ds, RawRead) else (lambda b: sum(b)))
    for _ in dl:  # warm-up: worker start, page cache
        pass
    t = time.perf_counter()
    n = 0
    for _ in range(passes):
        for b in dl:
            b = transform(b)
            n += len(b["id"]) if isinstance(b, dict) else batch
    dt = time.perf_counter() - t
    return min(n, passes * len(ds)) / dt


def run_size(root: Path, aoi: str, n_chips: int, size: int, workers: int, cache_dir: Path) -> dict:
    t = time.perf_counter()
    layout = root / aoi
    if not layout.is_dir():
        simulate_region(root, aoi=aoi, n_chips=n_chips, chip_size=size, seed=0, progress=False)
    sim_s = time.perf_counter() - t
    layout = AOILayout.find(root, aoi)
    ids = list(read_splits(layout)["identifier"])
    norm = Normalization(INPUT_CHANNELS, np.full(12, -12.0), np.full(12, 5.0))
    kw = dict(split=None, products=PRODUCTS, normalization=norm, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        tif = M3LEODataset(root, aoi, **kw)
        val_s = time.perf_counter() - t
        t = time.perf_counter()
        packed = M3LEODataset(root, aoi, cache_dir=cache_dir, **kw)
        build_s = time.perf_counter() - t
        compact = M3LEODataset(root, aoi, cache_dir=cache_dir, decode="batch", **kw)
    passes, batch = (3, 32) if size <= 128 else (2, 8)
    res = {
        "size": size, "chips": len(ids), "simulate_s": sim_s, "validate_s": val_s, "cache_build_s": build_s,
        "batch": batch,
        "raw": _rate(RawRead(layout, ids), workers, batch),
        "tif": _rate(tif, workers, batch),
        "packed": _rate(packed, workers, batch, passes),
        "packed_w0": _rate(packed, 0, batch, passes),
        "compact": _rate(compact, workers, batch, passes),
        "compact_cpu": _rate(compact, workers, batch, passes, transform=compact.decode_batch),
    }
    mb = sum(f.stat().st_size for f in packed.caches[aoi].folder.glob("*.npy")) / 1e6
    res["cache_mb"] = mb
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--big", action="store_true", help="also 64 chips at 448 px")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--n-chips", type=int, default=256)
    ap.add_argument("--data-dir", type=Path, default=None, help="reuse/keep the simulated regions here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    tmp = tempfile.TemporaryDirectory() if args.data_dir is None else None
    root = Path(tmp.name) if tmp else args.data_dir
    sizes = [(f"bench-{args.n_chips}x64", args.n_chips, 64)] + ([("bench-64x448", 64, 448)] if args.big else [])
    rows = [run_size(root, aoi, n, s, args.workers, root / "cache") for aoi, n, s in sizes]
    print(f"\nM3LEODataset feed rate in samples/s, 7 products (12 channels + 6 labels), {args.workers} DataLoader "
          f"workers, {torch.get_num_threads()} torch thread(s)/process")
    cols = [("raw", "raw rasterio"), ("tif", "GeoTIFF"), ("packed", "packed"), ("packed_w0", "packed 0 wk"),
            ("compact", "compact"), ("compact_cpu", "compact+CPU dec")]
    hdr = (f"{'chip':>6} {'chips':>6} {'batch':>6} | " + " ".join(f"{c:>15}" for _, c in cols)
           + f" | {'packed/GeoTIFF':>14} {'compact/GeoTIFF':>15} | {'cache build s':>13} {'cache MB':>8}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(f"{r['size']:>4}px {r['chips']:>6} {r['batch']:>6} | " + " ".join(f"{r[k]:>15.0f}" for k, _ in cols)
              + f" | {r['packed'] / r['tif']:>13.1f}x {r['compact'] / r['tif']:>14.1f}x | "
              f"{r['cache_build_s']:>13.2f} {r['cache_mb']:>8.1f}")
    print("raw rasterio: all product files opened and read, no decoding (the GeoTIFF limit); compact: decoding\n"
          "left to the training device (decode_batch on the GPU); compact+CPU dec: decoded in the main process.")
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
