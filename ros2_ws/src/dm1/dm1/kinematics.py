"""Forward kinematics of the Franka Research 3 (numpy only, no robot or ROS needed).

Frames follow Franka's documentation: the base is ``fr3_link0``; the arm uses Craig's (modified)
Denavit-Hartenberg convention, ``T_i = RotX(alpha) @ TransX(a) @ RotZ(theta) @ TransZ(d)``; the flange sits
0.107 m along joint 7's axis; the Franka Hand is rotated by -45 degrees about the flange z axis and its TCP
(``fr3_hand_tcp``, franky's default end-effector frame) lies 0.1034 m further along z.

Everything is vectorised over leading batch dimensions: ``q`` may be ``(7,)`` or ``(..., 7)``.
"""

from __future__ import annotations

import numpy as np

# (a [m], d [m], alpha [rad]) for joints 1..7 (Franka FR3 robot documentation); the flange follows (d only).
FR3_DH: tuple[tuple[float, float, float], ...] = (
    (0.0, 0.333, 0.0),
    (0.0, 0.0, -np.pi / 2),
    (0.0, 0.316, np.pi / 2),
    (0.0825, 0.0, np.pi / 2),
    (-0.0825, 0.384, -np.pi / 2),
    (0.0, 0.0, np.pi / 2),
    (0.088, 0.0, np.pi / 2),
)
FLANGE_D = 0.107
HAND_TCP_D = 0.1034
HAND_YAW = -np.pi / 4

FR3_JOINT_LOWER = np.array([-2.7437, -1.7837, -2.9007, -3.0421, -2.8065, 0.5445, -3.0159])
FR3_JOINT_UPPER = np.array([2.7437, 1.7837, 2.9007, -0.1518, 2.8065, 4.5169, 3.0159])
# franky's / libfranka's usual "ready" configuration.
FR3_HOME_Q = np.array([0.0, -np.pi / 4, 0.0, -3 * np.pi / 4, 0.0, np.pi / 2, np.pi / 4])


def _mdh(a: float, d: float, alpha: float, theta: np.ndarray) -> np.ndarray:
    """Modified-DH transform for a batch of joint angles ``theta`` (...,) -> (..., 4, 4)."""
    ct, st = np.cos(theta), np.sin(theta)
    ca, sa = np.cos(alpha), np.sin(alpha)
    t = np.zeros(theta.shape + (4, 4))
    t[..., 0, 0], t[..., 0, 1], t[..., 0, 3] = ct, -st, a
    t[..., 1, 0], t[..., 1, 1], t[..., 1, 2], t[..., 1, 3] = st * ca, ct * ca, -sa, -sa * d
    t[..., 2, 0], t[..., 2, 1], t[..., 2, 2], t[..., 2, 3] = st * sa, ct * sa, ca, ca * d
    t[..., 3, 3] = 1.0
    return t


def _flange_to_tcp() -> np.ndarray:
    """Constant transform flange -> fr3_hand_tcp (4, 4)."""
    c, s = np.cos(HAND_YAW), np.sin(HAND_YAW)
    t = np.eye(4)
    t[:2, :2] = [[c, -s], [s, c]]
    t[2, 3] = HAND_TCP_D
    return t


_F_T_TCP = _flange_to_tcp()


def _as_joint_array(q: np.ndarray | list[float]) -> np.ndarray:
    arr = np.asarray(q, dtype=np.float64)
    if arr.ndim == 0 or arr.shape[-1] != 7:
        raise ValueError(f"fr3_fk: q must have shape (..., 7), found {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("fr3_fk: q contains non-finite values")
    return arr


def fr3_fk_matrix(q: np.ndarray | list[float], tcp: bool = True) -> np.ndarray:
    """Homogeneous pose of ``fr3_hand_tcp`` (or the flange if ``tcp=False``) in ``fr3_link0``.

    Args:
        q: joint angles [rad], shape (7,) or (..., 7).
        tcp: include the Franka Hand TCP offset (default) or stop at the flange.

    Returns:
        (..., 4, 4) transforms.
    """
    arr = _as_joint_array(q)
    pose = np.broadcast_to(np.eye(4), arr.shape[:-1] + (4, 4)).copy()
    for i, (a, d, alpha) in enumerate(FR3_DH):
        pose = pose @ _mdh(a, d, alpha, arr[..., i])
    flange = np.eye(4)
    flange[2, 3] = FLANGE_D
    pose = pose @ flange
    if tcp:
        pose = pose @ _F_T_TCP
    return pose


def rotation_to_quat_xyzw(rot: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) -> unit quaternions (..., 4) as x, y, z, w (sign: `canonical_quat`)."""
    r = np.asarray(rot, dtype=np.float64)
    m00, m11, m22 = r[..., 0, 0], r[..., 1, 1], r[..., 2, 2]
    # Four candidate magnitudes; the largest is numerically safest (Shepperd's method, branch-free).
    cand = np.stack(
        [
            1.0 + m00 + m11 + m22,  # 4 w^2
            1.0 + m00 - m11 - m22,  # 4 x^2
            1.0 - m00 + m11 - m22,  # 4 y^2
            1.0 - m00 - m11 + m22,  # 4 z^2
        ],
        axis=-1,
    )
    k = np.argmax(cand, axis=-1)
    s = 2.0 * np.sqrt(np.maximum(np.take_along_axis(cand, k[..., None], -1)[..., 0], 1e-300))
    d21, d02, d10 = r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0], r[..., 1, 0] - r[..., 0, 1]
    s01, s02, s12 = r[..., 0, 1] + r[..., 1, 0], r[..., 0, 2] + r[..., 2, 0], r[..., 1, 2] + r[..., 2, 1]
    options = np.stack(
        [
            np.stack([d21 / s, d02 / s, d10 / s, 0.25 * s], -1),
            np.stack([0.25 * s, s01 / s, s02 / s, d21 / s], -1),
            np.stack([s01 / s, 0.25 * s, s12 / s, d02 / s], -1),
            np.stack([s02 / s, s12 / s, 0.25 * s, d10 / s], -1),
        ],
        axis=-2,
    )  # (..., 4 options, 4)
    quat = np.take_along_axis(options, k[..., None, None].repeat(4, -1), -2)[..., 0, :]
    quat = quat / np.linalg.norm(quat, axis=-1, keepdims=True)
    return canonical_quat(quat)


# Top-down gripper orientation (hand z axis pointing down): a rotation of pi about the base x axis.
TOP_DOWN_XYZW = np.array([1.0, 0.0, 0.0, 0.0])


def canonical_quat(quat: np.ndarray, ref: np.ndarray = TOP_DOWN_XYZW) -> np.ndarray:
    """Pick the sign of each quaternion (..., 4) so that it lies in the hemisphere of ``ref``.

    q and -q are the same rotation. Near a top-down grasp w is ~0, so the common "w >= 0" rule would flip
    the sign on sensor noise; the hemisphere of the top-down quaternion is continuous for all usual grasp
    yaws, which keeps ``ee_quat_xyzw`` a smooth input for the policy.
    """
    q = np.asarray(quat, dtype=np.float64)
    dot = q @ np.asarray(ref, dtype=np.float64)
    return np.where(dot[..., None] < 0, -q, q)


def quat_xyzw_to_rotation(quat: np.ndarray) -> np.ndarray:
    """Unit quaternions (..., 4) x, y, z, w -> rotation matrices (..., 3, 3)."""
    qn = np.asarray(quat, dtype=np.float64)
    qn = qn / np.linalg.norm(qn, axis=-1, keepdims=True)
    x, y, z, w = qn[..., 0], qn[..., 1], qn[..., 2], qn[..., 3]
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]
    return np.stack([np.stack(r, -1) for r in rows], -2)


def fr3_fk(q: np.ndarray | list[float]) -> tuple[np.ndarray, np.ndarray]:
    """End-effector (``fr3_hand_tcp``) pose in ``fr3_link0``.

    Args:
        q: joint angles [rad], shape (7,) or (..., 7).

    Returns:
        ``(pos (..., 3) [m], quat_xyzw (..., 4))``; the quaternion's sign follows `canonical_quat`.

    Raises:
        ValueError: wrong shape or non-finite joint angles.
    """
    pose = fr3_fk_matrix(q)
    return pose[..., :3, 3].copy(), rotation_to_quat_xyzw(pose[..., :3, :3])


def _link_constants() -> np.ndarray:
    """(7, 4, 4): RotX(alpha_i) TransX(a_i) TransZ(d_i) of each joint, with TransZ(d_i) in column 3; the joint
    rotation RotZ(theta_i) is mixed into columns 0 and 1 by `fr3_tcp_positions`."""
    out = np.zeros((7, 4, 4))
    for i, (a, d, alpha) in enumerate(FR3_DH):
        c, s = np.cos(alpha), np.sin(alpha)
        out[i] = [[1.0, 0.0, 0.0, a], [0.0, c, -s, 0.0], [0.0, s, c, 0.0], [0.0, 0.0, 0.0, 1.0]]
        out[i, :, 3] += d * out[i, :, 2]  # ... @ TransZ(d): RotZ and TransZ commute
    return out


_LINKS = _link_constants()  # (7, 4, 4)
_TCP = np.array([0.0, 0.0, FLANGE_D + HAND_TCP_D, 1.0])  # the TCP in joint 7's frame (the hand yaws about z)


def fr3_tcp_poses(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(`fr3_hand_tcp` positions (N, 3) m, joint 7's frame rotations (N, 3, 3)) in fr3_link0 of joint
    configurations q (N, 7) rad: no checks, for the controller's per-tick limits
    (`dm1.control.joint_ee_limits`).

    The TCP's rotation is joint 7's times a constant (the hand's yaw), so the rotation *between* two TCP
    orientations is the one between these. Same frames as `fr3_fk` (modified DH, T_i = RotX(alpha) TransX(a)
    RotZ(theta) TransZ(d)), every joint's transform built at once: ~30 us for a batch, against ~150 for
    `fr3_fk`.
    """
    c, s = np.cos(q)[..., None], np.sin(q)[..., None]  # (N, 7, 1)
    links = np.broadcast_to(_LINKS, q.shape[:1] + _LINKS.shape).copy()  # (N, 7, 4, 4)
    col0, col1 = _LINKS[:, :, 0], _LINKS[:, :, 1]  # (7, 4)
    links[..., 0] = c * col0 + s * col1  # C RotZ(theta): columns 0 and 1 turn by theta
    links[..., 1] = c * col1 - s * col0
    pose = links[:, 0]
    for i in range(1, 7):
        pose = pose @ links[:, i]
    return (pose @ _TCP)[:, :3], pose[:, :3, :3]


def fr3_tcp_positions(q: np.ndarray) -> np.ndarray:
    """`fr3_hand_tcp` positions (N, 3) m in fr3_link0 of joint configurations q (N, 7) rad
    (`fr3_tcp_poses`)."""
    return fr3_tcp_poses(q)[0]


def rotation_angles(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angles (...,) rad in [0, pi] of the rotations between rotation matrices a and b (..., 3, 3).

    From the chord: ||a - b||_F = 2 sqrt(2) sin(angle / 2), accurate for tiny angles too (acos of the trace
    is not)."""
    chord = np.linalg.norm(np.asarray(a) - np.asarray(b), axis=(-2, -1)) / (2.0 * np.sqrt(2.0))
    return 2.0 * np.arcsin(np.clip(chord, 0.0, 1.0))
