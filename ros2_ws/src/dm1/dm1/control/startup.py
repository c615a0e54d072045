"""The controller's start sequence, ROS-free: parameters → host checks → robot connection → FCI link check,
then the `ChunkExecutor` that drives the robot (`make_executor`).

Each step that finds the arm unsafe to drive raises, naming why, and the node refuses to start: a bad
parameter (ValueError), no robot (franky's NetworkException), a lossy link (RuntimeError, the robot closed).
The host checks only warn: libfranka itself refuses a kernel without real-time support, and the warnings say
why before it does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from dm1.control.backend import RobotBackend
from dm1.control.executor import ChunkExecutor
from dm1.control.host_check import HostReport, check_host
from dm1.control.limits import SafetyLimits
from dm1.control.link_check import require_healthy_link
from dm1.control.parameters import check_controller_parameters


def _franky(host: str, relative_dynamics_factor: float, mode: str, realtime: bool) -> RobotBackend:
    from dm1.control.franky_backend import FrankyBackend

    return FrankyBackend(host, relative_dynamics_factor, mode=mode, realtime=realtime)


def start_robot(
    values: Mapping[str, Any],
    use_sim_time: bool,
    warn: Callable[[str], None],
    connect: Callable[[str, float, str, bool], RobotBackend] = _franky,
    host_check: Callable[[str], HostReport] = check_host,
) -> tuple[RobotBackend, str | None]:
    """Connect the robot the controller parameters `values` name; returns it and the link check's summary.

    Without simulated time (a real arm) every host-check problem goes to `warn` before connecting.
    `connect(host, relative_dynamics_factor, mode, realtime)` opens the backend (franky by default).
    """
    realtime = check_controller_parameters(dict(values), use_sim_time)
    if not use_sim_time:
        for finding in host_check(values["robot_ip"]).problems():
            warn(f"host check: {finding.line()}")
    backend = connect(values["robot_ip"], values["relative_dynamics_factor"], values["mode"], realtime)
    if values["comm_check_s"] <= 0:
        return backend, None
    link = (backend, values["mode"], values["comm_check_s"], values["min_command_success_rate"])
    return backend, require_healthy_link(*link)  # RuntimeError (backend closed) on a failing link


def make_executor(
    values: Mapping[str, Any], backend: RobotBackend, limits: SafetyLimits, clock: Callable[[], float]
) -> ChunkExecutor:
    """The controller's `ChunkExecutor` on `backend`, set up by the controller parameters `values`: its mode,
    tick period (1 / `control_rate_hz`), single-commander window and command-success-rate warning level."""
    executor = ChunkExecutor(
        backend,
        limits,
        clock,
        mode=values["mode"],
        tick_period_s=1.0 / values["control_rate_hz"],
        source_window_s=values["single_commander_window_s"],
    )
    executor.link.warn_below = values["min_command_success_rate"]
    return executor


def controller_summary(values: Mapping[str, Any], limits: SafetyLimits) -> str:
    """The controller's start line: its robot, mode and safety limits."""
    return f"controller up: {values['robot_ip']} mode={values['mode']} limits={limits.to_dict()}"
