"""A learnable toy "Lift" dataset with the same schema as the twin's Lift episodes.

Each episode places a coloured cube at a random table position. The front camera sees the table from
above (the cube as a red square, the end effector as a blue dot); the wrist camera sees the cube relative to
the end effector. A scripted expert moves the EE (proprio ``ee_pos`` (3), ``gripper_width`` (1)) to a hover
point above the cube, descends, closes the gripper and lifts. Actions are ``ee_position``
``[x, y, z, gripper]``: the absolute next EE target (m, fr3_link0) and the gripper command (1 = close). The
action is a deterministic function of (cube position from the images, EE position, gripper width), so a
policy can learn it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dm1.data.episode import next_episode_path
from dm1.data.episode_checks import bad_camera_names
from dm1.data.episode_writer import EpisodeWriter
from dm1.data.index import DatasetIndex
from dm1.data.schema import EpisodeSchema, check_append_compatible

ACTION_NAMES = ("x", "y", "z", "gripper")
PROPRIO_SPEC = {"ee_pos": 3, "gripper_width": 1}
UNITS = {"ee_pos": "m", "gripper_width": "m", "actions": ["m", "m", "m", "1"]}
CONTROL_RATE_HZ = 20.0
# Table workspace (m, fr3_link0) seen by the front camera, and the motion limits of the scripted expert.
X_RANGE, Y_RANGE = (0.30, 0.65), (-0.20, 0.20)
CUBE_Z, HOVER_DZ, LIFT_Z = 0.02, 0.08, 0.20
MAX_STEP = 0.02  # m per control step
OPEN_WIDTH, CUBE_WIDTH, WIDTH_STEP = 0.08, 0.04, 0.01


def _expert_action(ee: np.ndarray, width: float, cube: np.ndarray, phase: str) -> tuple[np.ndarray, str]:
    """One step of the scripted expert: (action [x, y, z, grip], next phase)."""
    hover = cube + np.array([0.0, 0.0, HOVER_DZ])
    if phase == "approach" and np.linalg.norm(ee - hover) < 1e-4:
        phase = "descend"
    if phase == "descend" and np.linalg.norm(ee - cube) < 1e-4:
        phase = "grasp"
    if phase == "grasp" and width <= CUBE_WIDTH + 1e-6:
        phase = "lift"
    lift = np.array([cube[0], cube[1], LIFT_Z])
    goal = {"approach": hover, "descend": cube, "grasp": ee, "lift": lift}[phase]
    delta = goal - ee
    dist = float(np.linalg.norm(delta))
    target = goal if dist <= MAX_STEP else ee + delta * (MAX_STEP / dist)
    grip = 1.0 if phase in ("grasp", "lift") else 0.0
    return np.array([*target, grip], dtype=np.float32), phase


def _to_pixel(xy: np.ndarray, size: tuple[int, int]) -> tuple[int, int]:
    """Table (x, y) -> (row, col) of the top-down front camera."""
    h, w = size
    row = (xy[0] - X_RANGE[0]) / (X_RANGE[1] - X_RANGE[0]) * (h - 1)
    col = (xy[1] - Y_RANGE[0]) / (Y_RANGE[1] - Y_RANGE[0]) * (w - 1)
    return int(round(row)), int(round(col))


def _square(img: np.ndarray, rc: tuple[int, int], half: int, colour: tuple[int, int, int]) -> None:
    h, w = img.shape[:2]
    r0, r1 = max(rc[0] - half, 0), min(rc[0] + half + 1, h)
    c0, c1 = max(rc[1] - half, 0), min(rc[1] + half + 1, w)
    if r0 < r1 and c0 < c1:
        img[r0:r1, c0:c1] = colour


def render(
    camera: str, ee: np.ndarray, width: float, cube: np.ndarray, size: tuple[int, int], lifted: bool
) -> np.ndarray:
    """One uint8 (H, W, 3) frame of the toy scene for ``camera`` (``front``; any other = wrist view)."""
    h, w = size
    img = np.full((h, w, 3), 90, dtype=np.uint8)
    half = max(1, min(h, w) // 24)
    cube_xy = ee[:2] if lifted else cube[:2]
    if camera == "front":
        _square(img, _to_pixel(cube_xy, size), half, (220, 40, 40))
        _square(img, _to_pixel(ee[:2], size), max(1, half // 2), (40, 60, 220))
    else:
        # Wrist view: the cube relative to the EE, bigger when closer; the fingers as two grey bars.
        scale = (min(h, w) / 2) / 0.25
        rel = cube_xy - ee[:2]
        rc = (int(round(h / 2 + rel[0] * scale)), int(round(w / 2 + rel[1] * scale)))
        dz = max(ee[2] - cube[2], 0.0) if not lifted else 0.0
        _square(img, rc, max(1, int(half * 2 * (1.0 - min(dz / 0.3, 0.8)))), (220, 40, 40))
        gap = int(round(width / OPEN_WIDTH * w / 4))
        img[h - h // 6 :, max(w // 2 - gap - 2, 0) : w // 2 - gap] = 200
        img[h - h // 6 :, w // 2 + gap : min(w // 2 + gap + 2, w)] = 200
    return img


def make_synthetic_episode(
    path: Path,
    episode_len: int,
    rng: np.random.Generator,
    camera_names: tuple[str, ...] = ("front", "wrist"),
    image_size: tuple[int, int] = (96, 96),
) -> Path:
    """Write one scripted toy episode to ``path`` and return it."""
    cube = np.array([rng.uniform(*X_RANGE), rng.uniform(*Y_RANGE), CUBE_Z])
    ee = np.array([0.45, 0.0, 0.25]) + rng.uniform(-0.03, 0.03, size=3)
    width, phase = OPEN_WIDTH, "approach"
    writer = EpisodeWriter(
        path, camera_names, PROPRIO_SPEC, ACTION_NAMES, "ee_position", CONTROL_RATE_HZ, UNITS, "fr3_link0"
    )
    try:
        for i in range(episode_len):
            action, phase = _expert_action(ee, width, cube, phase)
            lifted = phase == "lift" and ee[2] > CUBE_Z + 1e-3
            images = {c: render(c, ee, width, cube, image_size, lifted) for c in camera_names}
            proprio = {"ee_pos": ee.astype(np.float32), "gripper_width": np.array([width], np.float32)}
            writer.append(images, proprio, action, i / CONTROL_RATE_HZ)
            ee = action[:3].astype(np.float64)
            width = max(width - WIDTH_STEP, CUBE_WIDTH) if action[3] > 0.5 else OPEN_WIDTH
        success = phase == "lift" and ee[2] >= LIFT_Z - 0.05
        return writer.close(success=success)
    except BaseException:
        writer.discard()
        raise


def make_synthetic_dataset(
    out_dir: str | Path,
    n_episodes: int,
    episode_len: int = 48,
    seed: int = 0,
    camera_names: tuple[str, ...] = ("front", "wrist"),
    image_size: tuple[int, int] = (96, 96),
) -> DatasetIndex:
    """Write ``n_episodes`` toy episodes into ``out_dir`` (appending after existing ones) and index them.

    Args:
        out_dir: dataset directory (created if missing); episodes already there must have the same layout
            (cameras, image size, ...), else ValueError naming the directory, the field, expected and found.
        n_episodes: number of episodes (>= 1).
        episode_len: steps per episode (>= 2); about 40 steps complete a lift.
        seed: seed (>= 0) of the cube and start positions. The random stream is seeded with ``seed + n``,
            n the number of the first new episode (``episode_<n>.h5``; 0 in a new directory), so appending
            with the same seed adds new scenes, not copies of the episodes already there.
        camera_names: cameras to render; ``front`` is the top-down view, any other name a wrist view.
        image_size: (H, W) of every image.

    Returns:
        The updated ``DatasetIndex`` of ``out_dir``.
    """
    if n_episodes < 1:
        raise ValueError(f"n_episodes must be >= 1, found {n_episodes}")
    if episode_len < 2:
        raise ValueError(f"episode_len must be >= 2, found {episode_len}")
    if len(image_size) != 2 or min(image_size) < 8:
        raise ValueError(f"image_size must be (H, W) with both >= 8, found {image_size}")
    if not isinstance(seed, int | np.integer) or seed < 0:  # numpy's generators take no negative seed
        raise ValueError(f"seed: expected an integer >= 0, found {seed}")
    problem = bad_camera_names(camera_names)  # before anything is created in out_dir
    if problem:
        raise ValueError(f"camera_names: {problem}")
    out = Path(out_dir)
    schema = EpisodeSchema(
        tuple(camera_names),
        (int(image_size[0]), int(image_size[1])),
        tuple(PROPRIO_SPEC),
        "ee_position",
        ACTION_NAMES,
        CONTROL_RATE_HZ,
    )
    check_append_compatible(out, schema)
    out.mkdir(parents=True, exist_ok=True)
    first = int(next_episode_path(out).stem.removeprefix("episode_"))
    rng = np.random.default_rng(seed + first)
    for _ in range(n_episodes):
        path = next_episode_path(out)
        make_synthetic_episode(path, episode_len, rng, tuple(camera_names), tuple(image_size))
    return DatasetIndex(out).update()
