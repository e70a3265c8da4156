"""One-shot GPU check: throughput, model-FLOPs utilisation, the fp16 path and the gpu profile, in <= 8 minutes.

On one CUDA GPU this prints, in order:

1. MAE training images/s and model-FLOPs utilisation (MFU) in bf16 autocast for ViT-S/16 at 224 px and
   ViT-B/16 at 448 px, 12 channels (the models and timing loop of ``benchmarks/bench_mae.py``; training
   FLOPs per image from ``FlopCounterMode`` via ``sarssl.models.vit.count_train_flops``);
2. DINO training images/s and MFU in bf16 for the same two encoders (two global crops at 224 / 448 px and
   eight 96-px local crops; the sarssl side of ``benchmarks/bench_dino.py``);
3. the fp16 + ``GradScaler`` path: MAE ViT-S/16 steps in fp16 autocast with a gradient scaler, and the
   engine's own fp16 path (``precision="fp16"``) for a few steps;
4. the ``gpu`` profile's MAE (chapter 3) and DINO (chapter 4) pretraining through
   ``sarssl.train.pretrain.run_pretrain`` for a fixed number of steps on a small simulated region;

with the peak GPU memory of every part, and a summary table at the end (``--json`` writes it too). A part
that would start after the time budget is skipped and says so.

    python benchmarks/gpu_check.py                       # one GPU, <= 8 min
    python benchmarks/gpu_check.py --peak-tflops 989     # set the bf16 dense peak (default: from the GPU name)
    python benchmarks/gpu_check.py --dry-run             # CPU, tiny sizes, the same code path in seconds

Without a CUDA device it exits with status 2 and a one-line message (``--dry-run`` runs on CPU).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: dense bf16 peak TFLOP/s by GPU name fragment (first match wins); fp16 tensor peak where bf16 is absent
PEAK_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("GH200", 989.0), ("A100", 312.0),
               ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0), ("A10G", 125.0), ("A10", 125.0),
               ("RTX 4090", 165.0), ("RTX 3090", 71.0), ("V100", 125.0), ("T4", 65.0))

FULL = dict(
    mae=(("ViT-S/16 224px", "vit_small", 16, 224, 256), ("ViT-B/16 448px", "vit_base", 16, 448, 64)),
    # label, timm name, patch, global crop px, local crop px, local crops, batch, out_dim
    dino=(("ViT-S/16 224px", "vit_small_patch16_224", 16, 224, 96, 8, 64, 65536),
          ("ViT-B/16 448px", "vit_base_patch16_224", 16, 448, 96, 8, 32, 65536)),
    mae_decoder=(512, 8, 16), warmup=3, steps=10, fp16_steps=10,
    region=dict(n_chips=256, chip_size=128), profile="gpu", profile_steps=12, engine_fp16_steps=6,
)
TINY = dict(
    mae=(("ViT-tiny/8 32px", "vit_tiny", 8, 32, 4),),
    dino=(("ViT-tiny/8 32px", "vit_tiny_patch16_224", 8, 32, 16, 2, 4, 256),),
    mae_decoder=(64, 1, 4), warmup=1, steps=2, fp16_steps=2,
    region=dict(n_chips=16, chip_size=32), profile="smoke", profile_steps=2, engine_fp16_steps=2,
)


def peak_for(name: str) -> float | None:
    for frag, tf in PEAK_TFLOPS:
        if frag.lower() in name.lower():
            return tf
    return None


class Check:
    """Runs the parts, records results and peak memory, and keeps to the time budget."""

    def __init__(self, args, device: torch.device):
        self.args, self.device = args, device
        self.cuda = device.type == "cuda"
        self.t0 = time.perf_counter()
        self.rows: list[dict] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def reset_memory(self) -> None:
        import gc

        gc.collect()  # a failed part (e.g. out of memory) leaves no tensors behind
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float | None:
        return torch.cuda.max_memory_allocated() / 2**30 if self.cuda else None

    def part(self, name: str, fn, *a) -> None:
        """Run one part unless the budget is spent; a failing part is reported and the check goes on."""
        if self.elapsed() > self.args.budget_s:
            print(f"[{self.elapsed():6.0f}s] {name}: skipped (time budget of {self.args.budget_s:.0f} s spent)",
                  flush=True)
            self.rows.append({"part": name, "status": "skipped"})
            return
        self.reset_memory()
        t = time.perf_counter()
        try:
            row = fn(*a) or {}
            row.setdefault("status", "ok")
        except Exception as e:  # noqa: BLE001 - report and continue with the other parts
            row = {"status": f"failed: {type(e).__name__}: {e}"}
            if self.args.debug:
                raise
        row.update(part=name, seconds=round(time.perf_counter() - t, 1), peak_gib=self.peak_gib())
        self.rows.append(row)
        mem = f", peak {row['peak_gib']:.2f} GiB" if row["peak_gib"] is not None else ""
        print(f"[{self.elapsed():6.0f}s] {name}: {self._describe(row)} ({row['seconds']:.1f} s{mem})", flush=True)
        self.reset_memory()

    @staticmethod
    def _describe(row: dict) -> str:
        if row["status"] != "ok":
            return row["status"]
        bits = []
        if "images_per_s" in row:
            bits.append(f"{row['images_per_s']:.1f} images/s")
        if row.get("mfu") is not None:
            bits.append(f"{row['tflops']:.1f} TFLOP/s, MFU {100 * row['mfu']:.1f} %")
        if "gflop_per_image" in row:
            bits.append(f"{row['gflop_per_image']:.1f} GFLOP/image")
        for k in ("loss", "scale", "skipped_steps", "steps", "note"):
            if k in row:
                bits.append(f"{k} {row[k]}")
        return ", ".join(bits)

    @property
    def half(self) -> torch.dtype | None:
        """bf16 autocast on the GPU; fp32 on CPU (bf16 matmuls are emulated there: the dry run would crawl)."""
        return torch.bfloat16 if self.cuda else None

    def mfu(self, flops_per_image: float, ips: float) -> tuple[float, float | None]:
        achieved = flops_per_image * ips / 1e12
        return achieved, (achieved / self.args.peak_tflops if self.args.peak_tflops else None)


# --------------------------------------------------------------------------------------------
# parts
# --------------------------------------------------------------------------------------------
def mae_throughput(chk: Check, cfg: dict, label, name, patch, img, batch) -> dict:
    from bench_mae import MAE, _Step, count_train_flops, create_encoder, time_steps

    dtype = chk.half
    torch.manual_seed(0)
    dim, depth, heads = cfg["mae_decoder"]
    model = MAE(create_encoder(name, patch, img), dim, depth, heads, mask_ratio=0.75).to(chk.device)
    x = torch.randn(batch, 12, img, img, device=chk.device)
    fn = _Step(lambda t, m=model: m(t).loss)
    params = [p for p in model.parameters() if p.requires_grad]
    n_flop = min(batch, 8)
    with torch.autocast(chk.device.type, dtype=dtype, enabled=dtype is not None):
        flops = count_train_flops(lambda m=model, t=x[:n_flop]: m(t).loss) / n_flop
    model.zero_grad(set_to_none=True)
    time_steps(fn, params, x, cfg["warmup"], dtype)
    sec = time_steps(fn, params, x, cfg["steps"], dtype)
    ips = batch / sec
    tflops, mfu = chk.mfu(flops, ips)
    return {"model": label, "batch": batch, "images_per_s": ips, "gflop_per_image": flops / 1e9, "tflops": tflops,
            "mfu": mfu}


def dino_throughput(chk: Check, cfg: dict, label, name, patch, global_px, local_px, n_local, batch, out_dim) -> dict:
    from bench_dino import Info, Sarssl, make_crops, train_step_flops

    a = types.SimpleNamespace(model=name, patch=patch, global_size=global_px, local_size=local_px, n_local=n_local,
                              batch=batch, out_dim=out_dim)
    torch.manual_seed(0)
    side = Sarssl(a, chk.device)
    crops = make_crops(a, chk.device)
    bf16 = chk.half is not None  # Info.bf16: autocast bf16 on the GPU
    total = cfg["warmup"] + cfg["steps"]
    for i in range(cfg["warmup"]):
        float(side.step(crops, Info(i, total, chk.device, bf16)).detach())
    chk.sync()
    t = time.perf_counter()
    for i in range(cfg["warmup"], total):
        loss = side.step(crops, Info(i, total, chk.device, bf16))
    float(loss.detach())
    chk.sync()
    sec = (time.perf_counter() - t) / cfg["steps"]
    flops = train_step_flops(side, crops, Info(total, total + 1, chk.device, bf16)) / batch
    ips = batch / sec
    tflops, mfu = chk.mfu(flops, ips)
    return {"model": label, "crops": f"2x{global_px}+{n_local}x{local_px}", "batch": batch, "images_per_s": ips,
            "gflop_per_image": flops / 1e9, "tflops": tflops, "mfu": mfu}


def fp16_scaler(chk: Check, cfg: dict) -> dict:
    """MAE steps in fp16 autocast with a GradScaler (scale, unscale, step, update), as the engine does.

    On CPU (dry run) the same steps run in fp32 with the scaler (fp16 autocast is emulated there)."""
    from bench_mae import MAE, create_encoder

    label, name, patch, img, batch = cfg["mae"][0]
    torch.manual_seed(0)
    dim, depth, heads = cfg["mae_decoder"]
    model = MAE(create_encoder(name, patch, img), dim, depth, heads, mask_ratio=0.75).to(chk.device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, betas=(0.9, 0.95))
    scaler = torch.amp.GradScaler(chk.device.type)
    half = torch.float16 if chk.cuda else None
    x = torch.randn(batch, 12, img, img, device=chk.device)
    skipped, losses = 0, []
    steps = cfg["fp16_steps"]
    chk.sync()
    t = time.perf_counter()
    for _ in range(steps):
        with torch.autocast(chk.device.type, dtype=half, enabled=half is not None):
            loss = model(x).loss
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        before = scaler.get_scale()
        scaler.step(opt)
        scaler.update()
        skipped += int(scaler.get_scale() < before)
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    chk.sync()
    sec = (time.perf_counter() - t) / steps
    if not all(math.isfinite(v) for v in losses):
        raise FloatingPointError(f"fp16 MAE loss not finite: {losses}")
    return {"model": label, "batch": batch, "images_per_s": batch / sec, "loss": round(losses[-1], 4),
            "scale": scaler.get_scale(), "skipped_steps": skipped}


def simulate(chk: Check, cfg: dict, root: Path) -> dict:
    from sarssl.data.simulate import simulate_region

    r = cfg["region"]
    simulate_region(root, "gpu-check", n_chips=r["n_chips"], chip_size=r["chip_size"], seed=0, progress=False)
    return {"note": f"{r['n_chips']} chips of {r['chip_size']} px"}


def profile_run(chk: Check, cfg: dict, method: str, root: Path, out: Path, overrides: dict) -> dict:
    """``run_pretrain`` of the profile for a fixed number of steps; images/s from the run's metrics.csv."""
    import csv

    from sarssl.train.pretrain import run_pretrain

    ov = {"max_steps": cfg["profile_steps"], **overrides}
    if chk.device.type == "cpu":
        ov.setdefault("batch_size", 4)
    run_pretrain(method, cfg["profile"], root, out, aoi="gpu-check", overrides=ov, progress=False)
    rows = list(csv.DictReader((out / "metrics.csv").open())) if (out / "metrics.csv").is_file() else []
    rows = [r for r in rows if r.get("images_per_s") not in (None, "")]
    row = {"steps": int(float(rows[-1]["step"])) if rows else None, "profile": cfg["profile"]}
    if rows:
        row["images_per_s"] = float(rows[-1]["images_per_s"])
        row["loss"] = round(float(rows[-1]["loss"]), 4)
    return row


# --------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="Run it whenever a GPU is available; put the figures in the closing note.")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --tiny)")
    ap.add_argument("--tiny", action="store_true", help="tiny models, sizes and step counts (for CPU)")
    ap.add_argument("--dry-run", action="store_true", help="same as --device cpu --tiny: the code path in seconds")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="dense bf16 peak of the GPU in TFLOP/s (default: from its name, e.g. H100/H200 989)")
    ap.add_argument("--budget-s", type=float, default=330.0,
                    help="no part starts after this many seconds (default 330, so the check ends within 8 min)")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    ap.add_argument("--skip", nargs="+", default=(), choices=("mae", "dino", "fp16", "profile"), help="parts to skip")
    ap.add_argument("--debug", action="store_true", help="raise on the first failing part")
    args = ap.parse_args(argv)
    if args.dry_run:
        args.device, args.tiny = "cpu", True
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device is available; run it on a GPU machine, or use --dry-run to test the script "
              "on CPU", file=sys.stderr)
        return 2
    if device.type == "cpu" and not args.tiny:
        print("gpu_check: the full sizes need a GPU; on CPU use --tiny (or --dry-run)", file=sys.stderr)
        return 2
    cfg = TINY if args.tiny else FULL
    if device.type == "cpu":
        torch.set_num_threads(1)  # a dry run measures nothing; one thread avoids stalls on a busy machine
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        gpu = torch.cuda.get_device_name(device)
        if args.peak_tflops is None:
            args.peak_tflops = peak_for(gpu)
        cap = ".".join(map(str, torch.cuda.get_device_capability(device)))
        mem = torch.cuda.get_device_properties(device).total_memory / 2**30
        print(f"gpu_check on {gpu} (compute {cap}, {mem:.0f} GiB), torch {torch.__version__}, "
              f"peak {args.peak_tflops or '?'} TFLOP/s bf16 dense{'' if args.peak_tflops else ' (unknown: MFU not shown)'}")
    else:
        print(f"gpu_check dry run on CPU ({torch.get_num_threads()} threads), tiny sizes, fp32 in place of bf16/fp16: "
              "timings are not meaningful")
    chk = Check(args, device)
    bf, fp = ("bf16", "fp16") if chk.cuda else ("fp32", "fp32")
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        tmp = Path(tmp)
        os.environ["SARSSL_HOME"] = str(tmp / "workspace")  # normalisation / cache files stay in the temp folder
        if "mae" not in args.skip:
            for c in cfg["mae"]:
                chk.part(f"MAE {bf} {c[0]}", mae_throughput, chk, cfg, *c)
        if "dino" not in args.skip:
            for c in cfg["dino"]:
                chk.part(f"DINO {bf} {c[0]} (2x{c[3]}+{c[5]}x{c[4]} crops)", dino_throughput, chk, cfg, *c)
        if "fp16" not in args.skip:
            chk.part(f"MAE {fp}+GradScaler {cfg['mae'][0][0]}", fp16_scaler, chk, cfg)
        if "profile" not in args.skip or "fp16" not in args.skip:
            root = tmp / "region"
            chk.part("simulated region", simulate, chk, cfg, root)
            engine_fp16 = "fp16" if device.type == "cuda" else "fp32"  # the engine refuses fp16 on CPU
            if "fp16" not in args.skip:
                chk.part(f"engine {engine_fp16} MAE ({cfg['profile']} profile)", profile_run, chk,
                         {**cfg, "profile_steps": cfg["engine_fp16_steps"]}, "mae", root, tmp / "mae-fp16",
                         {"precision": engine_fp16})
            if "profile" not in args.skip:
                chk.part(f"{cfg['profile']} profile MAE pretraining (chapter 3)", profile_run, chk, cfg, "mae", root,
                         tmp / "mae", {})
                chk.part(f"{cfg['profile']} profile DINO pretraining (chapter 4)", profile_run, chk, cfg, "dino", root,
                         tmp / "dino", {})
    print(f"\nsummary ({chk.elapsed():.0f} s in all):")
    print(f"{'part':<56}{'images/s':>10}{'MFU':>8}{'peak GiB':>10}  status")
    for r in chk.rows:
        ips = f"{r['images_per_s']:.1f}" if "images_per_s" in r else "-"
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "-"
        mem = f"{r['peak_gib']:.2f}" if r.get("peak_gib") is not None else "-"
        print(f"{r['part']:<56}{ips:>10}{mfu:>8}{mem:>10}  {r['status']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": str(device), "peak_tflops": args.peak_tflops,
                                         "seconds": chk.elapsed(), "parts": chk.rows}, indent=1, default=str))
    failed = [r for r in chk.rows if r["status"].startswith("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
