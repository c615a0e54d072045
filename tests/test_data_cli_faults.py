"""`dm1 data` under faults: half-written outputs, broken pipes, appends, mixed layouts, lost files."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from dm1.data import convert
from dm1.data.convert import export_lerobot, export_robomimic
from dm1.data.episode import read_episode
from dm1.data.synthetic import make_synthetic_dataset
from dm1.data.tools import validate_dataset


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    make_synthetic_dataset(tmp_path / "ds", n_episodes=3, episode_len=10, image_size=(16, 16))
    return tmp_path / "ds"


@pytest.fixture
def mixed(dataset: Path, tmp_path: Path) -> Path:
    """The dataset plus one 24x24 episode copied in (as `synth` used to allow)."""
    make_synthetic_dataset(tmp_path / "other", n_episodes=4, episode_len=10, image_size=(24, 24))
    shutil.copy(tmp_path / "other/episode_000003.h5", dataset)
    return dataset


def _dm1_data(argv: list[str]) -> int:
    """`dm1 data ARGV` in-process, with the command's one-line error handling."""
    from dm1.commands.data import register

    parser = argparse.ArgumentParser(prog="dm1")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", *argv])
    return args.func(args)


def _leftovers(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(name))


# ---- 1. outputs appear whole or not at all ---------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["lerobot", "robomimic"])
def test_a_failed_convert_leaves_no_output_and_can_be_rerun(dataset: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / ("out" if fmt == "lerobot" else "out.hdf5")
    (dataset / "episode_000001.h5").write_bytes((dataset / "episode_000001.h5").read_bytes()[:5000])
    assert _dm1_data(["convert", str(dataset), str(out), "--to", fmt]) == 2
    assert _leftovers(tmp_path, "out") == []
    (dataset / "episode_000001.h5").unlink()
    assert _dm1_data(["convert", str(dataset), str(out), "--to", fmt]) == 0  # not "already exists"
    assert _leftovers(tmp_path, "out") == [out.name]


@pytest.mark.parametrize("export", [export_lerobot, export_robomimic])
def test_ctrl_c_during_convert_removes_the_half_written_output(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, export
) -> None:
    reads = []

    def interrupted_read(path, load_images=True):
        if load_images:  # the export loop: Ctrl-C while the second episode is converted
            reads.append(path)
            if len(reads) == 2:
                raise KeyboardInterrupt
        return read_episode(path, load_images=load_images)

    monkeypatch.setattr(convert, "read_episode", interrupted_read)
    with pytest.raises(KeyboardInterrupt):
        export(dataset, tmp_path / "out")
    assert len(reads) == 2 and _leftovers(tmp_path, "out") == []


def test_a_failed_plot_leaves_no_partial_plot_directory(dataset: Path) -> None:
    (dataset / "episode_000002.h5").write_bytes(b"not hdf5")
    assert _dm1_data(["plot", str(dataset)]) == 2
    assert _leftovers(dataset, "plots") == []


def test_a_failed_plot_keeps_the_plots_already_there(dataset: Path) -> None:
    assert _dm1_data(["plot", str(dataset)]) == 0
    before = {p.name: p.read_bytes() for p in (dataset / "plots").iterdir()}
    (dataset / "episode_000002.h5").write_bytes(b"not hdf5")
    assert _dm1_data(["plot", str(dataset)]) == 2
    assert {p.name: p.read_bytes() for p in (dataset / "plots").iterdir()} == before
    assert _leftovers(dataset, "plots") == ["plots"]


# ---- 2. a broken pipe is not a data error ----------------------------------------------------------------
class _ClosedPipe:
    def write(self, _text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_broken_pipe_is_not_reported_as_a_data_error(
    dataset: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    with pytest.raises(BrokenPipeError):  # left to dm1.cli.main
        _dm1_data(["info", str(dataset)])
    assert "error" not in capsys.readouterr().err


# ---- 3. synth appends new episodes, and says its defaults ------------------------------------------------
def test_synth_run_twice_appends_new_episodes_not_copies(tmp_path: Path) -> None:
    for _ in range(2):
        make_synthetic_dataset(tmp_path / "ds", n_episodes=2, episode_len=10, image_size=(16, 16))
    actions = [read_episode(p, load_images=False).actions for p in sorted((tmp_path / "ds").glob("*.h5"))]
    assert len(actions) == 4
    for old in actions[:2]:
        for new in actions[2:]:
            assert not np.array_equal(old, new)


def test_synth_help_shows_the_defaults_and_the_seed_rule(capsys) -> None:
    with pytest.raises(SystemExit):
        _dm1_data(["synth", "-h"])
    text = " ".join(capsys.readouterr().out.split())
    for default in ("(default: 20)", "(default: 48)", "(default: 0)", "(default: front,wrist)"):
        assert default in text
    assert "appending continues at seed +" in text


# ---- 4. one layout per dataset ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"image_size": (32, 32)}, "image_size: expected 32x32, found 16x16"),
        ({"camera_names": ("front",)}, "camera_names: expected ['front'], found ['front', 'wrist']"),
    ],
)
def test_synth_refuses_to_append_another_layout(dataset: Path, change: dict, expected: str) -> None:
    kwargs = {"n_episodes": 1, "episode_len": 10, "image_size": (16, 16)} | change
    with pytest.raises(ValueError, match=str(dataset)) as info:
        make_synthetic_dataset(dataset, **kwargs)
    assert expected in str(info.value)
    assert len(list(dataset.glob("episode_*"))) == 3


def test_validate_counts_an_episode_of_another_layout_invalid(mixed: Path) -> None:
    report = validate_dataset(mixed, quarantine=False)
    assert report["num_episodes"] == 4 and report["num_valid"] == 3
    bad = [e for e in report["episodes"] if not e["ok"]]
    assert [e["file"] for e in bad] == ["episode_000003.h5"]
    assert "image_size: expected 16x16, found 24x24" in bad[0]["errors"][0]


def test_info_warns_about_episodes_of_another_layout(mixed: Path, capsys) -> None:
    assert _dm1_data(["info", str(mixed)]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "episode_000003.h5" in err and "expected 16x16, found 24x24" in err


@pytest.mark.parametrize("fmt", ["lerobot", "robomimic"])
def test_convert_refuses_mixed_layouts_before_writing(mixed: Path, tmp_path: Path, fmt: str, capsys) -> None:
    assert _dm1_data(["convert", str(mixed), str(tmp_path / "out"), "--to", fmt]) == 2
    err = capsys.readouterr().err
    assert "episode_000003.h5" in err and "image_size: expected 16x16, found 24x24" in err
    assert _leftovers(tmp_path, "out") == []


# ---- 5. a rebuilt index says which episodes disappeared -------------------------------------------------
def test_info_warns_when_indexed_episodes_disappeared(dataset: Path) -> None:
    (dataset / "episode_000001.h5").unlink()
    out = subprocess.run(
        [sys.executable, "-m", "dm1.cli", "data", "info", str(dataset)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "warning" in out.stderr and "episode_000001.h5" in out.stderr
    assert "num_episodes: 2" in out.stdout


def test_quarantine_does_not_report_the_files_it_moved_as_disappeared(dataset: Path, caplog) -> None:
    (dataset / "episode_000001.h5").write_bytes(b"broken after it was indexed")
    validate_dataset(dataset)
    assert (dataset / "quarantine/episode_000001.h5").is_file()
    assert "no longer in" not in caplog.text


# ---- 6. smaller ------------------------------------------------------------------------------------------
def test_synth_length_error_names_the_option(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        _dm1_data(["synth", "-o", str(tmp_path / "ds"), "--length", "0"])
    assert "--length" in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("action", ["info", "plot", "stats"])
def test_an_empty_folder_is_an_error_for_info_plot_and_stats(tmp_path: Path, action: str, capsys) -> None:
    assert _dm1_data([action, str(tmp_path)]) == 2
    assert f"no episodes in {tmp_path}" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("action", ["validate", "stats", "plot"])
def test_a_file_given_for_a_dataset_directory_is_named_as_a_file(tmp_path: Path, action: str, capsys) -> None:
    episode = tmp_path / "episode_000000.h5"
    episode.write_bytes(b"not read")
    assert _dm1_data([action, str(episode)]) == 2
    assert f"{episode}: expected a dataset directory, found a file" in capsys.readouterr().err


def test_validate_help_says_it_quarantines_files_that_fail_the_format(capsys) -> None:
    with pytest.raises(SystemExit):
        _dm1_data(["-h"])
    text = " ".join(capsys.readouterr().out.split())
    assert "fail the episode format" in text


# ---- 7. damaged files: one-line errors naming the file; validate quarantines them ------------------------
def _flip_bytes_from(path: Path, offset: int = 3000) -> None:
    """XOR every byte of `path` from `offset` on (HDF5 metadata after the superblock is damaged)."""
    data = bytearray(path.read_bytes())
    data[offset:] = bytes(b ^ 0xFF for b in data[offset:])
    path.write_bytes(bytes(data))


def _scalar_actions(path: Path) -> None:
    import h5py

    with h5py.File(path, "a") as f:
        del f["actions"]
        f.create_dataset("actions", data=np.float32(0.5))


@pytest.mark.parametrize("damage", [_flip_bytes_from, _scalar_actions])
@pytest.mark.parametrize(
    "argv", [["info"], ["info", "--json"], ["stats"], ["convert", "--to", "robomimic"], ["plot"]]
)
def test_a_damaged_episode_is_a_one_line_error_naming_the_file(
    dataset: Path, tmp_path: Path, capsys, damage, argv: list[str]
) -> None:
    bad = dataset / "episode_000001.h5"
    damage(bad)
    args = [argv[0], str(dataset)] + (["--json"] if "--json" in argv else [])
    if argv[0] == "convert":
        args = ["convert", str(dataset), str(tmp_path / "out.hdf5"), "--to", "robomimic"]
    assert _dm1_data(args) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]  # (plot also draws a progress bar)
    assert len(errors) == 1 and f"{bad}: actions: " in errors[0] and "Traceback" not in err, err


@pytest.mark.parametrize("damage", [_flip_bytes_from, _scalar_actions])
def test_validate_quarantines_a_damaged_episode_and_names_it(dataset: Path, capsys, damage) -> None:
    damage(dataset / "episode_000001.h5")
    assert _dm1_data(["validate", str(dataset)]) == 1
    report = capsys.readouterr().out
    assert "episode_000001.h5: actions: " in report
    assert [p.name for p in (dataset / "quarantine").iterdir()] == ["episode_000001.h5"]
    assert _dm1_data(["validate", str(dataset)]) == 0  # the rest is clean


def test_synth_appends_next_to_a_damaged_episode(dataset: Path) -> None:
    _flip_bytes_from(dataset / "episode_000001.h5")
    assert (
        _dm1_data(["synth", "-o", str(dataset), "--episodes", "1", "--length", "10", "--image-size", "16"])
        == 0
    )
    assert (dataset / "episode_000003.h5").is_file()


def test_info_json_refuses_a_nan_control_rate_instead_of_printing_bare_nan(dataset: Path, capsys) -> None:
    import h5py

    with h5py.File(dataset / "episode_000000.h5", "a") as f:
        f.attrs["control_rate_hz"] = float("nan")
    assert _dm1_data(["info", "--json", str(dataset)]) == 2
    captured = capsys.readouterr()
    assert "NaN" not in captured.out
    assert "episode_000000.h5: control_rate_hz: expected a finite number > 0, found nan" in captured.err


# ---- 8. refused arguments create nothing ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--cameras", "front,front"], "argument --cameras: expected"),
        (["--cameras", "a b,c/d"], "argument --cameras: expected"),
        (["--cameras", ","], "argument --cameras: expected"),
        (["--seed", "-1"], "argument --seed: expected an integer >= 0, found -1"),
        (["--image-size", "32x"], "argument --image-size: expected N or HxW"),
        (["--image-size", "4"], "argument --image-size: expected N or HxW"),
    ],
)
def test_synth_refuses_bad_arguments_before_creating_the_output(
    tmp_path: Path, capsys, extra: list[str], expected: str
) -> None:
    with pytest.raises(SystemExit):
        _dm1_data(["synth", "-o", str(tmp_path / "ds"), "--episodes", "1", "--length", "2", *extra])
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()


def test_synth_library_refuses_bad_cameras_and_seed_before_creating_the_output(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"camera_names: expected non-empty and unique names"):
        make_synthetic_dataset(tmp_path / "ds", 1, 2, camera_names=("front", "front"), image_size=(8, 8))
    with pytest.raises(ValueError, match=r"camera_names: expected identifiers"):
        make_synthetic_dataset(tmp_path / "ds", 1, 2, camera_names=("a b", "c/d"), image_size=(8, 8))
    with pytest.raises(ValueError, match=r"seed: expected an integer >= 0, found -1"):
        make_synthetic_dataset(tmp_path / "ds", 1, 2, seed=-1, image_size=(8, 8))
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--seed", "-1"], "argument --seed: expected an integer >= 0, found -1"),
        (["--recovery-fraction", "2"], "argument --recovery-fraction: expected a number in [0, 1], found 2"),
    ],
)
def test_collect_refuses_bad_arguments_before_creating_the_output(
    tmp_path: Path, capsys, extra: list[str], expected: str
) -> None:
    with pytest.raises(SystemExit):
        _dm1_data(["collect", "-o", str(tmp_path / "ds"), "--episodes", "1", *extra])
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()


_COLLECT_UNTIL_SIGNALLED = """
import os, signal, sys, time
from pathlib import Path
import numpy as np
import dm1.sim.collect
from dm1.cli import main
from dm1.data.episode_writer import EpisodeWriter

def fake_collect(out_dir, episodes, recovery_fraction=0.0, **kw):
    # like collect_expert_demos: an open episode, discarded on any exception (KeyboardInterrupt included)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    w = EpisodeWriter(Path(out_dir) / "episode_000000.h5", ("front",), {{"ee_pos": 3}}, "xyzg",
                      "ee_position", 20.0)
    try:
        w.append({{"front": np.zeros((8, 8, 3), np.uint8)}}, {{"ee_pos": np.zeros(3)}}, np.zeros(4), 0.0)
        print("recording", flush=True)
        os.kill(os.getpid(), signal.{sig})
        time.sleep(30)
    except BaseException:
        w.discard()
        raise

dm1.sim.collect.collect_expert_demos = fake_collect
sys.exit(main(["data", "collect", "-o", {out!r}, "--episodes", "1"]))
"""


@pytest.mark.parametrize(("sig", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_collect_discards_the_open_episode_on_sigterm_as_on_ctrl_c(
    tmp_path: Path, sig: str, code: int
) -> None:
    out = tmp_path / "ds"
    script = _COLLECT_UNTIL_SIGNALLED.format(sig=sig, out=str(out))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "recording" in done.stdout, done.stderr
    assert done.returncode == code, done.stderr
    assert "interrupted" in done.stderr and "the open episode was discarded" in done.stderr
    assert list(out.iterdir()) == []  # no .partial left
