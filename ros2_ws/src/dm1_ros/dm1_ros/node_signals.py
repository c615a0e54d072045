"""How a node process ends on Ctrl-C / SIGTERM: through rclpy's context shutdown, never mid-binding.

rclpy's own signal handler shuts the context down (so `spin` ends with `ExternalShutdownException`) and
then chains to the Python handler, which by default raises KeyboardInterrupt wherever the main thread is,
possibly inside rclpy's pybind11 bindings (converting a taken message), where it comes out as
`RuntimeError: Unable to convert call argument '0'` and the node exits 1 instead of 0. Under
`stopped_by_signals` the Python handler only records the signal (`dm1.interrupts`), so the stop arrives
as the context shutdown alone; a second signal still raises at once (a stuck node can be interrupted).

rclpy's handler wakes the executor (a guard condition) and shuts the context down a moment later; woken before
the shutdown, `executor.spin()` waits again, and a node whose callbacks all stopped (sim-time timers, once
the twin's /clock stops) never wakes again: the first Ctrl-C did nothing. `spin_until_stopped` spins with a
wall-clock wake-up and ends on the recorded signal or the shut-down context, whichever it sees first.

    def main(args=None) -> int:
        with stopped_by_signals():      # before rclpy.init: rclpy chains to the handler installed here
            rclpy.init(args=args)
            ...
            spin_until_stopped(executor, node)
        return 0
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import NoReturn

from dm1.interrupts import deferred_interrupts, requested
from rclpy.clock import Clock, ClockType
from rclpy.executors import Executor, ExternalShutdownException
from rclpy.node import Node

WAKE_S = 0.2  # longest wall-clock wait of `spin_until_stopped` between two looks at a received signal


def wall_clock() -> Clock:
    """The steady clock, for timers that must run while the node's simulated clock stands still."""
    return Clock(clock_type=ClockType.STEADY_TIME)


def spin_until_stopped(executor: Executor, node: Node, wake_s: float = WAKE_S) -> None:
    """Spin `executor` until SIGINT/SIGTERM (under `stopped_by_signals`) or the context's shutdown.

    A timer on the wall clock (added to `node`) wakes the executor every `wake_s` s, so the stop is seen
    within that time even when no other callback runs; the shut-down context ends it with
    `ExternalShutdownException`, which `stopped_by_signals` takes as the stop.
    """
    node.create_timer(wake_s, lambda: None, clock=wall_clock())
    while not requested():
        executor.spin_once()


def exit_after_shutdown(code: int) -> NoReturn:
    """End the process with `code` once rclpy has shut down, skipping Python's finalization and the C++
    static destructors behind it.

    Native teardown at process exit (DDS participants and readers, onnxruntime's thread pools) crashed
    with SIGSEGV now and then (rmw_fastrtps issue 761 shows the same, with `quick_exit` as the fix): a
    policy node that had refused its model exited -11 instead of 1 in one of three
    full test-suite runs (not reproduced in 60 runs alone).
    Everything dm1 owns is closed by then; only stdio and `logging` are flushed here.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


@contextlib.contextmanager
def stopped_by_signals() -> Iterator[None]:
    """Record SIGINT/SIGTERM instead of raising; end the block quietly when a signal stopped it.

    Inside the block, `ExternalShutdownException` (the context shut down by a signal) and any other
    exception raised after a signal was received (e.g. a publisher created on the shut-down context while
    the node was still starting) end the block without error; an exception with no signal behind it
    propagates. A second signal raises KeyboardInterrupt, which ends the block quietly too.
    """
    with deferred_interrupts():
        try:
            yield
        except (ExternalShutdownException, KeyboardInterrupt):
            pass
        except Exception:
            if not requested():
                raise


def run_node(
    name: str,
    args: list[str] | None,
    make_node: Callable[[], Node],
    start: Callable[[Node], int | None] | None = None,
    close: Callable[[Node], None] | None = None,
) -> int:
    """Run one node on a `SingleThreadedExecutor` until SIGINT/SIGTERM or rclpy's shutdown (returns 0).

    `make_node()` raising ValueError (a parameter out of its range) prints `<name>: bad configuration: ...`
    and returns 2. `start(node)` runs before the spin; a code it returns ends the run with that code.
    On the way out, whatever ended the run, `close(node)` and then `node.destroy_node()` run. rclpy is
    shut down when this returns (`dm1_ros.params.init_ros`; bad `--ros-args` exit with 2 there).
    """
    from rclpy.executors import SingleThreadedExecutor

    from dm1_ros.params import init_ros

    with stopped_by_signals(), init_ros(name, args):
        executor = SingleThreadedExecutor()  # before the node: see dm1_sim.twin_node.main
        try:
            node = make_node()
        except ValueError as exc:
            print(f"{name}: bad configuration: {exc}", file=sys.stderr)
            return 2
        with contextlib.ExitStack() as clean_up:  # last to first, each one whatever the others do
            clean_up.callback(node.destroy_node)
            if close is not None:
                clean_up.callback(close, node)
            if start is not None and (code := start(node)) is not None:
                return code
            executor.add_node(node)
            spin_until_stopped(executor, node)
    return 0
