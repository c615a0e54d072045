"""`dm1 data info/validate/stats/plot/convert` on real episode files."""

from __future__ import annotations

import argparse
import json

import h5py
import numpy as np
import pytest
from dm1.data.synthetic import make_synthetic_dataset
from dm1.data.tools import check_episode, dataset_info, dataset_stats, register_tools, validate_dataset


@pytest.fixture
def dataset(tmp_path):
    make_synthetic_dataset(tmp_path / "ds", n_episodes=3, episode_len=12, image_size=(16, 16))
    return tmp_path / "ds"


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="dm1 data")
    register_tools(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_info_summarises_episodes(dataset):
    info = dataset_info(dataset)
    assert info["num_episodes"] == 3 and info["total_steps"] == 36
    assert info["cameras"] == {"front": [16, 16, 3], "wrist": [16, 16, 3]}
    assert info["action_space"] == "ee_position" and info["control_rate_hz"] == 20.0
    assert info["recovery_episodes"] == 0
    with h5py.File(dataset / "episode_000001.h5", "a") as f:
        f.create_dataset("perturbed", data=np.arange(12) < 3)
    assert dataset_info(dataset)["recovery_episodes"] == 1


def test_validate_clean_dataset_passes_and_writes_reports(dataset, capsys):
    assert _cli(["validate", str(dataset)]) == 0
    report = json.loads((dataset / "qa_report.json").read_text())
    assert report["num_valid"] == 3 and report["incomplete"] == []
    assert "| episode_000000.h5 | yes | 12 |" in (dataset / "qa_report.md").read_text()


def _edit(path, name, fn):
    with h5py.File(path, "r+") as f:
        data = f[name][()]
        fn(data)
        f[name][...] = data


def test_validate_flags_out_of_range_actions(dataset):
    _edit(dataset / "episode_000001.h5", "actions", lambda a: a.__setitem__((4, 3), 1.7))
    qa = check_episode(dataset / "episode_000001.h5")
    assert qa.out_of_range_actions == 1 and not qa.ok


def test_validate_flags_timing_gaps(dataset):
    _edit(dataset / "episode_000002.h5", "timestamps", lambda t: t.__setitem__(slice(6, None), t[6:] + 0.3))
    qa = check_episode(dataset / "episode_000002.h5")
    assert qa.gaps == 1 and qa.max_interval_s == pytest.approx(0.35) and qa.ok  # a gap is a warning


def test_validate_flags_non_monotonic_timestamps(dataset):
    _edit(dataset / "episode_000000.h5", "timestamps", lambda t: t.__setitem__(5, t[3]))
    qa = check_episode(dataset / "episode_000000.h5")
    assert any("not strictly increasing" in e for e in qa.errors)


def test_validate_quarantines_partial_and_corrupt_files(dataset, capsys):
    (dataset / "episode_000003.h5.partial").write_bytes(b"half an episode")
    (dataset / "episode_000004.h5").write_bytes(b"not hdf5")
    assert _cli(["validate", str(dataset)]) == 1
    assert sorted(p.name for p in (dataset / "quarantine").iterdir()) == [
        "episode_000003.h5.partial",
        "episode_000004.h5",
    ]
    assert sorted(p.name for p in dataset.glob("episode_*")) == [f"episode_00000{i}.h5" for i in range(3)]
    assert _cli(["validate", str(dataset)]) == 0  # the remaining dataset is clean


def test_stats_cover_actions_and_proprio(dataset):
    stats = dataset_stats(dataset)
    assert stats["actions"]["names"] == ["x", "y", "z", "gripper"]
    assert len(stats["obs/ee_pos"]["mean"]) == 3
    assert all(lo <= hi for lo, hi in zip(stats["actions"]["min"], stats["actions"]["max"], strict=True))


def test_plot_writes_one_png_per_episode(dataset, tmp_path):
    assert _cli(["plot", str(dataset), "--out", str(tmp_path / "plots")]) == 0
    pngs = sorted((tmp_path / "plots").glob("*.png"))
    assert len(pngs) == 3 and all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)


def test_info_on_missing_directory_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        validate_dataset(tmp_path / "nowhere")


def test_validate_reads_recorder_dropped_frames(dataset):
    with h5py.File(dataset / "episode_000000.h5", "r+") as f:
        cap = f["timestamps"][()]
        cap[3] = cap[2]
        f.create_dataset("timing/front_capture", data=cap)
    qa = check_episode(dataset / "episode_000000.h5")
    assert qa.dropped_frames == {"front": 1} and qa.ok
    assert np.isfinite(qa.duration_s)


def test_data_info_command_reports_the_index_and_the_recovery_demos(dataset, capsys):
    from dm1.commands.data import register

    parser = argparse.ArgumentParser(prog="dm1")
    register(parser.add_subparsers(dest="cmd"))
    with h5py.File(dataset / "episode_000002.h5", "a") as f:
        f.create_dataset("perturbed", data=np.arange(12) < 3)
    args = parser.parse_args(["data", "info", str(dataset), "--json"])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["num_episodes"] == 3 and out["total_steps"] == 36 and len(out["dataset_sha256"]) == 64
    assert out["recovery_episodes"] == 1 and out["episode_length"]["min"] == 12
    assert out["first_episode"]["file"] == "episode_000000.h5"
