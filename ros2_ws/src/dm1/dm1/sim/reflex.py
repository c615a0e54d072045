"""Reflexes on the twin: franky-sim aborts the running motion the way a real FR3 reports a reflex.

franky-sim never trips reflexes by itself (a 0.6 m target jump, or a target 0.2 m below the floor, were just
tracked or pressed into the floor), so a fault drill needs one injected. `abort_running_motion` answers the
running motion with libfranka's `kReflexAborted` move status: franky then raises a genuine
`ControlException` through its normal protocol path, exactly as on the real arm. Call it from the physics
thread (a post-step callback), where franky-sim changes its motion state itself.
"""

from __future__ import annotations

from typing import Any


def abort_running_motion(server: Any, status: int | None = None) -> bool:
    """Abort the first robot's running motion of a franky-sim `SimulationServer` with move status `status`
    (default `kReflexAborted`; `kEmergencyAborted` is the user stop, `dm1.sim.user_stop`).

    Returns False (and changes nothing) when no motion is running: a reflex only happens in motion.
    """
    from franky_sim.franka_robot_protocol import MoveStatus, RobotCommand
    from franky_sim.franka_server import BaseCommand

    robot = server.robot_servers[0]
    motion_id = robot.current_motion_id
    if not motion_id:
        return False
    robot.stop_motion(send_preemption_signal=False)
    status = MoveStatus.kReflexAborted if status is None else status
    BaseCommand.send_response(robot._tcp_socket, RobotCommand.kMove, motion_id, status)
    robot.reset_current_motion_id()
    return True
