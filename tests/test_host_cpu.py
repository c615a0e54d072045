"""`dm1.monitor.host_cpu`: the host's busy and steal time beside every `dm1 bench` result."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import pytest
from dm1.cli import main
from dm1.monitor.host_cpu import CpuTimes, host_cpu_usage

STAT = """cpu  100 5 50 800 10 1 4 30 0 0
cpu0 50 2 25 400 5 0 2 15 0 0
intr 12345
"""


def test_cpu_line_is_parsed_in_proc_stat_order() -> None:
    t = CpuTimes.parse(STAT)
    assert (t.user, t.nice, t.system, t.idle, t.iowait, t.irq, t.softirq, t.steal) == (
        100,
        5,
        50,
        800,
        10,
        1,
        4,
        30,
    )
    assert t.total == 1000


def test_usage_between_two_readings_splits_busy_steal_and_iowait() -> None:
    before = CpuTimes.parse(STAT)
    after = CpuTimes(
        user=160, nice=5, system=70, idle=900, iowait=10, irq=1, softirq=4, steal=50
    )  # +200 ticks
    assert host_cpu_usage(before, after) == {
        "busy_fraction": 0.4,
        "steal_fraction": 0.1,
        "iowait_fraction": 0.0,
    }


def test_usage_is_none_without_a_reading_or_without_elapsed_ticks() -> None:
    t = CpuTimes.parse(STAT)
    assert host_cpu_usage(None, t) is None
    assert host_cpu_usage(t, None) is None
    assert host_cpu_usage(t, t) is None


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("cpu  1 2 3\n", "found 'cpu  1 2 3'"),
        ("cpu0 1 2 3 4 5 6 7 8\n", "found none"),
        ("cpu 1 2 x 4 5 6 7 8", "x"),
    ],
)
def test_a_malformed_stat_file_names_the_file_the_line_and_what_it_found(
    tmp_path: Path, text: str, found: str
) -> None:
    stat = tmp_path / "stat"
    stat.write_text(text)
    with pytest.raises(ValueError) as err:
        CpuTimes.read(stat)
    assert str(stat) in str(err.value) and found in str(err.value)


def test_an_unreadable_stat_file_gives_no_reading(tmp_path: Path) -> None:
    assert CpuTimes.read(tmp_path / "missing") is None


def test_the_real_proc_stat_counts_a_busy_loop_as_busy_time() -> None:
    before = CpuTimes.read()
    assert before is not None
    end = time.monotonic() + 0.3
    while time.monotonic() < end:  # one core busy: at least a share of all CPUs' ticks
        pass
    usage = host_cpu_usage(before, CpuTimes.read())
    assert usage is not None
    assert all(0.0 <= v <= 1.0 for v in usage.values())
    assert usage["busy_fraction"] > 0.0


def test_every_bench_result_reports_the_host_cpu_over_the_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import dm1.commands.bench as bench

    def fake_run(kind: str, args: argparse.Namespace) -> dict[str, Any]:
        end = time.monotonic() + 0.2
        while time.monotonic() < end:
            pass
        return {"median_ms": 1.5}

    monkeypatch.setattr(bench, "_run", fake_run)
    assert main(["bench", "inference", "--json"]) == 0
    host = json.loads(capsys.readouterr().out)["host_cpu"]
    assert set(host) == {"busy_fraction", "steal_fraction", "iowait_fraction"}
    assert host["busy_fraction"] > 0.0
