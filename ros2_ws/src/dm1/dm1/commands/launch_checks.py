"""Checks `dm1 launch` makes on its programs, its ports and its children's processes (no ROS).

- `missing_program`: why a node's program cannot start here (a module not installed, rviz2 not on PATH).
- `foxglove_port_problem`: the Foxglove bridge starts last, so a taken port is refused before anything starts.
- `exit_is_clean` / `describe_exit`: which exit codes a node uses for a requested stop.
- `process_state` / `is_stopped`: what a child process is doing (a twin stopped with `kill -STOP`).
"""

from __future__ import annotations

import errno
import importlib.util
import os
import shutil
import signal
import socket
from pathlib import Path
from typing import Any

#: Exit codes of a node that stopped because it was asked to: 0 (`dm1_ros.node_signals.stopped_by_signals`),
#: killed by the SIGINT/SIGTERM the launcher sent (a node still importing), or 128 + that signal (a process
#: that exits the shell way, as `dm1` commands do on Ctrl-C). Anything else from a required node (a
#: traceback's 1, SIGSEGV, the twin's shutdown watchdog, a SIGKILL after the grace period) fails the launch.
CLEAN_EXIT_CODES = frozenset({0, -signal.SIGINT, -signal.SIGTERM, 128 + signal.SIGINT, 128 + signal.SIGTERM})

_PROCESS_STATES = {
    "R": "is running",
    "S": "is sleeping",
    "D": "is in uninterruptible sleep (I/O)",
    "T": "is stopped (SIGSTOP / SIGTSTP; `kill -CONT` resumes it)",
    "t": "is stopped by a debugger",
    "Z": "has exited (zombie)",
}


def exit_is_clean(code: int) -> bool:
    """Whether a node's exit `code` is one of a requested stop (`CLEAN_EXIT_CODES`)."""
    return code in CLEAN_EXIT_CODES


def describe_exit(code: int) -> str:
    """`code` as the launcher logs it: "-11 (SIGSEGV)" for a signal, else the number."""
    if code < 0:
        try:
            return f"{code} ({signal.Signals(-code).name})"
        except ValueError:
            return str(code)
    return str(code)


def missing_program(spec: Any) -> str | None:
    """Why `spec` (a `dm1.launch_graph.NodeSpec`) cannot start here (None = it can)."""
    if spec.module:
        try:
            found = importlib.util.find_spec(spec.module) is not None
        except ModuleNotFoundError:
            found = False
        return None if found else f"python module {spec.module} not installed"
    if os.path.sep in spec.executable:
        return None if os.access(spec.executable, os.X_OK) else f"{spec.executable} is not executable"
    return (
        None if shutil.which(spec.executable) else f"{spec.executable} not found on PATH (needs a ROS host)"
    )


def port_problem(host: str, port: int) -> str | None:
    """Why a TCP server could not listen on `host`:`port` now (None: it can; port 0 takes any free one)."""
    if port == 0:
        return None
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        return f"cannot resolve {host}: {exc.strerror}"
    with socket.socket(family, kind, proto) as sock:
        # as a server sets it: a connection of an earlier server still in TIME_WAIT does not count
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"{host}:{port} is already in use (another Foxglove bridge or server)"
            return f"cannot listen on {host}:{port}: {exc.strerror}"
    return None


def foxglove_port_problem(specs: list[Any]) -> str | None:
    """Why the graph's Foxglove bridge (if any) could not serve its websocket (None: it can, or none runs).
    Checked before the launch: the bridge starts last, after twin, controller and policy."""
    for spec in specs:
        if spec.name != "foxglove_node":
            continue
        port = int(spec.parameters.get("port", 8765))
        host = str(spec.parameters.get("host", "127.0.0.1"))
        problem = port_problem(host, port) if port > 0 else None
        if problem:
            return f"--foxglove-port {port}: {problem}; stop it, or pass another --foxglove-port (0 = any)"
    return None


def process_state(pid: int) -> str:
    """What the process `pid` is doing, in words ("is stopped (SIGSTOP ...)"), from /proc; "" elsewhere."""
    state = _state_letter(pid)
    return _PROCESS_STATES.get(state, f"is in state {state}" if state else "")


def is_stopped(pid: int) -> bool:
    """Whether the process `pid` is stopped by a signal (`kill -STOP`): it acts on no other signal until
    SIGCONT (SIGKILL aside)."""
    return _state_letter(pid) == "T"


def _state_letter(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat.rpartition(")")[2].split()  # the name in parentheses may hold spaces
    return fields[0] if fields else ""
