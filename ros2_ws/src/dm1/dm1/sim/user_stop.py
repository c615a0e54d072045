"""The FR3's user stop (the external activation device) on the twin.

franky-sim has no user stop: its robot server accepts every command and always acknowledges an error recovery.
`UserStop` gives one franky-sim robot server the real arm's answers while the stop is pressed, so franky and
libfranka take their normal protocol paths:
- a running motion is aborted with `kEmergencyAborted` (libfranka: `ControlException` "User Stop pressed!");
  the twin applies this in its physics thread, like a reflex (`dm1.sim.reflex.abort_running_motion`);
- a new motion is rejected with `kCommandNotPossibleRejected` (libfranka: `CommandException`);
- an automatic error recovery is aborted with `kEmergencyAborted` (libfranka: `CommandException` "User Stop
  pressed!"), so a recovery succeeds only once the stop is released.
franky-sim's reported robot mode is not changed (it derives it from the motion state).
"""

from __future__ import annotations

from typing import Any


class UserStop:
    """Press / release the user stop of one franky-sim robot server (`SimulationServer.robot_servers[i]`).

    Replaces that server's handlers for Move and AutomaticErrorRecovery with ones that answer as a stopped FR3
    while `pressed`; other servers (other twins in the same process) are not touched.
    """

    def __init__(self, robot_server: Any) -> None:
        from franky_sim.franka_robot_protocol import (
            AutomaticErrorRecoveryCommand,
            AutomaticErrorRecoveryStatus,
            MoveCommand,
            MoveStatus,
            RobotCommand,
        )

        self.pressed = False
        #: the move status a running motion is aborted with while pressed (`abort_running_motion`)
        self.abort_status = MoveStatus.kEmergencyAborted
        handlers = robot_server._FrankaServer__command_class_map  # franky-sim's per-server dispatch table
        handlers[RobotCommand.kMove] = self._refusing(MoveCommand, MoveStatus.kCommandNotPossibleRejected)
        handlers[RobotCommand.kAutomaticErrorRecovery] = self._refusing(
            AutomaticErrorRecoveryCommand, AutomaticErrorRecoveryStatus.kEmergencyAborted
        )

    def _refusing(self, command: type, status: int) -> type:
        """`command` answering `status` instead of running while the stop is pressed."""
        stop = self

        class WhileUserStopped(command):  # type: ignore[misc, valid-type]
            def handle(self, server: Any) -> None:
                if stop.pressed:
                    self.reply(status)
                    return
                super().handle(server)

        WhileUserStopped.__name__ = f"{command.__name__}WhileUserStopped"
        return WhileUserStopped
