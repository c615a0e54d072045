"""Ctrl-C / SIGTERM delivered at a safe point, for code that spins rclpy.

A Python signal handler runs between two bytecodes of the main thread, which may be inside rclpy's pybind11
bindings (e.g. converting a taken message). A KeyboardInterrupt raised there is swallowed by pybind11 and
comes out as `RuntimeError: Unable to convert call argument '0' to Python object`, so an interrupted
`dm1 eval` crashed instead of reporting its finished episodes. Here the handler only records the signal;
the drivers' spin loops (`dm1_ros.graph_client`) call `raise_if_requested()` between two spins, where a
KeyboardInterrupt propagates as one. A second signal before that raises at once (the user insists).

    with deferred_interrupts():
        while busy:
            spin_once(...)
            raise_if_requested()
"""

from __future__ import annotations

import contextlib
import re
import signal
from collections.abc import Iterator
from typing import Any

_pending: int | None = None  # the signal received and not yet raised


def _request(signum: int, _frame: Any) -> None:
    global _pending
    if _pending is not None:
        first, _pending = _pending, None
        raise KeyboardInterrupt(_second_signal(first, signum))
    _pending = signum


def _second_signal(first: int, second: int) -> str:
    """The second signal's interrupt: "received SIGINT twice", or "received SIGINT, then SIGTERM"."""
    if first == second:
        return f"received {signal.Signals(second).name} twice"
    return f"received {signal.Signals(first).name}, then {signal.Signals(second).name}"


def requested() -> bool:
    """True while a signal received under `deferred_interrupts` has not been raised yet."""
    return _pending is not None


def pending() -> int | None:
    """The signal received under `deferred_interrupts` and not raised yet (None: none)."""
    return _pending


def raise_if_requested() -> None:
    """Raise KeyboardInterrupt (once per signal) if SIGINT/SIGTERM arrived under `deferred_interrupts`."""
    global _pending
    if _pending is not None:
        signum, _pending = _pending, None
        raise KeyboardInterrupt(f"received {signal.Signals(signum).name}")


@contextlib.contextmanager
def deferred_interrupts(signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """Record `signals` for `raise_if_requested` inside the block; restore the old handlers after it.

    SIGINT explicitly too: a job started in the background (`cmd &`) inherits SIGINT *ignored*, and Python
    then installs no Ctrl-C handler of its own. Main thread only (Python's rule for signal handlers).
    """
    global _pending
    _pending = None
    old = {s: signal.signal(s, _request) for s in signals}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        _pending = None


def exit_code(exc: BaseException) -> int:
    """128 + the signal a KeyboardInterrupt stands for: the last one its message names ("received SIGTERM",
    "received SIGINT, then SIGTERM"), SIGINT (130) when it names none (a plain Ctrl-C)."""
    named = re.findall(r"\bSIG(?:INT|TERM)\b", str(exc))
    return 128 + int(signal.Signals[named[-1]] if named else signal.SIGINT)
