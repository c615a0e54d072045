"""Episode HDF5 format: round trip, per-step validation, crash safety, overwrite refusal, index/quarantine."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from dm1.data.episode import EpisodeFormatError, read_episode
from dm1.data.episode_writer import EpisodeWriter
from dm1.data.index import DatasetIndex, next_episode_path

CAMS = ("front", "wrist")
SPEC = {"ee_pos": 3, "gripper_width": 1}
NAMES = ("x", "y", "z", "gripper")


def _writer(path: Path) -> EpisodeWriter:
    return EpisodeWriter(
        path, CAMS, SPEC, NAMES, "ee_position", 20.0, {"ee_pos": "m"}, "fr3_link0", flush_every=2
    )


def _step(i: int, size: int = 16) -> tuple[dict, dict, np.ndarray, float]:
    rng = np.random.default_rng(i)
    images = {c: rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for c in CAMS}
    proprio = {"ee_pos": rng.normal(size=3).astype(np.float32), "gripper_width": np.array([0.04], np.float32)}
    return images, proprio, rng.normal(size=4).astype(np.float32), 0.05 * i


def _write(path: Path, n: int, success: bool = True) -> Path:
    w = _writer(path)
    for i in range(n):
        w.append(*_step(i))
    return w.close(success)


def test_episode_round_trip_preserves_data_and_attributes(tmp_path: Path) -> None:
    path = _write(tmp_path / "episode_000000.h5", 7, success=True)
    ep = read_episode(path)
    assert ep.length == 7 and ep.success is True
    assert ep.camera_names == list(CAMS) and ep.proprio_keys == list(SPEC) and ep.action_names == list(NAMES)
    assert ep.action_space == "ee_position" and ep.control_rate_hz == 20.0 and ep.frame == "fr3_link0"
    assert ep.units == {"ee_pos": "m"} and ep.format_version == 1 and ep.created
    for i in range(7):
        images, proprio, action, t = _step(i)
        for c in CAMS:
            np.testing.assert_array_equal(ep.images[c][i], images[c])
        np.testing.assert_array_equal(ep.proprio["ee_pos"][i], proprio["ee_pos"])
        np.testing.assert_array_equal(ep.actions[i], action)
        assert ep.timestamps[i] == t
    with h5py.File(path) as f:  # the documented layout, readable without dm1
        assert f["obs/front"].dtype == np.uint8 and f["obs/front"].shape == (7, 16, 16, 3)
        assert f["actions"].dtype == np.float32 and f["timestamps"].dtype == np.float64
        assert json.loads(f.attrs["camera_names"]) == list(CAMS)


def test_perturbed_steps_round_trip_and_are_absent_when_none(tmp_path: Path) -> None:
    w = _writer(tmp_path / "episode_000000.h5")
    for i in range(6):
        w.append(*_step(i), perturbed=i in (2, 3))
    ep = read_episode(w.close(True))
    assert ep.perturbed is not None and ep.perturbed.tolist() == [False, False, True, True, False, False]
    clean = read_episode(_write(tmp_path / "episode_000001.h5", 3))
    assert clean.perturbed is None
    with h5py.File(clean.path) as f:
        assert "perturbed" not in f  # files without recovery demos keep the plain layout


def test_bad_perturbed_dataset_names_file_and_field(tmp_path: Path) -> None:
    path = _write(tmp_path / "episode_000000.h5", 4)
    with h5py.File(path, "a") as f:
        f.create_dataset("perturbed", data=np.zeros(3, dtype=np.int8))
    with pytest.raises(EpisodeFormatError, match=r"episode_000000\.h5: perturbed: expected bool \(4,\)"):
        read_episode(path)


def test_open_episode_exists_only_as_partial_until_close(tmp_path: Path) -> None:
    final = tmp_path / "episode_000000.h5"
    w = _writer(final)
    for i in range(3):
        w.append(*_step(i))
    assert not final.exists() and w.partial_path.exists()
    index = DatasetIndex(tmp_path).scan()
    assert index.episodes == [] and index.incomplete == ["episode_000000.h5.partial"]
    with pytest.raises(EpisodeFormatError, match="incomplete"):
        read_episode(w.partial_path)
    w.close(success=False)
    assert final.exists() and not w.partial_path.exists()
    assert read_episode(final).success is False


def test_existing_episode_is_never_overwritten(tmp_path: Path) -> None:
    path = _write(tmp_path / "episode_000000.h5", 2)
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="episode_000000.h5"):
        _writer(path)
    _writer(tmp_path / "episode_000001.h5").append(*_step(0))  # left open: its .partial exists
    with pytest.raises(FileExistsError, match="episode_000001.h5.partial"):
        _writer(tmp_path / "episode_000001.h5")
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda s: s[0].update(front=np.zeros((16, 16, 3), np.float32)), "images['front']"),
        (lambda s: s[0].update(wrist=np.zeros((8, 16, 3), np.uint8)), "images['wrist']"),
        (lambda s: s[0].pop("wrist"), "images"),
        (lambda s: s[1].update(ee_pos=np.array([0.0, np.nan, 0.0])), "proprio['ee_pos']"),
        (lambda s: s[1].update(gripper_width=np.zeros(2)), "proprio['gripper_width']"),
    ],
)
def test_bad_step_is_rejected_naming_the_field(tmp_path: Path, mutate, field: str) -> None:
    w = _writer(tmp_path / "episode_000000.h5")
    w.append(*_step(0))
    step = list(_step(1))
    mutate(step)
    with pytest.raises(EpisodeFormatError, match=field.replace("[", r"\[").replace("]", r"\]")):
        w.append(*step)
    assert w.length == 1  # the bad step was not written


def test_bad_action_or_timestamp_is_rejected(tmp_path: Path) -> None:
    w = _writer(tmp_path / "episode_000000.h5")
    w.append(*_step(0))
    images, proprio, _, _ = _step(1)
    with pytest.raises(EpisodeFormatError, match=r"action: expected shape \(4,\)"):
        w.append(images, proprio, np.zeros(7), 1.0)
    with pytest.raises(EpisodeFormatError, match="timestamp"):
        w.append(images, proprio, np.zeros(4), 0.0)  # not after the previous step


def test_corrupt_file_error_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "episode_000000.h5", 4)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(EpisodeFormatError, match="episode_000000.h5"):
        read_episode(path)
    bad = tmp_path / "episode_000001.h5"
    _write(bad, 3)
    with h5py.File(bad, "a") as f:
        del f["actions"]
    with pytest.raises(EpisodeFormatError, match="episode_000001.h5: missing dataset 'actions'"):
        read_episode(bad)
    index = DatasetIndex(tmp_path).scan()
    assert {e["file"] for e in index.invalid} == {"episode_000000.h5", "episode_000001.h5"}


_KILLED_WRITER = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from test_episode_format import _step, _write, _writer
from pathlib import Path
d = Path({d!r})
_write(d / "episode_000000.h5", 5)
_write(d / "episode_000001.h5", 6)
w = _writer(d / "episode_000002.h5")
for i in range(9):
    w.append(*_step(i))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_kill_9_mid_episode_loses_only_the_open_episode(tmp_path: Path) -> None:
    code = _KILLED_WRITER.format(tests=str(Path(__file__).parent), d=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert proc.returncode == -signal.SIGKILL
    index = DatasetIndex(tmp_path).update()
    assert [(e["file"], e["length"]) for e in index.episodes] == [
        ("episode_000000.h5", 5),
        ("episode_000001.h5", 6),
    ]
    assert index.incomplete == ["episode_000002.h5.partial"]
    moved = index.quarantine()
    assert [p.name for p in moved] == ["episode_000002.h5.partial"] and moved[0].parent.name == "quarantine"
    saved = json.loads((tmp_path / "index.json").read_text())
    assert saved["incomplete"] == [] and saved["num_episodes"] == 2
    assert next_episode_path(tmp_path).name == "episode_000003.h5"  # never reuses the quarantined number
    for p in index.episode_paths():
        read_episode(p)


def test_discard_removes_the_open_episode(tmp_path: Path) -> None:
    w = _writer(tmp_path / "episode_000000.h5")
    w.append(*_step(0))
    w.discard()
    assert list(tmp_path.iterdir()) == []


def test_dataset_hash_is_stable_and_tracks_content(tmp_path: Path) -> None:
    _write(tmp_path / "episode_000000.h5", 3)
    _write(tmp_path / "episode_000001.h5", 4)
    first = DatasetIndex(tmp_path).update().dataset_sha256
    assert DatasetIndex(tmp_path).scan().dataset_sha256 == first
    assert json.loads((tmp_path / "index.json").read_text())["dataset_sha256"] == first
    (tmp_path / "episode_000001.h5").unlink()
    assert DatasetIndex(tmp_path).scan().dataset_sha256 != first


def test_data_validate_reports_then_quarantines_an_incomplete_episode(tmp_path: Path) -> None:
    complete = _writer(tmp_path / "episode_000000.h5")
    for i in range(3):
        images, proprio, _, stamp = _step(i)
        complete.append(images, proprio, np.array([0.5, 0.0, 0.2, 0.0], np.float32), stamp)  # in range
    complete.close(True)
    _writer(tmp_path / "episode_000001.h5").append(*_step(0))  # never closed
    cmd = [sys.executable, "-m", "dm1.cli", "data", "validate", str(tmp_path)]
    found = subprocess.run([*cmd, "--no-quarantine"], capture_output=True, text=True, timeout=120)
    report = found.stdout + found.stderr
    assert found.returncode == 1 and "incomplete" in report and "episode_000001.h5.partial" in report
    assert (tmp_path / "episode_000001.h5.partial").exists()  # report only: nothing moved
    fixed = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert fixed.returncode == 0, fixed.stderr
    assert (tmp_path / "quarantine" / "episode_000001.h5.partial").exists()
    assert json.loads((tmp_path / "index.json").read_text())["num_episodes"] == 1


def test_an_h5_file_not_named_as_an_episode_is_refused_not_trained_on(tmp_path: Path) -> None:
    """`extra.h5` used to be indexed (and trained on) while `dm1 data validate` never looked at it."""
    _write(tmp_path / "episode_000000.h5", 3)
    shutil.copy(tmp_path / "episode_000000.h5", tmp_path / "extra.h5")
    index = DatasetIndex(tmp_path).scan()
    assert [e["file"] for e in index.episodes] == ["episode_000000.h5"]
    assert [e["file"] for e in index.invalid] == ["extra.h5"] and "file name" in index.invalid[0]["error"]
    cmd = [sys.executable, "-m", "dm1.cli", "data", "validate", str(tmp_path)]
    found = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert found.returncode == 1 and "not episode files" in found.stderr and "extra.h5" in found.stderr
    assert (tmp_path / "extra.h5").exists()  # someone else's file: named, never moved into quarantine


def test_an_index_entry_of_the_wrong_type_is_re_read_from_the_file(tmp_path: Path) -> None:
    _write(tmp_path / "episode_000000.h5", 3)
    DatasetIndex(tmp_path).update()
    data = json.loads((tmp_path / "index.json").read_text())
    data["episodes"][0]["length"] = "forty"
    (tmp_path / "index.json").write_text(json.dumps(data))
    index = DatasetIndex(tmp_path).scan()
    assert index.episodes[0]["length"] == 3 and index.total_steps == 3


def test_validate_finds_an_episode_changed_in_place_with_its_mtime_kept(tmp_path: Path) -> None:
    path = _write(tmp_path / "episode_000000.h5", 3)
    DatasetIndex(tmp_path).update()
    st = path.stat()
    raw = bytearray(path.read_bytes())
    raw[-200:-100] = bytes(100)  # bit rot in the data, same size
    path.write_bytes(bytes(raw))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    from dm1.data.tools import validate_dataset

    report = validate_dataset(tmp_path, quarantine=False)
    errors = report["episodes"][0]["errors"]
    assert any("sha256" in e and "changed in place" in e for e in errors), errors


def test_validate_refuses_a_proprio_key_of_the_wrong_width_as_the_loader_does(tmp_path: Path) -> None:
    path = _write(tmp_path / "episode_000000.h5", 3)
    with h5py.File(path, "r+") as f:
        del f["obs/ee_pos"]
        f["obs/ee_pos"] = np.zeros((3, 4), np.float32)  # ee_pos is 3 wide
    from dm1.data.tools import check_episode

    assert any("obs/ee_pos: expected width 3, found 4" in e for e in check_episode(path).errors)
