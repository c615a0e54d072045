"""The twin killed or hung under a running controller (use_sim_time): /clock stops with it, and so do all of
the controller's sim-time timers (control ticks, /joint_states, status). Twin and controller are real
processes; the test process listens to the controller's status on the wall clock (it has no other).

Before: the controller went silent (`dm1 operator status`: "no report ... is the controller up?"), latched
nothing, ignored the first Ctrl-C (1 stop in 3) and, once stopped, crashed on the lost link (a traceback,
or std::terminate: -6).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator

import pytest
from conftest import ProcessGroup, dm1_operator, free_loopback_host, wait_for

rclpy = pytest.importorskip("rclpy")
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from dm1_ros.conversions import diagnostic_values  # noqa: E402
from dm1_ros.spin_thread import SpinThread  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402

# one Ctrl-C to exit, wall time: the spin sees it within 0.2 s, then the clean-up (seconds on a loaded CI
# host); a lost Ctrl-C never ends it, which this bound tells apart with room to spare
STOP_BOUND_S = 20.0


class StatusProbe:
    """Records the controller's reports (`message`, `level` and the key/values) on a spinning test node."""

    def __init__(self) -> None:
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node("clock_stop_probe", context=self.ctx)
        self.reports: list[dict[str, str | int]] = []
        self.node.create_subscription(DiagnosticArray, "/dm1/controller/status", self._on_status, 10)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.spinner = SpinThread(self.executor, "clock-stop-probe").start()

    def _on_status(self, msg: DiagnosticArray) -> None:
        st = msg.status[0]
        level = int.from_bytes(st.level, "big")
        self.reports.append({**diagnostic_values(st), "message": st.message, "level": level})

    def first_after(self, n: int, text: str) -> dict[str, str | int] | None:
        """The first report after the n-th whose message contains `text`."""
        return next((r for r in self.reports[n:] if text in str(r["message"])), None)

    def close(self) -> None:
        self.spinner.stop()
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)


def _ros_params(params: list[str]) -> list[str]:
    return [arg for p in params for arg in ("-p", p)]


@pytest.fixture
def twin_and_controller(ros_env, procs: ProcessGroup) -> Iterator[tuple[ProcessGroup, StatusProbe]]:
    """A twin (one small camera: light on a shared host) and a controller on its /clock, reporting."""
    host, py = free_loopback_host(), sys.executable
    twin_params = [f"host:={host}", "cameras:=[wrist]", "camera_width:=32", "camera_height:=24"]
    procs.start("twin", [py, "-m", "dm1_sim.twin_node", "--ros-args", *_ros_params(twin_params)])
    wait_for(lambda: "twin up" in procs.log("twin"), 120, what="the twin's franky-sim server")
    params = [f"robot_ip:={host}", "use_sim_time:=true", "rt_priority:=0"]
    cmd = [py, "-m", "dm1_ros.controller_node", "--ros-args", *_ros_params(params)]
    controller = procs.start("controller", cmd)
    probe = StatusProbe()
    try:
        wait_for(
            lambda: len(probe.reports) > 3 or controller.poll() is not None,
            120,
            what="the controller's reports",
            detail=lambda: procs.log("controller")[-3000:],
        )
        assert controller.poll() is None, procs.log("controller")[-3000:]
        yield procs, probe
    finally:
        probe.close()
        for name, proc in procs.procs:  # a hung (stopped) twin takes no SIGINT: no 10 s wait for it
            if name == "twin" and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize("twin_stop", [signal.SIGKILL, signal.SIGSTOP], ids=["twin_killed", "twin_hung"])
def test_a_stopped_twin_is_reported_as_a_stopped_clock_and_one_ctrl_c_ends_the_controller_cleanly(
    twin_and_controller: tuple[ProcessGroup, StatusProbe], twin_stop: int
) -> None:
    procs, probe = twin_and_controller
    twin = next(p for n, p in procs.procs if n == "twin")
    controller = next(p for n, p in procs.procs if n == "controller")

    def logs() -> str:
        return procs.log("controller")[-3000:]

    n = len(probe.reports)
    os.killpg(twin.pid, twin_stop)
    # a wall-clock watchdog notices the stopped /clock (1 s) and reports on, with the lost robot link (the
    # waits are generous: a loaded host delays the reports, not what they say)
    stopped = wait_for(
        lambda: probe.first_after(n, "simulation clock stopped"), 60, what="the stopped clock", detail=logs
    )
    assert stopped["level"] == DiagnosticStatus.ERROR[0] and stopped["state"] == "fault", stopped
    assert "(is the twin running?)" in str(stopped["message"]), stopped
    linked = wait_for(lambda: probe.first_after(n, "NetworkException"), 60, what="the lost link", detail=logs)
    assert "simulation clock stopped" in str(linked["message"]), linked
    seen = len(probe.reports)
    wait_for(lambda: len(probe.reports) >= seen + 3, 30, what="reports going on", detail=logs)
    status = dm1_operator("status", timeout_s=60.0)  # said "no report ... is the controller up?"
    assert status.returncode == 0, status
    assert "controller: fault, fault: simulation clock stopped" in status.stdout, status

    os.kill(controller.pid, signal.SIGINT)  # one Ctrl-C, to the controller alone
    sent = time.monotonic()
    with contextlib.suppress(Exception):
        controller.wait(timeout=STOP_BOUND_S)
    took = time.monotonic() - sent
    assert controller.poll() is not None, f"still running {STOP_BOUND_S} s after one SIGINT\n{logs()}"
    log = procs.log("controller")
    assert controller.returncode == 0, f"exit code {controller.returncode} after {took:.1f} s\n{log[-3000:]}"
    assert "Traceback" not in log and "terminate called" not in log, log[-3000:]
    assert log.count("closed without a robot link (NetworkException") == 1, log[-3000:]
