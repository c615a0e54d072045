"""The SROS2 access-control policy (`docker/sros2/policy.xml`) against the node graph it secures.

sros2 is not on PyPI, so the signed permissions are not generated here (the Jazzy image does that); these
checks keep the policy file true to the graph: every node `dm1 launch` starts runs in an enclave the policy
names, with a profile for its node name; only the policy and teleop enclaves may publish action chunks; only
the operator enclave may call the controller's services and the policy's lifecycle; monitors only watch
(reliability rows 18-19).
"""

from __future__ import annotations

import fnmatch
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import REPO
from dm1.control.executor_status import STATUS_TOPIC
from dm1.launch_args import LaunchArgs
from dm1.launch_graph import ENCLAVES, NodeSpec, franka_graph
from dm1_ros.chunk_qos import CARTESIAN_TOPIC, JOINT_TOPIC
from policy_toy_model import build_toy_model

POLICY = REPO / "docker/sros2/policy.xml"
XI = "{http://www.w3.org/2001/XInclude}include"
CHUNKS = [CARTESIAN_TOPIC.lstrip("/"), JOINT_TOPIC.lstrip("/")]
CONTROLLER_SERVICES = ["dm1/controller/recover", "dm1/controller/home"]


def _expand(element: ET.Element, base: Path) -> list[ET.Element]:
    """The children of `element`, each `xi:include` of a profile file replaced by that file's children."""
    out = []
    for child in element:
        if child.tag == XI:
            included = base / child.attrib["href"]
            out += _expand(ET.parse(included).getroot(), included.parent)
        else:
            out.append(child)
    return out


def _permissions(profile: ET.Element) -> dict[tuple[str, str], list[str]]:
    """{("topics", "publish"): [names], ("services", "request"): [...], ...}: the ALLOW rules of a profile."""
    rules: dict[tuple[str, str], list[str]] = {}
    for group in _expand(profile, POLICY.parent):
        for verb, value in group.attrib.items():
            if value == "ALLOW":
                rules.setdefault((group.tag, verb), []).extend(e.text or "" for e in group)
    return rules


def _enclaves() -> dict[str, dict[str, dict[tuple[str, str], list[str]]]]:
    """{enclave path: {node name: rules}}."""
    root = ET.parse(POLICY).getroot()
    assert root.tag == "policy" and root.attrib["version"] == "0.2.0"
    out: dict[str, dict[str, dict[tuple[str, str], list[str]]]] = {}
    for enclave in root.find("enclaves"):
        path = enclave.attrib["path"]
        assert path not in out, f"enclave {path} declared twice"
        out[path] = {p.attrib["node"]: _permissions(p) for p in enclave.find("profiles")}
    return out


def _allows(rules: dict[tuple[str, str], list[str]], kind: str, verb: str, name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in rules.get((kind, verb), []))


def _who(kind: str, verb: str, name: str) -> set[str]:
    """Enclaves with a profile that may `verb` the `kind` `name`."""
    return {
        path
        for path, nodes in _enclaves().items()
        if any(_allows(r, kind, verb, name) for r in nodes.values())
    }


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> list[list[NodeSpec]]:
    model = build_toy_model(
        tmp_path_factory.mktemp("toy"), cameras={"front": (96, 96, 3), "wrist": (96, 96, 3)}
    )
    monitors = {"foxglove": True, "rviz": True}
    return [
        franka_graph(LaunchArgs(robot_ip="172.16.0.2", model=str(model), **monitors)),
        franka_graph(LaunchArgs(robot_ip="172.16.0.2", no_policy=True, record=True, **monitors)),
        franka_graph(LaunchArgs(use_sim=True, model=str(model), **monitors)),
    ]


def test_every_node_of_the_graph_starts_in_an_enclave_the_policy_names_for_its_node(
    graphs: list[list[NodeSpec]],
) -> None:
    enclaves = _enclaves()
    for spec in (s for graph in graphs for s in graph):
        assert spec.enclave == ENCLAVES[spec.name]
        assert spec.ros_args()[3:5] == ["--enclave", spec.enclave], spec.ros_args()
        assert spec.name in enclaves[spec.enclave], f"{spec.enclave} has no profile for node {spec.name}"


def test_only_the_policy_and_teleop_may_publish_action_chunks_and_the_controller_reads_them() -> None:
    for topic in CHUNKS:
        assert _who("topics", "publish", topic) <= {"/dm1/policy", "/dm1/teleop"}, topic
        assert "/dm1/policy" in _who("topics", "publish", topic)
        assert "/dm1/controller" in _who("topics", "subscribe", topic)
    assert _who("topics", "publish", "joint_states") == {"/dm1/controller"}
    assert _who("topics", "publish", STATUS_TOPIC.lstrip("/")) == {"/dm1/controller"}


def test_only_the_operator_may_call_the_controller_the_policys_lifecycle_and_parameters() -> None:
    for service in [
        *CONTROLLER_SERVICES,
        "policy_node/change_state",
        "policy_node/set_parameters_atomically",
    ]:
        assert _who("services", "request", service) == {"/dm1/operator"}, service
    for service in CONTROLLER_SERVICES:
        assert _who("services", "reply", service) == {"/dm1/controller"}, service


def test_monitors_watch_everything_and_command_nothing() -> None:
    monitor = _enclaves()["/dm1/monitor"]
    assert set(monitor) == {"rviz2", "foxglove_node"}
    for rules in monitor.values():
        assert _allows(rules, "topics", "subscribe", CHUNKS[0])
        published = [*CHUNKS, "joint_states", "dm1/controller/status", "joy"]
        assert not any(_allows(rules, "topics", "publish", name) for name in published)
        assert set(rules.get(("topics", "publish"), [])) <= {"rosout", "parameter_events"}
        assert ("services", "request") not in rules
