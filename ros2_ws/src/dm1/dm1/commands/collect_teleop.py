"""`dm1 data collect --via-teleop`: scripted Lift demos recorded by the teleop node on the twin, over ROS 2.

Starts `dm1 launch franka --use-sim --no-policy --record` (twin, controller, teleop node) as a child process
group, with a parameter overlay on the bringup config: the teleop node's `device: scripted` and the Lift
proprio keys, and the twin's `seeded_resets` (episode i gets the cube of seed S + i, the poses of the
in-process `dm1 data collect --seed S`). `dm1_ros.teleop_collect.CollectDriver` then drives the episodes.
Ctrl-C or SIGTERM discards the open episode and stops the graph. ROS (rclpy, dm1_ros) is imported only
inside `collect_via_teleop`, so the core stays ROS-free.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from dm1.commands.arg_types import loopback_host_or_auto, non_negative_int, settings_problem
from dm1.errors import ReportedError

CONTROL_RATE_HZ = 20.0  # the teleop node's recording rate, = the in-process collection rate


class CollectArgumentError(ReportedError, ValueError):
    """A setting of `dm1 data collect --via-teleop` that cannot be used; raised before anything is created."""


def check_settings(seed: int, sim_host: str) -> None:
    """What the launched graph (`dm1 launch`'s `LaunchArgs`) would refuse about its settings, as a
    CollectArgumentError now, in the words of the command line's argument types (before: the launch started,
    failed with exit code 1 and left <out>/launch.log behind)."""
    problem = settings_problem(
        (("--seed", non_negative_int, seed), ("--sim-host", loopback_host_or_auto, sim_host))
    )
    if problem:
        raise CollectArgumentError(problem)


def write_config_overlay(
    src: Path, dst: Path, recovery_fraction: float = 0.0, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Copy the bringup parameter files from `src` to `dst` and add `zz_collect.yaml` (read last: it wins).

    Returns the merged parameters (node name -> parameters) the launched graph will use.
    """
    from dm1.launch_graph import load_param_files
    from dm1.sim.collect import LIFT_PROPRIO_KEYS

    for path in sorted(Path(src).glob("*.yaml")):
        shutil.copy(path, dst / path.name)
    overlay = {
        "teleop": {
            "ros__parameters": {
                "device": "scripted",
                "record": True,
                "mcap": False,
                "proprio_keys": list(LIFT_PROPRIO_KEYS),
                "control_rate_hz": CONTROL_RATE_HZ,
                "scripted_recovery_fraction": float(recovery_fraction),
                "scripted_seed": int(seed),
            }
        },
        "twin": {"ros__parameters": {"seeded_resets": True}},
    }
    (dst / "zz_collect.yaml").write_text(
        "# written by `dm1 data collect --via-teleop`\n" + yaml.safe_dump(overlay, sort_keys=False)
    )
    return load_param_files(dst)


def _graph_command(out: Path, seed: int, sim_host: str, config_dir: Path) -> list[str]:
    """`dm1 launch franka --use-sim --no-policy --record ...` as a command line."""
    from dm1.commands.graph_process import launch_command

    return launch_command(
        "--use-sim",
        "--no-policy",
        "--record",
        "--record-dir",
        str(out),
        "--seed",
        str(seed),
        "--sim-host",
        sim_host,
        "--config-dir",
        str(config_dir),
    )


def collect_via_teleop(
    out_dir: str | Path,
    episodes: int,
    seed: int = 0,
    max_sim_s: float = 20.0,
    post_success_s: float = 0.5,
    keep_failures: bool = False,
    sim_host: str = "auto",
    progress: bool = True,
    recovery_fraction: float = 0.0,
) -> dict[str, Any]:
    """Record `episodes` scripted episodes through the teleop node into `out_dir`; returns a summary dict.

    `recovery_fraction` > 0 makes that fraction of them recovery demos (the teleop node's
    `scripted_recovery_fraction`, drawn from `seed`).

    Raises ValueError when `out_dir` holds a dataset with another schema, or a setting cannot be used
    (`check_settings`; nothing is created or started then), and GraphExitedError when the graph exits (with
    its error lines), TimeoutError when it does not answer.
    """
    from dm1.commands.graph_process import graph_stopped_after, spawn_graph
    from dm1.data.schema import check_append_compatible
    from dm1.launch_graph import default_config_dir
    from dm1.sim.collect import lift_schema
    from dm1.sim.expert import check_recovery_fraction

    if episodes < 1:
        raise CollectArgumentError(f"--episodes: expected >= 1, found {episodes}")
    if not max_sim_s > 0:
        raise CollectArgumentError(f"--max-sim-s: expected > 0, found {max_sim_s}")
    check_settings(seed, sim_host)
    check_recovery_fraction(recovery_fraction, "--recovery-fraction")
    out = Path(out_dir).resolve()
    wall0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dm1_collect_cfg_") as tmp:
        params = write_config_overlay(default_config_dir(), Path(tmp), recovery_fraction, seed)
        twin = params.get("twin", {})
        size = (int(twin.get("camera_height", 96)), int(twin.get("camera_width", 96)))
        cams = tuple(twin.get("cameras", ("front", "wrist")))
        existing = check_append_compatible(out, lift_schema(cams, size, CONTROL_RATE_HZ))
        out.mkdir(parents=True, exist_ok=True)
        log_path = out / "launch.log"
        with open(log_path, "wb") as log:
            graph = spawn_graph(_graph_command(out, seed, sim_host, Path(tmp)), log)
        with graph_stopped_after(graph):
            records, startup_s = _drive(
                graph, log_path, episodes, max_sim_s, post_success_s, keep_failures, progress
            )
    wall_s = time.monotonic() - wall0
    episode_wall = sum(r["wall_s"] for r in records)
    return {
        "out": str(out),
        "via": "teleop",
        "episodes": len(records),
        "successes": sum(r["success"] for r in records),
        "kept": sum(r["saved"] for r in records),
        "existing_episodes": existing,
        "seed": seed,
        "wall_s": wall_s,
        "startup_wall_s": startup_s,
        "wall_s_per_episode": episode_wall / len(records) if records else None,
        "sim_s": sum(r["sim_s"] for r in records),
        "max_sim_s": max_sim_s,
        "records": records,
    }


def _drive(
    graph: subprocess.Popen[bytes],
    log_path: Path,
    episodes: int,
    max_sim_s: float,
    post_success_s: float,
    keep_failures: bool,
    progress: bool,
) -> tuple[list[dict[str, Any]], float]:
    """Wait for the graph, run the episodes; returns (per-episode records, startup wall seconds)."""
    import rclpy
    from dm1_ros.service_calls import checked_while_waiting
    from dm1_ros.teleop_collect import CollectDriver
    from rclpy.signals import SignalHandlerOptions
    from tqdm import tqdm

    from dm1.commands.graph_process import graph_exited, raise_if_exited, wait_graph_ready

    t0 = time.monotonic()
    records: list[dict[str, Any]] = []
    # No rclpy SIGINT handler: Ctrl-C raises KeyboardInterrupt at the driver's next spin step
    # (graph_stopped_after) and the context stays usable for the discard.
    with rclpy.init(signal_handler_options=SignalHandlerOptions.NO):
        driver = CollectDriver()
        try:
            wait_graph_ready(graph, driver, log_path, 240.0)
            startup_s = time.monotonic() - t0
            bar = tqdm(range(episodes), desc="teleop demos", disable=not progress)
            wins = 0
            for i in bar:
                try:
                    with checked_while_waiting(raise_if_exited(graph)):  # a dead graph ends a wait at once
                        outcome = driver.run_episode(i, max_sim_s, post_success_s, keep_failures)
                except Exception as exc:  # a call that timed out because the graph is gone: say so
                    if graph.poll() is None:
                        raise
                    saved = f"; the episodes saved before it are kept ({sum(r['saved'] for r in records)})"
                    raise graph_exited(graph, log_path, f"during episode {i}", saved) from exc
                wins += outcome.success
                records.append(asdict(outcome))
                bar.set_postfix(success=f"{wins}/{i + 1}")
        except BaseException:
            if graph.poll() is None:
                try:
                    driver.abort()
                except Exception as exc:  # noqa: BLE001 - the original error matters more
                    print(f"dm1 data collect: could not discard the open episode: {exc}", file=sys.stderr)
            raise
        finally:
            driver.close()
    return records, startup_s
