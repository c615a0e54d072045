"""The controller node's parameters as plain tables (ROS-free, so they are testable and documented here).

Each table maps ``name -> (default, description, (lo, hi) or None)``; `dm1_ros.params.declare_table` turns
it into typed, bounded ROS parameters. Safety limits are declared as ``safety.<field>`` of `SafetyLimits`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from dm1.control.limits import SCALAR_UPPER_BOUNDS, SafetyLimits
from dm1.control.link_check import MIN_COMMAND_SUCCESS_RATE

#: QoS on the action-chunk topics (wall clock; ms): the policy node offers them, the controller requests them
#: on a watch subscription (`dm1_ros.chunk_qos`). A publisher that offers a deadline and misses it, or whose
#: liveliness lapses (process killed or frozen), holds the arm at once: a second path beside the chunk
#: watchdog (`SafetyLimits.chunk_timeout_s`, node clock). 0 = not offered / not requested.
CHUNK_DEADLINE_MS = 100.0
CHUNK_LIVELINESS_LEASE_MS = 1000.0

CONTROLLER_PARAMETERS: dict[str, tuple[Any, str, tuple[float, float] | None]] = {
    "robot_ip": ("", "FCI / franky-sim host", None),
    "mode": ("cartesian", "cartesian (ee_position chunks) | joint (joint_position chunks)", None),
    "control_rate_hz": (100.0, "executor tick rate (node clock)", (1.0, 1000.0)),
    "joint_state_rate_hz": (200.0, "/joint_states rate (node clock)", (1.0, 1000.0)),
    "relative_dynamics_factor": (0.2, "franky dynamics scale for home moves", (0.01, 1.0)),
    "realtime_config": (
        "auto",
        "libfranka RT: enforce | ignore | auto (ignore only with use_sim_time)",
        None,
    ),
    "rt_priority": (
        10,
        "SCHED_FIFO priority of the node's executor thread, below franky's control thread (99): control "
        "ticks, holds and chunk hand-overs preempt the policy and the cameras; 0 = normal scheduling",
        (0, 98),
    ),
    "comm_check_s": (
        1.0,
        "communication check at start (Franka's communication_test through franky): hold the arm where it "
        "stands this long and refuse to start if commands are lost or the arm drifts; 0 = skip",
        (0.0, 60.0),
    ),
    "min_command_success_rate": (
        MIN_COMMAND_SUCCESS_RATE,
        "libfranka command success rate below which the start check fails and the status warns",
        (0.0, 1.0),
    ),
    "chunk_deadline_ms": (
        CHUNK_DEADLINE_MS,
        "QoS deadline requested on the action topics (wall clock): a publisher offering one that misses it "
        "holds the arm; 0 = off. Not requested with use_sim_time (the chunks then follow simulated time)",
        (0.0, 10000.0),
    ),
    "single_commander_window_s": (
        0.5,
        "one commander at a time: a publisher's motion chunk after another publisher's, which came after its "
        "own previous one, all within this many seconds, latches a fault (two policies, or a policy and "
        "teleop, on one arm); 0 = off, for a deliberate multiplexer in front of the controller",
        (0.0, 60.0),
    ),
    "chunk_liveliness_lease_ms": (
        CHUNK_LIVELINESS_LEASE_MS,
        "QoS liveliness lease requested on the action topics: a publisher offering one whose liveliness "
        "lapses (killed, frozen) holds the arm; 0 = off",
        (0.0, 60000.0),
    ),
}

#: ROS-side ranges of the scalar `safety.` parameters (`SafetyLimits` validates every field itself, the
#: arrays too): from 0 (or 1) to `SCALAR_UPPER_BOUNDS`, so a runtime tool shows the range it accepts.
SAFETY_BOUNDS: dict[str, tuple[float, float]] = {
    **{
        name: (1 if name == "max_consecutive_late" else 0.0, upper)
        for name, upper in SCALAR_UPPER_BOUNDS.items()
    },
    "overspeed_factor": (1.0, SCALAR_UPPER_BOUNDS["overspeed_factor"]),
    "max_overruns_per_s": (0, 1000),  # 0 = off
    "min_streaming_success_rate": (0.0, 1.0),  # 0 = off
    "gripper_close_above": (0.0, 1.0),
    "gripper_open_below": (0.0, 1.0),
}

#: `SafetyLimits` fields with their defaults (declared under the ``safety.`` prefix).
SAFETY_PARAMETERS: dict[str, tuple[Any, str, tuple[float, float] | None]] = {
    f.name: (f.default, f"SafetyLimits.{f.name}", SAFETY_BOUNDS.get(f.name))
    for f in dataclasses.fields(SafetyLimits)
}


def check_controller_parameters(values: dict[str, Any], use_sim_time: bool) -> bool:
    """Validate the node's parameter values; returns whether libfranka's real-time mode is enforced.

    Raises ValueError naming the parameter, the expected and the found value.
    """
    if not values["robot_ip"]:
        raise ValueError("parameter robot_ip: expected the FCI / franky-sim host, found ''")
    if values["mode"] not in ("cartesian", "joint"):
        raise ValueError(f"parameter mode: expected cartesian | joint, found {values['mode']!r}")
    rt = values["realtime_config"]
    if rt not in ("auto", "enforce", "ignore"):
        raise ValueError(f"parameter realtime_config: expected auto | enforce | ignore, found {rt!r}")
    return rt == "enforce" or (rt == "auto" and not use_sim_time)


def requested_chunk_qos_ms(values: dict[str, Any], use_sim_time: bool) -> tuple[float, float]:
    """The QoS deadline and liveliness lease (ms; 0 = not requested) the controller requests on the chunk
    topics. Both run on the wall clock: under simulated time the chunks keep sim time, so no deadline then."""
    deadline_ms = 0.0 if use_sim_time else values["chunk_deadline_ms"]
    return deadline_ms, values["chunk_liveliness_lease_ms"]
