"""The controller's online action-to-motion lag estimate (`dm1.control.tracking.TrackingMonitor`)."""

from __future__ import annotations

import numpy as np
import pytest
from dm1.control.tracking import TrackingMonitor


def _circle(t: float) -> np.ndarray:  # a target moving at ~6 cm/s on a 5 cm circle
    return np.array([0.4 + 0.05 * np.cos(1.2 * t), 0.05 * np.sin(1.2 * t), 0.3])


@pytest.mark.parametrize("lag_s", [0.0, 0.04, 0.11])
def test_a_measured_path_that_follows_the_targets_late_gives_that_lag(lag_s: float) -> None:
    rng = np.random.default_rng(0)
    monitor = TrackingMonitor()
    for t in np.arange(0.0, 3.0, 0.01):  # 100 Hz ticks
        measured = _circle(t - lag_s) + rng.normal(0.0, 0.0003, 3)  # 0.3 mm sensor noise
        monitor.record(t, _circle(t), measured)
    values = monitor.values()
    assert values["tracking_lag_ms"] == pytest.approx(1000 * lag_s, abs=5.0)
    assert values["tracking_error_mm"] < 1.0  # the noise, not the lag


def test_an_offset_shows_as_tracking_error_not_as_lag() -> None:
    monitor = TrackingMonitor()
    for t in np.arange(0.0, 3.0, 0.01):
        monitor.record(t, _circle(t), _circle(t - 0.05) + np.array([0.0, 0.0, -0.004]))  # sags 4 mm
    assert monitor.values() == {
        "tracking_lag_ms": pytest.approx(50.0, abs=5.0),
        "tracking_error_mm": pytest.approx(4.0, abs=0.2),
    }


def test_no_estimate_while_the_targets_stand_still_and_a_clock_jump_starts_afresh() -> None:
    monitor = TrackingMonitor()
    for t in np.arange(0.0, 3.0, 0.01):
        monitor.record(t, np.array([0.4, 0.0, 0.3]), np.array([0.4, 0.0, 0.3]))
    assert monitor.values() == {}  # a lag is only visible in motion
    for t in np.arange(10.0, 13.0, 0.01):
        monitor.record(t, _circle(t), _circle(t - 0.03))
    assert monitor.values()["tracking_lag_ms"] == pytest.approx(30.0, abs=5.0)
    monitor.record(1.0, _circle(1.0), _circle(1.0))  # simulation reset: the window is dropped
    assert len(monitor._samples) == 1 and monitor.values()["tracking_lag_ms"] == pytest.approx(30.0, abs=5.0)


def test_joint_mode_reports_milliradians() -> None:
    monitor = TrackingMonitor(unit="mrad")
    q0 = np.zeros(7)
    for t in np.arange(0.0, 3.0, 0.01):
        wave = 0.2 * np.sin(1.5 * t)
        lagged = 0.2 * np.sin(1.5 * (t - 0.06))
        monitor.record(t, q0 + wave, q0 + lagged)
    values = monitor.values()
    assert set(values) == {"tracking_lag_ms", "tracking_error_mrad"} and values[
        "tracking_lag_ms"
    ] == pytest.approx(60, abs=5)
