"""`dm1 eval` through the full ROS 2 stack: twin → policy node → controller node → franky → franky-sim."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_loopback_host
from policy_toy_model import build_toy_model


@pytest.mark.slow
def test_short_eval_runs_episodes_through_ros_and_writes_the_report(tmp_path: Path, ros_env: dict) -> None:
    model = build_toy_model(
        tmp_path / "toy",
        cameras={"front": (96, 96, 3), "wrist": (96, 96, 3)},
        proprio_keys=("ee_pos", "gripper_width"),
        control_rate_hz=20.0,
    )
    out = tmp_path / "eval"
    cmd = [
        sys.executable, "-m", "dm1.cli", "eval", "--model", str(model), "--episodes", "2", "--max-sim-s", "2",
        "--sim-host", free_loopback_host(), "--out", str(out), "--json",
    ]  # fmt: skip
    result = subprocess.run(cmd, env=ros_env, capture_output=True, text=True, timeout=600)
    launch_log = (out / "launch.log").read_text() if (out / "launch.log").exists() else ""
    assert result.returncode == 0, result.stderr[-3000:] + launch_log[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["through_ros"] is True and summary["episodes"] == 2
    assert summary["success_rate"] == 0.0  # the toy model hovers; it never lifts the cube
    assert summary["chunks"] > 20, "the policy node published (almost) no chunks while active"
    # one ledger per published chunk; at most one per episode may still be in flight at deactivation
    assert summary["chunks"] - 2 <= summary["latency_ms"]["published_ms"]["count"] <= summary["chunks"]
    assert summary["episode_sim_s"]["median"] >= 2.0  # each episode ran to its simulated time limit
    # the toy hovers above home: the cube is measured (poses + FK) and the episode counts as "did not reach"
    assert summary["outcomes"] == {"did_not_reach": 2}, summary["outcomes"]
    episodes = json.loads((out / "episodes.json").read_text())
    for e in episodes:
        assert 0.03 < e["min_ee_cube_m"] < 1.0 and abs(e["max_cube_lift_m"]) < 0.01, e
    written = json.loads((out / "eval.json").read_text())
    assert written["episodes"] == 2 and (out / "report.md").exists() and (out / "success.png").exists()
