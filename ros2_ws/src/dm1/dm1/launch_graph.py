"""One declaration of the dm1 node graph, shared by `franka.launch.py` and `dm1 launch`.

ROS-free (no rclpy, no launch): `franka_graph(args)` turns validated `LaunchArgs` into an ordered list of
`NodeSpec`s. Parameters come from the YAML files in `dm1_bringup/config/` (standard ROS 2 format,
`<node>: {ros__parameters: {...}}`), overlaid by values derived from the launch arguments
(file defaults <- launch args). Order = start order: each node may declare a readiness check (`ready_topic`)
that the launcher waits for before starting the next one.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from dm1.control.backend import TWIN_HOME_DYNAMICS
from dm1.launch_params import default_config_dir, load_param_files, typed_parameters
from dm1.modelcard import load_card, onnx_hash_problem
from dm1.policy_defaults import DEFAULT_ENSEMBLE_ALPHA

CONFIG_FILES: tuple[str, ...] = ("twin.yaml", "controller.yaml", "policy.yaml", "realsense.yaml")
_CAMERA_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


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


@dataclass
class LaunchArgs:
    """Arguments of `franka.launch.py` and `dm1 launch franka` (validated on construction).

    Args:
        robot_ip: FCI address of the real robot (required unless `use_sim`).
        model: exported model directory (`model.onnx` + `model_card.json`); None only with `no_policy`.
        cameras: camera names (topics `/camera/<name>/color/image_raw`).
        use_sim: run the franky-sim digital twin instead of the robot and the RealSense cameras.
        sim_host: loopback address the twin binds and the controller connects to in sim mode.
        external_cameras: cameras come from another driver (e.g. realsense2_camera, see docs/real-robot.md);
            do not start `dm1_ros.realsense_node`.
        rviz: start rviz2 with `dm1_bringup/rviz/dm1.rviz` (needs a ROS host).
        record: start the teleop recorder (`dm1_ros.teleop_node`), episodes into `record_dir`; it commands the
            robot, so it needs `no_policy`.
        record_dir: output directory of the recorder ("" = teleop.yaml's `out_dir`).
        teleop_device: input device of the recorder, one of `dm1.teleop.devices.DEVICES` ("" = teleop.yaml's
            `device`); needs `record`.
        foxglove: start the Foxglove bridge (websocket on `foxglove_port`, optional MCAP file).
        foxglove_port: websocket port (0 = any free port).
        foxglove_mcap: also write the bridged stream to this `.mcap` file ("" = no file); needs `foxglove`,
            and the file must not exist yet.
        no_policy: bring the graph up without the policy node.
        seed: seed of the twin's scene randomization.
        noise_scale: the policy's sampler noise scale (1 = trained distribution, 0 = deterministic).
        ensemble_alpha: the policy's temporal ensembling weight of the newest chunk (1 = off).
        config_dir: directory of the parameter YAML files (default: `dm1_bringup/config`).
    """

    robot_ip: str = ""
    model: str | None = None
    cameras: tuple[str, ...] = ("front", "wrist")
    use_sim: bool = False
    sim_host: str = "127.0.0.1"
    external_cameras: bool = False
    rviz: bool = False
    record: bool = False
    record_dir: str = ""
    teleop_device: str = ""
    foxglove: bool = False
    foxglove_port: int = 8765
    foxglove_mcap: str = ""
    no_policy: bool = False
    seed: int = 0
    noise_scale: float = 1.0
    ensemble_alpha: float = DEFAULT_ENSEMBLE_ALPHA
    config_dir: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.cameras, str):
            self.cameras = tuple(c.strip() for c in self.cameras.split(",") if c.strip())
        self.cameras = tuple(self.cameras)
        if not self.cameras:
            raise ValueError("LaunchArgs.cameras: expected at least one camera name, found none")
        for cam in self.cameras:
            if not _CAMERA_NAME.match(cam):
                raise ValueError(f"LaunchArgs.cameras: expected names like 'front', found {cam!r}")
        if len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"LaunchArgs.cameras: duplicate names in {list(self.cameras)}")
        if self.use_sim:
            _check_ip("sim_host", self.sim_host, loopback=True)
        elif not self.robot_ip:
            raise ValueError("LaunchArgs.robot_ip: required for the real robot (or pass use_sim), found ''")
        else:
            _check_ip("robot_ip", self.robot_ip, loopback=False)
        if self.record and not self.no_policy:
            raise ValueError(
                "LaunchArgs.record: the teleop recorder commands the robot, so it cannot run beside the "
                "policy; pass no_policy (policy rollouts are recorded by `dm1 eval`)"
            )
        if self.teleop_device:
            from dm1.teleop.devices import DEVICES

            if self.teleop_device not in DEVICES:
                raise ValueError(
                    f"LaunchArgs.teleop_device: expected one of {sorted(DEVICES)} (or '' for teleop.yaml's "
                    f"device), found {self.teleop_device!r}"
                )
            if not self.record:
                raise ValueError(
                    f"LaunchArgs.teleop_device: only used by the teleop recorder, expected record with it, "
                    f"found teleop_device={self.teleop_device!r} without record"
                )
        if self.model is None and not self.no_policy:
            raise ValueError(
                "LaunchArgs.model: expected an exported model directory (or no_policy), found None"
            )
        if self.model is not None and not self.no_policy:
            model = Path(self.model)
            missing = [f for f in ("model.onnx", "model_card.json") if not (model / f).is_file()]
            if missing:
                raise ValueError(
                    f"LaunchArgs.model: {model} lacks {', '.join(missing)} (expected `dm1 export` output)"
                )
            if problem := onnx_hash_problem(load_card(model), model / "model.onnx"):
                raise ValueError(f"LaunchArgs.model: {problem}")  # now, not once the twin and controller run
            if self.use_sim:
                twin_image_size(model, self.cameras)  # a clear error now, not a policy waiting for frames
        if not 0 <= self.foxglove_port <= 65535:
            raise ValueError(f"LaunchArgs.foxglove_port: expected 0..65535, found {self.foxglove_port}")
        if self.foxglove_mcap:
            _check_foxglove_mcap(self.foxglove_mcap, self.foxglove)
        if not 0.0 <= self.noise_scale <= 1.0:
            raise ValueError(f"LaunchArgs.noise_scale: expected 0..1, found {self.noise_scale}")
        if not 0.0 < self.ensemble_alpha <= 1.0:
            raise ValueError(f"LaunchArgs.ensemble_alpha: expected (0, 1], found {self.ensemble_alpha}")
        if self.seed < 0:
            raise ValueError(f"LaunchArgs.seed: expected >= 0, found {self.seed}")
        if self.config_dir is not None and not Path(self.config_dir).is_dir():
            raise ValueError(f"LaunchArgs.config_dir: {self.config_dir} is not a directory")

    @classmethod
    def field_names(cls) -> list[str]:
        """Names of all launch arguments (the launch file declares the same)."""
        return [f.name for f in fields(cls)]


def _check_ip(name: str, value: str, *, loopback: bool) -> None:
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        if loopback:
            raise ValueError(
                f"LaunchArgs.{name}: expected a loopback IPv4 address, found {value!r}"
            ) from None
        _check_hostname(name, value)  # a hostname is acceptable for the real robot
        return
    if loopback and not addr.is_loopback:
        raise ValueError(f"LaunchArgs.{name}: expected a loopback address (127.x.y.z), found {value!r}")


def _check_foxglove_mcap(path: str, foxglove: bool) -> None:
    """Refuse a recording path the bridge would not write: without the bridge (it was ignored silently), not
    `.mcap`, or already there (the bridge refuses it only once the rest of the graph runs)."""
    if not foxglove:
        raise ValueError(
            f"LaunchArgs.foxglove_mcap: written by the Foxglove bridge only, expected foxglove with it, "
            f"found foxglove_mcap={path!r} without foxglove"
        )
    mcap = Path(path)
    if mcap.suffix != ".mcap":
        raise ValueError(f"LaunchArgs.foxglove_mcap: expected a .mcap file, found {mcap}")
    if mcap.exists():
        raise ValueError(
            f"LaunchArgs.foxglove_mcap: {mcap} already exists (a recording is never overwritten): pass a "
            "new path"
        )


_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def _check_hostname(name: str, value: str) -> None:
    """Refuse what is neither an IP address nor a hostname (RFC 1123), e.g. a mistyped dotted quad."""
    labels = value.rstrip(".").split(".")
    if re.fullmatch(r"[0-9.]+", value):
        raise ValueError(f"LaunchArgs.{name}: expected an IPv4 address (four numbers 0-255), found {value!r}")
    if len(value) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
        raise ValueError(f"LaunchArgs.{name}: expected an IP address or a hostname, found {value!r}")


def twin_image_size(model: str | Path, cameras: tuple[str, ...]) -> tuple[int, int]:
    """(height, width) the twin renders for `model`: its cameras' common input size. The twin renders exactly
    `cameras`, all at one size: ValueError when one of the model's cameras is not among them, or when the
    model's cameras differ in size."""
    card = load_card(model)
    need = card.camera_names
    if lacking := [c for c in need if c not in cameras]:
        raise ValueError(
            f"LaunchArgs.cameras: the model {model} needs cameras {need}; the twin would render "
            f"only {list(cameras)}, lacking {lacking} (pass --cameras {','.join(need)})"
        )
    sizes = {tuple(c.shape[:2]) for c in card.cameras}
    if len(sizes) != 1:
        raise ValueError(
            f"LaunchArgs.model: {model} has cameras of different sizes "
            f"{ {c.name: list(c.shape[:2]) for c in card.cameras} }; the twin renders one size for all"
        )
    ((height, width),) = sizes
    return int(height), int(width)


def camera_topic(camera: str) -> str:
    """Where a camera of this graph publishes its color images: the twin, `realsense_node` and an external
    driver (remapped as the README says) all use `/camera/<name>/color/image_raw`."""
    return f"/camera/{camera}/color/image_raw"


def policy_camera_topics(model: str | Path) -> list[str]:
    """The policy node's `camera_topics` in this graph: each of the model's cameras on `camera_topic`,
    whatever topic its card recorded (a card from another rig would otherwise leave the policy waiting)."""
    return [f"{c}={camera_topic(c)}" for c in load_card(model).camera_names]


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
    return graph


def rviz_config_path() -> Path:
    """`dm1_bringup/rviz/dm1.rviz` next to the parameter files."""
    return default_config_dir().parent / "rviz" / "dm1.rviz"
