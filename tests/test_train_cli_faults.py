"""`dm1 train` faults: resume/fine-tune compatibility, divergence, interrupts, run-directory lock and
placement, corrupt run files, and `--set` parsing. Each test names the behaviour a researcher relies on."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from dm1 import interrupts
from dm1.checkpoint import latest_checkpoint, load_checkpoint
from dm1.commands import train as train_command
from dm1.config import TrainConfig, load_train_config, save_train_config
from dm1.errors import ReportedError
from dm1.train import setup as train_setup
from dm1.train import trainer as trainer_module
from dm1.train.trainer import Trainer, resolve_device
from test_training import _cfg as _tiny_cfg

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"


def _cfg(dataset_dir: Path, **overrides: object) -> TrainConfig:
    """configs/tiny.yaml on `dataset_dir` for 4 steps, a checkpoint every 2; `section__name=value` overrides
    nested keys (as `test_training._cfg`)."""
    return _tiny_cfg(
        dataset_dir, **{"steps": 4, "checkpoint_every": 2, "log_every": 1, "batch_size": 4, **overrides}
    )


@pytest.fixture(scope="module")
def base_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run stopped at step 2 of 4 (tiny config, proprio [ee_pos, gripper_width])."""
    run = tmp_path_factory.mktemp("base") / "run"
    Trainer(_cfg(tiny_data), out_dir=run, progress=False, log=lambda _: None).fit(until=2)
    return run


def _copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _train_in_process(*argv: str) -> int:
    """`dm1 train ARGV` in this process (the handler `dm1.cli` dispatches to); returns its exit code."""
    parser = argparse.ArgumentParser(prog="dm1")
    train_command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", *argv])
    return args.func(args)


# -- 1. resume / fine-tune with another observation or action layout ---------------------------------------
def test_resuming_with_reordered_proprio_keys_is_refused_naming_checkpoint_field_and_both_orders(
    tiny_data: Path, base_run: Path, tmp_path: Path
) -> None:
    run = _copy_run(base_run, tmp_path / "run")
    cfg = _cfg(tiny_data, data__proprio_keys=["gripper_width", "ee_pos"])
    with pytest.raises(ValueError) as err:
        Trainer(cfg, out_dir=run, resume=True, progress=False)
    msg = str(err.value)
    assert msg.startswith(str(latest_checkpoint(run) / "checkpoint.json")), msg
    assert "data.proprio_keys" in msg and "['ee_pos', 'gripper_width']" in msg
    assert "['gripper_width', 'ee_pos']" in msg


def test_fine_tuning_with_reordered_proprio_keys_is_refused_naming_checkpoint_field_and_both_orders(
    tiny_data: Path, base_run: Path, tmp_path: Path
) -> None:
    cfg = _cfg(tiny_data, data__proprio_keys=["gripper_width", "ee_pos"], init_from=str(base_run))
    with pytest.raises(ValueError) as err:
        Trainer(cfg, out_dir=tmp_path / "tuned", progress=False)
    msg = str(err.value)
    assert msg.startswith(str(latest_checkpoint(base_run) / "checkpoint.json")), msg
    assert "data.proprio_keys: expected ['gripper_width', 'ee_pos'] (the run config)" in msg
    assert "found ['ee_pos', 'gripper_width']" in msg


def test_fine_tuning_on_data_with_other_action_names_is_refused_naming_the_field(
    tiny_data: Path, base_run: Path, tmp_path: Path
) -> None:
    src = _copy_run(base_run, tmp_path / "src")
    meta_path = latest_checkpoint(src) / "checkpoint.json"
    meta = json.loads(meta_path.read_text())
    names = meta["extra"]["dataset_schema"]["action_names"]
    meta["extra"]["dataset_schema"]["action_names"] = names[::-1]  # trained on another action order
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError) as err:
        Trainer(_cfg(tiny_data, init_from=str(src)), out_dir=tmp_path / "tuned", progress=False)
    msg = str(err.value)
    assert msg.startswith(str(meta_path)) and "action_names" in msg and str(names) in msg, msg


# -- 2. resume with a changed training config ------------------------------------------------------------
@pytest.mark.parametrize(
    ("override", "key", "old", "new"),
    [
        ({"objective": "flow_matching"}, "objective", "'meanflow'", "'flow_matching'"),
        ({"dispersive__lam": 0.1}, "dispersive.lam", "0.5", "0.1"),
        ({"meanflow__logit_std": 2.0}, "meanflow.logit_std", "1.0", "2.0"),
        ({"data__random_shift_pad": 0}, "data.random_shift_pad", "2", "0"),
        ({"seed": 7}, "seed", "0", "7"),
        ({"batch_size": 8}, "batch_size", "4", "8"),
        ({"weight_decay": 0.1}, "weight_decay", "1e-06", "0.1"),
        ({"ema_decay": 0.5}, "ema_decay", "0.9", "0.5"),
    ],
)
def test_resuming_with_a_changed_objective_or_training_setting_is_refused_naming_key_old_and_new(
    tiny_data: Path, base_run: Path, tmp_path: Path, override: dict, key: str, old: str, new: str
) -> None:
    run = _copy_run(base_run, tmp_path / "run")
    before = (run / "config.yaml").read_text()
    with pytest.raises(ValueError) as err:
        Trainer(_cfg(tiny_data, **override), out_dir=run, resume=True, progress=False)
    msg = str(err.value)
    assert f"{key}: checkpoint {old}, config {new}" in msg, msg
    assert "cannot resume" in msg and "--init-from" in msg
    assert (run / "config.yaml").read_text() == before


def test_resuming_with_a_new_lr_schedule_or_cadence_is_allowed_and_each_change_is_logged(
    tiny_data: Path, base_run: Path, tmp_path: Path
) -> None:
    run = _copy_run(base_run, tmp_path / "run")
    lines: list[str] = []
    cfg = _cfg(tiny_data, steps=6, lr=2e-3, log_every=2, checkpoint_every=3)
    resumed = Trainer(cfg, out_dir=run, resume=True, progress=False, log=lines.append)
    assert resumed.step == 2
    for change in ("steps: 4 -> 6", "lr: 0.001 -> 0.002", "log_every: 1 -> 2", "checkpoint_every: 2 -> 3"):
        assert any(change in ln for ln in lines), (change, lines)
    resumed.fit()
    assert load_train_config(run / "config.yaml").lr == 2e-3


# -- 3. divergence ---------------------------------------------------------------------------------------
def test_a_diverging_run_is_a_one_line_error_naming_the_step_and_keeps_its_metrics(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, run = tmp_path / "tiny.yaml", tmp_path / "run"
    save_train_config(_cfg(tiny_data, steps=60, checkpoint_every=1000, warmup_steps=0), config)
    code = _train_in_process(
        "--config", str(config), "-o", str(run), "--no-progress", "--set", "lr=1e6", "--set", "min_lr=0"
    )
    out, err = capsys.readouterr()
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("dm1 train: error: training diverged at step ") and "lower lr" in err, err
    step = int(err.split(" at step ")[1].split(":")[0])
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,") and len(rows) - 1 == step - 1  # every row logged before it is kept


# -- 4. interrupts ---------------------------------------------------------------------------------------
def test_ctrl_c_before_the_first_metrics_row_exits_130_with_a_checkpoint_and_the_resume_command(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, run = tmp_path / "tiny.yaml", tmp_path / "run"
    save_train_config(_cfg(tiny_data, log_every=1000, steps=100), config)
    monkeypatch.setattr(interrupts, "requested", lambda: True)
    monkeypatch.setattr(interrupts, "pending", lambda: int(signal.SIGINT))
    code = _train_in_process("--config", str(config), "-o", str(run), "--no-progress")
    err = capsys.readouterr().err
    assert code == 130, err
    assert "no metric rows" not in err
    line = next(ln for ln in err.splitlines() if ln.startswith("dm1 train: stopped by SIGINT at step 1"))
    assert "--resume" in line.split("`")[1]
    assert load_checkpoint(latest_checkpoint(run)).step == 1


def test_ctrl_c_during_start_up_says_training_had_not_started_and_exits_130(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "tiny.yaml"
    save_train_config(_cfg(tiny_data), config)

    def interrupted(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module, "Trainer", interrupted)
    code = _train_in_process("--config", str(config), "-o", str(tmp_path / "run"), "--no-progress")
    err = capsys.readouterr().err
    assert code == 130
    assert err == "dm1 train: interrupted before training started: nothing was trained or checkpointed\n"


# -- 5. one trainer per run directory --------------------------------------------------------------------
def test_a_second_trainer_on_a_run_directory_in_use_is_refused_naming_it(
    tiny_data: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    first = Trainer(_cfg(tiny_data), out_dir=run, progress=False)
    with pytest.raises(ReportedError) as err:
        Trainer(_cfg(tiny_data), out_dir=run, progress=False)
    assert str(err.value).startswith(f"{run}: ") and "another dm1 train" in str(err.value)
    first.fit()  # the first one is unaffected and releases the directory when done
    Trainer(_cfg(tiny_data, steps=6), out_dir=run, resume=True, progress=False).fit()


def test_a_refused_run_leaves_no_directory_behind(tmp_path: Path) -> None:
    """The lock creates the run directory before the checks that can fail; a refused run removes what it
    created (an existing directory stays, and so does anything else in it)."""
    missing_data = tmp_path / "no_such_dataset"
    with pytest.raises((ValueError, FileNotFoundError, ReportedError)):
        Trainer(_cfg(missing_data), out_dir=tmp_path / "new" / "run", progress=False)
    assert not (tmp_path / "new").exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    with pytest.raises((ValueError, FileNotFoundError, ReportedError)):
        Trainer(_cfg(missing_data), out_dir=existing, progress=False)
    assert sorted(p.name for p in existing.iterdir()) == [".dm1-train.lock", "notes.txt"]


def test_a_lock_left_by_a_killed_process_does_not_block_the_run_directory(
    tiny_data: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
            "print('locked', flush=True); time.sleep(120)",
            str(run / trainer_module.LOCK_FILE),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(ReportedError, match="another dm1 train"):
            Trainer(_cfg(tiny_data), out_dir=run, progress=False)
    finally:
        holder.kill()
        holder.wait()
    assert (run / trainer_module.LOCK_FILE).exists()  # the file stays; its lock died with the process
    Trainer(_cfg(tiny_data, steps=2), out_dir=run, progress=False).fit()


# -- 6. corrupt run files --------------------------------------------------------------------------------
def test_resuming_a_checkpoint_whose_weights_do_not_fit_its_config_is_a_clear_error(
    tiny_data: Path, base_run: Path, tmp_path: Path
) -> None:
    run = _copy_run(base_run, tmp_path / "run")
    meta_path = latest_checkpoint(run) / "checkpoint.json"
    meta = json.loads(meta_path.read_text())
    meta["train_config"]["model"]["mlp_width"] = 64  # the saved weights are 128 wide
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ReportedError) as err:
        Trainer(_cfg(tiny_data, model__mlp_width=64), out_dir=run, resume=True, progress=False)
    msg = str(err.value)
    assert msg.startswith(str(latest_checkpoint(run))) and "does not fit" in msg and "mlp" in msg, msg


def test_resuming_with_a_garbled_metrics_csv_is_a_clear_error_naming_the_file(
    tiny_data: Path, base_run: Path, tmp_path: Path
) -> None:
    run = _copy_run(base_run, tmp_path / "run")
    (run / "metrics.csv").write_text("garbage,more\n1,2\n")
    with pytest.raises(ValueError) as err:
        Trainer(_cfg(tiny_data), out_dir=run, resume=True, progress=False).fit()
    msg = str(err.value)
    assert msg.startswith(f"{run / 'metrics.csv'}: ") and "step" in msg, msg


# -- 7. config holes that reach the command line -----------------------------------------------------------
def test_an_unparsable_set_value_is_an_error_naming_the_set_argument() -> None:
    with pytest.raises(ValueError) as err:
        train_command.apply_overrides({"data": {"proprio_keys": []}}, ["data.proprio_keys=[ee_pos"])
    assert str(err.value).startswith("--set data.proprio_keys=[ee_pos: invalid YAML value")


def test_an_unavailable_device_is_an_error_naming_the_config_field() -> None:
    with pytest.raises(ValueError, match=r"^TrainConfig\.device: 'mps' requested but MPS is not available"):
        resolve_device("mps")
    with pytest.raises(ValueError, match=r"^TrainConfig\.device: 'cuda:99'"):
        resolve_device("cuda:99")


def test_a_network_too_large_to_allocate_is_a_clear_error(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_memory(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(train_setup, "DM1Network", no_memory)
    with pytest.raises(ValueError, match=r"^TrainConfig\.model: cannot allocate the network"):
        Trainer(_cfg(tiny_data), out_dir=tmp_path / "run", progress=False)


# -- 8. where a run may be written -----------------------------------------------------------------------
def test_training_into_a_dataset_directory_is_refused(tiny_data: Path) -> None:
    with pytest.raises(ReportedError) as err:
        Trainer(_cfg(tiny_data), out_dir=tiny_data, progress=False)
    msg = str(err.value)
    assert msg.startswith(f"{tiny_data}: ") and "dataset" in msg and "episode_" in msg, msg
    assert not (tiny_data / "config.yaml").exists() and not (tiny_data / trainer_module.LOCK_FILE).exists()


def test_training_into_an_exported_model_directory_is_refused(tiny_data: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "model_card.json").write_text("{}")
    with pytest.raises(ReportedError, match="exported model"):
        Trainer(_cfg(tiny_data), out_dir=model, progress=False)


def test_an_out_path_that_is_a_file_is_an_error_naming_out(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "tiny.yaml"
    save_train_config(_cfg(tiny_data), config)
    target = tiny_data / "episode_000000.h5"
    assert _train_in_process("--config", str(config), "-o", str(target), "--no-progress") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dm1 train: error: {target}: ") and "--out" in err and "a file" in err, err
    assert "Errno" not in err
