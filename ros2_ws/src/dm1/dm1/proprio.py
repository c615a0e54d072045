"""Proprioceptive observation keys, all computed from one joint state through numpy FK (one source of truth).

The recorder, the twin and the policy node build proprio vectors with `compute_proprio`, so training data and
deployment observations cannot drift apart.

| key             | dim | unit | meaning                                                      |
|-----------------|-----|------|--------------------------------------------------------------|
| `ee_pos`        | 3   | m    | `fr3_hand_tcp` position in `fr3_link0`                      |
| `ee_quat_xyzw`  | 4   | 1    | `fr3_hand_tcp` orientation, sign per `kinematics.canonical_quat` |
| `gripper_width` | 1   | m    | distance between the fingers (2 x finger joint)              |
| `joint_pos`     | 7   | rad  | arm joint angles `fr3_joint1..7`                             |
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from dm1.kinematics import fr3_fk


@dataclass(frozen=True)
class ProprioKey:
    """One registered proprio key: its dimension, unit and how to compute it."""

    name: str
    dim: int
    unit: str
    description: str
    fn: Callable[[np.ndarray, float], np.ndarray]


def _ee_pos(q: np.ndarray, width: float) -> np.ndarray:
    return fr3_fk(q)[0]


def _ee_quat(q: np.ndarray, width: float) -> np.ndarray:
    return fr3_fk(q)[1]


def _width(q: np.ndarray, width: float) -> np.ndarray:
    return np.array([width])


def _joints(q: np.ndarray, width: float) -> np.ndarray:
    return q


PROPRIO_KEYS: dict[str, ProprioKey] = {
    k.name: k
    for k in (
        ProprioKey("ee_pos", 3, "m", "fr3_hand_tcp position in fr3_link0", _ee_pos),
        ProprioKey("ee_quat_xyzw", 4, "1", "fr3_hand_tcp orientation quaternion x, y, z, w", _ee_quat),
        ProprioKey("gripper_width", 1, "m", "distance between the two fingers", _width),
        ProprioKey("joint_pos", 7, "rad", "arm joint angles fr3_joint1..7", _joints),
    )
}


def validate_keys(keys: Sequence[str]) -> None:
    """Raise ValueError naming any unknown or repeated proprio key."""
    unknown = [k for k in keys if k not in PROPRIO_KEYS]
    if unknown:
        raise ValueError(f"unknown proprio key(s) {unknown}; expected some of {sorted(PROPRIO_KEYS)}")
    if len(set(keys)) != len(keys):
        raise ValueError(f"proprio keys repeat: {list(keys)}")


def proprio_dims(keys: Sequence[str]) -> list[int]:
    """Dimension of each key, e.g. ``["ee_pos", "gripper_width"] -> [3, 1]``."""
    validate_keys(keys)
    return [PROPRIO_KEYS[k].dim for k in keys]


def proprio_units(keys: Sequence[str]) -> list[str]:
    """Unit of each key (``m``, ``rad`` or ``1``)."""
    validate_keys(keys)
    return [PROPRIO_KEYS[k].unit for k in keys]


def compute_proprio(keys: Sequence[str], q: np.ndarray | Sequence[float], gripper_width: float) -> np.ndarray:
    """Concatenate the proprio keys for one joint state.

    Args:
        keys: proprio keys in model-card order.
        q: arm joint angles (7,) [rad].
        gripper_width: finger distance [m] (>= 0; readings down to -1 mm are clipped to 0).

    Returns:
        float32 vector (sum of dims,).

    Raises:
        ValueError: unknown key, wrong joint shape, or non-finite/negative inputs.
    """
    validate_keys(keys)
    qa = np.asarray(q, dtype=np.float64)
    if qa.shape != (7,):
        raise ValueError(f"compute_proprio: q must have shape (7,), found {qa.shape}")
    if not np.all(np.isfinite(qa)):
        raise ValueError(f"compute_proprio: q contains non-finite values: {qa.tolist()}")
    width = float(gripper_width)
    # Finger joints may read a hair below zero in simulation; only a clearly negative width is an error.
    if not np.isfinite(width) or width < -1e-3:
        raise ValueError(f"compute_proprio: gripper_width must be finite and >= 0, found {width}")
    width = max(width, 0.0)
    parts = [np.asarray(PROPRIO_KEYS[k].fn(qa, width), dtype=np.float64).reshape(-1) for k in keys]
    return np.concatenate(parts).astype(np.float32)
