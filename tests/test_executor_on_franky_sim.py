"""`ChunkExecutor` driving a real franky-sim FR3 through `FrankyBackend`: pick-up after a stall, braking on
its own latch, recovery, overspeed under a push, and stopping at the workspace floor and a joint bound."""

from __future__ import annotations

import numpy as np
import pytest

franky = pytest.importorskip("franky")
from dm1.control.franky_backend import FrankyBackend  # noqa: E402
from franky_sim_arm import SimArm  # noqa: E402


def stream_chunks(ex, backend: FrankyBackend, arm: SimArm, chunk_positions, duration: float):
    """Every 50 ms a fresh 4-point chunk (20 Hz) whose targets are `chunk_positions(elapsed, tfs)` -> (4, D)
    (EE position, or q in joint mode; `elapsed` s since the first chunk, `tfs` the points' time_from_start);
    the executor ticks at 100 Hz for `duration` s of sim time. Returns (times, states), one per tick."""
    from dm1.control.schedule import TimedChunk

    t0 = next_chunk = arm.time
    tfs = np.arange(4) * 0.05  # (4,)
    times, states = [], []
    while (now := arm.time) - t0 < duration:
        if now >= next_chunk:
            pos = chunk_positions(now - t0, tfs)  # (4, D)
            ex.on_chunk(
                TimedChunk(stamp=now, time_from_start=tfs, positions=pos, gripper=np.zeros(4), kind=ex.mode)
            )
            next_chunk += 0.05
        ex.tick(now)
        times.append(now)
        states.append(backend.read_state())
        arm.wait_sim(0.01)
    return times, states


def _chunks_through_a_bound(
    ex, backend: FrankyBackend, arm: SimArm, axis: int, velocity: float, duration: float
):
    """`stream_chunks` moving coordinate `axis` of the start pose (EE position, or q in joint mode) at
    `velocity` (m/s or rad/s, signed) from the first chunk on. Returns the measured states, one per tick."""
    start = backend.read_state()
    p0 = (start.q if ex.mode == "joint" else start.ee_pos).copy()  # (D,)

    def along_axis(elapsed: float, tfs: np.ndarray) -> np.ndarray:
        pos = np.tile(p0, (len(tfs), 1))  # (4, D)
        pos[:, axis] = p0[axis] + velocity * (elapsed + tfs)
        return pos

    return stream_chunks(ex, backend, arm, along_axis, duration)[1]


@pytest.mark.slow
def test_after_the_executor_stalls_the_arm_picks_up_the_chunk_without_a_surge(sim_arm: SimArm) -> None:
    """Chunks move the EE at 0.3 m/s; then the executor misses its ticks for 300 ms (the path goes on 9 cm,
    the arm slows toward the standing target). On its next tick the target moves on as after two periods,
    not across the whole gap: measured 0.34 m/s at most after the stall (the limit is 0.35), against 0.52 m/s
    (1.5x the limit) when that tick could step the target up to `max_ee_step` toward the chunk."""
    from dm1.control.executor import ACTIVE, ChunkExecutor
    from dm1.control.limits import SafetyLimits

    lim = SafetyLimits()
    backend = FrankyBackend(sim_arm.host, gripper=False)
    try:
        ex = ChunkExecutor(backend, lim, lambda: sim_arm.time, mode="cartesian", tick_period_s=0.01)
        start = backend.read_state().ee_pos.copy()

        def path(elapsed: float, tfs: np.ndarray) -> np.ndarray:  # (4, 3) along +y at 0.3 m/s
            pos = np.tile(start, (len(tfs), 1))
            pos[:, 1] = start[1] + 0.3 * (elapsed + tfs)
            return pos

        t0 = sim_arm.time
        before = stream_chunks(ex, backend, sim_arm, path, 0.6)[1]
        assert np.linalg.norm(before[-1].ee_vel) > 0.2, "the arm should be moving before the stall"
        sim_arm.wait_sim(0.3)  # no ticks, no chunks
        offset = sim_arm.time - t0
        after = stream_chunks(ex, backend, sim_arm, lambda e, tfs: path(e + offset, tfs), 0.5)[1]
        speeds = [float(np.linalg.norm(s.ee_vel)) for s in after]
        # the stall was seen as one; a slow host's own late ticks (> 2 periods of sim time) may add more
        assert ex.counters["tick_overruns"] >= 1 and ex.loop.max_gap_s >= 0.3 and ex.state == ACTIVE
        assert max(speeds) < 1.15 * lim.max_ee_speed, f"surge after the stall: {max(speeds):.3f} m/s"
        assert speeds[-1] > 0.1, f"the arm did not pick the chunk up again: {speeds[-1]:.3f} m/s"
    finally:
        backend.close()


def _latch_over_budget(ex, backend: FrankyBackend, sim_arm: SimArm) -> np.ndarray:
    """Move the EE at 0.3 m/s along +y, then offer late chunks until the executor latches its own fault (over
    budget; the robot itself stays fine and streaming). Returns the EE position when the fault was latched."""
    from dm1.control.executor import FAULT
    from dm1.control.schedule import TimedChunk

    states = _chunks_through_a_bound(ex, backend, sim_arm, 1, 0.3, 0.6)  # well inside the box
    assert np.linalg.norm(states[-1].ee_vel) > 0.2, "the arm should be moving before the fault"
    p = states[-1].ee_pos
    newest = ex.schedule.chunk.stamp
    for k in range(ex.limits.max_consecutive_late):  # stamps newer than the running chunk's, 0.1 s late
        late = TimedChunk(
            stamp=newest + 0.001 * (k + 1),
            time_from_start=np.zeros(1),
            positions=p[None, :],
            gripper=np.zeros(1),
        )
        assert ex.on_chunk(late, now=newest + 0.1) == "late"
    assert ex.state == FAULT
    return p


@pytest.mark.slow
def test_a_fault_latched_by_the_executor_brakes_the_arm_without_springing_back(sim_arm: SimArm) -> None:
    """Chunks move the EE at 0.3 m/s; then late chunks trip the executor's own fault (over budget). The
    robot itself is fine and still streaming, so the executor must brake it on every tick: with one hold()
    only, the impedance target sprang the arm 7 mm back towards where the fault was latched."""
    from dm1.control.executor import ChunkExecutor
    from dm1.control.limits import SafetyLimits

    backend = FrankyBackend(sim_arm.host, gripper=False)
    try:
        ex = ChunkExecutor(backend, SafetyLimits(), lambda: sim_arm.time, mode="cartesian")
        _latch_over_budget(ex, backend, sim_arm)
        ys, speeds = [], []
        for _ in range(50):  # 0.5 s of 100 Hz ticks
            ex.tick(sim_arm.time)
            sim_arm.wait_sim(0.01)
            s = backend.read_state()
            ys.append(float(s.ee_pos[1]))
            speeds.append(float(np.abs(s.dq).max()))
        assert max(speeds[15:]) < 0.05, f"still moving 150 ms after the fault: {max(speeds[15:]):.3f} rad/s"
        sprung_back = max(ys) - ys[-1]
        assert sprung_back < 0.001, f"the arm sprang back {sprung_back * 1000:.1f} mm after it stopped"
        assert backend.read_state().fault is None, "the robot itself never faulted"
    finally:
        backend.close()


@pytest.mark.slow
def test_after_recovering_from_the_executors_own_fault_the_arm_homes_and_streams_again(
    sim_arm: SimArm,
) -> None:
    """The executor's own latch leaves the hold streaming; recover() must end that motion: left running, the
    next home move (a joint motion) failed with franky's "The type of motion cannot change during runtime"
    (found by `dm1 operator drill --drill late_chunks`, then `recover` and `home`, on the twin)."""
    from dm1.control.backend import HOME_Q
    from dm1.control.executor import ACTIVE, IDLE, ChunkExecutor
    from dm1.control.limits import SafetyLimits

    backend = FrankyBackend(sim_arm.host, gripper=False)
    try:
        ex = ChunkExecutor(backend, SafetyLimits(), lambda: sim_arm.time, mode="cartesian")
        _latch_over_budget(ex, backend, sim_arm)
        for _ in range(30):  # brake to rest (0.3 s of 100 Hz ticks)
            ex.tick(sim_arm.time)
            sim_arm.wait_sim(0.01)
        ex.recover()
        assert ex.state == IDLE and backend.read_state().fault is None
        ex.home(open_gripper=False)
        q = backend.read_state().q
        assert np.abs(q - HOME_Q).max() < 0.01, f"not home after recovery: {q.round(3)}"
        states = _chunks_through_a_bound(ex, backend, sim_arm, 1, 0.1, 0.3)
        assert ex.state == ACTIVE and np.linalg.norm(states[-1].ee_vel) > 0.05, "no streaming after home"
    finally:
        backend.close()


@pytest.mark.slow
def test_a_push_that_makes_the_arm_overspeed_latches_a_fault_and_the_arm_comes_to_rest(
    sim_arm: SimArm,
) -> None:
    """The executor streams chunks that keep the EE still; a 120 N push on the hand for 80 ms throws it at
    ~1.8 m/s, far above anything the targets may command (0.35 m/s). The overspeed latch faults the
    executor (the robot itself reports nothing), which brakes the arm and holds it."""
    from dm1.control.executor import FAULT, ChunkExecutor
    from dm1.control.limits import SafetyLimits

    lim = SafetyLimits()
    backend = FrankyBackend(sim_arm.host, gripper=False)
    try:
        ex = ChunkExecutor(backend, lim, lambda: sim_arm.time, mode="cartesian")
        _chunks_through_a_bound(ex, backend, sim_arm, 1, 0.0, 0.5)  # streaming, standing still
        assert ex.state != FAULT
        t0, peak = sim_arm.time, 0.0
        sim_arm.push_hand([0.0, 120.0, 0.0])
        try:
            while sim_arm.time - t0 < 0.08:
                ex.tick(sim_arm.time)
                peak = max(peak, float(np.linalg.norm(backend.read_state().ee_vel)))
                sim_arm.wait_sim(0.005)
        finally:
            sim_arm.push_hand([0.0, 0.0, 0.0])
        limit = lim.overspeed_factor * lim.max_ee_speed
        assert peak > limit, f"the push did not make the arm overspeed: {peak:.3f} m/s"
        assert ex.state == FAULT and ex.fault.startswith("overspeed: measured EE speed"), ex.fault
        # 100 Hz ticks: braking, then holding. From ~2 rad/s the hold's 0.2 s brake ends with the arm still
        # moving: it swings about the latched pose and settled 0.6-0.7 s after such pushes (probe runs).
        speeds = []
        for _ in range(120):
            ex.tick(sim_arm.time)
            sim_arm.wait_sim(0.01)
            speeds.append(float(np.abs(backend.read_state().dq).max()))
        assert max(speeds[-20:]) < 0.05, f"still moving 1 s after the push: {max(speeds[-20:]):.3f} rad/s"
        assert ex.state == FAULT and backend.read_state().fault is None, (
            "latched by the executor, not the robot"
        )
    finally:
        backend.close()


@pytest.mark.slow
def test_a_full_speed_descent_stops_close_to_the_workspace_floor(sim_arm: SimArm) -> None:
    """Chunks every 50 ms descend at 0.35 m/s (the speed limit) from home through the workspace floor; the
    executor clips them to the box. The impedance tracker follows its target with a lag, so a target stream
    that arrives on the floor at full speed carried the arm 12-13 mm below it; braking into the wall
    (SafetyLimits.wall_decel) left 6 mm, and feeding the braking deceleration forward removes the rest."""
    from dm1.control.executor import ChunkExecutor
    from dm1.control.limits import SafetyLimits

    lim = SafetyLimits()
    floor = lim.workspace_min[2]
    backend = FrankyBackend(sim_arm.host, gripper=False)
    try:
        ex = ChunkExecutor(backend, lim, lambda: sim_arm.time, mode="cartesian")
        states = _chunks_through_a_bound(ex, backend, sim_arm, 2, -lim.max_ee_speed, 2.5)
        zs = [s.ee_pos[2] for s in states]
        assert max(float(np.linalg.norm(s.ee_vel)) for s in states) > 0.3, "the arm never reached full speed"
        assert ex.counters["clamped"] > 0
        overshoot = floor - min(zs)
        assert overshoot < 0.003, f"the arm went {overshoot * 1000:.1f} mm below the workspace floor"
        assert abs(zs[-1] - floor) < 0.004, f"settled {(zs[-1] - floor) * 1000:.1f} mm from the floor"
        assert backend.read_state().fault is None
    finally:
        backend.close()


@pytest.mark.slow
def test_a_full_speed_joint_move_into_a_joint_bound_stops_inside_the_margin(sim_arm: SimArm) -> None:
    """Joint chunks drive the base joint at the velocity limit (0.79 rad/s) through its safety bound (the FR3
    limit minus `joint_margin`, 0.1 rad). The target stream slows on the FR3's braking curve near the bound
    (0.25 rad/s there at `velocity_scale` 0.3) and is clipped at it; with a velocity feed-forward and the flat
    cap the tracker's lag once carried the joint 30 mrad past it. The margin must absorb any overshoot, far
    from the hardware limit, where a real FR3 would stop with a reflex."""
    from dm1.control.executor import ChunkExecutor
    from dm1.control.limits import FR3_REACH_MAX, FR3_REACH_MIN, SafetyLimits

    # the EE box would stop joint 1 first, and the hand's turn limit (0.5 rad/s) would slow it
    wide = {"workspace_min": FR3_REACH_MIN, "workspace_max": FR3_REACH_MAX, "max_ee_angular_speed": 2.5}
    lim = SafetyLimits(**wide)
    bound = lim.q_max[0] - lim.joint_margin
    speed = lim.dq_max[0] * lim.velocity_scale
    backend = FrankyBackend(sim_arm.host, gripper=False, mode="joint")
    try:
        ex = ChunkExecutor(backend, lim, lambda: sim_arm.time, mode="joint")
        # + 2 s: the hand's speed limit and the FR3's braking curve near the bound slow the last stretch
        duration = (bound - backend.read_state().q[0]) / speed + 2.0
        q1 = [s.q[0] for s in _chunks_through_a_bound(ex, backend, sim_arm, 0, speed, duration)]
        assert ex.counters["clamped"] > 0 and max(q1) > bound - 0.01, "the joint never reached its bound"
        past = max(q1) - bound
        assert past < 0.5 * lim.joint_margin, f"joint 1 went {past * 1000:.0f} mrad past its safety bound"
        assert abs(q1[-1] - bound) < 0.01 and backend.read_state().fault is None
    finally:
        backend.close()
