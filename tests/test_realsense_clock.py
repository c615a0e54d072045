"""RealSense timing faults: frames delayed by a stall keep their capture time (so they look old), real clock
jumps still re-anchor, a host clock step re-anchors after a bounded time, frozen device time is a WARN, and a
corrupt frame number is a reset, not a billion drops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import wait_for
from dm1.camera import CameraConfig, ClockMapper, FrameDropCounter, RealSenseCamera, record_synthetic

OFFSET = 5000.0  # host time - device time (s) of the fake sequences
LATENCY = 0.002  # transport latency of an on-time frame (s)
H, W = 48, 64


def _stall_arrival(capture: float, start: float, length: float, k: int) -> float:
    """Arrival of a frame captured at host time `capture` when the reader stalls for `length` s from
    `start`: frames captured during the stall arrive in a burst at its end, 1 ms apart (k orders them)."""
    if start <= capture < start + length:
        return start + length + 0.001 * (k % 1000)
    return capture + LATENCY


@pytest.mark.parametrize("stall_s", [1.1, 1.5, 3.0])
def test_clock_mapper_keeps_capture_time_through_a_stall_so_late_frames_look_old(stall_s: float) -> None:
    mapper = ClockMapper()
    stall_start = OFFSET + 10.0 + 100 / 30
    for k in range(300):
        device = 10.0 + k / 30
        capture = device + OFFSET
        arrival = _stall_arrival(capture, stall_start, stall_s, k)
        stamp = mapper.map(device * 1000.0, arrival)
        assert abs(stamp - capture) < 0.005, (k, stamp - capture)  # the capture time, not the arrival
        assert arrival - stamp >= arrival - capture - 0.005  # as old as it really is
    assert mapper.resets == 0


def _jump(kind: str, k: int, device: float, arrival: float) -> tuple[float, float]:
    """(device, arrival) of frame k after frame 200, when the clocks jump there in the way `kind` says."""
    if k < 200:
        return device, arrival
    if kind == "device_restart":  # the device clock starts again near 0 (a reset, a playback loop)
        return device - 15.0, arrival
    if kind == "device_jump_ahead":  # device time leaps 5 s, the frames arrive on time
        return device + 5.0, arrival
    return device, arrival - 2.0  # "host_step_back": the host clock is set back 2 s


@pytest.mark.parametrize("kind", ["device_restart", "device_jump_ahead", "host_step_back"])
def test_clock_mapper_reanchors_on_a_real_clock_jump_but_not_on_a_stall_before_it(kind: str) -> None:
    """A 1.5 s stall (frames 100..145) keeps capture times; a real jump (frame 200) re-anchors at once."""
    mapper = ClockMapper()
    stall_start = OFFSET + 10.0 + 100 / 30
    for k in range(300):
        true_device = 10.0 + k / 30
        capture = true_device + OFFSET
        device, arrival = _jump(kind, k, true_device, _stall_arrival(capture, stall_start, 1.5, k))
        stamp = mapper.map(device * 1000.0, arrival)
        assert stamp <= arrival
        if k < 200:
            assert abs(stamp - capture) < 0.005, (k, stamp - capture)
        else:  # re-anchored at frame 200: stamped at the (new) arrival less the latency, from the next frame
            assert abs(stamp - (arrival - LATENCY)) < 0.005, (k, stamp - arrival)
    assert mapper.resets == 1


def test_clock_mapper_follows_a_host_clock_step_after_a_second_of_late_frames_not_at_once() -> None:
    """The host clock steps +2 s at frame 300: every later frame arrives 2 s "late". For the first second
    that is indistinguishable from a stall: the frames keep the old mapping (they look 2 s old, never
    fresh); once the lateness has lasted `step_confirm_s` of a flowing stream, the mapper re-anchors."""
    rng = np.random.default_rng(0)
    mapper = ClockMapper()  # step_confirm_s: 1 s
    step_at = 300
    for k in range(600):
        device = 10.0 + k / 30
        jitter = rng.exponential(0.003)
        arrival = device + OFFSET + LATENCY + jitter + (2.0 if k >= step_at else 0.0)
        stamp = mapper.map(device * 1000.0, arrival)
        assert stamp <= arrival
        since_step = (k - step_at) / 30
        if 0 <= since_step < 0.95:
            assert arrival - stamp > 1.9, (k, arrival - stamp)  # looks as old as the step: never fresh
            assert mapper.resets == 0
        elif since_step > 1.1:
            assert arrival - stamp < 0.02, (k, arrival - stamp)  # the new host time
    assert mapper.resets == 1


def test_clock_mapper_counts_frames_whose_device_time_did_not_advance() -> None:
    mapper = ClockMapper()
    stamps = [mapper.map(1000.0, OFFSET + k / 30) for k in range(60)]  # a device clock stuck at 1 s
    assert mapper.frozen == 59 and mapper.frozen_total == 59
    assert len(set(stamps)) == 1 and mapper.resets == 0  # the stamps repeat: they look older and older
    mapper.map(1033.3, OFFSET + 2.0)
    assert mapper.frozen == 0 and mapper.frozen_total == 59


def test_drop_counter_treats_an_implausible_forward_jump_as_a_reset_not_drops() -> None:
    counter = FrameDropCounter(fps=30)
    for n in (10, 11, 12, 12 + 10**9, 13 + 10**9):  # one corrupt frame number, then the stream continues
        counter.update(n)
    assert (counter.dropped, counter.resets) == (0, 1)
    counter.update(13 + 10**9 + 31)  # a plausible gap (~1 s of frames) is still counted as drops
    assert (counter.dropped, counter.resets) == (30, 1)


def test_playback_stamps_frames_delayed_by_a_stall_with_their_capture_time(tmp_path: Path) -> None:
    """A recording whose frames 30..74 were captured on time but delivered together after a 1.5 s stall
    (as a USB or reader stall delivers them): a real-time playback stamps them with their capture time."""
    captures = [k / 30 for k in range(90)]
    pushes = [2.5 if 1.0 <= c < 2.5 else c for c in captures]
    colors = [np.full((H, W, 3), k, np.uint8) for k in range(90)]
    path = record_synthetic(tmp_path / "stall.db3", colors, push_at_s=pushes)
    with RealSenseCamera(CameraConfig("front", playback_file=str(path))) as cam:
        cam.start()
        got = []
        while (frame := cam.read(timeout_s=30.0)) is not None:
            got.append((frame, cam.clock()))
    offset = float(np.median([f.stamp_s - f.device_ts_ms / 1000 for f, _ in got if 5 <= f.frame_number < 30]))
    burst = [(f, arrival) for f, arrival in got if 30 <= f.frame_number < 60]
    assert len(burst) >= 5, [f.frame_number for f, _ in got]
    for frame, arrival in burst:
        fresher = frame.stamp_s - (frame.device_ts_ms / 1000 + offset)  # > 0: stamped after its capture
        assert fresher < 0.1, (frame.frame_number, fresher)
        assert arrival - frame.stamp_s > 0.3, (frame.frame_number, arrival - frame.stamp_s)  # looks old


def test_frozen_device_timestamps_are_a_warning_not_streaming(tmp_path: Path) -> None:
    colors = [np.full((H, W, 3), k, np.uint8) for k in range(30)]
    path = record_synthetic(tmp_path / "frozen.db3", colors, timestamps_ms=[1000.0] * 30, pace=False)
    cfg = CameraConfig("front", playback_file=str(path), playback_realtime=False)
    seen: dict[str, tuple] = {}
    with RealSenseCamera(cfg) as cam:

        def on_frame(frame) -> None:  # noqa: ANN001 - CameraFrame
            if frame.frame_number == 10:  # streaming: frame 9 was delivered just before
                seen["health"] = cam.health(cam.clock())

        cam.start(on_frame)
        wait_for(lambda: "health" in seen, 30, 0.05, "frame 10")
    level, text, values = seen["health"]
    assert (level, text) == (1, "device timestamps not advancing: 11 frames in a row stamped alike")
    assert values["device_ts_frozen_frames"] == 10
