"""Episode reader: attributes of the wrong type or value and damaged HDF5 files are refused by name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from dm1.data.episode import EpisodeFormatError, read_episode
from dm1.data.episode_writer import EpisodeWriter
from dm1.data.index import DatasetIndex
from dm1.data.synthetic import make_synthetic_dataset


@pytest.fixture
def episode(tmp_path: Path) -> Path:
    """One synthetic episode (the tester's size: 40 steps of 32x32 images), the only file of its dataset."""
    make_synthetic_dataset(tmp_path / "ds", n_episodes=1, episode_len=40, image_size=(32, 32))
    return tmp_path / "ds/episode_000000.h5"


def _set_attr(path: Path, name: str, value: Any) -> None:
    with h5py.File(path, "a") as f:
        f.attrs[name] = value


def _refused(path: Path, *fragments: str) -> str:
    """read_episode's error message, checked to start with the file and to contain every fragment."""
    with pytest.raises(EpisodeFormatError) as info:
        read_episode(path, load_images=False)
    msg = str(info.value)
    assert msg.startswith(f"{path}: "), msg
    for fragment in fragments:
        assert fragment in msg, msg
    return msg


# ---- attributes ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rate", [float("nan"), float("inf"), 0.0, -20.0])
def test_control_rate_that_is_not_finite_and_positive_is_refused(episode: Path, rate: float) -> None:
    _set_attr(episode, "control_rate_hz", rate)
    _refused(episode, "control_rate_hz: expected a finite number > 0", f"found {rate}")


def test_control_rate_given_as_text_names_the_field(episode: Path) -> None:
    _set_attr(episode, "control_rate_hz", "fast")
    _refused(episode, "control_rate_hz: expected a finite number > 0", "found 'fast'")


def test_format_version_that_is_not_an_integer_names_the_field(episode: Path) -> None:
    _set_attr(episode, "format_version", "abc")
    _refused(episode, "format_version: expected 1, found 'abc'")


def test_action_names_must_have_the_dims_of_the_action_space(episode: Path) -> None:
    _set_attr(episode, "action_space", "joint_position")  # 4 names and dims stay: joint_position needs 8
    _refused(episode, "action_names: expected 8 names for action space 'joint_position', found 4")


@pytest.mark.parametrize("value", ["no", "False", 2.5, np.int64(2)])
def test_success_that_is_not_a_bool_is_refused(episode: Path, value: Any) -> None:
    _set_attr(episode, "success", value)
    _refused(episode, "success: expected a bool")


@pytest.mark.parametrize(("value", "expected"), [(np.bool_(False), False), (1, True), (np.int8(0), False)])
def test_success_written_as_bool_or_0_1_is_read(episode: Path, value: Any, expected: bool) -> None:
    _set_attr(episode, "success", value)
    assert read_episode(episode, load_images=False).success is expected


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("camera_names", "front", "camera_names: expected a JSON list of unique names"),
        ("proprio_keys", json.dumps(["ee_pos", "ee_pos"]), "proprio_keys: expected a JSON list of unique"),
        ("units", "[1, 2]", "units: expected a JSON object"),
        ("frame", "", "frame: expected a non-empty string"),
    ],
)
def test_malformed_layout_attribute_names_the_field(
    episode: Path, name: str, value: str, expected: str
) -> None:
    _set_attr(episode, name, value)
    _refused(episode, expected)


# ---- datasets --------------------------------------------------------------------------------------------
def _replace(path: Path, name: str, data: np.ndarray) -> None:
    with h5py.File(path, "a") as f:
        del f[name]
        f.create_dataset(name, data=data)


def test_scalar_actions_are_refused_naming_the_field(episode: Path) -> None:
    _replace(episode, "actions", np.float32(0.5))
    _refused(episode, "actions: expected float32 (T, 4)", "found float32 ()")


def test_actions_and_timestamps_of_different_lengths_name_both(episode: Path) -> None:
    actions = read_episode(episode, load_images=False).actions
    with h5py.File(episode, "a") as f:
        f["actions"].resize(17, axis=0)
    assert actions.shape[0] == 40
    msg = _refused(episode, "actions has 17 steps, timestamps has 40", "lengths disagree")
    assert "timestamps: expected" not in msg


def test_bytes_flipped_inside_the_file_are_a_format_error_naming_the_file(episode: Path) -> None:
    data = bytearray(episode.read_bytes())
    data[3000:] = bytes(b ^ 0xFF for b in data[3000:])
    episode.write_bytes(bytes(data))
    _refused(episode, "corrupt or unreadable HDF5")
    index = DatasetIndex(episode.parent).scan()  # listed as invalid, not a crash
    assert [e["file"] for e in index.invalid] == [episode.name]


def test_h5py_error_while_reading_a_dataset_names_file_and_dataset(
    episode: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = h5py.Dataset.__getitem__

    def broken(self: h5py.Dataset, key: Any) -> Any:
        if self.name == "/timestamps":
            raise RuntimeError("Can't synchronously read data (bad B-tree signature)")
        return real(self, key)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", broken)
    _refused(episode, "timestamps: corrupt or unreadable HDF5", "bad B-tree signature")


# ---- writer ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cams", [("a b", "front"), ("c/d",), ("1st",)])
def test_writer_refuses_camera_names_that_are_not_identifiers(tmp_path: Path, cams: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match=r"camera_names: expected identifiers"):
        EpisodeWriter(tmp_path / "episode_000000.h5", cams, {"ee_pos": 3}, "xyzg", "ee_position", 20.0)
    assert list(tmp_path.iterdir()) == []
