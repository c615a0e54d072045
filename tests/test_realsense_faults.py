"""RealSense faults found by exploratory testing: unreadable recordings, unquoted serials, duplicate camera
names, the startup log of a playback, and the end of a non-repeating playback (core and node)."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import wait_for
from dm1.camera import CameraConfig, RealSenseCamera, record_synthetic
from dm1.camera.realsense import NODE_PARAMETERS

H, W = 48, 64  # a recording far from the node's 640x480 defaults
NODE = [sys.executable, "-m", "dm1_ros.realsense_node", "--ros-args"]
DEFAULTS = {name: default for name, (default, _, _) in NODE_PARAMETERS.items()}


def _record(path: Path, n: int = 5) -> Path:
    colors = [np.full((H, W, 3), i, np.uint8) for i in range(n)]
    return record_synthetic(path, colors, pace=False)


def _bad_recording(kind: str, tmp_path: Path) -> Path:
    """A `.db3` file librealsense cannot replay."""
    path = tmp_path / f"{kind}.db3"
    if kind == "random_bytes":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "truncated":
        data = _record(tmp_path / "whole.db3").read_bytes()
        path.write_bytes(data[: len(data) // 3])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind in ("sqlite_not_a_rosbag", "rosbag_without_camera_topics"):
        with sqlite3.connect(path) as db:
            if kind == "sqlite_not_a_rosbag":
                db.execute("CREATE TABLE notes(text TEXT)")
            else:  # the rosbag2 schema, one std_msgs/String message
                db.execute(
                    "CREATE TABLE topics(id INTEGER PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL, "
                    "serialization_format TEXT NOT NULL, offered_qos_profiles TEXT NOT NULL)"
                )
                db.execute(
                    "CREATE TABLE messages(id INTEGER PRIMARY KEY, topic_id INTEGER NOT NULL, "
                    "timestamp INTEGER NOT NULL, data BLOB NOT NULL)"
                )
                db.execute("INSERT INTO topics VALUES (1, '/chatter', 'std_msgs/msg/String', 'cdr', '')")
                db.execute("INSERT INTO messages VALUES (1, 1, 100, x'00010000060000006869')")
        db.close()
    return path


# --- 1. an unreadable recording: one clear error naming the file -----------------------------------------


@pytest.mark.parametrize(
    "kind", ["random_bytes", "truncated", "empty", "sqlite_not_a_rosbag", "rosbag_without_camera_topics"]
)
def test_an_unreadable_recording_is_refused_with_a_value_error_naming_the_file(
    kind: str, tmp_path: Path
) -> None:
    path = _bad_recording(kind, tmp_path)
    cam = RealSenseCamera(CameraConfig("front", playback_file=str(path)))
    with pytest.raises(ValueError) as caught:  # PlaybackFileError: handled like any bad configuration
        cam.start()
    cam.stop()
    text = str(caught.value)
    assert f"camera 'front': playback_file {path}: not a RealSense recording (.db3 rosbag): " in text, text
    assert "\n" not in text
    if kind == "empty":
        assert text.endswith("the file is empty (0 bytes)")


def test_realsense_node_refuses_a_corrupt_recording_with_one_line_not_a_traceback(
    procs, tmp_path: Path
) -> None:
    path = _bad_recording("random_bytes", tmp_path)
    proc = procs.start("rs", [*NODE, "-p", f"playback_file:={path}"])
    assert proc.wait(timeout=60) == 1
    log = procs.log("rs")
    assert "Traceback" not in log, log
    errors = [line for line in log.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and f"{path}: not a RealSense recording (.db3 rosbag)" in errors[0], log


# --- 2. unquoted serials: refused, with the fix in the message ---------------------------------------------


def test_camera_config_refuses_a_serial_that_is_not_a_string() -> None:
    with pytest.raises(
        ValueError,
        match=r"CameraConfig.serial \(front\): expected a string \(quote them.*found int 123456789012",
    ):
        CameraConfig("front", serial=123456789012)  # type: ignore[arg-type]


def test_camera_configs_name_a_serial_whose_leading_zero_was_lost() -> None:
    from dm1.camera import camera_configs

    params = dict(DEFAULTS, serials=[12345678901.0])  # `serials:=[012345678901]` as rclpy delivers it
    with pytest.raises(
        ValueError,
        match=r"parameter serials: expected strings \(quote them in YAML.*found float 12345678901\.0",
    ):
        camera_configs(params)


def test_realsense_node_refuses_unquoted_serials_from_a_yaml_file(procs, tmp_path: Path) -> None:
    params = tmp_path / "rs.yaml"
    params.write_text(
        "realsense_node:\n  ros__parameters:\n    camera_names: [front, wrist]\n"
        "    serials: [123456789012, 234567890123]\n"
    )
    proc = procs.start("rs", [*NODE, "--params-file", str(params)])
    assert proc.wait(timeout=60) == 1
    log = procs.log("rs")
    assert "Traceback" not in log, log
    assert "parameter serials: expected strings (quote them in YAML: ['012345678901']" in log, log
    assert "found int 123456789012" in log and "no RealSense device" not in log, log


# --- 5. duplicate camera names ------------------------------------------------------------------------------


def test_camera_configs_refuse_a_duplicate_camera_name() -> None:
    from dm1.camera import camera_configs

    with pytest.raises(
        ValueError, match=r"camera_names: expected unique names, found 'front' more than once"
    ):
        camera_configs(dict(DEFAULTS, camera_names=["front", "wrist", "front"]))


def test_realsense_node_refuses_a_duplicate_camera_name(procs, tmp_path: Path) -> None:
    path = _record(tmp_path / "rec.db3")  # a valid playback: only the duplicate can stop it
    proc = procs.start("rs", [*NODE, "-p", "camera_names:=[front,front]", "-p", f"playback_file:={path}"])
    try:
        code = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:  # still running: the duplicate was accepted
        code = None
    log = procs.log("rs")
    assert code == 1, log
    assert "parameter camera_names: expected unique names, found 'front' more than once" in log, log
    assert "Traceback" not in log, log


# --- 3. the startup log of a playback: the recorded modes ---------------------------------------------


def test_describe_reports_the_recorded_mode_not_the_configured_one(tmp_path: Path) -> None:
    path = _record(tmp_path / "rec.db3")
    cfg = CameraConfig(
        "front", width=640, height=480, fps=15, playback_file=str(path), playback_realtime=False
    )
    with RealSenseCamera(cfg) as cam:
        cam.start()
        text = cam.describe()
    assert text.startswith("front: color 64x48 rgb8 @ 30 fps from recording "), text
    assert "width/height/fps do not apply to playback" in text and "640" not in text, text


# --- 4. the end of a non-repeating playback ----------------------------------------------------------------


def test_an_ended_playback_is_reported_as_ended_not_as_stale_frames(tmp_path: Path) -> None:
    path = _record(tmp_path / "rec.db3")
    cfg = CameraConfig("front", playback_file=str(path), playback_realtime=False)
    frames: list[int] = []
    with RealSenseCamera(cfg) as cam:
        cam.start(lambda f: frames.append(f.frame_number))  # the reader thread, as the node runs it
        wait_for(
            lambda: cam.health(cam.clock() + 5.0)[1] != "streaming" and not cam.alive, 30, 0.05, "the end"
        )
        level, text, values = cam.health(cam.clock() + 60.0)  # long after the last frame
    assert frames and (level, text) == (1, f"playback of {path} ended"), (level, text, frames)
    assert values["playback_ended"] is True and cam.error is None


def test_realsense_node_logs_the_recorded_mode_and_the_end_of_a_playback(procs, tmp_path: Path) -> None:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray

    path = _record(tmp_path / "rec_front.db3")
    args = [
        "-p",
        f"playback_file:={path}",
        "-p",
        "playback_realtime:=false",
        "-p",
        "diagnostics_period_s:=0.2",
    ]
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("rs_faults_listener", context=ctx)
    diags: list[DiagnosticArray] = []
    node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)
    executor = rclpy.executors.SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    procs.start("rs", [*NODE, *args])

    def ended() -> tuple[int, str] | None:
        executor.spin_once(timeout_sec=0.05)
        for msg in reversed(diags):
            for status in msg.status:
                if status.name == "realsense_node: front" and "ended" in status.message:
                    return status.level[0] if isinstance(
                        status.level, bytes
                    ) else status.level, status.message
        return None

    try:
        level, message = wait_for(ended, 60, 0.0, "an 'ended' diagnostic", lambda: procs.log("rs"))
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
    assert (level, message) == (1, f"playback of {path} ended")  # WARN, not the stale-frames ERROR
    ended_line = rf"WARN.*camera front: playback of {re.escape(str(path))} ended"
    # the line is logged once the grace for queued frames has run out, up to ~1 s after the diagnostic
    wait_for(
        lambda: re.search(ended_line, procs.log("rs")),
        30,
        0.1,
        "the 'ended' log line",
        lambda: procs.log("rs"),
    )
    procs.stop("rs")
    log = procs.log("rs")
    start = re.search(r"streaming front: color 64x48 rgb8 @ 30 fps from recording \S+ \((.*)\)", log)
    assert start and "width/height/fps do not apply to playback" in start[1], log
    assert "'width': 640" not in log, log
    assert re.search(ended_line, log), log
