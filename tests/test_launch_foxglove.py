"""`dm1 launch --foxglove`: a busy port or an existing recording is refused before any node starts, the
bridge node fails in one line without leaving a stub recording, and an optional node that dies while it
starts is reported once and left out of "graph up"."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, free_loopback_host
from dm1.commands.graph_process import launch_command
from dm1.commands.launch import GraphRunner
from dm1.launch_args import LaunchArgs
from dm1.launch_graph import NodeSpec
from test_launch_runner import _dummy


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that something already listens on (another Foxglove bridge, say)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_foxglove_mcap_without_foxglove_is_refused(tmp_path: Path) -> None:
    """It used to be dropped silently: no bridge runs, so nothing would have been recorded."""
    with pytest.raises(ValueError, match=r"LaunchArgs.foxglove_mcap: .*expected foxglove with it"):
        LaunchArgs(use_sim=True, no_policy=True, foxglove_mcap=str(tmp_path / "x.mcap"))


@pytest.mark.parametrize(
    ("name", "message"),
    [("x.mcap", r"foxglove_mcap: .*x.mcap already exists"), ("x.bag", r"foxglove_mcap: expected a .mcap")],
)
def test_an_unusable_foxglove_recording_path_is_refused_before_the_launch(
    tmp_path: Path, name: str, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(b"an earlier recording")
    with pytest.raises(ValueError, match=message):
        LaunchArgs(use_sim=True, no_policy=True, foxglove=True, foxglove_mcap=str(path))


def test_a_busy_foxglove_port_is_refused_before_any_node_starts(
    ros_env: dict[str, str], busy_port: int, tmp_path: Path
) -> None:
    """The bridge starts last: the twin, controller and policy ran first, then the bridge died with a
    traceback. Now the launch stops at once with one line naming the flag."""
    mcap = tmp_path / "x.mcap"
    cmd = launch_command(
        *("--use-sim", "--no-policy", "--sim-host", free_loopback_host(), "--foxglove"),
        *("--foxglove-port", str(busy_port), "--foxglove-mcap", str(mcap)),
    )
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ros_env, cwd=REPO
    )
    lines: list[str] = []
    try:
        for line in proc.stdout:  # ends when the launcher exits (bounded by its error) or is killed below
            lines.append(line)
            if "[launch] starting" in line:
                break
    finally:
        if proc.poll() is None and any("[launch] starting" in ln for ln in lines):
            proc.send_signal(2)
        proc.wait(timeout=60)
    text = "".join(lines)
    assert proc.returncode == 2, text
    assert "starting" not in text and "Traceback" not in text, text
    assert f"--foxglove-port {busy_port}" in text and "already in use" in text, text
    assert len(text.strip().splitlines()) == 1, text
    assert not mcap.exists()


def test_the_foxglove_node_reports_a_busy_port_in_one_line_and_leaves_no_recording(
    ros_env: dict[str, str], busy_port: int, tmp_path: Path
) -> None:
    """The port was taken between the launcher's check and the bridge (or `ros2 run`): no traceback, and no
    199-byte stub recording that would make the rerun refuse its path ("already exists")."""
    mcap = tmp_path / "x.mcap"
    cmd = [sys.executable, "-m", "dm1_ros.foxglove_node", "--ros-args"]
    cmd += ["-p", f"port:={busy_port}", "-p", f"mcap_path:={mcap}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=ros_env)
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert "Traceback" not in text, text
    errors = [ln for ln in text.splitlines() if "ERROR" in ln]
    assert len(errors) == 1 and f"127.0.0.1:{busy_port}" in errors[0] and "in use" in errors[0], text
    assert not mcap.exists()


def test_an_optional_node_that_dies_while_starting_is_reported_once_and_left_out_of_graph_up(
    ros_env: dict[str, str], tmp_path: Path
) -> None:
    die = tmp_path / "die_main"
    dying = NodeSpec(
        "test", sys.executable, None, "monitor", required=False, arguments=["-c", "import sys; sys.exit(1)"]
    )
    out = io.StringIO()
    runner = GraphRunner([_dummy("main_node", die_file=str(die)), dying], env=ros_env, out=out)

    def stop_once_up() -> None:
        deadline = time.monotonic() + 120
        while "graph up" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # the supervisor looks at every node at least once
        die.touch()

    threading.Thread(target=stop_once_up, daemon=True).start()
    runner.run()
    die.touch()  # no dummy outlives the test
    log = out.getvalue()
    assert log.count("monitor exited with code 1") == 1, log
    assert "[launch] graph up: main_node (Ctrl-C to stop)" in log, log
