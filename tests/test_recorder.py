"""Recorder: synchronized steps in the episode format, all timestamps kept, clear errors, no corruption."""

from __future__ import annotations

import errno

import h5py
import numpy as np
import pytest
from dm1.data.episode import read_episode
from dm1.data.index import DatasetIndex
from dm1.data.tools import check_episode
from dm1.teleop.recorder import EpisodeRecorder, RecorderConfig, RecorderError, TimedEpisodeWriter

HOME_Q = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])


def _config(tmp_path, **kw) -> RecorderConfig:
    return RecorderConfig(out_dir=tmp_path / "ds", min_free_mb=0.0, **kw)


def _feed(rec: EpisodeRecorder, t: float, frame_t: float | None = None) -> None:
    ft = t if frame_t is None else frame_t
    for cam in rec.config.camera_names:
        rec.on_image(cam, np.full((24, 32, 3), int(ft * 10) % 255, np.uint8), ft - 0.01, ft)
    rec.on_joint_state(HOME_Q, 0.08, t - 0.002, t)


def _record(rec: EpisodeRecorder, steps: int, t0: float = 10.0) -> None:
    for i in range(steps):
        t = t0 + i * 0.05
        _feed(rec, t)
        assert rec.tick(t, np.array([0.5, 0.0, 0.3 + 0.001 * i, 0.0]))


def test_recorded_episode_reads_back_with_all_timestamps(tmp_path):
    rec = EpisodeRecorder(_config(tmp_path))
    rec.start(0)
    _record(rec, 12)
    path = rec.stop_save(success=True)
    ep = read_episode(path)
    assert ep.length == 12 and ep.success and ep.action_space == "ee_position"
    assert ep.images["front"].shape == (12, 24, 32, 3)
    assert set(ep.proprio) == {"ee_pos", "ee_quat_xyzw", "gripper_width", "joint_pos"}
    np.testing.assert_allclose(ep.proprio["gripper_width"][:, 0], 0.08)
    np.testing.assert_allclose(ep.actions[:, 2], 0.3 + 0.001 * np.arange(12), atol=1e-6)
    with h5py.File(path) as f:
        np.testing.assert_allclose(f["timing/front_capture"][()], ep.timestamps - 0.01)
        np.testing.assert_allclose(f["timing/joint_receive"][()], ep.timestamps)


def test_ticks_before_all_inputs_arrive_are_skipped_and_counted(tmp_path):
    rec = EpisodeRecorder(_config(tmp_path))
    rec.start(0)
    rec.on_joint_state(HOME_Q, 0.08, 1.0, 1.0)
    assert not rec.tick(1.0, np.zeros(4) + 0.5)  # no camera frame yet
    _feed(rec, 1.05)
    assert rec.tick(1.05, np.array([0.5, 0, 0.3, 0]))
    assert rec.qa_summary()["skipped_not_ready"] == 1
    rec.stop_save(False)


def test_an_episode_starts_with_inputs_captured_after_its_start(tmp_path):
    """Inputs captured before the start (the previous scene, a gripper still opening after the home, a backlog
    the node has not processed yet) are not the episode's first step: it waits for fresh ones. Seen in a
    collection run: an episode's first two steps had the gripper at 0.04 m, captured before its home ended."""
    rec = EpisodeRecorder(_config(tmp_path))
    _feed(rec, 1.0)  # the last inputs before the start: the previous scene
    rec.on_joint_state(HOME_Q, 0.04, 0.99, 1.01)  # the gripper still opening
    rec.start(0, now=1.02)
    action = np.array([0.5, 0.0, 0.3, 0.0])
    assert not rec.tick(1.02, action)
    rec.on_joint_state(HOME_Q, 0.08, 1.03, 1.04)
    assert not rec.tick(1.04, action)  # the cameras' frames are still from before the start
    _feed(rec, 1.07)
    assert rec.tick(1.07, action)
    assert rec.tick(1.12, action)  # once started, an input that then ages is recorded (and counted stale)
    path = rec.stop_save(success=True)
    ep = read_episode(path)
    assert ep.length == 2 and ep.timestamps[0] == pytest.approx(1.07)
    np.testing.assert_allclose(ep.proprio["gripper_width"][:, 0], 0.08)
    assert rec.qa_summary()["skipped_before_start"] == 2 and rec.qa_summary()["repeat_front"] == 1


def test_repeated_camera_frames_are_counted_as_dropped(tmp_path):
    rec = EpisodeRecorder(_config(tmp_path))
    rec.start(0)
    for i in range(6):
        t = 1.0 + 0.05 * i
        _feed(rec, t, frame_t=1.0 if i < 3 else t)  # the camera stalls for the first 3 ticks
        rec.tick(t, np.array([0.5, 0, 0.3, 0]))
    assert rec.qa_summary()["repeat_front"] == 2
    path = rec.stop_save(False)
    qa = check_episode(path)  # `dm1 data validate` sees the recorder's counters and the repeats
    assert qa.recorder_qa["frames"] == 6 and qa.recorder_qa["repeat_front"] == 2
    assert qa.dropped_frames == {"front": 2, "wrist": 2}


def test_existing_output_file_fails_with_clear_message(tmp_path):
    cfg = _config(tmp_path)
    cfg.out_dir.mkdir()
    (cfg.out_dir / "episode_000000.h5").write_bytes(b"precious")
    rec = EpisodeRecorder(cfg)
    with pytest.raises(RecorderError, match="output already exists.*episode_000000.h5"):
        rec.start(0)
    assert not rec.recording
    assert (cfg.out_dir / "episode_000000.h5").read_bytes() == b"precious"


def test_unwritable_output_directory_fails_with_clear_message(tmp_path):
    (tmp_path / "file").write_text("x")
    rec = EpisodeRecorder(RecorderConfig(out_dir=tmp_path / "file" / "ds", min_free_mb=0))
    with pytest.raises(RecorderError, match="cannot create output directory"):
        rec.start(0)


def test_low_disk_space_refuses_to_start(tmp_path):
    rec = EpisodeRecorder(RecorderConfig(out_dir=tmp_path / "ds", min_free_mb=1e12))
    with pytest.raises(RecorderError, match="not enough disk space"):
        rec.start(0)


def _lift_dataset(tmp_path) -> None:
    """One episode of `dm1 data collect --via-teleop`'s layout (proprio ee_pos + gripper_width) in ds/."""
    rec = EpisodeRecorder(_config(tmp_path, proprio_keys=("ee_pos", "gripper_width")))
    rec.start(0)
    _record(rec, 3)
    rec.stop_save(success=True)


def test_recording_into_a_dataset_of_another_layout_is_refused_before_anything_is_written(tmp_path):
    _lift_dataset(tmp_path)
    rec = EpisodeRecorder(_config(tmp_path))  # the node's default proprio keys: another layout
    expected = (
        r"ds holds a different dataset \(episode_000000.h5: proprio_keys: expected "
        r"\['ee_pos', 'ee_quat_xyzw', 'gripper_width', 'joint_pos'\], found \['ee_pos', 'gripper_width'\]\)"
    )
    with pytest.raises(RecorderError, match=expected):
        rec.start(1)
    assert not rec.recording
    with pytest.raises(RecorderError, match=expected):
        rec.check_dataset()  # the node's startup check
    assert sorted(p.name for p in rec.config.out_dir.iterdir()) == ["episode_000000.h5"]


def test_recording_into_a_dataset_of_the_same_layout_appends(tmp_path):
    _lift_dataset(tmp_path)
    rec = EpisodeRecorder(_config(tmp_path, proprio_keys=("ee_pos", "gripper_width")))
    rec.check_dataset()
    rec.start(1)
    _record(rec, 3)
    assert rec.stop_save(success=False).name == "episode_000001.h5"


def test_frames_of_another_size_than_the_datasets_are_refused(tmp_path):
    _lift_dataset(tmp_path)  # 24x32 frames
    rec = EpisodeRecorder(_config(tmp_path, proprio_keys=("ee_pos", "gripper_width")))
    for cam in rec.config.camera_names:
        rec.on_image(cam, np.zeros((48, 64, 3), np.uint8), 9.0, 9.0)
    with pytest.raises(RecorderError, match=r"image_size: expected 48x64, found 24x32"):
        rec.start(1)


def test_an_episode_of_another_layout_added_while_the_recorder_runs_is_found_at_the_next_start(tmp_path):
    rec = EpisodeRecorder(_config(tmp_path))
    rec.start(0)  # empty: passes
    _record(rec, 3)
    rec.stop_save(success=True)
    (tmp_path / "other").mkdir()  # another writer's episode moved in by hand
    _lift_dataset(tmp_path / "other")
    (tmp_path / "other" / "ds" / "episode_000000.h5").rename(rec.config.out_dir / "episode_000001.h5")
    with pytest.raises(RecorderError, match=r"episode_000001.h5: proprio_keys"):
        rec.start(2)


class _DiskFullWriter(TimedEpisodeWriter):
    """Fails like a full disk after a few steps (h5py raises OSError with errno ENOSPC)."""

    def append(self, *args, **kwargs):
        if self.length >= 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        super().append(*args, **kwargs)


def test_disk_full_mid_episode_drops_it_and_recorder_recovers(tmp_path):
    rec = EpisodeRecorder(_config(tmp_path), writer_factory=_DiskFullWriter)
    rec.start(0)
    _record(rec, 3)
    _feed(rec, 20.0)
    with pytest.raises(RecorderError, match="disk full"):
        rec.tick(20.0, np.array([0.5, 0, 0.3, 0]))
    assert not rec.recording
    assert list(rec.config.out_dir.iterdir()) == []  # the partial file is deleted to free space
    rec._writer_factory = TimedEpisodeWriter
    rec.start(1)
    _record(rec, 2, t0=30.0)
    assert read_episode(rec.stop_save(True)).length == 2


# Records 96x96 noise into an almost full filesystem until the recorder gives up, then records a short episode
# once the failed one is gone. Prints one JSON line; run in its own process (a crash must fail the test).
# With a second argument `emulated`, the disk is a 24 MiB one that the files under argv[1] fill (statvfs
# emulated: for hosts that cannot mount a private tmpfs).
FULL_DISK_SCRIPT = """
import json, shutil, sys
from collections import namedtuple
from pathlib import Path
import numpy as np
if sys.argv[2:] == ["emulated"]:
    usage = namedtuple("usage", "total used free")
    def disk_usage(_path, root=Path(sys.argv[1]), size=24 << 20):
        used = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        return usage(size, used, size - used)
    shutil.disk_usage = disk_usage
from dm1.teleop.recorder import EpisodeRecorder, RecorderConfig, RecorderError
from dm1.data.episode import read_episode
out = Path(sys.argv[1]) / "ds"
rec = EpisodeRecorder(RecorderConfig(out_dir=out, min_free_mb=0.0))
rng = np.random.default_rng(0)
def step(t):
    for cam in rec.config.camera_names:
        rec.on_image(cam, rng.integers(0, 255, (96, 96, 3), np.uint8), t - 0.01, t)
    rec.on_joint_state(np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785]), 0.08, t - 0.002, t)
    rec.tick(t, np.array([0.5, 0.0, 0.3, 0.0]))
rec.start(0)
steps, error = 0, None
try:
    while steps < 100000:
        step(10.0 + 0.05 * steps)
        steps += 1
except RecorderError as exc:
    error = str(exc)
left = sorted(p.name for p in out.iterdir())
rec.start(1)
for i in range(5):
    step(100.0 + 0.05 * i)
again = read_episode(rec.stop_save(True)).length
print(json.dumps({"steps": steps, "error": error, "left": left, "again": again}))
"""


def test_a_really_full_disk_drops_the_episode_without_crashing_and_recording_goes_on(tmp_path):
    """A real filesystem (a 24 MiB tmpfs in a private mount namespace) filled by the recorder. HDF5 meeting
    ENOSPC fails inside deallocators and then crashes the process at its next flush (SIGSEGV, measured), so
    the writer stops first, at its reserve; the episode is dropped and the next one records. Where no private
    tmpfs can be mounted (no util-linux `unshare`, user namespaces refused) the same run sees an emulated
    24 MiB disk instead (its free space from the files written)."""
    import shutil
    import subprocess
    import sys

    mount = tmp_path / "small_disk"
    mount.mkdir()
    out = None
    if shutil.which("unshare"):
        mount_then_run = 'mount -t tmpfs -o size=24m tmpfs "$1" && exec "$2" -c "$3" "$1"'
        cmd = ["unshare", "-rm", "sh", "-c", mount_then_run]
        args = [*cmd, "sh", str(mount), sys.executable, FULL_DISK_SCRIPT]
        out = subprocess.run(args, capture_output=True, text=True, timeout=300)
        if out.returncode != 0 and "mount" in out.stderr and "Traceback" not in out.stderr:
            out = None  # no private mount here
    _assert_dropped_and_recording_again(out or _fill_emulated_disk(mount))


def test_a_disk_filling_up_is_met_the_same_way_where_it_is_emulated(tmp_path):
    """The emulated 24 MiB disk (the fallback above) stops the recorder as the real one does."""
    _assert_dropped_and_recording_again(_fill_emulated_disk(tmp_path))


def _fill_emulated_disk(directory):
    import subprocess
    import sys

    args = [sys.executable, "-c", FULL_DISK_SCRIPT, str(directory), "emulated"]
    return subprocess.run(args, capture_output=True, text=True, timeout=300)


def _assert_dropped_and_recording_again(out) -> None:
    import json

    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert 50 < result["steps"] < 1000, result  # ~8 MiB of 55 kB steps before the 16 MiB reserve
    assert "disk full (disk nearly full: " in result["error"], result
    assert result["left"] == []  # the dropped episode's .partial is deleted, freeing its space
    assert result["again"] == 5


def test_discard_removes_the_episode(tmp_path):
    rec = EpisodeRecorder(_config(tmp_path))
    rec.start(0)
    _record(rec, 4)
    rec.discard()
    assert list(rec.config.out_dir.iterdir()) == []


def test_abandoned_episode_stays_partial_and_is_quarantined(tmp_path):
    rec = EpisodeRecorder(_config(tmp_path))
    rec.start(0)
    _record(rec, 4)
    rec.stop_save(True)
    rec.start(1)
    _record(rec, 4, t0=50.0)
    rec.abandon()
    index = DatasetIndex(rec.config.out_dir).scan()
    assert index.incomplete == ["episode_000001.h5.partial"]
    moved = index.quarantine()
    assert [p.name for p in moved] == ["episode_000001.h5.partial"]
    assert [e["file"] for e in index.episodes] == ["episode_000000.h5"]


def test_config_rejects_unknown_proprio_key(tmp_path):
    with pytest.raises(ValueError, match="unknown proprio key"):
        RecorderConfig(out_dir=tmp_path, proprio_keys=("ee_pos", "elbow_mood"))


# ---- MCAP mirror ------------------------------------------------------------------------------------------
def test_mcap_mirror_round_trips_raw_ros_messages(tmp_path):
    from dm1.teleop.mcap_mirror import McapMirror
    from mcap_ros2.reader import read_ros2_messages
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Image, JointState

    mirror = McapMirror(tmp_path / "mcap")
    path = mirror.open("episode_000000")
    img = Image(height=2, width=3, encoding="rgb8", step=9, data=bytes(range(18)))
    mirror.write("/camera/front/color/image_raw", "sensor_msgs/msg/Image", serialize_message(img), 1_000)
    js = JointState(name=["fr3_joint1"], position=[0.25])
    mirror.write("/joint_states", "sensor_msgs/msg/JointState", serialize_message(js), 2_000)
    assert mirror.close() == path and path.is_file()
    msgs = list(read_ros2_messages(path))
    assert [m.channel.topic for m in msgs] == ["/camera/front/color/image_raw", "/joint_states"]
    assert bytes(msgs[0].ros_msg.data) == bytes(range(18)) and list(msgs[1].ros_msg.position) == [0.25]
    with pytest.raises(FileExistsError, match="episode_000000.mcap"):
        mirror.open("episode_000000")


def test_mcap_mirror_discard_and_abandon(tmp_path):
    from dm1.teleop.mcap_mirror import McapMirror

    mirror = McapMirror(tmp_path)
    mirror.open("episode_000001")
    mirror.discard()
    assert list(tmp_path.iterdir()) == []
    mirror.open("episode_000002")
    mirror.abandon()
    assert [p.name for p in tmp_path.iterdir()] == ["episode_000002.mcap.partial"]


def test_a_frame_that_changes_size_mid_episode_ends_the_episode_with_a_recorder_error(tmp_path):
    """Before: the writer's EpisodeFormatError (a ValueError) escaped `tick` and ended the teleop node."""
    rec = EpisodeRecorder(_config(tmp_path))
    rec.start(0)
    _record(rec, 3)
    for cam in rec.config.camera_names:
        rec.on_image(cam, np.zeros((48, 64, 3), np.uint8), 10.19, 10.2)
    rec.on_joint_state(HOME_Q, 0.08, 10.198, 10.2)
    with pytest.raises(RecorderError, match=r"\(48, 64, 3\)"):
        rec.tick(10.2, np.array([0.5, 0.0, 0.3, 0.0]))
    assert not rec.recording
    assert [p.name for p in rec.config.out_dir.glob("*.partial")] == ["episode_000000.h5.partial"]


def test_the_clock_jumping_back_mid_episode_ends_it_with_a_recorder_error(tmp_path):
    rec = EpisodeRecorder(_config(tmp_path))
    rec.start(0)
    _record(rec, 3, t0=100.0)
    _feed(rec, 50.0)  # the simulation was reset
    with pytest.raises(RecorderError, match="timestamp"):
        rec.tick(50.0, np.array([0.5, 0.0, 0.3, 0.0]))
    rec.start(1)  # the recorder is usable again
    _record(rec, 2, t0=60.0)
    assert read_episode(rec.stop_save(True)).length == 2


def test_a_dropped_episode_is_deleted_even_when_closing_its_file_fails(tmp_path):
    """On a full disk HDF5 cannot flush at close; the `.partial` must still go (it holds the space)."""
    rec = EpisodeRecorder(_config(tmp_path))
    rec.start(0)
    _record(rec, 2)
    writer = rec._writer

    def failing_close() -> None:
        raise RuntimeError("Can't decrement id ref count (unable to flush file's cached information)")

    writer._file.close = failing_close
    with pytest.raises(RuntimeError):
        writer.discard()
    assert list(rec.config.out_dir.glob("*.partial")) == []


def test_a_second_recorder_on_the_same_directory_is_refused_while_an_episode_is_open(tmp_path):
    """Two recorders of different layouts both started on an empty directory used to write a mixed dataset."""
    first = EpisodeRecorder(_config(tmp_path))
    second = EpisodeRecorder(_config(tmp_path, proprio_keys=["ee_pos", "gripper_width"]))
    first.start(0)
    with pytest.raises(RecorderError, match=r"another process \(pid \d+.*one recorder per dataset directory"):
        second.start(1)
    _record(first, 2)
    first.stop_save(True)
    assert not (first.config.out_dir / ".recording.lock").exists()  # released and removed with the episode
    with pytest.raises(RecorderError, match="holds a different dataset"):  # the first recorder's episode
        second.start(1)
    first.start(1)
    first.discard()
    assert sorted(p.name for p in first.config.out_dir.iterdir()) == ["episode_000000.h5"]
