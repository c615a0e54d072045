"""realsense_node replaying three recordings at once (a bgr8 one, an rgba8 one, one with depth at its own
size, `align_depth:=false`), serials given, and `use_sim_time` set while it streams: one node run, checked by
behaviour-named tests (true rgb8, unaligned depth topics, a frozen clock parameter, hardware ids)."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest
from conftest import ProcessGroup
from dm1.camera import record_synthetic
from test_realsense_streams import DH, DW, H, W, _rgb, in_format

pytestmark = pytest.mark.slow
CAMERAS = {"bgr": "bgr8", "rgba": "rgba8", "deep": "rgb8"}
N = 10
TOPICS = {
    **{f"color_{c}": f"/camera/{c}/color/image_raw" for c in CAMERAS},
    "depth": "/camera/deep/depth/image_rect_raw",
    "depth_info": "/camera/deep/depth/camera_info",
    "aligned": "/camera/deep/aligned_depth_to_color/image_raw",
    "diag": "/diagnostics",
}


def _enough(got: dict[str, list]) -> bool:
    diag_names = {s.name for m in got["diag"] for s in m.status}
    return (
        all(len(got[f"color_{c}"]) >= 3 for c in CAMERAS)
        and len(got["depth"]) >= 3
        and bool(got["depth_info"])
        and {f"realsense_node: {c}" for c in CAMERAS} <= diag_names
    )


@pytest.fixture(scope="module")
def run(ros_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Messages of every topic, the answer to `use_sim_time:=true` and when it came, and the node's log."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import CameraInfo, Image

    folder = tmp_path_factory.mktemp("rs_node_streams")
    rgb = _rgb(N)
    for cam, fmt in CAMERAS.items():
        depths = [np.full((DH, DW), 500 + i, np.uint16) for i in range(N)] if cam == "deep" else None
        frames = [in_format(c, fmt) for c in rgb]
        record_synthetic(folder / f"rec_{cam}.db3", frames, color_format=fmt, depths=depths)
    args = [f"camera_names:=[{','.join(CAMERAS)}]", "serials:=['111','222','333']"]
    args += [f"playback_file:={folder}/rec_{{name}}.db3", "playback_repeat:=true", "enable_depth:=true"]
    args += ["align_depth:=false", "diagnostics_period_s:=0.3"]
    group = ProcessGroup(ros_env, folder)
    group.start("rs", [sys.executable, "-m", "dm1_ros.realsense_node", "--ros-args"] + [
        a for arg in args for a in ("-p", arg)
    ])  # fmt: skip
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("rs_streams_listener", context=ctx)
    got: dict[str, list] = {key: [] for key in TOPICS}
    for key, topic in TOPICS.items():
        kind = DiagnosticArray if key == "diag" else CameraInfo if key == "depth_info" else Image
        node.create_subscription(kind, topic, got[key].append, QoSProfile(depth=100))
    executor = rclpy.executors.SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    out: dict = {"rgb": rgb, "folder": folder, "got": got}
    try:
        deadline = time.monotonic() + 90
        while not _enough(got) and time.monotonic() < deadline and group.procs[0][1].poll() is None:
            executor.spin_once(timeout_sec=0.05)
        client = node.create_client(SetParameters, "/realsense_node/set_parameters")
        if client.wait_for_service(timeout_sec=10):
            value = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=True)
            future = client.call_async(
                SetParameters.Request(parameters=[Parameter(name="use_sim_time", value=value)])
            )
            executor.spin_until_future_complete(future, timeout_sec=10)
            out["set_result"] = future.result().results[0] if future.done() else None
            out["set_at"] = {key: len(msgs) for key, msgs in got.items()}
            end = time.monotonic() + 2.0
            while time.monotonic() < end:
                executor.spin_once(timeout_sec=0.05)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
        group.close()
    out["log"] = group.log("rs")
    return out


def test_realsense_node_publishes_bgr8_and_rgba8_recordings_as_rgb8_with_their_own_pixels(run: dict) -> None:
    for cam in CAMERAS:
        msgs = run["got"][f"color_{cam}"]
        assert msgs, f"nothing on /camera/{cam}/color/image_raw\n{run['log']}"
        for msg in msgs:
            assert (msg.encoding, msg.height, msg.width, msg.step, len(msg.data)) == (
                "rgb8",
                H,
                W,
                3 * W,
                3 * W * H,
            )
            arr = np.frombuffer(bytes(msg.data), np.uint8).reshape(H, W, 3)
            index = int(arr[0, 0, 0])
            assert index < N, (cam, arr[0, 0])  # the recorded (i, 255 - i, 7): R first
            np.testing.assert_array_equal(arr, run["rgb"][index])


def test_realsense_node_publishes_unaligned_depth_at_its_own_size_in_the_depth_optical_frame(
    run: dict,
) -> None:
    got = run["got"]
    assert got["depth"], f"nothing on /camera/deep/depth/image_rect_raw\n{run['log']}"
    assert not got["aligned"]  # unaligned depth is not published as aligned to color
    color_stamps = {(m.header.stamp.sec, m.header.stamp.nanosec) for m in got["color_deep"]}
    for msg in got["depth"]:
        assert (msg.encoding, msg.height, msg.width, msg.step, len(msg.data)) == (
            "16UC1",
            DH,
            DW,
            2 * DW,
            2 * DW * DH,
        )
        assert msg.header.frame_id == "camera_deep_depth_optical_frame"
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) in color_stamps  # the paired color frame's
        values = np.unique(np.frombuffer(bytes(msg.data), "<u2"))
        assert len(values) == 1 and 500 <= values[0] < 500 + N
    info = got["depth_info"][-1]
    assert (info.width, info.height, info.header.frame_id) == (DW, DH, "camera_deep_depth_optical_frame")
    assert info.k[0] == pytest.approx(DW)


def test_realsense_node_refuses_use_sim_time_at_runtime_and_keeps_stamping(run: dict) -> None:
    result = run.get("set_result")
    assert result is not None, f"no answer from /realsense_node/set_parameters\n{run['log']}"
    assert not result.successful and "use_sim_time" in result.reason, result
    got, at = run["got"], run["set_at"]
    later = got["color_bgr"][at["color_bgr"] :]
    assert later, "no images after the set"
    assert all(m.header.stamp.sec > 0 for m in later)  # still wall time, not a sim clock at 0
    assert len(got["diag"]) > at["diag"], "diagnostics stopped after the set"


def test_realsense_node_names_the_recording_as_hardware_id_during_playback(run: dict) -> None:
    statuses = {s.name: s for m in run["got"]["diag"] for s in m.status}
    for cam in CAMERAS:
        status = statuses[f"realsense_node: {cam}"]
        assert status.hardware_id == f"{run['folder']}/rec_{cam}.db3", status
