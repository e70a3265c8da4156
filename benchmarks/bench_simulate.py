"""Benchmark: simulated chips per second (``sarssl simulate``) at 64x64 and 448x448 pixels.

Prints, side by side, chips/s and the split of the time between building the scene (landscape,
speckled seasonal medians, label products) and writing the GeoTIFFs. Single process.

    python benchmarks/bench_simulate.py                 # 256 chips @ 64 px, 16 chips @ 448 px
    python benchmarks/bench_simulate.py --n64 1024 --n448 64 --compress none
"""

from __future__ import annotations

import argparse
import tempfile
import time

from sarssl.data.simulate import simulate_region


def run(n: int, size: int, compress, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        tm: dict = {}
        t = time.perf_counter()
        simulate_region(d, n_chips=n, chip_size=size, seed=seed, progress=False, compress=compress, timings=tm)
        total = time.perf_counter() - t
    return {"chips": n, "size": size, "total_s": total, "chips_per_s": n / total, **tm}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n64", type=int, default=256, help="chips of 64x64 px (default 256)")
    ap.add_argument("--n448", type=int, default=16, help="chips of 448x448 px (default 16)")
    ap.add_argument("--compress", default="none", choices=["deflate", "lzw", "none"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    compress = None if args.compress == "none" else args.compress
    rows = [run(args.n64, 64, compress, args.seed), run(args.n448, 448, compress, args.seed)]
    print(f"simulate_region, 1 process, compress={args.compress}")
    print(f"{'chip':>9} {'chips':>6} {'total s':>8} {'chips/s':>8} {'scene s':>8} {'write s':>8} {'target':>8}")
    for r, target in zip(rows, (50, 1)):
        print(f"{r['size']:>4}x{r['size']:<4} {r['chips']:>6} {r['total_s']:>8.2f} {r['chips_per_s']:>8.1f} "
              f"{r['scene_s']:>8.2f} {r['write_s']:>8.2f} {'>= ' + str(target):>8}")


if __name__ == "__main__":
    main()
