"""CPU scheduling of the stack's threads (Linux keeps the policy, real-time priority and niceness per thread).

- franky's 1 kHz control thread: SCHED_FIFO 99, what libfranka sets (`scheduled_as` in `FrankyBackend`).
- The controller node's executor thread: SCHED_FIFO 10, below it (`raise_to_fifo`), so control ticks, holds
  and chunk hand-overs preempt the policy's inference and the cameras, never franky's loop.
- The policy node's executor and onnxruntime threads: SCHED_FIFO 5, below the controller, so an inference is
  not sliced up by whatever else runs (the cameras' and the recorder's DDS traffic, a simulator, a browser).
- The digital twin: niced and SCHED_IDLE (`yield_cpu`): on a robot PC nothing simulates the world, so on a
  small development machine the twin takes only what the stack leaves (everything runs on simulation time).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ThreadScheduling:
    """A thread's scheduling policy and real-time priority."""

    policy: int
    priority: int

    @classmethod
    def current(cls) -> ThreadScheduling:
        """The calling thread's."""
        return cls(os.sched_getscheduler(0), os.sched_getparam(0).sched_priority)

    def apply(self, tid: int = 0) -> None:
        """Give thread `tid` (0 = the calling one) this scheduling; threads it starts later inherit it."""
        os.sched_setscheduler(tid, self.policy, os.sched_param(self.priority))


@contextlib.contextmanager
def scheduled_as(sched: ThreadScheduling) -> Iterator[None]:
    """Run the block with the calling thread under `sched` (threads it starts inherit it), then restore."""
    own = ThreadScheduling.current()
    if own == sched:
        yield
        return
    sched.apply()
    try:
        yield
    finally:
        own.apply()


def process_thread_ids(pid: int | str = "self") -> list[int]:
    """Kernel thread ids of every thread of process `pid` (default: this one; Linux: /proc/<pid>/task)."""
    return sorted(int(p.name) for p in Path(f"/proc/{pid}/task").iterdir())


def yield_cpu(nice: int, idle: bool) -> dict[str, int | bool]:
    """Lower the CPU priority of every thread of this process, and so of every thread it starts later.

    nice: niceness added (0..19). idle: also run under SCHED_IDLE, the policy the kernel gives a core only
    when no normal thread wants it (a thread at nice 10 still takes ~10 % of a contended core).
    Returns what was applied: {"nice": new niceness of the calling thread, "idle": bool, "threads": count}.
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


def raise_to_fifo(priority: int) -> ThreadScheduling:
    """Run the calling thread, and every thread it starts from now on, under SCHED_FIFO `priority`.

    Threads that already exist keep their scheduling: a node's DDS threads stay at normal priority, so its
    200 Hz /clock and /joint_states traffic does not preempt the policy's inference on every packet.
    Returns the scheduling applied. Raises PermissionError where the kernel refuses (no root, no `rtprio`
    limit: see docs/real-robot.md) and ValueError for a priority outside 1..98.
    """
    if not 1 <= priority <= 98:
        raise ValueError(f"rt_priority: expected 1..98 (below libfranka's 99), found {priority}")
    sched = ThreadScheduling(os.SCHED_FIFO, priority)
    sched.apply()
    return sched


def try_raise_to_fifo(priority: int, name: str = "rt_priority") -> str | None:
    """`raise_to_fifo` for a node's ``rt_priority`` parameter: 0 does nothing. Returns a warning to log where
    the kernel refuses (the node then runs at normal priority), else None."""
    if priority == 0:
        return None
    try:
        raise_to_fifo(priority)
    except PermissionError as exc:
        return (
            f"{name} {priority}: the kernel refused SCHED_FIFO ({exc}); running at normal priority "
            "(grant rtprio: docs/real-robot.md)"
        )
    return None
