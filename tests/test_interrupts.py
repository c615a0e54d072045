"""`dm1.interrupts`: Ctrl-C / SIGTERM are recorded by the handler and raised at the driver's next safe point.

(A KeyboardInterrupt raised by the handler itself can land inside rclpy's pybind11 bindings, which turn it
into `RuntimeError: Unable to convert call argument '0'`: an interrupted `dm1 eval` crashed in CI.)
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from dm1 import interrupts
from dm1.interrupts import deferred_interrupts, raise_if_requested


def _deliver(signum: int) -> None:
    """Send `signum` to this process and give the interpreter bytecodes to run its handler on."""
    os.kill(os.getpid(), signum)
    end = time.monotonic() + 0.2
    while time.monotonic() < end:
        pass


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_in_block_waits_for_the_safe_point_then_raises_once(signum: int) -> None:
    with deferred_interrupts():
        _deliver(signum)  # no exception here, in the middle of "library code"
        with pytest.raises(KeyboardInterrupt, match=signal.Signals(signum).name):
            raise_if_requested()
        raise_if_requested()  # consumed: the clean-up after the interrupt may spin again


def test_second_signal_before_the_safe_point_raises_at_once() -> None:
    with deferred_interrupts():
        _deliver(signal.SIGINT)
        with pytest.raises(KeyboardInterrupt, match="twice"):
            _deliver(signal.SIGINT)
        raise_if_requested()  # nothing left pending


def test_a_second_signal_of_another_kind_names_both_signals() -> None:
    """Ctrl-C, then `kill` (SIGTERM): the interrupt names what was received, not "SIGTERM twice"."""
    with deferred_interrupts():
        _deliver(signal.SIGINT)
        with pytest.raises(KeyboardInterrupt, match=r"^received SIGINT, then SIGTERM$"):
            _deliver(signal.SIGTERM)
        raise_if_requested()  # nothing left pending


def test_block_restores_the_handlers_and_forgets_a_pending_signal() -> None:
    seen: list[int] = []

    def outer(signum: int, _frame: object) -> None:  # the handler outside the block, recording
        seen.append(signum)

    previous = signal.signal(signal.SIGTERM, outer)
    try:
        with deferred_interrupts():
            _deliver(signal.SIGTERM)
        assert signal.getsignal(signal.SIGTERM) is outer and seen == []
        raise_if_requested()  # the signal belonged to the block
        _deliver(signal.SIGTERM)  # outside the block the outer handler gets it again
        assert seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("", 130),  # a plain Ctrl-C
        ("received SIGINT", 130),
        ("received SIGTERM", 143),
        ("received SIGINT, then SIGTERM", 143),  # the last signal is the one that ended it
        ("received SIGTERM, then SIGINT", 130),
        ("interrupted before the first episode finished (received SIGTERM)", 143),
    ],
)
def test_the_exit_code_is_128_plus_the_signal_that_ended_the_command(message: str, code: int) -> None:
    assert interrupts.exit_code(KeyboardInterrupt(message)) == code
