"""Where a supervised training step's time goes: the profile's fine-tuning heads, one variant at a time.

The supervised-from-scratch arm of the label sweep (``sarssl.train.sweep``) is most of the cpu book's
time, and each of its steps is a whole encoder + decoder forward and backward and an AdamW update.
This script times that step on random inputs of the profile's size for:

- the optimiser: AdamW's default per-tensor loop on CPU against ``fused=True`` (the engine's choice);
- the dense decoder width (``finetune.decoder_dim``) of the land-cover head;
- precision: fp32 against bf16 autocast.

Variants run in alternating rounds so background load hits all of them alike; each figure is the
median over rounds of the best step time in a round.

    python benchmarks/bench_train_step.py                  # cpu profile, ~2 min on 2 cores
    python benchmarks/bench_train_step.py --rounds 5 --steps 4
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time


def step_seconds(task: str, decoder_dim: int, fused: bool, bf16: bool, batch: int, profile, steps: int) -> float:
    """Best wall time in s of ``steps`` scratch-protocol training steps (after one warm-up step)."""
    import timm
    import torch

    from sarssl.train.protocols import build_head

    torch.manual_seed(0)
    m = profile.model
    encoder = timm.create_model(m.encoder, patch_size=m.patch_size, img_size=m.img_size, in_chans=12, num_classes=0)
    head = build_head(task, encoder, "scratch", decoder_dim=decoder_dim)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-4, fused=fused)
    x = torch.randn(batch, 12, m.img_size, m.img_size)
    best = float("inf")
    for i in range(steps + 1):
        t0 = time.perf_counter()
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with autocast:
            loss = head(x).float().pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:
            best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per variant and round")
    args = ap.parse_args()

    import torch

    from sarssl.profiles import get_profile

    prof = get_profile(args.profile)
    ft = prof.finetune
    dd = ft.decoder_dim
    variants = {  # name -> (task, decoder_dim, fused, bf16)
        "vegetation, AdamW per-tensor": ("vegetation", dd, False, False),
        "vegetation, AdamW fused": ("vegetation", dd, True, False),
        "vegetation, fused, bf16 autocast": ("vegetation", dd, True, True),
        f"landcover d={dd}, AdamW per-tensor": ("landcover", dd, False, False),
        f"landcover d={dd}, AdamW fused": ("landcover", dd, True, False),
    }
    for other in sorted({64, 128} - {dd}):
        variants[f"landcover d={other}, AdamW fused"] = ("landcover", other, True, False)
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(args.rounds):
        for name, (task, d, fused, bf16) in variants.items():
            times[name].append(step_seconds(task, d, fused, bf16, ft.batch_size, prof, args.steps))
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    print(f"\n{args.profile} profile: {prof.model.encoder} patch {prof.model.patch_size} at {prof.model.img_size} px, "
          f"batch {ft.batch_size}, {torch.get_num_threads()} threads")
    base = statistics.median(times["vegetation, AdamW per-tensor"])
    print(f"{'variant':40s} {'s/step':>8s} {'vs veg per-tensor':>18s}")
    for name, ts in times.items():
        t = statistics.median(ts)
        print(f"{name:40s} {t:8.3f} {t / base:17.2f}x")


if __name__ == "__main__":
    main()
