"""How busy the host's CPUs were during a benchmark, from the kernel's `/proc/stat` counters (ROS-free).

On a shared virtual machine a benchmark's medians follow the host: a vCPU whose hypervisor runs another guest
shows *steal* time, and other processes show as busy time. `dm1 bench` reports both beside its numbers
(`host_cpu` in the JSON), so a slow window can be told from a slow change.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: /proc/stat's aggregate "cpu" line, in this order (proc(5)); later kernels may append fields.
_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


@dataclass(frozen=True)
class CpuTimes:
    """Cumulative time (kernel ticks) all CPUs spent in each state since boot."""

    user: int
    nice: int
    system: int
    idle: int
    iowait: int
    irq: int
    softirq: int
    steal: int

    @classmethod
    def parse(cls, text: str, source: str = "/proc/stat") -> CpuTimes:
        """From the text of /proc/stat; a ValueError names `source`, the line and what was found."""
        for line in text.splitlines():
            parts = line.split()
            if parts and parts[0] == "cpu":
                values = parts[1 : 1 + len(_FIELDS)]
                if len(values) < len(_FIELDS) or not all(v.isdigit() for v in values):
                    raise ValueError(
                        f"{source}: line 'cpu': expected {len(_FIELDS)} tick counts "
                        f"({', '.join(_FIELDS)}), found {line.strip()!r}"
                    )
                return cls(*(int(v) for v in values))
        raise ValueError(f"{source}: expected an aggregate 'cpu' line, found none")

    @classmethod
    def read(cls, path: str | Path = "/proc/stat") -> CpuTimes | None:
        """The current counters, or None where the file cannot be read (not Linux, a sandbox)."""
        try:
            text = Path(path).read_text()
        except OSError:
            return None
        return cls.parse(text, str(path))

    @property
    def total(self) -> int:
        """Ticks in all states."""
        return sum(getattr(self, f) for f in _FIELDS)


def host_cpu_usage(before: CpuTimes | None, after: CpuTimes | None) -> dict[str, float] | None:
    """Fractions of all CPUs' time between two readings: {"busy_fraction": every process and the kernel,
    including the benchmark itself; "steal_fraction": taken by the hypervisor for other guests;
    "iowait_fraction"}. None when a reading is missing or no tick passed."""
    if before is None or after is None:
        return None
    elapsed = after.total - before.total
    if elapsed <= 0:
        return None
    busy = sum(getattr(after, f) - getattr(before, f) for f in ("user", "nice", "system", "irq", "softirq"))
    return {
        "busy_fraction": round(busy / elapsed, 4),
        "steal_fraction": round((after.steal - before.steal) / elapsed, 4),
        "iowait_fraction": round((after.iowait - before.iowait) / elapsed, 4),
    }
