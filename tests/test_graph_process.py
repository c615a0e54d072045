"""`dm1.commands.graph_process`: waiting for a launched graph fails fast and names the log."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dm1.commands.graph_process import GRAPH_UP, GraphExitedError, launch_command, wait_graph_ready


class Probe:
    """Stands in for an rclpy driver: fails `fails` times with `error`, then reports ready."""

    def __init__(self, fails: int, error: type[BaseException] = TimeoutError) -> None:
        self.fails, self.error, self.calls = fails, error, 0

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        self.calls += 1
        if self.calls <= self.fails:
            raise self.error("not yet")


def _sleeper(seconds: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"])


def _up_log(tmp_path: Path) -> Path:
    """A launch log whose launcher said every node is ready."""
    log = tmp_path / "launch.log"
    log.write_text(f"[launch] starting twin\n{GRAPH_UP}: twin, controller_node (Ctrl-C to stop)\n")
    return log


def test_graph_ready_after_retries_returns(tmp_path: Path) -> None:
    graph = _sleeper(30)
    try:
        probe = Probe(fails=2)
        wait_graph_ready(graph, probe, _up_log(tmp_path), deadline_s=60.0)
        assert probe.calls == 3
    finally:
        graph.kill()
        graph.wait()


def test_graph_that_exits_raises_naming_the_log(tmp_path: Path) -> None:
    graph = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    graph.wait(timeout=30)
    with pytest.raises(RuntimeError, match=r"(?s)exited before it was up \(code 3\).*launch\.log"):
        wait_graph_ready(graph, Probe(fails=0), tmp_path / "launch.log")


def test_graph_that_exits_reports_the_logs_error_lines(tmp_path: Path) -> None:
    log = tmp_path / "launch.log"
    log.write_text(
        "[launch] starting twin\n[policy_node] [ERROR] [1.0] [policy_node]: configure failed: bad.onnx\n"
        "[policy_node] loaded nothing\n[launch] ERROR: required node policy_node exited with code 1\n"
    )
    graph = subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"])
    graph.wait(timeout=30)
    with pytest.raises(GraphExitedError) as info:
        wait_graph_ready(graph, Probe(fails=0), log)
    assert str(info.value).splitlines() == [
        "the launched graph exited before it was up (code 1)",
        "  [policy_node] [ERROR] [1.0] [policy_node]: configure failed: bad.onnx",
        "  [launch] ERROR: required node policy_node exited with code 1",
        f"full log: {log}",
    ]


def test_cli_reports_a_missing_model_in_one_line_and_writes_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "no_model"
    for args in (
        ["eval", "--model", str(missing), "--episodes", "1", "--out", str(tmp_path / "report")],
        ["bench", "inference", "--model", str(missing), "--json"],
    ):
        out = subprocess.run(
            [sys.executable, "-m", "dm1.cli", *args], capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 2, out.stderr
        assert out.stderr.startswith(f"dm1 {args[0]}: error: {missing}") and "Traceback" not in out.stderr
    assert not (tmp_path / "report").exists()  # checked before the graph starts


def test_probe_error_outside_retry_on_propagates_at_once(tmp_path: Path) -> None:
    graph = _sleeper(30)
    try:
        probe = Probe(fails=5, error=RuntimeError)
        with pytest.raises(RuntimeError, match="not yet"):
            wait_graph_ready(graph, probe, _up_log(tmp_path), retry_on=(TimeoutError,))
        assert probe.calls == 1
    finally:
        graph.kill()
        graph.wait()


def test_deadline_reraises_the_probe_error(tmp_path: Path) -> None:
    graph = _sleeper(30)
    try:
        probe = Probe(fails=1000)
        with pytest.raises(TimeoutError, match="not yet"):
            wait_graph_ready(graph, probe, _up_log(tmp_path), deadline_s=0.0)
        assert probe.calls == 1
    finally:
        graph.kill()
        graph.wait()


def test_the_driver_talks_to_the_graph_only_after_its_launcher_says_graph_up(tmp_path: Path) -> None:
    """Another graph in the ROS domain would answer the driver's probe at once (its /clock, its policy): the
    driver must wait for its own launcher's "graph up" (which the launcher never says in a shared domain)."""
    import threading

    log = tmp_path / "launch.log"
    log.write_text("[launch] starting twin\n")
    seen: list[bool] = []

    class OtherGraphAnswers(Probe):
        def wait_ready(self, timeout_s: float = 10.0) -> None:
            seen.append(GRAPH_UP in log.read_text())  # whether our launcher had said so when we were asked
            super().wait_ready(timeout_s)

    graph = _sleeper(30)
    timer = threading.Timer(0.5, lambda: log.write_text(log.read_text() + f"{GRAPH_UP}: twin\n"))
    timer.start()
    try:
        wait_graph_ready(graph, OtherGraphAnswers(fails=0), log, deadline_s=30.0)
        assert seen == [True]
        with pytest.raises(TimeoutError, match="the launched graph was not up after 0 s"):
            log.write_text("[launch] starting twin\n")
            wait_graph_ready(graph, OtherGraphAnswers(fails=0), log, deadline_s=0.0)
        assert seen == [True]
    finally:
        timer.cancel()
        graph.kill()
        graph.wait()


def test_launch_command_runs_this_interpreter() -> None:
    cmd = launch_command("--use-sim", "--dry-run")
    assert cmd[0] == sys.executable and cmd[1:5] == ["-m", "dm1.cli", "launch", "franka"]
    assert cmd[5:] == ["--use-sim", "--dry-run"]


_CHILD = """
import signal, sys, time
marker = sys.argv[1]
def stop(*_):
    open(marker, "w").write("SIGTERM")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
time.sleep(60)
"""

_PARENT = """
import sys, time
from dm1.commands.graph_process import spawn_graph
with open(sys.argv[2], "wb") as log:
    child = spawn_graph([sys.executable, "-c", sys.argv[1], sys.argv[3]], log)
print(child.pid, flush=True)
time.sleep(60)
"""


def test_a_graph_launcher_gets_sigterm_when_its_driver_is_killed(tmp_path: Path) -> None:
    """`dm1 eval` killed with SIGKILL left the launcher and every node running (and the ROS domain taken):
    the launcher now gets SIGTERM from the kernel, which stops its graph in order."""
    log, marker = tmp_path / "launch.log", tmp_path / "terminated"
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, _CHILD, str(log), str(marker)], stdout=subprocess.PIPE, text=True
    )
    child_pid = None
    try:
        child_pid = int(parent.stdout.readline())
        deadline = time.monotonic() + 30
        while "ready" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "ready" in log.read_text(), "the child never started"
        parent.kill()
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        # the child's open() creates the file before its write lands: wait for the text, not the file
        while (marker.read_text() if marker.exists() else "") != "SIGTERM" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.read_text() == "SIGTERM"
    finally:
        parent.kill()
        if child_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child_pid, signal.SIGKILL)
