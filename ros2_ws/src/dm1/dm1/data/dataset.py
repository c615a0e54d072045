"""Training windows over a directory of episodes, preloaded into tensors for fast random batches.

A window starts at every step i where a full chunk fits (i + chunk_length <= T, no end padding): the target is
``actions[i : i + Ta]`` and the observation is taken at i (with ``obs_history`` frames i-h+1..i, repeating
the first frame of the episode where the history runs past its start); a window whose chunk contains a
``perturbed`` step (a recovery demonstration's deliberate miss) is left out. Images stay uint8; proprio and
actions are min-max normalised to [-1, 1] with ``Normalizer``s fitted on the data (or given, e.g. on resume).
With ``ModelConfig.relative_action_dims`` R > 0 the first R action dims of every chunk are taken relative to
the newest observed proprio frame (e.g. EE targets minus the observed ee_pos), and the action normaliser is
fitted on those offsets.

Batches come from ``sample_batch`` (index random windows into preloaded tensors, on the training device),
which on a 2-core CPU is far cheaper than a per-item ``DataLoader``; ``__getitem__`` exists for inspection.
"""

from __future__ import annotations

import contextlib
import hashlib
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dm1.config import PROPRIO_KEY_DIMS, DataConfig, ModelConfig
from dm1.data.episode import Episode, read_episode
from dm1.data.index import DatasetIndex
from dm1.data.schema import EpisodeSchema
from dm1.normalization import Normalizer

#: Proprio key whose values relative actions are offsets from, per action space.
_RELATIVE_ANCHOR = {"ee_position": "ee_pos", "joint_position": "joint_pos"}


class WindowDataset(torch.utils.data.Dataset):
    """All (observation, action chunk) windows of a dataset directory.

    Args:
        dataset_dir: directory of ``episode_*.h5`` files (an ``index.json`` is (re)written there).
        model_cfg: gives ``camera_names``, ``image_size``, ``chunk_length``, ``obs_history``, ``action_dim``.
        data_cfg: gives ``proprio_keys`` (concatenated in this order).
        normalizers: ``{"proprio": Normalizer, "action": Normalizer}``; fitted on these episodes if None.
        episodes: file names to use (default: all complete episodes, see ``success_only``).
        success_only: skip episodes recorded with ``success = False``.
        device: where the preloaded tensors live (batches are gathered there).

    Raises:
        ValueError: no usable episode, an invalid episode file, or an episode that does not match the configs
            (the message names the file, the field, what was expected and what was found).
    """

    def __init__(
        self,
        dataset_dir: str | Path,
        model_cfg: ModelConfig,
        data_cfg: DataConfig,
        normalizers: dict[str, Normalizer] | None = None,
        episodes: list[str] | None = None,
        success_only: bool = True,
        device: str | torch.device = "cpu",
    ) -> None:
        self.dataset_dir = Path(dataset_dir)
        self.model_cfg, self.data_cfg = model_cfg, data_cfg
        if not self.dataset_dir.is_dir():
            raise ValueError(
                f"data.dataset_dir: expected a directory of episodes, found {str(dataset_dir)!r}"
            )
        index = DatasetIndex(self.dataset_dir).scan()
        with contextlib.suppress(OSError):  # read-only dataset: the in-memory index is enough
            index.write()
        if index.invalid:
            listing = "; ".join(e["error"] for e in index.invalid)
            raise ValueError(
                f"{self.dataset_dir}: invalid episode files (run `dm1 data validate`): {listing}"
            )
        if index.incomplete:
            warnings.warn(
                f"{self.dataset_dir}: ignoring incomplete episodes {index.incomplete}", stacklevel=2
            )
        entries = [e for e in index.episodes if e["success"] or not success_only]
        if episodes is not None:
            known = {e["file"] for e in index.episodes}
            missing = sorted(set(episodes) - known)
            if missing:
                raise ValueError(f"{self.dataset_dir}: episodes {missing} are not complete episode files")
            entries = [e for e in entries if e["file"] in set(episodes)]
        Ta = model_cfg.chunk_length
        short = [f"{e['file']} ({e['length']} steps)" for e in entries if int(e["length"]) < Ta]
        if short:
            warnings.warn(
                f"{self.dataset_dir}: skipping {len(short)} episode(s) shorter than chunk_length={Ta}: "
                f"{', '.join(short)}",
                stacklevel=2,
            )
        entries = [e for e in entries if int(e["length"]) >= Ta]
        if not entries:
            raise ValueError(
                f"{self.dataset_dir}: no usable episode (need complete, successful episodes with at least "
                f"chunk_length={Ta} steps; index has {len(index.episodes)} complete episodes)"
            )
        self.episode_files = [e["file"] for e in entries]
        self.dataset_sha256 = _entries_sha256(entries)
        self._load([read_episode(self.dataset_dir / f) for f in self.episode_files], normalizers)
        self.to(device)

    # -- loading ---------------------------------------------------------------------------------------------
    def _check_episode(self, ep: Episode) -> None:
        m, where = self.model_cfg, ep.path
        missing = [c for c in m.camera_names if c not in ep.camera_names]
        if missing:
            raise ValueError(
                f"{where}: camera_names: expected {list(m.camera_names)}, found {ep.camera_names}"
            )
        for cam in m.camera_names:
            if ep.image_shapes[cam][:2] != tuple(m.image_size):
                raise ValueError(
                    f"{where}: obs/{cam}: expected images of (H, W) = {tuple(m.image_size)} "
                    f"(model.image_size), found {ep.image_shapes[cam][:2]}"
                )
        for k in self.data_cfg.proprio_keys:
            if k not in ep.proprio:
                raise ValueError(
                    f"{where}: proprio_keys: expected {k!r} (data.proprio_keys), found {ep.proprio_keys}"
                )
            if ep.proprio[k].shape[1] != PROPRIO_KEY_DIMS[k]:
                raise ValueError(
                    f"{where}: obs/{k}: expected width {PROPRIO_KEY_DIMS[k]}, found {ep.proprio[k].shape[1]}"
                )
        if ep.actions.shape[1] != m.action_dim:
            raise ValueError(
                f"{where}: actions: expected {m.action_dim} dims (model.action_dim), "
                f"found {ep.actions.shape[1]}"
            )

    def _load(self, eps: list[Episode], normalizers: dict[str, Normalizer] | None) -> None:
        m = self.model_cfg
        for ep in eps:
            self._check_episode(ep)
        _require_one_layout(eps)
        first = eps[0]
        self.action_space, self.action_names = first.action_space, list(first.action_names)
        self.control_rate_hz, self.units, self.frame = first.control_rate_hz, dict(first.units), first.frame
        self.episode_lengths = [ep.length for ep in eps]
        proprio = np.concatenate(
            [np.concatenate([ep.proprio[k] for k in self.data_cfg.proprio_keys], axis=1) for ep in eps]
        )  # (N, P)
        actions = np.concatenate([ep.actions for ep in eps])  # (N, Da)
        # Window starts and observation-history frame indices into the concatenated arrays.
        starts, hist = [], []
        offset = 0
        self.windows_per_episode: list[int] = []
        for ep, T in zip(eps, self.episode_lengths, strict=True):
            bad = np.zeros(T, dtype=bool) if ep.perturbed is None else ep.perturbed
            # a window is kept when none of its chunk's actions is a deliberate mistake
            keep = np.convolve(bad, np.ones(m.chunk_length, dtype=int), mode="valid") == 0  # (T - Ta + 1,)
            self.windows_per_episode.append(int(keep.sum()))
            for i in np.flatnonzero(keep).tolist():
                starts.append(offset + i)
                hist.append([offset + max(i - k, 0) for k in range(m.obs_history - 1, -1, -1)])
            offset += T
        if not starts:
            raise ValueError(
                f"no training windows in {self.dataset_dir}: no unperturbed steps form a full chunk of "
                f"chunk_length={m.chunk_length} (each chunk holds a `perturbed` step, a recovery demo's "
                "deliberate mistake, which is never learned)"
            )
        window_starts = np.asarray(starts, dtype=np.int64)  # (W,)
        obs_index = np.asarray(hist, dtype=np.int64).reshape(len(starts), m.obs_history)  # (W, h)
        chunks = actions[window_starts[:, None] + np.arange(m.chunk_length)]  # (W, Ta, Da)
        rel = m.relative_action_dims
        anchor_key = _RELATIVE_ANCHOR.get(self.action_space)
        if rel and (anchor_key is None or self.data_cfg.proprio_keys[0] != anchor_key):
            raise ValueError(
                f"{self.dataset_dir}: model.relative_action_dims={rel}: expected data.proprio_keys to start "
                f"with {anchor_key!r} for action space {self.action_space!r}, "
                f"found {list(self.data_cfg.proprio_keys)}"
            )
        if rel:  # offsets from the newest observed frame (ModelConfig.relative_action_dims)
            chunks = chunks.copy()
            chunks[..., :rel] -= proprio[obs_index[:, -1], None, :rel]
        if normalizers is None:
            normalizers = {
                "proprio": Normalizer.fit(proprio),
                "action": Normalizer.fit(chunks.reshape(-1, chunks.shape[-1])),
            }
        for name, arr in (("proprio", proprio), ("action", actions)):
            if name not in normalizers or normalizers[name].dim != arr.shape[1]:
                raise ValueError(f"normalizers[{name!r}]: expected a Normalizer of dim {arr.shape[1]}")
        self.normalizers = normalizers
        self.images = {
            c: torch.from_numpy(np.concatenate([ep.images[c] for ep in eps])) for c in m.camera_names
        }
        self.proprio = torch.from_numpy(normalizers["proprio"].normalize(proprio).astype(np.float32))
        self.action_chunks = torch.from_numpy(
            normalizers["action"].normalize(chunks).astype(np.float32)
        )  # (W, Ta, Da), normalised
        self.window_starts = torch.from_numpy(window_starts)
        self.obs_index = torch.from_numpy(obs_index)

    def to(self, device: str | torch.device) -> WindowDataset:
        """Move the preloaded tensors to ``device``; returns self."""
        self.device = torch.device(device)
        self.images = {c: v.to(self.device) for c, v in self.images.items()}
        self.proprio = self.proprio.to(self.device)
        self.action_chunks = self.action_chunks.to(self.device)
        self.window_starts, self.obs_index = (
            self.window_starts.to(self.device),
            self.obs_index.to(self.device),
        )
        return self

    # -- access ----------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.window_starts.shape[0])

    @property
    def num_steps(self) -> int:
        """Total number of steps in the selected episodes."""
        return int(sum(self.episode_lengths))

    def gather(self, windows: torch.Tensor) -> dict[str, Any]:
        """Batch of windows (B,): proprio (B, P*h), actions (B, Ta, Da), images {cam: uint8 (B, H, W, 3)}.

        With ``obs_history`` h > 1 the images are (B, h, H, W, 3), oldest frame first (``DM1Network`` input).
        """
        windows = windows.to(self.device)
        obs = self.obs_index[windows]  # (B, h)
        B, h = obs.shape
        flat = obs.reshape(-1)
        images = {}
        for cam, frames in self.images.items():
            x = frames.index_select(0, flat)  # (B*h, H, W, 3)
            H, W = x.shape[1:3]
            images[cam] = x if h == 1 else x.reshape(B, h, H, W, 3)
        proprio = self.proprio.index_select(0, flat).reshape(B, -1)  # (B, P*h)
        actions = self.action_chunks[windows]  # (B, Ta, Da)
        return {"images": images, "proprio": proprio, "actions": actions}

    def sample_batch(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, Any]:
        """A uniformly random batch of windows (with replacement), drawn with ``generator`` on the CPU."""
        idx = torch.randint(len(self), (batch_size,), generator=generator)
        return self.gather(idx)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.gather(torch.tensor([i]))
        return {
            "images": {c: v[0] for c, v in item["images"].items()},
            "proprio": item["proprio"][0],
            "actions": item["actions"][0],
        }

    def episode_windows(self, episode: int) -> torch.Tensor:
        """Window indices (W_e,) of the ``episode``-th selected episode, in time order."""
        start = sum(self.windows_per_episode[:episode])
        return torch.arange(start, start + self.windows_per_episode[episode])


def _require_one_layout(eps: list[Episode]) -> None:
    """ValueError naming an episode whose layout (rate, frame, action space and names, cameras, proprio keys,
    image size) differs from the first one's, both files, and the field: the first episode's rate, frame and
    action names would otherwise stand for all of them in the model card."""
    ref = EpisodeSchema.of(eps[0])
    for ep in eps[1:]:
        diffs = ref.differences(EpisodeSchema.of(ep))
        if diffs:
            raise ValueError(
                f"{ep.path}: {'; '.join(diffs)} (expected: as in {eps[0].path}); the episodes of one dataset "
                "must agree on these fields: move the odd ones away (`dm1 data validate` lists them)"
            )


def _entries_sha256(entries: list[dict[str, Any]]) -> str:
    """Same formula as ``DatasetIndex.dataset_sha256``, over the selected index entries."""
    h = hashlib.sha256()
    for e in sorted(entries, key=lambda e: e["file"]):
        h.update(f"{e['file']}:{e['sha256']}\n".encode())
    return h.hexdigest()
