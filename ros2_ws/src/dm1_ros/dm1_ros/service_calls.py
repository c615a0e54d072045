"""Bounded, interruptible rclpy service calls for the drivers of a live graph (eval, collection, lifecycle).

Each call waits in short steps and calls `dm1.interrupts.raise_if_requested()` between them, so a Ctrl-C
under `deferred_interrupts` stops the driver at a safe point instead of inside rclpy's bindings. Inside
`checked_while_waiting(check)` each step also runs `check`, which raises to end the wait at once (a driver's
launched graph exited: no 60 s service timeout first).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import rclpy
from dm1.interrupts import raise_if_requested
from rclpy.client import Client
from rclpy.node import Node

STEP_S = 0.02  # the longest a pending Ctrl-C waits
_checks: list[Callable[[], None]] = []  # see checked_while_waiting


@contextlib.contextmanager
def checked_while_waiting(check: Callable[[], None]) -> Iterator[None]:
    """Run `check` at every wait step of `spin_step` and `call_service` inside the block; it raises to end
    the wait (e.g. `RuntimeError` once the driver's launched graph has exited)."""
    _checks.append(check)
    try:
        yield
    finally:
        _checks.remove(check)


def _between_steps() -> None:
    raise_if_requested()
    for check in list(_checks):
        check()


def spin_step(node: Node, timeout_s: float = STEP_S) -> None:
    """Process the node's ready callbacks (waiting at most `timeout_s`), then honour a pending Ctrl-C and the
    checks of `checked_while_waiting`."""
    rclpy.spin_once(node, timeout_sec=max(0.0, min(timeout_s, STEP_S)))
    _between_steps()


def call_service(node: Node, client: Client, request: Any, timeout_s: float, what: str = "") -> Any:
    """Call `client` with `request` and return the response.

    Raises TimeoutError naming the service when it does not appear, or does not answer, within `timeout_s`.
    """
    prefix = f"{what}: " if what else ""
    deadline = time.monotonic() + timeout_s
    while not client.service_is_ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{prefix}service {client.srv_name} not available after {timeout_s:.1f} s")
        time.sleep(STEP_S)
        _between_steps()
    future = client.call_async(request)
    deadline = time.monotonic() + timeout_s
    try:
        while not future.done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{prefix}{client.srv_name} did not answer within {timeout_s:.1f} s")
            spin_step(node)
    finally:
        if not future.done():  # timed out or interrupted: a late answer must not complete a stale call
            client.remove_pending_request(future)
    return future.result()
