"""The launched graph as a child process: start it, wait until it answers, stop it.

Used by `dm1 eval`, `dm1 data collect --via-teleop` and `dm1 bench loop`: the graph
(`dm1 launch franka --use-sim ...`) runs in its own process group with its output in a log file; the caller's
rclpy driver (anything with `wait_ready(timeout_s)`) tells when it is ready.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Protocol

from dm1.commands.graph_runner import GRAPH_UP as _LAUNCHER_GRAPH_UP
from dm1.commands.graph_runner import with_parent_death_signal
from dm1.errors import ReportedError
from dm1.interrupts import deferred_interrupts, raise_if_requested

#: the launcher's line once every node is ready (`GraphRunner.run`)
GRAPH_UP = f"[launch] {_LAUNCHER_GRAPH_UP}"


class GraphExitedError(ReportedError, RuntimeError):
    """The launched graph stopped before it was ready; the message carries the launch log's error lines."""


class ReadyProbe(Protocol):
    """A client of the graph that can tell when the graph is ready (e.g. `dm1_ros.evaluate.EvalDriver`)."""

    def wait_ready(self, timeout_s: float = ...) -> None: ...


@contextlib.contextmanager
def graph_stopped_after(graph: subprocess.Popen[bytes]) -> Iterator[None]:
    """Run the block with the graph, then stop the graph.

    In the block SIGINT/SIGTERM raise KeyboardInterrupt at the driver's next spin step
    (`dm1.interrupts`: never inside rclpy's bindings). While the graph is being stopped SIGINT is ignored,
    so a second Ctrl-C cannot orphan it.
    """
    try:
        with deferred_interrupts():
            yield
    finally:
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            stop_graph(graph)
        finally:
            signal.signal(signal.SIGINT, old)


def launch_command(*args: str) -> list[str]:
    """`dm1 launch franka ARGS...` as a command line for this interpreter."""
    return [sys.executable, "-m", "dm1.cli", "launch", "franka", *args]


def policy_launch_args(noise_scale: float, ensemble_alpha: float) -> list[str]:
    """The policy's sampler settings as `dm1 launch franka` arguments."""
    return ["--noise-scale", str(noise_scale), "--ensemble-alpha", str(ensemble_alpha)]


def start_graph(
    model: str, seed: int, log_path: Path, extra: list[str] | None = None
) -> subprocess.Popen[bytes]:
    """Start the twin + controller + policy graph (`dm1 launch franka --use-sim`) in its own process group."""
    cmd = launch_command("--use-sim", "--model", model, "--seed", str(seed))
    with open(log_path, "wb") as log:  # the child keeps its own descriptor
        return spawn_graph(cmd + (extra or []), log)


def spawn_graph(cmd: list[str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    """Start a graph launcher: output to `log`, in its own session (a terminal Ctrl-C reaches only this
    process, which then stops the graph), and tied to this process: should it die without stopping the graph
    (SIGKILL, a crash), the kernel sends the launcher SIGTERM, which stops every node in order
    (`with_parent_death_signal`; before, the whole graph ran on and blocked the ROS domain)."""
    return subprocess.Popen(
        with_parent_death_signal(cmd), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def stop_graph(proc: subprocess.Popen[bytes], timeout_s: float = 90.0) -> None:
    """SIGINT the launcher's process group, then SIGKILL what is left.

    The launcher stops its nodes one by one, escalating per node (SIGINT, 10 s, SIGTERM, 3 s, SIGKILL), so
    `timeout_s` leaves it time for three nodes that each need the whole escalation. Were the launcher killed
    before that, its nodes would still get SIGTERM from the kernel (`dm1.commands.launch`).
    """
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=timeout_s)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def error_lines(log_path: Path, last: int = 5) -> list[str]:
    """The last `last` lines of a launch log that report an error (ERROR / FATAL / `error:`)."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return []
    found = [ln for ln in text.splitlines() if "ERROR" in ln or "FATAL" in ln or "error:" in ln]
    return found[-last:]


def graph_exited(
    graph: subprocess.Popen[bytes], log_path: Path, when: str, after: str = ""
) -> GraphExitedError:
    """The error for a launched graph that exited: when, its exit code, the log's error lines, the log."""
    errors = "".join(f"\n  {line}" for line in error_lines(log_path))
    return GraphExitedError(
        f"the launched graph exited {when} (code {graph.returncode}){errors}\nfull log: {log_path}{after}"
    )


def raise_if_exited(graph: subprocess.Popen[bytes]) -> Callable[[], None]:
    """A check for `dm1_ros.service_calls.checked_while_waiting`: raises RuntimeError once `graph` exited, so
    a driver's wait ends at its next step, not at a service timeout."""

    def check() -> None:
        if graph.poll() is not None:
            raise RuntimeError(f"the launched graph exited (code {graph.returncode})")

    return check


def _graph_up(log_path: Path) -> bool:
    """Whether the launcher wrote its "graph up" line (`dm1.commands.graph_runner.GraphRunner.run`)."""
    try:
        return GRAPH_UP in log_path.read_text(errors="replace")
    except FileNotFoundError:
        return False


def wait_graph_ready(
    graph: subprocess.Popen[bytes],
    probe: ReadyProbe,
    log_path: Path,
    deadline_s: float = 240.0,
    retry_on: tuple[type[BaseException], ...] = (TimeoutError,),
) -> float:
    """Wait for the launcher's "graph up" in `log_path`, then poll `probe.wait_ready` in 10 s slices until it
    succeeds; returns the wall seconds it took. The probe talks to the graph only after its own launcher
    said so: another graph in the ROS domain (which the launcher refuses) must never be driven instead.

    Raises `GraphExitedError` (with the log's error lines) as soon as the graph exits, TimeoutError when the
    graph is not up within `deadline_s`, and re-raises the probe's last error (one of `retry_on`) after
    `deadline_s` of wall time.
    """
    t0 = time.monotonic()
    while not _graph_up(log_path):
        if graph.poll() is not None:
            raise graph_exited(graph, log_path, "before it was up")
        if time.monotonic() - t0 > deadline_s:
            raise TimeoutError(f"the launched graph was not up after {deadline_s:.0f} s: see {log_path}")
        time.sleep(0.1)
        raise_if_requested()
    while True:
        if graph.poll() is not None:
            raise graph_exited(graph, log_path, "early")
        try:
            probe.wait_ready(timeout_s=10.0)
            return time.monotonic() - t0
        except retry_on:
            if time.monotonic() - t0 > deadline_s:
                raise
