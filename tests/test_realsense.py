"""RealSense: the ROS-free wrapper (drops, clock mapping, `.db3` playback) and the node replaying a file."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import wait_for
from dm1.camera import (
    CameraConfig,
    ClockMapper,
    FrameDropCounter,
    NoDeviceError,
    RealSenseCamera,
    list_devices,
    record_synthetic,
)

H = W = 96


def _frames(n: int) -> list[np.ndarray]:
    """Distinct, known images; pixel (0, 0) carries the index so a received image names its source."""
    frames = []
    for i in range(n):
        img = np.random.default_rng(i).integers(0, 256, (H, W, 3), dtype=np.uint8)
        img[0, 0] = (i, 255 - i, 7)
        frames.append(img)
    return frames


def test_drop_counter_counts_an_injected_gap() -> None:
    counter = FrameDropCounter()
    gaps = [counter.update(n) for n in (10, 11, 12, 15, 16)]
    assert gaps == [0, 0, 0, 2, 0]
    assert (counter.received, counter.dropped, counter.resets) == (5, 2, 0)


def test_drop_counter_treats_a_backwards_number_as_a_restart_not_a_drop() -> None:
    counter = FrameDropCounter()
    for n in (5, 6, 7, 0, 1):
        counter.update(n)
    assert (counter.dropped, counter.resets) == (0, 1)


def test_clock_mapper_recovers_the_offset_from_jittered_arrivals() -> None:
    rng = np.random.default_rng(0)
    mapper = ClockMapper(window_s=10.0)
    true_offset = 1234.5  # host time - device time (s)
    errors = []
    for i in range(300):
        device_ms = 50_000.0 + i * 1000.0 / 30
        latency = 0.002 + rng.exponential(0.004)  # transport only ever adds delay
        arrival = device_ms / 1000 + true_offset + latency
        stamp = mapper.map(device_ms, arrival)
        assert stamp <= arrival  # never stamped after it arrived
        errors.append(stamp - (device_ms / 1000 + true_offset))
    assert max(abs(e) for e in errors[30:]) < 0.004  # within the smallest latency seen
    assert mapper.resets == 0


def test_clock_mapper_tracks_drift_and_reanchors_after_a_jump() -> None:
    mapper = ClockMapper(window_s=2.0)
    drift = 100e-6  # device clock 100 ppm slow
    for i in range(30 * 60):  # one minute at 30 fps
        host = 10.0 + i / 30
        stamp = mapper.map((host - 10.0) * (1 - drift) * 1000.0, host + 0.001)
    assert abs(stamp - host) < 0.0015  # drift over a minute (6 ms) is tracked
    stamp = mapper.map(0.0, host + 0.034)  # device restarted (playback loop)
    assert mapper.resets == 1 and stamp == pytest.approx(host + 0.034)


def test_camera_config_rejects_bad_values_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"CameraConfig.width \(front\).*found 0"):
        CameraConfig("front", width=0)
    with pytest.raises(ValueError, match="playback_file.*expected a .db3"):
        CameraConfig("front", playback_file=str(tmp_path / "x.bag"))
    with pytest.raises(ValueError, match="does not exist"):
        CameraConfig("front", playback_file=str(tmp_path / "missing.db3"))


def test_playback_returns_recorded_frames_bit_exact_and_counts_the_gap(tmp_path: Path) -> None:
    colors = _frames(8)
    numbers = [0, 1, 2, 3, 6, 7, 8, 9]  # frames 4 and 5 "dropped" by the camera
    path = record_synthetic(tmp_path / "front.db3", colors, frame_numbers=numbers, pace=False)
    cfg = CameraConfig("front", width=W, height=H, playback_file=str(path), playback_realtime=False)
    with RealSenseCamera(cfg) as cam:
        cam.start()
        got = []
        while (frame := cam.read(timeout_s=30.0)) is not None:  # None at the end
            got.append(frame)
    assert [f.frame_number for f in got] == numbers
    for frame, expected in zip(got, colors, strict=True):
        assert frame.color.dtype == np.uint8 and frame.color.shape == (H, W, 3)
        np.testing.assert_array_equal(frame.color, expected)
    assert (cam.drops.received, cam.drops.dropped) == (8, 2)
    assert got[0].intrinsics.width == W and got[0].intrinsics.fx == pytest.approx(W)
    assert all(b.stamp_s >= a.stamp_s for a, b in zip(got, got[1:], strict=False))


def test_read_returns_none_at_the_end_of_a_playback_without_waiting_out_its_timeout(tmp_path: Path) -> None:
    import time

    path = record_synthetic(tmp_path / "end.db3", _frames(3), pace=False)
    cfg = CameraConfig("front", width=W, height=H, playback_file=str(path), playback_realtime=False)
    with RealSenseCamera(cfg) as cam:
        cam.start()
        got = [cam.read(timeout_s=30.0) for _ in range(3)]
        assert all(f is not None for f in got)
        t0 = time.monotonic()
        assert cam.read(timeout_s=600.0) is None
        assert time.monotonic() - t0 < 120.0  # liveness: ended by the file's end, not by the 600 s timeout


def test_a_playback_read_to_its_end_is_a_warning_not_a_stale_stream_error(tmp_path: Path) -> None:
    """Between the file's end and the end of the grace for queued frames, a silent playback is the WARN
    "playback ... ended", never the ERROR "no frames for ..." of a camera that stopped delivering."""
    path = record_synthetic(tmp_path / "end.db3", _frames(3), pace=False)
    cfg = CameraConfig("front", width=W, height=H, playback_file=str(path), playback_realtime=False)
    with RealSenseCamera(cfg) as cam:
        cam.start()
        assert all(cam.read(timeout_s=30.0) is not None for _ in range(3))
        assert cam.read(timeout_s=0.3) is None  # the file is read to its end; the grace has not run out
        assert not cam.playback_ended
        level, text, _ = cam.health(cam.clock() + 1.5)  # older than the 1 s stale limit
    assert (level, text) == (1, f"playback of {path} ended")


def test_playback_with_depth_returns_uint16_depth(tmp_path: Path) -> None:
    colors = _frames(4)
    depths = [np.full((H, W), 500 + 100 * i, np.uint16) for i in range(4)]
    # paced, and replayed in real time: an unpaced file replayed as fast as it reads lets the syncer pair
    # the colour frames with stale depth under load (2 of 8 runs at load 6-8: one unpaired frame, the end)
    path = record_synthetic(tmp_path / "d.db3", colors, depths=depths, pace=True)
    for align in (False, True):
        cfg = CameraConfig(
            "front",
            width=W,
            height=H,
            enable_depth=True,
            align_depth=align,
            playback_file=str(path),
            playback_realtime=True,
        )
        with RealSenseCamera(cfg) as cam:
            cam.start()
            got = []
            while (frame := cam.read(timeout_s=30.0)) is not None:  # None at the end
                got.append(frame)
        ended = "the file's end" if cam.playback_ended else "a 30 s read timeout (playback stuck)"
        counters = f"align={align}, drops={vars(cam.drops)}, unpaired color frames={cam.unpaired}"
        counters += f", ended by {ended}"
        assert got and all(f.depth is not None and f.depth.dtype == np.uint16 for f in got), counters
        assert got[0].depth_scale == pytest.approx(0.001)
        for f in got:
            values = set(np.unique(f.depth).tolist()) - ({0} if align else set())  # alignment leaves holes
            assert values == {500 + 100 * f.frame_number}
            np.testing.assert_array_equal(f.color, colors[f.frame_number])


def test_no_camera_gives_a_clear_error() -> None:
    if list_devices():
        pytest.skip("a RealSense camera is attached")
    with pytest.raises(
        NoDeviceError, match=r"camera 'front': no RealSense device with serial 123 is connected"
    ):
        RealSenseCamera(CameraConfig("front", serial="123")).start()


def test_realsense_node_without_camera_exits_with_a_message_not_a_traceback(procs) -> None:
    if list_devices():
        pytest.skip("a RealSense camera is attached")
    proc = procs.start(
        "rs", [sys.executable, "-m", "dm1_ros.realsense_node", "--ros-args", "-p", "serials:=['42']"]
    )
    assert proc.wait(timeout=60) == 1
    log = procs.log("rs")
    assert "no RealSense device with serial 42 is connected" in log
    assert "Traceback" not in log


@pytest.mark.slow
def test_realsense_node_replays_a_recording_bit_exact(procs, ros_env: dict[str, str], tmp_path: Path) -> None:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import CameraInfo, Image

    colors = _frames(6)
    record_synthetic(tmp_path / "rec_wrist.db3", colors, frame_numbers=[0, 1, 2, 4, 5, 6])  # one gap per loop
    shipped = Path(__file__).parents[1] / "ros2_ws/src/dm1_bringup/config/realsense.yaml"
    args = [
        "--params-file",  # the bringup file (serials: []), then the test's own settings
        str(shipped),
        "-p",
        "camera_names:=[wrist]",
        "-p",
        f"playback_file:={tmp_path}/rec_{{name}}.db3",
        "-p",
        "playback_repeat:=true",
        "-p",
        f"width:={W}",
        "-p",
        f"height:={H}",
        "-p",
        "diagnostics_period_s:=0.5",
    ]
    proc = procs.start("rs", [sys.executable, "-m", "dm1_ros.realsense_node", "--ros-args", *args])

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("rs_test_listener", context=ctx)
    images: list[Image] = []
    infos: list[CameraInfo] = []
    diags: list[DiagnosticArray] = []
    node.create_subscription(Image, "/camera/wrist/color/image_raw", images.append, QoSProfile(depth=50))
    node.create_subscription(CameraInfo, "/camera/wrist/color/camera_info", infos.append, 10)
    node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)
    executor = rclpy.executors.SingleThreadedExecutor(context=ctx)
    executor.add_node(node)

    def seen_all() -> bool:
        executor.spin_once(timeout_sec=0.05)
        return {int(m.data[0]) for m in images} >= set(range(len(colors))) and bool(infos)

    try:
        wait_for(
            seen_all, 90, 0.0, "every recorded frame on /camera/wrist/color/image_raw\n" + procs.log("rs")
        )
        wait_for(
            lambda: executor.spin_once(timeout_sec=0.1) or _dropped(diags) >= 1, 30, 0.0, "drop diagnostic"
        )
        assert _wrist_values(diags)["unpaired_color"] == "0"  # color only: no depth to pair with
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
    for msg in images:
        assert (msg.encoding, msg.height, msg.width, msg.step) == ("rgb8", H, W, 3 * W)
        assert msg.header.frame_id == "camera_wrist_color_optical_frame"
        arr = np.frombuffer(bytes(msg.data), np.uint8).reshape(H, W, 3)
        np.testing.assert_array_equal(arr, colors[int(arr[0, 0, 0])])  # bit-exact
    assert infos[0].k[0] == pytest.approx(W) and infos[0].width == W
    procs.stop("rs")
    log = procs.log("rs")
    assert "Traceback" not in log and not re.search(r"publish on \S+ failed", log), log  # GuardedPublisher
    assert proc.returncode == 0, log  # SIGINT: a clean exit (no segfault at teardown)


def _wrist_values(diags: list) -> dict[str, str]:
    """The key/values of the latest diagnostics status of the wrist camera ({} before the first)."""
    for msg in reversed(diags):
        for status in msg.status:
            if status.name == "realsense_node: wrist":
                return {kv.key: kv.value for kv in status.values}
    return {}


def _dropped(diags: list) -> int:
    return int(_wrist_values(diags).get("dropped", 0))
