"""Run the twin node in-process while other work (e.g. the expert) uses its `Twin` (for `dm1 sim`)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import rclpy
from dm1.sim.twin import Twin
from rclpy.executors import MultiThreadedExecutor

from dm1_sim.twin_node import TwinNode


def run_with_twin_node(ros_args: list[str], work: Callable[[Twin], int]) -> int:
    """Start `TwinNode` with `ros_args` (`--ros-args -p ...`), spin it on a thread; return `work(node.twin)`.

    Returns what `work` returns; the node and rclpy are shut down afterwards.
    """
    rclpy.init(args=["dm1_sim", *ros_args])
    node = TwinNode()
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, name="dm1-twin-ros", daemon=True)
    spinner.start()
    try:
        return work(node.twin)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
