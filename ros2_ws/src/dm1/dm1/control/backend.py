"""The robot backend interface used by the chunk executor, plus a fake for unit tests.

`RobotBackend` is what `ChunkExecutor` drives: a streaming, non-blocking target interface with an explicit
hold, home and operator recovery. `FrankyBackend` (franky + franky-sim / a real FR3) implements it;
`FakeBackend` is a tiny in-memory stand-in for fake-clock unit tests only (the real path is tested against
franky-sim in `tests/test_franky_backend.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

HOME_Q = np.array([0.0, 0.0, 0.0, -1.57, 0.0, 1.57, 0.785])  # franky-sim's default start pose (rad)

#: franky `relative_dynamics_factor` for home moves on the digital twin (nobody stands next to it): homing
#: from the end of a lift takes ~2.5 s of sim time. (It was 0.6 while the backend applied the factor
#: twice, i.e. 0.36, the value every twin run, demo and benchmark so far homed with.)
TWIN_HOME_DYNAMICS = 0.36
HOME_EE_POS = np.array([0.554, 0.0, 0.521])  # EE position at HOME_Q in fr3_link0 (m)
TOP_DOWN_XYZW = np.array([1.0, 0.0, 0.0, 0.0])  # fr3_hand_tcp pointing down (x, y, z, w)


class RobotFault(RuntimeError):
    """Raised by a backend when the robot reports a control error, or motion is refused while faulted."""


@dataclass(frozen=True)
class RobotStateSnapshot:
    """One measured robot state.

    stamp: robot/sim time in seconds; q, dq: (7,) rad, rad/s; ee_pos: (3,) m in fr3_link0; ee_quat_xyzw: (4,);
    gripper_width: m; gripper_closed_cmd: last gripper command (True = close); fault: None when healthy,
    else the error text; ee_vel: (3,) measured EE linear velocity in m/s; command_success_rate: libfranka's
    fraction of the last 100 control commands that reached the robot (meaningful while streaming).
    """

    stamp: float
    q: np.ndarray
    dq: np.ndarray
    ee_pos: np.ndarray
    ee_quat_xyzw: np.ndarray
    gripper_width: float
    gripper_closed_cmd: bool
    fault: str | None
    ee_vel: np.ndarray = field(default_factory=lambda: np.zeros(3))
    command_success_rate: float = 1.0


@runtime_checkable
class RobotBackend(Protocol):
    """Streaming robot interface. Motion methods raise `RobotFault` when the robot is (or becomes) faulted."""

    def read_state(self) -> RobotStateSnapshot:
        """The latest measured state (never blocks on the robot)."""
        ...

    def send_ee_target(
        self,
        pos: np.ndarray,
        quat_xyzw: np.ndarray,
        lin_vel: np.ndarray | None = None,
        lin_acc: np.ndarray | None = None,
    ) -> None:
        """Stream an EE pose target (non-blocking); `lin_vel` (3,) m/s and `lin_acc` (3,) m/s² are optional
        velocity and acceleration feed-forwards."""
        ...

    def send_joint_target(self, q: np.ndarray, dq: np.ndarray | None = None) -> None:
        """Stream a joint target (7,) rad (non-blocking); `dq` (7,) is an optional velocity feed-forward."""
        ...

    def set_gripper(self, close: bool) -> None:
        """Request the gripper closed (grasp) or open; acts only on changes, never blocks."""
        ...

    def hold(self) -> None:
        """Decelerate to a stop near the current pose and keep holding it.

        Called on every control tick while holding; the first call after streaming starts the stop.
        """
        ...

    def home(self, q: np.ndarray | None = None) -> None:
        """Blocking joint move to `q` (default HOME_Q)."""
        ...

    def recover(self) -> None:
        """Explicit operator recovery: clear the robot's errors and the latched fault."""
        ...

    def close(self) -> None:
        """Stop motion and release the connection."""
        ...


class FakeBackend:
    """In-memory backend for unit tests: targets are reached instantly; records every call.

    Set `fail_next = "reason"` to make the next motion command raise `RobotFault` (as a franky reflex would),
    and `fail_recover = "reason"` to make `recover` raise it (no link, the user stop still engaged).
    """

    def __init__(self, q: np.ndarray | None = None, ee_pos: np.ndarray | None = None) -> None:
        self.q = np.array(HOME_Q if q is None else q, dtype=float)
        self.dq = np.zeros(7)
        self.ee_vel = np.zeros(3)  # measured EE linear velocity (m/s): set it to drill the overspeed latch
        self.command_success_rate = 1.0  # set it to drill the link monitor and the communication check
        self.ee_pos = np.array(HOME_EE_POS if ee_pos is None else ee_pos, dtype=float)
        self.ee_quat = TOP_DOWN_XYZW.copy()
        self.gripper_closed = False
        self.fault: str | None = None
        self.fail_next: str | None = None
        self.fail_recover: str | None = None
        self.stamp = 0.0
        self.calls: list[tuple[str, tuple]] = []
        self.velocities: list[np.ndarray | None] = []  # feed-forward velocity of every ee/joint target
        self.accelerations: list[np.ndarray | None] = []  # feed-forward acceleration of every ee target

    def read_state(self) -> RobotStateSnapshot:
        return RobotStateSnapshot(
            stamp=self.stamp,
            q=self.q.copy(),
            dq=self.dq.copy(),
            ee_pos=self.ee_pos.copy(),
            ee_quat_xyzw=self.ee_quat.copy(),
            gripper_width=0.0 if self.gripper_closed else 0.08,
            gripper_closed_cmd=self.gripper_closed,
            fault=self.fault,
            ee_vel=self.ee_vel.copy(),
            command_success_rate=self.command_success_rate,
        )

    def _motion(self, name: str, *args: object) -> None:
        if self.fail_next is not None:
            self.fault, self.fail_next = self.fail_next, None
        if self.fault is not None:
            raise RobotFault(self.fault)
        self.calls.append((name, args))

    def send_ee_target(
        self,
        pos: np.ndarray,
        quat_xyzw: np.ndarray,
        lin_vel: np.ndarray | None = None,
        lin_acc: np.ndarray | None = None,
    ) -> None:
        self._motion("ee", np.array(pos), np.array(quat_xyzw))
        self.velocities.append(None if lin_vel is None else np.array(lin_vel, dtype=float))
        self.accelerations.append(None if lin_acc is None else np.array(lin_acc, dtype=float))
        self.ee_pos = np.array(pos, dtype=float)
        self.ee_quat = np.array(quat_xyzw, dtype=float)

    def send_joint_target(self, q: np.ndarray, dq: np.ndarray | None = None) -> None:
        self._motion("joint", np.array(q))
        self.velocities.append(None if dq is None else np.array(dq, dtype=float))
        self.q = np.array(q, dtype=float)

    def set_gripper(self, close: bool) -> None:
        self._motion("gripper", bool(close))
        self.gripper_closed = bool(close)

    def hold(self) -> None:
        self.calls.append(("hold", ()))
        self.dq = np.zeros(7)

    def home(self, q: np.ndarray | None = None) -> None:
        self._motion("home", q)
        self.q = np.array(HOME_Q if q is None else q, dtype=float)
        self.ee_pos = HOME_EE_POS.copy()

    def recover(self) -> None:
        self.calls.append(("recover", ()))
        if self.fail_recover is not None:
            raise RobotFault(self.fail_recover)
        self.fault = None

    def close(self) -> None:
        self.calls.append(("close", ()))

    def motion_calls(self) -> list[tuple[str, tuple]]:
        """Recorded motion commands (ee/joint/gripper/home), excluding hold/recover/close."""
        return [c for c in self.calls if c[0] in ("ee", "joint", "gripper", "home")]
