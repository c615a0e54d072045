"""One declaration of the dm1 node graph, shared by `franka.launch.py` and `dm1 launch`.

ROS-free (no rclpy, no launch): `franka_graph(args)` turns validated `LaunchArgs` (`dm1.launch_args`, also
importable from here) into an ordered list of `NodeSpec`s. Parameters come from the YAML files in
`dm1_bringup/config/` (standard ROS 2 format, `<node>: {ros__parameters: {...}}`), overlaid by values derived
from the launch arguments (file defaults <- launch args). Order = start order: each node may declare a
readiness check (`ready_topic`) that the launcher waits for before starting the next one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dm1.control.backend import TWIN_HOME_DYNAMICS
from dm1.launch_args import LaunchArgs as LaunchArgs  # the input of `franka_graph`, validated on construction
from dm1.launch_args import twin_image_size
from dm1.launch_params import default_config_dir, load_param_files, typed_parameters
from dm1.modelcard import load_card

CONFIG_FILES: tuple[str, ...] = ("twin.yaml", "controller.yaml", "policy.yaml", "realsense.yaml")


@dataclass
class NodeSpec:
    """One process of the graph.

    Args:
        package: ROS package that installs the executable (`ros2 run <package> <executable>`).
        executable: console-script name on a colcon install.
        module: `python -m` path used by `dm1 launch` (None for non-Python tools such as rviz2).
        name: ROS node name (also the key in the parameter YAML files).
        parameters: ROS parameters (`--ros-args -p name:=value`).
        remappings: `(from, to)` topic remaps.
        required: when a required node exits, the launcher shuts the whole graph down with a non-zero code.
        condition: name of a boolean `LaunchArgs` field that enabled this node (for the launch file's
            `IfCondition`); None = always on. `franka_graph` already filters on it.
        arguments: extra command-line arguments before `--ros-args`.
        ready_topic: the launcher waits for a message on this topic (type `ready_type`) before starting
            the next node; None = wait until the node name appears in the ROS graph.
        ready_type: message type of `ready_topic`, `pkg/msg/Type`.
        ready_states: for a lifecycle node: the launcher waits until it answers `get_state` with one of
            these labels (an autostarting node answers only once its start-up transitions ran).
        ready_timeout_s: bound on that wait.
        terminal: the node reads the terminal `dm1 launch` runs in (keyboard teleop): it stays in the
            launcher's foreground process group, where a terminal lets a process read and set cbreak mode
            (in a process group of its own it is stopped by SIGTTOU), and Ctrl-C reaches it directly.
        enclave: the SROS2 security enclave (`--ros-args --enclave`); it takes effect only with
            `ROS_SECURITY_ENABLE=true` (docs/real-robot.md, "Securing the graph"), else rcl ignores it.
    """

    package: str
    executable: str
    module: str | None
    name: str
    parameters: dict[str, Any] = field(default_factory=dict)
    remappings: list[tuple[str, str]] = field(default_factory=list)
    required: bool = True
    condition: str | None = None
    arguments: list[str] = field(default_factory=list)
    ready_topic: str | None = None
    ready_type: str | None = None
    ready_states: tuple[str, ...] = ()
    ready_timeout_s: float = 30.0
    terminal: bool = False
    enclave: str | None = None

    def __post_init__(self) -> None:
        if not self.name or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.name):
            raise ValueError(f"NodeSpec.name: expected a valid ROS node name, found {self.name!r}")
        if (self.ready_topic is None) != (self.ready_type is None):
            raise ValueError(f"NodeSpec {self.name}: ready_topic and ready_type must be set together")
        if self.ready_topic is not None and self.ready_states:
            raise ValueError(f"NodeSpec {self.name}: ready_topic and ready_states exclude each other")
        if not self.ready_timeout_s > 0:
            raise ValueError(
                f"NodeSpec {self.name}.ready_timeout_s: expected > 0, found {self.ready_timeout_s}"
            )

    def ros_args(self) -> list[str]:
        """`--ros-args` part of the command line: node name, parameters (YAML values) and remaps."""
        out = ["--ros-args", "-r", f"__node:={self.name}"]
        if self.enclave:
            out += ["--enclave", self.enclave]
        for key, value in self.parameters.items():
            if isinstance(value, list | tuple) and len(value) == 0:
                continue  # ROS cannot type an empty array from the command line: the node default applies
            out += ["-p", f"{key}:={format_param(value)}"]
        for src, dst in self.remappings:
            out += ["-r", f"{src}:={dst}"]
        return out

    def command(self, python: str) -> list[str]:
        """Command line for `dm1 launch`: `python -m module ...`, or the executable for non-Python tools."""
        head = [python, "-m", self.module] if self.module else [self.executable]
        return head + list(self.arguments) + self.ros_args()


def format_param(value: Any) -> str:
    """A parameter value as the YAML text ROS parses from `-p name:=<text>` (strings stay strings)."""
    if isinstance(value, tuple):
        value = list(value)
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def camera_topic(camera: str) -> str:
    """Where a camera of this graph publishes its color images: the twin, `realsense_node` and an external
    driver (remapped as the README says) all use `/camera/<name>/color/image_raw`."""
    return f"/camera/{camera}/color/image_raw"


def policy_camera_topics(model: str | Path) -> list[str]:
    """The policy node's `camera_topics` in this graph: each of the model's cameras on `camera_topic`,
    whatever topic its card recorded (a card from another rig would otherwise leave the policy waiting)."""
    return [f"{c}={camera_topic(c)}" for c in load_card(model).camera_names]


#: Each node's SROS2 enclave (the identity its permissions are signed for; `docker/sros2/policy.xml`).
#: Monitors (rviz, Foxglove) share one subscribe-only enclave: they can watch but never command.
ENCLAVES: dict[str, str] = {
    "twin": "/dm1/twin",
    "realsense_node": "/dm1/camera",
    "controller_node": "/dm1/controller",
    "policy_node": "/dm1/policy",
    "teleop": "/dm1/teleop",
    "foxglove_node": "/dm1/monitor",
    "rviz2": "/dm1/monitor",
}


def franka_graph(args: LaunchArgs) -> list[NodeSpec]:
    """The node graph for `args`, in start order (conditions already applied)."""
    files = load_param_files(Path(args.config_dir) if args.config_dir else default_config_dir())

    def params(node: str, **overrides: Any) -> dict[str, Any]:
        merged = typed_parameters(node, files.get(node, {}))  # `1` in a file for a double: 1.0
        merged.update(overrides)
        if args.use_sim and node != "twin":
            merged["use_sim_time"] = True  # the twin publishes /clock
        return merged

    cams = list(args.cameras)
    ros = {"package": "dm1_ros"}
    graph: list[NodeSpec] = []
    if args.use_sim:
        twin = params("twin", host=args.sim_host, seed=args.seed, cameras=cams)
        if args.model is not None and not args.no_policy:
            twin["camera_height"], twin["camera_width"] = twin_image_size(args.model, args.cameras)
        graph.append(
            NodeSpec(
                "dm1_sim",
                "twin_node",
                "dm1_sim.twin_node",
                "twin",
                twin,
                ready_topic="/twin/robot_host",
                ready_type="std_msgs/msg/String",
                ready_timeout_s=90.0,
            )
        )
    elif not args.external_cameras:
        cam = params("realsense_node", camera_names=cams)
        graph.append(
            NodeSpec(
                **ros,
                executable="realsense_node",
                module="dm1_ros.realsense_node",
                name="realsense_node",
                parameters=cam,
                ready_topic=f"/camera/{cams[0]}/color/camera_info",
                ready_type="sensor_msgs/msg/CameraInfo",
            )
        )
    robot_ip = args.sim_host if args.use_sim else args.robot_ip
    # The twin homes faster than the real arm's YAML default (nobody stands next to it).
    sim_controller = {"relative_dynamics_factor": TWIN_HOME_DYNAMICS} if args.use_sim else {}
    graph.append(
        NodeSpec(
            **ros,
            executable="controller_node",
            module="dm1_ros.controller_node",
            name="controller_node",
            parameters=params("controller_node", robot_ip=robot_ip, **sim_controller),
            ready_topic="/joint_states",
            ready_type="sensor_msgs/msg/JointState",
            ready_timeout_s=60.0,
        )
    )
    if not args.no_policy:
        # Real cameras stream 640x480 etc.: the policy resamples to the model's input size.
        policy = params(
            "policy_node",
            model_dir=str(Path(str(args.model)).resolve()),
            autostart=True,
            resize_images=not args.use_sim,
            noise_scale=float(args.noise_scale),
            ensemble_alpha=float(args.ensemble_alpha),
        )
        if not policy.get("camera_topics"):  # a policy.yaml of the user's that sets them wins
            policy["camera_topics"] = policy_camera_topics(str(args.model))
        graph.append(
            NodeSpec(
                **ros,
                executable="policy_node",
                module="dm1_ros.policy_node",
                name="policy_node",
                parameters=policy,
                # configured (autostart exits when its model fails); inactive = activation refused
                ready_states=("inactive", "active"),
                ready_timeout_s=60.0,
            )
        )
    if args.record:
        # record_dir / teleop_device win over teleop.yaml's out_dir / device; left empty, the file's apply
        chosen = {"out_dir": args.record_dir, "device": args.teleop_device}
        rec = params("teleop", record=True, cameras=cams, **{k: v for k, v in chosen.items() if v})
        if "out_dir" in rec:  # relative to the directory the graph is launched from (the nodes' cwd)
            rec["out_dir"] = str(Path(str(rec["out_dir"])).resolve())
        graph.append(
            NodeSpec(
                **ros,
                executable="teleop_node",
                module="dm1_ros.teleop_node",
                name="teleop",
                parameters=rec,
                condition="record",
                terminal=rec.get("device") == "keyboard",  # it reads the keys typed into the terminal
            )
        )
    if args.foxglove:
        fox = params(
            "foxglove_node",
            port=args.foxglove_port,
            mcap_path=args.foxglove_mcap,
            image_topics=[camera_topic(c) for c in args.cameras],
        )
        graph.append(
            NodeSpec(
                **ros,
                executable="foxglove_node",
                module="dm1_ros.foxglove_node",
                name="foxglove_node",
                parameters=fox,
                required=False,
                condition="foxglove",
            )
        )
    if args.rviz:
        graph.append(
            NodeSpec(
                "rviz2",
                "rviz2",
                None,
                "rviz2",
                params("rviz2"),
                required=False,
                condition="rviz",
                arguments=["-d", str(rviz_config_path())],
            )
        )
    for spec in graph:
        spec.enclave = ENCLAVES[spec.name]
    return graph


def rviz_config_path() -> Path:
    """`dm1_bringup/rviz/dm1.rviz` next to the parameter files."""
    return default_config_dir().parent / "rviz" / "dm1.rviz"
