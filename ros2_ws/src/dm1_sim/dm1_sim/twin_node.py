"""`twin_node`: the franky-sim digital twin on ROS 2 (/clock, cameras, cube pose, success, reset).

Publishes `/clock` from simulation time, `/camera/<name>/color/{image_raw,camera_info}` stamped with the sim
time of each render, `/twin/cube_pose`, `/twin/success`, and `/twin/robot_host` (transient local: where franky
connects). Service `/twin/reset` (std_srvs/Trigger) puts the cube at the next seeded random pose (with
`seeded_resets`, reset n uses seed + n, the poses of the in-process `dm1 data collect --seed`). Service
`/twin/inject_reflex` (std_srvs/Trigger, for fault drills) aborts the arm's running motion the way a real FR3
reports a reflex; `/twin/user_stop` (std_srvs/SetBool: true = pressed) is the FR3's user stop
(`dm1.sim.user_stop`). Joint states and arm motion belong to the controller node, which connects to the
announced robot host.
"""

from __future__ import annotations

import faulthandler
import json
import sys

import rclpy
from dm1.scheduling import yield_cpu
from dm1.sim.config import TwinConfig
from dm1.sim.renderer import CameraFrame
from dm1.sim.twin import Twin, TwinStartError
from dm1_ros.conversions import image_to_msg, to_time_msg
from dm1_ros.dds_publishing import publish_asynchronously
from dm1_ros.guarded_publish import PublishGuards, node_warning
from dm1_ros.log_bridge import route_core_logging
from dm1_ros.node_signals import stopped_by_signals
from dm1_ros.params import freeze_parameters, init_ros
from geometry_msgs.msg import PoseStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Bool, String
from std_srvs.srv import SetBool, Trigger

from dm1_sim.conversions import camera_info_msg, pose_msg
from dm1_sim.params import declare_parameters, twin_config_from_parameters

IMAGE_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
LATCHED_QOS = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)


class TwinNode(Node):
    """Thin ROS wrapper around `dm1.sim.twin.Twin`."""

    def __init__(self) -> None:
        super().__init__("twin")
        freeze_parameters(self, ("use_sim_time",))  # the twin *is* the clock: on sim time it would stop
        route_core_logging(self)  # dm1.sim's warnings (physics stood still, render stalls) as ROS log lines
        self.params = declare_parameters(self)
        cfg = twin_config_from_parameters(self.params)  # ValueError naming the bad parameter
        # before the physics and render threads start: they inherit it
        yielded = yield_cpu(int(self.params["cpu_nice"]), bool(self.params["cpu_idle"]))
        self.get_logger().info(f"twin starting: cameras {sorted(cfg.cameras)}")
        self.twin = Twin(cfg)
        self.twin.start()
        try:
            self._advertise(cfg)
        except BaseException:  # e.g. Ctrl-C shut the context down meanwhile: no physics thread outlives us
            self.twin.stop()
            raise
        self.get_logger().info(
            f"twin up: robot host {self.twin.robot_host}, cameras {sorted(cfg.cameras)}, "
            f"realtime={cfg.realtime}, cpu: nice {yielded['nice']}, idle {yielded['idle']}"
        )

    def _advertise(self, cfg: TwinConfig) -> None:
        """Publishers, timers and services of a started twin."""
        self.image_pubs = {
            n: self.create_publisher(Image, f"/camera/{n}/color/image_raw", IMAGE_QOS) for n in cfg.cameras
        }
        self.info_pubs = {
            n: self.create_publisher(CameraInfo, f"/camera/{n}/color/camera_info", IMAGE_QOS)
            for n in cfg.cameras
        }
        self.clock_pub = self.create_publisher(Clock, "/clock", 10)
        self.cube_pub = self.create_publisher(PoseStamped, "/twin/cube_pose", 10)
        self.success_pub = self.create_publisher(Bool, "/twin/success", 10)
        self.host_pub = self.create_publisher(String, "/twin/robot_host", LATCHED_QOS)
        self._publish_guards = PublishGuards(node_warning(self))  # dm1_ros.guarded_publish
        self.resets = 0  # /twin/reset calls served (the seed offset with seeded_resets)
        self.twin.add_frame_listener(self._on_frame)
        self.host_pub.publish(String(data=self.twin.robot_host))
        self._last_clock = -1.0
        self.create_timer(min(self.params["clock_period_s"], 0.005), self._on_clock_timer)
        self.create_timer(1.0 / self.params["state_rate_hz"], self._on_state_timer)
        self.create_service(Trigger, "/twin/reset", self._on_reset)
        # its own group: the wait for a running motion (up to 1 s) must not hold up /clock
        own = MutuallyExclusiveCallbackGroup()
        self.create_service(Trigger, "/twin/inject_reflex", self._on_inject_reflex, callback_group=own)
        self.create_service(SetBool, "/twin/user_stop", self._on_user_stop)

    def _publish(self, pub, msg) -> None:
        """Publish without raising, and without hammering a failing writer (its `write()` holds the GIL, which
        franky-sim's physics thread needs): a failure drops the message and rests that publisher."""
        self._publish_guards.publish(pub, msg)

    def _on_frame(self, frame: CameraFrame) -> None:  # render thread
        stamp = to_time_msg(frame.stamp_sim_s)
        frame_id = f"camera_{frame.name}_color_optical_frame"
        h, w, _ = frame.rgb.shape
        self._publish(
            self.image_pubs[frame.name], image_to_msg(frame.rgb, "rgb8", frame.stamp_sim_s, frame_id)
        )
        self._publish(self.info_pubs[frame.name], camera_info_msg(w, h, frame.intrinsics, stamp, frame_id))

    def _on_clock_timer(self) -> None:
        now = self.twin.sim_time()
        if now - self._last_clock >= self.params["clock_period_s"] - 1e-9:
            self._last_clock = now
            self._publish(self.clock_pub, Clock(clock=to_time_msg(now)))

    def _on_state_timer(self) -> None:
        stamp = to_time_msg(self.twin.sim_time())
        cube = self.twin.cube_pose()
        self._publish(self.cube_pub, pose_msg(cube.pos, cube.quat_xyzw, stamp))
        self._publish(self.success_pub, Bool(data=self.twin.is_success()))

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        seed = self.params["seed"] + self.resets if self.params["seeded_resets"] else None
        try:
            pose = self.twin.reset(seed=seed)
        except Exception as exc:
            response.success, response.message = False, f"reset failed: {exc}"
            return response
        self.resets += 1
        response.success = True
        response.message = json.dumps(
            {"pos": pose.pos.tolist(), "quat_xyzw": pose.quat_xyzw.tolist(), "seed": seed}
        )
        return response

    def _on_inject_reflex(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.success = self.twin.inject_reflex(timeout_s=1.0)
        aborted, idle = "reflex: the running motion was aborted", "no motion ran within 1 s: nothing to abort"
        response.message = aborted if response.success else idle
        self.get_logger().warning(f"/twin/inject_reflex: {response.message}")
        return response

    def _on_user_stop(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        self.twin.set_user_stop(request.data)
        response.success = True
        response.message = "user stop pressed" if request.data else "user stop released"
        self.get_logger().warning(f"/twin/user_stop: {response.message}")
        return response

    def destroy_node(self) -> None:
        self.twin.stop()
        super().destroy_node()


#: Longest a shutdown may take (s) before the twin dumps every thread's stack to stderr and exits (status 1):
#: below the launcher's default 10 s grace period, so a stuck thread shows in launch.log instead of a SIGKILL.
SHUTDOWN_BUDGET_S = 5.0


def _arm_shutdown_watchdog() -> None:
    faulthandler.dump_traceback_later(SHUTDOWN_BUDGET_S, exit=True)


def main(args: list[str] | None = None) -> int:
    """Run the twin node until SIGINT."""
    node = None
    try:
        with stopped_by_signals():  # Ctrl-C ends the spin via the context shutdown (dm1_ros.node_signals)
            publish_asynchronously()  # a killed subscriber's dead-held SHM lock must not stall the physics
            init_ros("twin_node", args)
            # before the node: built after a Ctrl-C shut the context down, its constructor raises and rclpy's
            # Executor.__del__ then prints an AttributeError traceback (seen while the twin started)
            executor = MultiThreadedExecutor(num_threads=2)
            node = TwinNode()  # a stop while it starts is seen once it has (its threads then stopped)
            rclpy.get_default_context().on_shutdown(_arm_shutdown_watchdog)  # SIGINT shuts the context down
            executor.add_node(node)
            executor.spin()
    except ValueError as exc:
        print(f"twin_node: bad configuration: {exc}", file=sys.stderr)
        return 2
    except TwinStartError as exc:  # its robot ports are taken: say so in one line
        print(f"twin_node: {exc}", file=sys.stderr)
        return 2
    finally:
        _arm_shutdown_watchdog()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
