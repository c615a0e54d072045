"""Episode control state machine: IDLE → RECORDING → (save | discard) → IDLE, with success/failure marks.

Events come from keys, ROS services (`~/start`, `~/stop_save`, `~/discard`, `~/mark_success`,
`~/mark_failure`) or the scripted expert. Invalid events raise `SessionError` with a message that says what
state we were in, so the node can answer the service with `success=False` and that message.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field


class SessionState(enum.Enum):
    """Where the operator is: no episode open, or one being recorded."""

    IDLE = "idle"
    RECORDING = "recording"


class SessionError(RuntimeError):
    """An episode-control event that is not allowed in the current state."""


@dataclass
class EpisodeOutcome:
    """What happened to a finished episode."""

    index: int
    saved: bool
    success: bool | None
    started_at: float
    ended_at: float


@dataclass
class EpisodeSession:
    """Pure state machine; side effects (open/close/discard the recorder) go through the callbacks.

    Args:
        on_start: called with the new episode index and the start time when recording starts; raising
            aborts the start.
        on_save: called with (index, success) when the episode is saved.
        on_discard: called with the index when the episode is discarded.
        next_index: index of the next episode.
    """

    on_start: Callable[[int, float], None] | None = None
    on_save: Callable[[int, bool], None] | None = None
    on_discard: Callable[[int], None] | None = None
    next_index: int = 0
    state: SessionState = SessionState.IDLE
    success: bool | None = None
    history: list[EpisodeOutcome] = field(default_factory=list)
    _started_at: float = 0.0

    def __post_init__(self) -> None:
        if self.next_index < 0:
            raise ValueError(f"EpisodeSession.next_index: expected >= 0, found {self.next_index}")

    @property
    def recording(self) -> bool:
        """True while an episode is open."""
        return self.state is SessionState.RECORDING

    def _require(self, state: SessionState, event: str) -> None:
        if self.state is not state:
            raise SessionError(f"cannot {event}: session is {self.state.value}, expected {state.value}")

    def start(self, now: float) -> int:
        """Open a new episode; returns its index."""
        self._require(SessionState.IDLE, "start")
        index = self.next_index
        if self.on_start is not None:
            self.on_start(index, now)  # may raise (existing file, disk full): state stays IDLE
        self.state = SessionState.RECORDING
        self.success = None
        self._started_at = now
        return index

    def mark(self, success: bool) -> None:
        """Mark the open episode as success or failure (can be changed until it is saved)."""
        self._require(SessionState.RECORDING, "mark success/failure")
        self.success = bool(success)

    def stop_save(self, now: float) -> EpisodeOutcome:
        """Close and keep the open episode (unmarked episodes are saved as failures)."""
        self._require(SessionState.RECORDING, "stop and save")
        success = bool(self.success)
        try:
            if self.on_save is not None:
                self.on_save(self.next_index, success)
        finally:
            # Whether or not saving worked, the episode is over: the caller reports the error.
            self.state = SessionState.IDLE
        return self._finish(now, saved=True, success=success)

    def discard(self, now: float) -> EpisodeOutcome:
        """Close and delete the open episode."""
        self._require(SessionState.RECORDING, "discard")
        try:
            if self.on_discard is not None:
                self.on_discard(self.next_index)
        finally:
            self.state = SessionState.IDLE
        return self._finish(now, saved=False, success=None, advance=False)

    def abort(self, now: float) -> EpisodeOutcome | None:
        """Force the session to IDLE after an error (no callbacks); the episode is not saved."""
        if self.state is SessionState.IDLE:
            return None
        self.state = SessionState.IDLE
        return self._finish(now, saved=False, success=None, advance=False)

    def _finish(self, now: float, saved: bool, success: bool | None, advance: bool = True) -> EpisodeOutcome:
        outcome = EpisodeOutcome(self.next_index, saved, success, self._started_at, now)
        self.history.append(outcome)
        if advance:
            self.next_index += 1
        self.success = None
        return outcome
