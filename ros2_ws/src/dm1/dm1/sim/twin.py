"""The `Twin` core: franky-sim FR3 + Lift scene, sim-time cameras, seeded cube resets, success signal.

ROS-free. franky connects to `Twin.robot_host` (with `franky.RealtimeConfig.Ignore`): the simulation is the
clock. Threads: franky-sim's physics thread steps MuJoCo at 1 kHz and runs `_post_step` after each step; every
write to the live `MjData` (cube resets) happens there. The render thread only reads snapshots. Other threads
read cached values under `_lock`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from dm1.sim.config import TwinConfig
from dm1.sim.reflex import abort_running_motion
from dm1.sim.renderer import CameraFrame, CameraRenderer
from dm1.sim.scene import CUBE_JOINT, build_scene
from dm1.sim.user_stop import UserStop

log = logging.getLogger(__name__)

#: A physics step this long (wall time) after the previous one is logged: franky-sim answers libfranka from
#: the physics thread, so a pause near libfranka's 1 s UDP timeout is a network fault in its client.
PHYSICS_PAUSE_WARN_S = 0.25

#: Joint configuration franky-sim starts in; send the arm here between episodes (rad).
HOME_Q: tuple[float, ...] = (0.0, 0.0, 0.0, -1.57, 0.0, 1.57, 0.785)
#: Top-down EE orientation at HOME_Q (fr3_hand_tcp, quaternion x, y, z, w).
TOP_DOWN_QUAT_XYZW: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 0.0)


class TwinStartError(RuntimeError):
    """The twin could not serve franky-sim (its address's ports are taken)."""


@dataclass(frozen=True)
class CubePose:
    """Cube pose in fr3_link0: position (3,) m and orientation quaternion (4,) x, y, z, w."""

    pos: np.ndarray
    quat_xyzw: np.ndarray


def _yaw_quat_wxyz(yaw: float) -> np.ndarray:
    return np.array([math.cos(0.5 * yaw), 0.0, 0.0, math.sin(0.5 * yaw)])


class Twin:
    """The digital twin. `start()` it, connect franky to `robot_host`, read frames, `reset()`, `is_success()`.

    Usable as a context manager (`with Twin(cfg) as twin: ...`), which stops it on exit.
    """

    home_q: tuple[float, ...] = HOME_Q

    def __init__(self, cfg: TwinConfig | None = None) -> None:
        self.cfg = cfg or TwinConfig()
        self._rng = np.random.default_rng(self.cfg.seed)
        self._lock = threading.Lock()
        self._sim: Any = None
        self._server: Any = None
        self._renderer: CameraRenderer | None = None
        self._pending_reset: tuple[np.ndarray, threading.Event] | None = None
        self._pending_reflex: threading.Event | None = None
        self._user_stop: UserStop | None = None
        self._cube_qpos = np.zeros(7)
        self._sim_time = 0.0
        self._lift_start: float | None = None
        self._lifted = False
        self._success = False
        self._rtf_samples: deque[tuple[float, float]] = deque(maxlen=400)
        self._step = 0
        self._qadr = self._dadr = 0
        self._last_step_wall: float | None = None
        self.max_physics_pause_s = 0.0  #: longest wall time between two physics steps since start

    # -- lifecycle ----------------------------------------------------------------------------------------
    def start(self) -> Twin:
        """Build the scene, start the franky-sim servers (physics thread) and the render thread."""
        import mujoco
        from franky_sim import LocalHostnames, SimulationServer

        if self._server is not None:
            raise RuntimeError("Twin.start(): already started")
        self._sim, self._arm = build_scene(self.cfg)
        hosts = [self.cfg.host] if self.cfg.host else LocalHostnames()
        server = SimulationServer(self._sim, hostname_candidates=hosts)
        try:
            server.init()  # binds the robot/gripper ports, compiles the MJCF
        except Exception as exc:
            raise TwinStartError(
                f"Twin.start(): cannot start franky-sim on host {self.cfg.host!r}: {exc} (its ports 1337 and "
                "1338 are taken there, by another twin or franky-sim on this machine: stop it, or serve this "
                "one on another loopback address, e.g. `dm1 launch ... --sim-host auto`)"
            ) from exc
        self._server = server
        self._user_stop = UserStop(server.robot_servers[0])
        self._mujoco = mujoco
        model, data = self._sim.model, self._sim.data
        jid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, CUBE_JOINT)
        self._qadr, self._dadr = int(model.jnt_qposadr[jid]), int(model.jnt_dofadr[jid])
        self._write_cube(data, self._sample_cube_qpos(self._rng))
        mujoco.mj_forward(model, data)
        self._cache(data)
        self._renderer = CameraRenderer(
            model,
            self.cfg.cameras,
            self.cfg.shadows,
            self.cfg.max_render_backlog,
            lockstep=self.cfg.render_lockstep,
        )
        try:
            self._renderer.start()
        except Exception:
            server.cleanup()
            self._server = None
            raise
        self._sim.register_post_step_callback(self._post_step)
        server.run_async(realtime=self.cfg.realtime)
        return self

    def stop(self) -> None:
        """Stop the physics thread and the renderer; release the ports."""
        if self._server is not None:  # physics first: it may be waiting on the render queue
            self._server.cleanup()
            self._server = None
            self._user_stop = None
        if self._renderer is not None:
            self._renderer.stop()

    def __enter__(self) -> Twin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- physics thread -----------------------------------------------------------------------------------
    def _post_step(self, sim: Any) -> None:
        data = sim.data
        pending = self._pending_reset
        if pending is not None:
            self._pending_reset = None
            self._write_cube(data, pending[0])
            self._mujoco.mj_forward(sim.model, data)
            with self._lock:
                self._lift_start, self._lifted, self._success = None, False, False
            pending[1].set()
        reflex = self._pending_reflex
        if reflex is not None and abort_running_motion(self._server):
            self._pending_reflex = None
            reflex.set()
        if self._user_stop is not None and self._user_stop.pressed:
            abort_running_motion(self._server, self._user_stop.abort_status)
        self._cache(data)
        self._watch_pause()
        if self._renderer is not None:
            self._renderer.on_physics_step(data)

    def _watch_pause(self) -> None:
        """Keep the longest wall time between two physics steps; log one near libfranka's timeout."""
        wall = time.monotonic()
        pause = 0.0 if self._last_step_wall is None else wall - self._last_step_wall
        self.max_physics_pause_s = max(self.max_physics_pause_s, pause)
        if pause >= PHYSICS_PAUSE_WARN_S:
            log.warning("physics stood still for %.2f s of wall time (franky clients time out at 1 s)", pause)
        self._last_step_wall = wall

    def _cache(self, data: Any) -> None:
        now = float(data.time)
        qpos = data.qpos[self._qadr : self._qadr + 7].copy()
        lift = qpos[2] - 0.5 * self.cfg.cube_size - self.cfg.table.top_z
        with self._lock:
            self._cube_qpos = qpos
            self._sim_time = now
            self._lifted = bool(lift >= self.cfg.success_height)
            if not self._lifted:
                self._lift_start = None
            elif self._lift_start is None:
                self._lift_start = now
            if self._lifted and now - self._lift_start >= self.cfg.success_hold_s - 1e-9:
                self._success = True
        self._step += 1
        if self._step % 50 == 0:
            self._rtf_samples.append((time.monotonic(), now))

    def _write_cube(self, data: Any, qpos: np.ndarray) -> None:
        data.qpos[self._qadr : self._qadr + 7] = qpos
        data.qvel[self._dadr : self._dadr + 6] = 0.0

    def _sample_cube_qpos(self, rng: np.random.Generator) -> np.ndarray:
        (x0, x1), (y0, y1) = self.cfg.cube_region
        x, y = rng.uniform(x0, x1), rng.uniform(y0, y1)
        yaw = rng.uniform(*self.cfg.cube_yaw_range)
        return np.concatenate([[x, y, self.cfg.cube_rest_z + 0.0005], _yaw_quat_wxyz(yaw)])

    # -- public API ---------------------------------------------------------------------------------------
    @property
    def robot_host(self) -> str:
        """Address franky connects to: `franky.Robot(host, realtime_config=RealtimeConfig.Ignore)`."""
        if self._server is None:
            raise RuntimeError("Twin.robot_host: the twin is not started")
        return str(self._server.robot_servers[0].hostname)

    def sim_time(self) -> float:
        """Simulated seconds (MjData.time) after the last completed physics step."""
        with self._lock:
            return self._sim_time

    def wait_sim_time(self, t: float, timeout_s: float = 30.0, poll_s: float = 0.001) -> bool:
        """Block until sim_time() >= t (False if `timeout_s` of wall time passes first)."""
        deadline = time.monotonic() + timeout_s
        while self.sim_time() < t:
            if time.monotonic() > deadline:
                return False
            time.sleep(poll_s)
        return True

    def add_frame_listener(self, callback: Callable[[CameraFrame], None]) -> None:
        """Call `callback(frame)` from the render thread for every rendered `CameraFrame`."""
        if self._renderer is None:
            raise RuntimeError("Twin.add_frame_listener: start() the twin first")
        self._renderer.add_listener(callback)

    def latest_frame(self, name: str) -> CameraFrame | None:
        """Most recent frame of camera `name` (None before the first)."""
        if name not in self.cfg.cameras:
            raise KeyError(
                f"Twin.latest_frame: unknown camera {name!r}; configured: {sorted(self.cfg.cameras)}"
            )
        return self._renderer.latest(name) if self._renderer else None

    @property
    def renderer(self) -> CameraRenderer | None:
        """The camera renderer (statistics: render_ms, frames_rendered, frames_dropped)."""
        return self._renderer

    def cube_pose(self) -> CubePose:
        """Cube pose after the last physics step (fr3_link0; quaternion x, y, z, w)."""
        with self._lock:
            q = self._cube_qpos.copy()
        return CubePose(q[:3], np.array([q[4], q[5], q[6], q[3]]))

    def reset(self, seed: int | None = None, timeout_s: float = 10.0) -> CubePose:
        """Put the cube at a new random pose in `cube_region` and clear the success state.

        With `seed`, the pose depends on the seed only (same seed -> same pose); without, it comes from the
        twin's stream seeded by `cfg.seed`. Applied inside the physics thread; the arm is homed by the caller
        (e.g. franky `JointMotion(twin.home_q)`).
        """
        rng = np.random.default_rng(seed) if seed is not None else self._rng
        qpos = self._sample_cube_qpos(rng)
        if self._server is None:
            raise RuntimeError("Twin.reset: start() the twin first")
        done = threading.Event()
        self._pending_reset = (qpos, done)
        if not done.wait(timeout_s):
            raise TimeoutError(f"Twin.reset: physics thread did not apply the reset within {timeout_s} s")
        return CubePose(qpos[:3].copy(), np.array([qpos[4], qpos[5], qpos[6], qpos[3]]))

    def inject_reflex(self, timeout_s: float = 1.0) -> bool:
        """Abort the arm's running motion as a reflex of the real FR3 would (`dm1.sim.reflex`): franky raises
        a `ControlException` in its client. For fault drills. Applied in the physics thread at the first step
        with a motion running; False when none ran within `timeout_s` of wall time (nothing is left armed).
        """
        if self._server is None:
            raise RuntimeError("Twin.inject_reflex: start() the twin first")
        done = threading.Event()
        self._pending_reflex = done
        if done.wait(timeout_s):
            return True
        self._pending_reflex = None
        return done.is_set()  # applied between the timeout and the disarm

    def set_user_stop(self, pressed: bool) -> None:
        """Press or release the FR3's user stop (`dm1.sim.user_stop`): while pressed, the running motion is
        aborted ("User Stop pressed!"), new motions are rejected and error recovery fails."""
        if self._user_stop is None:
            raise RuntimeError("Twin.set_user_stop: start() the twin first")
        self._user_stop.pressed = bool(pressed)

    @property
    def user_stop_pressed(self) -> bool:
        """Whether the user stop is pressed."""
        return self._user_stop is not None and self._user_stop.pressed

    def is_lifted(self) -> bool:
        """The cube's bottom is at least `success_height` above the table right now."""
        with self._lock:
            return self._lifted

    def is_success(self) -> bool:
        """The cube stayed lifted for `success_hold_s` of sim time since the last reset (latched)."""
        with self._lock:
            return self._success

    def real_time_factor(self, window_s: float = 5.0) -> float:
        """Simulated seconds per wall second over the last `window_s` seconds (0.0 before enough samples)."""
        samples = list(self._rtf_samples)
        if len(samples) < 2:
            return 0.0
        end_wall, end_sim = samples[-1]
        start = next((s for s in samples if end_wall - s[0] <= window_s), samples[0])
        if end_wall - start[0] <= 0:
            return 0.0
        return (end_sim - start[1]) / (end_wall - start[0])
