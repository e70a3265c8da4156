"""What can be fine-tuned: the downstream targets, the training protocols and the encoder inits.

Kept free of torch so the CLI can list the choices without importing the training code.
"""

from __future__ import annotations

from dataclasses import dataclass

from sarssl.data.products import PRODUCT_SPECS
from sarssl.errors import UserError

__all__ = ["TargetSpec", "TARGETS", "PROTOCOLS", "FROZEN_PROTOCOLS", "METHODS", "get_target", "products_for", "tasks_with_labels"]

#: the sweep's arms: ``random`` = a frozen random-initialised encoder probed like the pretrained ones
#: (random features); ``scratch`` = the same encoder trained end to end on the labelled tiles only
#: (supervised from scratch, the study's baseline); ``mae`` / ``dino`` = the pretrained encoders
METHODS = ("random", "scratch", "mae", "dino")
PROTOCOLS = ("scratch", "linear", "frozen", "finetune", "knn")
FROZEN_PROTOCOLS = ("linear", "frozen", "knn")


@dataclass(frozen=True)
class TargetSpec:
    """A downstream target: ``kind`` is ``"tile"`` (B,), ``"pixel"`` (B, H, W) or ``"segmentation"``."""

    name: str
    kind: str
    key: str  # sample key of the label
    valid_key: str | None  # sample key of its bool mask (None: the ignore index marks no-data)
    product: str  # product folder, ``{year}`` filled in
    scale: float = 1.0  # regression heads predict value / scale
    unit: str = ""
    title: str = ""
    n_classes: int = 0
    primary: str = "rmse"  # headline metric

    def product_name(self, year: int = 2020) -> str:
        return self.product.format(year=year)

    @property
    def metrics(self) -> tuple[str, ...]:
        return ("miou", "accuracy") if self.kind == "segmentation" else ("rmse", "mae", "r2")


def _target(name: str, kind: str, family: str, scale: float, title: str, primary: str = "rmse") -> TargetSpec:
    """A target on the product ``family``: label key, mask, folder, unit and classes from its ProductSpec."""
    p = PRODUCT_SPECS[family]
    return TargetSpec(name, kind, p.key, p.valid_key, p.folder, scale, p.unit, title, n_classes=p.n_classes or 0,
                      primary=primary)


TARGETS: dict[str, TargetSpec] = {t.name: t for t in (
    _target("vegetation", "tile", "modis44b006veg", 100.0, "tree cover, tile mean (%)"),
    _target("vegetation_pixel", "pixel", "modis44b006veg", 100.0, "tree cover per pixel (%)"),
    _target("biomass", "pixel", "biomass", 100.0, "above-ground biomass (Mg/ha)"),
    _target("built", "pixel", "ghsbuilts", 1.0, "built-up surface (fraction)"),
    _target("landcover", "segmentation", "esaworldcover", 1.0, "ESA WorldCover land cover", primary="miou"),
)}


def get_target(task: str | TargetSpec) -> TargetSpec:
    if isinstance(task, TargetSpec):
        return task
    if task not in TARGETS:
        raise UserError(f"unknown fine-tuning task {task!r}: expected one of {sorted(TARGETS)}")
    return TARGETS[task]


def products_for(tasks, year: int = 2020, s1_product: str | None = None) -> tuple[str, ...]:
    """The S1 product plus the label products of ``tasks`` (no duplicates, stable order)."""
    out = [s1_product or f"s1grd-{year}"]
    for t in ([tasks] if isinstance(tasks, (str, TargetSpec)) else tasks):
        p = get_target(t).product_name(year)
        if p not in out:
            out.append(p)
    return tuple(out)


def tasks_with_labels(tasks, products, year: int = 2020) -> tuple[tuple[str, ...], dict[str, str]]:
    """``tasks`` split by whether ``products`` (a data source's product folders) hold their labels:
    ``(kept, {skipped task: the label product it lacks})``."""
    kept, missing = [], {}
    for t in tasks:
        p = get_target(t).product_name(year)
        if p in products:
            kept.append(t)
        else:
            missing[t] = p
    return tuple(kept), missing
