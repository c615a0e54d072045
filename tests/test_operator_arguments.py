"""`dm1 operator` refuses a bad argument in argparse, at once, in one line (exit code 2), before it waits for
any graph: a node name ROS cannot use, a drill spec the policy node would refuse, an option of another
action. Nothing is silently ignored: `status --json` prints the status values as JSON."""

from __future__ import annotations

import json

import pytest
from dm1.cli import main


@pytest.fixture(autouse=True)
def no_graph_contact(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refusal must come from the arguments alone: reaching the graph fails the test."""
    import dm1_ros.operator_actions as operator_actions

    def reached(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("refused only after trying to reach the graph")

    monkeypatch.setattr(operator_actions, "main_action", reached)
    monkeypatch.setattr(operator_actions, "main_drill", reached)


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run `dm1 <argv>`, expect argparse's exit code 2 without any graph contact; return stderr."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2, err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("name", ["bad name!", "", "1policy", "policy-node", "a//b", "/"])
def test_a_policy_node_name_ros_cannot_use_is_refused_in_one_line(name: str, capsys) -> None:
    err = _refused(["operator", "status", "--policy-node", name, "--timeout", "1"], capsys)
    assert "argument --policy-node: expected a ROS node name" in err and repr(name) in err, err


@pytest.mark.parametrize("name", ["policy_node", "/policy_node", "robot1/policy_node", "_p2"])
def test_valid_policy_node_names_with_or_without_namespace_are_accepted(name: str) -> None:
    from dm1.cli import build_parser

    assert build_parser().parse_args(
        ["operator", "activate", "--policy-node", name]
    ).policy_node == name.lstrip("/")


@pytest.mark.parametrize("name", ["/policy_node", "/robot1/policy_node", "robot1/policy_node"])
def test_an_accepted_node_name_makes_valid_service_names(name: str) -> None:
    """The drill and lifecycle clients build `/<name>/<service>`: a leading `/` must not double."""
    from dm1.cli import build_parser
    from rclpy.validate_full_topic_name import validate_full_topic_name

    parsed = build_parser().parse_args(["operator", "drill", "--drill", "nan_output", "--policy-node", name])
    validate_full_topic_name(f"/{parsed.policy_node}/set_parameters_atomically", is_service=True)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("bogus", "drill: expected one of ['freeze_camera'"),
        ("nan_output:3", "drill nan_output: takes no argument"),
        ("stall_inference:0.01", "drill stall_inference: expected a stall of 0.2..10 s"),
        ("freeze_camera:", "drill freeze_camera: expected a camera name"),
        ("freeze_camera:bad cam", "drill freeze_camera: expected a camera name"),
    ],
)
def test_a_bad_drill_spec_is_refused_at_once_by_the_policy_nodes_own_parser(spec: str, message, capsys):
    """Before: the spec went to the live node only, after ~11 s of waiting for its lifecycle services."""
    err = _refused(["operator", "drill", "--drill", spec, "--timeout", "1"], capsys)
    assert "argument --drill: " in err and message in err, err


@pytest.mark.parametrize(
    "spec",
    ["nan_output", "silence", "late_chunks", "stall_inference", "stall_inference:1", "freeze_camera:front"],
)
def test_good_drill_specs_and_all_pass_the_local_check(spec: str) -> None:
    from dm1.cli import build_parser

    assert build_parser().parse_args(["operator", "drill", "--drill", spec]).drill == spec
    assert build_parser().parse_args(["operator", "drill", "--drill", "all"]).drill == "all"


def test_a_drill_duration_the_policy_node_would_refuse_is_refused_here(capsys) -> None:
    err = _refused(["operator", "drill", "--drill", "nan_output", "--duration", "100"], capsys)
    assert "argument --duration: expected a number of seconds in [0.05, 30], found 100" in err, err


def test_drill_without_a_spec_is_refused_in_argparse(capsys) -> None:
    err = _refused(["operator", "drill", "--timeout", "1"], capsys)
    assert "--drill" in err and "required" in err, err


@pytest.mark.parametrize(
    "argv",
    [
        ["operator", "status", "--drill", "nan_output"],
        ["operator", "activate", "--json"],
        ["operator", "home", "--duration", "2"],
        ["operator", "recover", "--max-hold", "1"],
        ["operator", "deactivate", "--still-speed", "0.1"],
    ],
)
def test_an_option_of_another_action_is_an_error_not_silently_ignored(argv: list[str], capsys) -> None:
    err = _refused(argv, capsys)
    assert "unrecognized arguments" in err, err


def test_status_json_prints_the_status_values_as_one_json_object(monkeypatch, capsys) -> None:
    import dm1_ros.operator_actions as actions

    values = {"controller": {"state": "holding"}, "policy_node": "policy_node", "policy": "inactive"}

    def fake(action: str, timeout_s: float, policy_node: str = "policy_node") -> actions.ActionResult:
        assert (action, policy_node) == ("status", "policy_node")
        return actions.ActionResult(True, "controller: holding; policy_node: inactive", values)

    monkeypatch.setattr(actions, "main_action", fake)
    assert main(["operator", "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"ok": True, **values}
