"""Temporal ensembling of overlapping action chunks (replan every tick without a jittery hand-over).

With one-step inference at every control tick, consecutive chunks overlap in time: the chunk of tick n
plans the instants of ticks n+1 .. n+T-1 that the chunk of tick n+1 plans again from fresh sampler noise.
Where the two disagree, the controller's target jumps at the hand-over, and the arm can dip in speed
(`dm1 bench loop`'s boundary_dip_fraction). `ChunkEnsembler` blends each new chunk with the previous
*published* chunk at the same absolute instants, an exponential moving average over chunks::

    out(t) = alpha * new(t) + (1 - alpha) * previous(t)     where the previous chunk covers t

with `previous(t)` interpolated linearly in time. alpha = 1 turns it off; smaller alpha is smoother and
slower to react (a prediction's weight halves every log(0.5)/log(1 - alpha) ticks). Points beyond the
previous chunk's end, and every chunk after a gap (hold, deactivation: `reset()`), pass through unchanged.
ACT (Zhao et al., 2023) weights all overlapping chunks exponentially; this is the recursive form.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np


class ChunkEnsembler:
    """Blends each chunk with the previous published one at equal absolute times (see the module docstring).

    Args:
        alpha: weight of the newest prediction, in (0, 1]; 1 = off.
    """

    def __init__(self, alpha: float = 1.0) -> None:
        if not (np.isfinite(alpha) and 0.0 < alpha <= 1.0):
            raise ValueError(f"ChunkEnsembler.alpha: expected a number in (0, 1], found {alpha!r}")
        self.alpha = float(alpha)
        self._previous: Any = None  # the last chunk returned by `blend` (a dm1.policy.step.ActionChunk)

    def reset(self) -> None:
        """Forget the previous chunk (after a hold or on (de)activation): the next chunk passes unchanged."""
        self._previous = None

    def blend(self, chunk: Any) -> Any:
        """Return `chunk` (an `ActionChunk`) with points that the previous chunk covers blended into it."""
        prev, self._previous = self._previous, chunk
        if self.alpha >= 1.0 or prev is None or prev.actions.shape[1:] != chunk.actions.shape[1:]:
            return chunk
        times, prev_times = chunk.times, prev.times  # (N,), (M,) absolute seconds
        eps = 1e-6 * max(chunk.dt, 1e-9)
        covered = (times >= prev_times[0] - eps) & (times <= prev_times[-1] + eps)  # (N,)
        if not covered.any():
            return chunk
        old = np.stack(  # (K, Da): the previous chunk at the covered instants
            [np.interp(times[covered], prev_times, prev.actions[:, d]) for d in range(prev.actions.shape[1])],
            axis=1,
        )
        actions = chunk.actions.astype(np.float32, copy=True)  # (N, Da)
        actions[covered] = self.alpha * actions[covered] + (1.0 - self.alpha) * old
        out = replace(chunk, actions=actions)
        self._previous = out
        return out
