"""franky building blocks of `FrankyBackend` (`dm1.control.franky_backend`), free of its lock and fault latch.

The check of its arguments, the connection, the impedance tracker it streams into (and its gains), the state
snapshot it returns, the hold and home moves, and asking, stopping and waiting out the robot's motion. Errors
franky raises here reach the backend, which latches them.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import franky
import numpy as np

from dm1.control.backend import RobotStateSnapshot
from dm1.control.franky_gripper import GripperWorker
from dm1.scheduling import ThreadScheduling, scheduled_as

# what franky raises when a motion ends badly: aborted (reflex), refused (user stop, wrong mode), or no link
FRANKY_ERRORS = (franky.ControlException, franky.CommandException, franky.NetworkException)


@dataclass(frozen=True)
class ImpedanceGains:
    """The impedance tracker's gains (`FrankyBackend`'s arguments of the same names).

    translational_stiffness, rotational_stiffness: Cartesian impedance (N/m, Nm/rad); translational_damping:
    Ns/m, None = franky's; nullspace_stiffness: Nm/rad of the posture task, 0 = none; joint_stiffness: (7,)
    joint impedance (Nm/rad).
    """

    translational_stiffness: float
    rotational_stiffness: float
    translational_damping: float | None
    nullspace_stiffness: float
    joint_stiffness: np.ndarray


def connect(host: str, realtime: bool) -> tuple[franky.Robot, ThreadScheduling]:
    """A new libfranka connection to `host` (NetworkException when the robot does not answer), and the
    scheduling franky's control threads run under; the calling thread keeps its own."""
    rt = franky.RealtimeConfig.Enforce if realtime else franky.RealtimeConfig.Ignore
    # libfranka raises the *calling* thread to SCHED_FIFO 99 where it may (root), even with Ignore, and
    # franky's 1 kHz control threads inherit it from the thread that starts a motion. Keep that for them
    # only: the caller (a ROS executor, a test runner and every process it starts) gets its own back.
    own = ThreadScheduling.current()
    try:
        robot = franky.Robot(host, realtime_config=rt)
        control_scheduling = ThreadScheduling.current()  # what franky's control threads run under
    finally:
        own.apply()
    return robot, control_scheduling


def check_backend_arguments(
    mode: str,
    relative_dynamics_factor: float,
    joint_stiffness: tuple[float, ...],
    hold_brake_s: float,
    hold_rest_speed: float,
    nullspace_stiffness: float,
    translational_damping: float | None,
) -> None:
    """Raise ValueError naming the first bad `FrankyBackend` argument (before any connection is made)."""
    if mode not in ("cartesian", "joint"):
        raise ValueError(f"FrankyBackend.mode: expected 'cartesian' or 'joint', found {mode!r}")
    if not 0.0 < relative_dynamics_factor <= 1.0:
        raise ValueError(
            f"FrankyBackend.relative_dynamics_factor: expected in (0, 1], found {relative_dynamics_factor}"
        )
    if len(joint_stiffness) != 7:
        raise ValueError(f"FrankyBackend.joint_stiffness: expected 7 values, found {len(joint_stiffness)}")
    if not hold_brake_s >= 0 or not hold_rest_speed >= 0 or not nullspace_stiffness >= 0:
        raise ValueError(
            "FrankyBackend: hold_brake_s, hold_rest_speed and nullspace_stiffness must be >= 0, found "
            f"{hold_brake_s}, {hold_rest_speed}, {nullspace_stiffness}"
        )
    if translational_damping is not None and not translational_damping > 0:
        raise ValueError(
            f"FrankyBackend.translational_damping: expected > 0 Ns/m or None, found {translational_damping}"
        )


def start_tracker(
    robot: franky.Robot, mode: str, gains: ImpedanceGains, control_scheduling: ThreadScheduling
) -> franky.CartesianImpedanceTracker | franky.JointImpedanceTracker:
    """A new impedance tracker on `robot` ("cartesian" or "joint" `mode`) with `gains`, its control thread
    started under `control_scheduling`. Raises what franky raises (ControlException, CommandException).
    """
    k_trans, k_rot = gains.translational_stiffness, gains.rotational_stiffness
    d_trans, k_null = gains.translational_damping, gains.nullspace_stiffness
    if mode == "cartesian":
        damping = None
        if d_trans is not None:  # rotational: franky's critical 2*sqrt(k_rot)
            damping = np.array([d_trans] * 3 + [2.0 * np.sqrt(k_rot)] * 3)
        posture = None
        if k_null > 0:
            q_start = np.asarray(robot.state.q, dtype=float)
            posture = franky.PostureTask(q_start, k_null)
        with scheduled_as(control_scheduling):  # its control thread starts here
            return franky.CartesianImpedanceTracker(
                robot,
                translational_stiffness=k_trans,
                rotational_stiffness=k_rot,
                damping=damping,
                posture_task=posture,
            )
    with scheduled_as(control_scheduling):
        return franky.JointImpedanceTracker(robot, stiffness=gains.joint_stiffness)


def snapshot(
    s: franky.RobotState, vel: np.ndarray, gripper: GripperWorker | None, fault: str | None
) -> RobotStateSnapshot:
    """The `RobotStateSnapshot` of franky's state `s`, EE linear velocity `vel` and the gripper's cache."""
    return RobotStateSnapshot(
        stamp=s.time.to_sec(),
        q=np.array(s.q, dtype=float),
        dq=np.array(s.dq, dtype=float),
        ee_pos=np.array(s.O_T_EE.translation, dtype=float),
        ee_quat_xyzw=np.array(s.O_T_EE.quaternion, dtype=float),
        gripper_width=gripper.width if gripper else 0.0,
        gripper_closed_cmd=gripper.closed_cmd if gripper else False,
        fault=fault,
        ee_vel=np.array(vel, dtype=float),
        command_success_rate=float(s.control_command_success_rate),
    )


def hold_at_measured(
    tracker: franky.CartesianImpedanceTracker | franky.JointImpedanceTracker,
    robot: franky.Robot,
    s: franky.RobotState,
    mode: str,
) -> float:
    """Set `tracker`'s target to the measured pose in `s` (damping only: nothing pulls the arm back along its
    path); returns the arm's speed: m/s at the EE in "cartesian" `mode`, else the fastest joint's rad/s."""
    if mode == "cartesian":
        speed = float(np.linalg.norm(robot.current_cartesian_velocity.end_effector_twist.linear))
        tracker.set_target(franky.Affine(np.asarray(s.O_T_EE.translation), s.O_T_EE.quaternion))
    else:
        speed = float(np.abs(np.asarray(s.dq)).max())
        tracker.set_target(np.asarray(s.q, dtype=float))
    return speed


def move_to_joints(
    robot: franky.Robot, target: np.ndarray, timeout_s: float, control_scheduling: ThreadScheduling
) -> bool:
    """Start a joint move to `target` and wait for it at most `timeout_s` (wall time); whether it finished.
    Raises what franky raises when the move is aborted or refused (ControlException, CommandException)."""
    with scheduled_as(control_scheduling):
        robot.move(
            franky.JointMotion(target),
            asynchronous=True,  # scaled by the robot's factor (once)
        )
    return robot.join_motion(timeout=timeout_s)


def in_control(robot: franky.Robot) -> bool:
    """Whether a franky motion still runs (False when the robot cannot be asked)."""
    try:
        return bool(robot.is_in_control)
    except FRANKY_ERRORS:
        return False


def stop_motion(robot: franky.Robot) -> None:
    """libfranka's stop of the running motion (the robot brakes); a failing stop is not a second fault."""
    with contextlib.suppress(franky.ControlException, franky.CommandException, franky.NetworkException):
        robot.stop()


def wait_until_at_rest(robot: franky.Robot, timeout_s: float) -> None:
    """Wait (at most `timeout_s` of wall time) until the measured joints are slower than 0.005 rad/s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and np.abs(np.asarray(robot.state.dq)).max() > 0.005:
        time.sleep(0.01)
