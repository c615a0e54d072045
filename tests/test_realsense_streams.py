"""RealSense stream faults in the core: color formats other than rgb8, depth at its own size, pairing at a
recording's own rate, and settings that used to pass validation (names, paths, serials)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from dm1.camera import CameraConfig, RealSenseCamera, camera_configs, record_synthetic
from dm1.camera.realsense import NODE_PARAMETERS

H, W = 48, 64
DH, DW = 60, 80  # a depth stream at another size than color
DEFAULTS = {name: default for name, (default, _, _) in NODE_PARAMETERS.items()}
NODE = [sys.executable, "-m", "dm1_ros.realsense_node", "--ros-args"]


def _rgb(n: int) -> list[np.ndarray]:
    """Distinct RGB images; pixel (0, 0) = (i, 255 - i, 7) names the frame and shows the channel order."""
    frames = []
    for i in range(n):
        img = np.random.default_rng(i).integers(0, 256, (H, W, 3), dtype=np.uint8)
        img[0, 0] = (i, 255 - i, 7)
        frames.append(img)
    return frames


def in_format(rgb: np.ndarray, fmt: str) -> np.ndarray:
    """`rgb` as the bytes of a librealsense `fmt` frame (alpha 200)."""
    alpha = np.full(rgb.shape[:2] + (1,), 200, np.uint8)
    return {
        "rgb8": rgb,
        "bgr8": rgb[..., ::-1],
        "rgba8": np.concatenate([rgb, alpha], axis=2),
        "bgra8": np.concatenate([rgb[..., ::-1], alpha], axis=2),
    }[fmt]


def _read_all(cfg: CameraConfig) -> tuple[list, RealSenseCamera]:
    with RealSenseCamera(cfg) as cam:
        cam.start()
        got = []
        while (frame := cam.read(timeout_s=30.0)) is not None:  # None at the end
            got.append(frame)
    return got, cam


# --- colour formats -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["bgr8", "rgba8", "bgra8"])
def test_a_bgr8_rgba8_or_bgra8_recording_is_delivered_as_rgb(fmt: str, tmp_path: Path) -> None:
    rgb = _rgb(4)
    path = record_synthetic(
        tmp_path / f"{fmt}.db3", [in_format(c, fmt) for c in rgb], color_format=fmt, pace=False
    )
    got, _ = _read_all(CameraConfig("front", playback_file=str(path), playback_realtime=False))
    assert [f.frame_number for f in got] == [0, 1, 2, 3]
    for frame in got:
        assert frame.color.shape == (H, W, 3) and frame.color.flags.c_contiguous
        np.testing.assert_array_equal(frame.color, rgb[frame.frame_number])


def test_a_recording_in_a_color_format_without_an_rgb_conversion_is_refused_naming_file_and_formats(
    tmp_path: Path,
) -> None:
    yuyv = [np.zeros((H, W, 2), np.uint8) for _ in range(3)]
    path = record_synthetic(tmp_path / "yuyv.db3", yuyv, color_format="yuyv", pace=False)
    cam = RealSenseCamera(CameraConfig("front", playback_file=str(path)))
    with pytest.raises(ValueError) as caught:  # PlaybackFileError: handled like any bad configuration
        cam.start()
    cam.stop()
    assert str(caught.value) == (
        f"camera 'front': playback_file {path}: "
        "expected a color stream in rgb8, bgr8, rgba8, bgra8, found yuyv"
    )


def test_realsense_node_refuses_a_yuyv_recording_with_one_line(procs, tmp_path: Path) -> None:
    yuyv = [np.zeros((H, W, 2), np.uint8) for _ in range(3)]
    path = record_synthetic(tmp_path / "yuyv.db3", yuyv, color_format="yuyv", pace=False)
    proc = procs.start("rs", [*NODE, "-p", f"playback_file:={path}"])
    assert proc.wait(timeout=60) == 1
    log = procs.log("rs")
    errors = [line for line in log.splitlines() if "ERROR" in line]
    assert "Traceback" not in log and len(errors) == 1, log
    assert f"{path}: expected a color stream in rgb8, bgr8, rgba8, bgra8, found yuyv" in errors[0], log


# --- depth --------------------------------------------------------------------------------------------------


def test_unaligned_depth_is_delivered_at_its_own_size_with_its_own_intrinsics(tmp_path: Path) -> None:
    depths = [np.full((DH, DW), 500 + i, np.uint16) for i in range(4)]
    path = record_synthetic(tmp_path / "d.db3", _rgb(4), depths=depths)  # paced, replayed in real time
    cfg = CameraConfig("front", enable_depth=True, align_depth=False, playback_file=str(path))
    got, cam = _read_all(cfg)
    assert got, f"unpaired color frames: {cam.unpaired}"
    for frame in got:
        assert frame.depth is not None and frame.depth.shape == (DH, DW)
        assert frame.color.shape == (H, W, 3) and frame.intrinsics.width == W
        assert frame.depth_intrinsics is not None
        assert (frame.depth_intrinsics.width, frame.depth_intrinsics.height) == (DW, DH)
        assert frame.depth_intrinsics.fx == pytest.approx(DW)


def _offset_depth_recording(tmp_path: Path, offset_ms: float) -> Path:
    """A 15 fps recording whose depth frames are stamped `offset_ms` after their color frames; paced, for a
    real-time playback (non-real-time depth playbacks lost all but their first frameset under heavy load)."""
    depths = [np.full((H, W), 500 + i, np.uint16) for i in range(12)]
    path = tmp_path / f"off{offset_ms:.0f}.db3"
    return record_synthetic(path, _rgb(12), fps=15, depths=depths, depth_offset_ms=offset_ms)


def test_playback_pairs_depth_at_the_recordings_own_rate_not_the_configured_fps(tmp_path: Path) -> None:
    """20 ms apart is within half a frame period at the recording's 15 fps (33 ms), not at fps:=30 (17 ms)."""
    path = _offset_depth_recording(tmp_path, 20.0)
    cfg = CameraConfig("front", fps=30, enable_depth=True, playback_file=str(path))
    got, cam = _read_all(cfg)
    assert got, f"nothing paired; unpaired color frames: {cam.unpaired}"
    assert all(f.depth is not None for f in got)
    assert cam.pair_tolerance_ms == pytest.approx(1000 / 15 / 2)


def test_a_stream_without_paired_frames_names_the_unpaired_count(tmp_path: Path) -> None:
    path = _offset_depth_recording(tmp_path, 5000.0)  # depth from another clock: nothing pairs
    cfg = CameraConfig("front", enable_depth=True, playback_file=str(path), playback_repeat=True)
    with RealSenseCamera(cfg) as cam:
        cam.start()
        assert cam.read(timeout_s=1.5) is None
        level, text, values = cam.health(cam.clock())
    assert cam.unpaired > 0 and values["unpaired_color"] == cam.unpaired
    assert (level, text) == (
        2,
        f"no frames yet ({cam.unpaired} color frames unpaired: no depth frame stamped within 33.3 ms)",
    )


# --- settings -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["1front", "frönt", "_front"])
def test_camera_config_refuses_a_name_that_is_not_a_ros_name_token(name: str) -> None:
    with pytest.raises(
        ValueError, match=r"CameraConfig.name: expected a ROS name token like 'front'.*found str"
    ):
        CameraConfig(name)


def test_realsense_node_refuses_a_camera_name_starting_with_a_digit_with_one_line(
    procs, tmp_path: Path
) -> None:
    path = record_synthetic(tmp_path / "rec_1front.db3", _rgb(3), pace=False)
    proc = procs.start("rs", [*NODE, "-p", "camera_names:=[1front]", "-p", f"playback_file:={path}"])
    assert proc.wait(timeout=60) == 1
    log = procs.log("rs")
    errors = [line for line in log.splitlines() if "ERROR" in line]
    assert "Traceback" not in log and len(errors) == 1, log
    assert "expected a ROS name token like 'front'" in errors[0] and "'1front'" in errors[0], log


def _not_a_file(kind: str, tmp_path: Path) -> Path:
    path = tmp_path / f"{kind}.db3"
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    else:  # "link_to_dev_null"
        path.symlink_to("/dev/null")
    return path


@pytest.mark.parametrize(
    ("kind", "described"),
    [
        ("directory", "a directory"),
        ("fifo", "a FIFO"),
        ("link_to_dev_null", "a character device, via a symbolic link"),
    ],
)
def test_camera_config_says_a_playback_path_that_is_no_regular_file_is_not_a_regular_file(
    kind: str, described: str, tmp_path: Path
) -> None:
    path = _not_a_file(kind, tmp_path)
    with pytest.raises(ValueError) as caught:
        CameraConfig("front", playback_file=str(path))
    assert (
        str(caught.value) == f"CameraConfig.playback_file (front): {path} is not a regular file ({described})"
    )


def test_camera_configs_refuse_a_serial_given_for_two_cameras() -> None:
    params = dict(DEFAULTS, camera_names=["front", "wrist"], serials=["123", "123"])
    with pytest.raises(
        ValueError, match=r"parameter serials: expected one device per camera, found '123' more than once"
    ):
        camera_configs(params)
