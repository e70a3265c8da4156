"""Checkpoints: atomic writes, safe loading, RNG state capture/restore and the encoder-only export.

A checkpoint is written to ``<name>.tmp-<pid>`` in the same folder and moved over the target with
``os.replace``, so a run killed while saving always leaves the previous complete checkpoint.

Loading never unpickles arbitrary objects: :func:`load_checkpoint` uses ``torch.load(weights_only=True)``,
so a checkpoint holds only tensors and plain values (the numpy RNG state is stored as a tensor). A file
that needs anything else, such as a crafted pickle whose ``__reduce__`` would run code, is refused with a
:class:`~sarssl.errors.UserError` naming it, before any of its code can run. The encoder export is written
twice, as ``encoder.pth`` (torch) and ``encoder.safetensors`` (no pickle at all), with the same tensors.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sarssl.errors import UserError

CHECKPOINT_NAME = "checkpoint.pt"
ENCODER_NAME = "encoder.pth"
ENCODER_SAFETENSORS_NAME = "encoder.safetensors"
ENCODER_SPEC_NAME = "encoder.json"


class StateDictMismatchError(UserError, RuntimeError):
    """Saved weights that do not fit the model they are loaded into (a ``RuntimeError`` too, as torch raises)."""


def _legacy_numpy_globals() -> list:
    """The numpy types of a plain ndarray pickle: checkpoints written before the RNG state was stored as a
    tensor hold the numpy RNG key as an ndarray. Rebuilding an ndarray runs no user code."""
    reconstruct = np.zeros(1).__reduce__()[0]  # numpy's _reconstruct, wherever this numpy keeps it
    return [reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def safe_load(path: str | Path, map_location="cpu", what: str = "file"):
    """``torch.load(path, weights_only=True)`` with the numpy types of old sarssl checkpoints allowed.

    Any failure is a :class:`~sarssl.errors.UserError` naming ``what`` and ``path``: a file the safe
    unpickler refuses (it would need other globals, e.g. a crafted ``__reduce__``) is not loaded at all, a
    truncated or corrupt one "could not be read".
    """
    path = Path(path)
    globs = _legacy_numpy_globals()
    if hasattr(torch.serialization, "safe_globals"):  # torch >= 2.5: allow-listed for this load only
        ctx = torch.serialization.safe_globals(globs)
    else:  # pragma: no cover - older torch
        if hasattr(torch.serialization, "add_safe_globals"):
            torch.serialization.add_safe_globals(globs)
        ctx = contextlib.nullcontext()
    try:
        with ctx:
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        if "WeightsUnpickler error" in text or "weights_only" in text:  # the safe unpickler refused something
            detail = next((ln.strip() for ln in text.splitlines() if "WeightsUnpickler error" in ln), "")
            detail = detail.replace("WeightsUnpickler error: ", "").split(" was not an allowed")[0].rstrip(".")
            raise UserError(
                f"{what} {path} holds objects other than tensors and plain values"
                f"{f' ({detail})' if detail else ''}, so it was not loaded: loading it could run code. It was not "
                "written by sarssl (or was altered); delete it or use another folder") from None
        raise UserError(f"{what} {path} could not be read ({_first_line(err)}); delete it to start afresh") from err
    except Exception as err:  # corrupted / truncated file
        raise UserError(f"{what} {path} could not be read ({_first_line(err)}); delete it to start afresh") from err


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


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
    """Load a checkpoint written by :func:`atomic_save` safely (``weights_only``); a clear
    :class:`~sarssl.errors.UserError` naming the file when it is unreadable or holds anything but tensors
    and plain values."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    ckpt = safe_load(path, map_location, "checkpoint")
    if not isinstance(ckpt, dict):
        raise UserError(f"checkpoint {path} holds a {type(ckpt).__name__}, not a sarssl checkpoint (a dict); "
                        "delete it to start afresh")
    return ckpt


def _numpy_rng_state() -> dict:
    """The legacy numpy global RNG state in a ``weights_only``-safe form (the key as an int64 tensor)."""
    name, key, pos, has_gauss, cached = np.random.get_state()
    return {"bit_generator": str(name), "key": torch.from_numpy(np.asarray(key, dtype=np.int64)),
            "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def _set_numpy_rng_state(state) -> None:
    if isinstance(state, dict):  # written by _numpy_rng_state
        key = state["key"].cpu().numpy() if hasattr(state["key"], "cpu") else np.asarray(state["key"])
        state = (state["bit_generator"], key.astype(np.uint32), int(state["pos"]), int(state["has_gauss"]),
                 float(state["cached_gaussian"]))
    np.random.set_state(state)  # or the tuple of checkpoints written before


def rng_state() -> dict:
    """Python, numpy, torch CPU and (when present) all CUDA generator states (tensors and plain values only)."""
    state = {"python": random.getstate(), "numpy": _numpy_rng_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` captured."""
    random.setstate(state["python"])
    _set_numpy_rng_state(state["numpy"])
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
    """Write the encoder-only (timm-named) state dict as ``encoder.pth`` and ``encoder.safetensors``
    (+ ``encoder.json`` spec); returns the ``encoder.pth`` path."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    cpu_state = {k: v.detach().to("cpu").clone() for k, v in state_dict.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    st = out_dir / ENCODER_SAFETENSORS_NAME
    tmp = st.with_name(f"{st.name}.tmp-{os.getpid()}")
    try:
        save_file({k: v.contiguous() for k, v in cpu_state.items()}, str(tmp), metadata={"format": "pt"})
        os.replace(tmp, st)
    finally:
        if tmp.exists():
            tmp.unlink()
    path = atomic_save(cpu_state, out_dir / ENCODER_NAME)
    if spec is not None:
        atomic_write_text(json.dumps(spec, indent=2, sort_keys=True), out_dir / ENCODER_SPEC_NAME)
    return path


def load_encoder(run_dir: str | Path, **create_kwargs):
    """A timm encoder rebuilt from ``encoder.json`` with ``encoder.pth`` loaded (strict, ``weights_only``).

    A truncated or crafted ``encoder.pth`` is a :class:`~sarssl.errors.UserError` naming it; weights that do
    not fit the spec raise :class:`StateDictMismatchError` naming the file and the differing keys.

    ``create_kwargs`` override the saved spec (e.g. ``img_size`` for fine-tuning at another size
    is not supported by strict loading of the position embedding; resample it first).
    """
    import timm

    run_dir = Path(run_dir)
    spec_path = run_dir / ENCODER_SPEC_NAME
    if not spec_path.is_file():
        raise FileNotFoundError(f"{spec_path} does not exist: was this run written by sarssl.train?")
    try:
        spec = json.loads(spec_path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{spec_path} is not valid JSON ({err}); re-export the encoder or delete the run folder") from None
    weights = run_dir / ENCODER_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} does not exist: was this run written by sarssl.train?")
    spec.update(create_kwargs)
    name = spec.pop("name")
    model = timm.create_model(name, pretrained=False, num_classes=0, **spec)
    state = safe_load(weights, "cpu", "encoder weights")
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise UserError(f"encoder weights {weights} hold a {type(state).__name__}, not a state dict of tensors")
    load_state_dict_checked(model, state, weights, f"the {name} encoder of {spec_path}")
    return model


def load_state_dict_checked(model: torch.nn.Module, state: dict, source: str | Path, target: str) -> None:
    """``model.load_state_dict(state, strict=True)``; a mismatch raises :class:`StateDictMismatchError`
    with one line naming ``source`` (the file) and ``target`` and the differing keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in expected
              if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) ({', '.join(unexpected[:3])}"
                         f"{', ...' if len(unexpected) > 3 else ''})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es) (saved vs expected: {'; '.join(shapes[:2])}"
                         f"{'; ...' if len(shapes) > 2 else ''})")
        raise StateDictMismatchError(f"{source} does not fit {target}: {', '.join(parts)}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise StateDictMismatchError(f"{source} does not fit {target}: {_first_line(err)}") from err
