"""`SourceGuard`: one commander at a time on the action topics.

Two publishers sending motion chunks to one controller (a second policy started in another terminal or a
second launch in the same ROS domain, a teleop node run beside the policy) would make the arm alternate
between two plans every few tens of milliseconds. The controller tells publishers apart by their DDS GID
(the message info of each chunk) and latches a fault when one sends a motion chunk after another publisher
sent one since its own previous chunk, within `window_s` (node clock): A, B, A. A hand-over (A stops, B
starts: A, A, B, B) is not a conflict, nor is an empty chunk (a hold request is always welcome). So a second
commander is caught at the first commander's next chunk (one chunk period, 50 ms at 20 Hz).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ChunkSource:
    """Who sent a chunk: `key` identifies the publisher (its GID), `label` names it for people (its node)."""

    key: bytes
    label: str


@dataclass
class SourceGuard:
    """Remembers when each publisher last sent a motion chunk; `check` reports a second live one.

    window_s: two publishers whose motion chunks arrive within this many seconds of each other conflict;
        0 turns the guard off (a deliberate multiplexer in front of the controller).
    """

    window_s: float
    _last: dict[bytes, tuple[float, ChunkSource]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.window_s <= 60.0:
            raise ValueError(f"SourceGuard.window_s: expected 0 <= window <= 60 s, found {self.window_s!r}")

    def live(self, now: float) -> list[str]:
        """Labels of the publishers that sent a motion chunk within the window before `now`."""
        return sorted(s.label for t, s in self._last.values() if t <= now and now - t < self.window_s)

    def check(self, source: ChunkSource, now: float, what: str = "motion chunks") -> str | None:
        """Record a motion chunk from `source` at `now`; return why it conflicts with another publisher (one
        that sent a chunk since this one's previous chunk, all within the window), or None. A clock that went
        back (simulated time restarted) forgets every earlier chunk."""
        if self.window_s <= 0.0:
            return None
        self._last = {k: (t, s) for k, (t, s) in self._last.items() if t <= now and now - t < self.window_s}
        previous = self._last.get(source.key)
        self._last[source.key] = (now, source)
        if previous is None:  # its first chunk, or the first after a pause: a hand-over, not a conflict
            return None
        others = [s for k, (t, s) in self._last.items() if k != source.key and t >= previous[0]]
        if not others:
            return None
        names = [s.label for s in others]
        if source.label in names:
            who = f"two publishers named {source.label}"
        else:
            who = f"{', '.join(sorted(set(names)))} and {source.label}"
        return (
            f"two commanders: {who} sent {what} in turns within {self.window_s:g} s; "
            "stop all but one, then recover"
        )
