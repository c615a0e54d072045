"""Export a dm1 episode directory to other dataset layouts, and read them back.

- **LeRobot v3** (`export_lerobot`): `meta/info.json` (codebase_version "v3.0", features, fps, paths),
  `meta/stats.json`, `meta/tasks.parquet`, `meta/episodes/chunk-000/file-000.parquet` (one row per episode
  with its data file and global index range), `data/chunk-XXX/file-YYY.parquet` (one row per frame;
  episodes are appended to a file until it exceeds `data_files_size_in_mb`). Images are stored inline as
  `image` features (struct {bytes: PNG, path}) — no video encoder needed. `observation.state` concatenates the
  proprio keys (names `<key>_<i>`). The bool feature `perturbed` marks the frames whose action is a recovery
  demo's deliberate mistake (not to be learned; dm1's own loader drops them). Requires `pyarrow`.
- **robomimic HDF5** (`export_robomimic`): `data/demo_<i>/{actions, obs/<key>, rewards, dones}` with
  `demo_<i>.attrs["num_samples"]`, `data.attrs["env_args"]` (JSON), `data.attrs["total"]` and `mask/train`.
  Cameras become `obs/<camera>_image`; rewards are sparse (1 at the last step of a successful episode).
  Each demo also has `perturbed` (bool per step, as above; robomimic's loaders ignore it), and the filter key
  `mask/unperturbed` lists the demos without any perturbed step.
  No simulator `states` are stored (franky-sim episodes cannot be replayed by robomimic).

`read_lerobot` / `read_robomimic` (`dm1.data.convert_readback`) read those layouts back (used by the
round-trip tests).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from dm1.data.episode import Episode, read_episode, require_free_space
from dm1.data.schema import require_same_layout
from dm1.data.staging import staged_output
from dm1.data.tools import episode_files

LEROBOT_VERSION = "v3.0"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
EPISODES_PATH = "meta/episodes/chunk-000/file-000.parquet"
CHUNKS_SIZE = 1000


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(
            "LeRobot export needs the 'pyarrow' package (pip install pyarrow); it is not installed"
        ) from exc
    return pyarrow


def _episodes(src: Path, success_only: bool) -> list[Path]:
    """The episode files to export, all read (metadata) and of one layout, before anything is written."""
    eps = [read_episode(p, load_images=False) for p in episode_files(src)]
    eps = [e for e in eps if e.success or not success_only]
    if not eps:
        raise ValueError(f"{src}: no {'successful ' if success_only else ''}episodes to export")
    require_same_layout(eps, "cannot export them together")
    return [e.path for e in eps]


def _png(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _state(ep: Episode) -> np.ndarray:
    return np.concatenate([ep.proprio[k] for k in ep.proprio_keys], axis=1).astype(np.float32)  # (T, P)


def _state_names(ep: Episode) -> list[str]:
    return [f"{k}_{i}" for k in ep.proprio_keys for i in range(ep.proprio[k].shape[1])]


def _perturbed(ep: Episode) -> np.ndarray:
    """(T,) bool: the steps whose action is a deliberate mistake (all False for an ordinary demo)."""
    return np.zeros(ep.length, dtype=bool) if ep.perturbed is None else np.asarray(ep.perturbed, dtype=bool)


def _stats(x: np.ndarray) -> dict[str, Any]:
    x = x.reshape(len(x), -1).astype(np.float64)
    return {
        "min": x.min(0).tolist(),
        "max": x.max(0).tolist(),
        "mean": x.mean(0).tolist(),
        "std": x.std(0).tolist(),
        "count": [len(x)],
    }


def _tasks_table(pa: Any, task: str) -> Any:
    # pandas-compatible: the task string is the DataFrame index (as LeRobot writes it).
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64"},
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object"},
        ],
        "creator": {"library": "dm1"},
    }
    table = pa.table({"task_index": pa.array([0], pa.int64()), "task": pa.array([task], pa.string())})
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def export_lerobot(
    src: str | Path,
    out: str | Path,
    task: str = "lift the cube",
    robot_type: str = "franka_fr3",
    success_only: bool = False,
    data_file_mb: float = 100.0,
    progress: bool = False,
) -> Path:
    """Write the episodes of `src` as a LeRobot v3 dataset in `out` (must not exist). Returns `out`.

    It is built in `<out>.partial` and renamed to `out` when complete; a failure or Ctrl-C removes it.
    """
    src, out = Path(src), Path(out)
    if out.exists():
        raise FileExistsError(f"output {out} already exists; choose a new directory")
    _pyarrow()
    files = _episodes(src, success_only)
    with staged_output(out, directory=True) as tmp:
        _write_lerobot(src, tmp, files, task, robot_type, data_file_mb, progress)
    return out


def _write_lerobot(
    src: Path, out: Path, files: list[Path], task: str, robot_type: str, data_file_mb: float, progress: bool
) -> None:
    """`export_lerobot` into the empty directory `out`."""
    from tqdm import tqdm

    pa = _pyarrow()
    import pyarrow.parquet as pq

    first = read_episode(files[0], load_images=False)
    cams = first.camera_names
    features: dict[str, Any] = {
        f"observation.images.{c}": {
            "dtype": "image",
            "shape": list(first.image_shapes[c]),
            "names": ["height", "width", "channel"],
        }
        for c in cams
    }
    features["observation.state"] = {
        "dtype": "float32",
        "shape": [sum(first.proprio[k].shape[1] for k in first.proprio_keys)],
        "names": _state_names(first),
    }
    features["action"] = {"dtype": "float32", "shape": [len(first.action_names)], "names": first.action_names}
    for name, dtype in [
        ("timestamp", "float32"),
        ("frame_index", "int64"),
        ("episode_index", "int64"),
        ("index", "int64"),
        ("task_index", "int64"),
        ("perturbed", "bool"),
    ]:
        features[name] = {"dtype": dtype, "shape": [1], "names": None}
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema(
        [(f"observation.images.{c}", image_type) for c in cams]
        + [
            ("observation.state", pa.list_(pa.float32())),
            ("action", pa.list_(pa.float32())),
            ("timestamp", pa.float32()),
            ("frame_index", pa.int64()),
            ("episode_index", pa.int64()),
            ("index", pa.int64()),
            ("task_index", pa.int64()),
            ("perturbed", pa.bool_()),
        ]
    )
    (out / "meta").mkdir(parents=True)
    ep_rows: dict[str, list[Any]] = {
        k: []
        for k in (
            "episode_index",
            "tasks",
            "length",
            "success",
            "data/chunk_index",
            "data/file_index",
            "dataset_from_index",
            "dataset_to_index",
            "meta/episodes/chunk_index",
            "meta/episodes/file_index",
        )
    }
    all_actions, all_states = [], []
    writer, file_index, start = None, 0, 0
    for ei, path in enumerate(tqdm(files, desc="lerobot", unit="ep", disable=not progress)):
        ep = read_episode(path)
        T = ep.length
        state = _state(ep)
        cols: dict[str, Any] = {
            f"observation.images.{c}": pa.array(
                [{"bytes": _png(img), "path": None} for img in ep.images[c]], image_type
            )
            for c in cams
        }
        cols["observation.state"] = pa.array(list(state), pa.list_(pa.float32()))
        cols["action"] = pa.array(list(ep.actions), pa.list_(pa.float32()))
        cols["timestamp"] = pa.array((ep.timestamps - ep.timestamps[0]).astype(np.float32))
        cols["frame_index"] = pa.array(np.arange(T, dtype=np.int64))
        cols["episode_index"] = pa.array(np.full(T, ei, dtype=np.int64))
        cols["index"] = pa.array(np.arange(start, start + T, dtype=np.int64))
        cols["task_index"] = pa.array(np.zeros(T, dtype=np.int64))
        cols["perturbed"] = pa.array(_perturbed(ep))
        target = out / DATA_PATH.format(
            chunk_index=file_index // CHUNKS_SIZE, file_index=file_index % CHUNKS_SIZE
        )
        if writer is not None and target.stat().st_size > data_file_mb * 1e6:
            writer.close()
            file_index += 1
            target = out / DATA_PATH.format(
                chunk_index=file_index // CHUNKS_SIZE, file_index=file_index % CHUNKS_SIZE
            )
            writer = None
        if writer is None:
            target.parent.mkdir(parents=True, exist_ok=True)
            writer = pq.ParquetWriter(target, schema)
        writer.write_table(pa.table(cols, schema=schema))
        for k, v in [
            ("episode_index", ei),
            ("tasks", [task]),
            ("length", T),
            ("success", ep.success),
            ("data/chunk_index", file_index // CHUNKS_SIZE),
            ("data/file_index", file_index % CHUNKS_SIZE),
            ("dataset_from_index", start),
            ("dataset_to_index", start + T),
            ("meta/episodes/chunk_index", 0),
            ("meta/episodes/file_index", 0),
        ]:
            ep_rows[k].append(v)
        all_actions.append(ep.actions)
        all_states.append(state)
        start += T
    assert writer is not None
    writer.close()
    (out / EPISODES_PATH).parent.mkdir(parents=True)
    pq.write_table(pa.table(ep_rows), out / EPISODES_PATH)
    pq.write_table(_tasks_table(pa, task), out / "meta/tasks.parquet")
    stats = {
        "action": _stats(np.concatenate(all_actions)),
        "observation.state": _stats(np.concatenate(all_states)),
    }
    (out / "meta/stats.json").write_text(json.dumps(stats, indent=1) + "\n")
    info = {
        "codebase_version": LEROBOT_VERSION,
        "robot_type": robot_type,
        "total_episodes": len(files),
        "total_frames": start,
        "total_tasks": 1,
        "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": data_file_mb,
        "video_files_size_in_mb": 200,
        "fps": first.control_rate_hz,
        "splits": {"train": f"0:{len(files)}"},
        "data_path": DATA_PATH,
        "video_path": None,
        "features": features,
        "dm1": {"action_space": first.action_space, "frame": first.frame, "source": str(src)},
    }
    (out / "meta/info.json").write_text(json.dumps(info, indent=2) + "\n")


def export_robomimic(
    src: str | Path,
    out_path: str | Path,
    env_name: str = "dm1_franky_sim_lift",
    success_only: bool = False,
    progress: bool = False,
) -> Path:
    """Write the episodes of `src` as one robomimic HDF5 file `out_path` (must not exist); returns it.

    The file is written as `<out_path>.partial` and renamed when complete; a failure or Ctrl-C removes it.
    """
    src, out_path = Path(src), Path(out_path)
    if out_path.exists():
        raise FileExistsError(f"output {out_path} already exists; choose a new file name")
    files = _episodes(src, success_only)
    with staged_output(out_path) as tmp:
        # the same arrays, proprio widened to float64: at most ~10 % more than the episode files
        require_free_space(tmp, int(1.1 * sum(p.stat().st_size for p in files)))
        _write_robomimic(tmp, files, env_name, progress)
    return out_path


def _write_robomimic(tmp: Path, files: list[Path], env_name: str, progress: bool) -> None:
    """`export_robomimic` into the new file `tmp`."""
    from tqdm import tqdm

    total = 0
    names, unperturbed = [], []
    with h5py.File(tmp, "w") as f:
        data = f.create_group("data")
        for i, path in enumerate(tqdm(files, desc="robomimic", unit="ep", disable=not progress)):
            ep = read_episode(path)
            g = data.create_group(f"demo_{i}")
            T = ep.length
            g.create_dataset("actions", data=ep.actions.astype(np.float64))
            for c in ep.camera_names:
                g.create_dataset(f"obs/{c}_image", data=ep.images[c], chunks=(1, *ep.images[c].shape[1:]))
            for k in ep.proprio_keys:
                g.create_dataset(f"obs/{k}", data=ep.proprio[k].astype(np.float64))
            rewards = np.zeros(T)
            dones = np.zeros(T, dtype=np.int64)
            dones[-1] = 1
            if ep.success:
                rewards[-1] = 1.0
            g.create_dataset("rewards", data=rewards)
            g.create_dataset("dones", data=dones)
            marks = _perturbed(ep)  # (T,) bool
            g.create_dataset("perturbed", data=marks)
            g.attrs["num_samples"] = T
            g.attrs["success"] = ep.success
            g.attrs["source_file"] = path.name
            total += T
            names.append(f"demo_{i}")
            if not marks.any():
                unperturbed.append(f"demo_{i}")
        env_args = {
            "env_name": env_name,
            "type": 2,
            "env_kwargs": {
                "control_freq": first_rate(files[0]),
                "action_space": read_episode(files[0], load_images=False).action_space,
                "frame": "fr3_link0",
                "source": "dm1",
            },
        }
        data.attrs["env_args"] = json.dumps(env_args)
        data.attrs["total"] = total
        f.create_dataset("mask/train", data=np.array(names, dtype="S"))
        f.create_dataset("mask/unperturbed", data=np.array(unperturbed, dtype="S"))


def first_rate(path: Path) -> float:
    """Control rate (Hz) of one episode file."""
    return read_episode(path, load_images=False).control_rate_hz
