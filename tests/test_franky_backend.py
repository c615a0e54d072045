"""FrankyBackend against a real franky-sim (MuJoCo) server: tracking, hold, gripper, reflex latch, faults,
homing. `ChunkExecutor` driving it: tests/test_executor_on_franky_sim.py."""

from __future__ import annotations

import logging
import os
import threading
import time

import numpy as np
import pytest
from conftest import thread_scheduling, wait_for

franky = pytest.importorskip("franky")
from dm1.control.backend import RobotBackend, RobotFault  # noqa: E402
from dm1.control.franky_backend import FrankyBackend  # noqa: E402
from dm1.scheduling import ThreadScheduling  # noqa: E402
from franky_sim.mujoco_simulator import MujocoSimulator  # noqa: E402
from franky_sim.simulation_server import SimulationServer  # noqa: E402
from franky_sim_arm import SimArm  # noqa: E402


def _stream(backend: FrankyBackend, arm: SimArm, path, duration: float, rate: float = 100.0) -> list[float]:
    """Send path(t) (sim time) at `rate`, with velocity feed-forward; returns tracking errors (m)."""
    t0, errs = arm.time, []
    while (t := arm.time - t0) < duration:
        backend.send_ee_target(path(t), np.array([1.0, 0.0, 0.0, 0.0]), (path(t + 0.01) - path(t)) / 0.01)
        errs.append(float(np.linalg.norm(backend.read_state().ee_pos - path(t))))
        arm.wait_sim(1.0 / rate)
    return errs


def _recover_and_reach(backend: FrankyBackend, arm: SimArm, target: np.ndarray, quat: np.ndarray) -> None:
    """`recover()` clears the fault, and a target sent then is reached within 5 mm in 1 s of sim time."""
    backend.recover()
    assert backend.read_state().fault is None
    backend.send_ee_target(target, quat)
    arm.wait_sim(1.0)
    assert np.linalg.norm(backend.read_state().ee_pos - target) < 0.005


@pytest.mark.slow
def test_streamed_targets_track_without_stopping(sim_arm: SimArm) -> None:
    backend = FrankyBackend(sim_arm.host, gripper=False)
    try:
        assert isinstance(backend, RobotBackend)
        p0 = backend.read_state().ee_pos

        def path(t: float) -> np.ndarray:
            # 20 Hz waypoints (a policy chunk), linearly interpolated at 100 Hz, 5 cm/s along y
            grid = np.floor(t / 0.05) * 0.05
            f = (t - grid) / 0.05
            a, b = min(grid, 1.0), min(grid + 0.05, 1.0)
            return p0 + np.array([0.0, 0.05, 0.0]) * ((1 - f) * a + f * b)

        _stream(backend, sim_arm, path, 1.5)
        final = path(2.0)
        sim_arm.wait_sim(0.5)
        steady_err = np.linalg.norm(backend.read_state().ee_pos - final)
        assert steady_err <= 0.005, f"steady-state error {steady_err * 1000:.1f} mm"
        assert backend.read_state().fault is None
    finally:
        backend.close()


@pytest.mark.slow
def test_hold_brings_arm_to_rest_within_150ms_and_it_stays_there(sim_arm: SimArm) -> None:
    backend = FrankyBackend(sim_arm.host, gripper=False)
    try:
        p0 = backend.read_state().ee_pos
        speed = 0.3  # m/s, the teleop/expert top speed
        _stream(backend, sim_arm, lambda t: p0 + np.array([0.0, speed * t, 0.0]), 0.5)
        moving = backend.read_state()
        assert np.linalg.norm(moving.ee_vel) > 0.2, "arm should be moving fast before hold"
        for _ in range(15):  # the executor calls hold() on every 100 Hz tick while holding
            backend.hold()
            sim_arm.wait_sim(0.01)
        state = backend.read_state()
        assert np.abs(state.dq).max() < 0.05, f"still moving after 150 ms: dq={state.dq}"
        assert np.linalg.norm(state.ee_pos - moving.ee_pos) < 0.03
        peak, y_rest = 0.0, state.ee_pos[1]  # no rebound: it stays at rest for the next 0.45 s
        for _ in range(45):
            backend.hold()
            sim_arm.wait_sim(0.01)
            now = backend.read_state()
            peak = max(peak, float(np.abs(now.dq).max()))
            assert now.ee_pos[1] > y_rest - 0.001, "the hold pulled the arm back along its path"
        assert peak < 0.05, f"rebound after the hold: max |dq| {peak:.3f} rad/s"
    finally:
        backend.close()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["cartesian", "joint"])
def test_the_backend_refuses_a_non_finite_command_and_the_arm_stays_put(sim_arm: SimArm, mode: str) -> None:
    """Reliability row 3, the hardware layer: a NaN or inf target (or feed-forward) is refused by the backend
    itself, naming the array and index, whatever the layers above did; the arm does not move."""
    backend = FrankyBackend(sim_arm.host, gripper=False, mode=mode)
    try:
        start = backend.read_state()
        bad_pos, bad_q = start.ee_pos + [np.nan, 0.0, 0.0], start.q + [0, 0, np.inf, 0, 0, 0, 0]
        with pytest.raises(
            ValueError, match=r"refused a command with a non-finite value in (pos|q) at index"
        ):
            if mode == "cartesian":
                backend.send_ee_target(bad_pos, start.ee_quat_xyzw)
            else:
                backend.send_joint_target(bad_q)
        with pytest.raises(ValueError, match=r"non-finite value in (lin_vel|dq) at index \(1,\)"):
            if mode == "cartesian":
                backend.send_ee_target(start.ee_pos, start.ee_quat_xyzw, np.array([0.0, np.nan, 0.0]))
            else:
                backend.send_joint_target(start.q, np.array([0.0, np.nan, 0, 0, 0, 0, 0]))
        sim_arm.wait_sim(0.2)
        now = backend.read_state()
        assert np.abs(now.q - start.q).max() < 1e-3 and np.abs(now.dq).max() < 0.01
        assert now.fault is None
    finally:
        backend.close()


@pytest.mark.slow
def test_gripper_closes_and_opens_on_change_only(sim_arm: SimArm) -> None:
    backend = FrankyBackend(sim_arm.host)
    try:
        backend.set_gripper(True)
        wait_for(lambda: backend.read_state().gripper_width < 0.01, 30, what="gripper closed")
        assert backend.read_state().gripper_closed_cmd
        backend.set_gripper(False)
        wait_for(lambda: backend.read_state().gripper_width > 0.07, 30, what="gripper open")
    finally:
        backend.close()


@pytest.mark.slow
def test_home_opens_a_gripper_closed_on_nothing(sim_arm: SimArm) -> None:
    from dm1.control.executor import ChunkExecutor
    from dm1.control.homing import GRIPPER_OPEN_M
    from dm1.control.limits import SafetyLimits

    backend = FrankyBackend(sim_arm.host, relative_dynamics_factor=0.5)
    try:
        backend.set_gripper(True)
        wait_for(lambda: backend.read_state().gripper_width < 0.01, 30, what="gripper closed")
        ChunkExecutor(backend, SafetyLimits(), time.monotonic).home(gripper_timeout_s=30.0)
        assert backend.read_state().gripper_width >= GRIPPER_OPEN_M  # open when home returns
        assert not backend.read_state().gripper_closed_cmd
    finally:
        backend.close()


@pytest.mark.slow
def test_reflex_latches_fault_until_recover(sim_arm: SimArm) -> None:
    backend = FrankyBackend(sim_arm.host, gripper=False)
    try:
        start = backend.read_state()
        backend.send_ee_target(start.ee_pos, start.ee_quat_xyzw)
        sim_arm.wait_sim(0.1)
        sim_arm.inject_reflex()
        fault = wait_for(lambda: backend.read_state().fault, 30, what="fault latched")
        assert "reflex" in fault.lower()
        with pytest.raises(RobotFault):
            backend.send_ee_target(start.ee_pos + np.array([0.0, 0.05, 0.0]), start.ee_quat_xyzw)
        with pytest.raises(RobotFault):
            backend.home()
        sim_arm.wait_sim(0.3)
        assert np.linalg.norm(backend.read_state().ee_pos - start.ee_pos) < 0.005, "moved while faulted"
        _recover_and_reach(backend, sim_arm, start.ee_pos + np.array([0.0, 0.03, 0.0]), start.ee_quat_xyzw)
    finally:
        backend.close()


def test_the_user_stop_latches_a_fault_and_recovery_waits_for_its_release(sim_arm: SimArm) -> None:
    """Reliability row 24 on franky-sim, through libfranka's own answers: pressed mid-motion, the motion is
    aborted ("User Stop pressed!"); recovery fails while it is pressed; after the release nothing moves until
    the recovery, then the arm streams again."""
    backend = FrankyBackend(sim_arm.host, gripper=False)
    try:
        start = backend.read_state()
        backend.send_ee_target(start.ee_pos, start.ee_quat_xyzw)
        sim_arm.wait_sim(0.1)
        sim_arm.user_stop.pressed = True
        fault = wait_for(lambda: backend.read_state().fault, 30, what="fault latched")
        assert "User Stop pressed" in fault, fault
        with pytest.raises(RobotFault, match="recover failed: .*User Stop pressed"):
            backend.recover()
        assert backend.read_state().fault == fault  # still latched
        sim_arm.user_stop.pressed = False
        with pytest.raises(RobotFault):  # released, not yet recovered
            backend.send_ee_target(start.ee_pos + np.array([0.0, 0.03, 0.0]), start.ee_quat_xyzw)
        sim_arm.wait_sim(0.3)
        assert np.linalg.norm(backend.read_state().ee_pos - start.ee_pos) < 0.005, "moved before recovery"
        _recover_and_reach(backend, sim_arm, start.ee_pos + np.array([0.0, 0.03, 0.0]), start.ee_quat_xyzw)
    finally:
        backend.close()


def test_a_motion_the_robot_refuses_is_latched_as_a_fault_not_raised_from_a_state_read(
    sim_arm: SimArm,
) -> None:
    """The user stop pressed while no motion runs: the next motion is rejected (libfranka's CommandException,
    surfaced by franky at the next poll). It used to escape `read_state` (the controller's joint-state timer:
    the node died); it is latched like a reflex, and the arm stays still."""
    backend = FrankyBackend(sim_arm.host, gripper=False)
    try:
        start = backend.read_state()
        sim_arm.user_stop.pressed = True
        backend.send_ee_target(start.ee_pos + np.array([0.0, 0.03, 0.0]), start.ee_quat_xyzw)
        fault = wait_for(lambda: backend.read_state().fault, 30, what="fault latched")
        assert fault.startswith("CommandException: libfranka: Move command rejected"), fault
        sim_arm.wait_sim(0.3)
        assert np.linalg.norm(backend.read_state().ee_pos - start.ee_pos) < 0.002
        with pytest.raises(RobotFault, match="Move command rejected"):
            backend.home()
        sim_arm.user_stop.pressed = False
        backend.recover()
        backend.home()
        assert backend.read_state().fault is None
    finally:
        backend.close()


@pytest.mark.slow
def test_a_lost_link_is_latched_recovery_waits_for_the_robot_then_connects_again(sim_arm: SimArm) -> None:
    """The simulated robot's server goes away while a motion streams (a pulled cable): libfranka's timeout is
    latched as a fault by the next state read (not raised into the caller, whose timer would end the node),
    `recover()` raises RobotFault naming it while the robot is gone, and once a robot answers at that address
    again it connects anew (libfranka's connection does not survive the timeout), gripper included, and the
    arm streams again."""
    backend = FrankyBackend(sim_arm.host)
    server = None
    try:
        start = backend.read_state()
        backend.send_ee_target(start.ee_pos, start.ee_quat_xyzw)
        sim_arm.wait_sim(0.1)
        sim_arm.server.cleanup()
        fault = wait_for(lambda: backend.read_state().fault, 30, what="the lost link latched as a fault")
        assert "NetworkException" in fault, fault
        first, again = backend.read_state(), backend.read_state()  # the last measured state, fault attached
        assert again.fault == fault and again.stamp == first.stamp and np.allclose(again.q, first.q)
        with pytest.raises(RobotFault, match="recover failed: NetworkException"):
            backend.recover()
        assert backend.read_state().fault is not None, "the fault must stay latched"
        revived = MujocoSimulator(enable_visualization=False)  # the robot is back (a fresh one: at home)
        revived.init()
        revived.add_robot()
        server = SimulationServer(revived, hostname_candidates=[sim_arm.host])
        server.init()
        server.run_async(realtime=True)
        backend.recover()
        state = backend.read_state()
        assert state.fault is None and state.stamp != again.stamp
        target = state.ee_pos + np.array([0.0, 0.03, 0.0])
        wait_for(
            lambda: (
                backend.send_ee_target(target, start.ee_quat_xyzw)
                or np.linalg.norm(backend.read_state().ee_pos - target) < 0.005
            ),
            30,
            interval=0.01,
            what="the arm streaming again after the new connection",
        )
        wait_for(lambda: backend._gripper.error is None, 30, what="the gripper connected again")
    finally:
        backend.close()
        if server is not None:
            server.cleanup()


@pytest.mark.slow
def test_home_moves_to_joint_target(sim_arm: SimArm) -> None:
    backend = FrankyBackend(sim_arm.host, gripper=False, relative_dynamics_factor=0.5)
    try:
        q_goal = np.array([0.2, 0.0, 0.0, -1.8, 0.0, 1.8, 0.785])
        t0 = time.monotonic()
        backend.home(q_goal)
        assert time.monotonic() - t0 < 60
        assert np.abs(backend.read_state().q - q_goal).max() < 0.01
    finally:
        backend.close()


@pytest.mark.slow
def test_home_speed_follows_the_relative_dynamics_factor_once(sim_arm: SimArm) -> None:
    """The factor scales franky's joint velocity limits (FR3 joint 1: up to 2.62 rad/s) for home moves.
    It was set on the robot and passed to the move as well; franky multiplies the two, so 0.1 gave 0.01 and
    the default 0.2 gave 0.04 (a 0.3 rad move at 0.05 crawled at 0.0055 rad/s)."""
    backend = FrankyBackend(sim_arm.host, gripper=False, relative_dynamics_factor=0.1)
    peak = [0.0]
    sim_arm.post_step.append(lambda arm: peak.__setitem__(0, max(peak[0], arm.joint_speed())))
    try:
        q_goal = backend.read_state().q + np.array([0.3, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
        backend.home(q_goal)
        assert np.abs(backend.read_state().q - q_goal).max() < 0.01
        assert 0.5 * 0.1 * 2.0 < peak[0] < 1.1 * 0.1 * 2.62, f"peak joint speed {peak[0]:.3f} rad/s"
    finally:
        backend.close()


@pytest.mark.slow
def test_a_home_move_past_its_time_limit_is_stopped_and_latched_until_recovery(sim_arm: SimArm) -> None:
    """A home move that does not finish in time (in the field: a simulator or robot that stopped answering,
    seen once in 74 teleop episodes as a home service that never replied) is stopped where it is and latched
    as a fault instead of blocking its caller forever; recover() clears it and homing works again."""
    backend = FrankyBackend(sim_arm.host, gripper=False, relative_dynamics_factor=0.5)
    try:
        q_goal = backend.read_state().q + np.array([0.4, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])  # ~1 s move
        with pytest.raises(RobotFault, match="did not finish within 0.05 s"):
            backend.home(q_goal, move_timeout_s=0.05)
        assert "did not finish" in (backend.read_state().fault or "")
        sim_arm.wait_sim(0.5)
        q_stopped = backend.read_state().q
        sim_arm.wait_sim(0.5)
        assert np.abs(backend.read_state().q - q_stopped).max() < 2e-3, "still moving after the stop"
        assert np.abs(q_stopped - q_goal).max() > 0.05, "the move was not cut short"
        with pytest.raises(RobotFault):
            backend.home(q_goal)  # refused while latched
        backend.recover()
        backend.home(q_goal)
        assert np.abs(backend.read_state().q - q_goal).max() < 0.01
    finally:
        backend.close()


@pytest.mark.slow
def test_close_stops_a_home_move_that_another_thread_waits_on(sim_arm: SimArm) -> None:
    """The controller node shutting down mid-home-move closes the backend while its service thread waits in
    `home()`: the arm stops where it is and that thread is freed. (Left running, the move's control thread
    outlived the process's Python code and aborted it at exit: std::terminate, exit -6.)"""
    backend = FrankyBackend(sim_arm.host, gripper=False, relative_dynamics_factor=0.1)
    q_goal = backend.read_state().q + np.array([0.6, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])  # several s at 0.1
    outcome: list[str] = []

    def go_home() -> None:
        try:
            backend.home(q_goal)
            outcome.append("finished")
        except RobotFault as exc:
            outcome.append(f"fault: {exc}")

    waiter = threading.Thread(target=go_home, daemon=True)
    waiter.start()
    wait_for(lambda: np.abs(backend.read_state().dq).max() > 0.02, 30, what="the home move under way")
    backend.close()
    waiter.join(timeout=10.0)
    assert not waiter.is_alive(), "home() still waiting after close()"
    assert outcome and outcome[0].startswith("fault"), outcome
    sim_arm.wait_sim(0.5)
    q_stopped = backend.read_state().q
    sim_arm.wait_sim(0.5)
    assert np.abs(backend.read_state().q - q_stopped).max() < 2e-3, "still moving after close()"
    assert np.abs(q_stopped - q_goal).max() > 0.05, "the move was not cut short"


@pytest.mark.slow
def test_closing_after_the_link_was_lost_says_so_once_and_stops_the_gripper_without_raising(
    sim_arm: SimArm, caplog: pytest.LogCaptureFixture
) -> None:
    """The twin killed while the arm streams, then the controller stopped: franky's stop of the tracker
    (`join_motion`) raised libfranka's NetworkException out of `close()`, which left the gripper worker
    running and the node crashing at exit (a traceback, exit 1, or std::terminate, -6). Now the lost link is
    latched and named in one line, and everything is stopped."""
    backend = FrankyBackend(sim_arm.host)
    start = backend.read_state()
    backend.send_ee_target(start.ee_pos, start.ee_quat_xyzw)
    sim_arm.wait_sim(0.1)
    sim_arm.server.cleanup()
    with caplog.at_level(logging.INFO, logger="dm1.control.franky_backend"):
        backend.close()
    assert "NetworkException" in (backend.fault or ""), backend.fault
    assert not backend._gripper._thread.is_alive(), "the gripper worker still runs after close()"
    lost = [r.getMessage() for r in caplog.records if "link" in r.getMessage()]
    assert len(lost) == 1 and "NetworkException" in lost[0], lost
    backend.close()  # a second close (the node's cleanup after a failed start) is quiet too


def test_bad_backend_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="mode"):
        FrankyBackend("127.0.0.1", mode="velocity")
    with pytest.raises(ValueError, match="relative_dynamics_factor"):
        FrankyBackend("127.0.0.1", relative_dynamics_factor=0.0)
    with pytest.raises(ValueError, match="translational_damping"):
        FrankyBackend("127.0.0.1", translational_damping=-1.0)


@pytest.mark.slow
def test_joint_mode_tracks_streamed_joint_targets(sim_arm: SimArm) -> None:
    backend = FrankyBackend(sim_arm.host, gripper=False, mode="joint")
    try:
        q0 = backend.read_state().q
        goal = q0 + np.array([0.15, 0.0, 0.0, -0.1, 0.0, 0.1, 0.0])
        t0 = sim_arm.time
        while (t := sim_arm.time - t0) < 1.5:
            a = min(t / 1.0, 1.0)
            backend.send_joint_target(q0 + a * (goal - q0), (goal - q0) if a < 1.0 else np.zeros(7))
            sim_arm.wait_sim(0.01)
        sim_arm.wait_sim(0.3)
        err = np.abs(backend.read_state().q - goal).max()
        assert err < 0.01, f"joint steady-state error {err:.4f} rad"
        with pytest.raises(ValueError, match="mode is 'joint'"):
            backend.send_ee_target(np.zeros(3), np.array([1.0, 0.0, 0.0, 0.0]))
    finally:
        backend.close()


@pytest.mark.slow
def test_only_frankys_control_thread_keeps_the_real_time_priority(sim_arm: SimArm) -> None:
    """libfranka raises the thread that connects to SCHED_FIFO 99 (as root, even with RealtimeConfig.Ignore);
    before this was undone every later callback of a ROS executor, and every process a test runner started
    afterwards, ran at real-time priority."""
    own = ThreadScheduling.current()
    backend = FrankyBackend(sim_arm.host, gripper=False)
    try:
        assert ThreadScheduling.current() == own  # the caller got its scheduling back
        before = set(thread_scheduling())
        p0 = backend.read_state().ee_pos
        _stream(backend, sim_arm, lambda t: p0 + np.array([0.0, 0.02 * t, 0.0]), 0.3)
        assert ThreadScheduling.current() == own
        rt = backend.control_scheduling
        new = {tid: s for tid, s in thread_scheduling().items() if tid not in before}
        assert (rt.policy, rt.priority) in new.values(), (rt, new)  # the tracker's control thread
        if os.geteuid() == 0:  # libfranka may raise a thread only where the kernel lets it
            assert rt == ThreadScheduling(os.SCHED_FIFO, os.sched_get_priority_max(os.SCHED_FIFO))
        backend.home()
        assert ThreadScheduling.current() == own
    finally:
        backend.close()
