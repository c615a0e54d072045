"""`dm1 launch` arguments: `--dry-run` prints the graph's commands (one per node, the next free loopback
address beside another twin, quietly into a closed pipe); bad arguments fail with one clear line."""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Any

from conftest import REPO
from dm1.commands.graph_process import launch_command


def _dry_run(
    env: dict[str, str], *args: str, stdout: Any = subprocess.PIPE
) -> subprocess.CompletedProcess[str]:
    """`dm1 launch franka --use-sim --no-policy <args> --dry-run`, stderr captured (stdout unless given)."""
    cmd = launch_command("--use-sim", "--no-policy", *args, "--dry-run")
    return subprocess.run(
        cmd, stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=60, env=env, cwd=REPO
    )


def test_dry_run_prints_one_command_per_node(ros_env: dict[str, str]) -> None:
    out = _dry_run(ros_env, "--foxglove")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert [ln.split()[2] for ln in lines] == [
        "dm1_sim.twin_node",
        "dm1_ros.controller_node",
        "dm1_ros.foxglove_node",
    ]
    assert all("use_sim_time:=true" in ln for ln in lines[1:])


def test_a_sim_launch_beside_another_twin_serves_on_the_next_free_loopback_address(ros_env) -> None:
    """127.0.0.1 serves another franky-sim (a launch in another ROS domain): twin and controller move on."""
    import re

    from test_sim_hosts import listening

    with listening("127.0.0.1", 1337):
        out = _dry_run(ros_env)
    assert out.returncode == 0, out.stderr
    twin_host = re.search(r"host:=(127\.0\.0\.\d+)", out.stdout.splitlines()[0]).group(1)
    assert twin_host != "127.0.0.1" and f"robot_ip:={twin_host}" in out.stdout.splitlines()[1], out.stdout


def test_dry_run_into_a_closed_pipe_exits_quietly(ros_env: dict[str, str]) -> None:
    """`dm1 launch ... --dry-run | head -1`: the reader leaves early; no traceback, exit 141 like SIGPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        out = _dry_run(ros_env, stdout=write_end)
    finally:
        os.close(write_end)
    assert out.returncode == 128 + signal.SIGPIPE and out.stderr == "", out.stderr


def test_bad_arguments_fail_with_a_clear_message(ros_env: dict[str, str]) -> None:
    out = subprocess.run(
        launch_command("--model", "/nonexistent/model"),
        capture_output=True,
        text=True,
        timeout=60,
        env=ros_env,
    )
    assert out.returncode == 2
    assert "robot_ip" in out.stderr
