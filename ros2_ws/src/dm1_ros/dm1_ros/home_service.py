"""`/dm1/controller/home` (std_srvs/Trigger) for the controller node, on a side node with its own thread.

A home move blocks for seconds (a franky joint motion, bounded by `HOME_MOVE_TIMEOUT_S`), so its service lives
on a side node spun by its own executor thread: the controller's executor keeps publishing `/joint_states` and
its status meanwhile, while its control ticks and chunks are skipped (`dm1.control.executor_gate`).
"""

from __future__ import annotations

import faulthandler
from typing import Any

import rclpy
from dm1.control.franky_backend import HOME_MOVE_TIMEOUT_S
from rclpy.executors import SingleThreadedExecutor
from std_srvs.srv import Trigger

from dm1_ros.params import freeze_parameters
from dm1_ros.spin_thread import SpinThread


class HomeService:
    """The home service of `controller` (a node with `gate`, an `ExecutorGate`, and `publish_status()`)."""

    def __init__(self, controller: Any) -> None:
        self.controller = controller
        self.node = rclpy.create_node("controller_node_home", use_global_arguments=False)
        freeze_parameters(self.node, ("use_sim_time",))  # as the controller's own
        self.node.create_service(Trigger, "/dm1/controller/home", self._on_home)
        self._spin: SpinThread | None = None

    def start(self) -> None:
        executor = SingleThreadedExecutor()
        executor.add_node(self.node)
        self._spin = SpinThread(executor, "controller-home").start()

    def stop(self) -> None:
        """Stop the side thread (stop the robot first: that ends a home move it may be waiting on)."""
        if self._spin is not None:
            self._spin.stop()
        self.node.destroy_node()

    def _on_home(self, _req, res):
        # The move is bounded; should anything else on the way hang, every thread's stack goes to stderr.
        faulthandler.dump_traceback_later(HOME_MOVE_TIMEOUT_S + 30.0)
        try:
            self.controller.gate.home()  # ticks and chunks are skipped until the move is done
            res.success, res.message = True, "homed"
        except Exception as exc:  # noqa: BLE001 - reported to the caller
            res.success, res.message = False, str(exc)
        finally:
            faulthandler.cancel_dump_traceback_later()
        self.controller.publish_status()
        return res
