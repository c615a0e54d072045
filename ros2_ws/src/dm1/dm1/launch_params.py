"""The launch graph's parameter files: where they are, how they are read, and the types the nodes declare.

ROS-free. ROS 2 parameter files are typed by their YAML: `max_obs_age_s: 1` is an integer, which a node that
declares a double refuses, and under a launch only once the nodes before it have started. `typed_parameters`
writes such a value as the double the node declares (`1.0`) for the nodes whose tables are ROS-free (policy,
controller, RealSense), before anything starts.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml


def default_config_dir() -> Path:
    """The parameter-file directory: $DM1_BRINGUP_CONFIG, the source tree, or the installed share dir."""
    env = os.environ.get("DM1_BRINGUP_CONFIG")
    if env:
        return Path(env)
    source = Path(__file__).resolve().parents[2] / "dm1_bringup" / "config"
    if source.is_dir():
        return source
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("dm1_bringup")) / "config"
    except Exception as exc:  # PackageNotFoundError or ament_index missing
        raise FileNotFoundError(
            f"dm1_bringup config directory not found (set DM1_BRINGUP_CONFIG): {exc}"
        ) from exc


def load_param_files(config_dir: Path) -> dict[str, dict[str, Any]]:
    """Read every `*.yaml` in `config_dir`: `{node_name: {param: value}}` (ROS 2 parameter-file format)."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(config_dir).glob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of node names, found {type(data).__name__}")
        for node, body in data.items():
            params = body.get("ros__parameters") if isinstance(body, dict) else None
            if not isinstance(params, dict):
                raise ValueError(
                    f"{path}: node {node!r} expected a 'ros__parameters' mapping, found {body!r}"
                )
            out.setdefault(str(node).lstrip("/"), {}).update(flatten_parameters(params))
    return out


def flatten_parameters(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as ROS 2 parameter files mean them: `{safety: {max_ee_speed: 0.1}}` is the parameter
    `safety.max_ee_speed`. (Passed on as `-p safety:={...}`, rcl refuses the override and the node does not
    start: "Couldn't parse parameter override rule".)"""
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= flatten_parameters(value, f"{name}.")
        else:
            out[name] = value
    return out


def _policy_table() -> dict[str, tuple[Any, str, Any]]:
    from dm1.policy.drill import DRILL_PARAMETERS
    from dm1.policy.session import NODE_PARAMETERS

    return {**NODE_PARAMETERS, **DRILL_PARAMETERS}


def _controller_table() -> dict[str, tuple[Any, str, Any]]:
    from dm1.control.parameters import CONTROLLER_PARAMETERS, SAFETY_PARAMETERS

    return {**CONTROLLER_PARAMETERS, **{f"safety.{k}": v for k, v in SAFETY_PARAMETERS.items()}}


def _realsense_table() -> dict[str, tuple[Any, str, Any]]:
    from dm1.camera.camera_config import NODE_PARAMETERS

    return dict(NODE_PARAMETERS)


#: node name -> its parameter table (name -> (default, description, bounds)), imported only when needed
NODE_TABLES: dict[str, Callable[[], dict[str, tuple[Any, str, Any]]]] = {
    "policy_node": _policy_table,
    "controller_node": _controller_table,
    "realsense_node": _realsense_table,
}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def typed_parameters(node: str, params: dict[str, Any]) -> dict[str, Any]:
    """`params` with every integer given for a double parameter of `node` (and every integer list for a
    double-array one) written as doubles; everything else as it was (a wrong type stays for the node to
    refuse, naming it)."""
    table = NODE_TABLES[node]() if node in NODE_TABLES else {}
    out = dict(params)
    for name, value in params.items():
        default = table.get(name, (None,))[0]
        if isinstance(default, float) and _is_number(value):
            out[name] = float(value)
        elif isinstance(default, tuple) and isinstance(value, list | tuple) and all(map(_is_number, value)):
            out[name] = [float(v) for v in value]
    return out
