"""Bad numbers on the `dm1` command line are refused by argparse, naming the option, what it expects and
what it found (exit code 2), before anything starts: no nonsense benchmark, no "0/-3 successes", no
traceback."""

from __future__ import annotations

import pytest
from dm1.cli import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sim", "--fps", "0"], "argument --fps: expected a finite number > 0, found 0"),
        (["sim", "--min-success", "1.5"], "argument --min-success: expected a number in [0, 1], found 1.5"),
        (["sim", "--seconds", "-1"], "argument --seconds: expected a finite number >= 0, found -1"),
        (["bench", "loop", "--seconds", "-1"], "argument --seconds: expected a finite number > 0, found -1"),
        (["bench", "inference", "--iters", "0"], "argument --iters: expected an integer >= 1, found 0"),
        (["bench", "inference", "--warmup", "-5"], "argument --warmup: expected an integer >= 0, found -5"),
        (["data", "collect", "-o", "x", "--episodes", "-3"], "argument --episodes: expected an integer >= 1"),
        (
            ["data", "collect", "--via-teleop", "-o", "x", "--seed", "-5"],
            "argument --seed: expected an integer >= 0, found -5",
        ),
        (["data", "synth", "-o", "x", "--episodes", "two"], "argument --episodes: expected an integer >= 1"),
        (["eval", "--model", "m", "--noise-scale", "2"], "--noise-scale: expected a number in [0, 1]"),
        (["eval", "--model", "m", "--max-sim-s", "0"], "--max-sim-s: expected a finite number > 0, found 0"),
        (
            ["ablate", "--runs", "r", "--threads", "0"],
            "argument --threads: expected an integer >= 1, found 0",
        ),
        (
            ["export", "ckpt", "-o", "out", "--tolerance", "0"],
            "argument --tolerance: expected a finite number > 0",
        ),
        (
            ["launch", "franka", "--shutdown-timeout", "-1"],
            "--shutdown-timeout: expected a finite number > 0",
        ),
        (
            ["launch", "franka", "--shutdown-timeout", "inf"],
            "--shutdown-timeout: expected a finite number > 0",
        ),
        (["sim", "--seconds", "inf"], "argument --seconds: expected a finite number >= 0, found inf"),
        (
            ["operator", "status", "--timeout", "0"],
            "argument --timeout: expected a finite number > 0, found 0",
        ),
        (
            ["operator", "status", "--policy-node", "bad name!"],
            "argument --policy-node: expected a ROS node name",
        ),
        (["operator", "drill", "--drill", "bogus"], "argument --drill: drill: expected one of"),
        (["train", "--config", "c.yaml", "--steps", "0"], "--steps: expected an integer >= 1, found 0"),
        (["bench", "train", "--batch-sizes", "abc"], "argument --batch-sizes: expected comma-separated"),
        (
            ["bench", "train", "--batch-sizes", "2,,"],
            "--batch-sizes: expected comma-separated distinct integers",
        ),
        (["bench", "train", "--batch-sizes", "0"], "integers >= 1 like 32,64, found 0"),
        (["bench", "train", "--batch-sizes", "-4"], "integers >= 1 like 32,64, found -4"),
        (
            ["bench", "loop", "--ensemble-alpha", "0"],
            "argument --ensemble-alpha: expected a number in (0, 1]",
        ),
        (["sim", "--width", "5000"], "argument --width: expected an integer in [1, 1920], found 5000"),
        (
            ["sim", "--no-ros", "--host", "foo"],
            "argument --host: expected a loopback address 127.x.y.z, found foo",
        ),
        (
            ["sim", "--host", "10.1.2.3"],
            "argument --host: expected a loopback address 127.x.y.z, found 10.1.2.3",
        ),
        (
            ["ablate", "--runs", "r", "--ensemble-alpha", "5"],
            "--ensemble-alpha: expected a number in (0, 1], found 5",
        ),
        (
            ["ablate", "--runs", "r", "--ensemble-alpha", "nan"],
            "--ensemble-alpha: expected a number in (0, 1]",
        ),
        (
            ["ablate", "--runs", "r", "--host", "foo"],
            "argument --host: expected a loopback address 127.x.y.z",
        ),
        (["ablate", "--runs", "r", "--seed", "-1"], "argument --seed: expected an integer >= 0, found -1"),
        (["ablate", "--runs", "r", "--steps", "1,,5"], "argument --steps: expected comma-separated distinct"),
    ],
)
def test_a_bad_number_is_refused_naming_the_option(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and message in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "--model", "m", "-o", "reports/x"],
        ["train", "--config", "c.yaml", "-o", "reports/x"],
        ["ablate", "--runs", "r", "-o", "reports/x"],
        ["data", "plot", "d", "-o", "reports/x"],
        ["data", "stats", "d", "-o", "reports/x"],
        ["export", "ckpt", "-o", "reports/x"],
        ["data", "collect", "-o", "reports/x"],
    ],
)
def test_every_output_option_is_also_spelled_dash_o(argv: list[str]) -> None:
    from dm1.cli import build_parser

    assert build_parser().parse_args(argv).out == "reports/x"


def test_ctrl_c_in_a_command_without_its_own_handler_is_one_line_and_exit_130(
    monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import dm1.commands.export as export_command

    def interrupted(args) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(export_command, "_handler", interrupted)
    assert main(["export", "some_checkpoint"]) == 130
    assert capsys.readouterr().err == "dm1 export: interrupted\n"
