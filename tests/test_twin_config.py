"""TwinConfig validation: bad configurations fail at construction with the field, expectation and value."""

from __future__ import annotations

import math

import pytest
from dm1.sim.config import CameraSpec, TableSpec, TwinConfig


def test_default_config_has_front_and_wrist_cameras_at_96px_20hz():
    cfg = TwinConfig()
    assert sorted(cfg.cameras) == ["front", "wrist"]
    for spec in cfg.cameras.values():
        assert (spec.width, spec.height, spec.fps) == (96, 96, 20.0)
    assert cfg.cube_size == 0.05 and cfg.success_height == 0.10 and cfg.success_hold_s == 0.5


def test_camera_named_after_preset_uses_that_preset():
    cfg = TwinConfig(cameras={"wrist": CameraSpec(width=64, height=48)})
    pose = cfg.cameras["wrist"].resolved()
    assert pose["parent"] == "robot0_hand" and cfg.cameras["wrist"].preset == "wrist"


def test_unknown_camera_name_without_pose_is_rejected():
    with pytest.raises(ValueError, match=r"cameras\.side.*preset.*'side'"):
        TwinConfig(cameras={"side": CameraSpec()})


def test_unknown_camera_preset_is_rejected():
    with pytest.raises(ValueError, match=r"camera\.preset.*'top'"):
        CameraSpec(preset="top")


def test_explicit_camera_pose_is_accepted():
    spec = CameraSpec(pos=(1.0, 0.5, 0.8), xyaxes=(0, 1, 0, -0.6, 0, 0.8), fovy=60.0)
    cfg = TwinConfig(cameras={"side": spec})
    assert cfg.cameras["side"].resolved()["parent"] == "world"


@pytest.mark.parametrize("field", ["width", "height"])
def test_zero_image_size_is_rejected(field):
    with pytest.raises(ValueError, match=rf"camera\.{field}.*found 0"):
        CameraSpec(preset="front", **{field: 0})


@pytest.mark.parametrize("fps", [0.0, -5.0, math.inf])
def test_non_positive_fps_is_rejected(fps):
    with pytest.raises(ValueError, match=r"camera\.fps.*> 0"):
        CameraSpec(preset="front", fps=fps)


def test_cube_region_off_the_table_is_rejected():
    with pytest.raises(ValueError, match=r"cube_region\.x \(on the table\)"):
        TwinConfig(cube_region=((0.4, 2.0), (-0.1, 0.1)))
    with pytest.raises(ValueError, match=r"cube_region\.y \(on the table\)"):
        TwinConfig(table=TableSpec(size_xy=(1.1, 0.3)), cube_region=((0.4, 0.5), (-0.2, 0.2)))


def test_inverted_cube_region_is_rejected():
    with pytest.raises(ValueError, match=r"cube_region\.x.*min <= max"):
        TwinConfig(cube_region=((0.6, 0.4), (-0.1, 0.1)))


def test_non_loopback_host_is_rejected():
    with pytest.raises(ValueError, match=r"host.*127\.x\.y\.z.*'10\.0\.0\.2'"):
        TwinConfig(host="10.0.0.2")


def test_cameras_given_as_dicts_are_validated():
    cfg = TwinConfig(cameras={"front": {"width": 32, "height": 24, "fps": 10.0}})
    assert cfg.cameras["front"].width == 32 and cfg.cameras["front"].preset == "front"
    with pytest.raises(ValueError, match=r"camera\.width"):
        TwinConfig(cameras={"front": {"width": 0}})


def test_intrinsics_follow_the_vertical_field_of_view():
    spec = CameraSpec(preset="wrist", width=96, height=96)
    fx, fy, cx, cy = spec.intrinsics()
    assert fx == fy == pytest.approx(48 / math.tan(math.radians(35)))
    assert (cx, cy) == (48.0, 48.0)


def test_cube_rests_on_the_table_top():
    cfg = TwinConfig(table=TableSpec(top_z=0.1))
    assert cfg.cube_rest_z == pytest.approx(0.125)
