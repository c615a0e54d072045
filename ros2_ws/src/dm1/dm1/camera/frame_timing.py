"""Frame bookkeeping of a camera stream without pyrealsense2: `FrameDropCounter` (gaps in frame numbers) and
`ClockMapper` (device timestamps to host time; the method is in `dm1.camera.realsense`'s module docstring).
"""

from __future__ import annotations

import collections


class FrameDropCounter:
    """Counts frames lost between consecutive frame numbers."""

    def __init__(self) -> None:
        self.received = 0
        self.dropped = 0
        self.resets = 0
        self.last: int | None = None

    def update(self, frame_number: int) -> int:
        """Register a frame number; return how many frames were skipped just before it."""
        gap = 0
        if self.last is not None:
            if frame_number <= self.last:
                self.resets += 1
            else:
                gap = frame_number - self.last - 1
        self.dropped += gap
        self.received += 1
        self.last = frame_number
        return gap


class ClockMapper:
    """Maps device timestamps (ms) to host time (s): min-offset over a sliding window, see the module doc."""

    def __init__(self, window_s: float = 10.0, reset_threshold_s: float = 1.0) -> None:
        if window_s <= 0 or reset_threshold_s <= 0:
            raise ValueError(
                f"ClockMapper: window_s and reset_threshold_s must be > 0, found {window_s}, "
                f"{reset_threshold_s}"
            )
        self.window_s = window_s
        self.reset_threshold_s = reset_threshold_s
        self._samples: collections.deque[tuple[float, float]] = collections.deque()  # (device_s, offset_s)
        self.resets = 0
        self.offset_s: float | None = None

    def map(self, device_ts_ms: float, arrival_s: float) -> float:
        """Host time of a frame stamped `device_ts_ms` by the device that arrived at host time `arrival_s`."""
        device_s = device_ts_ms / 1000.0
        sample = arrival_s - device_s
        if self._samples and (
            device_s < self._samples[-1][0] or abs(sample - self.offset_s) > self.reset_threshold_s  # type: ignore[operator]
        ):
            self._samples.clear()  # device clock restarted or jumped: re-anchor
            self.resets += 1
        self._samples.append((device_s, sample))
        while self._samples[0][0] < device_s - self.window_s:
            self._samples.popleft()
        self.offset_s = min(off for _, off in self._samples)
        return device_s + self.offset_s
