"""Bring up dm1 on a Franka FR3 (or its franky-sim twin): `ros2 launch dm1_bringup franka.launch.py`.

    ros2 launch dm1_bringup franka.launch.py robot_ip:=172.16.0.2 model:=/models/lift cameras:=front,wrist
    ros2 launch dm1_bringup franka.launch.py use_sim:=true model:=/models/lift rviz:=true

The node graph is declared once, in `dm1.launch_graph.franka_graph` (also used by `dm1 launch franka` on
machines without `ros2 launch`); this file only declares the arguments and turns each `NodeSpec` into a
`launch_ros` Node. Monitoring nodes (rviz2, Foxglove) sit behind `IfCondition`; a required node's exit
shuts the whole launch down. `node_specs()` is the pure part (no launch import), used by the tests.

Before it starts anything, `preflight()` makes the checks `dm1 launch` makes: `sim_host:=auto` (the default)
takes a loopback address whose franky-sim ports are free, and a ROS domain that already runs nodes of this
graph (another launch: two policies would command one arm) ends the launch with an error naming them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from dm1.commands.graph_probe import look_for_other_graph, other_graph_message
from dm1.launch_args import LaunchArgs
from dm1.launch_graph import NodeSpec, franka_graph
from dm1.policy_defaults import DEFAULT_ENSEMBLE_ALPHA
from dm1.sim.hosts import AUTO, resolve_sim_host

# (name, default, description): the same names as dm1.launch_args.LaunchArgs.
ARGUMENTS: list[tuple[str, str, str]] = [
    ("robot_ip", "", "FCI address of the robot (e.g. 172.16.0.2); ignored with use_sim"),
    ("model", "", "exported model directory (model.onnx + model_card.json)"),
    ("cameras", "front,wrist", "comma-separated camera names (topics /camera/<name>/color/image_raw)"),
    ("use_sim", "false", "franky-sim digital twin instead of the robot and the RealSense cameras"),
    (
        "sim_host",
        AUTO,
        "loopback address the twin binds and the controller connects to (auto: the first with free ports)",
    ),
    (
        "external_cameras",
        "false",
        "cameras come from another driver (realsense2_camera); no dm1 RealSense node",
    ),
    ("rviz", "false", "start rviz2 with dm1_bringup/rviz/dm1.rviz"),
    ("record", "false", "start the teleop recorder (episodes into record_dir)"),
    ("record_dir", "", "recorder output directory (default: teleop.yaml's out_dir)"),
    (
        "teleop_device",
        "",
        "recorder input device: spacemouse|keyboard|gamepad|joy|scripted (default: teleop.yaml's device)",
    ),
    ("foxglove", "false", "start the Foxglove live bridge (monitoring only)"),
    ("foxglove_port", "8765", "Foxglove websocket port"),
    ("foxglove_mcap", "", "also write the Foxglove stream to this .mcap file"),
    ("no_policy", "false", "bring the graph up without the policy node"),
    ("seed", "0", "twin scene seed"),
    ("noise_scale", "1.0", "policy sampler noise scale: 1 = trained distribution, 0 = deterministic"),
    (
        "ensemble_alpha",
        str(DEFAULT_ENSEMBLE_ALPHA),
        "policy temporal ensembling: weight of the newest chunk, 1 = off",
    ),
    ("config_dir", "", "parameter YAML directory (default: dm1_bringup/config)"),
]
OPTIONAL_FLAGS = ("rviz", "foxglove")  # monitoring nodes, always declared, behind IfCondition


def _bool(name: str, text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off", ""):
        return False
    raise ValueError(f"launch argument {name}: expected true/false, found {text!r}")


def launch_args_from(values: dict[str, str]) -> LaunchArgs:
    """Typed `LaunchArgs` from launch-argument strings (missing names take the declared defaults)."""
    raw = {name: default for name, default, _ in ARGUMENTS}
    unknown = set(values) - set(raw)
    if unknown:
        raise ValueError(f"unknown launch arguments {sorted(unknown)}; known: {sorted(raw)}")
    raw.update(values)
    bools = {"use_sim", "external_cameras", "rviz", "record", "foxglove", "no_policy"}
    typed: dict[str, object] = {k: _bool(k, v) if k in bools else v for k, v in raw.items()}
    if raw["sim_host"] == AUTO:  # unused without use_sim
        typed["sim_host"] = resolve_sim_host(AUTO, claim=False)[0] if typed["use_sim"] else "127.0.0.1"
    typed["model"] = raw["model"] or None
    typed["config_dir"] = raw["config_dir"] or None
    for key in ("foxglove_port", "seed"):
        try:
            typed[key] = int(raw[key])
        except ValueError:
            raise ValueError(f"launch argument {key}: expected an integer, found {raw[key]!r}") from None
    for key in ("noise_scale", "ensemble_alpha"):
        try:
            typed[key] = float(raw[key])
        except ValueError:
            raise ValueError(f"launch argument {key}: expected a number, found {raw[key]!r}") from None
    return LaunchArgs(**typed)  # type: ignore[arg-type]


def node_specs(**values: str) -> list[NodeSpec]:
    """The nodes this launch file starts for these argument values (pure: no launch import)."""
    return franka_graph(launch_args_from(values))


def preflight(values: dict[str, str], env: Mapping[str, str] | None = None) -> list[NodeSpec]:
    """The nodes to start for these argument values, once the checks `dm1 launch` makes have passed.

    `sim_host` auto (with use_sim) becomes a loopback address whose franky-sim ports are free (said when it
    is not 127.0.0.1). Raises RuntimeError when the ROS domain of `env` (default: this process's) already
    runs nodes named like these (`look_for_other_graph`, ~3 s).
    """
    env = dict(os.environ if env is None else env)
    if _bool("use_sim", values.get("use_sim", "false")) and values.get("sim_host", AUTO) == AUTO:
        host, note = resolve_sim_host(AUTO)
        values = {**values, "sim_host": host}
        if note:
            print(f"[dm1_bringup] {note}", flush=True)
    specs = node_specs(**values)
    others = look_for_other_graph([spec.name for spec in specs], env)
    if others:
        raise RuntimeError(other_graph_message(env.get("ROS_DOMAIN_ID", "0"), others))
    return specs


def generate_launch_description():  # noqa: ANN201 - launch types are imported lazily
    """Arguments + one OpaqueFunction that builds the nodes from `franka_graph` once values are known."""
    from launch.actions import DeclareLaunchArgument, OpaqueFunction, Shutdown
    from launch.conditions import IfCondition
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    from launch import LaunchDescription

    def nodes(context, *_, **__):  # noqa: ANN001, ANN202
        values = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
        # Declare every optional node; IfCondition decides at launch time whether it runs.
        specs = preflight({**values, **dict.fromkeys(OPTIONAL_FLAGS, "true")})
        actions = []
        for spec in specs:
            condition = IfCondition(LaunchConfiguration(spec.condition)) if spec.condition else None
            actions.append(
                Node(
                    package=spec.package,
                    executable=spec.executable,
                    name=spec.name,
                    parameters=[spec.parameters],
                    remappings=spec.remappings,
                    arguments=spec.arguments,
                    ros_arguments=["--enclave", spec.enclave] if spec.enclave else [],
                    output="screen",
                    condition=condition,
                    on_exit=[Shutdown(reason=f"required node {spec.name} exited")] if spec.required else None,
                )
            )
        return actions

    declared = [DeclareLaunchArgument(n, default_value=d, description=t) for n, d, t in ARGUMENTS]
    return LaunchDescription([*declared, OpaqueFunction(function=nodes)])
