"""Why `ChunkExecutor` refuses an offered chunk: its content (the other mode's kind, non-finite values, a
stamp from before a home move), and the timing refusals with the numbers an operator needs (the chunk's
stamp, the controller's clock, the limit), e.g. a wall-clock stamp sent to a controller on simulation time."""

from __future__ import annotations

import numpy as np

from dm1.control.limits import SafetyLimits
from dm1.control.safety import nonfinite_reason
from dm1.control.schedule import ChunkSchedule, TimedChunk

#: s; a stamp this far from the controller's clock is on another clock (wall clock vs simulation time).
OTHER_CLOCK_S = 3600.0
#: the executor's counter for each timing refusal of `ChunkSchedule.offer` but LATE (counted as "late")
TIMING_COUNTERS = {
    ChunkSchedule.OLDER: "ignored_older",
    ChunkSchedule.FUTURE: "rejected_future",
    ChunkSchedule.STALE: "rejected_stale",
}


def nonfinite_chunk_reason(chunk: TimedChunk) -> str | None:
    """None when the chunk's stamp, times, positions, gripper commands and orientations are all finite, else
    a message naming the first offending field and index."""
    return nonfinite_reason(
        stamp=np.array([chunk.stamp]),
        time_from_start=chunk.time_from_start,
        positions=chunk.positions,
        gripper=chunk.gripper,
        **({} if chunk.quat_xyzw is None else {"quat_xyzw": chunk.quat_xyzw}),
    )


def content_refusal(chunk: TimedChunk, mode: str, homed_at: float | None) -> tuple[str, str] | None:
    """(the executor's counter, the reason) for a chunk refused for what it is, whatever its timing: a chunk
    of the kind the controller does not run (`mode`), a non-finite value, or a stamp before the last home
    move ended at `homed_at` (s; None: no home move yet). None: it may be scheduled."""
    if chunk.kind != mode:
        return "rejected_mode", f"{chunk.kind} chunk while the controller runs in {mode} mode"
    if (reason := nonfinite_chunk_reason(chunk)) is not None:
        return "rejected_nonfinite", f"chunk rejected: {reason}"
    if homed_at is not None and chunk.stamp < homed_at:
        return "dropped_homing", (
            f"chunk stamped {chunk.stamp:.2f} s, before the home move ended at {homed_at:.2f} s: "
            "a stream from before the move is not continued"
        )
    return None


def timing_refusal(
    result: str,
    chunk: TimedChunk,
    now: float,
    running: TimedChunk | None,
    limits: SafetyLimits,
    late_in_row: int,
) -> str:
    """The message for a chunk `ChunkSchedule.offer` refused with `result` (FUTURE, STALE, OLDER, LATE) at the
    controller's clock `now` (s); `running`: the chunk running then; `late_in_row`: late chunks in a row."""
    stamped, clock = f"chunk stamped {chunk.stamp:.2f} s", f"controller clock {now:.2f} s"
    if result == ChunkSchedule.FUTURE:
        ahead = float(chunk.times[0]) - now
        hint = " — a wall-clock stamp under use_sim_time?" if ahead > OTHER_CLOCK_S else ""
        return (
            f"{stamped}: its first action is {ahead:.2f} s ahead of the {clock}; "
            f"limit max_future_s {limits.max_future_s:g} s{hint}"
        )
    if result == ChunkSchedule.STALE:
        return (
            f"stale chunk: {stamped} is {now - chunk.stamp:.2f} s old at the {clock}; "
            f"limit max_chunk_age_s {limits.max_chunk_age_s:g} s"
        )
    if result == ChunkSchedule.OLDER:
        running_stamp = float("nan") if running is None else running.stamp
        return (
            f"{stamped} is not newer than the running chunk's stamp {running_stamp:.2f} s "
            f"({clock}): the latest chunk wins"
        )
    if result == ChunkSchedule.LATE:
        last = float(chunk.times[-1])
        behind = now - last
        hint = ""
        if behind > OTHER_CLOCK_S:
            hint = " — a simulation-time stamp while the controller runs on the wall clock?"
        return (
            f"late chunk: {stamped}, its last action due at {last:.2f} s, {behind:.3f} s before the {clock} "
            f"({late_in_row} in a row; max_consecutive_late {limits.max_consecutive_late}){hint}"
        )
    raise ValueError(
        f"timing_refusal.result: expected {ChunkSchedule.FUTURE!r}, {ChunkSchedule.STALE!r}, "
        f"{ChunkSchedule.OLDER!r} or {ChunkSchedule.LATE!r}, found {result!r}"
    )


#: characters of an untrusted text (a message field, an error naming one) kept in a log line or the status
MAX_TEXT_CHARS = 200


def quoted(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """An untrusted string (a message's frame_id, names) for a log line or the status: repr-quoted, so a
    newline or a control character cannot forge a line, and cut to `limit` characters."""
    cut = text if len(text) <= limit else text[:limit]
    return repr(cut) + ("..." if len(text) > limit else "")


def one_line(text: str, limit: int = 2 * MAX_TEXT_CHARS) -> str:
    """A reason built from untrusted parts, as one line of at most `limit` characters (control characters
    escaped)."""
    safe = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return safe if len(safe) <= limit else safe[: limit - 3] + "..."
