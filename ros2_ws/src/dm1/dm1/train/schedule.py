"""Learning-rate schedule: linear warm-up, then cosine decay to ``min_lr`` (a pure function of the step)."""

from __future__ import annotations

import math


def lr_at(step: int, lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Learning rate for optimizer step ``step`` (0-based).

    Warm-up rises linearly from lr/warmup to ``lr`` over ``warmup_steps``; then a half cosine falls from
    ``lr`` to ``min_lr`` at ``total_steps`` and stays there. A function of the step alone: resumes exactly.
    """
    if total_steps < 1 or warmup_steps < 0 or not 0.0 <= min_lr <= lr:
        raise ValueError(
            f"lr_at: expected total_steps >= 1, warmup_steps >= 0, 0 <= min_lr <= lr; found "
            f"total_steps={total_steps}, warmup_steps={warmup_steps}, min_lr={min_lr}, lr={lr}"
        )
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / decay_steps, 1.0)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))
