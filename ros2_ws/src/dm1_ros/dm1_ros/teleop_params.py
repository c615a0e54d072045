"""Typed, bounded, read-only ROS parameters of `teleop_node` (a `dm1_ros.params` table)."""

from __future__ import annotations

from typing import Any

from rclpy.node import Node

from dm1_ros.params import ParamTable, declare_table

#: name -> (default, description, (lo, hi) or None); the default fixes the type.
PARAMETERS: ParamTable = {
    "device": ("keyboard", "input device: spacemouse | keyboard | gamepad | joy | scripted", None),
    "out_dir": ("data/teleop", "dataset directory (one episode_<n>.h5 per episode)", None),
    "record": (True, "record episodes (false: teleop only)", None),
    "mcap": (False, "also mirror the raw topics to <out_dir>/mcap/episode_<n>.mcap", None),
    "cameras": (["front", "wrist"], "camera names, topics /camera/<name>/color/image_raw", None),
    "proprio_keys": (
        ["ee_pos", "ee_quat_xyzw", "gripper_width", "joint_pos"],
        "dm1.proprio keys recorded from /joint_states",
        None,
    ),
    "control_rate_hz": (20.0, "control and recording rate (Hz)", (1.0, 200.0)),
    "deadman_timeout_s": (0.1, "no device input for this long -> stop publishing (s)", (0.01, 5.0)),
    "require_enable": (False, "motion also needs the device's enable button held", None),
    "max_speed": (0.3, "largest target speed (m/s)", (0.01, 1.0)),
    "lead_s": (0.05, "the first point of a published chunk is due this long after the tick (s)", (0.0, 0.5)),
    "chunk_points": (5, "points per chunk, all at the held target (robust to transport delay)", (1, 50)),
    "min_free_mb": (100.0, "refuse to start an episode with less free disk (MB)", (0.0, 1e7)),
    "joy_topic": ("/joy", "sensor_msgs/Joy input topic (device joy)", None),
    "cube_topic": ("/twin/cube_pose", "object pose (PoseStamped) for the scripted expert", None),
    "scripted_recovery_fraction": (
        0.0,
        "device scripted: fraction of demos that start with a deliberate, unlearned miss (recovery demos)",
        (0.0, 1.0),
    ),
    "scripted_seed": (0, "device scripted: seed of the recovery-demo draws", (0, 2**31 - 1)),
}


TOPIC_PARAMETERS = ("joy_topic", "cube_topic")


def parameter_problem(
    values: dict[str, Any], node_name: str = "teleop", namespace: str = "/"
) -> tuple[str, str] | None:
    """(parameter, why) for the first value ROS cannot use as a name, or None: camera names (identifiers, as
    in episode files and in `/camera/<name>/...`) and topic names. Before, the node died with rclpy's
    InvalidTopicNameException traceback when it subscribed (`cameras:=['']`: `/camera//color/image_raw`)."""
    from dm1.data.episode_checks import bad_camera_names
    from rclpy.exceptions import NameValidationException
    from rclpy.expand_topic_name import expand_topic_name
    from rclpy.validate_full_topic_name import validate_full_topic_name
    from rclpy.validate_topic_name import validate_topic_name

    if problem := bad_camera_names(list(values["cameras"])):
        return "cameras", problem
    for name in TOPIC_PARAMETERS:
        try:
            validate_topic_name(values[name])  # then as rclpy subscribes: expanded (`~/joy`), in full
            validate_full_topic_name(expand_topic_name(values[name], node_name, namespace))
        except NameValidationException as exc:
            why = str(exc).splitlines()[0].removeprefix("Invalid topic name: ").rstrip(":")
            return name, f"expected a ROS topic name like /joy ({why}), found {values[name]!r}"
    return None


def declare_parameters(node: Node) -> dict[str, Any]:
    """Declare every teleop parameter on `node`; returns name -> value. Out-of-range values, camera names and
    topics ROS cannot use are refused: ValueError `<node>: parameter <name>: expected ..., found ...`."""
    values = declare_table(node, PARAMETERS, read_only=True)
    if problem := parameter_problem(values, node.get_name(), node.get_namespace()):
        raise ValueError(f"{node.get_name()}: parameter {problem[0]}: {problem[1]}")
    return values
