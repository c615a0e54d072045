"""`GraphRunner`: the supervisor behind `dm1 launch` (start in order, wait for readiness, watch, stop).

Nodes start in order as child processes (`python -m <module> --ros-args -p ...`); each waits for the previous
one's readiness check (a message on its `ready_topic`, its lifecycle state, or its name in the ROS graph),
every wait bounded. Output is prefixed with the node name. The command line and the launch's arguments are in
`dm1.commands.launch`, which documents the behaviour.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import IO, Any

from dm1.commands.graph_probe import GraphProbe, other_graph_message
from dm1.commands.launch_checks import (
    describe_exit,
    exit_is_clean,
    is_stopped,
    missing_program,
    process_state,
)
from dm1.commands.sim_clock import ClockWatchSettings, SimClockWatch, Stall

CHILD_ENV_DEFAULTS = {
    "MUJOCO_GL": "egl",
    "PYOPENGL_PLATFORM": "egl",
    "FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA",
    "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
    "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
}

PRE_START_LOOK_S = 1.0  # seconds the launcher looks for another graph in its ROS domain before it starts one
CLOCK_LOOK_S = 0.5  # wall seconds between two looks at /clock (`--use-sim`, once the graph is up)
GRAPH_UP = (
    "graph up"  # logged once every node is ready: drivers wait for it (`graph_process.wait_graph_ready`)
)

# util-linux's `setpriv --pdeathsig`: the kernel SIGTERMs the node (rclpy's graceful shutdown) when its
# parent, the launcher, dies. Through an exec, not a Popen preexec_fn: Python code run between fork and exec
# in a process with live threads (the output pumps, the readiness probe's DDS threads) can deadlock.
# Elsewhere (no setpriv: not Linux) the launcher still runs, without this guarantee.
_SETPRIV = shutil.which("setpriv") if sys.platform.startswith("linux") else None


def with_parent_death_signal(cmd: list[str], setpriv: str | None = _SETPRIV) -> list[str]:
    """`cmd` wrapped so that the kernel sends it SIGTERM once the process that starts it dies."""
    return [setpriv, "--pdeathsig", "TERM", "--", *cmd] if setpriv else list(cmd)


class GraphRunner:
    """Starts `NodeSpec`s as child processes, supervises them and shuts them down.

    Args:
        specs: nodes in start order (`dm1.launch_graph.NodeSpec`).
        env: child environment (default: this process's, plus dm1's DDS/rendering defaults).
        shutdown_timeout: seconds to wait after SIGINT before SIGTERM (then 3 s before SIGKILL).
        out: stream for prefixed output.
        sim_clock: once the graph is up, watch `/clock` (published by node `sim_clock.node`): warn when
            simulation time stands still, stop the graph (code 1) when it stays so; None = no watch.
    """

    def __init__(
        self,
        specs: list[Any],
        env: dict[str, str] | None = None,
        shutdown_timeout: float = 10.0,
        out: IO[str] | None = None,
        sim_clock: ClockWatchSettings | None = None,
    ) -> None:
        self.specs = specs
        self.env = dict(os.environ if env is None else env)
        for key, value in CHILD_ENV_DEFAULTS.items():
            self.env.setdefault(key, value)
        self.env["PYTHONUNBUFFERED"] = "1"
        self.env["PYTHONFAULTHANDLER"] = "1"  # a node that crashes in native code prints where (in its log)
        self.shutdown_timeout = shutdown_timeout
        self.out = out or sys.stdout
        self.procs: list[tuple[Any, subprocess.Popen[bytes]]] = []
        self._probe: GraphProbe | None = None
        # the signal that stopped the launcher: set by the signal handler, which takes no lock (below)
        self._stop_signal: int | None = None
        self._stop_logged = False
        self._lock = threading.Lock()
        self._pumps: list[threading.Thread] = []
        self._other_graph: list[str] = []  # nodes of another graph found in the ROS domain
        self._ready: set[str] = set()  # nodes whose readiness check passed (see `shutdown`)
        self._reported: set[str] = set()  # nodes whose exit was logged (once)
        self._crashed: list[str] = []  # required nodes that ended other than cleanly while stopped
        self.sim_clock = sim_clock

    def log(self, msg: str) -> None:
        """One launcher line, prefixed `[launch]`."""
        with self._lock:
            self.out.write(f"[launch] {msg}\n")
            self.out.flush()

    def request_stop(self, signum: int = signal.SIGTERM, *_: Any) -> None:
        """Ask the supervisor loop to shut down (the signal handler).

        It only records the signal. Python runs a handler on the main thread between two bytecodes, also
        while that thread holds a lock (the output lock in `log`, an Event's condition inside `wait`): a
        handler that took the same lock deadlocked the launcher on Ctrl-C, with every node left running
        (seen: SIGINT and SIGTERM ignored, stacked handlers waiting in `Event.set`)."""
        if self._stop_signal is None:
            self._stop_signal = signum

    def stopping(self) -> bool:
        """Whether a stop was requested (logged once, from the main loop)."""
        if self._stop_signal is not None and not self._stop_logged:
            self._stop_logged = True
            self.log(f"received {signal.Signals(self._stop_signal).name}: shutting down")
        return self._stop_signal is not None

    def _stopped_within(self, seconds: float) -> bool:
        """Sleep up to `seconds` (in 50 ms steps); whether a stop was requested."""
        deadline = time.monotonic() + seconds
        while not self.stopping() and time.monotonic() < deadline:
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        return self.stopping()

    def run(self) -> int:
        """Start, supervise until a signal or a required node's death, shut down. Returns the exit code."""
        old = {s: signal.signal(s, self.request_stop) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        code = 0
        try:
            specs = self._preflight()
            if specs is None:
                return 2
            code = self._start_all(specs)
            if code == 0 and not self.stopping():
                running = [s.name for s, p in self.procs if p.poll() is None]
                self.log(f"{GRAPH_UP}: {', '.join(running)} (Ctrl-C to stop)")
                code = self._supervise()
        finally:
            self.shutdown()
            if self._crashed and code == 0:
                code = 1
            if self._probe is not None:
                # Only now that no node publishes any more: destroying DDS readers while their listener
                # threads still deliver samples can crash this process (SIGSEGV, ros2/rmw_fastrtps#717).
                self._probe.close()
                self._probe = None
            for s, handler in old.items():
                signal.signal(s, handler)
        self.log(f"exit code {code}")
        return code

    def _preflight(self) -> list[Any] | None:
        """Drop optional nodes whose program is missing; fail (None) when a required one is missing."""
        if _SETPRIV is None:
            self.log("note: no setpriv (util-linux): should this launcher be killed, its nodes keep running")
        runnable = []
        for spec in self.specs:
            missing = missing_program(spec)
            if missing is None:
                runnable.append(spec)
            elif spec.required:
                self.log(f"ERROR: required node {spec.name}: {missing}")
                return None
            else:
                self.log(f"skipping optional node {spec.name}: {missing}")
        return runnable

    def _start_all(self, specs: list[Any]) -> int:
        """Start the nodes in order, each once the previous is ready (the probe stays until `run` ends).
        Returns 2 when another graph runs in the ROS domain (nodes named like these, another launcher)."""
        self._probe = GraphProbe(self.env)
        # a first look at the domain before anything starts (another graph is usually seen in < 1 s; the
        # checks go on while the nodes start)
        while self._probe.age() < PRE_START_LOOK_S and not self.stopping():
            if not self._check_domain(self._probe):
                return 2
            self._probe.spin(0.05)
        for spec in specs:
            if self.stopping():
                return 0
            proc = self._spawn(spec)
            if not self._wait_ready(spec, proc, self._probe):
                return 0 if self.stopping() else 2 if self._other_graph else 1
        return 0

    def _check_domain(self, probe: GraphProbe) -> bool:
        """Whether the ROS domain holds only this graph; else say which nodes are another's (once)."""
        started = {s.name for s, _ in self.procs}
        others = probe.other_graph([s.name for s in self.specs], started)
        if others and not self._other_graph:
            self._other_graph = others
            self.log(f"ERROR: {other_graph_message(self.env.get('ROS_DOMAIN_ID', '0'), others)}")
        return not others

    def _spawn(self, spec: Any) -> subprocess.Popen[bytes]:
        cmd = spec.command(sys.executable)
        self.log(f"starting {spec.name}: {' '.join(cmd)}")
        # Own process group: a terminal Ctrl-C reaches only the launcher, which then stops the nodes one by
        # one (a second SIGINT during a node's cleanup would interrupt it). A node that reads the terminal
        # (keyboard teleop) stays in the launcher's foreground group: elsewhere SIGTTOU/SIGTTIN stop it.
        proc = subprocess.Popen(
            with_parent_death_signal(cmd),
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            process_group=None if spec.terminal else 0,
        )
        self.procs.append((spec, proc))
        pump = threading.Thread(target=self._pump, args=(spec.name, proc.stdout), daemon=True)
        pump.start()
        self._pumps.append(pump)
        return proc

    def _pump(self, name: str, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            with self._lock:
                self.out.write(f"[{name}] {raw.decode(errors='replace').rstrip()}\n")
                self.out.flush()

    def _wait_ready(self, spec: Any, proc: subprocess.Popen[bytes], probe: GraphProbe) -> bool:
        what = f"a message on {spec.ready_topic}" if spec.ready_topic else "its node in the ROS graph"
        if spec.ready_states:
            what = f"lifecycle state {' or '.join(spec.ready_states)}"
        if spec.ready_topic:
            probe.watch(spec.ready_topic, spec.ready_type)
        deadline = time.monotonic() + spec.ready_timeout_s
        while time.monotonic() < deadline:
            if self.stopping():
                return False
            if proc.poll() is not None:
                while not probe.settled() and not self.stopping():  # the cause may be another graph
                    probe.spin(0.05)  # (its twin holds the robot ports): name it if it is there
                if not self._check_domain(probe):
                    return False
                level = "ERROR: required" if spec.required else "optional"
                self.log(f"{level} node {spec.name} exited with code {proc.returncode} before it was ready")
                self._reported.add(spec.name)  # said once: not again by the supervisor or the shutdown
                return not spec.required
            if not self._check_domain(probe):
                return False
            # not before the probe has seen the whole domain: another graph's messages would pass the check
            if probe.settled() and (shown := probe.ready(spec)):
                self.log(f"{spec.name} ready ({shown})")
                self._ready.add(spec.name)
                return True
            probe.spin(0.05)
        if spec.required:
            self.log(f"ERROR: {spec.name} not ready after {spec.ready_timeout_s:.0f} s (waited for {what})")
            return False
        self.log(f"optional node {spec.name} not ready after {spec.ready_timeout_s:.0f} s; continuing")
        return True

    def _supervise(self) -> int:
        watch, next_look = None, time.monotonic()
        if self.sim_clock is not None and self._probe is not None:
            self._probe.watch_clock()
            watch = SimClockWatch(self.sim_clock.warn_after_s, self.sim_clock.stop_after_s, time.monotonic())
        while not self._stopped_within(0.1):
            for spec, proc in self.procs:
                if proc.poll() is None or spec.name in self._reported:
                    continue
                if spec.required:
                    if self._stopped_within(0.3):  # a Ctrl-C in a terminal reaches the children too
                        return 0  # its exit code is judged with the others' (`_report_stopped`)
                    self._reported.add(spec.name)
                    self.log(
                        f"ERROR: required node {spec.name} exited with code {proc.returncode}; shutting down"
                    )
                    return 1
                self._reported.add(spec.name)
                self.log(f"optional node {spec.name} exited with code {proc.returncode}")
            if watch is not None and time.monotonic() >= next_look:  # bounds are seconds: 2 looks a second
                next_look = time.monotonic() + CLOCK_LOOK_S
                if not self._sim_time_runs(watch):
                    return 1
        return 0

    def _sim_time_runs(self, watch: SimClockWatch) -> bool:
        """Take the newest /clock; warn once when simulation time stands still, say when it runs again.
        False once it has stood still for `sim_clock.stop_after_s` (the graph is then stopped)."""
        assert self._probe is not None and self.sim_clock is not None
        self._probe.spin_pending(limit=3)  # the newest /clock (and of the readiness topics: depth 1 each)
        now = time.monotonic()
        stalled = watch.stalled_s(now)
        verdict = watch.step(self._probe.clock_s, now)
        if verdict is Stall.NONE:
            return True
        if verdict is Stall.RESUMED:
            self.log(f"simulation time runs again (it stood still for {stalled:.0f} s)")
            return True
        at = "(no /clock received)" if watch.last_sim_s is None else f"at {watch.last_sim_s:.3f} s"
        what = f"simulation time stuck {at} for {stalled:.0f} s (wall){self._clock_node_state()}"
        if verdict is Stall.STUCK:
            self.log(f"WARNING: {what}; the graph stops after {self.sim_clock.stop_after_s:.0f} s of this")
            return True
        self.log(f"ERROR: {what}; shutting down")
        return False

    def _clock_node_state(self) -> str:
        """The state of the process that publishes /clock ("; twin (pid N) is stopped (...)"), or ""."""
        assert self.sim_clock is not None
        for spec, proc in self.procs:
            if spec.name == self.sim_clock.node and proc.poll() is None:
                state = process_state(proc.pid)
                return f"; {spec.name} (pid {proc.pid}) {state}" if state else ""
        return ""

    def shutdown(self) -> None:
        """Stop the children one by one in reverse start order (the controller leaves before the robot/twin):
        SIGINT, then SIGTERM after `shutdown_timeout`, then SIGKILL after 3 s more. A node not yet ready gets
        SIGTERM first (then SIGKILL after `shutdown_timeout`): still importing, it ends quietly (SIGINT would
        raise KeyboardInterrupt there, a traceback); past `stopped_by_signals` both signals stop a dm1 node
        the same graceful way."""
        live = [(s, p) for s, p in reversed(self.procs) if p.poll() is None]
        if live:
            self.log(f"stopping {', '.join(s.name for s, _ in live)}")
        for spec, proc in live:
            if spec.name in self._ready or spec.terminal:
                steps = [(signal.SIGINT, self.shutdown_timeout), (signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)]
            else:  # still starting, perhaps still importing
                steps = [(signal.SIGTERM, self.shutdown_timeout), (signal.SIGKILL, 5.0)]
            for k, (sig, timeout) in enumerate(steps):
                if proc.poll() is not None:
                    break
                if k > 0:
                    self.log(f"{spec.name} still running: sending {signal.Signals(sig).name}")
                # a Ctrl-C typed in the terminal reached a terminal node already: a second one would
                # interrupt its cleanup
                if not (spec.terminal and sig == signal.SIGINT and self._stop_signal == signal.SIGINT):
                    _send(proc, sig, group=not spec.terminal)
                if is_stopped(proc.pid):  # `kill -STOP`: it acts on the signal only once it runs again
                    _send(proc, signal.SIGCONT, group=not spec.terminal)
                _wait_all([proc], timeout)
            self._report_stopped(spec, proc)
        for spec, proc in self.procs:  # those that ended before the shutdown and were not reported
            if spec.name not in self._reported and proc.poll() is not None:
                self._report_stopped(spec, proc)
        for pump in self._pumps:
            pump.join(timeout=2.0)

    def _report_stopped(self, spec: Any, proc: subprocess.Popen[bytes]) -> None:
        """Log how a node ended while the graph stopped; a required node that did not end cleanly (a
        traceback, SIGSEGV, the twin's shutdown watchdog: its stacks are above) fails the launch."""
        self._reported.add(spec.name)
        code = proc.returncode
        if code is None or code == 0:
            return
        if spec.required and not exit_is_clean(code):
            self._crashed.append(spec.name)
            self.log(
                f"ERROR: required node {spec.name} exited with code {describe_exit(code)} while stopping"
            )
        else:
            self.log(f"{spec.name} stopped with exit code {code}")


def _send(proc: subprocess.Popen[bytes], sig: int, group: bool = True) -> None:
    """`sig` to the node's process group (the node and anything it started), or to the node alone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)


def _wait_all(procs: list[subprocess.Popen[bytes]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
