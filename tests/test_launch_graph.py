"""The node graph is declared once (`dm1.launch_graph`) and `franka.launch.py` builds exactly that graph."""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from dm1.launch_args import LaunchArgs
from dm1.launch_graph import NodeSpec, franka_graph, load_param_files
from policy_toy_model import build_toy_model

LAUNCH_FILE = REPO / "ros2_ws/src/dm1_bringup/launch/franka.launch.py"
CONFIG_DIR = REPO / "ros2_ws/src/dm1_bringup/config"


def _launch_module():
    spec = importlib.util.spec_from_file_location("franka_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """`dm1 export` output of a toy model with the launch's default cameras (96x96 front and wrist)."""
    return build_toy_model(tmp_path / "toy", cameras={"front": (96, 96, 3), "wrist": (96, 96, 3)})


def _by_name(graph: list[NodeSpec]) -> dict[str, NodeSpec]:
    return {spec.name: spec for spec in graph}


def test_sim_graph_starts_twin_then_controller_then_policy_on_sim_time(model_dir: Path) -> None:
    graph = franka_graph(LaunchArgs(use_sim=True, model=str(model_dir), sim_host="127.0.3.4"))
    assert [s.name for s in graph] == ["twin", "controller_node", "policy_node"]
    nodes = _by_name(graph)
    assert nodes["twin"].parameters["host"] == nodes["controller_node"].parameters["robot_ip"] == "127.0.3.4"
    assert "use_sim_time" not in nodes["twin"].parameters  # the twin is the clock
    assert nodes["controller_node"].parameters["use_sim_time"] is True
    assert nodes["policy_node"].parameters["use_sim_time"] is True
    assert nodes["policy_node"].parameters["autostart"] is True
    assert nodes["policy_node"].parameters["model_dir"] == str(model_dir.resolve())
    assert nodes["twin"].ready_topic == "/twin/robot_host"
    assert nodes["controller_node"].ready_topic == "/joint_states"
    assert all(s.required for s in graph)


def test_the_twin_renders_the_models_cameras_at_the_models_size(tmp_path: Path) -> None:
    model = build_toy_model(tmp_path / "toy", cameras={"front": (64, 80, 3)})
    twin = _by_name(franka_graph(LaunchArgs(use_sim=True, model=str(model), cameras="front")))["twin"]
    assert (twin.parameters["camera_height"], twin.parameters["camera_width"]) == (64, 80)
    with pytest.raises(
        ValueError, match=r"needs cameras \['front'\]; the twin would render only \['wrist'\]"
    ):
        LaunchArgs(use_sim=True, model=str(model), cameras="wrist")
    mixed = build_toy_model(tmp_path / "mixed", cameras={"front": (64, 80, 3), "wrist": (96, 96, 3)})
    with pytest.raises(ValueError, match="cameras of different sizes"):
        LaunchArgs(use_sim=True, model=str(mixed))


def test_robot_graph_uses_realsense_and_the_robot_ip_without_sim_time(model_dir: Path) -> None:
    graph = franka_graph(LaunchArgs(robot_ip="172.16.0.2", model=str(model_dir), cameras="front"))
    assert [s.name for s in graph] == ["realsense_node", "controller_node", "policy_node"]
    nodes = _by_name(graph)
    assert nodes["controller_node"].parameters["robot_ip"] == "172.16.0.2"
    assert nodes["realsense_node"].parameters["camera_names"] == ["front"]
    assert nodes["policy_node"].parameters["resize_images"] is True  # 640x480 frames -> the model's size
    assert not any(s.parameters.get("use_sim_time") for s in graph)


def test_external_cameras_replace_the_realsense_node(model_dir: Path) -> None:
    args = LaunchArgs(robot_ip="172.16.0.2", model=str(model_dir), external_cameras=True)
    assert [s.name for s in franka_graph(args)] == ["controller_node", "policy_node"]


def test_rviz_config_shows_robot_cameras_path_and_safety_box() -> None:
    rviz = yaml.safe_load((REPO / "ros2_ws/src/dm1_bringup/rviz/dm1.rviz").read_text())
    displays = rviz["Visualization Manager"]["Displays"]
    topics = {d["Topic"]["Value"] for d in displays if "Topic" in d}
    assert {"/camera/front/color/image_raw", "/camera/wrist/color/image_raw", "/dm1/predicted_path"} <= topics
    assert "/dm1/safety_box" in topics
    assert any(d["Class"] == "rviz_default_plugins/RobotModel" for d in displays)
    assert rviz["Visualization Manager"]["Global Options"]["Fixed Frame"] == "fr3_link0"


def test_optional_nodes_appear_only_when_asked_and_are_not_required() -> None:
    base = {"use_sim": True, "no_policy": True}
    assert [s.name for s in franka_graph(LaunchArgs(**base))] == ["twin", "controller_node"]
    graph = _by_name(franka_graph(LaunchArgs(**base, foxglove=True, rviz=True, record=True)))
    assert graph["teleop"].parameters["record"] is True
    assert graph["foxglove_node"].required is False and graph["foxglove_node"].condition == "foxglove"
    assert graph["rviz2"].module is None and graph["rviz2"].arguments[0] == "-d"
    assert graph["rviz2"].arguments[1].endswith("dm1_bringup/rviz/dm1.rviz")
    assert graph["teleop"].condition == "record"
    # the shipped teleop.yaml's keyboard reads the launch's terminal; a joystick does not
    assert graph["teleop"].parameters["device"] == "keyboard" and graph["teleop"].terminal
    assert not any(spec.terminal for name, spec in graph.items() if name != "teleop")


def test_only_a_keyboard_teleop_node_reads_the_terminal(tmp_path: Path) -> None:
    (tmp_path / "teleop.yaml").write_text("teleop:\n  ros__parameters:\n    device: joy\n")
    args = LaunchArgs(use_sim=True, no_policy=True, record=True, config_dir=str(tmp_path))
    assert not _by_name(franka_graph(args))["teleop"].terminal


def test_the_teleop_device_and_directory_come_from_teleop_yaml_unless_launch_arguments_name_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    base = {"use_sim": True, "no_policy": True, "record": True}
    shipped = _by_name(franka_graph(LaunchArgs(**base)))["teleop"]
    assert shipped.parameters["device"] == "keyboard" and shipped.terminal
    assert shipped.parameters["out_dir"] == str(tmp_path / "data/teleop")  # teleop.yaml's out_dir
    chosen = LaunchArgs(**base, teleop_device="scripted", record_dir="demos")
    teleop = _by_name(franka_graph(chosen))["teleop"]
    assert teleop.parameters["device"] == "scripted" and not teleop.terminal
    assert teleop.parameters["out_dir"] == str(tmp_path / "demos")
    assert "device:=scripted" in teleop.ros_args() and f"out_dir:={tmp_path / 'demos'}" in teleop.ros_args()


def test_dm1_launch_and_the_launch_file_pass_the_teleop_device_and_directory_alike(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dm1.cli import build_parser

    argv = ["launch", "franka", "--use-sim", "--sim-host", "127.0.0.1", "--no-policy", "--record"]
    argv += ["--teleop-device", "joy", "--record-dir", str(tmp_path / "demos"), "--dry-run"]
    args = build_parser().parse_args(argv)
    assert args.func(args) == 0
    teleop = next(line for line in capsys.readouterr().out.splitlines() if "dm1_ros.teleop_node" in line)
    assert "device:=joy" in teleop and f"out_dir:={tmp_path / 'demos'}" in teleop
    values = {"use_sim": "true", "sim_host": "127.0.0.1", "no_policy": "true", "record": "true"}
    values |= {"teleop_device": "joy", "record_dir": str(tmp_path / "demos")}
    from_launch = _by_name(_launch_module().node_specs(**values))["teleop"].parameters
    assert from_launch["device"] == "joy" and from_launch["out_dir"] == str(tmp_path / "demos")
    defaults = {name: default for name, default, _ in _launch_module().ARGUMENTS}
    assert defaults["teleop_device"] == defaults["record_dir"] == ""  # teleop.yaml's values
    no_flags = build_parser().parse_args(["launch", "franka"])
    assert no_flags.teleop_device == no_flags.record_dir == ""


def test_the_policy_listens_where_the_graphs_cameras_publish_whatever_topic_the_card_recorded(
    model_dir: Path, tmp_path: Path
) -> None:
    """A card from another rig (topics `/rig/<name>/image`) would leave the policy waiting for frames that
    the twin or realsense_node publish on `/camera/<name>/color/image_raw`."""
    card_path = model_dir / "model_card.json"
    card = yaml.safe_load(card_path.read_text())  # JSON is YAML
    for cam in card["inputs"]["cameras"]:
        cam["topic"] = f"/rig/{cam['name']}/image"
    card_path.write_text(json.dumps(card))
    expected = ["front=/camera/front/color/image_raw", "wrist=/camera/wrist/color/image_raw"]
    for args in (
        LaunchArgs(use_sim=True, model=str(model_dir)),
        LaunchArgs(robot_ip="172.16.0.2", model=str(model_dir)),
    ):
        assert _by_name(franka_graph(args))["policy_node"].parameters["camera_topics"] == expected

    (tmp_path / "cfg").mkdir()  # camera_topics the user sets in a policy.yaml of their own win
    (tmp_path / "cfg/policy.yaml").write_text(
        "policy_node:\n  ros__parameters:\n    camera_topics: ['front=/mine/front', 'wrist=/mine/wrist']\n"
    )
    args = LaunchArgs(use_sim=True, model=str(model_dir), config_dir=str(tmp_path / "cfg"))
    assert _by_name(franka_graph(args))["policy_node"].parameters["camera_topics"] == [
        "front=/mine/front", "wrist=/mine/wrist"
    ]  # fmt: skip


def test_file_defaults_are_overridden_by_launch_arguments(tmp_path: Path) -> None:
    (tmp_path / "controller.yaml").write_text(
        "controller_node:\n  ros__parameters:\n    robot_ip: '10.0.0.1'\n    control_rate_hz: 250.0\n"
    )
    graph = _by_name(
        franka_graph(LaunchArgs(robot_ip="172.16.0.2", no_policy=True, config_dir=str(tmp_path)))
    )
    params = graph["controller_node"].parameters
    assert params["control_rate_hz"] == 250.0  # from the file
    assert params["robot_ip"] == "172.16.0.2"  # launch argument wins


def test_integers_in_a_parameter_file_reach_double_parameters_as_doubles(
    model_dir: Path, tmp_path: Path
) -> None:
    """rclpy refuses `max_obs_age_s: 1` for a double parameter, and under a launch only after the twin and
    the controller started: the graph writes it as 1.0 (and [0, -1, 0] as doubles); other types stay."""
    from dm1.launch_graph import format_param

    (tmp_path / "policy.yaml").write_text(
        "policy_node:\n  ros__parameters:\n    max_obs_age_s: 1\n    seed: 3\n    mode: replan_every_tick\n"
    )
    (tmp_path / "controller.yaml").write_text(
        "controller_node:\n  ros__parameters:\n    control_rate_hz: 250\n"
        "    safety:\n      workspace_min: [0, -1, 0]\n      max_ee_speed: 'fast'\n"
    )
    nodes = _by_name(franka_graph(LaunchArgs(use_sim=True, model=str(model_dir), config_dir=str(tmp_path))))
    policy, controller = nodes["policy_node"].parameters, nodes["controller_node"].parameters
    assert policy["max_obs_age_s"] == 1.0 and isinstance(policy["max_obs_age_s"], float)
    assert policy["seed"] == 3 and isinstance(policy["seed"], int)  # an integer parameter stays one
    assert controller["control_rate_hz"] == 250.0 and isinstance(controller["control_rate_hz"], float)
    assert controller["safety.workspace_min"] == [0.0, -1.0, 0.0]
    assert format_param(controller["safety.workspace_min"]) == "[0.0, -1.0, 0.0]"
    assert controller["safety.max_ee_speed"] == "fast"  # a wrong type is left for the node to refuse by name


def test_a_model_whose_onnx_is_not_the_cards_is_refused_before_anything_starts(model_dir: Path) -> None:
    """Before, the policy node found it only after the twin and the controller had started (exit 1 then)."""
    with open(model_dir / "model.onnx", "ab") as f:
        f.write(b"\0")
    for args in ({"use_sim": True}, {"robot_ip": "172.16.0.2"}):
        with pytest.raises(ValueError, match=r"LaunchArgs.model: .*model.onnx: SHA-256 mismatch"):
            LaunchArgs(model=str(model_dir), **args)


def test_shipped_parameter_files_cover_every_node() -> None:
    params = load_param_files(CONFIG_DIR)
    nodes = {"twin", "controller_node", "policy_node", "realsense_node", "teleop", "foxglove_node"}
    assert nodes <= set(params)
    assert params["controller_node"]["relative_dynamics_factor"] <= 0.3  # safe default


def test_nested_parameters_in_a_file_reach_the_node_as_dotted_names(tmp_path: Path) -> None:
    (tmp_path / "controller.yaml").write_text(
        "controller_node:\n  ros__parameters:\n    safety:\n      max_ee_speed: 0.1\n"
        "      workspace_min: [0.3, -0.4, 0.02]\n    safety.wall_decel: 1.0\n"
    )
    graph = franka_graph(LaunchArgs(robot_ip="172.16.0.2", no_policy=True, config_dir=str(tmp_path)))
    args = next(s for s in graph if s.name == "controller_node").ros_args()
    assert "safety.max_ee_speed:=0.1" in args and "safety.workspace_min:=[0.3, -0.4, 0.02]" in args
    assert "safety.wall_decel:=1.0" in args and not any(a.startswith("safety:=") for a in args)


def test_malformed_parameter_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("policy_node:\n  params:\n    x: 1\n")
    with pytest.raises(
        ValueError, match=r"bad.yaml: node 'policy_node' expected a 'ros__parameters' mapping"
    ):
        load_param_files(tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"no_policy": True}, r"LaunchArgs.robot_ip: required"),
        ({"no_policy": True, "robot_ip": "172.16.0.256"}, r"IPv4 address .* found .172.16.0.256."),
        ({"no_policy": True, "robot_ip": "999.1.1.1"}, r"robot_ip: expected an IPv4 address"),
        ({"no_policy": True, "robot_ip": "http://172.16.0.2"}, r"robot_ip: expected an IP address or a host"),
        ({"no_policy": True, "robot_ip": "fr3 lab"}, r"robot_ip: expected an IP address or a hostname"),
        ({"use_sim": True, "sim_host": "10.0.0.5", "no_policy": True}, r"sim_host: expected a loopback"),
        ({"use_sim": True, "cameras": "front,Wrist!", "no_policy": True}, r"cameras: expected names"),
        ({"use_sim": True, "cameras": "", "no_policy": True}, r"cameras: expected at least one"),
        ({"use_sim": True}, r"LaunchArgs.model: expected an exported model directory"),
        ({"use_sim": True, "model": "/nonexistent"}, r"lacks model.onnx, model_card.json"),
        ({"use_sim": True, "no_policy": True, "foxglove_port": 70000}, r"foxglove_port: expected 0..65535"),
        ({"use_sim": True, "record": True, "model": "/m"}, r"record: the teleop recorder commands the robot"),
        (
            {"use_sim": True, "no_policy": True, "record": True, "teleop_device": "mouse"},
            r"teleop_device: expected one of \['gamepad', 'joy', 'keyboard', 'scripted', 'spacemouse'\] "
            r"\(or '' for teleop.yaml's device\), found 'mouse'",
        ),
        (
            {"use_sim": True, "no_policy": True, "teleop_device": "joy"},
            r"teleop_device: only used by the teleop recorder, expected record with it",
        ),
    ],
)
def test_bad_launch_arguments_are_refused_with_the_field_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LaunchArgs(**kwargs)


def test_ros_args_quote_values_the_way_ros_parses_them() -> None:
    spec = NodeSpec(
        "p",
        "e",
        "m.n",
        "node",
        {"s": "true", "b": True, "e": [], "l": ["a", "b"], "ip": "127.0.0.1"},
        remappings=[("/a", "/b")],
    )
    args = spec.ros_args()
    assert args[:3] == ["--ros-args", "-r", "__node:=node"]
    assert "s:='true'" in args and "b:=true" in args and "l:=[a, b]" in args and "ip:=127.0.0.1" in args
    assert not any(a.startswith("e:=") for a in args)  # empty arrays are left to the node default
    assert args[-2:] == ["-r", "/a:=/b"]


def test_launch_file_declares_every_launch_argument() -> None:
    module = _launch_module()
    declared = [name for name, _, _ in module.ARGUMENTS]
    assert sorted(declared) == sorted(LaunchArgs.field_names())
    assert all(description for _, _, description in module.ARGUMENTS)


def test_launch_file_builds_the_same_graph_as_franka_graph(model_dir: Path) -> None:
    module = _launch_module()
    from_launch = module.node_specs(
        use_sim="true", sim_host="127.0.0.1", model=str(model_dir), rviz="true", cameras="wrist,front"
    )
    args = LaunchArgs(use_sim=True, model=str(model_dir), rviz=True, cameras=("wrist", "front"))
    direct = franka_graph(args)
    assert from_launch == direct
    with pytest.raises(ValueError, match=r"launch argument use_sim: expected true/false, found 'maybe'"):
        module.node_specs(use_sim="maybe")


def test_the_launch_file_serves_the_twin_on_a_free_loopback_address_by_default(
    ros_env: dict[str, str], model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """127.0.0.1 serves another franky-sim (a launch in another ROS domain): `ros2 launch` moves on, as
    `dm1 launch` does, instead of a twin that dies on taken ports."""
    from test_sim_hosts import listening

    with listening("127.0.0.1", 1337):
        specs = _by_name(_launch_module().preflight({"use_sim": "true", "model": str(model_dir)}, ros_env))
    host = specs["twin"].parameters["host"]
    assert host != "127.0.0.1" and specs["controller_node"].parameters["robot_ip"] == host
    assert f"the twin uses {host}" in capsys.readouterr().out


def test_the_launch_file_refuses_a_domain_that_already_runs_its_nodes(
    ros_env: dict[str, str], model_dir: Path
) -> None:
    """A second `ros2 launch` into a domain where a controller runs (another launch, one started by hand)
    starts nothing: its policy would command the other graph's arm."""
    from conftest import wait_for
    from test_launch_runner import DUMMY_NODE, _graph_state

    cmd = [sys.executable, "-c", DUMMY_NODE, "--ros-args", "-r", "__node:=controller_node"]
    other = subprocess.Popen(cmd, env=ros_env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        ctx, observer = _graph_state(ros_env)
        try:  # the other controller is up (on a loaded host its start takes seconds) before the launch looks
            wait_for(lambda: "controller_node" in observer.get_node_names(), 60, 0.2, "the other controller")
        finally:
            observer.destroy_node()
            ctx.try_shutdown()
        with pytest.raises(RuntimeError) as refused:
            _launch_module().preflight({"use_sim": "true", "model": str(model_dir)}, ros_env)
    finally:
        other.send_signal(signal.SIGINT)
        other.wait(timeout=10)
    domain = ros_env["ROS_DOMAIN_ID"]
    assert str(refused.value).startswith(f"ROS_DOMAIN_ID {domain} already runs /controller_node ("), refused


def test_launch_file_generates_a_launch_description_where_launch_ros_exists(model_dir: Path) -> None:
    if importlib.util.find_spec("launch_ros") is None:
        pytest.skip("launch_ros not installed (no ROS 2 host); the pure part is tested above")
    description = _launch_module().generate_launch_description()
    assert len(description.entities) == len(_launch_module().ARGUMENTS) + 1


def test_parameter_yaml_files_are_valid_ros_parameter_files() -> None:
    for path in CONFIG_DIR.glob("*.yaml"):
        data = yaml.safe_load(path.read_text())
        for node, body in data.items():
            assert set(body) == {"ros__parameters"}, f"{path.name}: {node}"


def test_every_entry_point_runs_the_policy_with_the_same_ensembling_default(model_dir: Path) -> None:
    """Launch file, pip-only runner, policy node, in-process evaluation and every CLI share one default."""
    from dm1.cli import build_parser
    from dm1.evaluation.inprocess import InProcessConfig
    from dm1.policy import NODE_PARAMETERS, PolicyConfig, config_from_parameters
    from dm1.policy_defaults import DEFAULT_ENSEMBLE_ALPHA

    launch = _launch_module()
    declared = {name: default for name, default, _ in launch.ARGUMENTS}
    assert float(declared["ensemble_alpha"]) == DEFAULT_ENSEMBLE_ALPHA
    sim = {"use_sim": True, "model": str(model_dir)}
    from_launch = launch.launch_args_from({k: str(v) for k, v in sim.items()}).ensemble_alpha
    assert from_launch == LaunchArgs(**sim).ensemble_alpha == DEFAULT_ENSEMBLE_ALPHA
    assert NODE_PARAMETERS["ensemble_alpha"][0] == PolicyConfig().ensemble_alpha == DEFAULT_ENSEMBLE_ALPHA
    values = {name: default for name, (default, _, _) in NODE_PARAMETERS.items() if name != "ensemble_alpha"}
    values["model_dir"] = str(model_dir)
    assert config_from_parameters(values).ensemble_alpha == DEFAULT_ENSEMBLE_ALPHA
    assert InProcessConfig().ensemble_alpha == DEFAULT_ENSEMBLE_ALPHA
    parser = build_parser()
    for argv in (["eval"], ["launch", "franka"], ["bench", "loop"], ["ablate", "--runs", "r"], ["demo"]):
        args = parser.parse_args(argv)
        assert args.ensemble_alpha == DEFAULT_ENSEMBLE_ALPHA, argv
    # the graph hands it to the policy node (which would otherwise fall back to its own default)
    graph = _by_name(franka_graph(LaunchArgs(use_sim=True, model=str(model_dir))))
    assert graph["policy_node"].parameters["ensemble_alpha"] == DEFAULT_ENSEMBLE_ALPHA


@pytest.mark.parametrize("address", ["172.16.0.2", "fr3-lab", "panda.lab.example.org", "fe80::1"])
def test_the_robot_may_be_named_by_address_or_hostname(address: str) -> None:
    assert LaunchArgs(robot_ip=address, no_policy=True).robot_ip == address
