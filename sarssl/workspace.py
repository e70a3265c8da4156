"""The book layer's memoised recipes: simulated regions and pretrained runs, made once and reused.

Chapters can run on their own (on Colab, say) or in sequence: each one asks the workspace for the
simulated region or the pretrained encoder it needs, and the workspace makes it once and reuses it.
The folders come from :mod:`sarssl.paths` (root ``$SARSSL_HOME`` when set, else ``~/.cache/sarssl``);
this module sits on top of every other layer (it calls the simulator and the pretraining entry
point), so library code never imports it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from sarssl import paths
from sarssl.paths import workspace_dir  # re-exported: a public name of this module
from sarssl.profiles import Profile

__all__ = ["workspace_dir", "region_root", "simulated_region", "run_dir", "pretrained_run"]


def region_root(profile: Profile, seed: int = 0) -> Path:
    """Folder that holds the simulated region(s) for ``profile`` and ``seed`` (one M3LEO root)."""
    from sarssl.data.simulate import SIMULATOR_VERSION

    d = profile.data
    return paths.region_dir(profile.name, d.n_chips, d.chip_size, d.pixel_size, SIMULATOR_VERSION, seed)


def simulated_region(profile: Profile, aoi: str = "sim-a", seed: int = 0, progress: bool = True) -> Path:
    """M3LEO root holding the simulated AOI ``aoi`` for ``profile``; simulated on first use.

    The AOI is written to a temporary folder and moved into place, so concurrent callers and
    interrupted runs never see a half-written region.

    Returns:
        The root folder to pass to the M3LEO readers (the AOI is ``root / aoi``).
    """
    from sarssl.data.simulate import simulate_region

    root = region_root(profile, seed)
    target = root / aoi
    if target.is_dir():
        return root
    tmp_root = root.parent / f".tmp-{uuid.uuid4().hex}"
    d = profile.data
    simulate_region(
        tmp_root, aoi=aoi, n_chips=d.n_chips, chip_size=d.chip_size, pixel_size=d.pixel_size,
        seed=seed, progress=progress,
    )
    root.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp_root / aoi, target)
    except OSError:
        if not target.is_dir():  # lost a race only if the winner's copy is there
            raise
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return root


def run_dir(profile: Profile, name: str) -> Path:
    """Folder for a training run (``mae``, ``dino``, ``finetune/...``) of ``profile``."""
    path = paths.run_path(profile.name, name)
    path.mkdir(parents=True, exist_ok=True)
    return path


def sweep_csv(profile: Profile) -> Path:
    """The label-efficiency sweep's results CSV of ``profile``: the one default of chapter 5 and ``sarssl sweep``."""
    return run_dir(profile, "sweep") / "sweep.csv"


def pretrained_run(profile: Profile, method: str, seed: int = 0, progress: bool = True, **overrides) -> Path:
    """Run folder of ``method`` (``"mae"`` or ``"dino"``) pretrained on the simulated region of ``profile``.

    Trains on first use and resumes an interrupted run; a finished run is reused as it is. The folder
    holds ``encoder.pth``/``encoder.json`` (timm-named encoder), ``metrics.csv``, ``checkpoint.pt`` and
    ``run.json`` (the resolved configuration that loaders rebuild from). ``overrides``: flat
    configuration names (:func:`sarssl.profiles.train_config`), e.g. ``mask_ratio=0.9``.
    """
    from sarssl.train.pretrain import run_pretrain

    root = simulated_region(profile, seed=seed, progress=progress)
    out = run_dir(profile, method if seed == 0 else f"{method}-seed{seed}")
    return run_pretrain(method, profile, root, out, aoi="sim-a", overrides=overrides or None,
                        progress=progress, seed=seed)
