"""numpy ↔ ROS 2 message conversions for dm1 (images, joint states, action chunks, diagnostics, time).

Images: `cv_bridge` is used only if it imports *and* round-trips every encoding bit-exactly; otherwise (the
normal case on PyPI installs) the numpy path is used. Why: PyPI's `cv-bridge` is the ROS 1 (noetic)
package; with numpy 2 its `cv2_to_imgmsg` calls the removed `ndarray.tostring`, 16UC1 raises an encoding
error, and `imgmsg_to_cv2` on a ROS 2 `Image` fails with "buffer is too small" (platform-notes.md §2). The
numpy path is bit-exact, honours row padding (`step`) and `is_bigendian`, and costs one copy.

Action chunks follow architecture.md: `joint_position` → `trajectory_msgs/JointTrajectory` (names
`fr3_joint1..7`, `gripper`), `ee_position` → `trajectory_msgs/MultiDOFJointTrajectory` (names `fr3_hand_tcp`,
`gripper`; the gripper command is the `translation.x` of its transform). `header.stamp` is the due time of
the first point and `time_from_start` = j / control rate; `header.frame_id` is the base frame `fr3_link0`
(a joint chunk may leave it empty). Received chunks are refused when malformed (ValueError): an invalid
stamp (`nanosec` >= 1e9, `sec` < 0) or duration, another frame, and `TimedChunk`'s checks. A point's
`velocities` / `accelerations` are ignored: the timing comes from `time_from_start`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from builtin_interfaces.msg import Duration, Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from dm1.control.chunk_refusals import quoted
from dm1.control.schedule import MAX_CHUNK_POINTS, TimedChunk
from dm1.policy.step import ActionChunk
from geometry_msgs.msg import Quaternion, Transform, Vector3
from sensor_msgs.msg import Image, JointState
from trajectory_msgs.msg import (
    JointTrajectory,
    JointTrajectoryPoint,
    MultiDOFJointTrajectory,
    MultiDOFJointTrajectoryPoint,
)

ARM_JOINTS: tuple[str, ...] = tuple(f"fr3_joint{i}" for i in range(1, 8))
FINGER_JOINTS: tuple[str, ...] = ("fr3_finger_joint1", "fr3_finger_joint2")
GRIPPER_NAME = "gripper"
EE_FRAME = "fr3_hand_tcp"
BASE_FRAME = "fr3_link0"
# encoding -> (numpy dtype (little endian), channels)
ENCODINGS: dict[str, tuple[str, int]] = {
    "rgb8": ("u1", 3),
    "bgr8": ("u1", 3),
    "mono8": ("u1", 1),
    "16UC1": ("u2", 1),
}


# --------------------------------------------------------------------------------------------------- time
def to_time_msg(t: float) -> Time:
    """Seconds → builtin_interfaces/Time (rounded to the nanosecond)."""
    sec, nsec = divmod(round(float(t) * 1e9), 10**9)
    return Time(sec=int(sec), nanosec=int(nsec))


def from_time_msg(msg: Time | Duration) -> float:
    """builtin_interfaces/Time or Duration → seconds."""
    return msg.sec + msg.nanosec * 1e-9


def to_duration_msg(t: float) -> Duration:
    """Seconds (>= 0) → builtin_interfaces/Duration."""
    sec, nsec = divmod(round(float(t) * 1e9), 10**9)
    return Duration(sec=int(sec), nanosec=int(nsec))


# --------------------------------------------------------------------------------------------------- images
def _probe_image(encoding: str) -> np.ndarray:
    kind, ch = ENCODINGS[encoding]
    shape = (2, 3, ch) if ch > 1 else (2, 3)
    return (np.arange(int(np.prod(shape))) * 4099).astype(kind).reshape(shape)


def _cv_bridge() -> Any | None:
    """A CvBridge that round-trips every encoding bit-exactly into ROS 2 messages, else None."""
    try:
        from cv_bridge import CvBridge  # type: ignore[import-not-found]

        bridge = CvBridge()
        for enc in ENCODINGS:
            probe = _probe_image(enc)
            msg = bridge.cv2_to_imgmsg(probe, encoding=enc)
            back = bridge.imgmsg_to_cv2(msg, desired_encoding="passthrough")
            if not isinstance(msg, Image) or not np.array_equal(np.asarray(back), probe):
                return None
        return bridge
    except Exception:  # noqa: BLE001 - any failure means "use numpy"
        return None


CV_BRIDGE = _cv_bridge()


def image_to_msg(
    arr: np.ndarray, encoding: str = "rgb8", stamp: float | None = None, frame_id: str = ""
) -> Image:
    """numpy → sensor_msgs/Image. rgb8/bgr8: (H, W, 3) uint8; mono8: (H, W) uint8; 16UC1: (H, W) uint16."""
    if encoding not in ENCODINGS:
        raise ValueError(f"image_to_msg: encoding must be one of {sorted(ENCODINGS)}, found {encoding!r}")
    kind, ch = ENCODINGS[encoding]
    dtype = np.dtype(kind).newbyteorder("<")
    a = np.asarray(arr)
    shape_ok = a.ndim == 3 and a.shape[2] == ch if ch > 1 else a.ndim == 2
    if not shape_ok or a.dtype.kind != "u" or a.dtype.itemsize != dtype.itemsize:
        want = "(H, W, 3)" if ch > 1 else "(H, W)"
        raise ValueError(f"image_to_msg: {encoding} expects {want} {dtype.name}, found {a.shape} {a.dtype}")
    if CV_BRIDGE is not None:
        msg = CV_BRIDGE.cv2_to_imgmsg(np.ascontiguousarray(a), encoding=encoding)
    else:
        h, w = a.shape[:2]
        msg = Image(height=h, width=w, encoding=encoding, is_bigendian=0, step=w * ch * dtype.itemsize)
        msg.data = np.ascontiguousarray(a, dtype=dtype).tobytes()
    if stamp is not None:
        msg.header.stamp = to_time_msg(stamp)
    msg.header.frame_id = frame_id
    return msg


def msg_to_image(msg: Image) -> np.ndarray:
    """sensor_msgs/Image → numpy in its own encoding ((H, W, 3) uint8, (H, W) uint8 or (H, W) uint16)."""
    if msg.encoding not in ENCODINGS:
        raise ValueError(
            f"msg_to_image: unsupported encoding {quoted(msg.encoding, 40)}; "
            f"expected one of {sorted(ENCODINGS)}"
        )
    if CV_BRIDGE is not None:
        return np.asarray(CV_BRIDGE.imgmsg_to_cv2(msg, desired_encoding="passthrough"))
    kind, ch = ENCODINGS[msg.encoding]
    dtype = np.dtype(kind).newbyteorder(">" if msg.is_bigendian else "<")
    row = msg.width * ch * dtype.itemsize
    buf = np.frombuffer(msg.data, np.uint8)
    if msg.step < row or buf.size < msg.step * msg.height:
        raise ValueError(
            f"msg_to_image: {msg.encoding} {msg.width}x{msg.height} needs step >= {row} and "
            f"{msg.step * msg.height} bytes, found step {msg.step} and {buf.size} bytes"
        )
    rows = buf[: msg.step * msg.height].reshape(msg.height, msg.step)[:, :row]  # drop row padding
    shape = (msg.height, msg.width, ch) if ch > 1 else (msg.height, msg.width)
    img = np.ascontiguousarray(rows).view(dtype).reshape(shape)
    return img.astype(dtype.newbyteorder("="), copy=False) if msg.is_bigendian else img


def msg_to_rgb(msg: Image) -> np.ndarray:
    """sensor_msgs/Image (rgb8 or bgr8) → (H, W, 3) uint8 RGB, the policy's input format."""
    if msg.encoding not in ("rgb8", "bgr8"):
        raise ValueError(f"camera image: expected encoding rgb8 or bgr8, found {quoted(msg.encoding, 40)}")
    img = msg_to_image(msg)
    return np.ascontiguousarray(img[..., ::-1]) if msg.encoding == "bgr8" else img


# --------------------------------------------------------------------------------------------------- joints
def make_joint_state(
    q: Sequence[float],
    gripper_width: float,
    stamp: float | None = None,
    velocity: Sequence[float] | None = None,
) -> JointState:
    """FR3 arm + finger joints as sensor_msgs/JointState (each finger = gripper width / 2)."""
    msg = JointState(name=[*ARM_JOINTS, *FINGER_JOINTS])
    half = float(gripper_width) / 2
    msg.position = [float(v) for v in q] + [half, half]
    if velocity is not None:
        msg.velocity = [float(v) for v in velocity] + [0.0, 0.0]
    if stamp is not None:
        msg.header.stamp = to_time_msg(stamp)
    return msg


def joint_state_to_arm(msg: JointState) -> tuple[np.ndarray, float]:
    """sensor_msgs/JointState → (q (7,) rad in fr3_joint1..7 order, gripper width m = sum of the fingers)."""
    index = {n: i for i, n in enumerate(msg.name)}
    wanted = (*ARM_JOINTS, *FINGER_JOINTS)
    missing = [n for n in wanted if n not in index]
    repeated = [n for n in wanted if list(msg.name).count(n) > 1]
    if missing or repeated or len(msg.position) != len(msg.name):
        names = quoted(", ".join(msg.name), 200)
        raise ValueError(
            f"joint state: missing {missing}, repeated {repeated}; expected names {list(wanted)} once each "
            f"with one position each, found {len(msg.name)} names ({names}) and {len(msg.position)} positions"
        )
    q = np.array([msg.position[index[n]] for n in ARM_JOINTS], dtype=np.float64)
    return q, float(sum(msg.position[index[n]] for n in FINGER_JOINTS))


# --------------------------------------------------------------------------------------------------- chunks
def chunk_to_joint_trajectory(chunk: ActionChunk, frame_id: str = BASE_FRAME) -> JointTrajectory:
    """A `joint_position` chunk (N, 8) → JointTrajectory (fr3_joint1..7 + gripper)."""
    if chunk.actions.ndim != 2 or chunk.actions.shape[1] != 8:
        raise ValueError(
            f"joint chunk: expected actions (N, 8) [7 joints + gripper], found {chunk.actions.shape}"
        )
    msg = JointTrajectory(joint_names=[*ARM_JOINTS, GRIPPER_NAME])
    msg.header.stamp, msg.header.frame_id = to_time_msg(chunk.t0), frame_id
    for j, row in enumerate(chunk.actions):
        msg.points.append(
            JointTrajectoryPoint(
                positions=[float(v) for v in row], time_from_start=to_duration_msg(j * chunk.dt)
            )
        )
    return msg


def chunk_to_multidof_trajectory(
    chunk: ActionChunk, orientation_xyzw: Sequence[float], frame_id: str = BASE_FRAME
) -> MultiDOFJointTrajectory:
    """An `ee_position` chunk (N, 4) [x, y, z, gripper] → MultiDOFJointTrajectory (fr3_hand_tcp + gripper)."""
    if chunk.actions.ndim != 2 or chunk.actions.shape[1] != 4:
        raise ValueError(
            f"cartesian chunk: expected actions (N, 4) [x, y, z, gripper], found {chunk.actions.shape}"
        )
    qx, qy, qz, qw = (float(v) for v in orientation_xyzw)
    msg = MultiDOFJointTrajectory(joint_names=[EE_FRAME, GRIPPER_NAME])
    msg.header.stamp, msg.header.frame_id = to_time_msg(chunk.t0), frame_id
    for j, row in enumerate(chunk.actions):
        ee = Transform(
            translation=Vector3(x=float(row[0]), y=float(row[1]), z=float(row[2])),
            rotation=Quaternion(x=qx, y=qy, z=qz, w=qw),
        )
        grip = Transform(translation=Vector3(x=float(row[3])))
        msg.points.append(
            MultiDOFJointTrajectoryPoint(transforms=[ee, grip], time_from_start=to_duration_msg(j * chunk.dt))
        )
    return msg


def chunk_to_msg(
    chunk: ActionChunk, orientation_xyzw: Sequence[float] | None = None
) -> JointTrajectory | MultiDOFJointTrajectory:
    """Dispatch on `chunk.space` (`joint_position` or `ee_position`)."""
    if chunk.space == "joint_position":
        return chunk_to_joint_trajectory(chunk)
    if chunk.space == "ee_position":
        if orientation_xyzw is None:
            raise ValueError("chunk_to_msg: space 'ee_position' needs the card's action.orientation_xyzw")
        return chunk_to_multidof_trajectory(chunk, orientation_xyzw)
    raise ValueError(f"chunk_to_msg: unknown action space {chunk.space!r}")


def _check_size(msg: JointTrajectory | MultiDOFJointTrajectory, what: str) -> None:
    """Refuse a trajectory of more than `MAX_CHUNK_POINTS` points before any point is converted (a
    20,000-point one stalled the controller's executor in the per-point Python loops below)."""
    if len(msg.points) > MAX_CHUNK_POINTS:
        raise ValueError(f"{what} points: expected at most {MAX_CHUNK_POINTS}, found {len(msg.points)}")


def checked_seconds(msg: Time | Duration, what: str) -> float:
    """A received Time / Duration in seconds; ValueError when it is not a valid one (`nanosec` >= 1e9, which
    used to read as up to a second later, or `sec` < 0)."""
    if not 0 <= msg.nanosec < 10**9 or msg.sec < 0:
        raise ValueError(
            f"{what}: expected sec >= 0 and 0 <= nanosec < 1e9, found sec {msg.sec} nanosec {msg.nanosec}"
        )
    return from_time_msg(msg)


def _times(header_stamp: Time, points: Sequence[Any]) -> tuple[float, np.ndarray]:
    t0 = checked_seconds(header_stamp, "header.stamp")
    return t0, np.array(
        [checked_seconds(p.time_from_start, f"points[{j}].time_from_start") for j, p in enumerate(points)]
    )


def _check_frame(frame_id: str, allowed: tuple[str, ...], what: str) -> None:
    """Refuse a chunk in another frame than the controller's base frame (a target in `fr3_hand_tcp` or
    `world` read as `fr3_link0` moved the arm elsewhere than meant)."""
    if frame_id not in allowed:
        expected = " or ".join(map(repr, allowed))
        raise ValueError(f"{what} header.frame_id: expected {expected}, found {quoted(frame_id, 80)}")


def joint_trajectory_to_arrays(msg: JointTrajectory) -> tuple[float, np.ndarray, np.ndarray]:
    """JointTrajectory → (t0 [s], time_from_start (N,) [s], actions (N, 8): fr3_joint1..7 + gripper)."""
    _check_size(msg, "joint trajectory")
    want = [*ARM_JOINTS, GRIPPER_NAME]
    if sorted(msg.joint_names) != sorted(want):
        raise ValueError(f"joint trajectory: expected joint_names {want}, found {list(msg.joint_names)}")
    order = [list(msg.joint_names).index(n) for n in want]
    bad = [j for j, p in enumerate(msg.points) if len(p.positions) != len(want)]
    if bad:
        raise ValueError(f"joint trajectory: points {bad} do not have {len(want)} positions")
    t0, tfs = _times(msg.header.stamp, msg.points)
    actions = np.array([[p.positions[i] for i in order] for p in msg.points], np.float64).reshape(
        -1, len(want)
    )
    return t0, tfs, actions


def multidof_trajectory_to_arrays(
    msg: MultiDOFJointTrajectory,
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """MultiDOFJointTrajectory → (t0, time_from_start (N,), actions (N, 4) [x, y, z, grip], quats (N, 4))."""
    _check_size(msg, "cartesian trajectory")
    names = list(msg.joint_names)
    if sorted(names) != sorted([EE_FRAME, GRIPPER_NAME]):
        raise ValueError(
            f"cartesian trajectory: expected joint_names {[EE_FRAME, GRIPPER_NAME]}, found {names}"
        )
    ie, ig = names.index(EE_FRAME), names.index(GRIPPER_NAME)
    t0, tfs = _times(msg.header.stamp, msg.points)
    acts, quats = np.zeros((len(msg.points), 4)), np.zeros((len(msg.points), 4))
    for j, p in enumerate(msg.points):
        if len(p.transforms) != 2:
            raise ValueError(
                f"cartesian trajectory: point {j} has {len(p.transforms)} transforms, expected 2"
            )
        e, g = p.transforms[ie], p.transforms[ig]
        acts[j] = (e.translation.x, e.translation.y, e.translation.z, g.translation.x)
        quats[j] = (e.rotation.x, e.rotation.y, e.rotation.z, e.rotation.w)
    return t0, tfs, acts, quats


def msg_to_chunk(msg: JointTrajectory | MultiDOFJointTrajectory) -> ActionChunk:
    """A published trajectory back to an `ActionChunk` (dt from the first two points; 0 for one point)."""
    if isinstance(msg, JointTrajectory):
        t0, tfs, acts = joint_trajectory_to_arrays(msg)
        space, names = "joint_position", (*ARM_JOINTS, GRIPPER_NAME)
    else:
        t0, tfs, acts, _ = multidof_trajectory_to_arrays(msg)
        space, names = "ee_position", ("x", "y", "z", GRIPPER_NAME)
    dt = float(tfs[1] - tfs[0]) if len(tfs) > 1 else 0.0
    start = t0 + float(tfs[0]) if len(tfs) else t0
    return ActionChunk(start, dt, acts.astype(np.float32), 0, float("nan"), space, names)


def msg_to_timed_chunk(msg: JointTrajectory | MultiDOFJointTrajectory) -> TimedChunk:
    """A received trajectory as the controller's `TimedChunk`; ValueError/IndexError on a malformed one
    (wrong names or lengths, more than `MAX_CHUNK_POINTS` points, an invalid stamp, a frame other than
    `BASE_FRAME` ("" too for a joint chunk), a quaternion not of unit norm, times not strictly increasing
    from 0, a gripper command far outside [0, 1]: see `TimedChunk`)."""
    if isinstance(msg, MultiDOFJointTrajectory):
        _check_frame(msg.header.frame_id, (BASE_FRAME,), "cartesian trajectory")
        t0, tfs, acts, quats = multidof_trajectory_to_arrays(msg)
        return TimedChunk(t0, tfs, acts[:, :3], acts[:, 3], kind="cartesian", quat_xyzw=quats)
    _check_frame(msg.header.frame_id, ("", BASE_FRAME), "joint trajectory")
    t0, tfs, acts = joint_trajectory_to_arrays(msg)
    return TimedChunk(t0, tfs, acts[:, :7], acts[:, 7], kind="joint")


# ------------------------------------------------------------------------------------------------ diagnostics
LEVELS = {
    "ok": DiagnosticStatus.OK,
    "warn": DiagnosticStatus.WARN,
    "error": DiagnosticStatus.ERROR,
    "stale": DiagnosticStatus.STALE,
}


def diagnostic_status(
    name: str, level: str, message: str, values: Mapping[str, Any] | None = None, hardware_id: str = ""
) -> DiagnosticStatus:
    """One DiagnosticStatus; `level` is ok | warn | error | stale; values are formatted as strings."""
    if level not in LEVELS:
        raise ValueError(f"diagnostic_status: level must be one of {sorted(LEVELS)}, found {level!r}")
    kv = [
        KeyValue(key=str(k), value=f"{v:.3f}" if isinstance(v, float) else str(v))
        for k, v in (values or {}).items()
    ]
    return DiagnosticStatus(
        level=LEVELS[level], name=name, message=message, hardware_id=hardware_id, values=kv
    )


def diagnostic_array(stamp: float, statuses: Sequence[DiagnosticStatus]) -> DiagnosticArray:
    """DiagnosticArray stamped at `stamp` seconds."""
    msg = DiagnosticArray(status=list(statuses))
    msg.header.stamp = to_time_msg(stamp)
    return msg


def diagnostic_values(status: DiagnosticStatus) -> dict[str, str]:
    """KeyValue list → dict (for consumers and tests)."""
    return {kv.key: kv.value for kv in status.values}


def controller_faults(msg: DiagnosticArray) -> list[str | None]:
    """One entry per controller report (`dm1.control.executor.STATUS_NAME`) in `msg`: the latched fault's
    text while it reports ERROR, else None."""
    from dm1.control.executor import STATUS_NAME

    return [
        (st.message or "controller fault") if st.level == DiagnosticStatus.ERROR else None
        for st in msg.status
        if st.name == STATUS_NAME
    ]
