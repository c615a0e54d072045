"""`dm1 launch`: the pure-Python launcher starts real ROS 2 processes in order, supervises and stops them.
Its arguments and `--dry-run`: test_launch_cli.py."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import free_loopback_host, wait_for
from dm1.commands.launch import GraphRunner
from dm1.launch_graph import NodeSpec
from policy_toy_model import build_toy_model, corrupt_copy

# A minimal real rclpy node: publishes std_msgs/String on `topic` (if set) and exits with code 3 once the
# file `die_file` exists (if set). It exits 0 on SIGINT.
DUMMY_NODE = """
import os, sys, rclpy
from rclpy.node import Node
from std_msgs.msg import String
rclpy.init(args=sys.argv)
node = Node("dummy")
topic = node.declare_parameter("topic", "").value
die_file = node.declare_parameter("die_file", "").value
pub = node.create_publisher(String, topic, 10) if topic else None
try:
    while rclpy.ok():
        rclpy.spin_once(node, timeout_sec=0.05)
        if pub is not None:
            pub.publish(String(data="hi"))
        if die_file and os.path.exists(die_file):
            sys.exit(3)
except KeyboardInterrupt:
    pass
"""


def _dummy(name: str, required: bool = True, **params: object) -> NodeSpec:
    ready = {"ready_topic": params["topic"], "ready_type": "std_msgs/msg/String"} if "topic" in params else {}
    return NodeSpec(
        "test",
        sys.executable,
        None,
        name,
        dict(params),
        required=required,
        arguments=["-c", DUMMY_NODE],
        ready_timeout_s=30.0,
        **ready,
    )


def _run_runner(
    specs: list[NodeSpec], env: dict[str, str], kill_after_up: list[Path] = ()
) -> tuple[int, str]:
    """Run the launcher in this (main) thread; once the graph is up, create the `kill_after_up` files."""
    out = io.StringIO()

    def trigger() -> None:
        deadline = time.monotonic() + 120
        while "graph up" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
        for path in kill_after_up:
            path.touch()

    helper = threading.Thread(target=trigger, daemon=True)
    helper.start()
    code = GraphRunner(specs, env=env, shutdown_timeout=5.0, out=out).run()
    for path in kill_after_up:
        path.touch()  # startup failed: make sure no dummy outlives the test
    return code, out.getvalue()


def test_required_node_death_stops_the_graph_with_nonzero_exit(
    ros_env: dict[str, str], tmp_path: Path
) -> None:
    die = tmp_path / "die_second"
    specs = [
        _dummy("first", topic="/launch_test/first"),
        _dummy("second", die_file=str(die)),  # ready by node name; dies once the graph is up
    ]
    code, log = _run_runner(specs, ros_env, kill_after_up=[die])
    assert code == 1, log
    assert "first ready (a message on /launch_test/first)" in log
    assert "second ready (its node in the ROS graph)" in log
    assert "ERROR: required node second exited with code 3; shutting down" in log
    assert log.index("starting first") < log.index("first ready") < log.index("starting second")
    assert "stopping first" in log and "Traceback" not in log


def test_a_launch_into_a_domain_that_already_runs_its_nodes_refuses_and_names_them(
    ros_env: dict[str, str], tmp_path: Path
) -> None:
    """A second graph in one ROS domain (a forgotten launch, a node run by hand): nothing of this one runs on
    (the other's messages would pass its readiness checks; two policies would command one arm)."""
    cmd = [
        sys.executable,
        "-c",
        DUMMY_NODE,
        "--ros-args",
        "-r",
        "__node:=second",
        "-p",
        "topic:=/launch_test/x",
    ]
    other = subprocess.Popen(cmd, env=ros_env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        die = tmp_path / "die"  # bounds the test should the graph come up regardless
        specs = [_dummy("first", topic="/launch_test/x", die_file=str(die)), _dummy("second")]
        code, log = _run_runner(specs, ros_env, kill_after_up=[die])
    finally:
        other.send_signal(signal.SIGINT)
        other.wait(timeout=10)
    domain = ros_env["ROS_DOMAIN_ID"]
    assert code == 2, log
    assert f"ERROR: ROS_DOMAIN_ID {domain} already runs /second (another `dm1 launch`" in log, log
    assert "first ready" not in log and "starting second" not in log and "graph up" not in log, log
    assert "starting first" not in log or "stopping first" in log, log  # seen before or after it started


def test_optional_node_death_keeps_the_graph_running(ros_env: dict[str, str], tmp_path: Path) -> None:
    helper_dies, main_dies = tmp_path / "helper", tmp_path / "main"
    specs = [
        _dummy("main_node", die_file=str(main_dies)),
        _dummy("helper", required=False, die_file=str(helper_dies)),
    ]
    out = io.StringIO()
    runner = GraphRunner(specs, env=ros_env, shutdown_timeout=5.0, out=out)

    def trigger() -> None:
        deadline = time.monotonic() + 120
        while "graph up" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
        helper_dies.touch()
        while "optional node helper exited" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
        main_dies.touch()  # the graph was still up after the optional node died

    threading.Thread(target=trigger, daemon=True).start()
    code = runner.run()
    for path in (helper_dies, main_dies):
        path.touch()  # no dummy outlives the test
    log = out.getvalue()
    assert "optional node helper exited with code 3" in log
    assert log.index("optional node helper exited") < log.index("required node main_node exited with code 3")
    assert code == 1


def test_a_stop_signal_is_only_recorded_so_the_launcher_cannot_deadlock_on_it() -> None:
    """Python runs a signal handler on the main thread between two bytecodes, also while that thread holds
    the launcher's output lock or an Event's condition. A handler taking the same lock hung `dm1 launch` on
    Ctrl-C with every node left running (seen once: four stacked handlers waiting in `Event.set`)."""
    out = io.StringIO()
    runner = GraphRunner([], env={}, out=out)
    returned = threading.Event()

    def signal_while_logging() -> None:
        with runner._lock:  # as if the signal arrived in the middle of `log`
            runner.request_stop(signal.SIGINT)
        returned.set()

    threading.Thread(target=signal_while_logging, daemon=True).start()
    assert returned.wait(10), "the signal handler blocked on a lock its own thread held"
    assert runner.stopping() and "[launch] received SIGINT: shutting down" in out.getvalue()
    runner.request_stop(signal.SIGTERM)  # a second signal changes nothing
    assert out.getvalue().count("received") == 1 and runner.stopping()


def test_missing_required_program_fails_before_starting_anything(ros_env: dict[str, str]) -> None:
    specs = [_dummy("first"), NodeSpec("pkg", "x", "dm1_no_such_module.node", "ghost")]
    code, log = _run_runner(specs, ros_env)
    assert code == 2
    assert "required node ghost: python module dm1_no_such_module.node not installed" in log
    assert "starting" not in log


def test_missing_optional_program_is_skipped(ros_env: dict[str, str], tmp_path: Path) -> None:
    die = tmp_path / "die_only"
    specs = [
        NodeSpec("rviz2", "dm1-no-such-rviz2", None, "rviz2", required=False),
        _dummy("only", die_file=str(die)),
    ]
    code, log = _run_runner(specs, ros_env, kill_after_up=[die])
    assert "skipping optional node rviz2: dm1-no-such-rviz2 not found on PATH" in log
    assert "starting only" in log and code == 1


def test_node_that_never_becomes_ready_aborts_startup(ros_env: dict[str, str]) -> None:
    spec = _dummy("silent")
    # any timeout shows it (the topic never gets a message): 1 s keeps the wait short
    spec.ready_topic, spec.ready_type, spec.ready_timeout_s = "/launch_test/never", "std_msgs/msg/String", 1.0
    code, log = _run_runner([spec, _dummy("after")], ros_env)
    assert code == 1
    assert "silent not ready after 1 s (waited for a message on /launch_test/never)" in log
    assert "starting after" not in log
    assert "stopping silent" in log


def test_a_stop_while_a_node_still_imports_ends_it_quietly(ros_env: dict[str, str], tmp_path: Path) -> None:
    """Ctrl-C in the first seconds of a launch: the node being started is still importing (no signal handler
    of its own yet), where SIGINT raised KeyboardInterrupt and printed its traceback into the launch log (seen
    with the twin inside onnxruntime's import). A node not yet ready gets SIGTERM: it ends without one."""
    marker = tmp_path / "importing"
    slow_import = f"import pathlib, time; pathlib.Path({str(marker)!r}).touch(); time.sleep(60)"
    spec = NodeSpec("test", sys.executable, None, "slow", {}, arguments=["-c", slow_import])
    out = io.StringIO()
    runner = GraphRunner([spec], env=ros_env, shutdown_timeout=5.0, out=out)

    def stop_once_importing() -> None:
        wait_for(marker.exists, 60, what="the node to start importing")
        runner.request_stop(signal.SIGINT)

    threading.Thread(target=stop_once_importing, daemon=True).start()
    assert runner.run() == 0
    log = out.getvalue()
    assert "stopping slow" in log and "still running" not in log, log
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log


def _graph_state(ros_env: dict[str, str]):
    import rclpy

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("launch_test_observer", context=ctx)
    return ctx, node


@pytest.mark.slow
def test_dm1_launch_sim_graph_with_policy_comes_up_and_stops_on_sigint(
    procs, ros_env, tmp_path: Path
) -> None:
    """`dm1 launch franka --use-sim --model M`: twin, controller, policy up; chunks flow; SIGINT stops all."""
    import rclpy
    from trajectory_msgs.msg import MultiDOFJointTrajectory

    model = build_toy_model(tmp_path / "toy", cameras={"front": (96, 96, 3)}, control_rate_hz=10.0)
    cmd = [
        str(Path(sys.executable).parent / "dm1"),
        "launch",
        "franka",
        "--use-sim",
        "--model",
        str(model),
        "--sim-host",
        free_loopback_host(),
        "--cameras",
        "front",
        "--shutdown-timeout",
        "10",
    ]
    launcher = procs.start("launch", cmd)
    ctx, node = _graph_state(ros_env)
    chunks: list[MultiDOFJointTrajectory] = []
    node.create_subscription(MultiDOFJointTrajectory, "/dm1/action_chunk/cartesian", chunks.append, 10)
    executor = rclpy.executors.SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    names = {"twin", "controller_node", "policy_node"}
    try:
        wait_for(
            lambda: "graph up" in procs.log("launch") or launcher.poll() is not None, 180, 0.5, "graph up"
        )
        assert launcher.poll() is None, procs.log("launch")
        wait_for(lambda: names <= set(node.get_node_names()), 30, 0.2, f"{names} in the ROS graph")
        topics = {t for t, _ in node.get_topic_names_and_types()}
        assert {"/clock", "/joint_states", "/camera/front/color/image_raw", "/twin/robot_host"} <= topics
        wait_for(lambda: executor.spin_once(timeout_sec=0.1) or chunks, 60, 0.0, "a policy chunk")
        os.kill(launcher.pid, signal.SIGINT)  # the launcher alone: it must stop its children
        launcher.wait(timeout=60)
        assert launcher.returncode == 0, procs.log("launch")
        wait_for(
            lambda: not names & set(node.get_node_names()),
            30,
            0.5,
            "nodes to leave the graph",
            lambda: f"still listed: {sorted(node.get_node_names_and_namespaces())}",
        )
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
    log = procs.log("launch")
    for name in ("twin", "controller_node", "policy_node"):
        assert f"[launch] {name} ready" in log, log
    assert "[launch] policy_node ready (lifecycle state active)" in log
    assert log.index("[launch] twin ready") < log.index("[launch] starting controller_node")
    assert "exit code 0" in log and "still running" not in log  # every node stopped on SIGINT


@pytest.mark.slow
def test_dm1_launch_with_a_model_that_fails_to_configure_stops_the_graph(
    procs, ros_env, tmp_path: Path
) -> None:
    """A model the policy cannot load (it passed the launcher's file check) ends the launch with code 1 and
    the reason, never "graph up" with the arm left to a controller no policy drives."""
    model = build_toy_model(tmp_path / "toy", cameras={"front": (96, 96, 3)}, control_rate_hz=10.0)
    bad = corrupt_copy(model, tmp_path / "corrupt")
    cmd = [
        str(Path(sys.executable).parent / "dm1"),
        *("launch", "franka", "--use-sim", "--model", str(bad)),
        *("--sim-host", free_loopback_host(), "--cameras", "front", "--shutdown-timeout", "10"),
    ]
    launcher = procs.start("launch", cmd)
    launcher.wait(timeout=240)
    log = procs.log("launch")
    assert launcher.returncode == 1, log
    assert "[launch] controller_node ready" in log
    assert "onnxruntime cannot load" in log
    assert "[launch] ERROR: required node policy_node exited with code 1 before it was ready" in log
    assert "graph up" not in log and "still running" not in log  # the twin and controller stopped on SIGINT


LAUNCHER_SCRIPT = """
import sys
from dm1.commands.launch import GraphRunner
from dm1.launch_graph import NodeSpec
args = {"arguments": ["-c", sys.argv[2]], "ready_timeout_s": 30.0}
node = NodeSpec("test", sys.executable, None, sys.argv[1], {}, **args)
sys.exit(GraphRunner([node], shutdown_timeout=5.0).run())
"""


# A node that reads its terminal the way keyboard teleop does (cbreak mode, non-blocking reads): it writes
# each key to `<out>.keys` and, on exit, how many SIGINTs it got to `<out>.sigints` (it lingers 1 s after the
# first to see whether a second comes).
KEYBOARD_NODE = """
import os, select, signal, sys, termios, time, tty, rclpy
from rclpy.node import Node
rclpy.init(args=sys.argv)
node = Node("keys")
out = node.declare_parameter("out", "").value
sigints = []
signal.signal(signal.SIGINT, lambda *_: sigints.append(time.monotonic()))
fd = sys.stdin.fileno()
saved = termios.tcgetattr(fd)
tty.setcbreak(fd)
try:
    while not sigints or time.monotonic() < sigints[0] + 1.0:
        rclpy.spin_once(node, timeout_sec=0.02)
        if select.select([fd], [], [], 0.0)[0]:
            with open(out + ".keys", "ab") as f:
                f.write(os.read(fd, 16))
finally:
    termios.tcsetattr(fd, termios.TCSADRAIN, saved)
    with open(out + ".sigints", "w") as f:
        f.write(str(len(sigints)))
"""

TERMINAL_LAUNCHER = """
import sys
from dm1.commands.launch import GraphRunner
from dm1.launch_graph import NodeSpec
node = NodeSpec("test", sys.executable, None, "keys", {"out": sys.argv[1]}, arguments=["-c", sys.argv[2]],
                terminal=True)
sys.exit(GraphRunner([node], shutdown_timeout=5.0).run())
"""


def test_a_keyboard_node_reads_the_launch_terminal_and_stops_on_one_ctrl_c(ros_env, tmp_path: Path) -> None:
    """`dm1 launch --record` with keyboard teleop, in a terminal: the node reads the keys typed into the
    launcher's terminal (in a process group of its own, SIGTTOU stopped it at its first terminal call), and a
    Ctrl-C stops the graph with the node's cleanup run once (the launcher sends it no second SIGINT)."""
    import pty
    import select

    out = tmp_path / "keys"
    pid, fd = pty.fork()
    if pid == 0:  # the child: a session leader on the pty, as a shell starts a command
        os.environ.clear()
        os.environ.update(ros_env)
        os.execv(sys.executable, [sys.executable, "-c", TERMINAL_LAUNCHER, str(out), KEYBOARD_NODE])
    text = b""

    def read_until(done, timeout: float, what: str) -> None:
        nonlocal text
        end = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < end, f"{what}; terminal: {text.decode(errors='replace')[-2000:]}"
            if select.select([fd], [], [], 0.1)[0]:
                with contextlib.suppress(OSError):
                    text += os.read(fd, 65536)

    try:
        read_until(lambda: b"graph up" in text, 120, "the graph did not come up")
        os.write(fd, b"k")
        keys = Path(f"{out}.keys")
        read_until(lambda: keys.exists() and keys.read_bytes() == b"k", 30, "the node did not read the key")
        os.write(fd, b"\x03")  # Ctrl-C typed in the terminal
        read_until(lambda: os.waitpid(pid, os.WNOHANG)[0] != 0, 60, "the launcher did not exit")
    finally:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    assert Path(f"{out}.sigints").read_text() == "1"
    log = text.decode(errors="replace")
    assert "exit code 0" in log and "still running" not in log, log


def _pids_running(marker: str) -> list[int]:
    """PIDs whose command line contains `marker`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_nodes_do_not_outlive_a_killed_launcher(ros_env: dict[str, str]) -> None:
    """SIGKILL leaves the launcher no chance to stop its nodes; the kernel's parent-death signal does."""
    name = f"orphan_probe_{os.getpid()}"
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER_SCRIPT, name, DUMMY_NODE],
        env=ros_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for line in launcher.stdout:
            if "graph up" in line:
                break
        node_pids = [p for p in _pids_running(f"__node:={name}") if p != launcher.pid]
        assert node_pids, "the dummy node is not running"
        launcher.kill()
        launcher.wait(timeout=10)
        gone = lambda: not _pids_running(f"__node:={name}")  # noqa: E731
        wait_for(gone, 20.0, what="the node to exit after its launcher")
    finally:
        for pid in _pids_running(f"__node:={name}"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if launcher.poll() is None:
            launcher.kill()
