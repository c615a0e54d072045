"""Clamps reach the log as throttled WARNING lines naming the reasons, the original and the safe target."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
from conftest import FakeClock
from dm1.control.backend import HOME_EE_POS, FakeBackend
from dm1.control.clamp_log import ClampLog
from dm1.control.executor import ChunkExecutor
from dm1.control.limits import SafetyLimits
from dm1.control.safety import SafetyReport
from dm1.control.schedule import TimedChunk

LOGGER = "dm1.control.executor"


def clamp_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == LOGGER and r.getMessage().startswith("clamped")
    ]


def test_a_chunk_outside_the_workspace_logs_a_warning_a_second_naming_original_and_safe(caplog) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    backend, clock = FakeBackend(), FakeClock()
    ex = ChunkExecutor(backend, SafetyLimits(), clock, tick_period_s=0.01)
    above = np.array([HOME_EE_POS[0], 0.0, SafetyLimits().workspace_max[2] + 0.1])  # 10 cm over the ceiling
    for _ in range(50):  # 2.5 s: a fresh chunk every 50 ms, a tick every 10 ms
        chunk = TimedChunk(clock.t, np.arange(4) * 0.05, np.tile(above, (4, 1)), np.zeros(4))
        assert ex.on_chunk(chunk) == "accepted"
        for _ in range(5):
            clock.t += 0.01
            ex.tick()
    clamped = ex.counters["clamped"]
    lines = clamp_lines(caplog)
    assert clamped >= 240 and 3 <= len(lines) <= 6, (clamped, lines)  # each reason at most once a second
    reasons = [line.split(":")[0] for line in lines]
    assert len(set(reasons)) == len(reasons) - 2, reasons  # the steady one (at the ceiling) at 0, 1 and 2 s
    last = lines[-1]
    assert reasons[-1] == "clamped (workspace)", lines
    numbers = re.findall(r"pose \[([^\]]*)\] -> \[([^\]]*)\]", last)
    original, safe = (np.array([float(v) for v in part.split(",")]) for part in numbers[0])
    assert original[2] == pytest.approx(0.7) and safe[2] == pytest.approx(0.6), last
    assert re.search(r" \(9\d more not logged since the previous line\)$", last), last
    assert all(r.levelno == logging.WARNING for r in caplog.records if r.name == LOGGER)


def test_each_reason_is_throttled_on_its_own_and_a_clock_step_back_logs_again(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="test.clamps")
    log = ClampLog(logging.getLogger("test.clamps"), period_s=1.0, what="pose")

    def clamp(*reasons: str) -> SafetyReport:
        return SafetyReport(np.array([0.9, 0.0, 0.5]), np.array([0.8, 0.0, 0.5]), list(reasons))

    assert log.report(clamp("workspace"), 10.0)
    assert not log.report(clamp("workspace"), 10.5)
    assert log.report(clamp("workspace", "ee_speed"), 10.6)  # another reason is logged at once
    assert not log.report(clamp("workspace", "ee_speed"), 11.0)
    assert log.report(clamp("workspace"), 11.0)
    assert log.report(clamp("workspace"), 5.0)  # the clock went back
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "clamped (workspace): pose [0.9000, 0.0000, 0.5000] -> [0.8000, 0.0000, 0.5000]"
    assert messages[1].startswith("clamped (workspace, ee_speed): pose") and "not logged" not in messages[1]
    assert messages[2].endswith("-> [0.8000, 0.0000, 0.5000] (1 more not logged since the previous line)")
    assert len(messages) == 4
