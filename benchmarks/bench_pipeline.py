"""Is the data path the bottleneck? Model-only against end-to-end images/s of MAE and DINO pretraining.

For each method, the profile's own pretraining setup (``sarssl.train.pretrain``: dataset, task,
engine configuration, DataLoader workers, DINO's batched multi-crop on the device) is trained for
``--steps`` optimiser steps from three sources, in rotating rounds so background load hits all alike:

- GeoTIFF: chips read from the simulated region's GeoTIFFs (``data.packed_cache`` off);
- packed: chips read through the packed cache (``data.packed_cache`` on, the default; the cache is
  built before the timing starts);
- model only: the same trainer on the first batches' samples held in memory (no file reads, no
  decoding, no workers), so what is left is the training step itself (and collation).

Throughput is images over the wall clock of the whole fit (epoch starts and the first step included).
A ratio end-to-end / model-only near 1 means the data path keeps up.

    python benchmarks/bench_pipeline.py                    # cpu profile, MAE and DINO, ~3 min on 2 cores
    python benchmarks/bench_pipeline.py --methods mae --steps 20 --rounds 3
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

from torch.utils.data import Dataset


class InMemory(Dataset):
    """The first ``n`` samples of ``ds`` loaded once and served in a loop (``len`` is that of ``ds``)."""

    def __init__(self, ds, n: int):
        self.samples = [ds[i] for i in range(min(n, len(ds)))]
        self.n = len(ds)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        return self.samples[i % len(self.samples)]


def throughput(setup, steps: int, in_memory: bool) -> float:
    """Images/s of ``steps`` optimiser steps of ``setup`` (a ``PretrainSetup``) by the wall clock of the whole
    fit, epoch starts included (the median of the logged rows hides them: with DataLoader workers the rows
    inside an epoch look fast while each epoch start waits for the workers' first batches)."""
    from sarssl.train.engine import Trainer

    config = dataclasses.replace(setup.config, max_steps=steps, out_dir=None, tensorboard=False, progress=False,
                                 log_every=max(1, steps // 5), checkpoint_every=0,
                                 num_workers=0 if in_memory else setup.config.num_workers)
    data = InMemory(setup.data, 4 * config.batch_size) if in_memory else setup.data
    trainer = Trainer(setup.task, data, config, collate_fn=setup.collate_fn, batch_transform=setup.batch_transform)
    t0 = time.perf_counter()
    trainer.fit()
    return steps * config.batch_size / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--methods", nargs="+", default=["mae", "dino"])
    ap.add_argument("--steps", type=int, default=15, help="optimiser steps per measurement")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    from sarssl import workspace
    from sarssl.profiles import get_profile, train_config
    from sarssl.train.pretrain import PRETRAIN_METHODS, PretrainContext

    profile = get_profile(args.profile)
    data = workspace.resolve_data("sim", profile, progress=False)
    print(f"profile {profile.name}: {profile.model.encoder} patch {profile.model.patch_size} at "
          f"{profile.model.img_size} px, data {data.root} {list(data.aois)}")
    sources = ("geotiff", "packed", "model")
    print(f"{'method':8s} {'workers':>7s} " + " ".join(f"{s + ' [img/s]':>16s}" for s in sources)
          + f" {'geotiff/model':>13s} {'packed/model':>12s}")
    for method in args.methods:
        rates = {s: [] for s in sources}
        for r in range(args.rounds):
            for source in sources[r % 3:] + sources[:r % 3]:
                cfg = train_config(method, profile, {"packed_cache": source != "geotiff"})
                with tempfile.TemporaryDirectory() as tmp:
                    ctx = PretrainContext(cfg, Path(data.root), list(data.aois), Path(tmp), 0, False)
                    rates[source].append(throughput(PRETRAIN_METHODS[method](ctx), args.steps, source == "model"))
        best = {s: max(v) for s, v in rates.items()}
        print(f"{method:8s} {cfg.data.num_workers:7d} " + " ".join(f"{best[s]:16.1f}" for s in sources)
              + f" {best['geotiff'] / best['model']:13.2f} {best['packed'] / best['model']:12.2f}")

if __name__ == "__main__":
    main()
