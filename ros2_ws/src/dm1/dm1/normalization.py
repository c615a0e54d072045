"""Min-max normalisation to [-1, 1] (DPPO convention), numpy only so the robot path can use it.

x_n = 2 * ((x - min) / (max - min + EPS) - 0.5),   x = (x_n + 1) / 2 * (max - min + EPS) + min.

The inverse uses the same `EPS`, so `denormalize(normalize(x)) == x` up to float rounding. A constant
dimension (max == min) maps to -1. `DM1Policy` (network.py) bakes the same formulas into the exported graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

EPS = 1e-6


def _as_vector(value: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"Normalizer.{name}: expected a 1-D list of numbers, found {value!r}") from None
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"Normalizer.{name}: expected a non-empty 1-D array, found shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"Normalizer.{name}: expected finite values, found {arr.tolist()}")
    return arr


@dataclass(frozen=True, eq=False)
class Normalizer:
    """Per-dimension min-max normaliser over the last axis (float64 stats; output keeps the float dtype)."""

    min: np.ndarray
    max: np.ndarray

    def __post_init__(self) -> None:
        lo = _as_vector(self.min, "min")
        hi = _as_vector(self.max, "max")
        if lo.shape != hi.shape:
            raise ValueError(
                f"Normalizer: expected min and max of the same shape, found {lo.shape} and {hi.shape}"
            )
        if np.any(hi < lo):
            bad = np.nonzero(hi < lo)[0].tolist()
            raise ValueError(
                f"Normalizer.max: expected max >= min in every dimension, found max < min at {bad}"
            )
        object.__setattr__(self, "min", lo)
        object.__setattr__(self, "max", hi)

    @property
    def dim(self) -> int:
        """Number of normalised dimensions."""
        return int(self.min.shape[0])

    @property
    def scale(self) -> np.ndarray:
        """max - min + EPS, shape (D,)."""
        return self.max - self.min + EPS

    def _check(self, x: np.ndarray, what: str) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise ValueError(f"Normalizer.{what}: expected an array (..., {self.dim}), found shape {x.shape}")
        return x

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """Map raw values (..., D) to [-1, 1] (outside the fitted range maps outside [-1, 1])."""
        x = self._check(x, "normalize")
        dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
        return (2.0 * ((x - self.min) / self.scale - 0.5)).astype(dtype)

    def denormalize(self, x_n: np.ndarray) -> np.ndarray:
        """Inverse of `normalize` on (..., D)."""
        x_n = self._check(x_n, "denormalize")
        dtype = x_n.dtype if np.issubdtype(x_n.dtype, np.floating) else np.float32
        return ((x_n + 1.0) / 2.0 * self.scale + self.min).astype(dtype)

    @classmethod
    def fit(cls, data: np.ndarray) -> Normalizer:
        """Per-dimension min/max over all leading axes of `data` (..., D)."""
        data = np.asarray(data, dtype=np.float64)
        if data.ndim < 1 or data.shape[-1] == 0 or data.size == 0:
            raise ValueError(f"Normalizer.fit: expected a non-empty array (N, D), found shape {data.shape}")
        flat = data.reshape(-1, data.shape[-1])
        if not np.all(np.isfinite(flat)):
            rows = np.nonzero(~np.all(np.isfinite(flat), axis=1))[0][:5].tolist()
            raise ValueError(f"Normalizer.fit: expected finite data, found NaN/inf in rows {rows}")
        return cls(min=flat.min(axis=0), max=flat.max(axis=0))

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-ready {"min": [...], "max": [...]}."""
        return {"min": self.min.tolist(), "max": self.max.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "Normalizer") -> Normalizer:
        """Inverse of `to_dict`; errors name `where` (e.g. 'model_card.json normalization.action')."""
        if not isinstance(d, dict) or set(d) != {"min", "max"}:
            found = sorted(d) if isinstance(d, dict) else d
            raise ValueError(f"{where}: expected a mapping with keys ['max', 'min'], found {found!r}")
        try:
            return cls(min=d["min"], max=d["max"])
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Normalizer)
            and np.array_equal(self.min, other.min)
            and np.array_equal(self.max, other.max)
        )

    def __hash__(self) -> int:
        return hash((self.min.tobytes(), self.max.tobytes()))
