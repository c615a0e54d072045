"""The chunk-boundary dip metric of `dm1 bench loop` on synthetic EE traces."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy")
from dm1_ros.bench_loop import boundary_dips, dip_fraction  # noqa: E402


def boundary_dip_fraction(*args: object) -> tuple[float, int]:
    return dip_fraction(boundary_dips(*args))


def _trace(stop_at: float | None) -> tuple[np.ndarray, np.ndarray]:
    """EE moving at 0.2 m/s along x, sampled at 100 Hz for 3 s; standing still for 0.1 s from `stop_at`."""
    t = np.arange(0.0, 3.0, 0.01)
    v = np.full_like(t, 0.2)
    if stop_at is not None:
        v[(t >= stop_at) & (t < stop_at + 0.1)] = 0.0
    x = np.concatenate([[0.0], np.cumsum(v[:-1] * 0.01)])
    return t, np.stack([x, np.zeros_like(x), np.zeros_like(x)], axis=1)


def test_smooth_motion_has_no_boundary_dips() -> None:
    t, ee = _trace(None)
    boundaries = np.arange(1.2, 2.9, 0.05)
    frac, counted = boundary_dip_fraction(t, ee, boundaries, np.full(len(boundaries), 0.2))
    assert counted == len(boundaries) and frac == 0.0


def test_a_stop_while_the_chunk_commands_motion_is_a_dip() -> None:
    t, ee = _trace(stop_at=2.0)
    boundaries = np.array([1.5, 2.05, 2.5])
    frac, counted = boundary_dip_fraction(t, ee, boundaries, np.full(3, 0.2))
    assert counted == 3 and frac == pytest.approx(1 / 3)


def test_a_stop_the_policy_commands_is_not_a_dip() -> None:
    t, ee = _trace(stop_at=2.0)
    boundaries = np.array([1.5, 2.05, 2.5])
    frac, counted = boundary_dip_fraction(t, ee, boundaries, np.array([0.2, 0.0, 0.2]))
    assert counted == 2 and frac == 0.0
    unknown, _ = boundary_dip_fraction(t, ee, boundaries)  # no commanded speeds: every boundary counts
    assert unknown == pytest.approx(1 / 3)


def test_trace_is_saved_with_the_dipped_boundaries_marked(tmp_path) -> None:
    from dm1_ros.bench_loop import write_trace

    t, ee = _trace(stop_at=2.0)
    boundaries = np.array([1.5, 2.02, 2.5])
    flags = boundary_dips(t, ee, boundaries, np.full(3, 0.2))
    assert flags.tolist() == [0, 1, 0]
    write_trace(tmp_path, t, ee, boundaries, flags)
    saved = np.load(tmp_path / "trace.npz")
    assert saved["dip_flags"].tolist() == [0, 1, 0] and saved["ee"].shape == ee.shape
    assert (tmp_path / "speed.png").stat().st_size > 1000


def _cartesian_chunk(xs: list[float], dt: float = 0.05, t0: float = 0.0):
    """A chunk as the policy node publishes it (fr3_hand_tcp + gripper transforms per point)."""
    from dm1.policy.step import ActionChunk
    from dm1_ros.conversions import chunk_to_multidof_trajectory

    acts = np.zeros((len(xs), 4), dtype=np.float32)
    acts[:, 0] = xs
    chunk = ActionChunk(t0, dt, acts, 0, t0, "ee_position", ("x", "y", "z", "gripper"))
    return chunk_to_multidof_trajectory(chunk, (1.0, 0.0, 0.0, 0.0))


def test_commanded_speed_is_net_motion_to_the_chunk_end_inside_the_box() -> None:
    from dm1_ros.bench_loop import net_commanded_speed

    t = np.arange(0.0, 1.0, 0.01)
    ee = np.zeros((len(t), 3))
    ee[:, 2] = 0.02  # resting on the box floor
    boundaries = np.array([0.5, 0.5, 0.5])
    ends = np.array([
        [0.65, 0.03, 0.0, 0.02],  # 3 cm along x in 0.15 s: 0.2 m/s
        [0.65, 0.0, 0.0, 0.021],  # jitters back to where it is: ~0
        [0.65, 0.0, 0.0, -0.05],  # pushes down through the floor, clipped to it: 0
    ])  # fmt: skip
    box = (np.array([0.0, -1.0, 0.02]), np.array([1.0, 1.0, 1.0]))
    speed = net_commanded_speed(t, ee, ends, boundaries, box)
    assert speed == pytest.approx([0.2, 0.001 / 0.15, 0.0], abs=1e-6)


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


def test_the_running_speed_never_reaches_back_into_the_previous_episode() -> None:
    """An episode starts from rest after a reset: its first chunks are not dips against the last episode."""
    t, ee = _trace(None)
    ee[t >= 2.0] = ee[t >= 2.0][0] + 0.5  # reset at 2.0 s: the arm is teleported home ...
    ee[t >= 2.0, 0] += np.clip(t[t >= 2.0] - 2.2, 0.0, None) * 0.2  # ... rests 0.2 s, then moves again
    boundaries = np.array([1.5, 2.05, 2.1, 2.9])
    assert boundary_dips(t, ee, boundaries, np.full(4, 0.2)).tolist() == [0, 1, 1, 0]  # across the reset
    flags = boundary_dips(t, ee, boundaries, np.full(4, 0.2), episode_starts=np.array([0.0, 2.0]))
    assert flags.tolist() == [0, -1, -1, 0]  # too little of the new episode to judge its first chunks


def test_one_joint_state_stamped_late_is_not_a_dip() -> None:
    """A sample stamped a few ms after its measurement: a double step, then a zero one. Not a stop."""
    t, ee = _trace(None)
    late = int(np.searchsorted(t, 2.0))
    t = t.copy()
    t[late] += 0.008  # measured at 2.00 s, stamped 2.008 s: the step before it looks slow, the next one fast
    ee[late + 1] = ee[late]  # ... and the next message repeats its state (a zero step)
    boundaries = np.array([1.5, t[late] + 0.001, 2.5])
    assert boundary_dips(t, ee, boundaries, np.full(3, 0.2)).tolist() == [0, 0, 0]
    assert boundary_dips(t, ee, boundaries, np.full(3, 0.2), probe_s=0.001).tolist() == [0, 1, 0]


def test_only_chunks_executed_to_their_end_inside_an_episode_count() -> None:
    from dm1_ros.bench_loop import executed_within_episode

    starts, ends = np.array([1.0, 5.0]), np.array([4.0, 8.0])
    boundaries = np.array([0.5, 1.0, 3.85, 3.95, 4.2, 5.1, 7.95])
    chunk_ends = boundaries + 0.1
    inside = executed_within_episode(boundaries, chunk_ends, starts, ends)
    # before the first episode; inside; ends on the end; cut by the end; between end and the next start; ...
    assert inside.tolist() == [False, True, True, False, False, True, False]


def test_boundaries_just_before_the_fingers_move_are_the_grasp_phase() -> None:
    from dm1_ros.bench_loop import near_gripper_motion

    t = np.arange(0.0, 4.0, 0.005)
    widths = np.full_like(t, 0.08)
    closing = (t >= 2.0) & (t < 2.3)
    widths[closing] = 0.08 - 0.1 * (t[closing] - 2.0)  # closes at 10 cm/s from 2.0 s ...
    widths[t >= 2.3] = 0.05  # ... onto a 5 cm cube
    boundaries = np.array([1.0, 1.5, 1.9, 2.2, 2.5, 3.0])
    assert near_gripper_motion(t, widths, boundaries).tolist() == [False, True, True, True, False, False]
    assert not near_gripper_motion(t, np.full_like(t, 0.08), boundaries).any()  # no grasp, no grasp phase


def test_the_grasp_phase_also_covers_settling_on_the_cube_without_a_grasp() -> None:
    from dm1.sim.config import TwinConfig
    from dm1_ros.bench_loop import grasp_phase

    cfg = TwinConfig()
    t = np.arange(0.0, 3.0, 0.005)
    ee = np.zeros((len(t), 3))
    on_cube = cfg.table.top_z + 0.5 * cfg.cube_size
    ee[:, 2] = np.where(t < 1.5, cfg.table.top_z + 0.2, on_cube)  # in transit, then settling on the cube
    widths = np.full_like(t, 0.08)  # the fingers never move
    assert grasp_phase(t, ee, widths, np.array([1.0, 2.0])).tolist() == [False, True]
