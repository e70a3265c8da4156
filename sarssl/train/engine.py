"""The one training engine for MAE, DINO and fine-tuning.

Contract
--------
The engine trains a :class:`sarssl.models.task.TrainTask` (anything else is a ``TypeError``): an
``nn.Module`` with one required method::

    training_step(batch: dict, step_info: StepInfo) -> dict[str, Tensor]

It returns at least ``"loss"`` (a scalar tensor; the engine divides it by ``grad_accum_steps`` and
back-propagates it); every other 0-d entry is averaged over the logging window and written to
``metrics.csv`` and TensorBoard. The task's named hooks (no-ops by default) are called directly:

``param_groups(weight_decay) -> list[dict]``
    optimiser groups (default :func:`sarssl.models.task.param_groups_weight_decay`: no decay on
    biases, 1-D parameters, position embeddings and tokens). A group may carry ``wd_scale`` (0 or 1,
    multiplies the scheduled weight decay) and ``lr_scale`` (multiplies the scheduled lr).
``on_before_optimizer_step(step_info)``
    after backward, unscaling and clipping, before ``optimizer.step`` (DINO cancels the last
    layer's gradients here in the first epoch).
``on_after_optimizer_step(step_info)``
    after the step (DINO's EMA teacher update, using ``step_info.step``/``progress``).
``on_epoch_end(step_info) -> dict | None``
    after the last step of each epoch; returned scalars are logged (DINO's k-NN accuracy).
``extra_state() -> dict | None`` / ``load_extra_state(dict)``
    non-parameter, non-buffer state that must survive a resume (buffers are in the state dict).
``export_encoder() -> dict | None`` and ``encoder_spec() -> dict | None``
    timm-named encoder state dict saved as ``encoder.pth`` next to every checkpoint, and the
    ``timm.create_model`` keyword arguments (``name``, ``in_chans``, ``img_size``, ``patch_size``)
    saved as ``encoder.json``.
``compile_for_training()``
    called when ``TrainConfig.compile`` is set (default: ``.compile()`` on each child module).

The task's ``monitor`` (a logged key, e.g. ``"loss"``) and ``mode`` (``"min"``/``"max"``) declare the
metric the run is judged by; the engine keeps its last and best logged values in
:attr:`Trainer.monitored` (saved in the checkpoint, so they survive a resume).

The loop reads top to bottom (:meth:`Trainer.fit`): ``_setup`` (loader, optimiser, resume or seed,
logger, compile, DDP), then per epoch ``_train_epoch``: per step ``_optimizer_step`` (scheduled lr/wd;
per micro-batch ``_forward_backward``; unscale, clip, ``on_before_optimizer_step``, step,
``on_after_optimizer_step``), then ``_log_row`` at log steps and ``save_checkpoint`` when due.

:class:`StepInfo` carries the position and the schedules of the optimiser step being computed:
``step`` (0-based), ``epoch``, ``total_steps``, ``steps_per_epoch``, ``lr``, ``wd``, ``progress``
(``step / total_steps``), ``epoch_float``, ``micro_step`` (0..accum-1), ``rank``, ``world_size``
and ``device``; tasks derive their own schedules from it (teacher momentum, temperature).

Data: a map-style ``Dataset`` (+ optional ``collate_fn``); the engine draws each epoch's order from
``seed`` and ``epoch`` alone (:class:`EpochSampler`), so a resumed run skips exactly the consumed
batches, and calls ``dataset.set_epoch(epoch)`` (when it exists) before each epoch's loader starts. Alternatively pass ``loader_factory(sampler, batch_size) -> iterable of batches``.
Exact resume holds for randomness drawn from the global generators in the main process
(``num_workers=0``) or from per-sample seeds; with worker processes, workers are re-seeded per
epoch from ``seed`` but the batch-to-worker assignment shifts after a resume.

Steps: one optimiser step = ``grad_accum_steps`` micro-batches of ``batch_size`` per process, so
the effective batch is ``batch_size * grad_accum_steps * world_size`` and
``lr = base_lr * effective_batch / 256`` (unless ``lr`` is given). Warmup and cosine decay are per step.

Output folder: ``checkpoint.pt`` (model, optimiser, scaler, step, data position, RNG states, extra
state, config), ``encoder.pth``/``encoder.json``, ``metrics.csv`` and ``tb/``. Running
:meth:`Trainer.fit` again on the same folder resumes. Under ``torchrun`` (``WORLD_SIZE > 1``) the
engine initialises the process group (NCCL on CUDA, Gloo on CPU), wraps the task in DDP, shards
each epoch's order by rank, and only rank 0 writes files.

Stopping: during :meth:`Trainer.fit` the engine handles SIGTERM and SIGINT (Ctrl-C, a notebook's
interrupt, a job scheduler's stop): the step being computed finishes, a row is logged and a checkpoint
written (as at ``max_steps``), and :class:`TrainingInterrupted` (a ``KeyboardInterrupt``) is raised with
a message saying where the checkpoint is; the same call resumes. A second signal stops at once. The
previous handlers are restored when ``fit`` returns. Under ``torchrun`` the ranks agree on the stop at
the next logged step (where they synchronise anyway). Handlers are only installed from the main thread.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import math
import os
import signal
import statistics
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from sarssl.train.checkpoint import (
    CHECKPOINT_NAME, atomic_save, load_checkpoint, rng_state, save_encoder, seed_everything, set_rng_state,
)
from sarssl.errors import UserError
from sarssl.models.task import TrainTask
from sarssl.train.optim import normalise_groups
from sarssl.train.schedules import cosine_value, warmup_cosine

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
#: precision name -> autocast dtype (``None``: no autocast); the name is what a checkpoint records
AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the step and the last good checkpoint."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by SIGTERM or SIGINT at a step boundary, after writing a checkpoint.

    ``signum`` is the signal, ``step`` the optimiser steps done, ``checkpoint`` the file written (None
    without an output folder); ``exit_code`` is the conventional shell status (128 + signal number).
    """

    def __init__(self, message: str, signum: int, step: int, checkpoint: Path | None):
        super().__init__(message)
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        self.exit_code = 128 + int(signum)


@dataclass
class TrainConfig:
    """Everything the engine needs; sizes come from :mod:`sarssl.profiles` via the entry points.

    ``epochs`` and ``warmup_epochs`` are in passes over the data; ``checkpoint_every`` and
    ``log_every`` in optimiser steps (``checkpoint_every``: 0 = only at the end, None = at the end of
    each epoch). ``max_steps`` stops early
    (after writing a checkpoint) without changing the schedule: use it to split a run in pieces.
    """

    epochs: int = 1
    batch_size: int = 32  # per process and micro-batch
    base_lr: float = 1.5e-4
    lr: float | None = None  # absolute peak lr; overrides base_lr scaling when set
    min_lr: float = 0.0
    warmup_epochs: float = 0.0
    weight_decay: float = 0.05
    weight_decay_end: float | None = None  # None: constant weight decay
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_accum_steps: int = 1
    clip_grad: float | None = None
    clip_mode: str = "global"  # "global" (one norm) | "per_param" (DINO)
    precision: str = "auto"  # auto | bf16 | fp16 | fp32
    compile: bool = False
    checkpoint_every: int | None = 0
    log_every: int = 10
    out_dir: str | None = None
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    drop_last: bool = True
    shuffle: bool = True
    max_steps: int | None = None
    resume: bool = True
    tensorboard: bool = True
    progress: bool = True
    find_unused_parameters: bool = False

    def __post_init__(self):
        if self.epochs <= 0:
            raise UserError(f"TrainConfig.epochs must be positive, got {self.epochs}")
        if self.batch_size <= 0:
            raise UserError(f"TrainConfig.batch_size must be positive, got {self.batch_size}")
        if self.grad_accum_steps < 1:
            raise UserError(f"TrainConfig.grad_accum_steps must be >= 1, got {self.grad_accum_steps}")
        if self.clip_mode not in ("global", "per_param"):
            raise UserError(f"TrainConfig.clip_mode must be 'global' or 'per_param', got {self.clip_mode!r}")
        if self.precision not in PRECISIONS:
            raise UserError(f"TrainConfig.precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.max_steps is not None and self.max_steps < 0:
            raise UserError(f"TrainConfig.max_steps must be >= 0 or None, got {self.max_steps}")
        self.betas = tuple(self.betas)


@dataclass
class StepInfo:
    """Position and schedule values of the optimiser step being computed (see module docstring)."""

    step: int
    epoch: int
    total_steps: int
    steps_per_epoch: int
    lr: float
    wd: float
    micro_step: int = 0
    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def progress(self) -> float:
        """Fraction of training done before this step, in [0, 1)."""
        return self.step / max(self.total_steps, 1)

    @property
    def epoch_float(self) -> float:
        """Epochs done before this step, fractional."""
        return self.step / max(self.steps_per_epoch, 1)


# --------------------------------------------------------------------------------------------
# Hardware helpers
# --------------------------------------------------------------------------------------------
def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` -> the local CUDA device (``LOCAL_RANK``) when available, else CPU."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r} requested but CUDA is not available (torch.cuda.is_available() is False): "
                        "use device 'cpu' or 'auto', or a CPU profile")
    return dev


#: ``auto`` picks bf16 on a CPU only when a measured transformer block trains at least this much faster
CPU_BF16_MIN_SPEEDUP = 1.2


@functools.lru_cache(maxsize=1)
def cpu_bf16_speedup() -> float:
    """Measured speed-up of bf16 autocast over fp32 for one ViT-Tiny block step on this CPU (1.0: none).

    A forward and backward pass of a width-192 transformer block on 32 sequences of 65 tokens (the
    ``cpu`` profile's ViT-Tiny/8 at 64 px): after a warm-up of each, 5 rounds time 2 steps in fp32 and
    2 in bf16, in alternating order, and the speed-up is the median of the rounds' ratios, so a load
    spike in one round does not decide the precision of a whole run; about a second, once per process.
    CPUs without native bf16 (no AVX512-BF16 / AMX) return 1.0 without measuring.
    """
    if not torch.backends.mkldnn.is_available() or not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return 1.0
    from timm.models.vision_transformer import Block

    gen = torch.Generator().manual_seed(0)
    block = Block(192, 3)
    x = torch.randn(32, 65, 192, generator=gen)

    def seconds(bf16: bool, steps: int = 2) -> float:
        t0 = time.perf_counter()
        for _ in range(steps):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = block(x).float().square().mean()
            loss.backward()
        return time.perf_counter() - t0

    seconds(False, 1), seconds(True, 1)  # warm-up: oneDNN builds its bf16 kernels on first use
    ratios = []
    for r in range(5):
        order = (False, True) if r % 2 == 0 else (True, False)
        t = dict(zip(order, (seconds(order[0]), seconds(order[1]))))
        ratios.append(t[False] / t[True])
    return statistics.median(ratios)


def resolve_precision(precision: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None for fp32, whether a GradScaler is needed).

    ``auto``: bf16 on CUDA compute capability >= 8, fp16 with a scaler below; on a CPU bf16 when
    :func:`cpu_bf16_speedup` measures at least :data:`CPU_BF16_MIN_SPEEDUP`, else fp32 (set
    ``precision`` to ``fp32`` or ``bf16`` to override the measurement).
    """
    if precision not in PRECISIONS:
        raise UserError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        if device.type != "cuda":
            return (torch.bfloat16 if cpu_bf16_speedup() >= CPU_BF16_MIN_SPEEDUP else None), False
        major, _ = torch.cuda.get_device_capability(device)
        precision = "bf16" if major >= 8 else "fp16"
    if precision == "fp16" and device.type != "cuda":
        raise UserError("precision 'fp16' needs a CUDA device; use 'bf16' or 'fp32' on CPU")
    return AUTOCAST_DTYPES[precision], precision == "fp16"


def precision_name(dtype: torch.dtype | None) -> str:
    """The :data:`AUTOCAST_DTYPES` name of an autocast dtype (``None``: ``"fp32"``)."""
    return next(name for name, d in AUTOCAST_DTYPES.items() if d == dtype)


def move_to_device(obj: Any, device: torch.device) -> Any:
    """Tensors (nested in dicts, lists, tuples) moved to ``device``; everything else unchanged."""
    if torch.is_tensor(obj):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: move_to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(move_to_device(v, device) for v in obj)
    return obj


def batch_size_of(batch: Any) -> int:
    """Number of samples in a batch: dim 0 of its first tensor (searching dicts/lists)."""
    if torch.is_tensor(batch):
        return int(batch.shape[0]) if batch.ndim else 1
    values = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else ()
    for v in values:
        n = batch_size_of(v)
        if n:
            return n
    return 0


def clip_gradients(params: list[torch.Tensor], max_norm: float, mode: str) -> torch.Tensor:
    """Clip in place; returns the global gradient norm before clipping (a tensor).

    ``global``: one norm over all parameters (``clip_grad_norm_``). ``per_param``: each parameter's
    gradient scaled to norm <= ``max_norm`` on its own (DINO's ``clip_gradients``).
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    if mode == "global":
        return torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], max_norm)
    norms = torch._foreach_norm(grads)
    total = torch.linalg.vector_norm(torch.stack(norms))
    scales = [torch.clamp(max_norm / (n + 1e-6), max=1.0) for n in norms]
    torch._foreach_mul_(grads, scales)
    return total


# --------------------------------------------------------------------------------------------
# Data order
# --------------------------------------------------------------------------------------------
class EpochSampler(Sampler[int]):
    """Each epoch's order is a function of (``seed``, ``epoch``) only; sharded by rank; can skip a prefix.

    Args:
        n: dataset length.
        seed: base seed. shuffle: permute (else identity order).
        rank, world_size: process position; each rank takes every ``world_size``-th index after
            trimming to a multiple of ``world_size`` (so all ranks see the same count).
    """

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        if n <= 0:
            raise UserError("the training dataset is empty")
        self.n, self.seed, self.shuffle, self.rank, self.world_size = n, seed, shuffle, rank, world_size
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Select ``epoch``'s order and skip its first ``skip`` indices (already consumed)."""
        self.epoch, self.skip = int(epoch), int(skip)

    def per_rank(self) -> int:
        return self.n // self.world_size

    def indices(self) -> np.ndarray:
        order = (np.random.default_rng([self.seed, self.epoch]).permutation(self.n) if self.shuffle
                 else np.arange(self.n))
        order = order[: self.per_rank() * self.world_size]
        return order[self.rank:: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.skip:].tolist())

    def __len__(self) -> int:
        return max(self.per_rank() - self.skip, 0)


# --------------------------------------------------------------------------------------------
# Distributed helpers
# --------------------------------------------------------------------------------------------
def init_distributed(device: torch.device) -> tuple[int, int, bool]:
    """(rank, world_size, initialised_here): initialise the default group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world <= 1:
        return 0, 1, False
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size(), True


class _StepModule(nn.Module):
    """Routes ``forward`` to ``task.training_step`` so DDP sees the call that builds the graph."""

    def __init__(self, task: TrainTask):
        super().__init__()
        self.task = task

    def forward(self, batch, step_info):
        return self.task.training_step(batch, step_info)


# --------------------------------------------------------------------------------------------
# Logging
# --------------------------------------------------------------------------------------------
class MetricsLogger:
    """Appends rows to ``metrics.csv`` (header fixed by the first row) and TensorBoard scalars."""

    def __init__(self, out_dir: Path | None, tensorboard: bool = True, resume_step: int | None = None):
        self.path = out_dir / "metrics.csv" if out_dir else None
        self.header: list[str] | None = None
        self.history: list[dict] = []
        self.writer = None
        if self.path is not None and self.path.exists():
            with open(self.path, newline="") as fh:
                rows = list(csv.DictReader(fh))
            if rows:
                self.header = list(rows[0].keys())
            keep = [r for r in rows if resume_step is not None and int(float(r["step"])) <= resume_step]
            self._rewrite(keep)
        if out_dir is not None and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(out_dir / "tb"), purge_step=resume_step)
            except Exception as err:  # tensorboard missing or broken: CSV still works
                warnings.warn(f"TensorBoard logging disabled: {err}")

    def _rewrite(self, rows: list[dict]) -> None:
        if not rows:
            self.path.unlink()
            self.header = None
            return
        tmp = self.path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=self.header)
            w.writeheader()
            w.writerows(rows)
        os.replace(tmp, self.path)

    def log(self, row: dict) -> None:
        self.history.append(row)
        if self.path is not None:
            new_keys = [k for k in row if self.header is not None and k not in self.header]
            if self.header is None or new_keys:
                old = []
                if self.header is not None and self.path.exists():
                    with open(self.path, newline="") as fh:
                        old = list(csv.DictReader(fh))
                self.header = (self.header or []) + [k for k in row if k not in (self.header or [])]
                with open(self.path, "w", newline="") as fh:
                    w = csv.DictWriter(fh, fieldnames=self.header)
                    w.writeheader()
                    w.writerows(old)
            with open(self.path, "a", newline="") as fh:
                csv.DictWriter(fh, fieldnames=self.header).writerow(row)
        if self.writer is not None:
            step = int(row["step"])
            for k, v in row.items():
                if k not in ("step", "epoch") and isinstance(v, (int, float)) and math.isfinite(v):
                    self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()


# --------------------------------------------------------------------------------------------
# Trainer
# --------------------------------------------------------------------------------------------
class _LogWindow:
    """Sums of the 0-d step outputs since the last logged row, with the images seen and the start time."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count, self.n_images, self.t0 = 0, 0, time.perf_counter()

    def add(self, out: dict) -> None:
        """Accumulate one micro-batch's outputs (on the device: no host sync)."""
        for k, v in out.items():
            if torch.is_tensor(v) and v.numel() == 1:
                v = v.detach().float().reshape(())
                self.sums[k] = self.sums[k] + v if k in self.sums else v
        self.count += 1

    def means(self) -> dict[str, float]:
        return {k: (v / self.count).item() for k, v in self.sums.items()}


class Trainer:
    """Fit ``task`` on ``data`` with ``config``; see the module docstring for the contract.

    Args:
        task: a :class:`~sarssl.models.task.TrainTask` (``training_step(batch, step_info) -> {"loss": ...}``).
        data: map-style ``Dataset`` or ``loader_factory(sampler, batch_size) -> iterable``.
        config: :class:`TrainConfig`.
        collate_fn: batch collation for a ``Dataset`` (default ``torch`` collate).
        batch_transform: applied to each batch once it is on the device (e.g. decoding compact
            records on the GPU, ``M3LEODataset.decode_batch``).
        run_config: the run's resolved configuration (``RunConfig.to_dict()``), saved in every
            checkpoint as ``"run_config"``.

    After :meth:`fit`, :attr:`monitored` holds the task's monitored metric: ``{"metric", "mode",
    "last", "best", "best_step"}`` (``None`` values while no logged row carried the metric).
    """

    def __init__(self, task: TrainTask, data: Dataset | Callable, config: TrainConfig,
                 collate_fn: Callable | None = None, batch_transform: Callable | None = None,
                 run_config: dict | None = None):
        if not isinstance(task, TrainTask):
            raise TypeError(f"Trainer trains a sarssl.models.task.TrainTask, got {type(task).__name__}: "
                            "subclass TrainTask and implement training_step(batch, step_info)")
        if type(task).training_step is TrainTask.training_step and "training_step" not in vars(task):
            raise TypeError(f"{type(task).__name__} does not implement training_step(batch, step_info)")
        task.check_monitor()
        self.task, self.data, self.config, self.collate_fn = task, data, config, collate_fn
        self.batch_transform = batch_transform
        self.run_config = run_config
        self.device = resolve_device(config.device)
        self.rank, self.world_size, self._owns_pg = init_distributed(self.device)
        self.is_main = self.rank == 0
        self.out_dir = Path(config.out_dir) if config.out_dir else None
        self.amp_dtype, use_scaler = resolve_precision(config.precision, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.step = 0
        self.last_checkpoint: Path | None = None
        self.logger: MetricsLogger | None = None
        self._stop_signal: int | None = None  # set by a SIGTERM/SIGINT during fit (see _stop_on_signals)
        self.monitored: dict = {"metric": task.monitor, "mode": task.mode, "last": None, "best": None,
                                "best_step": None}

    # -- the loop, top to bottom ----------------------------------------------------------
    def fit(self, on_ready: Callable[[], None] | None = None) -> dict:
        """Train to the end (or ``max_steps``); returns the last logged metrics row.

        ``on_ready()`` is called once the loader, the optimiser and the resume are set up (a checkpoint
        that does not fit has been refused by then), before the first step: ``run_pretrain`` writes
        ``run.json`` there.
        """
        self._setup()
        if on_ready is not None:
            on_ready()
        last_row: dict = self.logger.history[-1] if self.logger.history else {}
        if self.step >= self.stop_at:
            self.logger.close()
            return last_row

        from tqdm.auto import tqdm

        self._bar = tqdm(total=self.stop_at, initial=self.step, desc="train", unit="step", dynamic_ncols=True,
                         disable=not (self.config.progress and self.is_main))
        try:
            with self._stop_on_signals():
                while self.step < self.stop_at:
                    last_row = self._train_epoch() or last_row
        finally:
            self._bar.close()
            self.logger.close()
        return last_row

    @contextlib.contextmanager
    def _stop_on_signals(self):
        """SIGTERM/SIGINT set :attr:`_stop_signal` (checked at step boundaries); a second one stops at once."""
        self._stop_signal = None
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        signums = [signal.SIGINT] + ([signal.SIGTERM] if hasattr(signal, "SIGTERM") else [])
        previous = {}

        def handler(signum, frame):
            if self._stop_signal is not None:  # the second signal: stop now, without a checkpoint
                for sig, old in previous.items():
                    signal.signal(sig, old)
                raise KeyboardInterrupt(f"training stopped at once by a second {signal.Signals(signum).name}")
            self._stop_signal = signum

        for sig in signums:
            previous[sig] = signal.getsignal(sig)
            signal.signal(sig, handler)
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old if old is not None else signal.SIG_DFL)

    def _stop_requested(self, synced: bool) -> bool:
        """Whether a stop signal arrived (under DDP: on any rank, agreed at ``synced`` steps only)."""
        if self.world_size == 1:
            return self._stop_signal is not None
        if not synced:
            return False
        flag = torch.tensor([0 if self._stop_signal is None else int(self._stop_signal)], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if int(flag.item()) and self._stop_signal is None:
            self._stop_signal = int(flag.item())
        return bool(int(flag.item()))

    def _stop_now(self, info: StepInfo, grad_norm, end_of_epoch: bool, logged: bool, saved: bool) -> None:
        """Log and checkpoint (unless this step just did) and raise :class:`TrainingInterrupted`."""
        if not logged:
            self._raise_if_non_finite()
            self._log_row(info, grad_norm, end_of_epoch)
        if not saved:
            self.save_checkpoint()
            self._last_ckpt_step = self.step
        name = signal.Signals(self._stop_signal).name
        if self.last_checkpoint is not None:
            where = f"checkpoint {self.last_checkpoint} written; run the same command again to resume"
        else:
            where = "no output folder, so nothing was saved"
        raise TrainingInterrupted(f"training stopped by {name} after step {self.step} of {self.stop_at}: {where}",
                                  self._stop_signal, self.step, self.last_checkpoint)

    def _setup(self) -> None:
        """Loader, optimiser, resume (or seed), output folder, logger, compile, DDP wrapper, in this order."""
        cfg = self.config
        self._build_loader()
        self.task.to(self.device)
        self._build_optimizer()
        resumed = self._resume_or_seed()
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if self.out_dir is not None and self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.logger = MetricsLogger(self.out_dir if self.is_main else None, cfg.tensorboard,
                                    resume_step=self.step if resumed else None)
        if cfg.compile:
            self.task.compile_for_training()
        self.step_module = self._wrap_for_ddp()
        self.task.train()
        self.stop_at = self.total_steps if cfg.max_steps is None else min(cfg.max_steps, self.total_steps)
        self._window = _LogWindow()
        #: first optimiser step with a non-finite loss (-1: none); a device tensor, read only when checked
        self._bad_step = torch.full((), -1, dtype=torch.long, device=self.device)

    def _train_epoch(self) -> dict | None:
        """Optimiser steps from ``self.step`` to the end of its epoch (or ``stop_at``); the last row logged."""
        cfg = self.config
        epoch = self.step // self.steps_per_epoch
        batches = iter(self._epoch_batches(epoch, (self.step % self.steps_per_epoch) * cfg.grad_accum_steps))
        last_row = None
        while self.step < self.stop_at and self.step // self.steps_per_epoch == epoch:
            info = self.step_info(self.step)
            grad_norm = self._optimizer_step(batches, info)
            self.step += 1
            self._bar.update(1)
            end_of_epoch = self.step % self.steps_per_epoch == 0
            checkpoint_due = self._checkpoint_due()
            log_due = checkpoint_due or end_of_epoch or self.step % max(cfg.log_every, 1) == 0
            if log_due:
                self._raise_if_non_finite()
                last_row = self._log_row(info, grad_norm, end_of_epoch)
            if checkpoint_due:
                self.save_checkpoint()
                self._last_ckpt_step = self.step
            if self.step < self.stop_at and self._stop_requested(synced=log_due):
                self._stop_now(info, grad_norm, end_of_epoch, logged=log_due, saved=checkpoint_due)
        return last_row

    def _optimizer_step(self, batches: Iterator, info: StepInfo) -> torch.Tensor | None:
        """Scheduled lr/wd, the micro-batches, unscale, clip, hooks, step; returns the norm before clipping."""
        cfg = self.config
        for g in self.optimizer.param_groups:
            g["lr"] = info.lr * g.get("lr_scale", 1.0)
            g["weight_decay"] = info.wd * g.get("wd_scale", 1.0)
        for micro in range(cfg.grad_accum_steps):
            self._forward_backward(self._next_batch(batches, info), info, micro)
        if self.device.type == "cpu":  # free on CPU; on CUDA only at log/checkpoint steps (a host sync)
            self._raise_if_non_finite()
        self.scaler.unscale_(self.optimizer)
        grad_norm = None
        if cfg.clip_grad is not None:
            grad_norm = clip_gradients(self.params, cfg.clip_grad, cfg.clip_mode)
        self.task.on_before_optimizer_step(info)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.task.on_after_optimizer_step(info)
        return grad_norm

    def _next_batch(self, batches: Iterator, info: StepInfo):
        try:
            return next(batches)
        except StopIteration:
            raise RuntimeError(
                f"the data ran out at epoch {info.epoch}, step {self.step}: the loader gave fewer "
                f"batches than {self.steps_per_epoch * self.config.grad_accum_steps} expected") from None

    def _forward_backward(self, batch, info: StepInfo, micro: int) -> None:
        """One micro-batch: to the device, ``training_step`` under autocast, scaled backward, window sums."""
        accum = self.config.grad_accum_steps
        self._window.n_images += batch_size_of(batch)
        batch = move_to_device(batch, self.device)
        if self.batch_transform is not None:
            batch = self.batch_transform(batch)
        info.micro_step = micro
        sync = (micro == accum - 1) or self.world_size == 1  # DDP all-reduces on the last micro-batch only
        with contextlib.nullcontext() if sync else self.step_module.no_sync():
            with self._autocast():
                out = self.step_module(batch, info)
            if not isinstance(out, dict) or "loss" not in out:
                raise TypeError(f"{type(self.task).__name__}.training_step must return a dict with a 'loss' entry")
            loss = out["loss"]
            self.scaler.scale(loss.float() / accum).backward()
        finite = torch.isfinite(loss.detach())
        self._bad_step = torch.where((~finite) & (self._bad_step < 0),
                                     torch.full_like(self._bad_step, self.step), self._bad_step)
        self._window.add(out)

    def _checkpoint_due(self) -> bool:
        """After ``self.step`` steps: every ``checkpoint_every`` steps (None: each epoch's end) and at the stop."""
        every = self.config.checkpoint_every
        if every is None:
            every = self.steps_per_epoch
        return bool(every and self.step % every == 0) or self.step == self.stop_at

    def _log_row(self, info: StepInfo, grad_norm: torch.Tensor | None, end_of_epoch: bool) -> dict:
        """Log the window's means with lr, wd, grad norm, throughput (and epoch-end scalars); start a new window."""
        window = self._window
        elapsed = time.perf_counter() - window.t0
        row = {"step": self.step, "epoch": round(self.step / self.steps_per_epoch, 4), "lr": info.lr, "wd": info.wd}
        row.update(window.means())
        if grad_norm is not None:
            row["grad_norm"] = float(grad_norm)
        row["images_per_s"] = window.n_images * self.world_size / max(elapsed, 1e-9)
        if end_of_epoch:
            extra = self.task.on_epoch_end(info) or {}
            row.update({k: float(v) for k, v in extra.items()})
        self.logger.log(row)
        self._record_monitor(row)
        self._bar.set_postfix(loss=f"{row.get('loss', float('nan')):.4f}", lr=f"{info.lr:.2e}")
        window.reset()
        return row

    def _record_monitor(self, row: dict) -> None:
        """Keep the last and the best (by the task's ``mode``) value of the monitored metric."""
        m = self.monitored
        if m["metric"] not in row:
            return
        value = float(row[m["metric"]])
        m["last"] = value
        better = m["best"] is None or (value < m["best"] if m["mode"] == "min" else value > m["best"])
        if math.isfinite(value) and better:
            m["best"], m["best_step"] = value, self.step

    def _raise_if_non_finite(self) -> None:
        """Raise :class:`NonFiniteLossError` if any loss so far was NaN/inf (reads the device flag)."""
        bad = int(self._bad_step.item())
        if bad < 0:
            return
        where = (f"the last good checkpoint is {self.last_checkpoint} (step {self._last_ckpt_step})"
                 if self.last_checkpoint else "no checkpoint was written yet")
        raise NonFiniteLossError(
            f"non-finite loss at optimiser step {bad} (epoch {bad // self.steps_per_epoch}); {where}. "
            "Lower the learning rate, enable clip_grad, or use precision='fp32'.")

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    # -- setup pieces ---------------------------------------------------------------------
    def _build_loader(self):
        cfg = self.config
        if isinstance(self.data, Dataset) or hasattr(self.data, "__getitem__"):
            n = len(self.data)
            self.sampler = EpochSampler(n, cfg.seed, cfg.shuffle, self.rank, self.world_size)
            if self.sampler.per_rank() < cfg.batch_size * cfg.grad_accum_steps:
                raise UserError(
                    f"the dataset has {n} samples ({self.sampler.per_rank()} per process), fewer than one optimiser "
                    f"step needs (batch_size {cfg.batch_size} x grad_accum_steps {cfg.grad_accum_steps})")
            self.loader = DataLoader(
                self.data, batch_size=cfg.batch_size, sampler=self.sampler, drop_last=cfg.drop_last,
                num_workers=cfg.num_workers, collate_fn=self.collate_fn,
                pin_memory=self.device.type == "cuda", generator=torch.Generator(),
                persistent_workers=False,
            )
            micro = self.sampler.per_rank() // cfg.batch_size if cfg.drop_last else math.ceil(
                self.sampler.per_rank() / cfg.batch_size)
        elif callable(self.data):
            n = getattr(self.data, "num_samples", None)
            if n is None:
                raise TypeError("a loader_factory must carry a 'num_samples' attribute (dataset length)")
            self.sampler = EpochSampler(n, cfg.seed, cfg.shuffle, self.rank, self.world_size)
            self.loader = None
            micro = self.sampler.per_rank() // cfg.batch_size
        else:
            raise TypeError(f"data must be a Dataset or a loader factory, got {type(self.data).__name__}")
        self.steps_per_epoch = micro // cfg.grad_accum_steps
        if self.steps_per_epoch < 1:
            raise UserError("not enough data for one optimiser step per epoch")
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.warmup_steps = int(round(cfg.warmup_epochs * self.steps_per_epoch))
        eff = cfg.batch_size * cfg.grad_accum_steps * self.world_size
        self.effective_batch = eff
        self.peak_lr = cfg.lr if cfg.lr is not None else cfg.base_lr * eff / 256

    def _epoch_batches(self, epoch: int, skip_micro: int) -> Iterable:
        self.sampler.set_epoch(epoch, skip_micro * self.config.batch_size)
        set_epoch = getattr(self.data, "set_epoch", None)
        if callable(set_epoch) and isinstance(self.data, Dataset):
            set_epoch(epoch)
        if self.loader is None:
            return self.data(self.sampler, self.config.batch_size)
        self.loader.generator.manual_seed(int(np.random.default_rng([self.config.seed, epoch, 7]).integers(2**62)))
        return self.loader

    def _build_optimizer(self):
        cfg = self.config
        groups = normalise_groups(self.task.param_groups(cfg.weight_decay), cfg.weight_decay)
        self.params = [p for g in groups for p in g["params"]]
        kwargs = dict(lr=self.peak_lr, betas=cfg.betas, eps=cfg.eps)
        if self.device.type in ("cuda", "cpu"):  # one fused kernel over all tensors: on CPU the optimiser step is
            kwargs["fused"] = True                  # about 3x faster than the per-tensor loop (bench_train_step.py)
        self.optimizer = torch.optim.AdamW(groups, **kwargs)

    def _resume_or_seed(self) -> bool:
        """Load ``checkpoint.pt`` when resuming (returns True), else seed every generator from ``seed`` and rank."""
        self._last_ckpt_step = None
        if self.checkpoint_path is not None and self.config.resume and self.checkpoint_path.exists():
            self.load_checkpoint(self.checkpoint_path)
            self._last_ckpt_step = self.step
            return True
        seed_everything(self.config.seed + 1000 * self.rank)
        return False

    def _wrap_for_ddp(self) -> nn.Module:
        """The module whose ``forward`` is ``task.training_step``; DDP-wrapped when ``world_size > 1``."""
        step_module: nn.Module = _StepModule(self.task)
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            step_module = DDP(step_module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                              find_unused_parameters=self.config.find_unused_parameters)
        return step_module

    def schedule(self, step: int) -> tuple[float, float]:
        """(lr, weight decay) at optimiser step ``step``."""
        cfg = self.config
        lr = warmup_cosine(step, self.total_steps, self.peak_lr, cfg.min_lr, self.warmup_steps)
        wd = cfg.weight_decay if cfg.weight_decay_end is None else cosine_value(
            cfg.weight_decay, cfg.weight_decay_end, step / max(self.total_steps - 1, 1))
        return lr, wd

    def step_info(self, step: int, micro_step: int = 0) -> StepInfo:
        lr, wd = self.schedule(step)
        return StepInfo(step=step, epoch=step // self.steps_per_epoch, total_steps=self.total_steps,
                        steps_per_epoch=self.steps_per_epoch, lr=lr, wd=wd, micro_step=micro_step,
                        rank=self.rank, world_size=self.world_size, device=self.device)

    # -- checkpoints ----------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path | None:
        return self.out_dir / CHECKPOINT_NAME if self.out_dir else None

    def state_dict(self) -> dict:
        return {
            "format": "sarssl-train-1",
            "task": self.task.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.step // self.steps_per_epoch,
            "batch_in_epoch": (self.step % self.steps_per_epoch) * self.config.grad_accum_steps,
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps,
            "rng": rng_state(),
            "extra": self.task.extra_state(),
            "config": asdict(self.config),
            "run_config": self.run_config,
            "world_size": self.world_size,
            "monitored": dict(self.monitored),
            "precision": precision_name(self.amp_dtype),
        }

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoint.pt`` (+ ``encoder.pth``) atomically on rank 0; returns its path."""
        if self.out_dir is None:
            return None
        if self.is_main:
            atomic_save(self.state_dict(), self.checkpoint_path)
            encoder = self.task.export_encoder()
            if encoder is not None:
                save_encoder(encoder, self.out_dir, self.task.encoder_spec())
        if self.world_size > 1:
            dist.barrier()
        self.last_checkpoint = self.checkpoint_path
        return self.checkpoint_path

    def load_checkpoint(self, path: Path) -> None:
        ckpt = load_checkpoint(path, map_location="cpu")
        if ckpt.get("steps_per_epoch") != self.steps_per_epoch or ckpt.get("world_size", 1) != self.world_size:
            raise UserError(
                f"checkpoint {path} was written with {ckpt.get('steps_per_epoch')} steps per epoch on "
                f"{ckpt.get('world_size', 1)} process(es); this run has {self.steps_per_epoch} on {self.world_size}: "
                "use the same data, batch size, accumulation and process count, or a new --out folder")
        self.task.load_state_dict(ckpt["task"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        if self.config.precision == "auto" and ckpt.get("precision") in AUTOCAST_DTYPES:  # keep what the run
            self.amp_dtype = AUTOCAST_DTYPES[ckpt["precision"]]  # started with, not a new measurement
        if ckpt.get("extra") is not None:
            self.task.load_extra_state(ckpt["extra"])
        saved = ckpt.get("monitored") or {}
        if (saved.get("metric"), saved.get("mode")) == (self.monitored["metric"], self.monitored["mode"]):
            self.monitored.update({k: saved.get(k) for k in ("last", "best", "best_step")})
        self.step = int(ckpt["step"])
        if self.world_size == 1:
            set_rng_state(ckpt["rng"])
        else:  # per-rank streams differ; re-derive them from seed, rank and step
            seed_everything(self.config.seed + 1000 * self.rank + self.step)
        self.last_checkpoint = path

    def close(self) -> None:
        """Destroy the process group if this trainer created it."""
        if self._owns_pg and dist.is_initialized():
            dist.destroy_process_group()
            self._owns_pg = False
