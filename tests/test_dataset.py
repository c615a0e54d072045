"""Training windows: counts, alignment with the episodes, normalisation, history, schema checks; toy data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from dm1.config import DataConfig, ModelConfig
from dm1.data.dataset import WindowDataset
from dm1.data.episode import read_episode
from dm1.data.synthetic import make_synthetic_dataset
from dm1.normalization import Normalizer


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("toy")
    make_synthetic_dataset(out, n_episodes=3, episode_len=40, seed=1, image_size=(32, 32))
    return out


def _cfgs(toy_dir: Path, **model: object) -> tuple[ModelConfig, DataConfig]:
    m = ModelConfig(image_size=(32, 32), chunk_length=4, **model)
    return m, DataConfig(dataset_dir=str(toy_dir))


def test_toy_expert_lifts_the_cube_in_every_episode(toy_dir: Path) -> None:
    for p in sorted(toy_dir.glob("episode_*.h5")):
        ep = read_episode(p)
        assert ep.success, p
        assert ep.actions[-1, 2] == pytest.approx(0.20, abs=1e-6) and ep.actions[-1, 3] == 1.0
        assert ep.proprio["gripper_width"][0, 0] == pytest.approx(0.08)
        assert ep.image_shapes == {"front": (32, 32, 3), "wrist": (32, 32, 3)}


def test_one_window_per_step_where_a_full_chunk_fits(toy_dir: Path) -> None:
    ds = WindowDataset(toy_dir, *_cfgs(toy_dir))
    assert len(ds) == 3 * (40 - 4 + 1) and ds.num_steps == 120
    assert len(ds.episode_windows(2)) == 37


def test_windows_holding_a_perturbed_action_are_left_out(tmp_path: Path) -> None:
    import h5py

    make_synthetic_dataset(tmp_path, n_episodes=2, episode_len=40, seed=1, image_size=(32, 32))
    first = sorted(tmp_path.glob("episode_*.h5"))[0]
    with h5py.File(first, "a") as f:  # steps 10..14 are a deliberate miss
        f.create_dataset("perturbed", data=np.isin(np.arange(40), range(10, 15)))
    ds = WindowDataset(tmp_path, *_cfgs(tmp_path))
    # chunk length 4: windows starting at 7..14 contain a perturbed step; 37 - 8 remain
    kept = ds.episode_windows(0)
    assert len(kept) == 29 and len(ds.episode_windows(1)) == 37 and len(ds) == 66
    starts = ds.window_starts[kept].tolist()
    assert starts == [*range(0, 7), *range(15, 37)]
    ep = read_episode(first)
    item = ds[int(kept[7])]  # the first window after the miss: observed at step 15, actions 15..18
    expected = ds.normalizers["action"].normalize(ep.actions[15:19])
    np.testing.assert_allclose(item["actions"].numpy(), expected, atol=1e-5)


def test_normalised_proprio_and_actions_lie_in_unit_range(toy_dir: Path) -> None:
    ds = WindowDataset(toy_dir, *_cfgs(toy_dir))
    for t in (ds.proprio, ds.action_chunks):
        assert t.dtype == torch.float32
        assert float(t.min()) >= -1.0 - 1e-6 and float(t.max()) <= 1.0 + 1e-6
        assert float(t.min()) < -0.99 and float(t.max()) > 0.99  # min-max fitted on this data
    batch = ds.sample_batch(8, torch.Generator().manual_seed(0))
    assert batch["images"]["front"].dtype == torch.uint8 and batch["images"]["front"].shape == (8, 32, 32, 3)
    assert batch["proprio"].shape == (8, 4) and batch["actions"].shape == (8, 4, 4)


def test_window_matches_the_episode_it_came_from(toy_dir: Path) -> None:
    ds = WindowDataset(toy_dir, *_cfgs(toy_dir))
    ep = read_episode(toy_dir / ds.episode_files[1])
    i = 5
    item = ds[int(ds.episode_windows(1)[i])]
    actions = ds.normalizers["action"].denormalize(item["actions"].numpy())
    np.testing.assert_allclose(actions, ep.actions[i : i + 4], atol=1e-6)
    proprio = ds.normalizers["proprio"].denormalize(item["proprio"].numpy())
    np.testing.assert_allclose(
        proprio, np.r_[ep.proprio["ee_pos"][i], ep.proprio["gripper_width"][i]], atol=1e-6
    )
    np.testing.assert_array_equal(item["images"]["wrist"].numpy(), ep.images["wrist"][i])


def test_observation_history_repeats_the_first_frame_at_episode_start(toy_dir: Path) -> None:
    ds = WindowDataset(toy_dir, *_cfgs(toy_dir, obs_history=2, proprio_dim=4))
    first, second = ds[0], ds[1]
    assert first["images"]["front"].shape == (2, 32, 32, 3) and first["proprio"].shape == (8,)
    torch.testing.assert_close(first["images"]["front"][0], first["images"]["front"][1])
    torch.testing.assert_close(second["images"]["front"][0], first["images"]["front"][1])
    torch.testing.assert_close(first["proprio"][:4], first["proprio"][4:])


def test_given_normalizers_are_used_instead_of_refitting(toy_dir: Path) -> None:
    wide = {
        "proprio": Normalizer(min=np.full(4, -10.0), max=np.full(4, 10.0)),
        "action": Normalizer(min=np.full(4, -10.0), max=np.full(4, 10.0)),
    }
    ds = WindowDataset(toy_dir, *_cfgs(toy_dir), normalizers=wide)
    assert ds.normalizers is wide and float(ds.action_chunks.abs().max()) < 0.2


def test_image_size_mismatch_names_file_and_field(toy_dir: Path) -> None:
    m = ModelConfig(image_size=(48, 48))
    with pytest.raises(
        ValueError, match=r"episode_000000\.h5: obs/front: expected images of \(H, W\) = \(48, 48\)"
    ):
        WindowDataset(toy_dir, m, DataConfig(dataset_dir=str(toy_dir)))


def test_missing_dataset_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="data.dataset_dir"):
        WindowDataset(tmp_path / "nope", *_cfgs(tmp_path))
    with pytest.raises(ValueError, match="no usable episode"):
        WindowDataset(tmp_path, *_cfgs(tmp_path))


def test_dataset_hash_is_stable_across_loads(toy_dir: Path) -> None:
    a = WindowDataset(toy_dir, *_cfgs(toy_dir)).dataset_sha256
    b = WindowDataset(toy_dir, *_cfgs(toy_dir)).dataset_sha256
    sub = WindowDataset(toy_dir, *_cfgs(toy_dir), episodes=["episode_000000.h5"]).dataset_sha256
    assert a == b and len(a) == 64 and sub != a


def test_relative_actions_are_offsets_from_the_observed_ee_position(toy_dir: Path) -> None:
    ds = WindowDataset(toy_dir, *_cfgs(toy_dir, relative_action_dims=3))
    ep = read_episode(toy_dir / ds.episode_files[1])
    i = 5
    item = ds[int(ds.episode_windows(1)[i])]
    chunk = ds.normalizers["action"].denormalize(item["actions"].numpy())  # (Ta, Da)
    expected = ep.actions[i : i + 4].copy()
    expected[:, :3] -= ep.proprio["ee_pos"][i]
    np.testing.assert_allclose(chunk, expected, atol=1e-6)
    assert float(ds.action_chunks.min()) < -0.99 and float(ds.action_chunks.max()) > 0.99


def test_relative_actions_need_the_anchor_key_first(toy_dir: Path) -> None:
    m = ModelConfig(image_size=(32, 32), chunk_length=4, relative_action_dims=3)
    data = DataConfig(dataset_dir=str(toy_dir), proprio_keys=("gripper_width", "ee_pos"))
    with pytest.raises(ValueError, match=r"relative_action_dims=3: expected data.proprio_keys to start"):
        WindowDataset(toy_dir, m, data)


def _edit_attrs(path: Path, **attrs: object) -> None:
    import h5py

    with h5py.File(path, "a") as f:
        for name, value in attrs.items():
            f.attrs[name] = value


@pytest.mark.parametrize(
    ("attrs", "field", "model", "data"),
    [
        ({"control_rate_hz": 10.0}, "control_rate_hz: expected 20, found 10", {}, {}),
        ({"frame": "world"}, "frame: expected 'fr3_link0', found 'world'", {}, {}),
        (
            {"action_names": '["a", "b", "c", "d"]'},
            "action_names: expected ['x', 'y', 'z', 'gripper'], found ['a', 'b', 'c', 'd']",
            {},
            {},
        ),
        (
            {"camera_names": '["front"]'},
            "camera_names: expected ['front', 'wrist'], found ['front']",
            {"camera_names": ("front",)},
            {"camera_names": ("front",)},
        ),
        (
            {"proprio_keys": '["ee_pos"]'},
            "proprio_keys: expected ['ee_pos', 'gripper_width'], found ['ee_pos']",
            {"proprio_dim": 3},
            {"proprio_keys": ("ee_pos",)},
        ),
    ],
)
def test_episodes_that_disagree_on_metadata_are_refused_naming_both_files_and_the_field(
    tmp_path: Path, attrs: dict, field: str, model: dict, data: dict
) -> None:
    make_synthetic_dataset(tmp_path, n_episodes=3, episode_len=40, seed=1, image_size=(32, 32))
    _edit_attrs(tmp_path / "episode_000001.h5", **attrs)
    m = ModelConfig(image_size=(32, 32), chunk_length=4, **model)
    d = DataConfig(dataset_dir=str(tmp_path), **data)
    with pytest.raises(ValueError) as info:
        WindowDataset(tmp_path, m, d)
    msg = str(info.value)
    assert str(tmp_path / "episode_000001.h5") in msg and str(tmp_path / "episode_000000.h5") in msg, msg
    assert field in msg, msg


def test_a_dataset_whose_chunks_are_all_perturbed_names_the_dataset_and_the_cause(tmp_path: Path) -> None:
    import h5py

    make_synthetic_dataset(tmp_path, n_episodes=2, episode_len=40, seed=1, image_size=(32, 32))
    for path in sorted(tmp_path.glob("episode_*.h5")):
        with h5py.File(path, "a") as f:
            f.create_dataset("perturbed", data=np.arange(40) % 3 == 0)  # every 4-step chunk holds one
    with pytest.raises(ValueError, match="no unperturbed") as info:
        WindowDataset(tmp_path, *_cfgs(tmp_path))
    assert str(tmp_path) in str(info.value) and "Normalizer" not in str(info.value)


def test_episodes_shorter_than_a_chunk_are_skipped_with_a_warning_naming_them(toy_dir: Path) -> None:
    """Before: `from 2 episodes` with no word about the third (it had fewer steps than chunk_length)."""
    m = ModelConfig(image_size=(32, 32), chunk_length=41)  # the toy episodes have 40 steps
    short = r"shorter than chunk_length=41: episode_000000\.h5 \(40 steps\)"
    with pytest.warns(UserWarning, match=short), pytest.raises(ValueError, match="no usable episode"):
        WindowDataset(toy_dir, m, DataConfig(dataset_dir=str(toy_dir)))
