"""`dm1 eval --merge`: one report over an evaluation run in parts (`dm1.evaluation.merge`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dm1.cli import main
from dm1.evaluation import summarize, write_report
from dm1.evaluation.merge import load_run, merge_runs
from policy_toy_model import build_toy_model

SETTINGS = {"max_sim_s": 20.0, "noise_scale": 1.0, "ensemble_alpha": 0.5, "onnx_sha256": "ab" * 32}


def _part(
    root: Path, name: str, seed: int, wins: list[bool], model: str = "models/m", **extra: object
) -> Path:
    """A finished evaluation directory as `dm1 eval` writes it (seeds seed.. in order)."""
    records = [
        {"index": i, "seed": seed + i, "success": w, "sim_duration_s": 3.0 + i, "wall_s": 20.0,
         "min_ee_cube_m": 0.01, "max_cube_lift_m": 0.12 if w else 0.0,
         "ledger_ms": {"published_ms": [5.0 + i]}}
        for i, w in enumerate(wins)
    ]  # fmt: skip
    summary = summarize(records, model=model, through_ros=True, seed=seed, machine="test host")
    summary.extra.update({**SETTINGS, **extra})
    write_report(summary, root / name, records)
    return root / name


def test_merge_summarizes_every_episode_of_the_parts(tmp_path: Path) -> None:
    a = _part(tmp_path, "a", 1000, [True, True, False])
    b = _part(tmp_path, "b", 1003, [True, False])
    merged, records = merge_runs([a, b])
    assert (merged.episodes, merged.successes, merged.seed) == (5, 3, 1000)
    assert merged.stderr == pytest.approx((0.6 * 0.4 / 5) ** 0.5)
    assert [r["seed"] for r in records] == [1000, 1001, 1002, 1003, 1004]
    assert merged.latency_ms["published_ms"]["count"] == 5  # every tick of every part
    assert merged.outcomes == {"success": 3, "did_not_lift": 2}
    assert merged.extra["ensemble_alpha"] == 0.5
    assert [p["successes"] for p in merged.extra["merged_from"]] == [2, 1]


def test_parts_drawn_from_the_twins_reset_stream_merge_only_with_other_streams(tmp_path: Path) -> None:
    def unseeded(part: Path) -> Path:  # a twin without seeded_resets (and evaluations before seeds were kept)
        records = json.loads((part / "episodes.json").read_text())
        (part / "episodes.json").write_text(json.dumps([{**r, "seed": None} for r in records]))
        return part

    a = unseeded(_part(tmp_path, "a", 1000, [True, False]))
    _, records = load_run(a)
    assert [r["stream"] for r in records] == [[1000, 0], [1000, 1]]
    b = unseeded(_part(tmp_path, "b", 1050, [True]))
    merged, _ = merge_runs([a, b])
    assert (merged.episodes, merged.successes, merged.seed) == (3, 2, 1000)
    again = unseeded(_part(tmp_path, "again", 1000, [True]))
    with pytest.raises(ValueError, match="reset 0 of the stream of seed 1000"):
        merge_runs([a, again])
    assert "| stream 1000 #1 | did_not_lift |" in (write_report(merged, tmp_path / "m", records)).read_text()


@pytest.mark.parametrize(
    ("second", "message"),
    [
        ({"seed": 1002}, "cube seed 1002"),  # overlaps the first part's seeds 1000..1002
        ({"seed": 1010, "ensemble_alpha": 1.0}, "extra.ensemble_alpha: expected 0.5"),
        ({"seed": 1010, "onnx_sha256": "cd" * 32}, "extra.onnx_sha256"),
        ({"seed": 1010, "model": "models/other"}, "model: expected 'models/m'"),
    ],
)
def test_parts_that_differ_are_refused_with_the_field(tmp_path: Path, second: dict, message: str) -> None:
    a = _part(tmp_path, "a", 1000, [True, True, True])
    b = _part(tmp_path, "b", wins=[True], **second)
    with pytest.raises(ValueError, match=message) as err:
        merge_runs([a, b])
    assert str(b) in str(err.value)


def test_a_truncated_part_is_refused(tmp_path: Path) -> None:
    a = _part(tmp_path, "a", 1000, [True, True])
    b = _part(tmp_path, "b", 1002, [True, True])
    (b / "episodes.json").write_text(json.dumps(json.loads((b / "episodes.json").read_text())[:1]))
    with pytest.raises(ValueError, match=r"episodes.json: expected 2 records"):
        merge_runs([a, b])
    (b / "episodes.json").unlink()
    with pytest.raises(FileNotFoundError, match="episodes.json: not found"):
        merge_runs([a, b])


def test_cli_merge_writes_the_report_and_updates_only_the_matching_card(tmp_path: Path, capsys) -> None:
    model = build_toy_model(tmp_path / "models" / "m")
    card = json.loads((model / "model_card.json").read_text())
    sha = card["onnx_sha256"]
    a = _part(tmp_path, "a", 1000, [True, True], model=str(model), onnx_sha256=sha)
    b = _part(tmp_path, "b", 1002, [False, True], model=str(model), onnx_sha256=sha)
    out = tmp_path / "merged"
    argv = ["eval", "--merge", str(a), str(b), "--model", str(model), "--out", str(out), "--json"]
    assert main([*argv, "--update-card"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["episodes"], summary["successes"]) == (4, 3)
    assert json.loads((out / "eval.json").read_text())["episodes"] == 4 and (out / "report.md").exists()
    assert json.loads((model / "model_card.json").read_text())["evaluation"]["episodes"] == 4

    other = tmp_path / "models" / "other"
    other.mkdir()
    (other / "model_card.json").write_text(json.dumps({**card, "onnx_sha256": "ef" * 32}))
    argv[argv.index(str(model))] = str(other)
    argv[argv.index(str(out))] = str(tmp_path / "merged_other")  # `out` holds a report: refused anyway
    assert main([*argv, "--update-card"]) == 2
    assert "onnx_sha256" in capsys.readouterr().err
    assert json.loads((other / "model_card.json").read_text())["evaluation"] is None
    assert not (tmp_path / "merged_other").exists()


@pytest.mark.parametrize("field", ["extra", "seed", "model"])
def test_a_part_whose_eval_json_lacks_a_field_is_refused_naming_the_file_and_field(
    tmp_path: Path, capsys, field: str
) -> None:
    a = _part(tmp_path, "a", 1000, [True])
    b = _part(tmp_path, "b", 1001, [True])
    summary = json.loads((b / "eval.json").read_text())
    del summary[field]  # a hand-edited report
    (b / "eval.json").write_text(json.dumps(summary))
    with pytest.raises(
        ValueError, match=f"eval.json: field '{field}': expected to be present, found it missing"
    ):
        merge_runs([a, b])
    assert main(["eval", "--merge", str(a), str(b), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    missing = f"field '{field}': expected to be present, found it missing"
    assert err == f"dm1 eval: error: --merge: {b / 'eval.json'}: {missing}\n"
    assert not (tmp_path / "m").exists()


def test_a_record_without_its_outcome_is_refused_naming_the_file_and_field(tmp_path: Path) -> None:
    a = _part(tmp_path, "a", 1000, [True])
    b = _part(tmp_path, "b", 1001, [True, False])
    records = json.loads((b / "episodes.json").read_text())
    del records[1]["success"]
    (b / "episodes.json").write_text(json.dumps(records))
    with pytest.raises(ValueError, match=r"episodes.json: record 1: field 'success': expected to be present"):
        merge_runs([a, b])


def test_parts_of_one_model_directory_spelled_differently_merge(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "m").mkdir(parents=True)
    a = _part(tmp_path, "a", 1000, [True], model="./models/m/")
    b = _part(tmp_path, "b", 1001, [False], model="models/m")
    c = _part(tmp_path, "c", 1002, [True], model=str(tmp_path / "models" / "m"))
    merged, _ = merge_runs([a, b, c])
    assert (merged.episodes, merged.successes, merged.model) == (3, 2, "./models/m/")


def test_cli_merge_refuses_update_card_of_an_invalid_card_before_writing_a_report(
    tmp_path: Path, capsys
) -> None:
    model = build_toy_model(tmp_path / "models" / "m")
    card = json.loads((model / "model_card.json").read_text())
    del card["inputs"]
    (model / "model_card.json").write_text(json.dumps(card))
    a = _part(tmp_path, "a", 1000, [True], model=str(model))
    b = _part(tmp_path, "b", 1001, [True], model=str(model))
    out = tmp_path / "merged"
    assert (
        main(["eval", "--merge", str(a), str(b), "--model", str(model), "--out", str(out), "--update-card"])
        == 2
    )
    err = capsys.readouterr().err
    assert "--update-card:" in err and "field 'inputs': expected to be present, found it missing" in err
    assert not out.exists()
    assert "inputs" not in json.loads((model / "model_card.json").read_text())  # left as it was
