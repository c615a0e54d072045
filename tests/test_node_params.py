"""Typed, bounded ROS parameters from tables (`dm1_ros.params`) and the controller's parameter checks."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from conftest import PYTHON
from dm1.control.executor import FAULT, HOLDING, ExecutorStatus
from dm1.control.limits import SafetyLimits
from dm1.control.parameters import CONTROLLER_PARAMETERS, SAFETY_PARAMETERS, check_controller_parameters
from dm1.control.safety import SafetyReport

rclpy = pytest.importorskip("rclpy")
from dm1_ros.params import declare_table, descriptor  # noqa: E402
from rcl_interfaces.msg import ParameterType  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

TABLE = {
    "rate_hz": (20.0, "rate", (1.0, 200.0)),
    "points": (5, "points", (1, 50)),
    "name": ("front", "a name", None),
    "flag": (False, "a flag", None),
    "topics": ([], "string list, empty by default", None),
    "box": ((0.1, 0.2, 0.3), "three floats", None),
}


@pytest.fixture
def ctx(ros_env):
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        rclpy.shutdown(context=context)


def _node(ctx, overrides: list[Parameter] | None = None):
    return rclpy.create_node("params_test", context=ctx, parameter_overrides=overrides or [])


def test_table_declares_typed_parameters_and_returns_tuples_for_float_arrays(ctx) -> None:
    node = _node(ctx, [Parameter("box", value=[0.5, 0.6, 0.7]), Parameter("topics", value=["a=/b"])])
    values = declare_table(node, TABLE, prefix="x.")
    assert values == {
        "rate_hz": 20.0,
        "points": 5,
        "name": "front",
        "flag": False,
        "topics": [],
        "box": (0.1, 0.2, 0.3),
    }  # overrides without the prefix do not apply
    node.destroy_node()
    node = _node(ctx, [Parameter("box", value=[0.5, 0.6, 0.7]), Parameter("topics", value=["a=/b"])])
    values = declare_table(node, TABLE)
    assert values["box"] == (0.5, 0.6, 0.7) and values["topics"] == ["a=/b"]
    assert node.describe_parameter("points").integer_range[0].to_value == 50
    assert node.describe_parameter("rate_hz").type == ParameterType.PARAMETER_DOUBLE
    node.destroy_node()


def test_empty_list_in_a_yaml_parameter_file_is_an_empty_list(ctx, tmp_path) -> None:
    yaml = tmp_path / "params.yaml"
    yaml.write_text("params_test:\n  ros__parameters:\n    topics: []\n    name: wrist\n")
    node = rclpy.create_node("params_test", context=ctx, cli_args=["--ros-args", "--params-file", str(yaml)])
    values = declare_table(node, TABLE)
    assert values["topics"] == [] and values["name"] == "wrist"  # the file was applied
    node.destroy_node()


def test_out_of_range_override_is_refused_at_declaration_and_at_runtime(ctx) -> None:
    node = _node(ctx, [Parameter("rate_hz", value=500.0)])
    with pytest.raises(ValueError, match=r"^params_test: parameter rate_hz: .*out of range.*500\.0"):
        declare_table(node, TABLE)
    node.destroy_node()
    node = _node(ctx)
    declare_table(node, TABLE)
    result = node.set_parameters([Parameter("points", value=0)])[0]
    assert not result.successful and node.get_parameter("points").value == 5
    node.destroy_node()


@pytest.mark.parametrize(
    ("module", "override", "code"),
    [
        ("dm1_sim.twin_node", "camera_fps:=0.0", 2),
        ("dm1_ros.controller_node", "relative_dynamics_factor:=5.0", 2),
        ("dm1_ros.policy_node", "max_obs_age_s:=0.0", 2),
        ("dm1_ros.teleop_node", "deadman_timeout_s:=0.0", 2),
        ("dm1_ros.teleop_node", "cameras:=['']", 2),  # before: InvalidTopicNameException traceback, rc 1
        ("dm1_ros.teleop_node", "joy_topic:=bad topic", 2),
        ("dm1_ros.realsense_node", "fps:=0", 1),
        ("dm1_ros.foxglove_node", "port:=70000", 1),
        ("dm1_ros.foxglove_node", "max_image_rate_hz:=fast", 1),  # the wrong type
    ],
)
def test_every_node_refuses_a_bad_parameter_in_one_line(ros_env, module: str, override: str, code: int):
    """Reliability row 22: a parameter out of its range (or of the wrong type) ends the node at start with
    one line naming it and a non-zero exit, like any other bad configuration (before: a traceback)."""
    cmd = [PYTHON, "-m", module, "--ros-args", "-p", override]
    done = subprocess.run(cmd, env=ros_env, capture_output=True, text=True, timeout=120)
    name = override.split(":=")[0]
    assert done.returncode == code, (done.returncode, done.stderr[-2000:])
    assert f"parameter {name}: " in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("dm1_sim.twin_node", "twin_node"),
        ("dm1_ros.controller_node", "controller_node"),
        ("dm1_ros.policy_node", "policy_node"),
        ("dm1_ros.teleop_node", "teleop_node"),
        ("dm1_ros.realsense_node", "realsense_node"),
        ("dm1_ros.foxglove_node", "foxglove_node"),
    ],
)
def test_every_node_refuses_arguments_rcl_cannot_parse_in_one_line(ros_env, module: str, name: str) -> None:
    """`-p safety:={max_ee_speed: 0.1}` (a mapping where rcl wants a name.with.dots) fails inside rclpy.init:
    one line naming the node and the rule, exit code 2 (before: an RCLError traceback)."""
    cmd = [PYTHON, "-m", module, "--ros-args", "-p", "safety:={max_ee_speed: 0.1}"]
    done = subprocess.run(cmd, env=ros_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert f"{name}: bad --ros-args: Couldn't parse parameter override rule" in done.stderr, done.stderr[
        -2000:
    ]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            Parameter("cameras", value=[""]),
            "parameter cameras: expected identifiers ([A-Za-z_][A-Za-z0-9_]*)",
        ),
        (Parameter("cameras", value=["front", "front"]), "parameter cameras: expected non-empty and unique"),
        (Parameter("cameras", value=["my-cam"]), "parameter cameras: expected identifiers"),
        (Parameter("cube_topic", value="/twin//cube"), "parameter cube_topic: expected a ROS topic name"),
        (Parameter("joy_topic", value=""), "parameter joy_topic: expected a ROS topic name"),
    ],
)
def test_teleop_refuses_camera_names_and_topics_ros_cannot_use_naming_the_parameter(ctx, override, message):
    from dm1_ros.teleop_params import declare_parameters

    node = rclpy.create_node("teleop", context=ctx, parameter_overrides=[override])
    try:
        with pytest.raises(ValueError) as refused:
            declare_parameters(node)
        assert str(refused.value).startswith("teleop: ") and message in str(refused.value), refused.value
        assert "\n" not in str(refused.value)
    finally:
        node.destroy_node()


def test_read_only_table_cannot_be_changed_after_start(ctx) -> None:
    node = _node(ctx)
    declare_table(node, TABLE, read_only=True)
    assert not node.set_parameters([Parameter("name", value="wrist")])[0].successful
    node.destroy_node()


def test_a_frozen_parameter_such_as_use_sim_time_cannot_be_changed_after_start(ctx) -> None:
    from dm1_ros.params import freeze_parameters

    node = _node(ctx)
    freeze_parameters(node, ("use_sim_time",))
    result = node.set_parameters([Parameter("use_sim_time", value=True)])[0]
    assert not result.successful and result.reason.startswith("use_sim_time: read once, at start")
    assert node.get_parameter("use_sim_time").value is False
    declare_table(node, TABLE)
    assert node.set_parameters([Parameter("name", value="wrist")])[0].successful  # others still change
    node.destroy_node()


def test_policy_parameters_change_only_while_the_node_is_unconfigured() -> None:
    from dm1.policy.session import refused_while_configured

    assert refused_while_configured(["max_obs_age_s", "seed"], configured=False) is None
    assert refused_while_configured(["drill", "drill_duration_s"], configured=True) is None  # run time
    reason = refused_while_configured(["seed", "max_obs_age_s", "drill"], configured=True)
    assert reason.startswith("max_obs_age_s, seed: read on configure, so a change now would not apply")
    assert refused_while_configured(["use_sim_time"], configured=True).startswith("use_sim_time: read on")


def test_descriptor_rejects_unsupported_defaults_and_bounds_on_strings() -> None:
    with pytest.raises(TypeError, match="parameter default: expected one of .* found dict"):
        descriptor({}, "bad")
    with pytest.raises(TypeError, match="only int and float"):
        descriptor("x", "bad", (0, 1))


def test_controller_parameter_check_names_the_bad_value() -> None:
    good = {name: default for name, (default, _, _) in CONTROLLER_PARAMETERS.items()}
    good["robot_ip"] = "10.0.0.2"
    assert check_controller_parameters(good, use_sim_time=False) is True  # a real arm: RT enforced
    assert check_controller_parameters(good, use_sim_time=True) is False  # the twin runs on sim time
    assert check_controller_parameters(good | {"realtime_config": "enforce"}, use_sim_time=True) is True
    for bad, match in (
        ({"robot_ip": ""}, "robot_ip: expected the FCI"),
        ({"mode": "velocity"}, "mode: expected cartesian | joint, found 'velocity'"),
        ({"realtime_config": "yes"}, "realtime_config: expected auto | enforce | ignore, found 'yes'"),
    ):
        with pytest.raises(ValueError, match=match):
            check_controller_parameters(good | bad, use_sim_time=False)


def test_safety_table_covers_every_limit_with_its_default() -> None:
    defaults = SafetyLimits()
    assert set(SAFETY_PARAMETERS) == set(defaults.to_dict())
    assert SAFETY_PARAMETERS["workspace_min"][0] == defaults.workspace_min


def test_executor_status_values_carry_the_last_clamp_and_level() -> None:
    report = SafetyReport(np.array([0.9, 0.0, 0.3]), np.array([0.8, 0.0, 0.3]), ["workspace"])
    st = ExecutorStatus(HOLDING, ["watchdog"], {"ticks": 3}, last_clamp=report)
    values = st.values()
    assert values["state"] == HOLDING and values["reasons"] == "watchdog" and values["ticks"] == 3
    assert values["last_clamp"] == "workspace" and np.allclose(values["clamp_safe"], [0.8, 0.0, 0.3])
    assert st.level == "warn" and ExecutorStatus(FAULT, [], {}).level == "error"
    assert ExecutorStatus("active", [], {}).level == "ok"
