"""`ExecutorStatus` and the executor's states and counters: what `ChunkExecutor` reports (diagnostics)."""

from __future__ import annotations

from dataclasses import dataclass, field

from dm1.control.safety import SafetyReport

IDLE, ACTIVE, HOLDING, FAULT = "idle", "active", "holding", "fault"
STATUS_NAME = "dm1/controller"  # DiagnosticStatus.name of the controller node's reports (ERROR while FAULT)
STATUS_TOPIC = "/dm1/controller/status"  # where the controller node publishes them (DiagnosticArray)
COUNTERS = (
    "accepted",
    "stop_requests",
    "rejected_nonfinite",
    "rejected_malformed",
    "ignored_older",
    "rejected_future",
    "rejected_stale",
    "dropped_homing",
    "late",
    "rejected_fault",
    "rejected_mode",
    "rejected_two_sources",
    "clamped",
    "holds",
    "tick_overruns",
    "clock_jumps",
    "deadline_missed",
    "liveliness_lost",
    "faults",
    "ticks",
)


@dataclass
class ExecutorStatus:
    """Snapshot for diagnostics: state, why (latest reasons), counters, last clamp report."""

    state: str
    reasons: list[str]
    counters: dict[str, int]
    fault: str | None = None
    last_clamp: SafetyReport | None = None
    consecutive_late: int = 0
    extra: dict[str, float] = field(default_factory=dict)
    warning: str | None = None  # e.g. the FCI link losing commands (`CommandLinkMonitor`)

    @property
    def level(self) -> str:
        """Diagnostic level: error when faulted, warn when holding or warned, ok otherwise."""
        return {FAULT: "error", HOLDING: "warn"}.get(self.state, "warn" if self.warning else "ok")

    def values(self) -> dict[str, object]:
        """Key/values for a diagnostic message: state, reasons, counters and the last clamp (rounded)."""
        out: dict[str, object] = {
            "state": self.state,
            "reasons": "; ".join(self.reasons),
            **self.counters,
            **self.extra,
        }
        if self.warning:
            out["warning"] = self.warning
        if self.last_clamp is not None:
            out.update(
                last_clamp=",".join(self.last_clamp.reasons),
                clamp_original=self.last_clamp.original.round(4),
                clamp_safe=self.last_clamp.safe.round(4),
            )
        return out
