"""`FrankyBackend`: the `RobotBackend` on franky 2.0 (a real FR3, or franky-sim).

Targets are streamed into one long-lived franky impedance tracker (`CartesianImpedanceTracker` or
`JointImpedanceTracker`), whose 1 kHz torque loop runs inside franky; every `send_*_target` only updates the
reference, so a stream of targets moves the arm continuously (no stop-and-go at chunk boundaries, unlike a
new waypoint motion per target). The gripper runs in its own worker thread (franky's gripper calls block).
A franky `ControlException` latches `fault`; motion is refused (`RobotFault`) until `recover()`. `close()`
never raises: a lost link (libfranka's NetworkException, e.g. the twin killed) is latched, named in one line.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import replace

import franky
import numpy as np

from dm1.control.backend import HOME_Q, RobotFault, RobotStateSnapshot
from dm1.control.franky_gripper import GripperWorker
from dm1.control.franky_motion import (
    FRANKY_ERRORS,
    ImpedanceGains,
    check_backend_arguments,
    connect,
    hold_at_measured,
    in_control,
    move_to_joints,
    snapshot,
    start_tracker,
    stop_motion,
    wait_until_at_rest,
)
from dm1.control.safety import nonfinite_reason
from dm1.scheduling import scheduled_as

log = logging.getLogger(__name__)

DEFAULT_JOINT_STIFFNESS = (600.0, 600.0, 600.0, 600.0, 250.0, 150.0, 50.0)  # Nm/rad
# Wall-clock bound on the home joint move (a few s on the robot; longer on the twin, which runs at about half
# real time). Past it the move is stopped and a fault latched, so the home service (gripper + move + settle)
# answers before its callers give up (`dm1 eval`: 60 s, teleop collection: 120 s).
HOME_MOVE_TIMEOUT_S = 40.0


def _is_preemption(exc: BaseException) -> bool:
    return "preempted" in str(exc).lower()


def _refuse_nonfinite(method: str, **arrays: np.ndarray) -> None:
    """The hardware layer's own check (reliability row 3): a non-finite command never reaches franky, whatever
    the layers above did; raises ValueError naming the method, the array and the index."""
    reason = nonfinite_reason(**arrays)
    if reason is not None:
        raise ValueError(f"FrankyBackend.{method}: refused a command with a {reason}")


class FrankyBackend:
    """franky implementation of `RobotBackend`.

    Args:
        host: FCI hostname / IP (franky-sim: its loopback address).
        relative_dynamics_factor: scales franky's velocity/acceleration/jerk limits for `home()` moves
            (set on the robot, which multiplies it into every motion's own factor: given to the move
            too, it applied squared, 0.2 -> 0.04).
        mode: "cartesian" (EE targets, Cartesian impedance) or "joint" (joint targets, joint impedance).
        translational_stiffness, rotational_stiffness: Cartesian impedance (N/m, Nm/rad).
        translational_damping: Cartesian damping (Ns/m). franky's default, 2*sqrt(k), is critical only for a
            unit mass: the FR3's apparent EE mass (a few kg) then rings, and a hold from 0.3 m/s settled in
            ~240 ms with a rebound. 200 Ns/m brakes it in ~80 ms without rebound (franky-sim, measured);
            with the velocity feed-forward of streamed targets it does not slow tracking. None = franky's.
        nullspace_stiffness: Cartesian mode: stiffness (Nm/rad, critically damped) of a posture task pulling
            the redundant joint toward the posture the tracker started in, projected into the Jacobian
            nullspace. Without it the FR3's self-motion is undamped: under jittery targets the joints drifted
            up to 1.4 rad in 6 s and kept moving after the EE stopped (franky-sim, measured). 0 disables.
        joint_stiffness: (7,) joint impedance (Nm/rad).
        joint_velocity_feedforward: joint mode: the fraction of each target's velocity sent to the tracker as
            its velocity reference (0, the default: none; the tracker's damping then acts on the measured
            joint velocity). With the full velocity, the critically damped (for a unit inertia) joint tracker
            is kicked by damping x velocity at every step of the reference velocity, and through the arm's
            coupled inertia the joints overshot: a target stream at the joint caps moved joint 4 at 2.9x its
            cap and the hand at 2.1 m/s; none: 1.14x (franky-sim, measured). Costs tracking lag
            (damping / stiffness x speed: 0.08 s x speed on joints 1-4).
        hold_brake_s: `hold()` first brakes with damping only (the target follows the measured pose, so no
            spring pulls the arm back to where the hold began), for at most this long (robot time) ...
        hold_rest_speed: ... or until the arm is slower than this (m/s at the EE; rad/s in joint mode); then
            the target latches at the pose reached. A fixed target set once at the hold overshot by up to
            2.6 cm from 0.3 m/s and crept back at 0.1-0.3 rad/s for 0.3-0.6 s (franky-sim, measured).
        gripper: connect the gripper (False for arm-only setups).
        realtime: libfranka's real-time enforcement (`RealtimeConfig.Enforce`, needs a PREEMPT_RT kernel;
            use on the real robot). False (`Ignore`) for franky-sim, whose state packets are the clock.
    """

    def __init__(
        self,
        host: str,
        relative_dynamics_factor: float = 0.2,
        mode: str = "cartesian",
        translational_stiffness: float = 1500.0,
        rotational_stiffness: float = 150.0,
        translational_damping: float | None = 200.0,
        nullspace_stiffness: float = 20.0,
        joint_stiffness: tuple[float, ...] = DEFAULT_JOINT_STIFFNESS,
        joint_velocity_feedforward: float = 0.0,
        hold_brake_s: float = 0.2,
        hold_rest_speed: float = 0.02,
        gripper: bool = True,
        gripper_speed: float = 0.05,
        gripper_force: float = 40.0,
        gripper_open_width: float = 0.08,
        realtime: bool = False,
    ) -> None:
        check_backend_arguments(  # ValueError naming the bad argument, before connecting
            mode,
            relative_dynamics_factor,
            joint_stiffness,
            hold_brake_s,
            hold_rest_speed,
            nullspace_stiffness,
            translational_damping,
        )
        if not 0.0 <= joint_velocity_feedforward <= 1.0:
            raise ValueError(
                "FrankyBackend.joint_velocity_feedforward: expected in [0, 1], found "
                f"{joint_velocity_feedforward}"
            )
        self.mode, self._joint_ff = mode, float(joint_velocity_feedforward)
        self._gains = ImpedanceGains(
            translational_stiffness,
            rotational_stiffness,
            translational_damping,
            nullspace_stiffness,
            np.asarray(joint_stiffness, dtype=float),
        )
        self._brake_s, self._rest_speed = hold_brake_s, hold_rest_speed
        self._brake_start: float | None = None  # robot time the current hold began; None while streaming
        self._hold_latched = False
        self._lock = threading.RLock()
        self._tracker: franky.CartesianImpedanceTracker | franky.JointImpedanceTracker | None = None
        self._fault: str | None = None
        self._link_lost = False  # a NetworkException latched: the robot is not read until recovered
        self._last_state: RobotStateSnapshot | None = None
        self._closed = False
        self._host, self._realtime, self._dynamics = host, realtime, relative_dynamics_factor
        self.robot = self._connect()
        self.robot.recover_from_errors()
        self._gripper = (
            GripperWorker(host, gripper_speed, gripper_force, gripper_open_width) if gripper else None
        )

    def _connect(self) -> franky.Robot:
        """A new libfranka connection (NetworkException when the robot does not answer)."""
        # control_scheduling: what franky's control threads run under (the caller keeps its own)
        robot, self.control_scheduling = connect(self._host, self._realtime)
        robot.relative_dynamics_factor = self._dynamics
        return robot

    # --- state -------------------------------------------------------------------------------------------

    @property
    def fault(self) -> str | None:
        """The latched fault text, or None."""
        return self._fault

    def _latch(self, exc: BaseException) -> None:
        self._fault = f"{type(exc).__name__}: {exc}"
        self._tracker = None
        if isinstance(exc, franky.NetworkException):  # the robot is not read again until recovered
            self._link_lost = True
        log.error("robot fault latched: %s", self._fault)

    def _poll(self) -> None:
        """Surface an exception stored by an asynchronous franky motion (reflex, aborted motion)."""
        try:
            self.robot.poll_motion()
        except franky.ControlException as exc:
            if not _is_preemption(exc):
                self._latch(exc)
        # a motion the robot refused (user stop engaged, wrong mode), or the link lost (libfranka's timeout)
        except (franky.CommandException, franky.NetworkException) as exc:
            self._latch(exc)
        if self._fault is None and self._tracker is not None and not self.robot.is_in_control:
            self._tracker = None  # the motion ended (e.g. stopped); the next target starts a fresh tracker

    def read_state(self) -> RobotStateSnapshot:
        """The latest measured state; surfaces (and latches) a stored franky ControlException.

        Without a link to the robot (libfranka's NetworkException: each read blocks 1 s, then raises) the
        fault is latched and the last measured state comes back with it, its stamp unchanged, and the robot is
        not asked again until `recover()` succeeds (RobotFault when there never was a state)."""
        with self._lock:
            self._poll()
            if self._link_lost and self._last_state is not None:
                return replace(self._last_state, fault=self._fault)
            try:
                s = self.robot.state
                vel = self.robot.current_cartesian_velocity.end_effector_twist.linear
            except franky.NetworkException as exc:
                self._latch(exc)
                if self._last_state is None:
                    raise RobotFault(self._fault) from exc
                return replace(self._last_state, fault=self._fault)
            self._last_state = snapshot(s, vel, self._gripper, self._fault)
            return self._last_state

    # --- streaming ---------------------------------------------------------------------------------------

    def _ready_tracker(self):
        self._poll()
        if self._fault is not None:
            raise RobotFault(self._fault)
        if self._tracker is None:
            try:
                self._tracker = start_tracker(self.robot, self.mode, self._gains, self.control_scheduling)
            except (franky.ControlException, franky.CommandException) as exc:
                self._latch(exc)
                raise RobotFault(self._fault) from exc
        return self._tracker

    def send_ee_target(
        self,
        pos: np.ndarray,
        quat_xyzw: np.ndarray,
        lin_vel: np.ndarray | None = None,
        lin_acc: np.ndarray | None = None,
    ) -> None:
        if self.mode != "cartesian":
            raise ValueError("FrankyBackend.send_ee_target: backend mode is 'joint'")
        given = {"pos": pos, "quat_xyzw": quat_xyzw, "lin_vel": lin_vel, "lin_acc": lin_acc}
        _refuse_nonfinite("send_ee_target", **{k: v for k, v in given.items() if v is not None})
        pose = franky.Affine(np.asarray(pos, dtype=float), np.asarray(quat_xyzw, dtype=float))
        twist = None if lin_vel is None else franky.Twist(np.asarray(lin_vel, dtype=float), np.zeros(3))
        acc = None  # the tracker adds Lambda(q) x this to its wrench
        if lin_acc is not None:
            acc = franky.TwistAcceleration(np.asarray(lin_acc, dtype=float), np.zeros(3))
        with self._lock:
            self._ready_tracker().set_target(pose, twist, acc)
            self._brake_start = None

    def send_joint_target(self, q: np.ndarray, dq: np.ndarray | None = None) -> None:
        if self.mode != "joint":
            raise ValueError("FrankyBackend.send_joint_target: backend mode is 'cartesian'")
        _refuse_nonfinite("send_joint_target", **({"q": q} if dq is None else {"q": q, "dq": dq}))
        velocity = None  # the velocity reference: a fraction of dq (`joint_velocity_feedforward`), or none
        if dq is not None and self._joint_ff > 0.0:
            velocity = self._joint_ff * np.asarray(dq, dtype=float)
        with self._lock:
            self._ready_tracker().set_target(np.asarray(q, dtype=float), velocity)
            self._brake_start = None

    def set_gripper(self, close: bool) -> None:
        if self._fault is not None:
            raise RobotFault(self._fault)
        if self._gripper is not None:
            self._gripper.request(close)

    def hold(self) -> None:
        """Brake, then hold: call on every control tick while holding (the first call starts the stop).

        While braking the target is the measured pose (damping only: nothing pulls the arm back along its
        path); once the arm is slower than `hold_rest_speed`, or after `hold_brake_s`, the target latches
        at the pose reached and later calls do nothing until streaming resumes.
        """
        with self._lock:
            self._poll()
            if self._tracker is None:
                return  # not streaming: franky (or the robot's idle controller) already holds the arm
            s = self.robot.state
            now = s.time.to_sec()
            if self._brake_start is None:
                self._brake_start, self._hold_latched = now, False
            if self._hold_latched:
                return
            speed = hold_at_measured(self._tracker, self.robot, s, self.mode)
            if speed <= self._rest_speed or now - self._brake_start >= self._brake_s:
                self._hold_latched = True

    def _stop_tracker(self) -> None:
        """End the streaming tracker (franky's stop motion brakes the arm); a failure is latched, not raised:
        the robot's error or refusal, or the link lost meanwhile (its exception surfaces in `join_motion`)."""
        if self._tracker is not None:
            try:
                with scheduled_as(self.control_scheduling):  # the stop motion may start a control thread
                    self._tracker.stop()
            except franky.ControlException as exc:
                if not _is_preemption(exc):
                    self._latch(exc)
            except (franky.CommandException, franky.NetworkException) as exc:
                self._latch(exc)
            self._tracker = None

    def home(
        self,
        q: np.ndarray | None = None,
        settle_timeout_s: float = 3.0,
        move_timeout_s: float = HOME_MOVE_TIMEOUT_S,
    ) -> None:
        """Blocking joint move to `q` (default HOME_Q), then wait (bounded) until the arm is at rest.

        A move still running after `move_timeout_s` of wall time is stopped and latched as a fault naming how
        far the robot's clock advanced meanwhile (0 s: the robot or simulator stopped answering); `recover()`
        clears it.
        """
        target = np.asarray(HOME_Q if q is None else q, dtype=float)
        if target.shape != (7,) or not np.all(np.isfinite(target)):
            raise ValueError(f"FrankyBackend.home: expected 7 finite joint values, found {target!r}")
        with self._lock:
            self._poll()
            if self._fault is not None:
                raise RobotFault(self._fault)
            self._stop_tracker()
            if self._fault is not None:  # the stop failed: the link lost, or the robot's error
                raise RobotFault(self._fault)
            robot_t0 = self.robot.state.time.to_sec()
        try:  # outside the lock, so read_state() (joint states) keeps working during the move
            finished = move_to_joints(self.robot, target, move_timeout_s, self.control_scheduling)
        except (franky.ControlException, franky.CommandException) as exc:  # aborted, or refused
            self._latch(exc)
            raise RobotFault(self._fault) from exc
        if not finished:
            advanced = self.robot.state.time.to_sec() - robot_t0
            stop_motion(self.robot)  # the move may be what hangs
            self._latch(
                TimeoutError(
                    f"home: the joint move did not finish within {move_timeout_s:g} s (robot time advanced "
                    f"{advanced:.2f} s meanwhile); stopped"
                )
            )
            raise RobotFault(self._fault)
        # The motion generator finishes on the desired trajectory; let the measured arm settle too.
        wait_until_at_rest(self.robot, settle_timeout_s)

    def recover(self) -> None:
        """Clear the robot's errors and the latched fault. A hold still streaming (the executor latched a
        fault of its own: the robot never stopped) is ended first: left running, the next motion of another
        type (a home move) failed with franky's InvalidMotionTypeException.

        After a lost link it connects again (libfranka's connection does not survive the timeout). Raises
        RobotFault (the fault stays latched) when the robot cannot be recovered: no link, or an error
        libfranka cannot clear (the user stop still engaged)."""
        gone = (franky.ControlException, franky.NetworkException)  # an aborted motion, or no link
        with self._lock:
            if self._tracker is not None:
                with contextlib.suppress(*gone), scheduled_as(self.control_scheduling):
                    self._tracker.stop()
            with contextlib.suppress(*gone):  # the stored fault being recovered from
                self.robot.join_motion(timeout=0.5)
            self._tracker = None
            try:
                if self._link_lost:  # libfranka's connection does not survive a timeout: connect again
                    self.robot = self._connect()
                self.robot.recover_from_errors()
            except (*gone, franky.CommandException) as exc:
                raise RobotFault(f"recover failed: {type(exc).__name__}: {exc}") from exc
            self._fault, self._link_lost = None, False
            time.sleep(0.01)

    def close(self) -> None:
        """Stop every motion and the gripper worker; never raises (a second call does nothing).

        A home move that another thread waits on (`home()` in `join_motion`) is stopped too (it then fails
        with the preemption): left running, its control thread outlived the process's last Python code and
        aborted it at exit (std::terminate, -6). Without a link (the robot or the twin gone) there is nothing
        to stop: the NetworkException is latched and named in one line; it used to come out of here and end
        the node with a traceback before the gripper worker and the node's other threads were stopped."""
        if self._closed:
            return
        self._closed = True
        try:
            with self._lock:
                self._stop_tracker()
                if self._link_lost:  # join franky's motion thread, which ended on the timeout
                    with contextlib.suppress(*FRANKY_ERRORS):
                        self.robot.join_motion(timeout=0.5)
            if not self._link_lost and in_control(self.robot):
                stop_motion(self.robot)  # the thread waiting on the move gets the preemption
                deadline = time.monotonic() + 2.0
                while in_control(self.robot) and time.monotonic() < deadline:
                    time.sleep(0.01)
        finally:
            if self._gripper is not None and not self._gripper.close():
                log.warning("close: the gripper worker is still blocked in a franky call; left behind")
        if self._link_lost:
            log.warning("closed without a robot link (%s): nothing left to stop", self._fault)
