"""What makes episodes mixable in one dataset directory; the check that refuses to append conflicting ones.

Every writer (`dm1 data collect`, in-process or through the teleop node, and `dm1 data synth`) calls
`check_append_compatible` before writing: appending episodes with other cameras, image sizes, proprio keys,
action space or names, or control rate to an existing dataset would make it unusable for training and
conversion. `layout_differences` finds such episodes in a dataset (`dm1 data validate`, `info`; these also
compare the reference frame), `require_same_layout` refuses them (`dm1 data convert`), and so does the
training loader (`dm1.data.dataset.WindowDataset`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dm1.data.episode import EpisodeFormatError, read_episode


@dataclass(frozen=True)
class EpisodeSchema:
    """The parts of an episode's layout that must agree across a dataset.

    Args:
        camera_names: recorded cameras, in order.
        image_size: (H, W) of every camera, or None when not known in advance (not compared).
        proprio_keys: recorded `dm1.proprio` keys, in order.
        action_space: `ee_position` or `joint_position`.
        action_names: one name per action dimension.
        control_rate_hz: recording rate (Hz).
        frame: reference frame of the positions (`fr3_link0`), or None when not known (not compared; the
            writers' append checks leave it out).
    """

    camera_names: tuple[str, ...]
    image_size: tuple[int, int] | None
    proprio_keys: tuple[str, ...]
    action_space: str
    action_names: tuple[str, ...]
    control_rate_hz: float
    frame: str | None = field(default=None, compare=False)  # compared by `differences` only, when known

    @classmethod
    def of(cls, episode: Any) -> EpisodeSchema:
        """The schema of a `dm1.data.episode.Episode` (read with or without images)."""
        sizes = {tuple(int(v) for v in s[:2]) for s in episode.image_shapes.values()}
        return cls(
            tuple(episode.camera_names),
            sizes.pop() if len(sizes) == 1 else None,
            tuple(episode.proprio_keys),
            str(episode.action_space),
            tuple(episode.action_names),
            float(episode.control_rate_hz),
            str(episode.frame),
        )

    def differences(self, other: EpisodeSchema) -> list[str]:
        """Human-readable `field: expected X, found Y` for every field where `other` differs."""
        out = []
        for name in ("camera_names", "image_size", "proprio_keys", "action_space", "action_names"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if name == "image_size" and (mine is None or theirs is None):
                continue
            if mine != theirs:
                out.append(f"{name}: expected {_show(mine)}, found {_show(theirs)}")
        if abs(self.control_rate_hz - other.control_rate_hz) > 1e-9:
            out.append(f"control_rate_hz: expected {self.control_rate_hz:g}, found {other.control_rate_hz:g}")
        if self.frame is not None and other.frame is not None and self.frame != other.frame:
            out.append(f"frame: expected {self.frame!r}, found {other.frame!r}")
        return out


def _show(value: Any) -> str:
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return f"{value[0]}x{value[1]}"  # an image size (H, W)
    return str(list(value)) if isinstance(value, tuple) else repr(value)


def check_append_compatible(directory: str | os.PathLike[str], schema: EpisodeSchema) -> int:
    """Raise ValueError when `directory` already holds episodes whose schema differs from `schema`.

    Returns the number of complete episodes already there (0 for a missing or empty directory). Unreadable
    episodes are left to `dm1 data validate`; they do not block appending.
    """
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise ValueError(f"{d} exists and is not a directory")
    paths = sorted(d.glob("episode_*.h5")) if d.is_dir() else []
    for path in paths:
        try:
            found = EpisodeSchema.of(read_episode(path, load_images=False))
        except EpisodeFormatError:
            continue
        diffs = schema.differences(found)
        if diffs:
            raise ValueError(
                f"{d} holds a different dataset ({path.name}: {'; '.join(diffs)}); "
                "write into a new directory (dm1 data: -o, dm1 launch: --record-dir) or move those episodes "
                "away"
            )
    return len(paths)


def layout_differences(episodes: Sequence[Any]) -> dict[str, list[str]]:
    """Episodes (read with or without images) whose layout differs from the first one's.

    Returns file name -> the `field: expected X, found Y` differences (X: the first episode's value).
    """
    if not episodes:
        return {}
    ref = EpisodeSchema.of(episodes[0])
    found = {ep.path.name: ref.differences(EpisodeSchema.of(ep)) for ep in episodes[1:]}
    return {name: diffs for name, diffs in found.items() if diffs}


def require_same_layout(episodes: Sequence[Any], consequence: str) -> None:
    """Raise ValueError naming every episode whose layout differs from the first one's, and how.

    Args:
        episodes: episodes of one dataset, the reference first.
        consequence: what the caller cannot do with them (ends the message).
    """
    diffs = layout_differences(episodes)
    if diffs:
        first = Path(episodes[0].path)
        listing = "; ".join(f"{name} ({'; '.join(d)})" for name, d in diffs.items())
        raise ValueError(
            f"{first.parent}: {len(diffs)} episode(s) differ in layout from {first.name}: {listing}; "
            f"{consequence}"
        )
