"""Streaming chips from parquet shards vs reading the unpacked GeoTIFF folder, same chips, same workers.

    python benchmarks/bench_streaming.py                          # 96 chips of 64 px, S1 + WorldCover, 2 workers
    python benchmarks/bench_streaming.py --chips 400 --size 128 --all-products --epochs 2

Both sides decode the same GeoTIFFs into the same canonical sample dicts (normalization=None, values
checked equal on the first batch); the parquet side reads row groups of zstd shards and decodes in memory
(``rasterio.MemoryFile``), the folder side opens one file per chip and product
(``M3LEODataset``, no packed cache). Samples/s over full epochs after one warm-up batch, DataLoader with
``--workers`` workers, batch size ``--batch``. Data: the simulator (``sarssl.data.simulate``), in a temp dir.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader


def _epoch_rate(loader, epochs: int, set_epoch=None) -> tuple[float, int]:
    it = iter(loader)
    next(it)  # warm-up: worker start and first files
    for _ in it:
        pass
    n, t0 = 0, time.perf_counter()
    for e in range(epochs):
        if set_epoch:
            set_epoch(e)
        for batch in loader:
            n += batch["s1"].shape[0]
    return n / (time.perf_counter() - t0), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chips", type=int, default=96)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--row-group", type=int, default=8, help="rows per parquet row group")
    ap.add_argument("--all-products", action="store_true", help="all seven products instead of S1 + WorldCover")
    args = ap.parse_args()

    from sarssl.data.datasets import M3LEODataset
    from sarssl.data.m3leo import ALL_PRODUCTS
    from sarssl.data.parquet import M3LEOParquetStream, pack_parquet
    from sarssl.data.simulate import simulate_region

    products = list(ALL_PRODUCTS) if args.all_products else ["s1grd-2020", "esaworldcover-2020"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        layout = simulate_region(tmp / "root", "bench", n_chips=args.chips, chip_size=args.size, seed=0, progress=False)
        shards = pack_parquet(tmp / "root", "bench", tmp / "shards", products=products, chips_per_shard=64,
                              row_group_size=args.row_group, progress=False)
        shard_mb = sum(p.stat().st_size for p in shards) / 2**20
        tif_mb = sum(p.stat().st_size for pr in products for p in layout.product_dir(pr).glob("*.tif")) / 2**20

        folder = M3LEODataset(layout.root, "bench", split=None, products=products, normalization=None, progress=False)
        stream = M3LEOParquetStream(tmp / "shards", products=products, shuffle=True, shuffle_buffer=32, seed=0)
        assert stream.n_chips == len(folder), (stream.n_chips, len(folder))
        first = next(iter(stream))
        ref = folder[[i for i, (_, ident) in enumerate(folder.items) if ident == first["id"]][0]]
        assert all(torch.equal(first[k], ref[k]) for k in ref if isinstance(ref[k], torch.Tensor)), "values differ"

        kw = dict(batch_size=args.batch, num_workers=args.workers)  # no persistent workers: set_epoch must reach them
        folder_rate, n_f = _epoch_rate(DataLoader(folder, shuffle=True, **kw), args.epochs)
        stream_rate, n_s = _epoch_rate(DataLoader(stream, **kw), args.epochs, stream.set_epoch)

    print(f"{args.chips} chips of {args.size}x{args.size} px, products {products}, {args.workers} workers, "
          f"batch {args.batch}, {args.epochs} epoch(s) timed")
    print(f"{'source':<28}{'samples/s':>12}{'samples':>10}{'on disk (MiB)':>16}")
    print(f"{'GeoTIFF folder (M3LEODataset)':<28}{folder_rate:>12.1f}{n_f:>10d}{tif_mb:>16.2f}")
    print(f"{'parquet shards (stream)':<28}{stream_rate:>12.1f}{n_s:>10d}{shard_mb:>16.2f}")
    print(f"stream / folder: {stream_rate / folder_rate:.2f}x")


if __name__ == "__main__":
    main()
