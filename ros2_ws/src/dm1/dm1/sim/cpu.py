"""Make the simulated world yield the CPU to the stack under test.

On a robot PC nothing but the stack runs: no physics, no software renderer. On a small development machine the
digital twin shares the cores with the policy, the controller and the cameras, so by default it lowers its own
priority. Everything runs on simulation time, so the world slows down in wall time when the CPU is short; the
stack under test does not.
"""

from __future__ import annotations

import os
from pathlib import Path


def process_thread_ids() -> list[int]:
    """Kernel thread ids of every thread of this process (Linux: /proc/self/task)."""
    return sorted(int(p.name) for p in Path("/proc/self/task").iterdir())


def yield_cpu(nice: int, idle: bool) -> dict[str, int | bool]:
    """Lower the CPU priority of every thread of this process, and so of every thread it starts later.

    Linux keeps the niceness and the scheduling policy per thread and a new thread inherits its creator's, so
    threads that already exist (DDS, rclpy) are changed one by one.

    nice: niceness added (0..19). idle: also run under SCHED_IDLE, the policy the kernel gives a core only
    when no normal thread wants it (a niced thread still takes ~10 % of a busy core; an idle one ~0.3 %).
    Returns what was applied: {"nice": new niceness of this thread, "idle": bool, "threads": count}.
    """
    if not 0 <= nice <= 19:
        raise ValueError(f"cpu_nice: expected 0..19, found {nice}")
    tids = process_thread_ids()
    for tid in tids:
        try:
            if nice:
                os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
            if idle:
                os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        except ProcessLookupError:  # the thread ended meanwhile
            continue
    return {"nice": os.getpriority(os.PRIO_PROCESS, 0), "idle": idle, "threads": len(tids)}
