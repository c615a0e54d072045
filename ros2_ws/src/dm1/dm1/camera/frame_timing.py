"""Frame bookkeeping of a camera stream without pyrealsense2: `FrameDropCounter` (gaps in frame numbers) and
`ClockMapper` (device timestamps to host time; the method is in `dm1.camera.realsense`'s module docstring).
"""

from __future__ import annotations

import collections
import math

#: A forward jump of the frame number by more frames than this many seconds at the stream rate is not a run
#: of drops but a corrupt number or a device restart: counted as a reset. (A camera silent that long is
#: already the stale-frames ERROR of the diagnostics.)
MAX_PLAUSIBLE_GAP_S = 5.0


class FrameDropCounter:
    """Counts frames lost between consecutive frame numbers.

    Args:
        fps: the stream's rate; a forward jump of more than `MAX_PLAUSIBLE_GAP_S` seconds of frames at it
            (e.g. one corrupt frame number, +1e9) counts as a reset, not as drops. None: every gap is drops.
    """

    def __init__(self, fps: float | None = None) -> None:
        self.received = 0
        self.dropped = 0
        self.resets = 0
        self.last: int | None = None
        self.max_gap: int | None = None
        if fps is not None:
            self.set_rate(fps)

    def set_rate(self, fps: float) -> None:
        """The stream's rate (Hz), which bounds a plausible gap (a playback's own rate is known at start)."""
        self.max_gap = math.ceil(MAX_PLAUSIBLE_GAP_S * fps)

    def update(self, frame_number: int) -> int:
        """Register a frame number; return how many frames were skipped just before it."""
        gap = 0
        if self.last is not None:
            gap = frame_number - self.last - 1
            if frame_number <= self.last or (self.max_gap is not None and gap > self.max_gap):
                self.resets += 1  # backwards: a restart; implausibly far forward: a corrupt number
                gap = 0
        self.dropped += gap
        self.received += 1
        self.last = frame_number
        return gap


class ClockMapper:
    """Maps device timestamps (ms) to host time (s): min-offset over a sliding window (see the module doc of
    `dm1.camera.realsense`), re-anchored only on evidence that a clock really jumped.

    A sample is `arrival - device` (s); `offset_s` is the minimum over the window; `lateness` = sample -
    offset. The stamp is `device + offset`, never later than the arrival.

    - Device time going backwards (device reset, playback loop): re-anchor at once.
    - Device time jumping forward by more than `reset_threshold_s` without the arrival following (lateness
      below `-reset_threshold_s`): re-anchor at once (a smaller sample is the new minimum anyway).
    - Frames arriving more than `reset_threshold_s` late are **not** a clock jump: a USB/reader stall
      delivers a burst of old frames, and they keep their capture time, so they look as old as they are.
      Only when the lateness persists (every frame late by more than the threshold for `step_confirm_s` of
      both arrival time and device time, i.e. a stream that keeps flowing, late throughout) is it taken for a
      host clock step: then the window re-anchors to the smallest sample of that run. Until then (at most
      `step_confirm_s` plus one frame) frames after a host step look older than they are, never fresher. A
      burst after a stall spans milliseconds of arrival time, so it never qualifies; a reader that stays more
      than `reset_threshold_s` behind for `step_confirm_s` cannot be told from a host step, and re-anchors.
    - `frozen` counts consecutive frames whose device time did not advance (a stuck device clock: the
      stamps repeat); `frozen_total` counts them over the run.
    """

    def __init__(
        self, window_s: float = 10.0, reset_threshold_s: float = 1.0, step_confirm_s: float = 1.0
    ) -> None:
        if window_s <= 0 or reset_threshold_s <= 0 or step_confirm_s <= 0:
            raise ValueError(
                "ClockMapper: window_s, reset_threshold_s and step_confirm_s must be > 0, found "
                f"{window_s}, {reset_threshold_s}, {step_confirm_s}"
            )
        self.window_s = window_s
        self.reset_threshold_s = reset_threshold_s
        self.step_confirm_s = step_confirm_s
        self._samples: collections.deque[tuple[float, float]] = collections.deque()  # (device_s, offset_s)
        self._late_start: tuple[float, float] | None = None  # (arrival_s, device_s) of the run of late frames
        self._late_min: tuple[float, float] = (0.0, 0.0)  # (device_s, offset_s): the run's smallest sample
        self._last_device_s: float | None = None
        self.resets = 0
        self.offset_s: float | None = None
        self.frozen = 0
        self.frozen_total = 0

    def map(self, device_ts_ms: float, arrival_s: float) -> float:
        """Host time of a frame stamped `device_ts_ms` by the device that arrived at host time `arrival_s`."""
        device_s = device_ts_ms / 1000.0
        sample = arrival_s - device_s
        last = self._last_device_s
        self.frozen = self.frozen + 1 if last is not None and device_s == last else 0
        self.frozen_total += self.frozen > 0
        self._last_device_s = device_s
        if self.offset_s is None or (last is not None and device_s < last):
            self._reanchor((device_s, sample), count=self.offset_s is not None)
        elif sample - self.offset_s < -self.reset_threshold_s:  # device jumped ahead of the arrival
            self._reanchor((device_s, sample))
        elif sample - self.offset_s > self.reset_threshold_s:  # late: a stall, or a host clock step
            if self._late_start is None or sample < self._late_min[1]:
                self._late_min = (device_s, sample)
            self._late_start = self._late_start or (arrival_s, device_s)
            first_arrival, first_device = self._late_start
            if min(arrival_s - first_arrival, device_s - first_device) >= self.step_confirm_s:
                self._reanchor(self._late_min)
        else:
            self._late_start = None
            self._samples.append((device_s, sample))
            while len(self._samples) > 1 and self._samples[0][0] < device_s - self.window_s:
                self._samples.popleft()
            self.offset_s = min(off for _, off in self._samples)
        return min(device_s + self.offset_s, arrival_s)  # type: ignore[operator]

    def _reanchor(self, sample: tuple[float, float], count: bool = True) -> None:
        """Restart the window from one (device_s, offset_s) sample: the first frame, the frame that showed a
        device clock jump, or the smallest sample of the late run that proved a host clock step."""
        self._samples = collections.deque([sample])
        self._late_start = None
        self.offset_s = sample[1]
        self.resets += count
