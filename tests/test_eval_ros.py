"""`dm1 eval` through the full ROS 2 stack: twin → policy node → controller node → franky → franky-sim."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import as_background_job, free_loopback_host, kill_twin_on
from policy_toy_model import build_toy_model


def _lift_shaped_toy(tmp_path: Path) -> Path:
    """A toy ONNX policy with the bundled model's inputs (two 96x96 cameras, ee_pos + gripper, 20 Hz)."""
    return build_toy_model(
        tmp_path / "toy",
        cameras={"front": (96, 96, 3), "wrist": (96, 96, 3)},
        proprio_keys=("ee_pos", "gripper_width"),
        control_rate_hz=20.0,
    )


def _eval_cmd(model: Path, out: Path, episodes: int, max_sim_s: float, *extra: str) -> list[str]:
    """`dm1 eval` of `model` on its own twin (a free loopback host), writing to `out`."""
    return [
        sys.executable, "-m", "dm1.cli", "eval", "--model", str(model), "--episodes", str(episodes),
        "--max-sim-s", str(max_sim_s), "--sim-host", free_loopback_host(), "--out", str(out), *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_interrupted_eval_reports_finished_episodes_and_stops_graph(tmp_path: Path, ros_env: dict) -> None:
    import signal
    import time

    model = _lift_shaped_toy(tmp_path)
    out = tmp_path / "eval"
    cmd = _eval_cmd(model, out, 50, 1)
    with open(tmp_path / "eval.log", "wb") as log:  # SIGINT ignored at start, as in a background job
        proc = subprocess.Popen(as_background_job(cmd), env=ros_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 400
        while b"success=0/1" not in (tmp_path / "eval.log").read_bytes():  # tqdm: the first episode ended
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "eval.log").read_text()
            time.sleep(0.2)
        # saved when the episode ended (before the progress bar shows it): a crash now would lose nothing
        saved = json.loads((out / "episodes.json").read_text())
        assert len(saved) >= 1 and saved[0]["index"] == 0 and not (out / "eval.json").exists()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    # the report is written, and the exit code (130, as `dm1 train` and `data collect`) says it is partial
    assert proc.returncode == 130, (tmp_path / "eval.log").read_text()[-3000:]
    summary = json.loads((out / "eval.json").read_text())
    assert 1 <= summary["episodes"] < 50 and summary["extra"]["interrupted_after"] == summary["episodes"]
    assert "interrupted: the report covers" in (tmp_path / "eval.log").read_text()
    assert "[launch] exit code" in (out / "launch.log").read_text()  # the graph was stopped


@pytest.mark.slow
def test_an_eval_whose_graph_dies_reports_the_finished_episodes_and_why(tmp_path: Path, procs) -> None:
    """The twin killed mid-run: the driver's wait ends at its next step (no service timeout), and `dm1 eval`
    says the graph exited, with the launcher's error lines, writes the report of the episodes that finished,
    and exits 2 (a traceback before, and no report)."""
    from conftest import wait_for

    model = _lift_shaped_toy(tmp_path)
    out = tmp_path / "eval"
    cmd = _eval_cmd(model, out, 50, 1)
    proc = procs.start("eval", cmd)  # stopped at teardown whatever happens
    wait_for(lambda: proc.poll() is None and (out / "episodes.json").exists(), 400, 0.2, "a finished episode")
    assert kill_twin_on(cmd[cmd.index("--sim-host") + 1]) == 1
    proc.wait(timeout=300)
    text = procs.log("eval")
    assert proc.returncode == 2, text[-3000:]
    assert "dm1 eval: error: the launched graph exited during episode" in text and "Traceback" not in text
    assert "[launch] ERROR: required node twin exited with code -9" in text
    summary = json.loads((out / "eval.json").read_text())
    assert summary["episodes"] >= 1
    assert f"the report covers the {summary['episodes']} finished episodes" in text


@pytest.mark.slow
def test_eval_through_ros_writes_the_report_and_a_reflex_mid_episode_is_a_controller_fault_the_next_recovers(
    tmp_path: Path, ros_env: dict
) -> None:
    """`dm1 eval --json` of 3 episodes through the launched graph, with a reflex injected into the first
    episode the drill sees begin: the report (stdout summary, episodes.json, eval.json, report.md, plot) of
    a clean run, the faulted episode ended by the fault, the next one recovered and run to its time limit.
    (One eval for both: each `dm1 eval` starts its own graph, the slowest part of either test.)"""
    import time

    import rclpy
    from lifecycle_msgs.msg import TransitionEvent
    from rclpy.executors import SingleThreadedExecutor
    from std_srvs.srv import Trigger
    from trajectory_msgs.msg import MultiDOFJointTrajectory

    max_sim_s = 2.0
    model = _lift_shaped_toy(tmp_path)
    out = tmp_path / "eval"
    cmd = _eval_cmd(model, out, 3, max_sim_s, "--json")
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("reflex_drill", context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    chunks: list[int] = []
    node.create_subscription(
        MultiDOFJointTrajectory, "/dm1/action_chunk/cartesian", lambda m: chunks.append(len(m.points)), 10
    )
    # created now, so the twin's service is discovered while the graph starts, not in the episode's time
    client = node.create_client(Trigger, "/twin/inject_reflex")
    # The graph's policy autostarts; `dm1 eval` deactivates it, homes, resets and activates it for episode 0.
    # Chunks count from that activation (a reflex before it would be the first home's fault, not episode 0's).
    # Under load this node may discover the policy node only after episode 0 began: the drill then sees the
    # activation of episode 1 first, so three episodes run and the assertions follow the faulted one.
    lifecycle = {"deactivated": False, "episode_began": False}

    def on_transition(msg: TransitionEvent) -> None:
        if msg.goal_state.label == "inactive" and msg.start_state.label == "deactivating":
            lifecycle["deactivated"] = True
        elif msg.goal_state.label == "active" and lifecycle["deactivated"]:
            lifecycle["episode_began"] = True
            chunks.clear()

    node.create_subscription(TransitionEvent, "/policy_node/transition_event", on_transition, 10)
    log_path, stdout_path = tmp_path / "eval.log", tmp_path / "eval.stdout"
    with open(log_path, "wb") as log, open(stdout_path, "wb") as stdout:  # stdout: the --json summary
        proc = subprocess.Popen(cmd, env=ros_env, stdout=stdout, stderr=log)
    try:
        deadline = time.monotonic() + 400
        while not lifecycle["episode_began"] or sum(1 for n in chunks if n) < 5:  # episode 0 under the policy
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            executor.spin_once(timeout_sec=0.1)
        assert client.wait_for_service(timeout_sec=30), "/twin/inject_reflex not available"
        for _ in range(20):  # "nothing to abort" while the controller holds (no motion runs): try again
            future = client.call_async(Trigger.Request())
            executor.spin_until_future_complete(future, timeout_sec=60)
            assert future.done(), "/twin/inject_reflex did not answer"
            if future.result().success:
                break
        assert future.result().success, future.result().message
        proc.wait(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
    launch_log = (out / "launch.log").read_text() if (out / "launch.log").exists() else ""
    assert proc.returncode == 0, log_path.read_text()[-3000:] + launch_log[-3000:]
    assert "[launch] exit code 0" in launch_log and "context is invalid" not in launch_log, launch_log[-3000:]
    summary = json.loads(stdout_path.read_text().strip().splitlines()[-1])
    assert summary["through_ros"] is True and summary["episodes"] == 3
    assert summary["success_rate"] == 0.0  # the toy model hovers; it never lifts the cube
    assert summary["chunks"] > 20, "the policy node published (almost) no chunks while active"
    # one ledger per published chunk; at most one per episode may still be in flight at deactivation
    assert summary["chunks"] - 3 <= summary["latency_ms"]["published_ms"]["count"] <= summary["chunks"]
    assert summary["episode_sim_s"]["median"] >= max_sim_s  # two of the three ran to their simulated limit
    # the toy hovers above home: the cube is measured (poses + FK) and the episode counts as "did not reach"
    assert summary["outcomes"] == {"controller_fault": 1, "did_not_reach": 2}, summary["outcomes"]
    episodes = json.loads((out / "episodes.json").read_text())
    assert [e["seed"] for e in episodes] == [1000, 1001, 1002]  # the twin's seeded resets, named per episode
    for e in episodes:
        assert 0.03 < e["min_ee_cube_m"] < 1.0 and abs(e["max_cube_lift_m"]) < 0.01, e
        assert e["final_ee_cube_m"] >= e["min_ee_cube_m"] and 0.0 <= e["final_gripper_width_m"] <= 0.081, e
    faulted = [e["index"] for e in episodes if e["fault"]]
    assert len(faulted) == 1 and faulted[0] < 2, episodes  # one reflex, in the episode the drill saw begin
    first, second = episodes[faulted[0]], episodes[faulted[0] + 1]
    assert "reflex" in first["fault"].lower(), first
    assert not first["success"] and first["sim_duration_s"] < max_sim_s - 0.5, first  # the fault ended it
    # the next episode's home was refused (fault latched), then recovered, homed and ran its full time
    assert second["recovered"] and second["fault"] is None, second
    assert second["sim_duration_s"] >= max_sim_s and second["chunks"] > 20, second
    assert [bool(e["recovered"]) for e in episodes].count(True) == 1, episodes
    written = json.loads((out / "eval.json").read_text())
    assert written["episodes"] == 3 and written["outcomes"] == summary["outcomes"]
    assert "controller_fault: " in (out / "report.md").read_text() and (out / "success.png").exists()


@pytest.mark.slow
def test_terminated_bench_loop_stops_its_graph(tmp_path: Path, ros_env: dict) -> None:
    import signal
    import time

    model = _lift_shaped_toy(tmp_path)
    cmd = [
        sys.executable, "-m", "dm1.cli", "bench", "loop", "--model", str(model), "--seconds", "600",
        "--sim-host", free_loopback_host(),
    ]  # fmt: skip
    launch_log = tmp_path / "runs" / "bench_loop" / "launch.log"  # bench loop writes under its cwd
    with open(tmp_path / "bench.log", "wb") as log:
        proc = subprocess.Popen(cmd, env=ros_env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while b"policy_node ready" not in (launch_log.read_bytes() if launch_log.exists() else b""):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "bench.log").read_text()
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)  # e.g. a job scheduler's stop; the graph has its own session
        proc.wait(timeout=150)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    text = (tmp_path / "bench.log").read_text()
    assert proc.returncode == 143, text[-3000:]  # 128 + SIGTERM, as dm1 train and data collect
    assert "dm1 bench loop: interrupted; nothing measured" in text
    assert "[launch] exit code" in launch_log.read_text()  # the graph was stopped, not orphaned
