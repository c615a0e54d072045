"""`dm1 launch franka [--use-sim] [--model DIR] ...`: a pure-Python launcher for the dm1 node graph.

Machines without `ros2 launch` (PyPI rclpy) start the same graph as `dm1_bringup/launch/franka.launch.py`
(both read `dm1.launch_graph.franka_graph`). Nodes start in order as child processes
(`python -m <module> --ros-args -p ...`); each waits for the previous one's readiness check (a message on
its `ready_topic`, or its name in the ROS graph), every wait bounded. Output is prefixed with the node name.
Ctrl-C or SIGTERM stops every node (SIGINT, then SIGTERM, then SIGKILL, in reverse start order); the
launcher exits non-zero when a required node dies, does not become ready, or ends other than cleanly while it
is stopped (a traceback, SIGSEGV: `launch_checks.CLEAN_EXIT_CODES`). With `--use-sim` it follows the twin's
`/clock` once the graph is up: simulation time that stands still is reported once and, after
`--sim-stall-timeout`, stops the graph with code 1 (`dm1.commands.sim_clock`). Should the launcher itself die
without that shutdown (SIGKILL, a crash), the kernel sends every node SIGTERM (`setpriv --pdeathsig`): no
controller, policy or twin outlives its launcher.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from dm1.commands.arg_types import fraction, positive_float
from dm1.commands.graph_runner import GRAPH_UP, GraphRunner, with_parent_death_signal
from dm1.commands.launch_checks import foxglove_port_problem
from dm1.commands.sim_clock import SIM_STALL_STOP_S, SIM_STALL_WARN_S, ClockWatchSettings
from dm1.policy_defaults import DEFAULT_ENSEMBLE_ALPHA

__all__ = ["GRAPH_UP", "GraphRunner", "register", "with_parent_death_signal"]  # the runner's, re-exported


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
    p.add_argument(
        "--sim-stall-timeout",
        type=positive_float,
        default=SIM_STALL_STOP_S,
        help="with --use-sim: wall seconds simulation time may stand still before the graph is stopped "
        f"(exit code 1; a warning comes after {SIM_STALL_WARN_S:.0f} s); default %(default)s",
    )
    p.add_argument("--dry-run", action="store_true", help="print the node commands and exit")
    p.set_defaults(func=_handle)


def _handle(args: argparse.Namespace) -> int:
    from dm1.launch_args import LaunchArgs
    from dm1.launch_graph import franka_graph
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
    if problem := foxglove_port_problem(specs):  # the bridge starts last: refuse now, not after the rest
        print(f"dm1 launch: error: {problem}", file=sys.stderr)
        return 2
    stall = args.sim_stall_timeout
    sim_clock = ClockWatchSettings("twin", min(SIM_STALL_WARN_S, stall), stall) if args.use_sim else None
    return GraphRunner(specs, shutdown_timeout=args.shutdown_timeout, sim_clock=sim_clock).run()
