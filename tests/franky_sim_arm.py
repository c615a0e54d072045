"""A franky-sim FR3 (MuJoCo, the real libfranka protocol) served in-process on a random loopback address, for
the tests of `FrankyBackend` and of `ChunkExecutor` on it."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
from conftest import free_loopback_host, wait_for
from dm1.sim.reflex import abort_running_motion
from dm1.sim.user_stop import UserStop
from franky_sim.mujoco_simulator import MujocoSimulator
from franky_sim.simulation_server import SimulationServer


class SimArm:
    """A franky-sim FR3 served on a random loopback address, with a sim-time clock and reflex injection.

    `inject_reflex()` makes the simulated robot server abort the running motion with libfranka's
    `kReflexAborted` status, as a real FR3 reports a reflex (`dm1.sim.reflex`): franky then raises a genuine
    `ControlException` through its normal protocol path.
    """

    def __init__(self) -> None:
        self.host = free_loopback_host()
        self.sim = MujocoSimulator(enable_visualization=False)
        self.sim.init()
        self.arm = self.sim.add_robot()
        self.server = SimulationServer(self.sim, hostname_candidates=[self.host])
        self.steps = 0
        self._reflex = threading.Event()
        self.post_step: list = []
        self.sim.register_post_step_callback(self._on_step)
        self.server.init()
        self.user_stop = UserStop(self.server.robot_servers[0])  # `.pressed = True` presses it
        self.server.run_async(realtime=True)

    @property
    def time(self) -> float:
        """Simulation time in seconds (1 ms per physics step)."""
        return self.steps * 1e-3

    def _on_step(self, _sim) -> None:
        self.steps += 1
        if self._reflex.is_set() and abort_running_motion(self.server):
            self._reflex.clear()
        if self.user_stop.pressed:
            abort_running_motion(self.server, self.user_stop.abort_status)
        for fn in self.post_step:
            fn(self)

    def joint_speed(self) -> float:
        """Fastest arm joint of the simulated FR3 (rad/s), read from MuJoCo (no robot connection needed)."""
        return float(np.abs(np.asarray(self.arm._get_state().dq)).max())

    def push_hand(self, force_xyz) -> None:
        """Apply an external force (N, world frame) to the hand, as a push or a collision would, until it is
        set back to zero (MuJoCo's `xfrc_applied`; read by the physics thread at its next step)."""
        import mujoco

        body = mujoco.mj_name2id(self.arm._model, mujoco.mjtObj.mjOBJ_BODY, "robot0_hand")
        self.arm._data.xfrc_applied[body, :3] = force_xyz

    def inject_reflex(self) -> None:
        """Abort the current motion as a reflex would (applied in the physics thread on the next step)."""
        self._reflex.set()

    def wait_sim(self, seconds: float, timeout: float = 60.0) -> None:
        """Block until `seconds` of simulation time have passed."""
        end = self.time + seconds
        wait_for(lambda: self.time >= end, timeout, interval=0.005, what=f"{seconds} s of sim time")

    def close(self) -> None:
        self.server.cleanup()


def served_arm() -> Iterator[SimArm]:
    """The body of the `sim_arm` fixture (tests/conftest.py): one `SimArm`, closed whatever the test did."""
    arm = SimArm()
    try:
        yield arm
    finally:
        arm.close()
