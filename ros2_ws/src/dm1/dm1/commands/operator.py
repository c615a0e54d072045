"""`dm1 operator <action>`: the operator's actions on a running graph (no `ros2` CLI needed).

`status` prints the controller's state and the policy node's lifecycle state; `home` and `recover` call the
controller's services (`home` is refused while the policy is active, or while the controller executes
anyone's chunks: they would drive the arm again right after the move); `activate` / `deactivate` change the
policy node's lifecycle state. After a reflex or another latched fault: clear the cause, `dm1 operator
recover`, then `dm1 operator activate` (the policy node deactivates itself on a controller fault and does not
resume on its own). `activate` / `deactivate` of a policy already in that state do nothing (exit code 0).
`status --json` prints the status values as one JSON object. Exit code 0 = done, 1 = refused, 2 = the graph
did not answer, or an argument is bad (checked before anything is asked: node names, the drill spec).

`drill --drill SPEC` checks the safety chain with the arm under policy control (on the twin or the robot):
it starts a fault drill in the active policy node for `--duration` seconds (`freeze_camera:<name>`,
`nan_output`, `stall_inference[:<s>]`, `silence`, `late_chunks`; `dm1.policy.drill`), records
`/joint_states` and reports how soon the arm stood still. `--drill all` runs each kind but `late_chunks` in
turn (a frozen camera once per camera of the model) and prints one line each. Exit code 0 = the arm held
within `--max-hold`, 1 = it did not, or it was not moving before the drill (nothing shown). The drill ends by
itself; the policy then drives the arm again. `late_chunks` (chunks sent only once their actions are past)
must end in a latched controller fault ("over budget"): recover, then activate.

`record EVENT` sends the teleop recorder of `dm1 launch --record` an episode event through its Trigger
services (`/teleop/<event>`): `start`, `stop_save`, `discard`, `mark_success`, `mark_failure`, the keyboard's
n, m, x, y and u; for devices without those keys (scripted, spacemouse, gamepad).
"""

from __future__ import annotations

import argparse
import re
import sys

from dm1.commands.arg_types import positive_float
from dm1.teleop.device_interface import EVENTS

ACTIONS = ("status", "home", "recover", "activate", "deactivate")  # carried out by dm1_ros.operator_actions
ACTION_HELP = {
    "status": "the controller's state (and fault) and the policy node's lifecycle state",
    "home": "move the arm to its home pose (refused while anyone commands it)",
    "recover": "clear the controller's latched fault (the policy stays inactive)",
    "activate": "activate the policy node (nothing to do when it is active)",
    "deactivate": "deactivate the policy node (nothing to do when it is not active)",
}
IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"  # a ROS name token, a camera name
NODE_NAME = re.compile(rf"/?(?:{IDENTIFIER}/)*{IDENTIFIER}")


def ros_node_name(text: str) -> str:
    """A ROS node name, optionally in a namespace (`policy_node`, `/robot1/policy_node`), without its leading
    `/` (the callers build `/<name>/<service>`); otherwise `expected ..., found <text>` (before: rclpy's
    InvalidServiceNameException traceback)."""
    if not NODE_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"expected a ROS node name like policy_node or robot1/policy_node ({IDENTIFIER} per part), "
            f"found {text!r}"
        )
    return text.lstrip("/")


def drill_spec(text: str) -> str:
    """`all` or a drill spec the policy node accepts, checked by the node's own parser
    (`dm1.policy.drill.parse_drill`); a frozen camera's name is checked here as an identifier, and against
    the model's cameras by the node."""
    from dm1.policy.drill import parse_drill

    if text == "all":
        return text
    kind, _, camera = text.strip().partition(":")
    if kind == "freeze_camera" and not re.fullmatch(IDENTIFIER, camera):
        raise argparse.ArgumentTypeError(
            f"drill freeze_camera: expected a camera name ({IDENTIFIER}) like front, found {camera!r}"
        )
    try:
        drill = parse_drill(text, [camera], 0.0, 1.0)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (or 'all': each drill in turn)") from None
    if drill is None:
        raise argparse.ArgumentTypeError(f"expected a drill like nan_output or all, found {text!r}")
    return text


def drill_duration(text: str) -> float:
    """Seconds within the policy node's bounds of `drill_duration_s`; otherwise `expected ..., found ...`."""
    from dm1.policy.drill import DRILL_PARAMETERS

    lo, hi = DRILL_PARAMETERS["drill_duration_s"][2] or (0.0, float("inf"))
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not lo <= value <= hi:  # NaN fails too
        raise argparse.ArgumentTypeError(f"expected a number of seconds in [{lo:g}, {hi:g}], found {text}")
    return value


def _drill(args: argparse.Namespace) -> int:
    import json

    from dm1_ros.operator_actions import main_drill

    results = main_drill(args)
    rows = [{"passed": ok, "message": message, **(r.to_dict() if r else {})} for ok, message, r in results]
    if args.json:
        print(json.dumps(rows if args.drill == "all" else rows[0]))
    else:
        print("\n".join(row["message"] for row in rows))
        if args.drill == "all":
            print(f"{sum(row['passed'] for row in rows)} of {len(rows)} drills held")
    return 0 if all(row["passed"] for row in rows) else 1


def _handler(args: argparse.Namespace) -> int:
    import json

    from dm1_ros.operator_actions import main_action

    from dm1.interrupts import deferred_interrupts

    with deferred_interrupts():
        try:
            if args.action == "drill":
                return _drill(args)
            if args.action == "record":
                from dm1_ros.operator_actions import main_record

                result = main_record(args.event, args.timeout, args.teleop_node)
            else:
                result = main_action(args.action, args.timeout, args.policy_node)
        except TimeoutError as exc:
            print(f"dm1 operator {args.action}: {exc}", file=sys.stderr)
            return 2
    print(json.dumps({"ok": result.ok, **result.values}) if getattr(args, "json", False) else result.message)
    return 0 if result.ok else 1


def register(sub: argparse._SubParsersAction) -> None:
    """Add `dm1 operator <action>`: one subparser per action, each with only the options it uses (an option
    of another action is an error, not silently ignored)."""
    p = sub.add_parser(
        "operator",
        help="operator actions: status, home, recover, activate, deactivate, drill, record",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--timeout", type=positive_float, default=10.0, help="seconds to wait for each answer (home: ≥ 60)"
    )
    common.add_argument(
        "--policy-node", type=ros_node_name, default="policy_node", help="name of the policy lifecycle node"
    )
    actions = p.add_subparsers(dest="action", metavar="<action>", required=True)
    for name, text in ACTION_HELP.items():
        a = actions.add_parser(name, parents=[common], help=text, description=text)
        if name == "status":
            a.add_argument("--json", action="store_true", help="print the status values as one JSON object")
    text = "a fault drill on the active policy, judged from /joint_states"
    d = actions.add_parser("drill", parents=[common], help=text, description=text)
    d.add_argument(
        "--drill",
        type=drill_spec,
        required=True,
        help="freeze_camera:<name> | nan_output | stall_inference[:<s>] | silence | late_chunks | all",
    )
    d.add_argument("--duration", type=drill_duration, default=1.0, help="how long the drill lasts (s)")
    d.add_argument(
        "--max-hold", type=positive_float, default=0.5, help="the arm must stand still within this (s)"
    )
    d.add_argument(
        "--still-speed", type=positive_float, default=0.02, help="standing still: every joint below (rad/s)"
    )
    d.add_argument("--json", action="store_true", help="print the drill's report as JSON")
    text = "an episode event for the teleop recorder (dm1 launch --record): start, save, discard, mark"
    r = actions.add_parser("record", help=text, description=text)
    r.add_argument(
        "event",
        choices=EVENTS,
        help="start | stop_save (stop and save) | discard | mark_success | "
        "mark_failure (the keyboard's n, m, x, y, u)",
    )
    r.add_argument("--timeout", type=positive_float, default=10.0, help="seconds to wait for the answer")
    r.add_argument(
        "--teleop-node", type=ros_node_name, default="teleop", help="name of the teleop recorder node"
    )
    p.set_defaults(func=_handler)
