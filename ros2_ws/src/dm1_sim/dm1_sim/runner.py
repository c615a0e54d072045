"""Run the twin node in-process while other work (e.g. the expert) uses its `Twin` (for `dm1 sim`)."""

from __future__ import annotations

from collections.abc import Callable

import rclpy
from dm1.sim.twin import Twin
from dm1_ros.spin_thread import SpinThread
from rclpy.executors import MultiThreadedExecutor

from dm1_sim.twin_node import TwinNode


def run_with_twin_node(ros_args: list[str], work: Callable[[Twin], int]) -> int:
    """Start `TwinNode` with `ros_args` (`--ros-args -p ...`), spin it on a thread; return `work(node.twin)`.

    Returns what `work` returns; the node and rclpy are shut down afterwards. The spinning thread is
    joined before its executor shuts down (`SpinThread`: shutting an executor down under a thread still
    in `spin()` can crash the process).
    """
    rclpy.init(args=["dm1_sim", *ros_args])
    node = TwinNode()
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    spinner = SpinThread(executor, "dm1-twin-ros").start()
    try:
        return work(node.twin)
    finally:
        spinner.stop()
        node.destroy_node()
        rclpy.try_shutdown()
