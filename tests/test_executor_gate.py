"""ExecutorGate: the controller node's callbacks and its home thread serialised into one ChunkExecutor."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from conftest import FakeClock, wait_for
from dm1.control.backend import FakeBackend
from dm1.control.executor import ACTIVE, HOLDING, IDLE, ChunkExecutor
from dm1.control.executor_gate import ExecutorGate
from dm1.control.limits import SafetyLimits
from test_executor import ee_chunk


class SlowHomeBackend(FakeBackend):
    """A FakeBackend whose home move blocks until `release` is set (a joint move takes seconds)."""

    def __init__(self) -> None:
        super().__init__()
        self.homing = threading.Event()
        self.release = threading.Event()

    def home(self, q: np.ndarray | None = None) -> None:
        self.homing.set()
        assert self.release.wait(30), "the test never released the home move"
        super().home(q)


def make() -> tuple[ExecutorGate, SlowHomeBackend, FakeClock]:
    backend, clock = SlowHomeBackend(), FakeClock()
    return ExecutorGate(ChunkExecutor(backend, SafetyLimits(), clock, mode="cartesian")), backend, clock


def test_nothing_reaches_the_arm_while_a_home_move_runs() -> None:
    """A chunk, a hold request, a QoS event or a tick that comes while the home move owns the arm is skipped:
    no chunk starts streaming under the move, and none is left to stream after it."""
    gate, backend, clock = make()
    mover = threading.Thread(target=gate.home, daemon=True)
    mover.start()
    wait_for(backend.homing.is_set, 10, what="the home move to start")
    assert gate.homing
    calls = len(backend.calls)
    assert gate.offer(ee_chunk(clock.t, offset=(0.0, 0.05, 0.0))) is None
    gate.hold("stale inputs")
    gate.count_malformed("malformed chunk: bad names")
    assert gate.stream_lost("liveliness_lost", "publisher gone") is False
    clock.t += 0.01
    assert gate.tick() is False
    assert backend.calls[calls:] == []  # no target, no hold sent
    counters = gate.executor.counters
    assert counters["stop_requests"] == 0 and counters["liveliness_lost"] == 0 and counters["ticks"] == 0
    backend.release.set()
    mover.join(timeout=10)
    assert not gate.homing and gate.executor.state == IDLE
    clock.t += 0.01
    gate.tick()
    streamed = [name for name, _ in backend.calls[calls:] if name == "ee"]
    assert not streamed, "a chunk offered while homing was streamed after the move"


def test_a_failed_home_move_opens_the_gate_again() -> None:
    gate, backend, clock = make()

    def aborted(q: np.ndarray | None = None) -> None:
        raise RuntimeError("joint move aborted")

    backend.home = aborted  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="joint move aborted"):
        gate.home()
    assert not gate.homing and gate.offer(ee_chunk(clock.t)) == "accepted"


def test_tick_and_stream_lost_say_when_the_state_changed() -> None:
    gate, _, clock = make()
    assert gate.offer(ee_chunk(clock.t)) == "accepted"
    clock.t += 0.01
    assert gate.tick() is True and gate.executor.state == ACTIVE  # IDLE -> ACTIVE: publish the status
    clock.t += 0.01
    assert gate.tick() is False  # still ACTIVE
    assert gate.stream_lost("deadline_missed", "deadline missed") is True
    assert gate.executor.state == HOLDING
    assert gate.stream_lost("deadline_missed", "deadline missed") is False
