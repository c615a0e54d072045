"""`dm1 robot host` and `dm1 robot check`: is this PC and its FCI link ready for the arm? No ROS needed.

`dm1 robot host [--robot-ip IP]` reads the workstation's set-up (PREEMPT_RT kernel, real-time and memlock
limits, CPU governor, the port to the robot, DDS, onnxruntime providers; `dm1.control.host_check`) and moves
nothing. Exit code 0 = nothing failed, 1 = a check failed.

`dm1 robot check` runs those host checks, then the FCI link's communication check (Franka's
communication_test, in franky): it connects to the robot (or a franky-sim host with `--sim`), holds the arm
where it stands for `--seconds` while streaming that pose at 100 Hz, and reports libfranka's command success
rate (fraction of the last 100 control commands that reached the robot) and how far the held arm moved. The
controller node runs the same checks each time it starts (host: warnings only, on the robot; link: for
`comm_check_s`, controller.yaml). Exit code 0 = passed, 1 = the link or a host check
failed, 2 = no connection. With `--sim` (franky-sim) host checks warn and never fail.
The arm must be free to hold its pose: FCI active, joints unlocked, nothing pressing on it.
"""

from __future__ import annotations

import argparse
import json
import sys

from dm1.commands.arg_types import positive_float


def _host(args: argparse.Namespace) -> int:
    from dm1.control.host_check import check_host

    report = check_host(args.robot_ip, sim=args.sim)
    as_json = json.dumps({"robot_ip": args.robot_ip, "host": report.to_dict()})
    print(as_json if args.json else report.summary())
    return 0 if report.passed else 1


def _handler(args: argparse.Namespace) -> int:
    if args.action == "host":
        return _host(args)
    if args.robot_ip is None:
        print("dm1 robot check: --robot-ip is required (the robot's FCI address)", file=sys.stderr)
        return 2
    from dm1.control.host_check import check_host
    from dm1.control.link_check import run_comm_check

    host = check_host(args.robot_ip, sim=args.sim)
    if not args.json:
        print(host.summary(), flush=True)
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
        print(json.dumps({"robot_ip": args.robot_ip, **result.to_dict(), "host": host.to_dict()}))
    else:
        print(result.summary())
    return 0 if result.passed and host.passed else 1


def _check_seconds(text: str) -> float:
    value = float(text)
    if not value >= 0.5:
        raise argparse.ArgumentTypeError(f"expected at least 0.5 s (0.2 s warm-up + samples), found {text}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    """Add `dm1 robot`."""
    p = sub.add_parser(
        "robot",
        help="checks without ROS: this PC's set-up (host) and the FCI link (check)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", choices=["check", "host"], help="check: host checks + communication check")
    p.add_argument("--robot-ip", help="FCI address of the robot (or a franky-sim host); required for check")
    p.add_argument("--sim", action="store_true", help="a franky-sim host (libfranka real-time not enforced)")
    p.add_argument("--seconds", type=_check_seconds, default=5.0, help="how long to hold and sample (s)")
    p.add_argument("--mode", choices=["cartesian", "joint"], default="cartesian", help="what to stream")
    p.add_argument(
        "--min-success-rate", type=positive_float, default=0.95, help="lowest acceptable command rate"
    )
    p.add_argument("--max-drift", type=positive_float, default=0.005, help="m (cartesian) or rad (joint)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_handler)
