"""Export round trips: LeRobot v3 (parquet) and robomimic HDF5, read back following their schemas."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from dm1.data.convert import export_lerobot, export_robomimic
from dm1.data.convert_readback import read_lerobot, read_robomimic
from dm1.data.episode import read_episode
from dm1.data.synthetic import make_synthetic_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("convert") / "ds"
    make_synthetic_dataset(out, n_episodes=3, episode_len=10, image_size=(16, 20))
    return out


def _source(dataset):
    return [read_episode(p) for p in sorted(dataset.glob("episode_*.h5"))]


def test_lerobot_v3_round_trip_is_exact(dataset, tmp_path):
    root = export_lerobot(dataset, tmp_path / "lerobot", task="lift the red cube")
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 3 and info["total_frames"] == 30
    assert info["features"]["observation.images.front"]["dtype"] == "image"
    assert info["features"]["observation.state"]["names"][:3] == ["ee_pos_0", "ee_pos_1", "ee_pos_2"]
    assert (root / "data/chunk-000/file-000.parquet").is_file()
    assert set(json.loads((root / "meta/stats.json").read_text())) == {"action", "observation.state"}
    back = read_lerobot(root)
    for src, ep in zip(_source(dataset), back, strict=True):
        assert ep["task"] == "lift the red cube" and ep["success"] == src.success
        np.testing.assert_array_equal(ep["action"], src.actions)
        np.testing.assert_array_equal(ep["state"][:, :3], src.proprio["ee_pos"])
        np.testing.assert_array_equal(ep["images"]["wrist"], src.images["wrist"])  # PNG is lossless
        np.testing.assert_allclose(ep["timestamp"], src.timestamps - src.timestamps[0], atol=1e-6)


def test_lerobot_splits_data_files_by_size(dataset, tmp_path):
    root = export_lerobot(dataset, tmp_path / "lerobot", data_file_mb=1e-6)
    assert len(list((root / "data/chunk-000").glob("file-*.parquet"))) == 3
    assert [ep["action"].shape[0] for ep in read_lerobot(root)] == [10, 10, 10]


def test_robomimic_round_trip_follows_its_layout(dataset, tmp_path):
    path = export_robomimic(dataset, tmp_path / "demo.hdf5")
    with h5py.File(path) as f:
        assert sorted(f["data"]) == ["demo_0", "demo_1", "demo_2"]
        assert f["data"].attrs["total"] == 30
        assert json.loads(f["data"].attrs["env_args"])["env_kwargs"]["control_freq"] == 20.0
        assert f["data/demo_0"].attrs["num_samples"] == 10
    back = read_robomimic(path)
    for src, demo in zip(_source(dataset), back, strict=True):
        np.testing.assert_allclose(demo["actions"], src.actions)
        np.testing.assert_array_equal(demo["obs"]["front_image"], src.images["front"])
        np.testing.assert_allclose(demo["obs"]["gripper_width"], src.proprio["gripper_width"])
        assert demo["dones"][-1] == 1 and demo["dones"][:-1].sum() == 0
        assert demo["rewards"].sum() == (1.0 if src.success else 0.0)


def test_export_refuses_to_overwrite(dataset, tmp_path):
    (tmp_path / "exists.hdf5").write_bytes(b"keep")
    with pytest.raises(FileExistsError, match="exists.hdf5"):
        export_robomimic(dataset, tmp_path / "exists.hdf5")
    (tmp_path / "lr").mkdir()
    with pytest.raises(FileExistsError, match="lr"):
        export_lerobot(dataset, tmp_path / "lr")


def test_robomimic_export_refuses_a_disk_without_room_and_leaves_nothing(dataset, tmp_path, monkeypatch):
    import errno
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage(1 << 30, (1 << 30) - (8 << 20), 8 << 20))
    with pytest.raises(OSError, match="disk nearly full: 8.4 MB free") as info:
        export_robomimic(dataset, tmp_path / "rm.hdf5")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / "rm.hdf5.partial")
    assert list(tmp_path.iterdir()) == []


def test_data_commands_report_user_errors_in_one_line(dataset, tmp_path):
    import subprocess
    import sys

    (tmp_path / "exists.hdf5").write_bytes(b"keep")
    for args, expected in (
        (["convert", str(dataset), str(tmp_path / "exists.hdf5"), "--to", "robomimic"], "already exists"),
        (["validate", str(tmp_path / "missing")], "does not exist"),
    ):
        out = subprocess.run(
            [sys.executable, "-m", "dm1.cli", "data", *args], capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 2, out.stderr
        assert out.stderr.startswith(f"dm1 data {args[0]}: error: ") and expected in out.stderr
        assert "Traceback" not in out.stderr


def test_export_of_empty_dataset_names_the_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no episodes to export"):
        export_robomimic(tmp_path / "empty", tmp_path / "x.hdf5")


def test_convert_command_writes_robomimic(dataset, tmp_path, capsys):
    import argparse

    from dm1.data.tools import register_tools

    parser = argparse.ArgumentParser(prog="dm1 data")
    register_tools(parser.add_subparsers(dest="cmd"), only=("convert",))
    args = parser.parse_args(["convert", str(dataset), str(tmp_path / "rm.hdf5"), "--to", "robomimic"])
    assert args.func(args) == 0
    assert len(read_robomimic(tmp_path / "rm.hdf5")) == 3


@pytest.fixture(scope="module")
def recovery_dataset(dataset, tmp_path_factory):
    """The synthetic dataset with one recovery demo: its first 4 steps are a deliberate miss."""
    import shutil

    out = tmp_path_factory.mktemp("convert_rec") / "ds"
    shutil.copytree(dataset, out)
    with h5py.File(sorted(out.glob("episode_*.h5"))[1], "a") as f:
        f.create_dataset("perturbed", data=np.arange(10) < 4)
    return out


def test_exports_keep_which_steps_must_not_be_learned(recovery_dataset, tmp_path):
    marked = [np.zeros(10, bool), np.arange(10) < 4, np.zeros(10, bool)]
    root = export_lerobot(recovery_dataset, tmp_path / "lerobot")
    assert json.loads((root / "meta/info.json").read_text())["features"]["perturbed"]["dtype"] == "bool"
    for want, ep in zip(marked, read_lerobot(root), strict=True):
        np.testing.assert_array_equal(ep["perturbed"], want)
    path = export_robomimic(recovery_dataset, tmp_path / "demo.hdf5")
    for want, demo in zip(marked, read_robomimic(path), strict=True):
        np.testing.assert_array_equal(demo["perturbed"], want)
    with h5py.File(path) as f:
        assert [n.decode() for n in f["mask/unperturbed"][()]] == ["demo_0", "demo_2"]
