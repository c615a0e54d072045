"""`dm1 bench loop`'s reading of the policy's Cartesian chunks (the metric itself: test_hand_over_dips.py)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy")


def _cartesian_chunk(xs: list[float], dt: float = 0.05, t0: float = 0.0):
    """A chunk as the policy node publishes it (fr3_hand_tcp + gripper transforms per point)."""
    from dm1.policy.step import ActionChunk
    from dm1_ros.conversions import chunk_to_multidof_trajectory

    acts = np.zeros((len(xs), 4), dtype=np.float32)
    acts[:, 0] = xs
    chunk = ActionChunk(t0, dt, acts, 0, t0, "ee_position", ("x", "y", "z", "gripper"))
    return chunk_to_multidof_trajectory(chunk, (1.0, 0.0, 0.0, 0.0))


def test_chunk_positions_are_absolute_times_and_points() -> None:
    from builtin_interfaces.msg import Time
    from dm1_ros.bench_loop import chunk_positions

    msg = _cartesian_chunk([0.0, 0.01, 0.02], t0=3.0)
    assert msg.header.stamp == Time(sec=3, nanosec=0)
    rows = chunk_positions(msg)
    assert rows.shape == (3, 4)
    assert rows[:, 0] == pytest.approx([3.0, 3.05, 3.1]) and rows[:, 1] == pytest.approx([0.0, 0.01, 0.02])
    from trajectory_msgs.msg import MultiDOFJointTrajectory

    assert chunk_positions(MultiDOFJointTrajectory()) is None  # the policy's hold: nothing to record
