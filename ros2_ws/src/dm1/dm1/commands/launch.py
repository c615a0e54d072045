"""`dm1 launch franka [--use-sim] [--model DIR] ...`: a pure-Python launcher for the dm1 node graph.

Machines without `ros2 launch` (PyPI rclpy) start the same graph as `dm1_bringup/launch/franka.launch.py`
(both read `dm1.launch_graph.franka_graph`). Nodes start in order as child processes
(`python -m <module> --ros-args -p ...`); each waits for the previous one's readiness check (a message on
its `ready_topic`, or its name in the ROS graph), every wait bounded. Output is prefixed with the node name.
Ctrl-C or SIGTERM stops every node (SIGINT, then SIGTERM, then SIGKILL, in reverse start order); the
launcher exits non-zero when a required node dies or does not become ready. Should the launcher itself die
without that shutdown (SIGKILL, a crash), the kernel sends every node SIGTERM (`setpriv --pdeathsig`): no
controller, policy or twin outlives its launcher.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import IO, Any

from dm1.commands.arg_types import fraction, positive_float
from dm1.commands.graph_probe import GraphProbe, other_graph_message
from dm1.policy_defaults import DEFAULT_ENSEMBLE_ALPHA

CHILD_ENV_DEFAULTS = {
    "MUJOCO_GL": "egl",
    "PYOPENGL_PLATFORM": "egl",
    "FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA",
    "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
    "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
}

PRE_START_LOOK_S = 1.0  # seconds the launcher looks for another graph in its ROS domain before it starts one
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


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `dm1 launch`."""
    p = subparsers.add_parser("launch", help="start the dm1 node graph (twin or robot, controller, policy)")
    p.add_argument("graph", choices=["franka"], help="graph to launch")
    p.add_argument(
        "--use-sim", action="store_true", help="franky-sim digital twin instead of robot + RealSense"
    )
    p.add_argument("--model", help="exported model directory (model.onnx + model_card.json)")
    p.add_argument("--no-policy", action="store_true", help="bring up the graph without the policy node")
    p.add_argument("--cameras", default="front,wrist", help="comma-separated camera names")
    p.add_argument("--robot-ip", default="", help="FCI address of the robot (real robot only)")
    p.add_argument(
        "--sim-host",
        default="auto",
        help="loopback address shared by twin and controller; auto: 127.0.0.1, or the first free 127.0.0.x "
        "when another twin serves there",
    )
    p.add_argument(
        "--external-cameras", action="store_true", help="cameras from another driver (realsense2_camera)"
    )
    p.add_argument("--seed", type=int, default=0, help="twin scene seed")
    p.add_argument("--noise-scale", type=fraction, default=1.0, help="policy sampler noise scale (0..1)")
    p.add_argument(
        "--ensemble-alpha",
        type=float,
        default=DEFAULT_ENSEMBLE_ALPHA,
        help="policy chunk ensembling weight (0..1], 1 = off; default %(default)s",
    )
    p.add_argument("--rviz", action="store_true", help="start rviz2 (ROS host only)")
    p.add_argument("--record", action="store_true", help="start the teleop recorder")
    p.add_argument("--record-dir", default="", help="recorder output directory (default: teleop.yaml's)")
    p.add_argument(
        "--teleop-device",
        default="",
        help="recorder input device: spacemouse|keyboard|gamepad|joy|scripted (default: teleop.yaml's)",
    )
    p.add_argument("--foxglove", action="store_true", help="start the Foxglove live bridge")
    p.add_argument("--foxglove-port", type=int, default=8765, help="Foxglove websocket port")
    p.add_argument("--foxglove-mcap", default="", help="also record the Foxglove stream to this .mcap")
    p.add_argument("--config-dir", help="parameter YAML directory (default: dm1_bringup/config)")
    p.add_argument(
        "--shutdown-timeout", type=positive_float, default=10.0, help="seconds per node before escalating"
    )
    p.add_argument("--dry-run", action="store_true", help="print the node commands and exit")
    p.set_defaults(func=_handle)


def _handle(args: argparse.Namespace) -> int:
    from dm1.launch_graph import LaunchArgs, franka_graph
    from dm1.sim.hosts import resolve_sim_host

    try:
        # held until this process ends: a second launch started now does not take it too
        claim = not args.dry_run
        sim_host, note = resolve_sim_host(args.sim_host, claim) if args.use_sim else ("127.0.0.1", None)
        if note and not args.dry_run:
            print(f"[launch] {note}", flush=True)
        launch_args = LaunchArgs(
            robot_ip=args.robot_ip,
            model=args.model,
            cameras=args.cameras,
            use_sim=args.use_sim,
            sim_host=sim_host,
            external_cameras=args.external_cameras,
            rviz=args.rviz,
            record=args.record,
            record_dir=args.record_dir,
            teleop_device=args.teleop_device,
            foxglove=args.foxglove,
            foxglove_port=args.foxglove_port,
            foxglove_mcap=args.foxglove_mcap,
            no_policy=args.no_policy,
            seed=args.seed,
            noise_scale=args.noise_scale,
            ensemble_alpha=args.ensemble_alpha,
            config_dir=args.config_dir,
        )
        specs = franka_graph(launch_args)
    except (ValueError, OSError) as exc:
        print(f"dm1 launch: error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        for spec in specs:
            print(shlex.join(spec.command(sys.executable)))
        return 0
    return GraphRunner(specs, shutdown_timeout=args.shutdown_timeout).run()


class GraphRunner:
    """Starts `NodeSpec`s as child processes, supervises them and shuts them down.

    Args:
        specs: nodes in start order (`dm1.launch_graph.NodeSpec`).
        env: child environment (default: this process's, plus dm1's DDS/rendering defaults).
        shutdown_timeout: seconds to wait after SIGINT before SIGTERM (then 3 s before SIGKILL).
        out: stream for prefixed output.
    """

    def __init__(
        self,
        specs: list[Any],
        env: dict[str, str] | None = None,
        shutdown_timeout: float = 10.0,
        out: IO[str] | None = None,
    ) -> None:
        self.specs = specs
        self.env = dict(os.environ if env is None else env)
        for key, value in CHILD_ENV_DEFAULTS.items():
            self.env.setdefault(key, value)
        self.env["PYTHONUNBUFFERED"] = "1"
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
                self.log(f"{GRAPH_UP}: {', '.join(s.name for s, _ in self.procs)} (Ctrl-C to stop)")
                code = self._supervise()
        finally:
            self.shutdown()
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
            missing = _missing_program(spec)
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
        reported: set[str] = set()
        while not self._stopped_within(0.1):
            for spec, proc in self.procs:
                if proc.poll() is None or spec.name in reported:
                    continue
                reported.add(spec.name)
                if spec.required:
                    if self._stopped_within(0.3):  # a Ctrl-C in a terminal reaches the children too
                        return 0
                    self.log(
                        f"ERROR: required node {spec.name} exited with code {proc.returncode}; shutting down"
                    )
                    return 1
                self.log(f"optional node {spec.name} exited with code {proc.returncode}")
        return 0

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
                _wait_all([proc], timeout)
            if proc.returncode not in (None, 0):  # e.g. the twin's shutdown watchdog (its stacks are above)
                self.log(f"{spec.name} stopped with exit code {proc.returncode}")
        for pump in self._pumps:
            pump.join(timeout=2.0)


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


def _missing_program(spec: Any) -> str | None:
    """Why `spec` cannot start here (None = it can)."""
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
