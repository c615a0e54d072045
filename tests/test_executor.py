"""ChunkExecutor on a FakeBackend with a fake clock: hold, first-command seeding, refusals, overruns and
hand-overs. Faults and recovery: tests/test_executor_faults.py."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import EE_LIMITS_WIDEST, FakeClock
from dm1.control.backend import HOME_EE_POS, HOME_Q, FakeBackend
from dm1.control.executor import ACTIVE, FAULT, HOLDING, IDLE, ChunkExecutor
from dm1.control.limits import SafetyLimits
from dm1.control.schedule import TimedChunk


def ee_chunk(stamp: float, offset=(0.0, 0.0, 0.0), n: int = 10, grip: float = 0.0) -> TimedChunk:
    pos = HOME_EE_POS + np.asarray(offset) + np.outer(np.arange(n), [0.0, 0.001, 0.0])
    return TimedChunk(
        stamp=stamp, time_from_start=np.arange(n) * 0.05, positions=pos, gripper=np.full(n, grip)
    )


def make(mode: str = "cartesian", **limits) -> tuple[ChunkExecutor, FakeBackend, FakeClock]:
    backend, clock = FakeBackend(), FakeClock()
    return ChunkExecutor(backend, SafetyLimits(**limits), clock, mode=mode), backend, clock


def run(ex: ChunkExecutor, clock: FakeClock, seconds: float, dt: float = 0.01) -> None:
    for _ in range(round(seconds / dt)):
        clock.t += dt
        ex.tick()


def test_nan_chunk_causes_no_motion() -> None:
    ex, backend, clock = make()
    bad = ee_chunk(clock.t)
    bad.positions[3, 1] = np.nan
    assert ex.on_chunk(bad) == "rejected_nonfinite"
    run(ex, clock, 0.3)
    assert backend.motion_calls() == []
    assert ex.counters["rejected_nonfinite"] == 1
    assert "positions at index (3, 1)" in ex.status().reasons[0]


def test_first_command_after_activation_is_measured_state() -> None:
    ex, backend, clock = make()
    ex.on_chunk(ee_chunk(clock.t, offset=(0.0, 0.03, 0.0)))
    run(ex, clock, 0.01)
    name, (pos, _quat) = backend.motion_calls()[0]
    assert name == "ee"
    np.testing.assert_allclose(pos, HOME_EE_POS)
    assert ex.state == ACTIVE


def test_chunk_far_from_arm_is_ramped_not_jumped() -> None:
    ex, backend, clock = make()
    ex.on_chunk(ee_chunk(clock.t, offset=(0.0, 0.2, 0.0)))
    run(ex, clock, 0.05)
    ys = [args[0][1] for name, args in backend.motion_calls() if name == "ee"]
    assert np.max(np.diff(ys)) <= SafetyLimits().max_ee_speed * 0.01 + 1e-9
    assert ex.counters["clamped"] > 0


def test_stale_chunk_holds_robot() -> None:
    ex, backend, clock = make()
    ex.on_chunk(ee_chunk(clock.t, n=40))
    run(ex, clock, 0.05)
    assert ex.state == ACTIVE
    run(ex, clock, 0.1)  # no new chunk for > chunk_timeout_s
    assert ex.state == HOLDING
    assert ("hold", ()) in backend.calls
    n_moves, n_holds = len(backend.motion_calls()), backend.calls.count(("hold", ()))
    run(ex, clock, 0.3)
    assert len(backend.motion_calls()) == n_moves, "no motion commands while holding"
    assert backend.calls.count(("hold", ())) - n_holds == 30, "the backend brakes on every tick while holding"
    assert ex.counters["holds"] == 1
    assert "watchdog" in ex.status().reasons[0]


def test_a_lost_chunk_stream_holds_a_running_chunk_before_the_watchdog() -> None:
    ex, backend, clock = make(chunk_timeout_s=2.0)  # within the 5 s bound
    ex.on_chunk(ee_chunk(clock.t, n=40))  # 2 s of chunk, a 2 s watchdog: it would run on
    run(ex, clock, 0.05)
    assert ex.state == ACTIVE
    ex.stream_lost("deadline_missed", "no chunk within its QoS deadline")
    assert ex.state == HOLDING and ("hold", ()) in backend.calls
    assert ex.counters["deadline_missed"] == 1 and "QoS deadline" in ex.status().reasons[0]
    n_moves = len(backend.motion_calls())
    run(ex, clock, 0.3)
    assert len(backend.motion_calls()) == n_moves, "the dropped chunk is not resumed"
    ex.on_chunk(ee_chunk(clock.t))  # a fresh chunk starts again
    run(ex, clock, 0.02)
    assert ex.state == ACTIVE


def test_stream_events_while_idle_or_faulted_move_nothing() -> None:
    ex, backend, clock = make()
    ex.stream_lost("liveliness_lost", "publisher gone")
    assert ex.state == IDLE and backend.calls == [] and ex.counters["liveliness_lost"] == 1
    backend.fail_next = "ControlException: reflex"
    ex.on_chunk(ee_chunk(clock.t))
    run(ex, clock, 0.05)
    assert ex.state == FAULT
    ex.stream_lost("deadline_missed", "late")
    assert ex.state == FAULT and ex.fault is not None and "reflex" in ex.fault
    assert ex.counters["deadline_missed"] == 0, "a silent topic's misses are not counted while nothing runs"


def fast_chunk(stamp: float, start_y: float, n: int = 40) -> TimedChunk:
    """EE targets moving along +y at 0.3 m/s from HOME_EE_POS + (0, start_y, 0)."""
    pos = HOME_EE_POS + np.outer(start_y + 0.3 * 0.05 * np.arange(n), [0.0, 1.0, 0.0])
    return TimedChunk(stamp=stamp, time_from_start=np.arange(n) * 0.05, positions=pos, gripper=np.zeros(n))


def test_after_an_overrun_the_target_moves_on_as_after_two_periods_not_across_the_gap() -> None:
    backend, clock = FakeBackend(), FakeClock()
    ex = ChunkExecutor(backend, SafetyLimits(), clock, tick_period_s=0.01)
    t0 = clock.t
    for _ in range(10):  # 0.3 m/s along the chunk, a fresh chunk every 50 ms
        ex.on_chunk(fast_chunk(clock.t, 0.3 * (clock.t - t0)))
        run(ex, clock, 0.05)
    clock.t += 0.08  # the executor was held up for 80 ms: the chunk went on by 2.4 cm meanwhile
    assert ex.on_chunk(fast_chunk(clock.t, 0.3 * (clock.t - t0))) == "accepted"
    status = ex.tick()
    ys = [args[0][1] for name, args in backend.motion_calls() if name == "ee"]
    step = ys[-1] - ys[-2]
    assert status.state == ACTIVE and status.counters["tick_overruns"] == 1
    assert 0 < step <= 2 * 0.01 * SafetyLimits().max_ee_speed + 1e-9, f"a {1000 * step:.1f} mm step"


def test_a_control_tick_after_the_controller_stood_still_holds() -> None:
    backend, clock = FakeBackend(), FakeClock()
    ex = ChunkExecutor(backend, SafetyLimits(), clock, tick_period_s=0.01)
    ex.on_chunk(ee_chunk(clock.t, n=40))
    run(ex, clock, 0.05)
    assert ex.state == ACTIVE
    clock.t += 0.6  # over max_tick_gap_s (0.5 s): the controller itself was not running
    assert ex.on_chunk(ee_chunk(clock.t, n=40)) == "accepted"  # a fresh chunk came in: no watchdog
    n_moves = len(backend.motion_calls())
    status = ex.tick()
    assert status.state == HOLDING and "control loop overrun: 600 ms" in status.reasons[0], status.reasons
    assert len(backend.motion_calls()) == n_moves, "no target on the late tick"
    assert status.counters["tick_overruns"] == 1 and status.values()["max_tick_gap_ms"] == 600.0


def test_short_tick_gaps_are_counted_and_homes_are_not_overruns() -> None:
    backend, clock = FakeBackend(), FakeClock()
    ex = ChunkExecutor(backend, SafetyLimits(), clock, tick_period_s=0.01)
    ex.on_chunk(ee_chunk(clock.t, n=40))
    run(ex, clock, 0.05)
    clock.t += 0.03  # three periods: an overrun, far under max_tick_gap_s
    assert ex.tick().state == ACTIVE
    assert ex.counters["tick_overruns"] == 1
    ex.home()
    clock.t += 5.0  # the controller skips its ticks while homing
    ex.tick()
    assert ex.counters["tick_overruns"] == 1 and ex.status().values()["max_tick_gap_ms"] == 30.0


def test_reactivation_after_hold_starts_from_measured_state() -> None:
    ex, backend, clock = make()
    ex.on_chunk(ee_chunk(clock.t))
    run(ex, clock, 0.2)
    assert ex.state == HOLDING
    backend.ee_pos = HOME_EE_POS + np.array([0.0, 0.0, -0.01])  # arm settled somewhere else
    n = len(backend.motion_calls())
    ex.on_chunk(ee_chunk(clock.t, offset=(0.0, 0.02, 0.0)))
    run(ex, clock, 0.01)
    np.testing.assert_allclose(backend.motion_calls()[n][1][0], HOME_EE_POS + np.array([0.0, 0.0, -0.01]))


def test_late_chunk_points_dropped_and_repeated_late_chunks_fault() -> None:
    ex, backend, clock = make(max_consecutive_late=3)
    assert ex.on_chunk(ee_chunk(clock.t - 0.2)) == "accepted"  # 4 of 10 points already past
    assert ex.schedule.target_at(clock.t).position[1] == pytest.approx(0.004)
    for k in range(3):
        assert ex.on_chunk(ee_chunk(clock.t - 0.15 + k * 0.01, n=1)) == "late"
    assert ex.state == FAULT
    assert "over budget" in ex.fault


def test_latest_chunk_wins() -> None:
    ex, backend, clock = make()
    ex.on_chunk(ee_chunk(clock.t, n=40))
    run(ex, clock, 0.02)
    ex.on_chunk(ee_chunk(clock.t, offset=(0.0, 0.0, -0.01), n=40))
    assert ex.on_chunk(ee_chunk(clock.t - 0.01, offset=(0.0, 0.1, 0.0))) == "ignored_older"
    run(ex, clock, 0.3)
    assert backend.ee_pos[2] == pytest.approx(HOME_EE_POS[2] - 0.01, abs=1e-6)


def test_gripper_thresholds_with_hysteresis_and_acts_on_change_only() -> None:
    ex, backend, clock = make()
    for grip in (0.9, 0.55, 0.45, 0.3, 0.3):
        ex.on_chunk(ee_chunk(clock.t, grip=grip))
        run(ex, clock, 0.02)
    grips = [args[0] for name, args in backend.motion_calls() if name == "gripper"]
    assert grips == [True, False]


def test_wrong_kind_of_chunk_is_refused() -> None:
    ex, backend, clock = make(mode="joint")
    assert ex.on_chunk(ee_chunk(clock.t)) == "rejected_mode"
    joint = TimedChunk(clock.t, np.arange(5) * 0.05, np.tile(HOME_Q, (5, 1)), np.zeros(5), kind="joint")
    assert ex.on_chunk(joint) == "accepted"
    run(ex, clock, 0.05)
    assert backend.motion_calls()[0][0] == "joint"


def test_out_of_limit_joint_chunk_is_clipped_before_the_backend() -> None:
    ex, backend, clock = make(mode="joint", max_joint_step=1.0, velocity_scale=1.0, **EE_LIMITS_WIDEST)
    q = np.tile(HOME_Q, (20, 1))
    q[:, 0] = 3.5
    for _ in range(25):  # a policy streaming the same out-of-limit request at 20 Hz
        ex.on_chunk(TimedChunk(clock.t, np.arange(20) * 0.05, q, np.zeros(20), kind="joint"))
        run(ex, clock, 0.05)
    assert backend.q[0] == pytest.approx(SafetyLimits().q_upper[0])
    assert "joint_limit" in ex.last_clamp.reasons


def test_home_opens_a_closed_gripper_before_the_move() -> None:
    ex, backend, clock = make()
    ex.on_chunk(ee_chunk(clock.t, grip=1.0))
    run(ex, clock, 0.05)
    assert backend.gripper_closed  # the policy closed it (on the cube, or on nothing)
    ex.home()
    names = [(n, a) for n, a in backend.calls if n in ("gripper", "home")]
    assert names[-2:] == [("gripper", (False,)), ("home", (None,))], names
    assert not backend.gripper_closed and ex.state == IDLE
    n = len(backend.calls)
    ex.on_chunk(ee_chunk(clock.t, grip=0.0))  # an open command after homing: no redundant gripper call
    run(ex, clock, 0.05)
    assert all(name != "gripper" for name, _ in backend.calls[n:])


def test_home_can_keep_the_gripper_as_it_is() -> None:
    ex, backend, clock = make()
    ex.on_chunk(ee_chunk(clock.t, grip=1.0))
    run(ex, clock, 0.05)
    ex.home(open_gripper=False)
    assert backend.gripper_closed


def _moving_chunk(stamp: float, start: np.ndarray, speed_y: float, n: int = 10) -> TimedChunk:
    """n points 50 ms apart, at `start` at `stamp`, moving along y at speed_y m/s."""
    tfs = np.arange(n) * 0.05
    pos = start + np.outer(tfs, [0.0, speed_y, 0.0])
    return TimedChunk(stamp=stamp, time_from_start=tfs, positions=pos, gripper=np.zeros(n))


def test_a_target_jump_at_a_hand_over_keeps_the_arm_moving() -> None:
    """A chunk every 50 ms along one line at 0.2 m/s; one starts 1 cm further along. The speed limit ramps
    the target over a few ticks, and those ticks keep a feed-forward velocity along the motion instead of
    braking to a stop (arrive at rest)."""
    ex, backend, clock = make()
    t0 = clock.t
    for _ in range(4):  # steady streaming: replan every 50 ms along the same line
        ex.on_chunk(_moving_chunk(clock.t, HOME_EE_POS + [0.0, 0.2 * (clock.t - t0), 0.0], 0.2))
        run(ex, clock, 0.05)
    assert ex.state == ACTIVE and backend.velocities[-1] == pytest.approx([0.0, 0.2, 0.0])
    clamped, sent = ex.counters["clamped"], len(backend.velocities)
    ahead = HOME_EE_POS + [0.0, 0.2 * (clock.t - t0) + 0.01, 0.0]
    ex.on_chunk(_moving_chunk(clock.t, ahead, 0.2))
    run(ex, clock, 0.05)
    assert ex.counters["clamped"] - clamped >= 2
    for vel in backend.velocities[sent:]:
        assert vel is not None and vel[1] >= 0.2 - 1e-9, "the arm is never told to arrive at rest"
        assert np.linalg.norm(vel) <= SafetyLimits().max_ee_speed + 1e-9


def test_a_target_clipped_to_the_workspace_floor_keeps_moving_along_it() -> None:
    lim = SafetyLimits()
    floor = np.array([0.5, 0.0, lim.workspace_min[2]])
    backend, clock = FakeBackend(ee_pos=floor), FakeClock()
    ex = ChunkExecutor(backend, lim, clock)
    chunk = _moving_chunk(clock.t, floor - [0.0, 0.0, 0.01], 0.2)  # 1 cm below the floor, moving along y
    ex.on_chunk(chunk)
    run(ex, clock, 0.1)
    assert ex.counters["clamped"] > 0
    vel = backend.velocities[-1]
    assert vel is not None and vel[2] == 0.0 and vel[1] == pytest.approx(0.2)
    assert backend.ee_pos[2] == pytest.approx(lim.workspace_min[2])


def test_a_descent_onto_the_workspace_floor_is_sent_braking() -> None:
    """A chunk stream descending at 0.3 m/s to 2 cm below the floor: the targets and their feed-forward
    velocities slow down before the floor (sqrt(2 a d)) instead of arriving at full speed, and end on it."""
    lim = SafetyLimits()
    floor = lim.workspace_min[2]
    start = np.array([0.5, 0.0, floor + 0.06])
    backend, clock = FakeBackend(ee_pos=start), FakeClock()
    ex = ChunkExecutor(backend, lim, clock)
    t0 = clock.t
    for _ in range(12):  # 0.6 s of chunks, replanned every 50 ms along -z
        z = max(start[2] - 0.3 * (clock.t - t0), floor - 0.02)
        tfs = np.arange(4) * 0.05
        pos = np.tile([0.5, 0.0, 0.0], (4, 1))
        pos[:, 2] = np.maximum(z - 0.3 * tfs, floor - 0.02)
        ex.on_chunk(TimedChunk(stamp=clock.t, time_from_start=tfs, positions=pos, gripper=np.zeros(4)))
        run(ex, clock, 0.05)
    sent = [args[0] for name, args in backend.calls if name == "ee"]
    assert len(sent) == len(backend.velocities) > 50
    for pos, vel in zip(sent[1:], backend.velocities[1:], strict=True):
        room = np.sqrt(2 * lim.wall_decel * (pos[2] - floor))
        assert pos[2] >= floor and vel is not None and vel[2] >= -room - 1e-9
    assert max(-v[2] for v in backend.velocities[1:]) > 0.25  # it did descend fast, away from the floor
    assert sent[-1][2] == pytest.approx(floor, abs=1e-3)
    braking = [a[2] for a in backend.accelerations[1:] if a is not None and a[2] != 0.0]
    assert braking and set(braking) == {lim.wall_decel}  # the braking deceleration is fed forward, up only
    assert backend.accelerations[-1] == pytest.approx(np.zeros(3))  # on the floor: nothing left to brake


def test_the_status_reports_the_action_to_motion_lag_of_a_streamed_path() -> None:
    # FakeBackend reaches each target at once, so the pose read in a tick is the previous tick's target: the
    # measured path lags the commanded one by exactly one tick (10 ms), with no error left at that lag
    ex, backend, clock = make()
    for k in range(40):  # a fresh chunk every 50 ms for 2 s, moving 2 cm/s along y
        stamp = clock.t + 0.05
        offset = (0.0, 0.02 * 0.05 * k, 0.0)
        pos = HOME_EE_POS + np.asarray(offset) + np.outer(np.arange(10), [0.0, 0.001, 0.0])
        chunk = TimedChunk(
            stamp=stamp, time_from_start=np.arange(10) * 0.05, positions=pos, gripper=np.zeros(10)
        )
        assert ex.on_chunk(chunk) == "accepted"
        run(ex, clock, 0.05)
    extra = ex.status().extra
    assert extra["tracking_lag_ms"] == pytest.approx(10.0, abs=2.5) and extra["tracking_error_mm"] < 0.1
    run(ex, clock, 0.5)  # the watchdog holds: the last estimate stays in the status
    assert ex.state == HOLDING and ex.status().extra["tracking_lag_ms"] == extra["tracking_lag_ms"]


def test_timing_refusals_name_the_stamp_the_controller_clock_and_the_limit() -> None:
    ex, _backend, clock = make(max_consecutive_late=5)
    clock.t = 104.10
    assert ex.on_chunk(ee_chunk(1796174672.10)) == "rejected_future"
    reason = ex.status().reasons[0]
    assert "stamped 1796174672.10 s" in reason and "controller clock 104.10 s" in reason, reason
    assert "max_future_s 1 s" in reason and "use_sim_time" in reason, reason
    assert ex.on_chunk(ee_chunk(104.0, n=40)) == "accepted"
    assert ex.on_chunk(ee_chunk(103.5, n=40)) == "ignored_older"
    reason = ex.status().reasons[0]
    assert "stamped 103.50 s" in reason and "running chunk's stamp 104.00 s" in reason, reason
    assert ex.on_chunk(ee_chunk(104.0, n=1)) == "ignored_older"
    assert ex.on_chunk(ee_chunk(104.05, n=1)) == "late"
    reason = ex.status().reasons[0]
    assert "last action due at 104.05 s" in reason and "controller clock 104.10 s" in reason, reason
    assert "1 in a row" in reason and "max_consecutive_late 5" in reason, reason
    assert ex.counters["rejected_future"] == 1 and ex.counters["ignored_older"] == 2
    assert ex.counters["late"] == 1
