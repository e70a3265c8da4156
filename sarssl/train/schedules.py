"""Per-iteration schedules (linear warmup then cosine), as in the MAE and DINO references.

All functions take an optimiser-step index ``step`` (0-based) and return a float, so a schedule is
exact at any step and needs no precomputed array (resume just asks for the next step).
"""

from __future__ import annotations

import math


def cosine_value(start: float, end: float, progress: float) -> float:
    """Half-cosine from ``start`` (progress 0) to ``end`` (progress 1); progress is clipped to [0, 1]."""
    p = min(max(float(progress), 0.0), 1.0)
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * p))


def warmup_cosine(step: int, total_steps: int, base: float, final: float = 0.0,
                  warmup_steps: int = 0, warmup_start: float = 0.0) -> float:
    """Linear warmup from ``warmup_start`` to ``base`` over ``warmup_steps``, then cosine to ``final``.

    Step ``warmup_steps`` is the first at ``base``; the last step (``total_steps - 1``) reaches ``final``.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if step < warmup_steps:
        return warmup_start + (base - warmup_start) * step / max(warmup_steps, 1)
    span = max(total_steps - 1 - warmup_steps, 1)
    return cosine_value(base, final, (step - warmup_steps) / span)

