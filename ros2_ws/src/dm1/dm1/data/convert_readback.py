"""Read the layouts `dm1.data.convert` exports back into arrays (used by the round-trip tests).

- `read_lerobot`: a LeRobot v3 dataset with inline images, per episode `{images, state, action, timestamp,
  task, perturbed}`; needs `pyarrow`.
- `read_robomimic`: a robomimic HDF5 file, per demo `{actions, obs, rewards, dones, num_samples, perturbed}`.

Exports older than the `perturbed` field read back with nothing marked.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from dm1.data.convert import EPISODES_PATH, LEROBOT_VERSION, _pyarrow


def _unpng(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def read_lerobot(root: str | Path) -> list[dict[str, Any]]:
    """Read a LeRobot v3 dataset (inline images): per episode `{images, state, action, timestamp, task}`."""
    _pyarrow()
    import pyarrow.parquet as pq

    root = Path(root)
    info = json.loads((root / "meta/info.json").read_text())
    if info.get("codebase_version") != LEROBOT_VERSION:
        raise ValueError(
            f"{root}/meta/info.json: codebase_version expected {LEROBOT_VERSION}, "
            f"found {info.get('codebase_version')}"
        )
    tasks = pq.read_table(root / "meta/tasks.parquet").to_pydict()
    task_names = dict(zip(tasks["task_index"], tasks["task"], strict=True))
    episodes = pq.read_table(root / EPISODES_PATH).to_pylist()
    image_keys = [k for k, f in info["features"].items() if f["dtype"] == "image"]
    tables: dict[tuple[int, int], dict[str, list[Any]]] = {}
    result = []
    for e in episodes:
        key = (e["data/chunk_index"], e["data/file_index"])
        if key not in tables:
            path = root / info["data_path"].format(chunk_index=key[0], file_index=key[1])
            tables[key] = pq.read_table(path).to_pydict()
        data = tables[key]
        rows = [
            i for i, g in enumerate(data["index"]) if e["dataset_from_index"] <= g < e["dataset_to_index"]
        ]
        if len(rows) != e["length"]:
            raise ValueError(
                f"{root}: episode {e['episode_index']} expected {e['length']} frames, found {len(rows)}"
            )
        perturbed = np.zeros(len(rows), dtype=bool)  # exports older than the field: nothing marked
        if "perturbed" in data:
            perturbed = np.asarray([data["perturbed"][i] for i in rows], dtype=bool)
        result.append(
            {
                "episode_index": e["episode_index"],
                "success": e.get("success"),
                "task": task_names[data["task_index"][rows[0]]],
                "images": {
                    k.removeprefix("observation.images."): np.stack(
                        [_unpng(data[k][i]["bytes"]) for i in rows]
                    )
                    for k in image_keys
                },
                "state": np.asarray([data["observation.state"][i] for i in rows], np.float32),
                "action": np.asarray([data["action"][i] for i in rows], np.float32),
                "timestamp": np.asarray([data["timestamp"][i] for i in rows], np.float32),
                "perturbed": perturbed,
            }
        )
    return result


def read_robomimic(path: str | Path) -> list[dict[str, Any]]:
    """Read a robomimic HDF5 file: per demo (by index) `{actions, obs, rewards, dones, num_samples}`."""
    path = Path(path)
    out = []
    with h5py.File(path, "r") as f:
        if "data" not in f or "env_args" not in f["data"].attrs:
            raise ValueError(f"{path}: not a robomimic file (missing data group or data.attrs['env_args'])")
        demos = sorted(f["data"].keys(), key=lambda n: int(n.split("_")[1]))
        for name in demos:
            g = f["data"][name]
            n = int(g.attrs["num_samples"])
            if g["actions"].shape[0] != n:
                raise ValueError(
                    f"{path}: {name}/actions has {g['actions'].shape[0]} rows, num_samples says {n}"
                )
            out.append(
                {
                    "name": name,
                    "num_samples": n,
                    "actions": g["actions"][()],
                    "obs": {k: g["obs"][k][()] for k in g["obs"]},
                    "rewards": g["rewards"][()],
                    "dones": g["dones"][()],
                    "perturbed": g["perturbed"][()] if "perturbed" in g else np.zeros(n, dtype=bool),
                    "env_args": json.loads(f["data"].attrs["env_args"]),
                }
            )
    return out
