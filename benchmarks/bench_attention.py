"""CLS attention extraction throughput vs a plain forward pass of the same ViT (overhead of extraction).

Default: CPU, ViT-tiny with 8-pixel patches at 64 px, 12 channels, batch 64 (under a minute).
Columns: plain ``forward_features``; ``cls_attention`` (hook on one block, forward stopped after it)
for the last and the first block; and a full forward pass with the capture hook on the last block
(the cost when attention and patch tokens come from one pass, as in probe feature extraction).

    python benchmarks/bench_attention.py            # default
    python benchmarks/bench_attention.py --big      # ViT-small/16 at 128 px, batch 64
    python benchmarks/bench_attention.py --device cuda
"""

from __future__ import annotations

import argparse
import time

import timm
import torch

from sarssl.analysis.attention import capture_cls_attention, cls_attention


def timeit(cases: dict, device: str, warmup: int, reps: int) -> dict:
    """Median seconds per call of each case; cases are interleaved round-robin so that load from
    other processes on a shared machine hits all of them alike."""
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in cases}
    for _ in range(reps):
        for k, fn in cases.items():
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times[k].append(time.perf_counter() - t0)
    return {k: sorted(t)[len(t) // 2] for k, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--big", action="store_true", help="ViT-small/16 at 128 px instead of ViT-tiny/8 at 64 px")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    name, patch, size = ("vit_small_patch16_224", 16, 128) if args.big else ("vit_tiny_patch16_224", 8, 64)
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, in_chans=12, num_classes=0, img_size=size,
                              patch_size=patch).eval().to(args.device)
    x = torch.randn(args.batch, 12, size, size, device=args.device)
    fused = all(b.attn.fused_attn for b in model.blocks)

    def plain():
        with torch.no_grad():
            model.forward_features(x)

    def capture_full():
        with torch.no_grad(), capture_cls_attention(model, block=-1):
            model.forward_features(x)

    cases = {
        "plain forward": plain,
        "cls_attention block -1": lambda: cls_attention(model, x, block=-1),
        "cls_attention block 0": lambda: cls_attention(model, x, block=0),
        "forward + capture (-1)": capture_full,
    }
    res = timeit(cases, args.device, warmup=2, reps=args.reps)

    print(f"{name} patch {patch} at {size} px, 12 ch, batch {args.batch}, device {args.device}, "
          f"threads {torch.get_num_threads()}, fused attention {fused}, depth {len(model.blocks)}")
    print(f"{'case':<26}{'ms/batch':>10}{'images/s':>12}{'vs plain':>10}")
    base = res["plain forward"]
    for k, t in res.items():
        print(f"{k:<26}{t * 1e3:>10.1f}{args.batch / t:>12.0f}{t / base:>9.2f}x")


if __name__ == "__main__":
    main()
