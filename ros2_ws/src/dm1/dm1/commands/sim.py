"""`dm1 sim`: run the franky-sim digital twin (with its ROS node, or alone), optionally with the expert.

Examples:
  dm1 sim                                  # twin node on ROS until Ctrl-C (controller connects to it)
  dm1 sim --no-ros --expert --episodes 50  # expert success rate, no ROS
  dm1 sim --no-ros --seconds 10            # just the twin: prints its real-time factor
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from dm1.commands.arg_types import fraction, non_negative_float, positive_float, positive_int


def _ros_args(args: argparse.Namespace) -> list[str]:
    params = {
        "seed": args.seed,
        "camera_width": args.width,
        "camera_height": args.height,
        "camera_fps": args.fps,
        "realtime": not args.fast,
    }
    if args.expert:  # the expert drives the arm from this process (franky's control thread included): the
        params.update(cpu_nice=0, cpu_idle=False)  # twin node's yield (SCHED_IDLE) would starve it too
    out = ["--ros-args"] + (["-p", f"host:={args.host}"] if args.host else [])
    for key, value in params.items():
        out += ["-p", f"{key}:={json.dumps(value) if isinstance(value, bool) else value}"]
    return out


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

    work = (lambda tw: _run_expert(tw, args)) if args.expert else (lambda tw: _run_for(tw, args.seconds))
    if args.no_ros:
        names = () if args.no_cameras else ("front", "wrist")
        cams = {n: CameraSpec(width=args.width, height=args.height, fps=args.fps) for n in names}
        cfg = TwinConfig(host=args.host, cameras=cams, seed=args.seed, realtime=not args.fast)
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
    p.add_argument("--no-cameras", action="store_true", help="render nothing (faster evals; --no-ros)")
    p.add_argument("--expert", action="store_true", help="run the scripted Lift expert through franky")
    p.add_argument("--episodes", type=positive_int, default=10, help="expert episodes (with --expert)")
    p.add_argument(
        "--seconds", type=non_negative_float, default=0.0, help="simulated seconds to run (0 = until Ctrl-C)"
    )
    p.add_argument(
        "--max-episode-s", type=positive_float, default=20.0, help="sim-time limit of one expert episode"
    )
    p.add_argument("--min-success", type=fraction, default=0.0, help="exit 1 if the success rate is lower")
    p.add_argument("--host", default=None, help="loopback address for franky-sim (default: first free)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=positive_int, default=96)
    p.add_argument("--height", type=positive_int, default=96)
    p.add_argument("--fps", type=positive_float, default=20.0, help="camera frames per simulated second")
    p.add_argument("--fast", action="store_true", help="do not pace the simulation to wall time")
    p.set_defaults(func=_handler)


if __name__ == "__main__":
    from dm1.cli import main

    sys.exit(main(["sim", *sys.argv[1:]]))
