"""benchmarks/gpu_check.py on CPU: --help, the no-GPU message, and the --dry-run through every part."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def _run(*args, timeout=180):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=ROOT)


def test_help():
    r = _run("--help", timeout=60)
    assert r.returncode == 0 and "--dry-run" in r.stdout and "utilisation" in r.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_no_cuda_is_a_clear_message():
    r = _run(timeout=60)
    assert r.returncode == 2 and "no CUDA device" in r.stderr and "--dry-run" in r.stderr


def test_dry_run_goes_through_every_part(tmp_path):
    t = time.perf_counter()
    r = _run("--dry-run", "--json", str(tmp_path / "gpu_check.json"))
    elapsed = time.perf_counter() - t
    assert r.returncode == 0, r.stdout + r.stderr
    import json

    parts = json.loads((tmp_path / "gpu_check.json").read_text())["parts"]
    names = " | ".join(p["part"] for p in parts)
    for part in ("MAE fp32", "DINO fp32", "GradScaler", "simulated region", "engine fp32 MAE",
                 "profile MAE pretraining", "profile DINO pretraining"):
        assert part in names, names
    assert all(p["status"] == "ok" for p in parts), parts
    assert all(p.get("images_per_s", 1) > 0 for p in parts)
    print(f"gpu_check --dry-run: {elapsed:.1f} s")
