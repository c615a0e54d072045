"""The FCI link check (libfranka's command success rate): before a run, and watched while streaming.

Fake-clock tests on `FakeBackend` drive the failure paths (franky-sim reports a constant success rate of 1.0,
so it cannot lose commands); the franky-sim test runs the same check through franky's real protocol.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FakeClock
from dm1.control.backend import HOME_EE_POS, FakeBackend
from dm1.control.executor import ChunkExecutor
from dm1.control.limits import SafetyLimits
from dm1.control.link_check import CommandLinkMonitor, require_healthy_link, run_comm_check
from dm1.control.schedule import TimedChunk


def _check(backend: FakeBackend, **kwargs):
    clock = FakeClock()
    return run_comm_check(backend, seconds=1.0, rate_hz=100.0, clock=clock, sleep=clock.sleep, **kwargs)


def test_a_healthy_link_passes_holding_the_arm_where_it_stood() -> None:
    backend = FakeBackend()
    result = _check(backend)
    assert result.passed, result.problems
    assert 70 <= result.samples <= 81  # 100 Hz over the 0.8 s after the 0.2 s warm-up
    assert result.min_success_rate == result.mean_success_rate == 1.0
    targets = [args for name, args in backend.calls if name == "ee"]
    assert len(targets) > 90 and all(np.allclose(pos, HOME_EE_POS) for pos, _ in targets)
    assert backend.calls[-1][0] == "hold", "the arm is held after the check, as by the watchdog"


def test_a_link_that_loses_commands_fails_the_check_naming_the_rate() -> None:
    backend = FakeBackend()
    backend.command_success_rate = 0.82
    result = _check(backend)
    assert not result.passed
    assert result.min_success_rate == pytest.approx(0.82)
    assert "command success rate fell to 0.820 (expected >= 0.95)" in result.summary()


def test_a_fault_during_the_check_is_reported_and_the_robot_already_faulted_is_not_moved() -> None:
    backend = FakeBackend()
    backend.fail_next = "cartesian_reflex"
    result = _check(backend)
    assert not result.passed and "fault during the check: cartesian_reflex" in result.problems[0]
    faulted = FakeBackend()
    faulted.fault = "joint_velocity_violation"
    result = _check(faulted)
    assert not result.passed and "the robot is faulted: joint_velocity_violation" in result.problems[0]
    assert faulted.motion_calls() == [], "a faulted robot is not commanded"


def test_an_arm_that_drifts_while_held_fails_the_check() -> None:
    class SaggingBackend(FakeBackend):
        def read_state(self):
            self.ee_pos = self.ee_pos + np.array([0.0, 0.0, -0.0002])  # 0.2 mm per sample: ~2 cm per second
            return super().read_state()

    backend = SaggingBackend()
    backend.send_ee_target = lambda pos, quat, lin_vel=None, lin_acc=None: None  # the target does not hold it
    result = _check(backend)
    assert not result.passed and "the arm drifted" in result.summary()


def test_a_failed_start_check_closes_the_robot_and_says_why() -> None:
    backend = FakeBackend()
    backend.command_success_rate = 0.5
    with pytest.raises(
        RuntimeError, match=r"communication check FAILED: command success rate fell to 0\.500"
    ):
        require_healthy_link(backend, "cartesian", 0.3, 0.95)
    assert backend.calls[-1][0] == "close"


def test_bad_check_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="mode"):
        run_comm_check(FakeBackend(), mode="torque")
    with pytest.raises(ValueError, match="seconds > warmup_s"):
        run_comm_check(FakeBackend(), seconds=0.1, warmup_s=0.2)


def test_the_controller_status_warns_when_commands_are_lost_while_streaming_only() -> None:
    backend = FakeBackend()
    now = [0.0]
    ex = ChunkExecutor(backend, SafetyLimits(), lambda: now[0], tick_period_s=0.01)
    backend.command_success_rate = 0.0  # libfranka reports 0 while no control loop runs: not a lost command
    for _ in range(5):
        ex.tick()
        now[0] += 0.01
    assert ex.status().level == "ok" and "command_success_rate" not in ex.status().values()
    points = np.tile(HOME_EE_POS, (10, 1)) + np.linspace(0, 0.01, 10)[:, None] * [1.0, 0.0, 0.0]
    chunk = TimedChunk(
        stamp=now[0], time_from_start=np.arange(10) * 0.05, positions=points, gripper=np.zeros(10)
    )
    assert ex.on_chunk(chunk, now=now[0]) == "accepted"
    backend.command_success_rate = 1.0
    for _ in range(3):
        ex.tick()
        now[0] += 0.01
    assert ex.status().level == "ok" and ex.status().values()["command_success_rate"] == 1.0
    backend.command_success_rate = 0.9
    ex.tick()
    status = ex.status()
    assert status.state == "active" and status.level == "warn"
    assert status.values()["min_command_success_rate"] == 0.9
    assert "command success rate fell to 0.900" in str(status.values()["warning"])


def test_the_link_monitor_keeps_the_lowest_rate_and_ignores_non_finite_samples() -> None:
    monitor = CommandLinkMonitor(warn_below=0.95)
    assert monitor.values() == {} and monitor.warning() is None
    for rate in (1.0, 0.97, float("nan"), 0.99):
        monitor.update(rate)
    assert monitor.values() == {"command_success_rate": 0.99, "min_command_success_rate": 0.97}
    assert monitor.warning() is None


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["cartesian", "joint"])
def test_the_communication_check_passes_on_franky_sim_with_the_arm_held_in_place(mode: str) -> None:
    pytest.importorskip("franky")
    from dm1.control.franky_backend import FrankyBackend
    from franky_sim_arm import SimArm

    arm = SimArm()
    try:
        backend = FrankyBackend(arm.host, mode=mode, gripper=False)
        try:
            before = backend.read_state()
            result = run_comm_check(backend, mode=mode, seconds=1.0)
            assert result.passed, result.summary()
            assert result.samples >= 50 and result.min_success_rate == 1.0  # franky-sim loses nothing
            limit = 0.002 if mode == "cartesian" else 0.005  # m at the EE, rad per joint
            assert result.max_drift < limit, result.summary()
            after = backend.read_state()
            assert np.linalg.norm(after.ee_pos - before.ee_pos) < 0.002, "the arm moved during the check"
        finally:
            backend.close()
    finally:
        arm.close()


@pytest.mark.slow
def test_dm1_robot_check_reports_the_link_of_a_franky_sim_arm_and_names_an_unreachable_one() -> None:
    import json
    import subprocess
    import sys

    pytest.importorskip("franky")
    from conftest import free_loopback_host
    from franky_sim_arm import SimArm

    arm = SimArm()
    try:
        cmd = [sys.executable, "-m", "dm1.cli", "robot", "check", "--robot-ip", arm.host, "--sim"]
        run = subprocess.run([*cmd, "--seconds", "1", "--json"], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr[-2000:]
        result = json.loads(run.stdout.strip().splitlines()[-1])
        assert result["passed"] and result["robot_ip"] == arm.host and result["min_success_rate"] == 1.0
        assert result["samples"] >= 50 and result["max_drift"] < 0.002
        host = {f["name"]: f for f in result["host"]["findings"]}  # the host checks ran first
        assert result["host"]["passed"] and host["fci_route"]["status"] == "ok"  # franky-sim over loopback
        assert host["fci_interface"]["found"].startswith("lo")
    finally:
        arm.close()
    nobody = free_loopback_host()
    run = subprocess.run(
        [sys.executable, "-m", "dm1.cli", "robot", "check", "--robot-ip", nobody, "--sim", "--seconds", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and f"cannot connect to {nobody}" in run.stderr, run.stderr[-2000:]
    assert run.stdout.startswith("host check passed") and "realtime_kernel" in run.stdout  # before connecting
