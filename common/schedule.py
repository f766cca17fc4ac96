"""Learning-rate schedules shared by pretraining and test-time finetuning."""

from __future__ import annotations

import math


def warmup_cosine(step: int, *, steps: int, lr: float, min_lr: float, warmup: int = 0) -> float:
    """Linear warmup over ``warmup`` steps to ``lr``, then a cosine that reaches ``min_lr``
    at step ``steps`` and stays there."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))
