"""Foxglove monitoring: a websocket client connects and sees the dm1 topics; the MCAP file reads back."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import wait_for
from dm1.monitor.foxglove_bridge import BridgeConfig, FoxgloveBridge


def _read_mcap(path: Path) -> list[tuple[str, str, bytes]]:
    from mcap.reader import make_reader

    with open(path, "rb") as f:
        return [(c.topic, s.name if s else "", m.data) for s, c, m in make_reader(f).iter_messages()]


def _collect_advertised(ws, seen: set[str], timeout: float = 0.5) -> set[str]:
    """Read one server message (bounded); add the topics of an `advertise` to `seen`."""
    try:
        raw = ws.recv(timeout=timeout)
    except TimeoutError:
        return seen
    if isinstance(raw, str):
        data = json.loads(raw)
        if data["op"] == "advertise":
            seen |= {ch["topic"] for ch in data["channels"]}
    return seen


def test_websocket_client_sees_logged_topics_and_mcap_reads_back(tmp_path: Path) -> None:
    from websockets.sync.client import connect

    mcap = tmp_path / "run.mcap"
    bridge = FoxgloveBridge(BridgeConfig(port=0, mcap_path=str(mcap), max_image_rate_hz=10.0))
    try:
        with connect(f"ws://127.0.0.1:{bridge.port}", subprotocols=["foxglove.sdk.v1"]) as ws:
            image = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
            logged = [
                bridge.log_image("/camera/front/color/image_raw", 100.0 + 0.05 * i, "f", image)
                for i in range(5)
            ]
            bridge.log_joint_state("/joint_states", 100.0, ["fr3_joint1"], np.array([0.5]))
            bridge.log_chunk(
                "/dm1/action_chunk/cartesian", 100.0, ["fr3_hand_tcp", "gripper"], np.zeros((4, 6)), 0.05
            )
            topics = {"/camera/front/color/image_raw", "/joint_states", "/dm1/action_chunk/cartesian"}
            seen: set[str] = set()
            wait_for(lambda: topics <= _collect_advertised(ws, seen), 10, 0.0, f"{topics} advertised")
    finally:
        bridge.close()
    assert logged == [True, False, False, True, False]  # decimated to 10 Hz (100.10 is a hair under 0.1 s)
    records = _read_mcap(mcap)
    images = [r for r in records if r[0] == "/camera/front/color/image_raw"]
    assert len(images) == 2 and images[0][1] == "foxglove.RawImage" and image.tobytes() in images[0][2]
    chunk = json.loads(next(r[2] for r in records if r[0] == "/dm1/action_chunk/cartesian"))
    assert chunk["names"] == ["fr3_hand_tcp", "gripper"] and np.shape(chunk["points"]) == (4, 6)


def test_bridge_refuses_to_overwrite_an_existing_recording(tmp_path: Path) -> None:
    (tmp_path / "x.mcap").write_bytes(b"old")
    with pytest.raises(ValueError, match=r"mcap_path: .*x.mcap already exists"):
        BridgeConfig(port=None, mcap_path=str(tmp_path / "x.mcap"))
    with pytest.raises(ValueError, match="expected a port or an mcap_path"):
        BridgeConfig(port=None)


def test_a_bridge_that_cannot_bind_its_port_fails_in_one_line_and_leaves_no_recording(tmp_path: Path) -> None:
    """A taken port left a 199-byte stub .mcap behind (opened before the server failed), so the rerun was
    refused ("already exists"); and the error was the SDK's bare `RuntimeError: FoxgloveError: ...`."""
    import socket

    from dm1.monitor.foxglove_bridge import BridgeStartError

    mcap = tmp_path / "x.mcap"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BridgeStartError, match=rf"127.0.0.1:{port}: .*in use"):
            FoxgloveBridge(BridgeConfig(port=port, mcap_path=str(mcap)))
    assert not mcap.exists()


@pytest.mark.slow
def test_foxglove_node_bridges_ros_images_to_websocket_and_mcap(
    procs, ros_env: dict[str, str], tmp_path: Path
) -> None:
    import rclpy
    from dm1_ros.chunk_qos import CARTESIAN_TOPIC
    from geometry_msgs.msg import Transform
    from sensor_msgs.msg import Image
    from trajectory_msgs.msg import MultiDOFJointTrajectory, MultiDOFJointTrajectoryPoint
    from websockets.sync.client import connect

    mcap = tmp_path / "live.mcap"
    topic = "/camera/front/color/image_raw"
    node_args = [
        "--ros-args",
        "-p",
        "port:=0",
        "-p",
        f"mcap_path:={mcap}",
        "-p",
        f"image_topics:=[{topic}]",
        "-p",
        "max_image_rate_hz:=0.0",
    ]
    proc = procs.start("fox", [sys.executable, "-m", "dm1_ros.foxglove_node", *node_args])
    match = wait_for(
        lambda: re.search(r"Foxglove server on ws://127.0.0.1:(\d+)", procs.log("fox")),
        60,
        0.2,
        "the Foxglove server to start",
    )
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("fox_test_pub", context=ctx)
    pub = node.create_publisher(Image, topic, 10)
    chunk_pub = node.create_publisher(MultiDOFJointTrajectory, CARTESIAN_TOPIC, 10)
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    msg = Image(height=16, width=16, encoding="rgb8", step=48, data=image.tobytes())
    msg.header.frame_id = "camera_front_color_optical_frame"
    try:
        wait_for(lambda: pub.get_subscription_count() > 0, 30, 0.1, "the bridge to subscribe")
        with connect(f"ws://127.0.0.1:{match.group(1)}", subprotocols=["foxglove.sdk.v1"]) as ws:
            seen: set[str] = set()

            def advertised() -> bool:
                msg.header.stamp = node.get_clock().now().to_msg()
                pub.publish(msg)
                return topic in _collect_advertised(ws, seen)

            wait_for(advertised, 30, 0.0, "the image topic on the websocket")
            wait_for(lambda: chunk_pub.get_subscription_count() > 0, 30, 0.1, "the chunk subscription")
            hold = MultiDOFJointTrajectory(joint_names=["ee", "gripper"])  # the policy's "hold": no points
            chunk = MultiDOFJointTrajectory(joint_names=["ee", "gripper"])
            chunk.points = [
                MultiDOFJointTrajectoryPoint(transforms=[Transform(), Transform()]) for _ in range(3)
            ]
            chunk.points[1].transforms[0].translation.z = 0.25
            for _ in range(3):  # best effort: a few copies
                chunk_pub.publish(hold)
                chunk_pub.publish(chunk)
                time.sleep(0.1)
    finally:
        node.destroy_node()
        rclpy.shutdown(context=ctx)
    procs.stop("fox")
    assert proc.returncode == 0, procs.log("fox")
    frames = [data for t, _, data in _read_mcap(mcap) if t == topic]
    assert frames and image.tobytes() in frames[0]
    chunks = [json.loads(data) for t, _, data in _read_mcap(mcap) if t == CARTESIAN_TOPIC]
    assert {len(c["points"]) for c in chunks} == {0, 3}, chunks  # the hold is bridged too
    assert max(c["points"][1][2] for c in chunks if c["points"]) == 0.25
    assert "not bridged" not in procs.log("fox")
