"""The FCI link's health: libfranka's command success rate, watched while streaming and checked before a run.

libfranka reports `control_command_success_rate`: the fraction of the last 100 control commands (one per 1 kHz
cycle) that reached the robot. Lost commands come from the network or from a workstation that misses its
real-time deadline; too many in a row end in a `communication_constraints_violation` reflex. Franka's own
`communication_test` runs a control loop for a while and reports this rate; `run_comm_check` does the same
through the backend dm1 drives the robot with (holding the arm where it stands), so each run starts only on a
link that keeps up. `CommandLinkMonitor` keeps watching it while the controller streams.

ROS-free and robot-free: `run_comm_check` takes any `RobotBackend` (franky on a real FR3 or on franky-sim).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from dm1.control.backend import RobotBackend, RobotFault

#: Below this success rate the link is reported (controller status WARN, the check fails): more than 5 of
#: every 100 commands lost, well on the way to a communication_constraints_violation (libfranka's
#: communication_test calls a setup good when it loses none).
MIN_COMMAND_SUCCESS_RATE = 0.95


@dataclass
class CommandLinkMonitor:
    """The command success rate while streaming: the latest and the lowest sample since the start.

    The rate is only meaningful while a control loop runs (libfranka reports 0 otherwise), so feed it only
    samples taken while streaming.
    """

    warn_below: float = MIN_COMMAND_SUCCESS_RATE
    latest: float | None = None
    lowest: float | None = None

    def update(self, rate: float) -> None:
        """Record one sample (0..1) taken while streaming; a non-finite sample is ignored."""
        if not np.isfinite(rate):
            return
        self.latest = float(rate)
        self.lowest = self.latest if self.lowest is None else min(self.lowest, self.latest)

    def values(self) -> dict[str, float]:
        """Status key/values (empty before the first streamed tick)."""
        if self.latest is None or self.lowest is None:
            return {}
        return {
            "command_success_rate": round(self.latest, 3),
            "min_command_success_rate": round(self.lowest, 3),
        }

    def warning(self) -> str | None:
        """A warning when the lowest rate seen is below `warn_below`, else None."""
        if self.lowest is None or self.lowest >= self.warn_below:
            return None
        return (
            f"FCI link: command success rate fell to {self.lowest:.3f} (below {self.warn_below:.2f}): "
            "commands are being lost (network or real-time setup; see docs/real-robot.md)"
        )


@dataclass(frozen=True)
class CommCheckResult:
    """Outcome of `run_comm_check`. Rates are libfranka's `control_command_success_rate` samples; max_drift
    is how far the held arm moved (m at the EE in cartesian mode, rad of the largest joint change in joint
    mode)."""

    seconds: float
    samples: int
    mean_success_rate: float
    min_success_rate: float
    max_drift: float
    passed: bool
    problems: list[str] = field(default_factory=list)
    drift_unit: str = "m"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def summary(self) -> str:
        """One line for a log."""
        verdict = "passed" if self.passed else "FAILED: " + "; ".join(self.problems)
        return (
            f"communication check {verdict} ({self.seconds:.1f} s, {self.samples} samples): command success "
            f"rate mean {self.mean_success_rate:.3f}, min {self.min_success_rate:.3f}; "
            f"drift {self.max_drift:.4f} ({self.drift_unit})"
        )


def run_comm_check(
    backend: RobotBackend,
    mode: str = "cartesian",
    seconds: float = 1.0,
    rate_hz: float = 100.0,
    min_success_rate: float = MIN_COMMAND_SUCCESS_RATE,
    max_drift: float = 0.005,
    warmup_s: float = 0.2,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> CommCheckResult:
    """Hold the arm where it stands for `seconds`, streaming that pose at `rate_hz`, and sample libfranka's
    command success rate (after `warmup_s`, while the first 100 commands fill its window).

    Passes when no fault occurred, every sample is at least `min_success_rate`, and the arm stayed within
    `max_drift` of where it started (cartesian: EE position; joint: the largest joint change, in rad). The
    arm is then held (`backend.hold()`), as by the controller's watchdog. A fault is reported, not raised.
    """
    if mode not in ("cartesian", "joint"):
        raise ValueError(f"run_comm_check.mode: expected 'cartesian' or 'joint', found {mode!r}")
    if not seconds > warmup_s >= 0 or not rate_hz > 0:
        raise ValueError(
            f"run_comm_check: expected seconds > warmup_s >= 0 and rate_hz > 0, found seconds={seconds}, "
            f"warmup_s={warmup_s}, rate_hz={rate_hz}"
        )
    cartesian = mode == "cartesian"
    unit = "m" if cartesian else "rad"
    problems: list[str] = []
    rates: list[float] = []
    drift = 0.0
    start = backend.read_state()
    if start.fault is not None:
        problems.append(f"the robot is faulted: {start.fault}")
    else:
        t0, ticks = clock(), 0
        try:
            while (elapsed := clock() - t0) < seconds:
                if cartesian:
                    backend.send_ee_target(start.ee_pos, start.ee_quat_xyzw, lin_vel=np.zeros(3))
                else:
                    backend.send_joint_target(start.q, np.zeros(7))
                state = backend.read_state()
                if state.fault is not None:
                    raise RobotFault(state.fault)
                moved = state.ee_pos - start.ee_pos if cartesian else state.q - start.q
                drift = max(drift, float(np.linalg.norm(moved) if cartesian else np.abs(moved).max()))
                if elapsed >= warmup_s:
                    rates.append(state.command_success_rate)
                ticks += 1
                sleep(max(0.0, t0 + ticks / rate_hz - clock()))  # the next tick of a fixed-rate schedule
            backend.hold()
        except RobotFault as exc:
            problems.append(f"fault during the check: {exc}")
    if not problems:
        if not rates:
            problems.append("no success-rate sample (check shorter than its warm-up)")
        elif (low := min(rates)) < min_success_rate:
            problems.append(f"command success rate fell to {low:.3f} (expected >= {min_success_rate:.2f})")
        if drift > max_drift:
            problems.append(f"the arm drifted {drift:.4f} {unit} while held (expected <= {max_drift:g})")
    arr = np.asarray(rates if rates else [float("nan")])
    return CommCheckResult(
        seconds=seconds,
        samples=len(rates),
        mean_success_rate=float(np.mean(arr)),
        min_success_rate=float(np.min(arr)),
        max_drift=drift,
        passed=not problems,
        problems=problems,
        drift_unit=unit,
    )


def require_healthy_link(backend: RobotBackend, mode: str, seconds: float, min_success_rate: float) -> str:
    """`run_comm_check` before a run: returns its summary when it passed; otherwise closes the backend and
    raises RuntimeError with the summary (what was lost or how far the arm drifted)."""
    check = run_comm_check(backend, mode, seconds, min_success_rate=min_success_rate)
    if not check.passed:
        backend.close()
        raise RuntimeError(check.summary())
    return check.summary()
