"""DINO training throughput: sarssl's DINO task vs lightly's DINO modules, side by side in one run.

Both sides train the same timm ViT backbone (12 channels, position embeddings interpolated for the
local crops) on the same random crops and batch, with the same AdamW parameter groups, per-parameter
gradient clipping and a cosine-momentum EMA teacher. What differs is DINO itself:

- sarssl: ``sarssl.models.dino.DINO`` (head, loss, multi-resolution batching, foreach EMA);
- lightly: ``lightly.models.modules.DINOProjectionHead`` + ``lightly.loss.DINOLoss`` +
  ``lightly.models.utils.update_momentum``, views forwarded one at a time as in lightly's example.

Steps alternate between the two sides and the median step time is reported, so load from other
processes hits both alike. Also prints the multi-crop augmentation rate (chips/s, one worker).

    python benchmarks/bench_dino.py                 # CPU default: ViT-tiny/8, 2x64 + 4x32, batch 16 (< 2 min)
    python benchmarks/bench_dino.py --big           # CPU, batch 32 and more steps
    python benchmarks/bench_dino.py --gpu           # CUDA: ViT-S/16, 2x224 + 8x96, bf16, images/s and MFU
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

from sarssl.models.dino import DINO, teacher_momentum, teacher_temperature
from sarssl.models.task import param_groups_weight_decay
from sarssl.train.engine import clip_gradients


def make_backbone(name, patch, img, drop_path=0.1):
    import timm

    return timm.create_model(name, pretrained=False, in_chans=12, num_classes=0, img_size=img, patch_size=patch,
                             drop_path_rate=drop_path, dynamic_img_size=True)


def clip_per_param(params, max_norm):
    """DINO's per-parameter clipping, the engine's implementation (used by both sides)."""
    clip_gradients(params, max_norm, "per_param")


class Sarssl:
    name = "sarssl"

    def __init__(self, a, device):
        self.task = DINO(make_backbone(a.model, a.patch, a.global_size), out_dim=a.out_dim,
                         warmup_teacher_temp_epochs=1).to(device)
        self.opt = torch.optim.AdamW(self.task.param_groups(0.04), lr=1e-4, fused=device.type == "cuda")
        self.params = [p for p in self.task.student.parameters() if p.requires_grad]
        self.a = a

    def step(self, crops, info):
        with torch.autocast(info.device.type, dtype=torch.bfloat16, enabled=info.bf16):
            out = self.task.training_step({"crops": crops}, info)
        self.opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        clip_per_param(self.params, 3.0)
        self.task.on_before_optimizer_step(info)
        self.opt.step()
        self.task.on_after_optimizer_step(info)
        return out["loss"]


class Lightly:
    name = "lightly"

    def __init__(self, a, device):
        from lightly.loss import DINOLoss
        from lightly.models.modules import DINOProjectionHead
        from lightly.models.utils import deactivate_requires_grad

        warnings.filterwarnings("ignore", message=".*weight_norm.*deprecated", category=FutureWarning)

        torch.manual_seed(0)
        self.student_backbone = make_backbone(a.model, a.patch, a.global_size).to(device)
        dim = self.student_backbone.num_features
        self.student_head = DINOProjectionHead(dim, 2048, 256, a.out_dim, freeze_last_layer=1).to(device)
        self.teacher_backbone = make_backbone(a.model, a.patch, a.global_size, drop_path=0.0).to(device)
        self.teacher_backbone.load_state_dict(self.student_backbone.state_dict())
        self.teacher_head = DINOProjectionHead(dim, 2048, 256, a.out_dim).to(device)
        self.teacher_head.load_state_dict(self.student_head.state_dict())
        deactivate_requires_grad(self.teacher_backbone)
        deactivate_requires_grad(self.teacher_head)
        self.teacher_backbone.eval()
        self.loss = DINOLoss(output_dim=a.out_dim, warmup_teacher_temp=0.04, teacher_temp=0.07,
                             warmup_teacher_temp_epochs=1).to(device)
        student = torch.nn.ModuleDict({"b": self.student_backbone, "h": self.student_head})
        self.opt = torch.optim.AdamW(param_groups_weight_decay(student, 0.04), lr=1e-4, fused=device.type == "cuda")
        self.params = [p for p in student.parameters() if p.requires_grad]
        self.n_global = 2

    def step(self, crops, info):
        from lightly.models.utils import update_momentum

        with torch.autocast(info.device.type, dtype=torch.bfloat16, enabled=info.bf16):
            with torch.no_grad():
                t_out = [self.teacher_head(self.teacher_backbone(v)) for v in crops[: self.n_global]]
            s_out = [self.student_head(self.student_backbone(v)) for v in crops]
            temp = teacher_temperature(info.step / info.steps_per_epoch, 0.04, 0.07, 1)
            loss = self.loss([t.float() for t in t_out], [s.float() for s in s_out], teacher_temp=temp)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        clip_per_param(self.params, 3.0)
        self.student_head.cancel_last_layer_gradients(info.step // info.steps_per_epoch)
        self.opt.step()
        m = teacher_momentum(info.step, info.total_steps)
        update_momentum(self.student_backbone, self.teacher_backbone, m)
        update_momentum(self.student_head, self.teacher_head, m)
        return loss


class Info:
    def __init__(self, step, total, device, bf16):
        self.step, self.total_steps, self.steps_per_epoch, self.epoch = step, total, max(total // 2, 1), 0
        self.lr, self.wd, self.progress = 1e-4, 0.04, step / total
        self.device, self.bf16 = device, bf16


def make_crops(a, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    crops = [torch.randn(a.batch, 12, a.global_size, a.global_size, generator=g) for _ in range(2)]
    crops += [torch.randn(a.batch, 12, a.local_size, a.local_size, generator=g) for _ in range(a.n_local)]
    return [c.to(device) for c in crops]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_step_flops(side, crops, info):
    """FLOPs of one training step (forward + backward + teacher forward), counted by FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        side.step(crops, info)
    return counter.get_total_flops()


def multicrop_rate(a, n=20):
    from sarssl.data.multicrop import MultiCrop, MultiCropConfig

    mc = MultiCrop(MultiCropConfig(n_global=2, n_local=a.n_local, global_size=a.global_size,
                                   local_size=a.local_size), std_db=[3.0] * 12)
    x = torch.randn(12, a.chip_size, a.chip_size)
    v = torch.ones_like(x, dtype=torch.bool)
    g = torch.Generator().manual_seed(0)
    mc(x, v, g)
    t0 = time.perf_counter()
    for _ in range(n):
        mc(x, v, g)
    return n / (time.perf_counter() - t0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpu", action="store_true", help="CUDA, ViT-S/16, 2x224 + 8x96 crops, bf16, with MFU")
    p.add_argument("--big", action="store_true", help="CPU: batch 32, more steps")
    p.add_argument("--device", default=None, help="override the device (e.g. cpu to dry-run --gpu sizes)")
    p.add_argument("--model", default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="timed steps per side")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--out-dim", type=int, default=None)
    p.add_argument("--n-local", type=int, default=None)
    p.add_argument("--global-size", type=int, default=None)
    p.add_argument("--local-size", type=int, default=None)
    p.add_argument("--peak-tflops", type=float, default=989.0, help="accelerator peak bf16 dense TFLOP/s (H100 SXM: 989)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--skip-lightly", action="store_true")
    a = p.parse_args(argv)
    if a.gpu:
        defaults = dict(model="vit_small_patch16_224", patch=16, batch=64, steps=20, out_dim=65536, n_local=8,
                        global_size=224, local_size=96, device="cuda", bf16=True)
    else:
        defaults = dict(model="vit_tiny_patch16_224", patch=8, batch=32 if a.big else 16, steps=12 if a.big else 6,
                        out_dim=4096, n_local=4, global_size=64, local_size=32, device="cpu", bf16=False)
    for k, v in defaults.items():
        if getattr(a, k, None) is None:
            setattr(a, k, v)
    a.chip_size = a.global_size
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    bf16 = a.bf16 and device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    print(f"DINO train step: {a.model} patch {a.patch}, 12 channels, crops 2x{a.global_size} + {a.n_local}x{a.local_size}, "
          f"batch {a.batch}, out_dim {a.out_dim}, device {device}{' bf16' if bf16 else ' fp32'}, "
          f"threads {torch.get_num_threads()}")

    sides = [Sarssl(a, device)] + ([] if a.skip_lightly else [Lightly(a, device)])
    crops = make_crops(a, device)
    total = a.warmup + a.steps
    times = {s.name: [] for s in sides}
    for i in range(total):
        for s in sides:
            info = Info(i, total, device, bf16)
            sync(device)
            t0 = time.perf_counter()
            loss = s.step(crops, info)
            float(loss.detach())  # forces the step to finish
            sync(device)
            if i >= a.warmup:
                times[s.name].append(time.perf_counter() - t0)
    rate = {n: a.batch / statistics.median(t) for n, t in times.items()}
    print(f"{'':10s}{'images/s':>12s}{'s/step':>10s}")
    for n, r in rate.items():
        print(f"{n:10s}{r:12.2f}{a.batch / r:10.3f}")
    if "lightly" in rate:
        print(f"ratio sarssl / lightly: {rate['sarssl'] / rate['lightly']:.2f}x (goal >= 1.0)")
    print(f"multi-crop augmentation (one worker, {a.chip_size}px chip -> {2 + a.n_local} crops): "
          f"{multicrop_rate(a):.1f} chips/s")
    if a.gpu or device.type == "cuda":
        flops = train_step_flops(sides[0], crops, Info(total, total + 1, device, bf16))
        step_s = a.batch / rate["sarssl"]
        achieved = flops / step_s / 1e12
        print(f"model FLOPs per step {flops / 1e12:.3f} TFLOP ({flops / a.batch / 1e9:.1f} GFLOP per image), "
              f"achieved {achieved:.1f} TFLOP/s, MFU {100 * achieved / a.peak_tflops:.1f}% of {a.peak_tflops:g}")


if __name__ == "__main__":
    main()
