"""ROS-free pyrealsense2 wrapper: devices by serial, color + optional aligned depth, timestamps, drops.

Timestamps: every frame carries a device timestamp (ms; `hardware_clock`, or `global_time` when the firmware's
global time is enabled, or the recorded one on playback). `ClockMapper` turns it into host/ROS time as
`stamp = device_ts + offset`, where `offset` is the **minimum** of `arrival_time - device_ts` over a sliding
window (default 10 s): transport latency only ever *adds* delay, so the smallest sample is the best estimate
of the true offset, and re-estimating it continuously tracks clock drift (tens of ppm: < 1 ms per 10 s). A
jump of more than `reset_threshold_s` (device reset, playback loop) re-anchors the window. A stamp is never
later than the frame's arrival time (so a faster-than-real-time playback is stamped at arrival).

Frame drops: `FrameDropCounter` counts gaps in the delivered color frame numbers (a backwards number = a
device or playback restart, counted as a reset, not a drop). With depth, a color frame is delivered only
together with a depth frame stamped within half a frame period; an unmatched color frame counts as dropped.

No camera: `RealSenseCamera.start()` raises `NoDeviceError` with the serials that were found.
Playback: a `.db3` recording is replayed through the normal `rs.pipeline` (`enable_device_from_file`).
Recording test fixtures: `dm1.camera.recording.record_synthetic()`.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Parameters of `dm1_ros.realsense_node`: name -> (default, description, bounds) for `dm1_ros.params`.
NODE_PARAMETERS: dict[str, tuple[Any, str, tuple[float, float] | None]] = {
    "camera_names": (["front"], "camera names: topics /camera/<name>/color/...", None),
    "serials": ([], "device serial per camera, in camera_names order; empty = the first device", None),
    "width": (640, "color/depth width [px]", (1, 4096)),
    "height": (480, "color/depth height [px]", (1, 4096)),
    "fps": (30, "color/depth frame rate [Hz]", (1, 300)),
    "enable_depth": (False, "also publish depth (aligned_depth_to_color)", None),
    "align_depth": (True, "align depth to the color frame", None),
    "playback_file": ("", ".db3 recording to replay instead of a device; {name} = camera name", None),
    "playback_realtime": (True, "pace playback at the recorded rate", None),
    "playback_repeat": (False, "loop the recording", None),
    "diagnostics_period_s": (1.0, "period of /diagnostics [s]", (0.05, 60.0)),
}


class NoDeviceError(RuntimeError):
    """No RealSense device (or not the requested serial) is connected."""


@dataclass
class CameraConfig:
    """One RealSense camera stream.

    Args:
        name: camera name (topics `/camera/<name>/...`).
        serial: device serial number; "" = the first device found.
        width, height, fps: color (and depth) stream mode.
        enable_depth: also stream depth (z16).
        align_depth: align depth to the color frame (`rs.align`), so pixel (u, v) matches in both.
        playback_file: replay this `.db3` recording instead of opening a device.
        playback_realtime: pace playback at the recorded rate (False: as fast as the reader consumes).
        playback_repeat: loop the recording.
    """

    name: str
    serial: str = ""
    width: int = 640
    height: int = 480
    fps: int = 30
    enable_depth: bool = False
    align_depth: bool = True
    playback_file: str = ""
    playback_realtime: bool = True
    playback_repeat: bool = False

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").isalnum():
            raise ValueError(f"CameraConfig.name: expected a name like 'front', found {self.name!r}")
        for key in ("width", "height", "fps"):
            value = getattr(self, key)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(
                    f"CameraConfig.{key} ({self.name}): expected a positive int, found {value!r}"
                )
        if self.playback_file:
            path = Path(self.playback_file)
            if path.suffix != ".db3":
                raise ValueError(
                    f"CameraConfig.playback_file ({self.name}): expected a .db3 file, found {path}"
                )
            if not path.is_file():
                raise ValueError(f"CameraConfig.playback_file ({self.name}): {path} does not exist")


@dataclass
class Intrinsics:
    """Pinhole intrinsics of the color stream (`rs.intrinsics`)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    model: str
    coeffs: list[float]

    def camera_info_fields(self) -> dict[str, object]:
        """`sensor_msgs/CameraInfo` fields (width, height, distortion_model, d, k, r, p) as plain values."""
        plumb_bob = self.model in ("none", "brown_conrady", "modified_brown_conrady")
        return {
            "width": self.width,
            "height": self.height,
            "distortion_model": "plumb_bob" if plumb_bob else self.model,
            "d": [float(c) for c in self.coeffs],
            "k": [self.fx, 0.0, self.cx, 0.0, self.fy, self.cy, 0.0, 0.0, 1.0],
            "r": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
            "p": [self.fx, 0.0, self.cx, 0.0, 0.0, self.fy, self.cy, 0.0, 0.0, 0.0, 1.0, 0.0],
        }


@dataclass
class CameraFrame:
    """One color frame (and the aligned depth frame when enabled)."""

    name: str
    color: np.ndarray  # (H, W, 3) uint8, RGB
    depth: np.ndarray | None  # (H, W) uint16 in `depth_scale` metres per unit, aligned to color when enabled
    stamp_s: float  # host/ROS time of exposure (ClockMapper)
    device_ts_ms: float  # the device's own timestamp
    frame_number: int
    intrinsics: Intrinsics
    depth_scale: float  # metres per depth unit (0.0 without depth)


class FrameDropCounter:
    """Counts frames lost between consecutive frame numbers."""

    def __init__(self) -> None:
        self.received = 0
        self.dropped = 0
        self.resets = 0
        self.last: int | None = None

    def update(self, frame_number: int) -> int:
        """Register a frame number; return how many frames were skipped just before it."""
        gap = 0
        if self.last is not None:
            if frame_number <= self.last:
                self.resets += 1
            else:
                gap = frame_number - self.last - 1
        self.dropped += gap
        self.received += 1
        self.last = frame_number
        return gap


class ClockMapper:
    """Maps device timestamps (ms) to host time (s): min-offset over a sliding window, see the module doc."""

    def __init__(self, window_s: float = 10.0, reset_threshold_s: float = 1.0) -> None:
        if window_s <= 0 or reset_threshold_s <= 0:
            raise ValueError(
                f"ClockMapper: window_s and reset_threshold_s must be > 0, found {window_s}, "
                f"{reset_threshold_s}"
            )
        self.window_s = window_s
        self.reset_threshold_s = reset_threshold_s
        self._samples: collections.deque[tuple[float, float]] = collections.deque()  # (device_s, offset_s)
        self.resets = 0
        self.offset_s: float | None = None

    def map(self, device_ts_ms: float, arrival_s: float) -> float:
        """Host time of a frame stamped `device_ts_ms` by the device that arrived at host time `arrival_s`."""
        device_s = device_ts_ms / 1000.0
        sample = arrival_s - device_s
        if self._samples and (
            device_s < self._samples[-1][0] or abs(sample - self.offset_s) > self.reset_threshold_s  # type: ignore[operator]
        ):
            self._samples.clear()  # device clock restarted or jumped: re-anchor
            self.resets += 1
        self._samples.append((device_s, sample))
        while self._samples[0][0] < device_s - self.window_s:
            self._samples.popleft()
        self.offset_s = min(off for _, off in self._samples)
        return device_s + self.offset_s


def _rs():  # imported lazily: pyrealsense2 needs libusb and is not required by the rest of dm1
    # A process that also uses rclpy must import rclpy first: pyrealsense2 (2.56+) carries its own Fast DDS
    # (realdds), and when it is loaded before rclpy's rmw_fastrtps the duplicated static objects are
    # destroyed twice at exit (a segfault after a clean run; seen with 2.59.1). The realsense node does so.
    import pyrealsense2 as rs

    return rs


def list_devices() -> list[dict[str, str]]:
    """Connected RealSense devices: `[{"serial": ..., "name": ...}]`."""
    rs = _rs()
    info = rs.camera_info
    return [
        {"serial": d.get_info(info.serial_number), "name": d.get_info(info.name)}
        for d in rs.context().query_devices()
    ]


READ_SLICE_S = 0.05  # `read` waits in slices this long, checking for the end of a playback in between
PLAYBACK_END_GRACE_S = 0.5  # after the file's end, how long queued frames may still take to come out


class RealSenseCamera:
    """One RealSense stream (device or `.db3` playback) read on its own thread.

    Args:
        cfg: stream configuration.
        clock: host time source in seconds (the ROS node passes its clock, so stamps follow `use_sim_time`).
    """

    def __init__(self, cfg: CameraConfig, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.clock = clock
        self.drops = FrameDropCounter()
        self.mapper = ClockMapper()
        self.unpaired = 0  # color frames skipped: the syncer paired them with an older depth frame
        self._pipeline = None
        self._playback_end = None  # () -> bool: a non-repeating playback has read its file to the end
        self._align = None
        self._depth_scale = 0.0
        self._intrinsics: Intrinsics | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self.last_frame_s: float | None = None  # host time of the last delivered frame

    def start(self, callback: Callable[[CameraFrame], None] | None = None) -> None:
        """Open the device or file; with `callback`, deliver frames to it from a reader thread."""
        rs = _rs()
        cfg = self.cfg
        rs_cfg = rs.config()
        if cfg.playback_file:
            rs_cfg.enable_device_from_file(str(cfg.playback_file), repeat_playback=cfg.playback_repeat)
        else:
            found = list_devices()
            if not found or (cfg.serial and cfg.serial not in {d["serial"] for d in found}):
                which = f" with serial {cfg.serial}" if cfg.serial else ""
                serials = [d["serial"] for d in found] or "none"
                raise NoDeviceError(
                    f"camera {cfg.name!r}: no RealSense device{which} is connected (found: {serials})"
                )
            if cfg.serial:
                rs_cfg.enable_device(cfg.serial)
            rs_cfg.enable_stream(rs.stream.color, cfg.width, cfg.height, rs.format.rgb8, cfg.fps)
            if cfg.enable_depth:
                rs_cfg.enable_stream(rs.stream.depth, cfg.width, cfg.height, rs.format.z16, cfg.fps)
        pipeline = rs.pipeline()
        if cfg.playback_file:
            # Pace the resolved device *before* start: set after start, the first frames can be lost.
            rs_cfg.resolve(rs.pipeline_wrapper(pipeline)).get_device().as_playback().set_real_time(
                cfg.playback_realtime
            )
        profile = pipeline.start(rs_cfg)
        device = profile.get_device()
        self._pipeline = pipeline
        if cfg.playback_file and not cfg.playback_repeat:
            playback = device.as_playback()
            self._playback_end = lambda: playback.current_status() == rs.playback_status.stopped
        has_depth = cfg.enable_depth and any(
            s.stream_type() == rs.stream.depth for s in profile.get_streams()
        )
        if has_depth:
            self._depth_scale = float(device.first_depth_sensor().get_depth_scale())
            self._align = rs.align(rs.stream.color) if cfg.align_depth else None
        self._has_depth = has_depth
        color = profile.get_stream(rs.stream.color).as_video_stream_profile().get_intrinsics()
        self._intrinsics = Intrinsics(
            color.width,
            color.height,
            color.fx,
            color.fy,
            color.ppx,
            color.ppy,
            str(color.model).split(".")[-1],
            list(color.coeffs),
        )
        if callback is not None:
            self._thread = threading.Thread(
                target=self._loop, args=(callback,), name=f"rs-{cfg.name}", daemon=True
            )
            self._thread.start()

    def read(self, timeout_s: float = 1.0) -> CameraFrame | None:
        """The next new color frame; None after `timeout_s` without one, or as soon as a non-repeating
        playback has ended (its file read to the end and nothing delivered for `PLAYBACK_END_GRACE_S`)."""
        if self._pipeline is None:
            raise RuntimeError(f"camera {self.cfg.name!r}: read() before start()")
        deadline = time.monotonic() + timeout_s
        ended_at: float | None = None
        while (left := deadline - time.monotonic()) > 0:
            ok, frames = self._pipeline.try_wait_for_frames(max(1, int(min(left, READ_SLICE_S) * 1000)))
            if not ok:
                if self._playback_end is not None and self._playback_end():
                    ended_at = ended_at or time.monotonic()  # frames already read may still be queued
                    if time.monotonic() - ended_at >= PLAYBACK_END_GRACE_S:
                        return None
                continue
            arrival = self.clock()
            color = frames.get_color_frame()
            if not color or color.get_frame_number() == self.drops.last:
                continue  # the syncer repeats a frame when only the depth stream advanced
            if self._has_depth and not self._depth_matches(frames, color):
                self.unpaired += 1
                continue  # the syncer paired this color with an older depth; the matching pair follows
            return self._convert(frames, color, arrival)
        return None

    def _depth_matches(self, frames, color) -> bool:  # noqa: ANN001 - pyrealsense2 types
        depth = frames.get_depth_frame()
        return bool(depth) and abs(depth.get_timestamp() - color.get_timestamp()) <= 500.0 / self.cfg.fps

    def _convert(self, frames, color, arrival: float) -> CameraFrame:  # noqa: ANN001 - pyrealsense2 types
        number = int(color.get_frame_number())
        self.drops.update(number)
        device_ts = float(color.get_timestamp())
        depth = None
        if self._has_depth:
            if self._align is not None:
                frames = self._align.process(frames)
            depth_frame = frames.get_depth_frame()
            depth = np.asanyarray(depth_frame.get_data()).copy() if depth_frame else None  # (H, W) uint16
        rgb = np.asanyarray(color.get_data()).copy()  # (H, W, 3) uint8
        return CameraFrame(
            self.cfg.name,
            rgb,
            depth,
            self.mapper.map(device_ts, arrival),
            device_ts,
            number,
            self._intrinsics,
            self._depth_scale,
        )  # type: ignore[arg-type]

    def _loop(self, callback: Callable[[CameraFrame], None]) -> None:
        try:
            while not self._stop.is_set():
                frame = self.read(timeout_s=0.5)
                if frame is not None:
                    callback(frame)
                    self.last_frame_s = self.clock()
        except BaseException as exc:  # surfaced by `alive` / the node's diagnostics
            self.error = exc

    def health(self, now_s: float, max_age_s: float = 1.0) -> tuple[int, str, dict[str, object]]:
        """(level 0 ok / 1 warn / 2 error, message, counters) for diagnostics."""
        age = now_s - self.last_frame_s if self.last_frame_s is not None else float("inf")
        values = dict(vars(self.drops), clock_offset_s=self.mapper.offset_s, clock_resets=self.mapper.resets)
        values["frame_age_s"] = age
        values["unpaired_color"] = self.unpaired
        if self.error is not None or age > max_age_s:
            return 2, f"no frames for {age:.1f} s" + (f": {self.error}" if self.error else ""), values
        if self.drops.dropped:
            return 1, f"{self.drops.dropped} frames dropped", values
        return 0, "streaming", values

    @property
    def alive(self) -> bool:
        """Whether the reader thread is running without error."""
        return self._thread is not None and self._thread.is_alive() and self.error is None

    def stop(self) -> None:
        """Stop the reader thread and the pipeline (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self._pipeline is not None:
            with contextlib.suppress(RuntimeError):  # already stopped
                self._pipeline.stop()
            self._pipeline, self._playback_end = None, None

    def __enter__(self) -> RealSenseCamera:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
