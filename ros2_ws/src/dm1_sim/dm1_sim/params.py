"""Typed, bounded ROS parameters of the twin node, turned into a validated `TwinConfig`."""

from __future__ import annotations

from typing import Any

from dm1.sim.config import MAX_IMAGE_SIZE, CameraSpec, TwinConfig
from dm1_ros.params import ParamTable, declare_table
from rclpy.node import Node

#: name -> (default, description, bounds); every parameter is read-only (the scene is built once at start).
PARAMETERS: ParamTable = {
    "host": ("", "loopback address for franky-sim (127.x.y.z); empty = first free", None),
    "seed": (0, "seed of the cube reset stream", (0, 2**31 - 1)),
    "seeded_resets": (
        False,
        "true: the n-th /twin/reset (n = 0, 1, ...) places the cube from seed + n alone, like "
        "`dm1 data collect --seed`; false: from one random stream seeded by seed",
        None,
    ),
    "cameras": (["front", "wrist"], "camera names; each must be a preset (front, wrist)", None),
    "camera_width": (96, "image width (px)", (1, MAX_IMAGE_SIZE)),
    "camera_height": (96, "image height (px)", (1, MAX_IMAGE_SIZE)),
    "camera_fps": (20.0, "frames per simulated second", (0.1, 120.0)),
    "realtime": (True, "pace physics to wall time (false = as fast as possible)", None),
    "clock_period_s": (0.005, "simulated seconds between /clock messages", (0.001, 0.1)),
    "state_rate_hz": (20.0, "rate of /twin/cube_pose and /twin/success (wall Hz)", (1.0, 200.0)),
    "success_height": (0.10, "cube lift above the table that counts as success (m)", (0.01, 0.9)),
    "success_hold_s": (0.5, "sim seconds the cube must stay lifted", (0.0, 60.0)),
    "cpu_nice": (
        10,
        "niceness the twin adds to its own process: the simulated world yields the CPU to the stack "
        "under test, as on a robot PC that runs no simulator (0 = same priority)",
        (0, 19),
    ),
    "cpu_idle": (
        True,
        "run every twin thread under SCHED_IDLE: the simulated world gets a core only when the stack "
        "under test leaves one free (false = cpu_nice alone)",
        None,
    ),
}


def declare_parameters(node: Node) -> dict[str, Any]:
    """Declare every twin parameter on `node` (read-only) and return their values."""
    return declare_table(node, PARAMETERS, read_only=True)


def twin_config_from_parameters(values: dict[str, Any]) -> TwinConfig:
    """A validated `TwinConfig` from parameter values (raises ValueError naming the bad parameter)."""
    size = {"width": int(values["camera_width"]), "height": int(values["camera_height"])}
    cameras = {str(n): CameraSpec(fps=float(values["camera_fps"]), **size) for n in values["cameras"]}
    return TwinConfig(
        host=str(values["host"]) or None,
        cameras=cameras,
        seed=int(values["seed"]),
        realtime=bool(values["realtime"]),
        success_height=float(values["success_height"]),
        success_hold_s=float(values["success_hold_s"]),
    )
