"""Check that DDP training matches one process with the same global batch (and resumes after a kill).

Run under ``torchrun`` (or alone, for the reference)::

    torchrun --standalone --nproc_per_node 2 -m sarssl.train.ddp_check --out RUN --method mae dino center
    python -m sarssl.train.ddp_check --out REF --method mae dino center

Each method trains (or computes) into ``OUT/<method>/`` with the engine; rank 0 appends the loss of
every optimiser step, averaged over all ranks, to ``losses.jsonl`` and writes ``result.json``; each
rank writes ``shards/rank<r>.json`` (the samples it saw at step 0). :func:`compare_runs` then
compares two such folders (per-step losses, final weights, DINO centre).

- ``mae``: MAE on tiny synthetic chips (ViT-tiny, patch 8, 32 px) or, with ``--data``, on an M3LEO
  root through the real builder (:func:`sarssl.train.pretrain.build_mae`). Masks come from
  per-sample noise (:class:`sarssl.models.mae.MaskNoiseDataset`), so they do not depend on the rank.
- ``dino``: DINO (no drop-path) on multi-crop views seeded per sample; the centre is all-reduced.
- ``center``: one :meth:`DINOLoss.update_center` on a fixed global batch split across the ranks.

``--crash-after K`` makes the last rank of the ``--crash-method`` run exit abruptly at optimiser
step ``K`` (torchrun then stops the whole group); running the same command again without it resumes
from the step-``K`` checkpoint and finishes. :func:`launch` runs torchrun in a subprocess.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist

METHODS = ("mae", "dino", "center")


# --------------------------------------------------------------------------------------------
# data and tasks
# --------------------------------------------------------------------------------------------
class SyntheticChips(torch.utils.data.Dataset):
    """``n`` canonical samples: ``s1`` (12, size, size) smooth random fields, all valid, ``index``."""

    def __init__(self, n: int = 32, size: int = 32, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        coarse = torch.randn(n, 12, size // 8, size // 8, generator=g)
        fine = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
        self.s1 = (fine + 0.3 * torch.randn(n, 12, size, size, generator=g)).float()

    def __len__(self) -> int:
        return len(self.s1)

    def __getitem__(self, i: int) -> dict:
        return {"s1": self.s1[i], "s1_valid": torch.ones_like(self.s1[i], dtype=torch.bool), "index": i}


def _train_config(out_dir: Path, world: int, global_batch: int, epochs: int, seed: int, **kw):
    from sarssl.train.engine import TrainConfig

    if global_batch % world:
        raise ValueError(f"global batch {global_batch} is not divisible by the {world} processes")
    values = dict(epochs=epochs, batch_size=global_batch // world, precision="fp32", device="cpu", seed=seed,
                  out_dir=str(out_dir), checkpoint_every=1, log_every=1, progress=False, tensorboard=False,
                  num_workers=0)
    values.update(kw)
    return TrainConfig(**values)


def build_mae_check(out_dir: Path, world: int, global_batch: int = 8, epochs: int = 2, seed: int = 0,
                    n_samples: int = 16, data_root: str | Path | None = None, profile: str = "smoke"):
    """(task, dataset, TrainConfig) for the MAE check: synthetic chips, or ``data_root`` via ``build_mae``."""
    from sarssl.models.mae import MAE, MAEPretrainTask, MaskNoiseDataset
    from sarssl.models.vit import EncoderSpec
    from sarssl.train.checkpoint import seed_everything

    if data_root is not None:
        from sarssl.data.layout import list_aois
        from sarssl.profiles import train_config
        from sarssl.train.pretrain import PRETRAIN_METHODS, PretrainContext

        root = Path(data_root)
        overrides = dict(batch_size=global_batch // world, epochs=epochs, device="cpu", precision="fp32",
                         num_workers=0, checkpoint_every=1, log_every=1, tensorboard=False)
        ctx = PretrainContext(train_config("mae", profile, overrides), root, list_aois(root), out_dir, seed,
                              progress=False)
        setup = PRETRAIN_METHODS["mae"](ctx)
        return setup.task, setup.data, setup.config
    spec = EncoderSpec("vit_tiny_patch16_224", patch_size=8, img_size=32)
    seed_everything(seed)
    task = MAEPretrainTask(MAE(spec.create(), decoder_dim=64, decoder_depth=1, decoder_heads=4, norm_pix_loss=True), spec)
    data = MaskNoiseDataset(SyntheticChips(n_samples, 32, seed), task.mae.num_patches, seed=seed)
    return task, data, _train_config(out_dir, world, global_batch, epochs, seed, base_lr=1.5e-3, warmup_epochs=0.5)


def build_dino_check(out_dir: Path, world: int, global_batch: int = 8, epochs: int = 2, seed: int = 0,
                     n_samples: int = 16):
    """(task, dataset, TrainConfig) for the DINO check: ViT-tiny/8 at 32 px, 2 global + 2 local crops, no drop-path."""
    from sarssl.data.multicrop import MultiCrop, MultiCropConfig, MultiCropDataset
    from sarssl.models.dino import build_dino
    from sarssl.train.checkpoint import seed_everything

    seed_everything(seed)
    task = build_dino("vit_tiny", patch_size=8, img_size=32, drop_path_rate=0.0, out_dim=64, hidden_dim=64,
                      bottleneck_dim=32, warmup_teacher_temp_epochs=1.0, momentum_teacher=0.9,
                      freeze_last_layer_epochs=1.0)
    mc = MultiCrop(MultiCropConfig(n_global=2, n_local=2, global_size=32, local_size=16), std_db=torch.full((12,), 3.0))
    data = MultiCropDataset(SyntheticChips(n_samples, 32, seed), mc, seed=seed, keep=("index",))
    task.attach_data(data)
    cfg = _train_config(out_dir, world, global_batch, epochs, seed, lr=2e-3, min_lr=1e-6, warmup_epochs=0.5,
                        weight_decay=0.04, weight_decay_end=0.4, betas=(0.9, 0.999), clip_grad=3.0,
                        clip_mode="per_param")
    return task, data, cfg


# --------------------------------------------------------------------------------------------
# running one check in this process (one rank of a torchrun group, or alone)
# --------------------------------------------------------------------------------------------
def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _sample_ids(batch) -> list:
    ids = batch.get("index", batch.get("id")) if isinstance(batch, dict) else None
    return ids.tolist() if torch.is_tensor(ids) else list(ids) if ids is not None else []


def _instrument(task, out_dir: Path, crash_after: int | None) -> None:
    """Wrap ``task.training_step``: optional crash, global mean loss to ``losses.jsonl`` (rank 0), shard log."""
    rank, world = _rank_world()
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))  # > 0 after a torchrun restart
    inner = task.training_step
    (out_dir / "shards").mkdir(parents=True, exist_ok=True)

    def training_step(batch, info):
        if crash_after is not None and info.step == crash_after and rank == world - 1:
            print(f"rank {rank}: simulated crash at step {info.step}", flush=True)
            os._exit(17)
        if info.step == 0 or not (out_dir / "shards" / f"rank{rank}.json").exists():
            (out_dir / "shards" / f"rank{rank}.json").write_text(json.dumps(
                {"rank": rank, "world_size": world, "step": info.step, "samples": _sample_ids(batch)}))
        out = inner(batch, info)
        loss = out["loss"].detach().float().clone()
        if world > 1:
            dist.all_reduce(loss)
            loss /= world
        if rank == 0:
            with open(out_dir / "losses.jsonl", "a") as fh:
                fh.write(json.dumps({"step": int(info.step), "loss": float(loss), "attempt": attempt}) + "\n")
        return out

    task.training_step = training_step


def read_losses(run_dir: str | Path) -> dict[int, float]:
    """``{step: loss}`` from ``losses.jsonl`` (the last record of a step wins, e.g. after a restart)."""
    out: dict[int, float] = {}
    path = Path(run_dir) / "losses.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            out[int(rec["step"])] = float(rec["loss"])
    return dict(sorted(out.items()))


def center_check(out_dir: Path, global_batch: int = 8, out_dim: int = 64, seed: int = 0) -> torch.Tensor:
    """One ``DINOLoss.update_center`` on a fixed global teacher batch (2 views x ``global_batch``), split by rank.

    Each rank passes its share of each view (crop-major, as the engine's batches are); returns the centre (1, K).
    """
    from sarssl.models.dino import DINOLoss

    rank, world = _rank_world()
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(2, global_batch, out_dim, generator=g) * 3 + torch.linspace(-2, 2, out_dim)
    mine = teacher[:, rank::world].reshape(-1, out_dim)  # (2 * B/world, K), views stacked
    loss = DINOLoss(out_dim)
    loss.center.copy_(torch.randn(1, out_dim, generator=g))
    loss.update_center(mine)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        torch.save(loss.center.clone(), out_dir / "center.pt")
    return loss.center.clone()


def run_check(method: str, out_dir: str | Path, global_batch: int = 8, epochs: int = 2, seed: int = 0,
              crash_after: int | None = None, data_root: str | Path | None = None, profile: str = "smoke") -> Path:
    """Run ``method`` (``mae``, ``dino``, ``center``) into ``out_dir/<method>`` on this process (or torchrun group)."""
    from sarssl.train.engine import Trainer

    if method not in METHODS:
        raise ValueError(f"unknown check {method!r}: expected one of {METHODS}")
    run = Path(out_dir) / method
    rank, world = _rank_world()
    if method == "center":
        center_check(run, global_batch, seed=seed)
        return run
    if method == "mae":
        task, data, cfg = build_mae_check(run, world, global_batch, epochs, seed, data_root=data_root, profile=profile)
    else:
        if data_root is not None:
            raise ValueError("the DINO check runs on synthetic chips only (the real builder uses drop-path, "
                             "whose randomness differs per rank); drop --data")
        task, data, cfg = build_dino_check(run, world, global_batch, epochs, seed)
    run.mkdir(parents=True, exist_ok=True)
    _instrument(task, run, crash_after)
    trainer = Trainer(task, data, cfg)
    trainer.fit()
    if rank == 0:
        files = sorted(p.name for p in run.iterdir() if p.is_file())
        (run / "result.json").write_text(json.dumps(
            {"method": method, "world_size": world, "global_batch": global_batch, "per_rank_batch": cfg.batch_size,
             "steps": trainer.total_steps, "losses": read_losses(run), "files": files}, indent=1))
    if world > 1:
        dist.barrier()
    return run


def compare_runs(reference: str | Path, other: str | Path, method: str) -> dict:
    """Differences between two check folders (``OUT/<method>``): per-step losses and final state.

    Returns ``steps`` (compared), ``max_loss_diff`` (absolute), ``max_param_diff`` (largest absolute
    difference over every tensor of the final ``checkpoint.pt`` task state) and for ``center`` /
    ``dino`` ``max_center_diff``.
    """
    ref, oth = Path(reference) / method, Path(other) / method
    if method == "center":
        a, b = (torch.load(d / "center.pt", map_location="cpu", weights_only=True) for d in (ref, oth))
        return {"max_center_diff": float((a - b).abs().max())}
    la, lb = read_losses(ref), read_losses(oth)
    if sorted(la) != sorted(lb) or not la:
        raise ValueError(f"{ref} and {oth} logged different steps: {sorted(la)} vs {sorted(lb)}")
    from sarssl.train.checkpoint import load_checkpoint

    sa, sb = load_checkpoint(ref / "checkpoint.pt"), load_checkpoint(oth / "checkpoint.pt")
    if sa["step"] != sb["step"]:
        raise ValueError(f"checkpoints at different steps: {sa['step']} vs {sb['step']}")
    diffs = {k: float((v.float() - sb["task"][k].float()).abs().max()) for k, v in sa["task"].items()
             if torch.is_tensor(v) and v.is_floating_point() and v.numel()}
    out = {"steps": len(la), "final_step": int(sa["step"]),
           "max_loss_diff": max(abs(la[s] - lb[s]) for s in la),
           "max_param_diff": max(diffs.values()),
           "losses_reference": [la[s] for s in la], "losses_other": [lb[s] for s in lb]}
    if method == "dino":
        out["max_center_diff"] = diffs["loss_fn.center"]
    return out


# --------------------------------------------------------------------------------------------
# launching
# --------------------------------------------------------------------------------------------
def torchrun_command(args: list[str], nproc: int = 2, max_restarts: int = 0, module: str = "sarssl.train.ddp_check"
                     ) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc_per_node N [--max-restarts R] -m MODULE ARGS``."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            f"--max-restarts={max_restarts}", "-m", module, *args]


def launch(args: list[str], nproc: int = 2, max_restarts: int = 0, module: str = "sarssl.train.ddp_check",
           timeout: float = 600, threads: int = 1, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``module`` under torchrun on CPU (gloo) in a subprocess; returns the completed process (text output).

    ``threads``: OMP threads per process. With ``check``, a failed launch raises ``RuntimeError`` with
    the output's tail.
    """
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), CUDA_VISIBLE_DEVICES="")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.run(torchrun_command(args, nproc, max_restarts, module), env=env, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"torchrun {' '.join(args)} failed with status {proc.returncode}:\n"
                           f"{(proc.stdout + proc.stderr)[-3000:]}")
    return proc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sarssl.train.ddp_check", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder (one subfolder per method)")
    parser.add_argument("--method", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--global-batch", type=int, default=8, help="samples per optimiser step over all ranks")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--crash-after", type=int, help="last rank exits at this optimiser step (simulated kill)")
    parser.add_argument("--crash-method", default="mae", choices=METHODS, help="which run --crash-after applies to")
    parser.add_argument("--data", type=Path, help="M3LEO root: MAE through the real builder instead of synthetic chips")
    parser.add_argument("--profile", default="smoke", help="profile for --data (model and data sizes)")
    args = parser.parse_args(argv)
    torch.use_deterministic_algorithms(True, warn_only=True)
    world = int(os.environ.get("WORLD_SIZE", 1))
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
        owns = True
    try:
        for method in args.method:
            crash = args.crash_after if method == args.crash_method else None
            run = run_check(method, args.out, args.global_batch, args.epochs, args.seed, crash, args.data, args.profile)
            rank, world = _rank_world()
            shard = run / "shards" / f"rank{rank}.json"
            seen = json.loads(shard.read_text())["samples"] if shard.exists() else []
            print(f"[{method}] rank {rank}/{world}: first batch samples {seen}", flush=True)
    finally:
        if owns:
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
