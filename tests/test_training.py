"""Training: overfitting one episode, exact resume, dispersive-gradient logging, `dm1 train` end to end."""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from dm1 import interrupts
from dm1.checkpoint import latest_checkpoint, load_checkpoint
from dm1.commands import train as train_command
from dm1.config import TrainConfig, load_train_config, save_train_config
from dm1.data.episode import read_episode
from dm1.data.episode_writer import EpisodeWriter
from dm1.data.synthetic import make_synthetic_dataset
from dm1.meanflow import sample
from dm1.train.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"


def _cfg(dataset_dir: Path, **overrides: object) -> TrainConfig:
    d = load_train_config(TINY).to_dict()
    d["data"]["dataset_dir"] = str(dataset_dir)
    for key, value in overrides.items():
        section, _, name = key.rpartition("__")
        (d[section] if section else d)[name] = value
    d["warmup_steps"] = min(d["warmup_steps"], d["steps"])
    return TrainConfig.from_dict(d)


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _one_short_episode(tmp: Path, steps: int) -> Path:
    """The first ``steps`` steps of a toy episode (approach + descend), saved as one successful episode."""
    make_synthetic_dataset(tmp / "src", n_episodes=1, episode_len=40, seed=3, image_size=(32, 32))
    src = read_episode(tmp / "src" / "episode_000000.h5")
    spec = {k: v.shape[1] for k, v in src.proprio.items()}
    w = EpisodeWriter(
        tmp / "one" / "episode_000000.h5", src.camera_names, spec, src.action_names, "ee_position", 20.0
    )
    for i in range(steps):
        images = {c: src.images[c][i] for c in src.camera_names}
        w.append(images, {k: v[i] for k, v in src.proprio.items()}, src.actions[i], src.timestamps[i])
    w.close(success=True)
    return tmp / "one"


@pytest.mark.slow
def test_overfitting_one_episode_drives_loss_down_and_one_step_sample_reproduces_it(tmp_path: Path) -> None:
    data = _one_short_episode(tmp_path, steps=16)  # 13 windows
    cfg = _cfg(
        data,
        steps=600,
        lr=2e-3,
        min_lr=2e-4,
        log_every=10,
        checkpoint_every=600,
        ema_start_step=600,  # evaluate the trained weights themselves (EMA = hard copy)
        model__mlp_width=256,
        data__random_shift_pad=0,
        dispersive__variant="none",
    )
    trainer = Trainer(cfg, out_dir=tmp_path / "run", progress=False)
    trainer.fit()
    rows = _rows(tmp_path / "run")
    first, last = float(rows[0]["loss_mf"]), float(rows[-1]["loss_mf"])
    assert first / last >= 10.0, f"MeanFlow loss only fell from {first:.3f} to {last:.3f}"

    ds, net = trainer.dataset, trainer.ema.model.eval()
    batch = ds.gather(ds.episode_windows(0))
    target = ds.normalizers["action"].denormalize(batch["actions"].numpy())  # (13, 4, 4) metres / command
    g = torch.Generator().manual_seed(123)
    for _ in range(3):  # several noise draws: the one-step policy must ignore the noise on this data
        noise = torch.randn(batch["actions"].shape, generator=g)
        pred = ds.normalizers["action"].denormalize(
            sample(net, batch["images"], batch["proprio"], noise, 1).numpy()
        )
        pos_err = np.abs(pred[..., :3] - target[..., :3])
        # The expert moves at most 2 cm per step; a mean error under half of that puts every chunk on the
        # right waypoints (untrained, the error is ~10 cm).
        assert pos_err.mean() < 0.01, f"mean position error {pos_err.mean() * 100:.2f} cm"
        # The controller thresholds the gripper command at 0.5: the thresholded commands must agree.
        np.testing.assert_array_equal(pred[..., 3] > 0.5, target[..., 3] > 0.5)


def test_resume_continues_exactly_where_the_run_stopped(tiny_data: Path, tmp_path: Path) -> None:
    cfg = _cfg(tiny_data, steps=12, checkpoint_every=6, log_every=3, batch_size=8, model__dropout=0.1)
    straight = Trainer(cfg, out_dir=tmp_path / "a", progress=False)
    straight.fit()
    Trainer(cfg, out_dir=tmp_path / "b", progress=False).fit(until=6)  # "preempted" at step 6
    assert load_checkpoint(latest_checkpoint(tmp_path / "b")).step == 6
    resumed = Trainer(cfg, out_dir=tmp_path / "b", resume=True, progress=False)
    assert resumed.step == 6
    resumed.fit()
    for (k, a), b in zip(straight.net.state_dict().items(), resumed.net.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    for a, b in zip(straight.ema.model.parameters(), resumed.ema.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert [r["step"] for r in _rows(tmp_path / "b")] == ["3", "6", "9", "12"]
    assert [r["loss"] for r in _rows(tmp_path / "b")] == [r["loss"] for r in _rows(tmp_path / "a")]


def test_a_stop_request_ends_training_at_that_step_with_a_checkpoint_that_resumes_exactly(
    tiny_data: Path, tmp_path: Path
) -> None:
    cfg = _cfg(tiny_data, steps=12, checkpoint_every=6, log_every=3, batch_size=8, model__dropout=0.1)
    straight = Trainer(cfg, out_dir=tmp_path / "a", progress=False)
    straight.fit()
    stopped = Trainer(cfg, out_dir=tmp_path / "b", progress=False)
    summary = stopped.fit(stop=lambda: stopped.step >= 7)  # "Ctrl-C" between two checkpoints
    assert summary["stopped"] and summary["step"] == 7
    assert load_checkpoint(latest_checkpoint(tmp_path / "b")).step == 7
    assert (tmp_path / "b" / "loss.png").is_file()
    resumed = Trainer(cfg, out_dir=tmp_path / "b", resume=True, progress=False)
    assert resumed.step == 7
    assert not resumed.fit()["stopped"]
    for (k, a), b in zip(straight.net.state_dict().items(), resumed.net.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)


def test_existing_run_is_not_overwritten_without_resume(tiny_data: Path, tmp_path: Path) -> None:
    cfg = _cfg(tiny_data, steps=2, checkpoint_every=2, log_every=1, batch_size=4)
    Trainer(cfg, out_dir=tmp_path / "run", progress=False).fit()
    with pytest.raises(FileExistsError, match="--resume"):
        Trainer(cfg, out_dir=tmp_path / "run", progress=False)


def test_fine_tuning_starts_from_the_checkpoints_weights_and_normalizers(
    tiny_data: Path, tmp_path: Path
) -> None:
    base_cfg = _cfg(tiny_data, steps=4, checkpoint_every=4, log_every=2, batch_size=4)
    Trainer(base_cfg, out_dir=tmp_path / "base", progress=False).fit()
    base = load_checkpoint(latest_checkpoint(tmp_path / "base"))
    more = tmp_path / "more"  # new data: the two old episodes plus one more
    make_synthetic_dataset(more, n_episodes=3, episode_len=40, seed=5, image_size=(32, 32))
    cfg = _cfg(more, steps=2, checkpoint_every=2, log_every=1, batch_size=4, init_from=str(tmp_path / "base"))
    tuned = Trainer(cfg, out_dir=tmp_path / "tuned", progress=False)
    assert tuned.step == 0
    start = tuned.net.state_dict()
    assert start.keys() == base.model_state.keys()
    for k, a in base.model_state.items():
        torch.testing.assert_close(start[k], a, rtol=0, atol=0, msg=k)  # the EMA weights are the start
    for k, norm in base.normalizers.items():  # the network's input/output scaling is kept, not refitted
        assert tuned.dataset.normalizers[k].to_dict() == norm.to_dict()
    tuned.fit()
    saved = load_checkpoint(latest_checkpoint(tmp_path / "tuned"))
    assert saved.step == 2 and saved.train_config.init_from == str(tmp_path / "base")


def test_fine_tuning_a_different_network_is_refused_naming_the_checkpoint(
    tiny_data: Path, tmp_path: Path
) -> None:
    Trainer(
        _cfg(tiny_data, steps=2, checkpoint_every=2, batch_size=4), out_dir=tmp_path / "a", progress=False
    ).fit()
    cfg = _cfg(tiny_data, steps=2, batch_size=4, model__mlp_width=64, init_from=str(tmp_path / "a"))
    with pytest.raises(ValueError, match=r"init_from .*step_0*2: model config differs") as err:
        Trainer(cfg, out_dir=tmp_path / "b", progress=False)
    width = cfg.model.mlp_width  # the one field that differs is named, with both values, and nothing else
    assert str(err.value).endswith(
        f"(model.mlp_width: checkpoint {_cfg(tiny_data).model.mlp_width}, config {width})"
    )


def test_dispersive_gradient_on_the_encoder_is_logged(tiny_data: Path, tmp_path: Path) -> None:
    cfg = _cfg(tiny_data, steps=4, log_every=2, checkpoint_every=4, batch_size=8)
    assert cfg.dispersive.variant == "infonce_l2" and cfg.dispersive.targets == ("cond",)
    Trainer(cfg, out_dir=tmp_path / "run", progress=False).fit()
    rows = _rows(tmp_path / "run")
    assert len(rows) == 2
    for r in rows:
        assert float(r["grad_disp_enc"]) > 0.0 and float(r["loss_disp"]) < 0.0  # log-mean-exp <= 0
        assert float(r["loss"]) == pytest.approx(float(r["loss_mf"]) + float(r["loss_disp"]), rel=1e-5)


def _dm1(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dm1.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def test_dm1_train_cli_runs_end_to_end_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dm1.cli import main

    data, run = tmp_path / "data", tmp_path / "run"
    synth = _dm1("data", "synth", "-o", str(data), "--episodes", "2", "--length", "40", "--image-size", "32")
    assert synth.returncode == 0, synth.stderr
    args = ["train", "--config", str(TINY), "--set", f"data.dataset_dir={data}", "--out", str(run)]
    first = _dm1(
        *args, "--steps", "10", "--no-progress", "--set", "checkpoint_every=5", "--set", "log_every=5"
    )
    assert first.returncode == 0, first.stderr
    ckpt = run / "checkpoints" / "step_00000010"
    for p in (ckpt / "model.safetensors", ckpt / "checkpoint.json", run / "metrics.csv", run / "loss.png"):
        assert p.is_file() and p.stat().st_size > 0, p
    meta = json.loads((ckpt / "checkpoint.json").read_text())
    assert meta["step"] == 10 and meta["normalizers"]["action"]["min"] and len(meta["dataset_sha256"]) == 64
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    # the refusals, in this process (`dm1.cli.main`, the console script's entry point): no training runs
    assert main([*args, "--steps", "10", "--no-progress"]) == 2 and "--resume" in capsys.readouterr().err
    resumed = _dm1(*args, "--steps", "14", "--no-progress", "--resume", "--set", "log_every=2")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout and (run / "checkpoints" / "step_00000014").is_dir()
    assert main(["train", "--config", str(TINY), "--set", "model.nope=1"]) == 2
    assert "unknown key 'nope'" in capsys.readouterr().err


def _last_logged_step(run: Path) -> int:
    """The step of the last complete row of `run`'s metrics.csv (-1 before one is written)."""
    rows = _rows(run) if (run / "metrics.csv").is_file() else []
    try:
        return int(rows[-1]["step"]) if rows else -1
    except (TypeError, ValueError):  # the last line is being written
        return -1


def _stop_dm1_train(cmd: list[str], run: Path, sig: signal.Signals, after_step: int) -> tuple[int, list[str]]:
    """Start `cmd` (a long `dm1 train`), send `sig` once it has logged a step past `after_step`, check that it
    stops with a checkpoint of the step it reached; returns (that step, the resume command it printed)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120  # until a newly logged step: the loop is running
        while _last_logged_step(run) <= after_step:
            assert time.monotonic() < deadline and proc.poll() is None, "training did not start"
            time.sleep(0.2)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig, err
    line = next(ln for ln in err.splitlines() if ln.startswith("dm1 train: stopped by"))
    step = int(line.split(" at step ")[1].split(":")[0])
    assert f"stopped by {sig.name}" in line and after_step < step < 1_000_000
    assert load_checkpoint(run / "checkpoints" / f"step_{step:08d}").step == step
    resume = line.split("`")[1].split()
    assert resume[:2] == ["dm1", "train"] and resume[-1] == "--resume"
    if after_step:  # a resumed run
        assert f"resumed from {run / 'checkpoints' / f'step_{after_step:08d}'}" in out
    return step, resume


def test_ctrl_c_and_sigterm_each_stop_dm1_train_with_a_checkpoint_and_a_resume_command_that_resumes(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C stops a run (exit 130), its resume command runs on until SIGTERM (a job scheduler's stop) stops
    it (exit 143), and that one's resume command continues from the second checkpoint."""
    run = tmp_path / "run"
    cmd = [str(Path(sys.executable).parent / "dm1"), "train", "--config", str(TINY), "--no-progress"]
    cmd += ["--set", f"data.dataset_dir={tiny_data}", "--out", str(run), "--steps", "1000000"]
    step, resume = _stop_dm1_train(cmd, run, signal.SIGINT, 0)
    step, resume = _stop_dm1_train([cmd[0], *resume[1:], "--no-progress"], run, signal.SIGTERM, step)
    capsys.readouterr()
    assert _train_in_process(*resume[2:-1], "--steps", str(step + 2), "--resume", "--no-progress") == 0
    assert f"resumed from {run / 'checkpoints' / f'step_{step:08d}'}" in capsys.readouterr().out
    assert load_checkpoint(latest_checkpoint(run)).step == step + 2


def _train_in_process(*argv: str) -> int:
    """`dm1 train ARGV` in this process (the handler `dm1.cli` dispatches to); returns its exit code."""
    parser = argparse.ArgumentParser(prog="dm1")
    train_command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", *argv])
    return args.func(args)


def _snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_resuming_with_steps_below_the_checkpoint_is_refused_naming_steps(
    tiny_data: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    Trainer(
        _cfg(tiny_data, steps=4, checkpoint_every=4, log_every=2, batch_size=4), out_dir=run, progress=False
    ).fit()
    before = _snapshot(run)
    with pytest.raises(ValueError, match=r"TrainConfig\.steps: expected at least 4 .*step_0+4.*, found 2$"):
        Trainer(_cfg(tiny_data, steps=2, batch_size=4), out_dir=run, resume=True, progress=False)
    assert _snapshot(run) == before


def test_resuming_a_finished_run_trains_nothing_and_rewrites_nothing(tiny_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    Trainer(
        _cfg(tiny_data, steps=4, checkpoint_every=4, log_every=2, batch_size=4), out_dir=run, progress=False
    ).fit()
    before = _snapshot(run)
    # the same step count with another setting: config.yaml must still describe the checkpoints
    again = Trainer(
        _cfg(tiny_data, steps=4, log_every=1, batch_size=4), out_dir=run, resume=True, progress=False
    )
    summary = again.fit()
    assert summary["trained_steps"] == 0 and summary["step"] == 4 and not summary["stopped"]
    saved = load_checkpoint(latest_checkpoint(run))
    assert summary["metrics"] == saved.metrics and np.isfinite(summary["metrics"]["loss"])
    assert summary["checkpoint"] == saved.path
    assert _snapshot(run) == before


def test_dm1_train_resume_below_or_at_the_checkpoints_step_never_reports_a_nan_loss(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, run = tmp_path / "tiny.yaml", tmp_path / "run1"
    save_train_config(_cfg(tiny_data, steps=4, checkpoint_every=4, log_every=2, batch_size=4), config)
    assert _train_in_process("--config", str(config), "-o", str(run), "--no-progress") == 0
    capsys.readouterr()
    before = _snapshot(run)

    assert _train_in_process("--config", str(config), "-o", str(run), "--steps", "2", "--resume") == 2
    out, err = capsys.readouterr()
    assert "nan" not in out + err
    assert "dm1 train: error: TrainConfig.steps: expected at least 4 to resume" in err and "found 2" in err
    assert _snapshot(run) == before

    assert _train_in_process("--config", str(config), "-o", str(run), "--resume", "--no-progress") == 0
    out, err = capsys.readouterr()
    assert "nan" not in out + err
    assert f"dm1 train: {run} is already at step 4 >= steps 4: nothing to train" in out
    assert _snapshot(run) == before


def test_resuming_a_fine_tune_keeps_its_init_from_record_without_loading_it_again(
    tiny_data: Path, tmp_path: Path
) -> None:
    base, tuned = tmp_path / "base", tmp_path / "tuned"
    Trainer(_cfg(tiny_data, steps=2, checkpoint_every=2, batch_size=4), out_dir=base, progress=False).fit()
    cfg = _cfg(tiny_data, steps=4, checkpoint_every=4, log_every=1, batch_size=4, init_from=str(base))
    Trainer(cfg, out_dir=tuned, progress=False).fit(until=2)  # "preempted" at step 2
    shutil.rmtree(base)  # the weights come from the run's own checkpoint: the source is not read again
    resumed = Trainer(
        _cfg(tiny_data, steps=4, log_every=1, batch_size=4), out_dir=tuned, resume=True, progress=False
    )
    assert resumed.step == 2
    resumed.fit()
    assert load_checkpoint(latest_checkpoint(tuned)).train_config.init_from == str(base)
    assert load_train_config(tuned / "config.yaml").init_from == str(base)


def test_resuming_with_another_init_from_is_refused_naming_the_recorded_one(
    tiny_data: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"  # trained from scratch
    Trainer(_cfg(tiny_data, steps=4, checkpoint_every=2, batch_size=4), out_dir=run, progress=False).fit(
        until=2
    )
    cfg = _cfg(tiny_data, steps=4, batch_size=4, init_from=str(tmp_path / "elsewhere"))
    with pytest.raises(
        ValueError, match=r"TrainConfig\.init_from: expected '' \(trained from scratch\).*found '"
    ):
        Trainer(cfg, out_dir=run, resume=True, progress=False)


def test_the_continue_command_of_an_interrupted_fine_tune_keeps_init_from(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, base, run = tmp_path / "tiny.yaml", tmp_path / "run1", tmp_path / "run2"
    save_train_config(_cfg(tiny_data, steps=2, checkpoint_every=100, log_every=1, batch_size=4), config)
    assert _train_in_process("--config", str(config), "-o", str(base), "--no-progress") == 0
    with monkeypatch.context() as m:  # Ctrl-C during the first step
        m.setattr(interrupts, "requested", lambda: True)
        m.setattr(interrupts, "pending", lambda: int(signal.SIGINT))
        code = _train_in_process(
            "--config", str(config), "--init-from", str(base), "-o", str(run), "--no-progress"
        )
    assert code == 128 + signal.SIGINT
    line = next(ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("dm1 train: stopped by"))
    cmd = shlex.split(line.split("`")[1])
    assert cmd[:2] == ["dm1", "train"] and cmd[-1] == "--resume"
    assert cmd[cmd.index("--init-from") + 1] == str(base)
    assert _train_in_process(*cmd[2:], "--no-progress") == 0
    assert "resumed from" in capsys.readouterr().out
    assert load_checkpoint(latest_checkpoint(run)).step == 2
    assert load_checkpoint(latest_checkpoint(run)).train_config.init_from == str(base)
    assert load_train_config(run / "config.yaml").init_from == str(base)


def test_dm1_train_with_a_directory_as_config_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _train_in_process("--config", str(tmp_path)) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"dm1 train: error: --config {tmp_path}: expected a YAML file, found a directory\n"
