"""How a node process ends on Ctrl-C / SIGTERM: through rclpy's context shutdown, never mid-binding.

rclpy's own signal handler shuts the context down (so `spin` ends with `ExternalShutdownException`) and
then chains to the Python handler, which by default raises KeyboardInterrupt wherever the main thread is,
possibly inside rclpy's pybind11 bindings (converting a taken message), where it comes out as
`RuntimeError: Unable to convert call argument '0'` and the node exits 1 instead of 0. Under
`stopped_by_signals` the Python handler only records the signal (`dm1.interrupts`), so the stop arrives
as the context shutdown alone; a second signal still raises at once (a stuck node can be interrupted).

    def main(args=None) -> int:
        with stopped_by_signals():      # before rclpy.init: rclpy chains to the handler installed here
            rclpy.init(args=args)
            ...
            executor.spin()
        return 0
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from dm1.interrupts import deferred_interrupts, requested
from rclpy.executors import ExternalShutdownException


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
