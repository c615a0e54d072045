"""Offscreen camera rendering for the twin, paced by *simulation* time.

The physics thread calls `CameraRenderer.on_physics_step(data)` after every step. When a camera is due, it
copies `qpos` into a snapshot and queues it; the render thread (which owns the EGL context, as EGL contexts
belong to their creating thread) replays the snapshot into its own render-only `MjData` and renders every due
camera. When the render thread falls `max_backlog` snapshots behind, the physics thread waits for it, so every
camera keeps its rate in simulation time even on a slow CPU (the simulation slows down instead of dropping
frames) - but never longer than `put_timeout_s` (0.5 s), because libfranka gives up after 1 s without a
state packet; frames are dropped (and counted) instead.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import mujoco
import numpy as np

from dm1.sim.config import CameraSpec
from dm1.sim.scene import camera_element_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CameraFrame:
    """One rendered image.

    Attributes:
        name: dm1 camera name (`front`, `wrist`, ...).
        stamp_sim_s: Simulation time of the rendered state (s).
        rgb: (H, W, 3) uint8 image, row 0 at the top.
        intrinsics: (fx, fy, cx, cy) in pixels.
        render_ms: Wall time spent rendering this frame (ms).
    """

    name: str
    stamp_sim_s: float
    rgb: np.ndarray
    intrinsics: tuple[float, float, float, float]
    render_ms: float


@dataclass
class _Snapshot:
    stamp: float
    qpos: np.ndarray  # (nq,)
    cameras: tuple[str, ...]


_STOP = object()


class CameraRenderer:
    """Renders the configured cameras of a compiled model on a dedicated thread, at their fps in sim time."""

    def __init__(
        self,
        model: mujoco.MjModel,
        cameras: dict[str, CameraSpec],
        shadows: bool = False,
        max_backlog: int = 2,
        put_timeout_s: float = 0.5,
        lockstep: bool = True,
    ) -> None:
        self._model = model
        self._cameras = dict(cameras)
        self._shadows = shadows
        self._period = {name: 1.0 / spec.fps for name, spec in cameras.items()}
        self._intrinsics = {name: spec.intrinsics() for name, spec in cameras.items()}
        self._next_due: dict[str, float | None] = dict.fromkeys(cameras)
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max_backlog)
        self._put_timeout_s = put_timeout_s
        # Lockstep: the physics thread waits until the snapshot is rendered, so simulated time does not
        # advance while the (slow, software) renderer works and a frame is delivered at the sim time it shows,
        # as a real camera exposure is instantaneous relative to the scene. Without it, frames arrive tens of
        # ms of sim time after their stamp on this CPU.
        self._lockstep = lockstep
        self._rendered = threading.Event()
        self._listeners: list[Callable[[CameraFrame], None]] = []
        self._latest: dict[str, CameraFrame] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self.render_ms: deque[float] = deque(maxlen=5000)
        self.frames_rendered = 0
        self.frames_dropped = 0
        self.physics_wait_s = 0.0

    # -- physics-thread side -------------------------------------------------------------------------------
    def on_physics_step(self, data: mujoco.MjData) -> None:
        """Queue a snapshot if any camera is due at `data.time` (call from the physics thread only)."""
        if not self._cameras or not self._ready.is_set():
            return
        now = float(data.time)
        due = []
        for name, nxt in self._next_due.items():
            if nxt is None or now + 1e-9 >= nxt:
                due.append(name)
                period = self._period[name]
                nxt = now if nxt is None else nxt
                while nxt <= now + 1e-9:  # skip missed slots (e.g. after a pause) instead of bursting
                    nxt += period
                self._next_due[name] = nxt
        if not due:
            return
        snap = _Snapshot(now, data.qpos.copy(), tuple(due))
        start = time.monotonic()
        self._rendered.clear()
        try:
            self._queue.put(snap, timeout=self._put_timeout_s)
            if self._lockstep and not self._rendered.wait(self._put_timeout_s):
                log.warning("render thread took over %.1f s; physics continues", self._put_timeout_s)
        except queue.Full:
            self.frames_dropped += len(due)
            log.warning("render thread stalled for %.1f s; dropped frames for %s", self._put_timeout_s, due)
        self.physics_wait_s += time.monotonic() - start

    # -- consumer API --------------------------------------------------------------------------------------
    def add_listener(self, callback: Callable[[CameraFrame], None]) -> None:
        """Call `callback(frame)` on the render thread for every new frame (keep it short)."""
        with self._lock:
            self._listeners.append(callback)

    def latest(self, name: str) -> CameraFrame | None:
        """Most recent frame of camera `name`, or None before the first one."""
        with self._lock:
            return self._latest.get(name)

    # -- lifecycle ----------------------------------------------------------------------------------------
    def start(self, timeout_s: float = 60.0) -> None:
        """Start the render thread and wait until its renderers exist (EGL setup takes ~1 s)."""
        if not self._cameras:
            return
        self._thread = threading.Thread(target=self._run, name="dm1-twin-render", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s) or self._error is not None:
            raise RuntimeError(f"twin renderer failed to start (MUJOCO_GL=egl?): {self._error!r}")

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the render thread and free its GL contexts."""
        if self._thread is None:
            return
        self._ready.clear()
        while True:  # make room for the stop marker even if the queue is full
            try:
                self._queue.put_nowait(_STOP)
                break
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()
        self._thread.join(timeout_s)
        self._thread = None

    # -- render thread ------------------------------------------------------------------------------------
    def _run(self) -> None:
        renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        try:
            data = mujoco.MjData(self._model)
            for spec in self._cameras.values():
                key = (spec.height, spec.width)
                if key not in renderers:
                    renderers[key] = mujoco.Renderer(self._model, spec.height, spec.width)
            cam_ids = {n: camera_element_name(n) for n in self._cameras}
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    break
                assert isinstance(item, _Snapshot)
                data.qpos[:] = item.qpos
                data.time = item.stamp
                mujoco.mj_forward(self._model, data)
                for name in item.cameras:
                    spec = self._cameras[name]
                    t0 = time.perf_counter()
                    renderer = renderers[(spec.height, spec.width)]
                    renderer.update_scene(data, camera=cam_ids[name])
                    if not self._shadows:
                        renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
                    rgb = renderer.render().copy()  # (H, W, 3) uint8
                    ms = 1000.0 * (time.perf_counter() - t0)
                    frame = CameraFrame(name, item.stamp, rgb, self._intrinsics[name], ms)
                    self.render_ms.append(ms)
                    self.frames_rendered += 1
                    with self._lock:
                        self._latest[name] = frame
                        listeners = list(self._listeners)
                    for callback in listeners:
                        try:
                            callback(frame)
                        except Exception:  # a bad listener must not kill the cameras
                            log.exception("camera frame listener failed")
                self._rendered.set()
        finally:
            for renderer in renderers.values():
                renderer.close()
