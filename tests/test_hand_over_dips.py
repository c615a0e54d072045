"""The chunk-boundary dip metric of `dm1 bench loop` (`dm1.evaluation.hand_over_dips`) on synthetic traces."""

from __future__ import annotations

import numpy as np
import pytest
from dm1.evaluation.hand_over_dips import boundary_dips, dip_fraction


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
    from dm1.evaluation.hand_over_dips import write_trace

    t, ee = _trace(stop_at=2.0)
    boundaries = np.array([1.5, 2.02, 2.5])
    flags = boundary_dips(t, ee, boundaries, np.full(3, 0.2))
    assert flags.tolist() == [0, 1, 0]
    write_trace(tmp_path, t, ee, boundaries, flags)
    saved = np.load(tmp_path / "trace.npz")
    assert saved["dip_flags"].tolist() == [0, 1, 0] and saved["ee"].shape == ee.shape
    assert (tmp_path / "speed.png").stat().st_size > 1000


def test_commanded_speed_is_net_motion_to_the_chunk_end_inside_the_box() -> None:
    from dm1.evaluation.hand_over_dips import net_commanded_speed

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
    from dm1.evaluation.hand_over_dips import executed_within_episode

    starts, ends = np.array([1.0, 5.0]), np.array([4.0, 8.0])
    boundaries = np.array([0.5, 1.0, 3.85, 3.95, 4.2, 5.1, 7.95])
    chunk_ends = boundaries + 0.1
    inside = executed_within_episode(boundaries, chunk_ends, starts, ends)
    # before the first episode; inside; ends on the end; cut by the end; between end and the next start; ...
    assert inside.tolist() == [False, True, True, False, False, True, False]


def test_boundaries_just_before_the_fingers_move_are_the_grasp_phase() -> None:
    from dm1.evaluation.hand_over_dips import near_gripper_motion

    t = np.arange(0.0, 4.0, 0.005)
    widths = np.full_like(t, 0.08)
    closing = (t >= 2.0) & (t < 2.3)
    widths[closing] = 0.08 - 0.1 * (t[closing] - 2.0)  # closes at 10 cm/s from 2.0 s ...
    widths[t >= 2.3] = 0.05  # ... onto a 5 cm cube
    boundaries = np.array([1.0, 1.5, 1.9, 2.2, 2.5, 3.0])
    assert near_gripper_motion(t, widths, boundaries).tolist() == [False, True, True, True, False, False]
    assert not near_gripper_motion(t, np.full_like(t, 0.08), boundaries).any()  # no grasp, no grasp phase


def test_the_grasp_phase_also_covers_settling_on_the_cube_without_a_grasp() -> None:
    from dm1.evaluation.hand_over_dips import grasp_phase
    from dm1.sim.config import TwinConfig

    cfg = TwinConfig()
    t = np.arange(0.0, 3.0, 0.005)
    ee = np.zeros((len(t), 3))
    on_cube = cfg.table.top_z + 0.5 * cfg.cube_size
    ee[:, 2] = np.where(t < 1.5, cfg.table.top_z + 0.2, on_cube)  # in transit, then settling on the cube
    widths = np.full_like(t, 0.08)  # the fingers never move
    assert grasp_phase(t, ee, widths, np.array([1.0, 2.0])).tolist() == [False, True]


def _chunk_stream(
    heads: np.ndarray, dt: float = 0.05, points: int = 3, step: np.ndarray | None = None
) -> np.ndarray:
    """(M, P, 4) chunks as `dm1 bench loop` records them: chunk i starts at i*dt at heads[i] (M, 3) and moves
    by `step` (3,) per point (default: along the line to the next head)."""
    m = len(heads)
    out = np.zeros((m, points, 4))
    for i in range(m):
        d = step if step is not None else (heads[min(i + 1, m - 1)] - heads[i])
        for k in range(points):
            out[i, k, 0] = i * dt + k * dt
            out[i, k, 1:] = heads[i] + k * d
    return out


def test_commanded_path_follows_the_newest_chunk_inside_the_box() -> None:
    from dm1.evaluation.hand_over_dips import commanded_path

    chunks = np.array([
        [[0.0, 0.0, 0.0, 0.1], [0.1, 0.1, 0.0, 0.1]],  # from 0 to 0.1 m along x in 0.1 s
        [[0.05, 0.5, 0.0, 0.1], [0.15, 0.5, 0.0, -0.2]],  # replaces it at 0.05 s; dives through the floor
    ])  # fmt: skip
    box = (np.array([-1.0, -1.0, 0.02]), np.array([1.0, 1.0, 1.0]))
    path = commanded_path(chunks, np.array([-0.01, 0.025, 0.05, 0.2]), box)
    assert np.isnan(path[0]).all()  # before the first chunk: nothing commanded
    assert path[1] == pytest.approx([0.025, 0.0, 0.1])  # the first chunk, interpolated
    assert path[2] == pytest.approx([0.5, 0.0, 0.1])  # the newest chunk wins from its first point on
    assert path[3] == pytest.approx([0.5, 0.0, 0.02])  # held at its last point, clipped to the floor


def test_jitter_in_place_commands_no_motion_into_the_boundary() -> None:
    """A policy settling on the cube: every chunk 5 mm to and fro around the same point, fast per step."""
    from dm1.evaluation.hand_over_dips import commanded_speed_before

    rng = np.random.default_rng(0)
    heads = np.array([0.5, 0.0, 0.1]) + rng.choice([-0.005, 0.005], size=(40, 3))
    chunks = _chunk_stream(heads)
    boundaries = chunks[:, 0, 0]
    step_speed = np.linalg.norm(np.diff(heads, axis=0), axis=1) / 0.05
    before = commanded_speed_before(chunks, boundaries)
    assert np.median(step_speed) > 0.15  # each step alone looks like 0.2 m/s of motion ...
    assert np.nanmedian(before) < 0.4 * np.median(step_speed)  # ... the commanded net motion far less
    steady = _chunk_stream(np.outer(np.arange(40) * 0.05 * 0.3, [1.0, 0.0, 0.0]))  # 0.3 m/s along x
    assert commanded_speed_before(steady, boundaries)[5:] == pytest.approx(0.3)


def test_a_controller_that_stops_at_every_hand_over_is_caught_with_the_commands_checked() -> None:
    """A steady stream of chunks at 0.2 m/s; the arm stands still for 40 ms around every boundary."""
    from dm1.evaluation.hand_over_dips import commanded_speed_before, net_commanded_speed

    t = np.arange(0.0, 3.0, 0.005)
    boundaries = np.arange(0.0, 3.0, 0.25)  # chunk-then-replan: one chunk every 0.25 s
    near = np.min(np.abs(t[:, None] - boundaries[None, :]), axis=1) < 0.02  # (N,) stop-and-go
    v = np.where(near, 0.0, 0.2)
    x = np.concatenate([[0.0], np.cumsum(v[:-1] * 0.005)])
    ee = np.stack([x, np.zeros_like(x), np.full_like(x, 0.1)], axis=1)
    heads = np.outer(boundaries * 0.2, [1.0, 0.0, 0.0]) + [0.0, 0.0, 0.1]
    chunks = _chunk_stream(heads, dt=0.25, points=2)  # each chunk runs to the next one's head
    ends = chunks[:, -1, :]
    commanded = np.fmin(
        net_commanded_speed(t, ee, ends, boundaries), commanded_speed_before(chunks, boundaries)
    )
    flags = boundary_dips(t, ee, boundaries, commanded, episode_starts=np.array([0.0]))
    counted = flags >= 0
    assert counted.sum() >= 8 and np.all(flags[counted] == 1)
    smooth = np.stack([np.arange(len(t)) * 0.005 * 0.2, np.zeros(len(t)), np.full(len(t), 0.1)], axis=1)
    assert not np.any(boundary_dips(t, smooth, boundaries, commanded, episode_starts=np.array([0.0])) == 1)


def test_hand_over_stops_dip_at_the_boundaries_and_not_halfway_between() -> None:
    """The control: a controller that stops 40 ms around every boundary dips at each boundary and at none of
    the midpoints; a slowdown of the arm's own between two boundaries dips only at the midpoint."""
    from dm1.evaluation.hand_over_dips import mid_period_dips

    t = np.arange(0.0, 3.0, 0.005)
    boundaries = np.arange(0.0, 3.0, 0.25)
    near = np.min(np.abs(t[:, None] - boundaries[None, :]), axis=1) < 0.02  # (N,) stop-and-go
    x = np.concatenate([[0.0], np.cumsum(np.where(near, 0.0, 0.2)[:-1] * 0.005)])
    ee = np.stack([x, np.zeros_like(x), np.zeros_like(x)], axis=1)
    cmd = np.full(len(boundaries), 0.2)
    starts = np.array([0.0])
    at_boundaries = boundary_dips(t, ee, boundaries, cmd, episode_starts=starts)
    between = mid_period_dips(t, ee, boundaries, cmd, episode_starts=starts)
    assert between.shape == (len(boundaries) - 1,)
    assert np.all(at_boundaries[at_boundaries >= 0] == 1) and (at_boundaries >= 0).sum() >= 8
    assert (between >= 0).sum() >= 8 and not np.any(between == 1)

    t, ee = _trace(stop_at=2.05)  # standing still over [2.05, 2.15): the midpoint 2.075, no boundary
    own = np.arange(1.2, 2.9, 0.25)  # ..., 1.95, 2.2, ...
    assert not np.any(boundary_dips(t, ee, own, np.full(len(own), 0.2)) == 1)
    mids = mid_period_dips(t, ee, own, np.full(len(own), 0.2))
    assert list(np.flatnonzero(mids == 1)) == [3]  # between 1.95 and 2.2


def test_midpoints_across_an_episode_start_or_a_long_gap_are_not_counted() -> None:
    from dm1.evaluation.hand_over_dips import mid_period_dips

    t, ee = _trace(None)
    boundaries = np.array([1.2, 1.25, 1.3, 1.35, 2.0, 2.05, 2.1, 2.15, 2.2, 2.25])
    flags = mid_period_dips(t, ee, boundaries, episode_starts=np.array([0.0, 2.08]))
    assert flags.shape == (9,)
    assert flags[3] == -1  # 1.35 -> 2.0: 13 times the median spacing (the arm held between episodes)
    assert flags[5] == -1  # 2.05 -> 2.1: an episode began at 2.08
    assert np.all(flags[[0, 1, 2, 4]] == 0)  # smooth motion, a full running window behind them
