"""The home move of `ChunkExecutor.home`: open the gripper, move the joints home, wait for the fingers."""

from __future__ import annotations

import logging
import time

import numpy as np

from dm1.control.backend import RobotBackend

log = logging.getLogger("dm1.control.executor")  # the executor's log: its home move, as before the split

GRIPPER_OPEN_M = 0.07  # a gripper at least this wide counts as open (the Franka Hand opens to 0.08 m)


def move_home(
    backend: RobotBackend, q: np.ndarray | None, open_gripper: bool, gripper_timeout_s: float
) -> None:
    """`backend.home(q)` (blocking); with `open_gripper`, the gripper is opened first and the move ends once
    it is open (at least `GRIPPER_OPEN_M`), waiting at most `gripper_timeout_s` of wall time for it."""
    if open_gripper:
        backend.set_gripper(False)
    backend.home(q)
    if open_gripper:
        deadline = time.monotonic() + gripper_timeout_s
        while backend.read_state().gripper_width < GRIPPER_OPEN_M:
            if time.monotonic() > deadline:
                log.warning(
                    "home: gripper not open after %.1f s (something in the fingers?)", gripper_timeout_s
                )
                break
            time.sleep(0.01)
