"""Write RealSense `.db3` recordings from numpy frames, without hardware (test fixtures, demos).

`rs.software_device` + `rs.recorder`: librealsense records rosbag2 SQLite (the file must end in `.db3`); the
result replays through the normal pipeline (`RealSenseCamera` with `playback_file`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dm1.camera.realsense import _rs


def record_synthetic(
    path: str | Path,
    colors: Sequence[np.ndarray],
    fps: int = 30,
    frame_numbers: Sequence[int] | None = None,
    depths: Sequence[np.ndarray] | None = None,
    serial: str = "000000000000",
    start_ts_ms: float = 1000.0,
    pace: bool = True,
) -> Path:
    """Write numpy frames to a RealSense `.db3` recording (test fixtures; no hardware).

    Args:
        path: output file; must end in `.db3` (librealsense writes rosbag2 SQLite).
        colors: (H, W, 3) uint8 RGB frames.
        fps: nominal rate; frame i is stamped `start_ts_ms + 1000 * frame_number / fps` (hardware clock).
        frame_numbers: per-frame numbers (default 0..N-1); skip numbers to simulate drops.
        depths: optional (H, W) uint16 frames (depth unit 1 mm), registered with identity extrinsics to color.
        serial: serial number stored in the recording.
        start_ts_ms: device timestamp of frame number 0.
        pace: push frames at `fps` in wall time. The recorder stamps each frame with the host time it arrived,
            which is what a real-time playback follows; unpaced recordings replay (real-time) in a burst.
    """
    rs = _rs()
    path = Path(path)
    if path.suffix != ".db3":
        raise ValueError(f"record_synthetic: {path} must end in .db3 (librealsense records rosbag2 SQLite)")
    if not colors:
        raise ValueError("record_synthetic: expected at least one color frame, found none")
    h, w = colors[0].shape[:2]
    numbers = list(frame_numbers) if frame_numbers is not None else list(range(len(colors)))
    if len(numbers) != len(colors) or (depths is not None and len(depths) != len(colors)):
        raise ValueError(
            f"record_synthetic: {len(colors)} colors, {len(numbers)} frame_numbers, "
            f"{len(depths) if depths is not None else 0} depths must match"
        )
    intr = rs.intrinsics()
    intr.width, intr.height, intr.ppx, intr.ppy, intr.fx, intr.fy = w, h, w / 2, h / 2, float(w), float(w)
    intr.model, intr.coeffs = rs.distortion.none, [0.0] * 5
    dev = rs.software_device()
    dev.register_info(rs.camera_info.serial_number, serial)
    dev.register_info(rs.camera_info.name, "dm1 synthetic recording")
    streams = [("Color", rs.stream.color, rs.format.rgb8, 3, colors)]
    if depths is not None:
        streams.append(("Depth", rs.stream.depth, rs.format.z16, 2, depths))
    sensors, profiles = [], []
    for uid, (sname, stype, fmt, bpp, _) in enumerate(streams):
        sensor = dev.add_sensor(sname)
        vs = rs.video_stream()
        vs.type, vs.index, vs.uid, vs.width, vs.height, vs.fps, vs.bpp, vs.fmt = (
            stype,
            0,
            uid,
            w,
            h,
            fps,
            bpp,
            fmt,
        )
        vs.intrinsics = intr
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
        if pace:
            time.sleep(max(0.0, t0 + (number - numbers[0]) / fps - time.monotonic()))
        for sensor, prof, (_, _, _, bpp, data) in zip(sensors, profiles, streams, strict=True):
            pixels = np.ascontiguousarray(data[i])
            frame = rs.software_video_frame()
            frame.pixels, frame.bpp, frame.stride = pixels, bpp, bpp * w
            frame.timestamp = start_ts_ms + 1000.0 * number / fps
            frame.domain, frame.frame_number = rs.timestamp_domain.hardware_clock, number
            if bpp == 2:
                frame.depth_units = 0.001
            frame.profile = prof.as_video_stream_profile()
            sensor.on_video_frame(frame)
    for sensor in sensors:
        sensor.stop()
        sensor.close()
    del recorder  # flushes and closes the file
    return path
