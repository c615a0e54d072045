"""`dm1 operator <action>`: the operator's actions on a running graph (no `ros2` CLI needed).

`status` prints the controller's state and the policy node's lifecycle state; `home` and `recover` call the
controller's services (`home` is refused while the policy is active: it would drive the arm again right after
the move); `activate` / `deactivate` change the policy node's lifecycle state. After a reflex or
another latched fault: clear the cause, `dm1 operator recover`, then `dm1 operator activate` (the policy node
deactivates itself on a controller fault and does not resume on its own). Exit code 0 = done, 1 = refused,
2 = the graph did not answer.
"""

from __future__ import annotations

import argparse
import sys

ACTIONS = ("status", "home", "recover", "activate", "deactivate")  # carried out by dm1_ros.operator_actions


def _handler(args: argparse.Namespace) -> int:
    from dm1_ros.operator_actions import main_action

    from dm1.interrupts import deferred_interrupts

    with deferred_interrupts():
        try:
            result = main_action(args.action, args.timeout, args.policy_node)
        except TimeoutError as exc:
            print(f"dm1 operator {args.action}: {exc}", file=sys.stderr)
            return 2
    print(result.message)
    return 0 if result.ok else 1


def register(sub: argparse._SubParsersAction) -> None:
    """Add `dm1 operator`."""
    p = sub.add_parser(
        "operator", help="operator actions: status, home, recover, activate", description=__doc__
    )
    p.add_argument("action", choices=ACTIONS)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each answer (home: ≥ 60)")
    p.add_argument("--policy-node", default="policy_node", help="name of the policy lifecycle node")
    p.set_defaults(func=_handler)
