"""The twin yields the CPU: every thread it has, and every one it starts later, runs niced and SCHED_IDLE."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from dm1.scheduling import raise_to_fifo, yield_cpu

CHILD = textwrap.dedent(
    """
    import json, os, threading
    from dm1.scheduling import process_thread_ids, yield_cpu

    hold = threading.Event()
    before = threading.Thread(target=hold.wait)  # a thread that exists before the call (like DDS's)
    before.start()
    applied = yield_cpu({nice}, {idle})
    after = threading.Thread(target=hold.wait)  # one started after it (like the physics and render threads)
    after.start()
    tids = process_thread_ids()
    seen = {{t: [os.sched_getscheduler(t), os.getpriority(os.PRIO_PROCESS, t)] for t in tids}}
    hold.set()
    print(json.dumps({{"applied": applied, "threads": seen, "base": {base}}}))
    """
)


def _run_child(nice: int, idle: bool) -> dict:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    code = CHILD.format(nice=nice, idle=idle, base=base)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)


def test_every_thread_before_and_after_the_call_is_idle_and_niced() -> None:
    got = _run_child(10, True)
    threads = got["threads"]
    assert len(threads) >= 3  # main, the thread from before, the thread from after
    want_nice = min(19, got["base"] + 10)
    for policy, nice in threads.values():
        assert policy == os.SCHED_IDLE
        assert nice == want_nice
    assert got["applied"] == {"nice": want_nice, "idle": True, "threads": 2}


def test_idle_off_leaves_the_normal_policy_and_only_nices() -> None:
    got = _run_child(5, False)
    for policy, nice in got["threads"].values():
        assert policy == os.sched_getscheduler(0)  # inherited from this process, unchanged
        assert nice == min(19, got["base"] + 5)


@pytest.mark.parametrize("nice", [-1, 20])
def test_out_of_range_niceness_is_refused_naming_the_parameter(nice: int) -> None:
    with pytest.raises(ValueError, match=r"cpu_nice: expected 0\.\.19, found"):
        yield_cpu(nice, False)


RAISE_CHILD = textwrap.dedent(
    """
    import json, os, threading
    from dm1.scheduling import ThreadScheduling, process_thread_ids, raise_to_fifo

    ThreadScheduling(os.SCHED_OTHER, 0).apply()  # whatever the test runner's thread runs under
    hold = threading.Event()
    dds = threading.Thread(target=hold.wait)  # a thread from before the call (like DDS's)
    dds.start()
    applied = raise_to_fifo(10)
    later = threading.Thread(target=hold.wait)  # started after (like the executor's): inherits
    later.start()
    seen = {t: [os.sched_getscheduler(t), os.sched_getparam(t).sched_priority] for t in process_thread_ids()}
    hold.set()
    ids = {"main": threading.main_thread().native_id, "dds": dds.native_id, "later": later.native_id}
    print(json.dumps({"applied": [applied.policy, applied.priority], "threads": seen, **ids}))
    """
)


@pytest.mark.skipif(os.geteuid() != 0, reason="SCHED_FIFO needs root (or an rtprio limit) on this machine")
def test_raise_to_fifo_lifts_the_caller_and_what_it_starts_but_not_older_threads() -> None:
    out = subprocess.run([sys.executable, "-c", RAISE_CHILD], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    threads = {int(k): tuple(v) for k, v in got["threads"].items()}
    fifo10 = (os.SCHED_FIFO, 10)
    assert tuple(got["applied"]) == fifo10
    assert threads[got["main"]] == fifo10 and threads[got["later"]] == fifo10
    assert threads[got["dds"]][0] != os.SCHED_FIFO  # older threads keep their own


@pytest.mark.parametrize("priority", [0, 99])
def test_a_priority_outside_1_to_98_is_refused(priority: int) -> None:
    with pytest.raises(ValueError, match=r"rt_priority: expected 1\.\.98 \(below libfranka's 99\), found"):
        raise_to_fifo(priority)


def test_rt_priority_zero_leaves_the_thread_alone() -> None:
    from dm1.scheduling import ThreadScheduling, try_raise_to_fifo

    own = ThreadScheduling.current()
    assert try_raise_to_fifo(0) is None
    assert ThreadScheduling.current() == own
