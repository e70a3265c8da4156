"""Checkpoints: atomic writes, RNG state capture/restore and the encoder-only export.

A checkpoint is written to ``<name>.tmp-<pid>`` in the same folder and moved over the target with
``os.replace``, so a run killed while saving always leaves the previous complete checkpoint.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_NAME = "checkpoint.pt"
ENCODER_NAME = "encoder.pth"
ENCODER_SPEC_NAME = "encoder.json"


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (temporary file + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_text(text: str, path: str | Path) -> Path:
    """Write ``text`` to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by :func:`atomic_save`; a clear error when missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # corrupted / truncated file
        raise ValueError(f"checkpoint {path} could not be read ({err}); delete it to start afresh") from err


def rng_state() -> dict:
    """Python, numpy, torch CPU and (when present) all CUDA generator states."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` captured."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu() if hasattr(state["torch"], "cpu") else state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def save_encoder(state_dict: dict, out_dir: str | Path, spec: dict | None = None) -> Path:
    """Write the encoder-only (timm-named) state dict as ``encoder.pth`` (+ ``encoder.json`` spec)."""
    out_dir = Path(out_dir)
    cpu_state = {k: v.detach().to("cpu").clone() for k, v in state_dict.items()}
    path = atomic_save(cpu_state, out_dir / ENCODER_NAME)
    if spec is not None:
        atomic_write_text(json.dumps(spec, indent=2, sort_keys=True), out_dir / ENCODER_SPEC_NAME)
    return path


def load_encoder(run_dir: str | Path, **create_kwargs):
    """A timm encoder rebuilt from ``encoder.json`` with ``encoder.pth`` loaded (strict).

    ``create_kwargs`` override the saved spec (e.g. ``img_size`` for fine-tuning at another size
    is not supported by strict loading of the position embedding; resample it first).
    """
    import timm

    run_dir = Path(run_dir)
    spec_path = run_dir / ENCODER_SPEC_NAME
    if not spec_path.is_file():
        raise FileNotFoundError(f"{spec_path} does not exist: was this run written by sarssl.train?")
    spec = json.loads(spec_path.read_text())
    spec.update(create_kwargs)
    model = timm.create_model(spec.pop("name"), pretrained=False, num_classes=0, **spec)
    state = torch.load(run_dir / ENCODER_NAME, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model
