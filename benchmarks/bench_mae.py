"""MAE training speed: sarssl's MAE against lightly's MAE modules, and GPU model FLOPs utilisation.

CPU (default): images/s of full training steps (forward, loss, backward, AdamW) for
``sarssl.models.mae.MAE`` and for lightly's ``MaskedVisionTransformerTIMM`` + ``MAEDecoderTIMM``
(the pattern of lightly's MAE example) on the same timm encoder (ViT-tiny, patch 8, 64 px,
12 channels), the same decoder (width x depth, heads), mask ratio and batch. The two are timed in
alternating rounds (the order flips each round) so background load hits both alike; the best round
of each and the median of the per-round ratios are reported.

GPU (``--gpu``): images/s and model FLOPs utilisation (training FLOPs per image from
``FlopCounterMode`` x images/s / peak bf16 FLOP/s) for ViT-S/16 at 224 px and ViT-B/16 at 448 px
in bf16 autocast.

    python benchmarks/bench_mae.py                      # CPU, ~1 min
    python benchmarks/bench_mae.py --steps 30 --rounds 3
    python benchmarks/bench_mae.py --gpu --peak-tflops 989 [--compile]
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from torch import nn

from sarssl.models.mae import MAE
from sarssl.models.vit import count_train_flops, create_encoder


# --------------------------------------------------------------------------------------------
# lightly's MAE (as in lightly's examples/pytorch/mae.py, with in_chans=12)
# --------------------------------------------------------------------------------------------
class LightlyMAE(nn.Module):
    def __init__(self, vit, decoder_dim, decoder_depth, decoder_heads, mask_ratio):
        super().__init__()
        from lightly.models.modules import MAEDecoderTIMM, MaskedVisionTransformerTIMM

        self.mask_ratio = mask_ratio
        self.patch_size = vit.patch_embed.patch_size[0]
        self.backbone = MaskedVisionTransformerTIMM(vit=vit)
        self.sequence_length = self.backbone.sequence_length
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.decoder = MAEDecoderTIMM(
                num_patches=vit.patch_embed.num_patches, patch_size=self.patch_size,
                in_chans=vit.patch_embed.proj.in_channels, embed_dim=vit.embed_dim,
                decoder_embed_dim=decoder_dim, decoder_depth=decoder_depth, decoder_num_heads=decoder_heads,
                mlp_ratio=4.0, proj_drop_rate=0.0, attn_drop_rate=0.0)
        self.criterion = nn.MSELoss()

    def forward(self, images):
        from lightly.models import utils

        b = images.shape[0]
        idx_keep, idx_mask = utils.random_token_mask(size=(b, self.sequence_length), mask_ratio=self.mask_ratio,
                                                     device=images.device)
        x = self.backbone.encode(images=images, idx_keep=idx_keep)
        x = self.decoder.embed(x)
        xm = utils.repeat_token(self.decoder.mask_token, (b, self.sequence_length))
        xm = utils.set_at_index(xm, idx_keep, x.type_as(xm))
        x = self.decoder.decode(xm)
        pred = self.decoder.predict(utils.get_at_index(x, idx_mask))
        target = utils.get_at_index(utils.patchify(images, self.patch_size), idx_mask - 1)
        return self.criterion(pred, target)


def sarssl_loss(model: MAE):
    return lambda x: model(x).loss


def time_steps(loss_fn, params, x, steps: int, amp_dtype=None) -> float:
    """Seconds per training step (mean over ``steps``) of loss, backward and AdamW."""
    opt = getattr(loss_fn, "_opt", None)
    if opt is None:
        opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), fused=x.is_cuda or None)
        loss_fn._opt = opt
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = loss_fn(x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    sync()
    return (time.perf_counter() - t0) / steps


class _Step:
    """A callable holder so :func:`time_steps` can keep one optimiser per model."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, x):
        return self.fn(x)


def cpu_benchmark(args) -> None:
    torch.manual_seed(0)
    x = torch.randn(args.batch, 12, args.img_size, args.img_size)
    dec = (args.decoder_dim, args.decoder_depth, args.decoder_heads)
    ours = MAE(create_encoder("vit_tiny", args.patch_size, args.img_size), *dec, mask_ratio=args.mask_ratio)
    theirs = LightlyMAE(create_encoder("vit_tiny", args.patch_size, args.img_size), *dec, args.mask_ratio)
    n_ours = sum(p.numel() for p in ours.parameters() if p.requires_grad)
    n_theirs = sum(p.numel() for p in theirs.parameters() if p.requires_grad)
    runs = {"sarssl": (_Step(sarssl_loss(ours)), [p for p in ours.parameters() if p.requires_grad]),
            "lightly": (_Step(theirs), [p for p in theirs.parameters() if p.requires_grad])}
    print(f"MAE training on CPU ({torch.get_num_threads()} threads): ViT-tiny/{args.patch_size}, {args.img_size} px, "
          f"12 channels, decoder {args.decoder_dim}x{args.decoder_depth} ({args.decoder_heads} heads), "
          f"mask {args.mask_ratio}, batch {args.batch}")
    print(f"trainable parameters: sarssl {n_ours / 1e6:.3f} M, lightly {n_theirs / 1e6:.3f} M")
    for name, (fn, params) in runs.items():
        time_steps(fn, params, x, args.warmup)
    times: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(args.rounds):  # alternate which model goes first, so neither always runs after the other
        for name in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
            fn, params = runs[name]
            times[name].append(time_steps(fn, params, x, args.steps))
    best = {k: min(v) for k, v in times.items()}
    rate = {k: args.batch / v for k, v in best.items()}
    print(f"{'implementation':<16}{'images/s':>12}{'ms/step':>12}")
    for k in runs:
        print(f"{k:<16}{rate[k]:>12.1f}{1000 * best[k]:>12.1f}")
    per_round = sorted(b / a for a, b in zip(times["sarssl"], times["lightly"]))
    print(f"ratio sarssl / lightly: {rate['sarssl'] / rate['lightly']:.2f}x best rounds, "
          f"{per_round[len(per_round) // 2]:.2f}x median of {args.rounds} paired rounds "
          f"(range {per_round[0]:.2f}-{per_round[-1]:.2f}; goal >= 1.0)")


GPU_CONFIGS = (  # (label, encoder, patch, img, batch)
    ("ViT-S/16 224px", "vit_small", 16, 224, 256),
    ("ViT-B/16 448px", "vit_base", 16, 448, 64),
)


def gpu_benchmark(args) -> None:
    if not torch.cuda.is_available():
        raise SystemExit("--gpu: CUDA is not available")
    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    peak = args.peak_tflops * 1e12
    print(f"MAE training on {torch.cuda.get_device_name(dev)}, bf16 autocast, decoder {args.decoder_dim}x"
          f"{args.decoder_depth} ({args.decoder_heads} heads), mask {args.mask_ratio}, peak {args.peak_tflops} TFLOP/s"
          f"{', torch.compile' if args.compile else ''}")
    print(f"{'model':<18}{'batch':>7}{'GFLOP/img':>12}{'images/s':>11}{'TFLOP/s':>10}{'MFU':>8}")
    for label, name, patch, img, batch in GPU_CONFIGS:
        batch = args.gpu_batch or batch
        torch.manual_seed(0)
        model = MAE(create_encoder(name, patch, img), args.decoder_dim, args.decoder_depth, args.decoder_heads,
                    mask_ratio=args.mask_ratio).to(dev)
        x = torch.randn(batch, 12, img, img, device=dev)
        if args.compile:
            model.compile()  # in place: forward runs the compiled graph
        fn = _Step(lambda t, m=model: m(t).loss)
        params = [p for p in model.parameters() if p.requires_grad]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            flops = count_train_flops(lambda m=model, t=x[:8]: m(t).loss) / 8
        model.zero_grad(set_to_none=True)
        time_steps(fn, params, x, args.warmup, torch.bfloat16)
        sec = min(time_steps(fn, params, x, args.steps, torch.bfloat16) for _ in range(args.rounds))
        ips = batch / sec
        achieved = flops * ips
        print(f"{label:<18}{batch:>7}{flops / 1e9:>12.1f}{ips:>11.1f}{achieved / 1e12:>10.1f}"
              f"{100 * achieved / peak:>7.1f}%")
        del model, x, fn, params
        torch.cuda.empty_cache()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpu", action="store_true", help="GPU images/s and MFU (ViT-S/16 224, ViT-B/16 448)")
    ap.add_argument("--batch", type=int, default=32, help="CPU batch size (default 32)")
    ap.add_argument("--img-size", type=int, default=64)
    ap.add_argument("--patch-size", type=int, default=8)
    ap.add_argument("--decoder-dim", type=int, default=None, help="default 128 (CPU) / 512 (GPU)")
    ap.add_argument("--decoder-depth", type=int, default=None, help="default 1 (CPU) / 8 (GPU)")
    ap.add_argument("--decoder-heads", type=int, default=None, help="default 4 (CPU) / 16 (GPU)")
    ap.add_argument("--mask-ratio", type=float, default=0.75)
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per model")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=6, help="alternating timed rounds")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="peak dense bf16 TFLOP/s (H100 SXM: 989)")
    ap.add_argument("--gpu-batch", type=int, default=None, help="override the GPU batch sizes")
    ap.add_argument("--compile", action="store_true", help="torch.compile the MAE (GPU mode)")
    args = ap.parse_args(argv)
    gpu_defaults, cpu_defaults = (512, 8, 16), (128, 1, 4)
    for key, g, c in zip(("decoder_dim", "decoder_depth", "decoder_heads"), gpu_defaults, cpu_defaults):
        if getattr(args, key) is None:
            setattr(args, key, g if args.gpu else c)
    (gpu_benchmark if args.gpu else cpu_benchmark)(args)


if __name__ == "__main__":
    main()
