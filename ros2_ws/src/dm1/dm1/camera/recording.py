"""Write RealSense `.db3` recordings from numpy frames, without hardware (test fixtures, demos).

`rs.software_device` + `rs.recorder`: librealsense records rosbag2 SQLite (the file must end in `.db3`); the
result replays through the normal pipeline (`RealSenseCamera` with `playback_file`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dm1.camera.realsense import _rs

#: librealsense color formats `record_synthetic` writes: name -> bytes per pixel (the frames' channels).
RECORDABLE_COLOR_FORMATS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "yuyv": 2}


def _intrinsics(rs: Any, h: int, w: int) -> Any:
    """Pinhole intrinsics of a synthetic h x w stream: principal point at the centre, fx = fy = w."""
    intr = rs.intrinsics()
    intr.width, intr.height, intr.ppx, intr.ppy, intr.fx, intr.fy = w, h, w / 2, h / 2, float(w), float(w)
    intr.model, intr.coeffs = rs.distortion.none, [0.0] * 5
    return intr


def record_synthetic(
    path: str | Path,
    colors: Sequence[np.ndarray],
    fps: int = 30,
    frame_numbers: Sequence[int] | None = None,
    depths: Sequence[np.ndarray] | None = None,
    serial: str = "000000000000",
    start_ts_ms: float = 1000.0,
    pace: bool = True,
    color_format: str = "rgb8",
    timestamps_ms: Sequence[float] | None = None,
    depth_offset_ms: float = 0.0,
    push_at_s: Sequence[float] | None = None,
) -> Path:
    """Write numpy frames to a RealSense `.db3` recording (test fixtures; no hardware).

    Args:
        path: output file; must end in `.db3` (librealsense writes rosbag2 SQLite).
        colors: (H, W, C) uint8 frames in `color_format` (C = 3 for rgb8/bgr8, 4 for rgba8/bgra8, 2 for yuyv).
        fps: nominal rate; frame i is stamped `start_ts_ms + 1000 * frame_number / fps` (hardware clock).
        frame_numbers: per-frame numbers (default 0..N-1); skip numbers to simulate drops.
        depths: optional (h, w) uint16 frames (depth unit 1 mm), registered with identity extrinsics to color;
            their size may differ from the colors' (own intrinsics).
        serial: serial number stored in the recording.
        start_ts_ms: device timestamp of frame number 0.
        pace: push frames at `fps` in wall time. The recorder stamps each frame with the host time it arrived,
            which is what a real-time playback follows; unpaced recordings replay (real-time) in a burst.
        color_format: the librealsense format of the color stream (`RECORDABLE_COLOR_FORMATS`).
        timestamps_ms: per-frame device timestamps, instead of the ones from `fps` and the frame numbers.
        depth_offset_ms: added to each depth frame's device timestamp (unsynchronised sensors).
        push_at_s: per-frame wall time (s after the first push) of each push, instead of `pace` (a stall:
            a pause, then several frames at once).
    """
    rs = _rs()
    path = Path(path)
    if path.suffix != ".db3":
        raise ValueError(f"record_synthetic: {path} must end in .db3 (librealsense records rosbag2 SQLite)")
    if not colors:
        raise ValueError("record_synthetic: expected at least one color frame, found none")
    if color_format not in RECORDABLE_COLOR_FORMATS:
        raise ValueError(
            f"record_synthetic: color_format must be one of {sorted(RECORDABLE_COLOR_FORMATS)}, "
            f"found {color_format!r}"
        )
    n = len(colors)
    numbers = list(frame_numbers) if frame_numbers is not None else list(range(n))
    stamps = (
        list(timestamps_ms)
        if timestamps_ms is not None
        else [start_ts_ms + 1000.0 * k / fps for k in numbers]
    )
    if pace and push_at_s is None:
        push_at_s = [(k - numbers[0]) / fps for k in numbers]
    lengths = [len(v) for v in (numbers, stamps, depths, push_at_s) if v is not None]
    if any(length != n for length in lengths):
        raise ValueError(
            f"record_synthetic: {n} colors; frame_numbers, timestamps_ms, depths and push_at_s must match, "
            f"found lengths {lengths}"
        )
    dev = rs.software_device()
    dev.register_info(rs.camera_info.serial_number, serial)
    dev.register_info(rs.camera_info.name, "dm1 synthetic recording")
    fmt = getattr(rs.format, color_format)
    streams = [("Color", rs.stream.color, fmt, RECORDABLE_COLOR_FORMATS[color_format], colors, 0.0)]
    if depths is not None:
        streams.append(("Depth", rs.stream.depth, rs.format.z16, 2, depths, depth_offset_ms))
    sensors, profiles = [], []
    for uid, (sname, stype, sfmt, bpp, data, _) in enumerate(streams):
        sensor = dev.add_sensor(sname)
        h, w = data[0].shape[:2]
        vs = rs.video_stream()
        vs.type, vs.index, vs.uid, vs.width, vs.height, vs.fps, vs.bpp, vs.fmt = (
            stype,
            0,
            uid,
            w,
            h,
            fps,
            bpp,
            sfmt,
        )
        vs.intrinsics = _intrinsics(rs, h, w)
        profiles.append(sensor.add_video_stream(vs))
        if stype == rs.stream.depth:
            sensor.add_read_only_option(rs.option.depth_units, 0.001)
            identity = rs.extrinsics()
            identity.rotation, identity.translation = [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0], [0.0, 0.0, 0.0]
            profiles[-1].register_extrinsics_to(profiles[0], identity)
        sensors.append(sensor)
    recorder = rs.recorder(str(path), dev)
    for sensor, prof in zip(sensors, profiles, strict=True):
        sensor.open(prof)
        sensor.start(lambda _f: None)
    t0 = time.monotonic()
    for i, number in enumerate(numbers):
        if push_at_s is not None:
            time.sleep(max(0.0, t0 + push_at_s[i] - push_at_s[0] - time.monotonic()))
        for sensor, prof, (_, _, _, bpp, data, offset_ms) in zip(sensors, profiles, streams, strict=True):
            pixels = np.ascontiguousarray(data[i])
            frame = rs.software_video_frame()
            frame.pixels, frame.bpp, frame.stride = pixels, bpp, bpp * pixels.shape[1]
            frame.timestamp = stamps[i] + offset_ms
            frame.domain, frame.frame_number = rs.timestamp_domain.hardware_clock, number
            if prof.stream_type() == rs.stream.depth:
                frame.depth_units = 0.001
            frame.profile = prof.as_video_stream_profile()
            sensor.on_video_frame(frame)
    for sensor in sensors:
        sensor.stop()
        sensor.close()
    del recorder  # flushes and closes the file
    return path
