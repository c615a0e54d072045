"""Publishing that never stalls the calling thread on another process's shared-memory lock.

Fast DDS delivers to a subscriber on the same host through that subscriber's shared-memory port, guarded by
an interprocess mutex; a process killed while it holds one (a publisher inside its push) leaves it held, and
every other writer to that port then waits Fast DDS's 1 s lock timeout ("owner died without unlocking?").
rmw_fastrtps publishes synchronously by default, so that wait happens inside `publish()`, and rclpy holds
the GIL throughout: the whole Python process stands still for a second. Measured here (a third publisher to
a subscriber whose other publisher was SIGKILLed in a tight loop): 4 of 50 kills stalled `publish()` for
997–1007 ms, synchronous; 0 of 30 (worst 6 ms) with asynchronous publication.

A second is too long for two processes: the controller (its control ticks and its watchdog run on the same
Python threads) and the twin (franky-sim steps the physics and answers libfranka from a Python thread, so a
1 s stall is libfranka's UDP timeout: a network fault). They publish asynchronously: `publish()` queues the
sample and a Fast DDS thread sends it (a stall there delays the samples, not the process). The policy node
keeps synchronous publication (lowest chunk latency; the controller's watchdog covers a stalled policy).
"""

from __future__ import annotations

import os

PUBLICATION_MODE_ENV = "RMW_FASTRTPS_PUBLICATION_MODE"


def publish_asynchronously() -> str:
    """Make this process's rmw_fastrtps publishers asynchronous, unless the environment already chose a mode;
    returns the mode in effect. Call before `rclpy.init` (the mode is read when the context starts)."""
    return os.environ.setdefault(PUBLICATION_MODE_ENV, "ASYNCHRONOUS")
