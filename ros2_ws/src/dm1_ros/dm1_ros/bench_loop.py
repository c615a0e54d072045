"""`dm1 bench loop`: the whole stack on the twin, measured from outside through ROS 2.

Runs episodes of a model through twin → policy node → controller node → franky until `seconds` of simulated
time are covered, and reports the observation→chunk latency (policy ledger: tick → published), missed control
ticks (expected ticks at the card's rate while active minus chunks received) and the fraction of chunk
boundaries at which the end-effector speed (FK of `/joint_states`) dips below 20 % of its running median while
the policy commands motion on both sides of the boundary (`dm1.evaluation.hand_over_dips`), by phase (grasp,
transit), and without that filter (`boundary_dip_fraction_unfiltered`); as a control, the same filtered test
halfway between boundaries (`mid_period_dip_fraction`: a policy that slows on its own dips there as often, a
controller that stops at hand-overs does not).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from dm1.control.executor import STATUS_TOPIC
from dm1.control.limits import SafetyLimits
from dm1.evaluation.hand_over_dips import (
    boundary_dips,
    commanded_speed_before,
    dip_fraction,
    executed_within_episode,
    grasp_phase,
    mid_period_dips,
    net_commanded_speed,
    write_trace,
)
from dm1.kinematics import fr3_fk
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import MultiDOFJointTrajectory

from dm1_ros.chunk_qos import CARTESIAN_TOPIC
from dm1_ros.conversions import (
    diagnostic_values,
    from_time_msg,
    joint_state_to_arm,
    multidof_trajectory_to_arrays,
)
from dm1_ros.evaluate import EvalDriver


def chunk_positions(msg: MultiDOFJointTrajectory) -> np.ndarray | None:
    """(P, 4): absolute time (s) and x, y, z (m) of each point of a Cartesian chunk; None for a hold or a
    message the controller would refuse as malformed (the same conversion decides)."""
    if not msg.points:
        return None
    try:
        t0, tfs, acts, _ = multidof_trajectory_to_arrays(msg)  # (P,), (P, 4) [x, y, z, grip]
    except ValueError:
        return None
    return np.column_stack([t0 + tfs, acts[:, :3]])


def run_loop_benchmark(args: Any) -> dict[str, Any]:
    """Measure the closed loop for `args.seconds` simulated seconds with model `args.model`."""
    from dm1.commands.graph_process import (
        graph_stopped_after,
        policy_launch_args,
        start_graph,
        wait_graph_ready,
    )
    from dm1.modelcard import load_card
    from rclpy.signals import SignalHandlerOptions

    card = load_card(Path(args.model) / "model_card.json")
    rate = float(card.action.control_rate_hz)
    out = Path("runs/bench_loop")
    out.mkdir(parents=True, exist_ok=True)
    policy = policy_launch_args(args.noise_scale, args.ensemble_alpha)
    graph = start_graph(args.model, args.seed, out / "launch.log", ["--sim-host", args.sim_host, *policy])
    samples: list[tuple[float, np.ndarray, float]] = []  # (stamp, q (7,), gripper width m): FK after the run
    chunk_points: list[np.ndarray] = []  # (P, 4) per Cartesian chunk: absolute time, x, y, z
    chunk_stamps: list[float] = []  # header stamp (first action's time) of each
    episode_starts: list[float] = []  # sim time at which each episode's policy was activated
    episode_ends: list[float] = []  # sim time at which each episode's control ended (then: deactivated)
    latencies: list[float] = []  # observation assembled (tick) → chunk published, ms
    capture: list[float] = []  # image capture → chunk published, ms
    stages: dict[str, list[float]] = {"preprocess": [], "inference": [], "publish": []}  # ms per stage
    tracking: list[tuple[float, float]] = []  # the controller's action-to-motion lag (ms) and error (mm)
    active_s = 0.0
    chunks = 0
    # Ctrl-C / SIGTERM: raised at the driver's next spin step, then the graph is stopped (as in dm1 eval)
    with graph_stopped_after(graph), rclpy.init(signal_handler_options=SignalHandlerOptions.NO):
        driver = EvalDriver()

        def on_js(msg: JointState) -> None:
            q, width = joint_state_to_arm(msg)  # 200 Hz: no FK here, the client shares the stack's cores
            samples.append((from_time_msg(msg.header.stamp), q, width))

        def on_chunk(msg: MultiDOFJointTrajectory) -> None:
            points = chunk_positions(msg)
            if points is not None:
                chunk_points.append(points)
                chunk_stamps.append(from_time_msg(msg.header.stamp))

        def on_status(msg: DiagnosticArray) -> None:
            for values in (diagnostic_values(st) for st in msg.status):
                if "tracking_lag_ms" in values and "tracking_error_mm" in values:
                    tracking.append((float(values["tracking_lag_ms"]), float(values["tracking_error_mm"])))

        driver.node.create_subscription(JointState, "/joint_states", on_js, 50)
        driver.node.create_subscription(DiagnosticArray, STATUS_TOPIC, on_status, 10)
        driver.node.create_subscription(MultiDOFJointTrajectory, CARTESIAN_TOPIC, on_chunk, 50)
        try:
            wait_graph_ready(graph, driver, out / "launch.log", 180.0, (TimeoutError, RuntimeError))
            episode = 0
            while active_s < args.seconds:
                outcome = driver.run_episode(episode, max_sim_s=min(20.0, args.seconds - active_s + 1.0))
                episode_starts.append(driver.episode_start_s)
                episode_ends.append(driver.episode_end_s)
                active_s += outcome.sim_duration_s
                chunks += outcome.chunks
                led = outcome.ledger_ms
                pub, tick = led.get("published_ms", []), led.get("tick_ms", [])
                latencies += [p - t for p, t in zip(pub, tick, strict=False)]
                pre, inf = led.get("preprocessed_ms", []), led.get("inferred_ms", [])
                stages["preprocess"] += [a - b for a, b in zip(pre, tick, strict=False)]
                stages["inference"] += [a - b for a, b in zip(inf, pre, strict=False)]
                stages["publish"] += [a - b for a, b in zip(pub, inf, strict=False)]
                capture += pub
                episode += 1
        finally:
            driver.close()
    times = np.array([t for t, _, _ in samples])
    order = np.argsort(times)
    ee = fr3_fk(np.array([q for _, q, _ in samples])[order])[0] if samples else np.zeros((0, 3))  # (N, 3)
    widths = np.array([w for _, _, w in samples])[order] if samples else np.zeros(0)  # (N,) m
    times = times[order]  # (N,) ascending
    starts, stops = np.array(episode_starts), np.array(episode_ends)  # (E,) sim s
    boundaries = np.array(chunk_stamps)
    ends = np.array([c[-1] for c in chunk_points]).reshape(-1, 4)
    limits = SafetyLimits()
    box = (np.array(limits.workspace_min), np.array(limits.workspace_max))
    same_length = len({len(c) for c in chunk_points}) == 1
    points = np.stack(chunk_points) if same_length else None  # (M, P, 4)
    commanded = net_commanded_speed(times, ee, ends, boundaries, box) if len(times) else None
    if commanded is not None:  # chunks cut short by the episode's end (policy deactivated) command nothing
        commanded[~executed_within_episode(boundaries, ends[:, 0], starts, stops)] = 0.0
        if points is not None:  # ... and the commands leading into the boundary must move the arm too
            before = commanded_speed_before(points, boundaries, box, tick_s=1.0 / rate, episode_starts=starts)
            commanded = np.fmin(commanded, before)  # nan (unknown before) leaves the chunk's own speed
    flags = boundary_dips(times, ee, boundaries, commanded, episode_starts=starts)
    frac, counted = dip_fraction(flags)
    raw_frac, raw_counted = dip_fraction(boundary_dips(times, ee, boundaries, episode_starts=starts))
    mid = mid_period_dips(times, ee, boundaries, commanded, episode_starts=starts)  # the control
    mid_frac, mid_counted = dip_fraction(mid)
    grasp = grasp_phase(times, ee, widths, boundaries)
    by_phase = {
        phase: {"dips": int(np.sum(flags[mask] == 1)), "counted": int(np.sum(flags[mask] >= 0))}
        for phase, mask in (("grasp", grasp), ("transit", ~grasp))
    }
    write_trace(
        out,
        times,
        ee,
        boundaries,
        flags,
        chunk_points=points,
        commanded_speed=commanded,
        gripper_width=widths,
        episode_starts=starts,
        episode_ends=stops,
        grasp_phase=grasp,
    )
    lat = np.asarray(latencies, dtype=float)
    expected = int(active_s * rate)
    result = {
        "obs_to_chunk_ms": {
            "median": float(np.median(lat)) if lat.size else float("nan"),
            "p99": float(np.percentile(lat, 99)) if lat.size else float("nan"),
        },
        "capture_to_chunk_ms": {
            "median": float(np.median(capture)) if capture else float("nan"),
            "p99": float(np.percentile(capture, 99)) if capture else float("nan"),
        },
        "stages_ms": {
            name: {"median": float(np.median(v)), "p99": float(np.percentile(v, 99))}
            for name, v in stages.items()
            if v
        },
        "tracking": {  # the controller's estimates (status, 10 Hz): how late the arm follows its targets
            "lag_ms_median": float(np.median([lag for lag, _ in tracking])) if tracking else float("nan"),
            "error_mm_median": float(np.median([err for _, err in tracking])) if tracking else float("nan"),
            "samples": len(tracking),
        },
        "missed_ticks": max(expected - chunks, 0),
        "ticks": expected,
        "boundary_dip_fraction": frac,
        "boundaries_counted": counted,
        "boundary_dips_by_phase": by_phase,
        "boundary_dip_fraction_unfiltered": raw_frac,  # every boundary where the arm moves, commands ignored
        "boundaries_counted_unfiltered": raw_counted,
        # the control: the same filtered test halfway between boundaries, where no hand-over happens
        "mid_period_dip_fraction": mid_frac,
        "mid_periods_counted": mid_counted,
        "sim_seconds": active_s,
        "model": str(args.model),
        "noise_scale": float(args.noise_scale),
        "ensemble_alpha": float(args.ensemble_alpha),
        "note": (
            "obs_to_chunk: observation assembled at the tick -> chunk published (policy node ledger); "
            "capture_to_chunk adds the image age (20 Hz cameras); twin + stack share this CPU"
        ),
    }
    (out / "result.json").write_text(json.dumps(result, indent=2))
    return result
