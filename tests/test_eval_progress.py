"""Why an episode failed: `dm1.evaluation.progress` and the outcome counts in the evaluation summary."""

from __future__ import annotations

import math

import numpy as np
from dm1.evaluation import summarize
from dm1.evaluation.progress import EpisodeProgress, failure_mode

CUBE = np.array([0.5, 0.0, 0.025])


def _record(success: bool, reach: float, lift: float) -> dict:
    return {"success": success, "sim_duration_s": 1.0, "wall_s": 1.0, "min_ee_cube_m": reach,
            "max_cube_lift_m": lift}  # fmt: skip


def test_progress_tracks_closest_approach_and_highest_lift() -> None:
    p = EpisodeProgress()
    p.on_ee(CUBE + 0.01)  # no cube yet: not measured
    p.on_cube(CUBE)
    for d in (0.3, 0.1, 0.02, 0.2):
        p.on_ee(CUBE + np.array([0.0, 0.0, d]))
    for z in (0.0, 0.05, 0.03):
        p.on_cube(CUBE + np.array([0.0, 0.0, z]))
    rec = p.as_record()
    assert math.isclose(rec["min_ee_cube_m"], 0.02) and math.isclose(rec["max_cube_lift_m"], 0.05)


def test_progress_without_messages_is_nan() -> None:
    rec = EpisodeProgress().as_record()
    assert math.isnan(rec["min_ee_cube_m"]) and math.isnan(rec["max_cube_lift_m"])


def test_failure_modes_name_how_far_the_episode_got() -> None:
    assert failure_mode(_record(True, 0.01, 0.12)) == "success"
    assert failure_mode(_record(False, 0.08, 0.0)) == "did_not_reach"
    assert failure_mode(_record(False, 0.01, 0.005)) == "did_not_lift"
    assert failure_mode(_record(False, 0.01, 0.06)) == "lifted_not_held"
    assert failure_mode({"success": False}) == "unknown"  # records of an older evaluation


def test_summary_counts_outcomes() -> None:
    records = [_record(True, 0.01, 0.12), _record(False, 0.08, 0.0), _record(False, 0.09, 0.0)]
    s = summarize(records, model="m", through_ros=True, seed=0, machine="x")
    assert s.outcomes == {"success": 1, "did_not_reach": 2}
    assert s.to_dict()["outcomes"] == {"success": 1, "did_not_reach": 2}
