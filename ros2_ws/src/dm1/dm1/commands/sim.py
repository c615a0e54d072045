"""`dm1 sim`: run the franky-sim digital twin (with its ROS node, or alone), optionally with the expert.

Examples:
  dm1 sim                                  # twin node on ROS until Ctrl-C (controller connects to it)
  dm1 sim --no-ros --expert --episodes 50  # expert success rate, no ROS
  dm1 sim --no-ros --seconds 10            # just the twin: prints its real-time factor

--episodes, --max-episode-s and --min-success need --expert; --seconds is refused with it (the expert runs
its episodes). With ROS, --fps, --seed, --width and --height must also be within the twin node's parameter
ranges.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from dm1.commands.arg_types import (
    fraction,
    int_in_range,
    loopback_host,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)
from dm1.sim.config import MAX_IMAGE_SIZE

#: Options that only the expert uses, with their defaults (None on the command line = not given).
EXPERT_ONLY = {"episodes": 10, "max_episode_s": 20.0, "min_success": 0.0}
#: Twin node parameter -> the option that sets it (`_ros_args`).
ROS_PARAMETER_OPTIONS = {
    "seed": "--seed",
    "camera_width": "--width",
    "camera_height": "--height",
    "camera_fps": "--fps",
}
image_side = int_in_range(1, MAX_IMAGE_SIZE, "image_side")


def _node_params(args: argparse.Namespace) -> dict[str, Any]:
    """The twin node's parameters for these arguments (`--no-cameras`: an empty `cameras` list)."""
    params: dict[str, Any] = {
        "seed": args.seed,
        "camera_width": args.width,
        "camera_height": args.height,
        "camera_fps": args.fps,
        "realtime": not args.fast,
    }
    if args.no_cameras:
        params["cameras"] = []
    return params


def _ros_args(args: argparse.Namespace) -> list[str]:
    params = _node_params(args)
    if args.expert:  # the expert drives the arm from this process (franky's control thread included): the
        params.update(cpu_nice=0, cpu_idle=False)  # twin node's yield (SCHED_IDLE) would starve it too
    out = ["--ros-args"] + (["-p", f"host:={args.host}"] if args.host else [])
    for key, value in params.items():
        out += ["-p", f"{key}:={json.dumps(value) if isinstance(value, bool | list) else value}"]
    return out


def _usage_problem(args: argparse.Namespace) -> str | None:
    """A combination of options that would silently do nothing, as one line; None when there is none.

    Fills in the defaults of the options left None (not given) by the parser.
    """
    given = [name for name in EXPERT_ONLY if getattr(args, name) is not None]
    if given and not args.expert:
        return f"argument --{given[0].replace('_', '-')}: only used with --expert (the expert's episodes)"
    if args.expert and args.seconds is not None:
        return "argument --seconds: not used with --expert (it runs --episodes episodes instead)"
    for name, default in EXPERT_ONLY.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    if args.seconds is None:
        args.seconds = 0.0
    return None


def _ros_parameter_problem(args: argparse.Namespace) -> str | None:
    """`argument --x: expected ..., found ...` for a value outside the twin node's parameter range."""
    from dm1_sim.params import PARAMETERS  # imports rclpy: only on the ROS path

    for name, value in _node_params(args).items():
        bounds = PARAMETERS[name][2]
        if name in ROS_PARAMETER_OPTIONS and bounds is not None and not bounds[0] <= value <= bounds[1]:
            lo, hi = bounds
            return (
                f"argument {ROS_PARAMETER_OPTIONS[name]}: expected a number in [{lo}, {hi}] (the twin node's "
                f"{name}), found {value}"
            )
    return None


def _run_expert(twin, args: argparse.Namespace) -> int:
    from dm1.sim.expert import run_expert_episodes

    def report(i, r) -> None:
        status = "success" if r.success else ("ERROR  " if r.error else "FAIL   ")
        print(
            f"episode {i:3d}: {status} {r.sim_duration_s:5.2f} s sim, {r.steps} steps, {r.retries} retries, "
            f"rtf {twin.real_time_factor():.2f}" + (f"  ({r.error})" if r.error else ""),
            flush=True,
        )

    wall0, sim0 = time.monotonic(), twin.sim_time()
    results = run_expert_episodes(
        twin, args.episodes, seed=args.seed * 100_000, max_sim_s=args.max_episode_s, on_result=report
    )
    ok = sum(r.success for r in results)
    errors = sum(r.error is not None for r in results)
    rate = ok / max(len(results), 1)
    rtf = (twin.sim_time() - sim0) / max(time.monotonic() - wall0, 1e-9)
    print(
        f"success rate: {ok}/{len(results)} = {rate:.1%} ({errors} franky errors); real-time factor {rtf:.2f}"
    )
    return 0 if rate >= args.min_success else 1


def _run_for(twin, seconds: float) -> int:
    wall0, sim0 = time.monotonic(), twin.sim_time()
    try:
        while seconds <= 0 or twin.sim_time() - sim0 < seconds:
            time.sleep(1.0)
            print(
                f"sim {twin.sim_time() - sim0:7.2f} s  real-time factor {twin.real_time_factor():.2f}",
                flush=True,
            )
    except KeyboardInterrupt:
        pass
    rtf = (twin.sim_time() - sim0) / max(time.monotonic() - wall0, 1e-9)
    r = twin.renderer
    print(f"real-time factor {rtf:.2f}; frames rendered {r.frames_rendered if r else 0}")
    return 0


def _handler(args: argparse.Namespace) -> int:
    from dm1.sim.config import CameraSpec, TwinConfig
    from dm1.sim.twin import Twin

    problem = _usage_problem(args) or (None if args.no_ros else _ros_parameter_problem(args))
    if problem is not None:
        print(f"dm1 sim: error: {problem}", file=sys.stderr)
        return 2
    work = (lambda tw: _run_expert(tw, args)) if args.expert else (lambda tw: _run_for(tw, args.seconds))
    names = () if args.no_cameras else ("front", "wrist")
    cams = {n: CameraSpec(width=args.width, height=args.height, fps=args.fps) for n in names}
    try:  # the twin node builds the same config from its parameters: one check for both paths, up front
        cfg = TwinConfig(host=args.host, cameras=cams, seed=args.seed, realtime=not args.fast)
    except ValueError as exc:
        print(f"dm1 sim: error: {exc}", file=sys.stderr)
        return 2
    if args.no_ros:
        with Twin(cfg) as twin:
            print(f"twin up: robot host {twin.robot_host}", flush=True)
            return work(twin)

    from dm1_sim.runner import run_with_twin_node  # the ROS side lives in dm1_sim

    return run_with_twin_node(_ros_args(args), work)


def register(sub: argparse._SubParsersAction) -> None:
    """Add `dm1 sim`."""
    p = sub.add_parser(
        "sim",
        help="run the franky-sim digital twin",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--no-ros", action="store_true", help="run the twin without its ROS node")
    p.add_argument(
        "--no-cameras", action="store_true", help="render nothing (faster; with ROS: no camera topics)"
    )
    p.add_argument("--expert", action="store_true", help="run the scripted Lift expert through franky")
    p.add_argument(
        "--episodes", type=positive_int, default=None, help="expert episodes (--expert; default 10)"
    )
    p.add_argument(
        "--seconds",
        type=non_negative_float,
        default=None,
        help="simulated seconds to run (0 = until Ctrl-C; default 0; not with --expert)",
    )
    p.add_argument(
        "--max-episode-s",
        type=positive_float,
        default=None,
        help="sim-time limit of one expert episode (--expert; default 20)",
    )
    p.add_argument(
        "--min-success",
        type=fraction,
        default=None,
        help="exit 1 if the expert's success rate is lower (--expert; default 0)",
    )
    p.add_argument(
        "--host",
        type=loopback_host,
        default=None,
        help="loopback address for franky-sim (default: first free)",
    )
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument(
        "--width", type=image_side, default=96, help=f"camera image width (1..{MAX_IMAGE_SIZE} px)"
    )
    p.add_argument(
        "--height", type=image_side, default=96, help=f"camera image height (1..{MAX_IMAGE_SIZE} px)"
    )
    p.add_argument("--fps", type=positive_float, default=20.0, help="camera frames per simulated second")
    p.add_argument("--fast", action="store_true", help="do not pace the simulation to wall time")
    p.set_defaults(func=_handler)


if __name__ == "__main__":
    from dm1.cli import main

    sys.exit(main(["sim", *sys.argv[1:]]))
