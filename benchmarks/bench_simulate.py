"""Benchmark: simulated chips per second (``sarssl simulate``) at the profiles' chip sizes.

The chips cover the study's footprint (4.48 km) in every profile: 64 px at 70 m (``cpu``, target
at least 40 chips/s on 2 cores) and 448 px at 10 m (``paper``). Prints, for every run, wall and CPU
seconds, chips/s and the split of the time between building the scene (landscape, speckled seasonal
medians, label products) and writing the GeoTIFFs; the scene's rows run in
:func:`sarssl.data.scene.default_threads` threads (the CPUs this process may use, at most 4). On a
shared machine wall times vary from run to run: ``--repeat`` runs each size several times and the
best run is the one to compare with the target. To hold it to 2 cores on Linux::

    taskset -c 0,1 python benchmarks/bench_simulate.py            # 600 chips @ 64 px / 70 m, 8 @ 448 px / 10 m
    python benchmarks/bench_simulate.py --n64 1024 --n448 16 --repeat 3 --compress none
"""

from __future__ import annotations

import argparse
import tempfile
import time

from sarssl.data.scene import default_threads
from sarssl.data.simulate import simulate_region


def run(n: int, size: int, pixel_size: float, compress, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        tm: dict = {}
        t, c = time.perf_counter(), time.process_time()
        simulate_region(d, n_chips=n, chip_size=size, pixel_size=pixel_size, seed=seed, progress=False,
                        compress=compress, timings=tm)
        total, cpu = time.perf_counter() - t, time.process_time() - c
    return {"chips": n, "size": size, "pixel_size": pixel_size, "total_s": total, "cpu_s": cpu,
            "chips_per_s": n / total, **tm}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n64", type=int, default=600, help="chips of 64x64 px at 70 m (default 600, the cpu region)")
    ap.add_argument("--n448", type=int, default=8, help="chips of 448x448 px at 10 m (default 8; 0 to skip)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each size (default 1)")
    ap.add_argument("--compress", default="none", choices=["deflate", "lzw", "none"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    compress = None if args.compress == "none" else args.compress
    sizes = [(args.n64, 64, 70.0, 40.0), (args.n448, 448, 10.0, 1.0)]
    print(f"simulate_region, {default_threads()} scene threads, compress={args.compress}")
    print(f"{'chip':>13} {'chips':>6} {'wall s':>7} {'cpu s':>7} {'chips/s':>8} {'scene s':>8} {'write s':>8} {'target':>8}")
    for n, size, px, target in sizes:
        if n <= 0:
            continue
        runs = [run(n, size, px, compress, args.seed) for _ in range(max(1, args.repeat))]
        for r in runs:
            print(f"{size:>4}px @{px:>4.0f} m {r['chips']:>6} {r['total_s']:>7.2f} {r['cpu_s']:>7.2f} "
                  f"{r['chips_per_s']:>8.1f} {r['scene_s']:>8.2f} {r['write_s']:>8.2f} {'>= ' + str(int(target)):>8}")
        if len(runs) > 1:
            best = max(r["chips_per_s"] for r in runs)
            print(f"{'':>13} best of {len(runs)}: {best:.1f} chips/s")


if __name__ == "__main__":
    main()
