"""`dm1 operator <action>`: the operator's actions on a running graph (no `ros2` CLI needed).

`status` prints the controller's state and the policy node's lifecycle state; `home` and `recover` call the
controller's services (`home` is refused while the policy is active, or while the controller executes
anyone's chunks: they would drive the arm again right after the move); `activate` / `deactivate` change the
policy node's lifecycle state. After a reflex or another latched fault: clear the cause, `dm1 operator
recover`, then `dm1 operator activate` (the policy node deactivates itself on a controller fault and does not
resume on its own). Exit code 0 = done, 1 = refused, 2 = the graph did not answer.

`drill --drill SPEC` checks the safety chain with the arm under policy control (on the twin or the robot):
it starts a fault drill in the active policy node for `--duration` seconds (`freeze_camera:<name>`,
`nan_output`, `stall_inference[:<s>]`, `silence`, `late_chunks`; `dm1.policy.drill`), records
`/joint_states` and reports how soon the arm stood still. `--drill all` runs each kind but `late_chunks` in
turn (a frozen camera once per camera of the model) and prints one line each. Exit code 0 = the arm held
within `--max-hold`, 1 = it did not, or it was not moving before the drill (nothing shown). The drill ends by
itself; the policy then drives the arm again. `late_chunks` (chunks sent only once their actions are past)
must end in a latched controller fault ("over budget"): recover, then activate.
"""

from __future__ import annotations

import argparse
import sys

from dm1.commands.arg_types import positive_float

ACTIONS = ("status", "home", "recover", "activate", "deactivate")  # carried out by dm1_ros.operator_actions


def _drill(args: argparse.Namespace) -> int:
    import json

    from dm1_ros.operator_actions import main_drill

    if not args.drill:
        print(
            "dm1 operator drill: --drill is required (e.g. nan_output, freeze_camera:front)", file=sys.stderr
        )
        return 2
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
    from dm1_ros.operator_actions import main_action

    from dm1.interrupts import deferred_interrupts

    with deferred_interrupts():
        try:
            if args.action == "drill":
                return _drill(args)
            result = main_action(args.action, args.timeout, args.policy_node)
        except TimeoutError as exc:
            print(f"dm1 operator {args.action}: {exc}", file=sys.stderr)
            return 2
    print(result.message)
    return 0 if result.ok else 1


def register(sub: argparse._SubParsersAction) -> None:
    """Add `dm1 operator`."""
    p = sub.add_parser(
        "operator", help="operator actions: status, home, recover, activate, drill", description=__doc__
    )
    p.add_argument("action", choices=[*ACTIONS, "drill"])
    p.add_argument(
        "--timeout", type=positive_float, default=10.0, help="seconds to wait for each answer (home: ≥ 60)"
    )
    p.add_argument("--policy-node", default="policy_node", help="name of the policy lifecycle node")
    d = p.add_argument_group("drill")
    d.add_argument(
        "--drill",
        default="",
        help="freeze_camera:<name> | nan_output | stall_inference[:<s>] | silence | late_chunks | all",
    )
    d.add_argument("--duration", type=positive_float, default=1.0, help="how long the drill lasts (s)")
    d.add_argument(
        "--max-hold", type=positive_float, default=0.5, help="the arm must stand still within this (s)"
    )
    d.add_argument(
        "--still-speed", type=positive_float, default=0.02, help="standing still: every joint below (rad/s)"
    )
    d.add_argument("--json", action="store_true", help="print the drill's report as JSON")
    p.set_defaults(func=_handler)
