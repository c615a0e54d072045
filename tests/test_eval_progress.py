"""Why an episode failed: `dm1.evaluation.progress` and the outcome counts in the evaluation summary."""

from __future__ import annotations

import math

import numpy as np
from dm1.evaluation import summarize
from dm1.evaluation.progress import EpisodeProgress, failure_mode
from dm1.evaluation.report import failure_table

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


def test_progress_counts_grasp_attempts_and_where_the_episode_ended() -> None:
    p = EpisodeProgress()
    p.on_cube(CUBE)
    widths = (0.08, 0.05, 0.05, 0.079, 0.0, 0.002)  # open, closes on the cube, reopens, closes on nothing
    for i, w in enumerate(widths):
        p.on_ee(CUBE + np.array([0.0, 0.0, 0.1 - 0.01 * i]), w)
    rec = p.as_record()
    assert rec["grasps"] == 2
    assert math.isclose(rec["final_gripper_width_m"], 0.002) and math.isclose(rec["final_ee_cube_m"], 0.05)
    p.on_ee(CUBE, 0.0)  # still closed: no new attempt
    assert p.as_record()["grasps"] == 2


def test_failure_table_names_each_failed_seed_and_how_it_ended() -> None:
    ok = {**_record(True, 0.01, 0.12), "seed": 7}
    end = {"final_ee_cube_m": 0.02, "final_gripper_width_m": 0.001, "grasps": 3}
    missed = {**_record(False, 0.012, 0.0), "seed": 8, **end}
    lines = failure_table([ok, missed])
    rows = [line for line in lines if line.startswith("| 8 ")]
    assert rows == ["| 8 | did_not_lift | 1.2 | 0.0 | 2.0 | 0.1 | 3 |"]
    assert not any(line.startswith("| 7 ") for line in lines)
    assert failure_table([ok]) == []


def test_an_episode_ended_by_a_controller_fault_is_counted_and_named_as_one() -> None:
    faulted = {**_record(False, 0.01, 0.0), "seed": 9, "fault": "reflex: ControlException: cartesian_reflex"}
    success_despite = {**_record(True, 0.01, 0.12), "fault": "late chunk"}  # success was seen first
    assert failure_mode(faulted) == "controller_fault"
    assert failure_mode({**faulted, "fault": None}) == "did_not_lift"  # no fault: how far it got
    assert failure_mode(success_despite) == "success"
    s = summarize([faulted, _record(False, 0.08, 0.0)], model="m", through_ros=True, seed=0, machine="x")
    assert s.outcomes == {"controller_fault": 1, "did_not_reach": 1}
    rows = [line for line in failure_table([faulted]) if line.startswith("| 9 ")]
    assert rows and rows[0].startswith("| 9 | controller_fault: reflex: ControlException: cartesian_reflex |")
