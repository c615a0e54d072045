"""`dm1 data collect --via-teleop`: scripted demos recorded by the teleop node through the ROS 2 graph.

Fast tests cover the ROS-free parts (schema check, parameter overlay, scripted device between episodes). The
slow tests run the real command (twin + controller + teleop node as processes, driven in simulation time);
every wait is bounded.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import PYTHON, as_background_job, free_loopback_host, kill_twin_on, wait_for
from dm1.data.schema import EpisodeSchema, check_append_compatible
from dm1.data.synthetic import make_synthetic_dataset
from dm1.sim.collect import LIFT_PROPRIO_KEYS, UNITS, lift_schema
from dm1.teleop.device_interface import DeviceContext
from dm1.teleop.devices import ScriptedExpertDevice
from dm1.teleop.loop import TeleopConfig, TeleopLoop
from dm1.teleop.recorder import EE_ACTION_NAMES

LIFT_96 = lift_schema(("front", "wrist"), (96, 96), 20.0)


# ---- fast: ROS-free parts --------------------------------------------------------------------------------
def test_schema_check_accepts_the_same_dataset_and_refuses_a_different_one(tmp_path: Path) -> None:
    assert check_append_compatible(tmp_path / "missing", LIFT_96) == 0
    same = tmp_path / "same"
    make_synthetic_dataset(same, n_episodes=1, episode_len=8)  # the twin schema at 96x96
    assert check_append_compatible(same, LIFT_96) == 1
    small = tmp_path / "small"
    make_synthetic_dataset(small, n_episodes=1, episode_len=8, image_size=(32, 32))
    with pytest.raises(ValueError, match="image_size: expected 96x96, found 32x32"):
        check_append_compatible(small, LIFT_96)
    renamed = EpisodeSchema(**{**LIFT_96.__dict__, "action_names": ("ee_x", "ee_y", "ee_z", "gripper")})
    with pytest.raises(ValueError, match="action_names: expected"):
        check_append_compatible(same, renamed)


def test_collect_refuses_a_conflicting_directory_before_starting_the_graph(tmp_path: Path, capsys) -> None:
    from dm1.cli import main

    out = tmp_path / "ds"
    make_synthetic_dataset(out, n_episodes=1, episode_len=8, image_size=(32, 32))
    assert main(["data", "collect", "--via-teleop", "-o", str(out), "--episodes", "1"]) == 2
    assert "holds a different dataset" in capsys.readouterr().err
    assert not (out / "launch.log").exists()


def test_collect_refuses_a_sim_host_that_is_not_loopback_before_anything_is_created(tmp_path: Path, capsys):
    """Before: the launch started, failed on its own check (rc 1) and left <out>/launch.log behind."""
    from dm1.cli import main

    out = tmp_path / "ds"
    argv = ["data", "collect", "--via-teleop", "-o", str(out), "--episodes", "1", "--sim-host", "10.0.0.1"]
    try:
        code = main(argv)
    except SystemExit as exc:  # refused by argparse
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "--sim-host: expected auto or a loopback address 127.x.y.z, found 10.0.0.1" in err, err
    assert "Traceback" not in err and not out.exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seed": -5}, "--seed: expected an integer >= 0, found -5"),
        ({"sim_host": "x"}, "--sim-host: expected"),
    ],
)
def test_collect_via_teleop_checks_seed_and_host_before_creating_the_output(tmp_path: Path, kwargs, message):
    from dm1.commands.collect_teleop import collect_via_teleop

    with pytest.raises(ValueError, match=message):
        collect_via_teleop(tmp_path / "ds", 1, progress=False, **kwargs)
    assert not (tmp_path / "ds").exists()


def test_config_overlay_selects_the_scripted_device_lift_keys_and_seeded_resets(tmp_path: Path) -> None:
    from dm1.commands.collect_teleop import write_config_overlay
    from dm1.launch_graph import default_config_dir

    params = write_config_overlay(default_config_dir(), tmp_path)
    assert params["teleop"]["device"] == "scripted" and params["teleop"]["record"] is True
    assert tuple(params["teleop"]["proprio_keys"]) == LIFT_PROPRIO_KEYS
    assert params["twin"]["seeded_resets"] is True
    assert params["controller_node"]  # the other bringup files are carried over unchanged


class _Expert:
    def act(self, ee, width, cube, t):
        return np.array([*cube[:2], ee[2], 0.0], np.float32)


def test_scripted_device_idles_between_episodes_and_start_reseeds_the_target() -> None:
    dev = ScriptedExpertDevice(expert_factory=_Expert)
    loop = TeleopLoop(TeleopConfig(), dev, None)
    assert loop.open_device(0.0)
    ee, cube = np.array([0.3, 0.0, 0.5]), np.array([0.6, 0.1, 0.025])

    def tick(t: float, pos: np.ndarray):
        return loop.step(DeviceContext(t, 0.05, ee_pos=pos, gripper_width=0.08, cube_pos=cube))

    assert tick(1.0, ee).action is None  # idle: nothing published, the arm can be homed
    loop.target = np.array([0.6, 0.1, 0.3])  # where the previous episode ended
    loop.event("start", 1.05)
    out = tick(1.05, ee)  # the arm was homed to `ee` in between
    step = out.action[:3] - ee
    # From `ee` (not the old target) towards the cube, at max speed:
    assert np.linalg.norm(step) == pytest.approx(0.3 / 20.0, rel=1e-4)
    assert step[0] > 0 and out.action[3] == 0.0
    loop.event("discard", 1.1)
    assert tick(1.3, ee).action is None  # idle again once the deadman times out


def test_overlay_passes_the_recovery_fraction_and_seed_to_the_teleop_node(tmp_path: Path) -> None:
    from dm1.commands.collect_teleop import write_config_overlay
    from dm1.launch_graph import default_config_dir

    params = write_config_overlay(default_config_dir(), tmp_path, recovery_fraction=0.25, seed=3000)
    assert (
        params["teleop"]["scripted_recovery_fraction"] == 0.25 and params["teleop"]["scripted_seed"] == 3000
    )


def test_scripted_recovery_demo_is_recorded_with_its_miss_marked_perturbed(tmp_path: Path) -> None:
    from dm1.data.episode import read_episode
    from dm1.sim.expert import ScriptedLiftExpert
    from dm1.teleop.recorder import EpisodeRecorder, RecorderConfig

    dev = ScriptedExpertDevice(expert_factory=ScriptedLiftExpert, recovery_fraction=1.0, seed=3)
    rec = EpisodeRecorder(RecorderConfig(out_dir=tmp_path / "ds", min_free_mb=0.0))
    loop = TeleopLoop(TeleopConfig(), dev, rec)
    assert loop.open_device(0.0)
    q = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])
    ee, grip, cube = np.array([0.5, 0.0, 0.3]), 0.0, np.array([0.5, 0.0, 0.025])
    loop.event("start", 1.0)
    for k in range(160):  # a point-mass arm that follows the target; the fingers never hold anything
        t = 1.0 + 0.05 * k
        for cam in rec.config.camera_names:
            rec.on_image(cam, np.zeros((24, 32, 3), np.uint8), t - 0.01, t)
        width = 0.0 if grip >= 0.5 else 0.08
        rec.on_joint_state(q, width, t - 0.002, t)
        out = loop.step(DeviceContext(t, 0.05, ee_pos=ee, gripper_width=width, cube_pos=cube))
        ee, grip = out.action[:3].astype(float), float(out.action[3])
    loop.event("stop_save", 9.0)
    ep = read_episode(tmp_path / "ds" / "episode_000000.h5", load_images=False)
    assert ep.perturbed is not None
    bad = np.flatnonzero(ep.perturbed)
    assert bad[0] > 0 and len(bad) == bad[-1] - bad[0] + 1 and bad[-1] < ep.length - 1
    assert ep.actions[bad, 3].max() == 1.0  # the miss closed the gripper; after it the expert re-opens
    assert ep.actions[bad[-1] + 1, 3] == 0.0


# ---- slow: the real command --------------------------------------------------------------------------------
def _collect_cmd(out: Path, episodes: int, *extra: str) -> list[str]:
    return [
        *(PYTHON, "-m", "dm1.cli", "data", "collect", "--via-teleop"),
        *("-o", str(out), "--episodes", str(episodes), "--sim-host", free_loopback_host(), *extra),
    ]


@pytest.mark.slow
def test_collect_via_teleop_saves_valid_successful_episodes_for_training(ros_env, tmp_path: Path) -> None:
    from dm1.config import DataConfig, ModelConfig
    from dm1.data.dataset import WindowDataset
    from dm1.data.episode import read_episode
    from dm1.data.tools import validate_dataset

    out = tmp_path / "ds"
    proc = subprocess.run(
        _collect_cmd(out, 2, "--seed", "5", "--json"),
        env=ros_env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, f"{proc.stderr[-3000:]}\nlaunch log: {out / 'launch.log'}"
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["episodes"] == 2 and summary["successes"] == 2 and summary["kept"] == 2, summary
    assert [r["seed"] for r in summary["records"]] == [5, 6]  # seeded resets: the in-process cube poses
    assert [r["file"] for r in summary["records"]] == ["episode_000000.h5", "episode_000001.h5"]
    assert 0 < summary["sim_s"] <= 2 * 20.0 and summary["wall_s_per_episode"] > 0
    assert not list(out.glob("*.partial"))
    launch_log = (out / "launch.log").read_text()
    assert "[launch] exit code 0" in launch_log
    assert "fault latched" not in launch_log, launch_log[-3000:]  # the driver never commands the arm itself

    report = validate_dataset(out)
    assert report["num_episodes"] == 2 and report["num_valid"] == 2, json.dumps(report, indent=1)
    for ep in report["episodes"]:
        assert ep["success"] is True and ep["out_of_range_actions"] == 0 and ep["length"] > 20
    for path in sorted(out.glob("episode_*.h5")):  # the in-process collection's layout
        ep = read_episode(path, load_images=False)
        assert EpisodeSchema.of(ep) == LIFT_96 and ep.units == UNITS
        assert ep.action_names == list(EE_ACTION_NAMES) and ep.action_space == "ee_position"
        assert ep.proprio["gripper_width"][0, 0] > 0.07  # starts open, at home
    ds = WindowDataset(out, ModelConfig(), DataConfig(dataset_dir=str(out), proprio_keys=LIFT_PROPRIO_KEYS))
    assert len(ds) > 0


@pytest.mark.slow
def test_interrupt_of_background_run_discards_open_episode_and_stops_graph(ros_env, tmp_path: Path) -> None:
    """Ctrl-C in a collection appending to a dataset (SIGINT ignored at its start, as in a background job):
    the open episode (episode 1, after the one already there) is discarded, the saved one kept, the graph
    stopped, exit 130. The saved episode is a synthetic one of the same layout rather than a lift recorded by
    this run first (a lift and a home more; the graph-dies test below covers a run's own saved episode)."""
    out = tmp_path / "ds"
    make_synthetic_dataset(out, n_episodes=1, episode_len=8)  # the twin schema at 96x96: appendable
    saved_before = (out / "episode_000000.h5").read_bytes()
    with open(tmp_path / "collect.log", "wb") as log:
        proc = subprocess.Popen(  # SIGINT ignored at start, as in a shell's background job (`cmd &`)
            as_background_job(_collect_cmd(out, 5)), env=ros_env, stdout=log, stderr=subprocess.STDOUT
        )
    launch_log = out / "launch.log"

    def logs() -> str:
        collect = (tmp_path / "collect.log").read_text(errors="replace")
        graph = launch_log.read_text(errors="replace") if launch_log.exists() else ""
        return f"--- collect.log (end) ---\n{collect[-2000:]}\n--- launch.log (end) ---\n{graph[-6000:]}"

    def second_episode_recording() -> bool:
        if proc.poll() is not None:  # it ended before the interrupt: fail now, with both logs
            raise AssertionError(f"collect exited with {proc.returncode} before episode 1\n{logs()}")
        return launch_log.exists() and "recording episode 1" in launch_log.read_text(errors="replace")

    try:
        wait_for(second_episode_recording, 420, 0.2, "the second episode to start recording", detail=logs)
        time.sleep(1.0)  # mid-episode
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 130, (tmp_path / "collect.log").read_text(errors="replace")[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert sorted(p.name for p in out.glob("episode_*")) == ["episode_000000.h5"]  # no .partial, no episode 1
    assert (out / "episode_000000.h5").read_bytes() == saved_before
    text = launch_log.read_text(errors="replace")
    assert "discarded episode 1" in text and "[launch] exit code" in text  # the graph was stopped


@pytest.mark.slow
def test_a_collection_whose_graph_dies_says_so_and_keeps_the_saved_episodes(procs, tmp_path: Path) -> None:
    """The twin killed while episode 1 records: `dm1 data collect` names the exited graph and the launcher's
    error lines (a service-timeout traceback before), and episode 0 stays on disk."""
    out = tmp_path / "ds"
    out.mkdir()
    cmd = _collect_cmd(out, 5)
    proc = procs.start("collect", cmd)  # stopped at teardown whatever happens
    launch_log = out / "launch.log"

    def recording_episode_1() -> bool:
        return proc.poll() is None and "recording episode 1" in (
            launch_log.read_text(errors="replace") if launch_log.exists() else ""
        )

    wait_for(recording_episode_1, 420, 0.2, "the second episode to start recording")
    assert kill_twin_on(cmd[cmd.index("--sim-host") + 1]) == 1
    proc.wait(timeout=300)
    text = procs.log("collect")
    assert proc.returncode != 0 and "Traceback" not in text, text[-3000:]
    assert "error: the launched graph exited during episode 1" in text, text[-3000:]
    assert "[launch] ERROR: required node twin exited with code -9" in text
    assert "the episodes saved before it are kept (1)" in text
    assert (out / "episode_000000.h5").is_file()
