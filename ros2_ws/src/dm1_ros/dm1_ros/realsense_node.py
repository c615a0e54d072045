"""RealSense cameras → `/camera/<name>/color/{image_raw,camera_info}` (+ depth), stamps in ROS time.

Thin shell around `dm1.camera.realsense`: one reader thread per camera; header.stamp = the frame's device
timestamp mapped to the node clock (`ClockMapper`: min-offset over a 10 s window, tracks drift);
`/diagnostics` carries per-camera frame-drop counters (gaps in frame numbers). Color is always `rgb8` (a
bgr8/rgba8/bgra8 recording is converted, others refused); depth is `aligned_depth_to_color/image_raw` or, with
`align_depth:=false`, `depth/image_rect_raw` + `depth/camera_info` at its own size in the depth optical frame
(`dm1.camera.image_layout`). `use_sim_time` is read once, like every parameter. `playback_file` replays a
`.db3` recording through the normal pipeline (`{name}` in the path is replaced by each camera name), at the
recording's own modes (width/height/fps do not apply; the startup log says what is streamed). When a
non-repeating playback ends the node logs it and keeps running, its camera's diagnostics at WARN "playback
of FILE ended". Bad parameters (duplicate names, unquoted serials) and unreadable recordings end the node
with one line naming the parameter or file and exit code 1 (`dm1.camera.realsense.camera_configs`, `start`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import rclpy  # before pyrealsense2 (imported by dm1.camera on first use): see dm1.camera.realsense._rs
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from dm1.camera.image_layout import camera_topics, image_fields
from dm1.camera.realsense import NODE_PARAMETERS, CameraFrame, NoDeviceError, RealSenseCamera, camera_configs
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, Image

from dm1_ros.guarded_publish import PublishGuards, node_warning
from dm1_ros.node_signals import stopped_by_signals
from dm1_ros.params import declare_table, freeze_parameters, init_ros


class RealSenseNode(Node):
    """Publishes every configured camera; raises `NoDeviceError`/`ValueError` when a camera cannot start."""

    def __init__(self) -> None:
        super().__init__("realsense_node")
        params = declare_table(self, NODE_PARAMETERS, read_only=True)  # read once: a later set is refused
        freeze_parameters(self, ("use_sim_time",))  # the stamps' and diagnostics' clock, as the others
        # ValueError naming the parameter (duplicate names, unquoted serials)
        configs = camera_configs(params)
        self._publish_guards = PublishGuards(node_warning(self))  # dm1_ros.guarded_publish
        self.cams: dict[str, RealSenseCamera] = {}
        self.pubs: dict[str, tuple] = {}
        for cfg in configs:
            t = camera_topics(cfg.name, cfg.enable_depth, cfg.align_depth)
            self.pubs[cfg.name] = (
                t,
                self.create_publisher(Image, t.color_image, 10),
                self.create_publisher(CameraInfo, t.color_info, 10),
                self.create_publisher(Image, t.depth_image, 10) if t.depth_image else None,
                self.create_publisher(CameraInfo, t.depth_info, 10) if t.depth_info else None,
            )
            self.cams[cfg.name] = RealSenseCamera(cfg, clock=self._now)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(params["diagnostics_period_s"], self._diagnostics)  # before the reader threads
        try:
            for cam in self.cams.values():
                cam.start(self._publish, on_end=self._ended_logger(cam))
        except BaseException:
            self.close()
            raise
        for cam in self.cams.values():  # what is actually streamed (a playback: the recording's modes)
            self.get_logger().info(f"streaming {cam.describe()}")

    def _ended_logger(self, cam: RealSenseCamera) -> Callable[[], None]:
        """Logs, once (from the reader thread), that `cam`'s non-repeating playback has ended."""
        return lambda: self.get_logger().warning(
            f"camera {cam.cfg.name}: playback of {cam.cfg.playback_file} ended (playback_repeat is false): "
            "no more frames will be published"
        )

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _publish(self, frame: CameraFrame) -> None:
        topics, image_pub, info_pub, depth_pub, depth_info_pub = self.pubs[frame.name]
        img = Image(**image_fields(frame.color))  # rgb8, its own size
        img.header.stamp = Time(nanoseconds=int(frame.stamp_s * 1e9)).to_msg()
        img.header.frame_id = topics.color_frame
        info = CameraInfo(header=img.header, **frame.intrinsics.camera_info_fields())
        # a failing publish (RCLError: a reliable history stays full) drops the message and rests that
        # publisher; silent once SIGINT shut the context down (the reader threads stop next)
        self._publish_guards.publish(image_pub, img)
        self._publish_guards.publish(info_pub, info)
        if depth_pub is not None and frame.depth is not None:
            depth = Image(**image_fields(frame.depth))  # 16UC1 at the depth frame's own size
            depth.header.stamp, depth.header.frame_id = img.header.stamp, topics.depth_frame
            self._publish_guards.publish(depth_pub, depth)
            if depth_info_pub is not None and frame.depth_intrinsics is not None:  # unaligned depth
                fields = frame.depth_intrinsics.camera_info_fields()
                self._publish_guards.publish(depth_info_pub, CameraInfo(header=depth.header, **fields))

    def _diagnostics(self) -> None:
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        for name, cam in self.cams.items():
            level, text, values = cam.health(self._now())
            kv = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
            status = DiagnosticStatus(
                level=bytes([level]), name=f"realsense_node: {name}", message=text, values=kv
            )
            status.hardware_id = cam.hardware_id  # the recording file on playback, else the serial
            msg.status.append(status)
        self._publish_guards.publish(self.diag_pub, msg)

    def close(self) -> None:
        """Stop every camera."""
        for cam in self.cams.values():
            cam.stop()


def main(args: list[str] | None = None) -> int:
    """`ros2 run dm1_ros realsense_node` / `python -m dm1_ros.realsense_node`."""
    try:
        with stopped_by_signals(), init_ros("realsense_node", args):  # Ctrl-C: see node_signals
            executor = SingleThreadedExecutor()  # before the node: see dm1_sim.twin_node.main
            node = RealSenseNode()
            try:
                rclpy.spin(node, executor)
            finally:
                node.close()  # stop the reader threads (they publish)
    except (NoDeviceError, ValueError) as exc:  # ValueError: a bad parameter or PlaybackFileError
        print(f"[realsense_node] ERROR: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
