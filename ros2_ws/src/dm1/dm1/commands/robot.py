"""`dm1 robot check`: the FCI link's communication check without ROS (Franka's communication_test, in franky).

Connects to the robot (or a franky-sim host with `--sim`), holds the arm where it stands for `--seconds` while
streaming that pose at 100 Hz, and reports libfranka's command success rate (fraction of the last 100 control
commands that reached the robot) and how far the held arm moved. The controller node runs the same check for
`comm_check_s` (controller.yaml) each time it starts. Exit code 0 = passed, 1 = failed, 2 = no connection.
The arm must be free to hold its pose: FCI active, joints unlocked, nothing pressing on it.
"""

from __future__ import annotations

import argparse
import json
import sys


def _handler(args: argparse.Namespace) -> int:
    from dm1.control.link_check import run_comm_check

    try:
        from dm1.control.franky_backend import FrankyBackend

        backend = FrankyBackend(args.robot_ip, mode=args.mode, gripper=False, realtime=not args.sim)
    except Exception as exc:  # noqa: BLE001 - franky's connection errors: say which robot and why
        why = f"{type(exc).__name__}: {exc}"
        print(f"dm1 robot check: cannot connect to {args.robot_ip}: {why}", file=sys.stderr)
        return 2
    try:
        result = run_comm_check(
            backend, args.mode, args.seconds, min_success_rate=args.min_success_rate, max_drift=args.max_drift
        )
    finally:
        backend.close()
    if args.json:
        print(json.dumps({"robot_ip": args.robot_ip, **result.to_dict()}))
    else:
        print(result.summary())
    return 0 if result.passed else 1


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, found {text}")
    return value


def _check_seconds(text: str) -> float:
    value = float(text)
    if not value >= 0.5:
        raise argparse.ArgumentTypeError(f"expected at least 0.5 s (0.2 s warm-up + samples), found {text}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    """Add `dm1 robot`."""
    p = sub.add_parser("robot", help="robot checks without ROS: communication check", description=__doc__)
    p.add_argument("action", choices=["check"])
    p.add_argument("--robot-ip", required=True, help="FCI address of the robot (or a franky-sim host)")
    p.add_argument("--sim", action="store_true", help="a franky-sim host (libfranka real-time not enforced)")
    p.add_argument("--seconds", type=_check_seconds, default=5.0, help="how long to hold and sample (s)")
    p.add_argument("--mode", choices=["cartesian", "joint"], default="cartesian", help="what to stream")
    p.add_argument("--min-success-rate", type=_positive, default=0.95, help="lowest acceptable command rate")
    p.add_argument("--max-drift", type=_positive, default=0.005, help="m (cartesian) or rad (joint)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_handler)
