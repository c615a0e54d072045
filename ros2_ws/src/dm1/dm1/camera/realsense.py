"""ROS-free pyrealsense2 wrapper: devices by serial, color + optional aligned depth, timestamps, drops.

Timestamps: every frame carries a device timestamp (ms; `hardware_clock`, or `global_time` when the firmware's
global time is enabled, or the recorded one on playback). `ClockMapper` turns it into host/ROS time as
`stamp = device_ts + offset`, where `offset` is the **minimum** of `arrival_time - device_ts` over a sliding
window (default 10 s): transport latency only ever *adds* delay, so the smallest sample is the best estimate
of the true offset, and re-estimating it continuously tracks clock drift (tens of ppm: < 1 ms per 10 s).
Device time going backwards (device reset, playback loop) or jumping ahead of the arrival re-anchors the
window at once. Frames arriving late (a USB/reader stall and its burst) keep their capture time, so they
look old; only a lateness that persists for a second of a flowing stream (a host clock step) re-anchors
(details: `ClockMapper`). A stamp is never later than the frame's arrival time (so a faster-than-real-time
playback is stamped at arrival). Device time that stops advancing (stamps repeat) is a WARN in `health()`.

Frame drops: `FrameDropCounter` counts gaps in the delivered color frame numbers (a backwards number = a
device or playback restart, counted as a reset, not a drop; so is an implausible forward jump, more than
5 s of frames at the stream rate). With depth, a color frame is delivered only together with a depth frame
stamped within half a frame period of the streams' own rate (a recording's, not the configured `fps`); an
unmatched color frame is counted in `unpaired`, which the diagnostics name when nothing is delivered.

Formats (`dm1.camera.image_layout`): color is always delivered as RGB; a recording in bgr8, rgba8 or bgra8 is
converted, any other color format is refused at start (`PlaybackFileError` naming the file and the formats).
Depth is delivered at its own size (color's when aligned), with its own intrinsics when not aligned.

No camera: `RealSenseCamera.start()` raises `NoDeviceError` with the serials that were found.
Playback: a `.db3` recording is replayed through the normal `rs.pipeline` (`enable_device_from_file`); the
recording's own stream modes are streamed (`width`/`height`/`fps` do not apply, see `describe()`). A file that
librealsense cannot replay (corrupt, truncated, empty, not a RealSense rosbag) raises `PlaybackFileError` (a
ValueError) naming the file. When a non-repeating playback ends, the camera stops reading, calls `on_end`, and
`health()` reports WARN "playback of FILE ended" instead of the stale-frames ERROR.
Node parameters: `camera_configs()` checks them (unique names, string serials) and builds the configs.
Recording test fixtures: `dm1.camera.recording.record_synthetic()`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dm1.camera.camera_config import (  # noqa: F401 - re-exported: dm1.camera.realsense's API
    NODE_PARAMETERS,
    CameraConfig,
    NoDeviceError,
    PlaybackFileError,
    camera_configs,
)
from dm1.camera.camera_frame import CameraFrame, Intrinsics
from dm1.camera.camera_health import camera_health
from dm1.camera.frame_timing import ClockMapper, FrameDropCounter  # noqa: F401 - re-exported
from dm1.camera.image_layout import check_color_format, to_rgb


def _intrinsics(stream: Any) -> Intrinsics:
    """`Intrinsics` of an `rs.stream_profile` (a video stream)."""
    i = stream.as_video_stream_profile().get_intrinsics()
    return Intrinsics(
        i.width, i.height, i.fx, i.fy, i.ppx, i.ppy, str(i.model).split(".")[-1], list(i.coeffs)
    )


def _format(stream: Any) -> str:
    """`rgb8`: the librealsense format of an `rs.stream_profile`."""
    return str(stream.format()).split(".")[-1]


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


def _describe_profile(stream: Any) -> str:
    """`color 64x48 rgb8 @ 30 fps` for an `rs.stream_profile`."""
    video = stream.as_video_stream_profile()
    kind, fmt = str(stream.stream_type()).split(".")[-1], _format(stream)
    return f"{kind} {video.width()}x{video.height()} {fmt} @ {stream.fps()} fps"


def _size(path: Path) -> int | None:
    """The file's size in bytes; None when it cannot be read."""
    try:
        return path.stat().st_size
    except OSError:
        return None


def _librealsense_reason(exc: RuntimeError) -> str:
    """librealsense's own reason on one line, without its "Failed to resolve request ... Reason:" preamble."""
    text = " ".join(str(exc).split())
    return text.split("Reason: ", 1)[-1] or type(exc).__name__


READ_SLICE_S = 0.05  # `read` waits in slices this long, checking for the end of a playback in between
# After the file's end, how long queued frames may still take to come out. It was 0.5 s until a depth
# playback delivered one frameset and then none in a loaded CI run (not reproduced; an early end is one
# candidate, a stuck non-real-time playback the other); 2 s gives the first a 4x margin.
PLAYBACK_END_GRACE_S = 2.0


class RealSenseCamera:
    """One RealSense stream (device or `.db3` playback) read on its own thread.

    Args:
        cfg: stream configuration.
        clock: host time source in seconds (the ROS node passes its clock, so stamps follow `use_sim_time`).
    """

    def __init__(self, cfg: CameraConfig, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.clock = clock
        self.drops = FrameDropCounter(cfg.fps)  # a playback: its own rate, from start()
        self.mapper = ClockMapper()
        self.unpaired = 0  # color frames skipped: the syncer paired them with an older depth frame
        self._pipeline = None
        self._playback_end = None  # () -> bool: a non-repeating playback has read its file to the end
        self._align = None
        self._depth_scale = 0.0
        self._intrinsics: Intrinsics | None = None
        self._depth_intrinsics: Intrinsics | None = None  # unaligned depth only
        self._color_format = "rgb8"
        self.pair_tolerance_ms = 500.0 / cfg.fps  # half a frame period; a playback: of its own rate
        self._streams: list[str] = []  # `_describe_profile` of each stream read
        self.playback_ended = False  # a non-repeating playback has been read to its end
        self.end_seen_s: float | None = None  # when `read` first found the playback stopped (monotonic)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self.last_frame_s: float | None = None  # host time of the last delivered frame

    def start(
        self,
        callback: Callable[[CameraFrame], None] | None = None,
        on_end: Callable[[], None] | None = None,
    ) -> None:
        """Open the device or file; with `callback`, deliver frames to it from a reader thread.

        Args:
            callback: receives every frame, on the reader thread.
            on_end: called once, on the reader thread, when a non-repeating playback has ended (the thread
                then stops; `health()` reports the end).

        Raises:
            NoDeviceError: no device (or not the configured serial) is connected.
            PlaybackFileError: `playback_file` is not a RealSense recording librealsense can replay.
        """
        rs = _rs()
        cfg = self.cfg
        pipeline, profile = self._open_playback(rs) if cfg.playback_file else self._open_device(rs)
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
        streams = [profile.get_stream(rs.stream.color)]
        streams += [profile.get_stream(rs.stream.depth)] if has_depth else []
        self._streams = [_describe_profile(stream) for stream in streams]
        self._color_format = _format(streams[0])  # rgb8 from a device; a playback's is checked on opening
        self._intrinsics = _intrinsics(streams[0])
        if has_depth and not cfg.align_depth:
            self._depth_intrinsics = _intrinsics(streams[1])
        rate = min(stream.fps() for stream in streams)  # the streams' own rate (a recording's on playback)
        self.pair_tolerance_ms = 500.0 / rate
        self.drops.set_rate(streams[0].fps())
        if callback is not None:
            self._thread = threading.Thread(
                target=self._loop, args=(callback, on_end), name=f"rs-{cfg.name}", daemon=True
            )
            self._thread.start()

    def _open_device(self, rs: Any) -> tuple[Any, Any]:
        """(pipeline, profile) of the configured device and mode; `NoDeviceError` when it is not connected."""
        cfg = self.cfg
        found = list_devices()
        if not found or (cfg.serial and cfg.serial not in {d["serial"] for d in found}):
            which = f" with serial {cfg.serial}" if cfg.serial else ""
            serials = [d["serial"] for d in found] or "none"
            raise NoDeviceError(
                f"camera {cfg.name!r}: no RealSense device{which} is connected (found: {serials})"
            )
        rs_cfg = rs.config()
        if cfg.serial:
            rs_cfg.enable_device(cfg.serial)
        rs_cfg.enable_stream(rs.stream.color, cfg.width, cfg.height, rs.format.rgb8, cfg.fps)
        if cfg.enable_depth:
            rs_cfg.enable_stream(rs.stream.depth, cfg.width, cfg.height, rs.format.z16, cfg.fps)
        pipeline = rs.pipeline()
        return pipeline, pipeline.start(rs_cfg)

    def _open_playback(self, rs: Any) -> tuple[Any, Any]:
        """(pipeline, profile) replaying `playback_file` (every recorded stream, at its recorded mode);
        `PlaybackFileError` naming the file when librealsense cannot replay it or it has no color stream."""
        cfg = self.cfg
        path = Path(cfg.playback_file)
        pipeline, started = rs.pipeline(), False
        try:
            rs_cfg = rs.config()
            rs_cfg.enable_device_from_file(str(path), repeat_playback=cfg.playback_repeat)
            # Pace the resolved device *before* start: set after start, the first frames can be lost.
            rs_cfg.resolve(rs.pipeline_wrapper(pipeline)).get_device().as_playback().set_real_time(
                cfg.playback_realtime
            )
            profile = pipeline.start(rs_cfg)
            started = True
            if not any(s.stream_type() == rs.stream.color for s in profile.get_streams()):
                kinds = sorted(str(s.stream_type()).split(".")[-1] for s in profile.get_streams())
                raise PlaybackFileError(
                    f"camera {cfg.name!r}: playback_file {path}: expected a color stream, found {kinds}"
                )
            try:  # bgr8/rgba8/bgra8 are converted to RGB; others (yuyv, y8, ...) would publish garbage
                check_color_format(
                    _format(profile.get_stream(rs.stream.color)), f"camera {cfg.name!r}: playback_file {path}"
                )
            except ValueError as exc:
                raise PlaybackFileError(str(exc)) from None
            return pipeline, profile
        except BaseException as exc:
            if started:
                with contextlib.suppress(RuntimeError):
                    pipeline.stop()
            if not isinstance(exc, RuntimeError):
                raise
            reason = "the file is empty (0 bytes)" if _size(path) == 0 else _librealsense_reason(exc)
            raise PlaybackFileError(
                f"camera {cfg.name!r}: playback_file {path}: not a RealSense recording (.db3 rosbag): "
                f"{reason}"
            ) from None

    def describe(self) -> str:
        """What `start()` opened, one line: `front: color 64x48 rgb8 @ 30 fps from rec.db3 (...)`.

        On playback the recording's own modes are streamed and the note says that the configured
        width/height/fps do not apply."""
        cfg = self.cfg
        if not self._streams:
            return f"{cfg.name}: not started"
        text = f"{cfg.name}: {', '.join(self._streams)}"
        if cfg.enable_depth and not self._has_depth:
            text += " (enable_depth: the recording has no depth stream)"
        if cfg.playback_file:
            repeat = ", repeating" if cfg.playback_repeat else ""
            text += (
                f" from recording {cfg.playback_file}{repeat} (its recorded modes: width/height/fps "
                "do not apply to playback)"
            )
        elif cfg.serial:
            text += f" from device {cfg.serial}"
        return text

    def read(self, timeout_s: float = 1.0) -> CameraFrame | None:
        """The next new color frame; None after `timeout_s` without one, or as soon as a non-repeating
        playback has ended (its file read to the end and nothing delivered for `PLAYBACK_END_GRACE_S`; then
        `playback_ended` is set and later calls return None at once)."""
        if self._pipeline is None:
            raise RuntimeError(f"camera {self.cfg.name!r}: read() before start()")
        if self.playback_ended:
            return None
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            ok, frames = self._pipeline.try_wait_for_frames(max(1, int(min(left, READ_SLICE_S) * 1000)))
            if not ok:
                if self._playback_end is not None and self._playback_end():
                    # frames already read may still be queued; the grace spans calls (a reader thread's
                    # timeout may be shorter than it)
                    self.end_seen_s = self.end_seen_s or time.monotonic()
                    if time.monotonic() - self.end_seen_s >= PLAYBACK_END_GRACE_S:
                        self.playback_ended = True
                        return None
                continue
            self.end_seen_s = None
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
        return bool(depth) and abs(depth.get_timestamp() - color.get_timestamp()) <= self.pair_tolerance_ms

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
        rgb = to_rgb(color.get_data(), self._color_format)  # (H, W, 3) uint8 RGB, a copy
        return CameraFrame(
            self.cfg.name,
            rgb,
            depth,
            self.mapper.map(device_ts, arrival),
            device_ts,
            number,
            self._intrinsics,
            self._depth_scale,
            self._depth_intrinsics,
        )  # type: ignore[arg-type]

    def _loop(
        self, callback: Callable[[CameraFrame], None], on_end: Callable[[], None] | None = None
    ) -> None:
        try:
            while not self._stop.is_set():
                frame = self.read(timeout_s=0.5)
                if frame is not None:
                    callback(frame)
                    self.last_frame_s = self.clock()
                elif self.playback_ended:  # nothing more will come: report it once and stop reading
                    if on_end is not None:
                        on_end()
                    return
        except BaseException as exc:  # surfaced by `alive` / the node's diagnostics
            self.error = exc

    def health(self, now_s: float, max_age_s: float = 1.0) -> tuple[int, str, dict[str, object]]:
        """(level 0 ok / 1 warn / 2 error, message, counters) for diagnostics: `camera_health`."""
        return camera_health(self, now_s, max_age_s)

    @property
    def hardware_id(self) -> str:
        """What the diagnostics name as the hardware: the recording file, else the serial."""
        return self.cfg.playback_file or self.cfg.serial or "first device"

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
