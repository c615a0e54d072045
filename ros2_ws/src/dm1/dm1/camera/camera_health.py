"""The diagnostics of one `RealSenseCamera` (level, message, counters), without pyrealsense2.

Levels, first match wins:
- WARN "playback of FILE ended": a non-repeating playback read to its end (by design, not a fault).
- ERROR "no frames for X s" / "no frames yet" (+ the reader's error): nothing delivered for `max_age_s`.
  When color frames were read but none could be paired with a depth frame, the message says how many and
  the pairing tolerance (half a frame period of the streams' own rate).
- WARN "device timestamps not advancing": `FROZEN_WARN_FRAMES` or more consecutive frames carried the
  same device time, so their stamps repeat and their age cannot be known.
- WARN "N frames dropped" (gaps in frame numbers).
- OK "streaming".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dm1.camera.realsense import RealSenseCamera

#: Consecutive frames without a device-time advance (after the first with that time) that make a WARN.
FROZEN_WARN_FRAMES = 2


def camera_health(cam: RealSenseCamera, now_s: float, max_age_s: float = 1.0) -> tuple[int, str, dict]:
    """(level 0 ok / 1 warn / 2 error, message, counters) of `cam` at host time `now_s` (module doc)."""
    age = now_s - cam.last_frame_s if cam.last_frame_s is not None else float("inf")
    mapper = cam.mapper
    values: dict[str, object] = dict(
        vars(cam.drops), clock_offset_s=mapper.offset_s, clock_resets=mapper.resets
    )
    values["frame_age_s"] = age
    values["unpaired_color"] = cam.unpaired
    values["device_ts_frozen_frames"] = mapper.frozen
    values["device_ts_repeats"] = mapper.frozen_total
    if cam.cfg.playback_file:
        values["playback_ended"] = cam.playback_ended
    # read to its end: ended, also while the grace for queued frames (`read`) has not run out yet
    at_end = cam.playback_ended or (cam.end_seen_s is not None and age > max_age_s)
    if cam.error is None and at_end:
        return 1, f"playback of {cam.cfg.playback_file} ended", values
    if cam.error is not None or age > max_age_s:
        text = "no frames yet" if age == float("inf") else f"no frames for {age:.1f} s"
        if cam.unpaired:
            text += (
                f" ({cam.unpaired} color frames unpaired: no depth frame stamped within "
                f"{cam.pair_tolerance_ms:.1f} ms)"
            )
        return 2, text + (f": {cam.error}" if cam.error else ""), values
    if mapper.frozen >= FROZEN_WARN_FRAMES:
        return (
            1,
            f"device timestamps not advancing: {mapper.frozen + 1} frames in a row stamped alike",
            values,
        )
    if cam.drops.dropped:
        return 1, f"{cam.drops.dropped} frames dropped", values
    return 0, "streaming", values
