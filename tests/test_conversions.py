"""Message conversions: bit-exact images, joint states by name, chunk ↔ trajectory round trips,
diagnostics and markers."""

from __future__ import annotations

import numpy as np
import pytest
from dm1.kinematics import FR3_HOME_Q, fr3_fk
from dm1.policy.step import ActionChunk
from dm1_ros.chunk_markers import chunk_ee_path, chunk_to_markers, clear_markers
from dm1_ros.conversions import (
    chunk_to_msg,
    diagnostic_array,
    diagnostic_status,
    diagnostic_values,
    from_time_msg,
    image_to_msg,
    joint_state_to_arm,
    make_joint_state,
    msg_to_chunk,
    msg_to_image,
    msg_to_rgb,
    multidof_trajectory_to_arrays,
    to_time_msg,
)
from sensor_msgs.msg import Image, JointState
from trajectory_msgs.msg import JointTrajectory, MultiDOFJointTrajectory
from visualization_msgs.msg import Marker

RNG = np.random.default_rng(0)


@pytest.mark.parametrize(
    ("encoding", "shape", "dtype"),
    [
        ("rgb8", (5, 7, 3), np.uint8),
        ("bgr8", (5, 7, 3), np.uint8),
        ("mono8", (5, 7), np.uint8),
        ("16UC1", (5, 7), np.uint16),
    ],
)
def test_image_round_trip_is_bit_exact(encoding, shape, dtype) -> None:
    arr = RNG.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)
    msg = image_to_msg(arr, encoding, stamp=12.5, frame_id="camera_front_color_optical_frame")
    assert (msg.height, msg.width, msg.encoding) == (5, 7, encoding)
    back = msg_to_image(msg)
    assert back.dtype == dtype and back.shape == shape
    np.testing.assert_array_equal(back, arr)
    assert from_time_msg(msg.header.stamp) == 12.5


def test_padded_rows_and_big_endian_depth_are_decoded() -> None:
    arr = RNG.integers(0, 65535, (3, 4), dtype=np.uint16)
    rows = np.zeros((3, 12), np.uint8)  # 8 data bytes + 4 padding bytes per row
    rows[:, :8] = arr.astype(">u2").view(np.uint8).reshape(3, 8)
    msg = Image(height=3, width=4, encoding="16UC1", is_bigendian=1, step=12, data=rows.tobytes())
    np.testing.assert_array_equal(msg_to_image(msg), arr)


def test_bgr8_is_converted_to_rgb_for_the_policy() -> None:
    rgb = RNG.integers(0, 255, (4, 6, 3), dtype=np.uint8)
    msg = image_to_msg(np.ascontiguousarray(rgb[..., ::-1]), "bgr8")
    np.testing.assert_array_equal(msg_to_rgb(msg), rgb)
    with pytest.raises(ValueError, match="rgb8 or bgr8.*'mono8'"):
        msg_to_rgb(image_to_msg(rgb[..., 0].copy(), "mono8"))


def test_bad_images_are_refused_with_expected_and_found() -> None:
    with pytest.raises(ValueError, match=r"rgb8 expects \(H, W, 3\) uint8, found \(4, 6\) uint8"):
        image_to_msg(np.zeros((4, 6), np.uint8), "rgb8")
    with pytest.raises(ValueError, match="32FC1"):
        image_to_msg(np.zeros((4, 6), np.float32), "32FC1")
    short = Image(height=4, width=6, encoding="rgb8", step=18, data=bytes(10))
    with pytest.raises(ValueError, match="72 bytes, found step 18 and 10 bytes"):
        msg_to_image(short)


def test_joint_state_round_trip_by_name_in_any_order() -> None:
    q = FR3_HOME_Q + 0.1
    msg = make_joint_state(q, 0.06, stamp=3.0)
    assert list(msg.position[-2:]) == [0.03, 0.03]
    perm = [8, 2, 0, 7, 1, 3, 6, 5, 4]
    shuffled = JointState(name=[msg.name[i] for i in perm], position=[msg.position[i] for i in perm])
    q2, width = joint_state_to_arm(shuffled)
    np.testing.assert_array_equal(q2, q)
    assert width == pytest.approx(0.06)


def test_joint_state_missing_a_joint_is_refused() -> None:
    msg = make_joint_state(FR3_HOME_Q, 0.0)
    msg.name, msg.position = msg.name[1:], msg.position[1:]
    with pytest.raises(ValueError, match=r"missing \['fr3_joint1'\]"):
        joint_state_to_arm(msg)


def test_joint_state_naming_a_joint_twice_is_refused() -> None:
    """Two values for fr3_joint1: which one is the arm? (before: the last one silently won)"""
    msg = make_joint_state(FR3_HOME_Q, 0.04)
    msg.name, msg.position = [*msg.name, "fr3_joint1"], [*msg.position, 2.5]
    with pytest.raises(ValueError, match=r"repeated \['fr3_joint1'\]"):
        joint_state_to_arm(msg)


def test_a_huge_encoding_string_is_quoted_short_in_the_refusal() -> None:
    msg = image_to_msg(np.zeros((2, 3, 3), np.uint8), "rgb8")
    msg.encoding = "x" * 10_000 + "\nforged line"
    with pytest.raises(ValueError) as err:
        msg_to_rgb(msg)
    assert len(str(err.value)) < 200 and "\n" not in str(err.value)


def test_input_stamps_must_be_valid_times() -> None:
    from builtin_interfaces.msg import Time
    from dm1_ros.conversions import checked_seconds

    assert checked_seconds(Time(sec=3, nanosec=5), "header.stamp") == pytest.approx(3.000000005)
    with pytest.raises(ValueError, match="header.stamp.*nanosec 1000000000"):
        checked_seconds(Time(sec=3, nanosec=10**9), "header.stamp")


def _chunk(space: str, n: int = 5) -> ActionChunk:
    da = 4 if space == "ee_position" else 8
    acts = RNG.uniform(-1, 1, (n, da)).astype(np.float32)
    if space == "joint_position":
        acts[:, :7] = FR3_HOME_Q + 0.05 * acts[:, :7]
    names = (
        ("x", "y", "z", "gripper") if da == 4 else tuple(f"fr3_joint{i}" for i in range(1, 8)) + ("gripper",)
    )
    return ActionChunk(
        t0=1234.5, dt=0.1, actions=acts, first_index=1, obs_stamp=1234.4, space=space, names=names
    )


def test_cartesian_chunk_round_trips_through_multidof_trajectory() -> None:
    chunk = _chunk("ee_position")
    msg = chunk_to_msg(chunk, orientation_xyzw=[1.0, 0.0, 0.0, 0.0])
    assert isinstance(msg, MultiDOFJointTrajectory) and list(msg.joint_names) == ["fr3_hand_tcp", "gripper"]
    assert msg.points[3].transforms[1].translation.x == float(chunk.actions[3, 3])
    t0, tfs, acts, quats = multidof_trajectory_to_arrays(msg)
    assert t0 == pytest.approx(1234.5, abs=1e-9)
    np.testing.assert_allclose(tfs, np.arange(5) * 0.1, atol=1e-9)
    np.testing.assert_array_equal(quats, np.tile([1.0, 0.0, 0.0, 0.0], (5, 1)))
    back = msg_to_chunk(msg)
    np.testing.assert_array_equal(back.actions, chunk.actions)  # float32 → float64 → float32 is exact
    assert back.space == "ee_position" and back.dt == pytest.approx(0.1)


def test_joint_chunk_round_trips_through_joint_trajectory() -> None:
    chunk = _chunk("joint_position")
    msg = chunk_to_msg(chunk)
    assert isinstance(msg, JointTrajectory)
    assert list(msg.joint_names) == [f"fr3_joint{i}" for i in range(1, 8)] + ["gripper"]
    back = msg_to_chunk(msg)
    np.testing.assert_array_equal(back.actions, chunk.actions)
    assert back.t0 == pytest.approx(chunk.t0, abs=1e-9) and back.dt == pytest.approx(0.1)


def test_wrong_chunk_width_and_missing_orientation_are_refused() -> None:
    with pytest.raises(ValueError, match="orientation_xyzw"):
        chunk_to_msg(_chunk("ee_position"))
    bad = _chunk("joint_position")
    with pytest.raises(ValueError, match=r"expected actions \(N, 4\).*\(5, 8\)"):
        chunk_to_msg(ActionChunk(0.0, 0.1, bad.actions, 0, 0.0, "ee_position", bad.names), [1, 0, 0, 0])


def test_time_conversion_carries_nanoseconds() -> None:
    msg = to_time_msg(1.9999999999)
    assert (msg.sec, msg.nanosec) == (2, 0)
    assert from_time_msg(to_time_msg(1700000000.123456789)) == pytest.approx(1700000000.123456789, abs=2e-7)


def test_diagnostics_carry_level_and_values() -> None:
    st = diagnostic_status("dm1/policy", "warn", "camera 'front' stale", {"stale": 3, "inferred_ms": 4.25})
    arr = diagnostic_array(5.0, [st])
    assert arr.status[0].level == st.WARN and from_time_msg(arr.header.stamp) == 5.0
    assert diagnostic_values(st) == {"stale": "3", "inferred_ms": "4.250"}
    with pytest.raises(ValueError, match="level"):
        diagnostic_status("x", "fatal", "")


def test_predicted_path_markers_follow_the_ee_in_both_action_spaces() -> None:
    cart = _chunk("ee_position")
    m = chunk_to_markers(cart)
    line, spheres = m.markers
    assert line.type == Marker.LINE_STRIP and len(line.points) == 5 and line.header.frame_id == "fr3_link0"
    assert line.points[2].x == pytest.approx(float(cart.actions[2, 0]))
    assert len(spheres.colors) == 5
    joint = _chunk("joint_position")
    pos, grip = chunk_ee_path(joint)
    np.testing.assert_allclose(pos[0], fr3_fk(joint.actions[0, :7].astype(np.float64))[0])
    np.testing.assert_array_equal(grip, joint.actions[:, 7])
    assert clear_markers().markers[0].action == Marker.DELETEALL


def test_safety_box_marker_spans_the_workspace_limits() -> None:
    from dm1.control.limits import SafetyLimits
    from dm1_ros.chunk_markers import safety_box_markers

    lim = SafetyLimits()
    (box,) = safety_box_markers(lim.workspace_min, lim.workspace_max).markers
    lo, hi = np.asarray(lim.workspace_min), np.asarray(lim.workspace_max)
    np.testing.assert_allclose([box.pose.position.x, box.pose.position.y, box.pose.position.z], (lo + hi) / 2)
    np.testing.assert_allclose([box.scale.x, box.scale.y, box.scale.z], hi - lo)


def test_a_cartesian_trajectory_with_a_zero_quaternion_is_malformed() -> None:
    from dm1_ros.conversions import msg_to_timed_chunk

    msg = chunk_to_msg(_chunk("ee_position"), orientation_xyzw=[1.0, 0.0, 0.0, 0.0])
    rot = msg.points[2].transforms[0].rotation
    rot.x = rot.y = rot.z = rot.w = 0.0
    with pytest.raises(ValueError, match=r"quat_xyzw\[2\]: expected a unit quaternion"):
        msg_to_timed_chunk(msg)


def test_an_oversized_trajectory_is_refused_before_its_points_are_converted(monkeypatch) -> None:
    """A 20,000-point chunk stalled the controller's executor while converted point by point."""
    from dm1.control.schedule import MAX_CHUNK_POINTS
    from dm1_ros import conversions

    n = MAX_CHUNK_POINTS + 1
    names = ("x", "y", "z", "gripper")
    big = ActionChunk(0.0, 0.01, np.zeros((n, 4), np.float32), 0, 0.0, "ee_position", names)
    cart = chunk_to_msg(big, orientation_xyzw=[1.0, 0.0, 0.0, 0.0])
    joint = JointTrajectory(joint_names=[f"fr3_joint{i}" for i in range(1, 8)] + ["gripper"])
    joint.points = list(chunk_to_msg(_chunk("joint_position")).points) * (n // 5 + 1)

    def no_conversion(*_args):
        raise AssertionError("points converted before the size check")

    monkeypatch.setattr(conversions, "_times", no_conversion)
    for msg in (cart, joint):
        with pytest.raises(ValueError, match=f"points: expected at most {MAX_CHUNK_POINTS}, found"):
            conversions.msg_to_timed_chunk(msg)
