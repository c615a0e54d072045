"""`dm1 bench loop`: the whole stack on the twin, measured from outside through ROS 2.

Runs episodes of a model through twin → policy node → controller node → franky until `seconds` of simulated
time are covered, and reports the observation→chunk latency (policy ledger: tick → published), missed control
ticks (expected ticks at the card's rate while active minus chunks received) and the fraction of chunk
boundaries at which the end-effector speed (FK of `/joint_states`) dips below 20 % of its running median while
the chunk itself commands motion (`net_commanded_speed`: from the measured EE to the chunk's last point,
clipped to the controller's workspace box; a policy that deliberately stops, jitters in place while it
grasps, or pushes against the box floor is not a hand-over dip). The running median never reaches back into
the previous episode, only chunks executed to their end inside their episode count, and the dips are also
reported by phase: the grasp (settling on the cube, closing the fingers) and the transit (`grasp_phase`).
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


def ee_speed(times: np.ndarray, ee: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(midpoint times (N-1,), EE speed m/s (N-1,)) from sampled times (N,) and positions (N, 3)."""
    speed = np.linalg.norm(np.diff(ee, axis=0), axis=1) / np.maximum(np.diff(times), 1e-6)
    return 0.5 * (times[1:] + times[:-1]), speed


def speed_around(
    times: np.ndarray, ee: np.ndarray, at: np.ndarray | float, half_width_s: float
) -> np.ndarray:
    """Mean EE speed (m/s) over [at - half_width_s, at + half_width_s] for each instant `at` (scalar or (K,)):
    the straight-line distance between the positions interpolated at both ends, over the interval.
    times (N,) ascending, ee (N, 3)."""
    at = np.asarray(at, dtype=float)
    before = np.stack([np.interp(at - half_width_s, times, ee[:, k]) for k in range(3)], axis=-1)
    after = np.stack([np.interp(at + half_width_s, times, ee[:, k]) for k in range(3)], axis=-1)
    return np.linalg.norm(after - before, axis=-1) / (2 * half_width_s)


def boundary_dips(
    times: np.ndarray,
    ee: np.ndarray,
    boundaries: np.ndarray,
    commanded: np.ndarray | None = None,
    window_s: float = 1.0,
    dip: float = 0.2,
    moving_speed: float = 0.01,
    episode_starts: np.ndarray | None = None,
    probe_s: float = 0.01,
) -> np.ndarray:
    """Per chunk boundary: 1 = EE speed < `dip` × running median speed (a dip), 0 = no dip, -1 = not counted.

    times (N,), ee (N, 3) sampled positions; boundaries (M,) chunk start times; commanded (M,) the EE
    speed each chunk commands (m/s, nan = unknown; see `net_commanded_speed`). Boundaries where the running
    median speed is below `moving_speed` (m/s: the arm is deliberately still), or whose chunk itself commands
    less than `dip` x that median (the policy slows on purpose), are not counted. episode_starts (E,): sim
    times at which episodes began; the running window never reaches back across one (the previous episode's
    motion and the reset between them are not this episode's running speed). The speed at a boundary is the
    mean over [b - probe_s, b + probe_s] (positions interpolated at both ends), so that one `/joint_states`
    sample stamped a few ms off its measurement (a zero step next to a double one) is not read as a stop;
    a controller that stops at a hand-over stands still for far longer than 2 x probe_s. Returns (M,) ints;
    see `dip_fraction`.
    """
    flags = np.full(len(boundaries), -1, dtype=int)
    if len(times) < 3:
        return flags
    mid, speed = ee_speed(times, ee)
    cmd = np.full(len(boundaries), np.nan) if commanded is None else np.asarray(commanded, dtype=float)
    starts = np.sort(np.asarray([] if episode_starts is None else episode_starts, dtype=float))
    for i, (b, wanted) in enumerate(zip(boundaries, cmd, strict=True)):
        began = starts[starts <= b]
        since = max(b - window_s, float(began[-1]) if began.size else -np.inf)
        win = (mid > since) & (mid <= b)
        if win.sum() < 5:
            continue
        median = float(np.median(speed[win]))
        if median < moving_speed or wanted < dip * median:  # nan (unknown) compares False: counted
            continue
        flags[i] = int(speed_around(times, ee, b, probe_s) < dip * median)  # a 0-d array: compares as a bool
    return flags


def dip_fraction(flags: np.ndarray) -> tuple[float, int]:
    """(fraction of counted boundaries that dipped, boundaries counted) from `boundary_dips` flags."""
    counted = int(np.sum(flags >= 0))
    return (float(np.sum(flags == 1)) / counted if counted else 0.0), counted


def net_commanded_speed(
    times: np.ndarray,
    ee: np.ndarray,
    ends: np.ndarray,
    boundaries: np.ndarray,
    box: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """(M,) m/s: straight-line speed from the measured EE at each boundary to its chunk's last point.

    times (N,), ee (N, 3) sampled positions; ends (M, 4) time (s) and x, y, z of each chunk's last point;
    boundaries (M,) chunk start times; box (lo, hi) clips the end points as the controller's safety filter
    does.
    Net motion, not the speed between points: a chunk that jitters around the grasp point commands ~0.
    """
    target = ends[:, 1:] if box is None else np.clip(ends[:, 1:], box[0], box[1])  # (M, 3)
    at = np.clip(np.searchsorted(times, boundaries), 0, len(times) - 1)  # (M,)
    dt = np.maximum(ends[:, 0] - boundaries, 1e-3)
    return np.linalg.norm(target - ee[at], axis=1) / dt


def near_gripper_motion(
    times: np.ndarray, widths: np.ndarray, boundaries: np.ndarray, before_s: float = 0.6, after_s: float = 0.3
) -> np.ndarray:
    """(M,) bool: a boundary lies from `before_s` before to `after_s` after the start of a measured finger
    motion (a grasp or a release: the width changing by more than 1 cm/s). times (N,), widths (N,) m.

    Used to break the dips down by phase: the demonstrations stop the arm to grasp (the expert settles on the
    grasp point, then keeps still while the fingers close), so a policy that imitates them slows there.
    """
    if len(times) < 3:
        return np.zeros(len(boundaries), dtype=bool)
    moving = np.abs(np.gradient(widths, times)) > 0.01  # (N,)
    onsets = times[1:][moving[1:] & ~moving[:-1]]  # (K,)
    rel = onsets[None, :] - np.asarray(boundaries, dtype=float)[:, None]  # (M, K): onset after the boundary
    return np.any((rel <= before_s) & (rel >= -after_s), axis=1)


def grasp_phase(times: np.ndarray, ee: np.ndarray, widths: np.ndarray, boundaries: np.ndarray) -> np.ndarray:
    """(M,) bool: boundaries in the grasp phase of the twin's lift task: around a finger motion
    (`near_gripper_motion`) or with the EE at most a cube's height (+1 cm) above the table, where the policy
    settles on the cube (the other boundaries are the transit: approach, descent and lift above the cube)."""
    from dm1.sim.config import TwinConfig

    if len(times) < 3:
        return np.zeros(len(boundaries), dtype=bool)
    cfg = TwinConfig()
    at = np.clip(np.searchsorted(times, boundaries), 0, len(times) - 1)  # (M,)
    low = ee[at, 2] < cfg.table.top_z + cfg.cube_size + 0.01
    return low | near_gripper_motion(times, widths, boundaries)


def executed_within_episode(
    boundaries: np.ndarray, chunk_ends: np.ndarray, episode_starts: np.ndarray, episode_ends: np.ndarray
) -> np.ndarray:
    """(M,) bool: the chunk starting at boundaries[i] and ending at chunk_ends[i] (s) runs to its last point
    inside one episode's control, [episode_starts[k], episode_ends[k]] (activation to success or time up; the
    policy is deactivated after it and the controller holds). Chunks cut by an episode's end, or published
    between an episode's end and the deactivation, command nothing that is executed.
    """
    starts = np.asarray(episode_starts, dtype=float)  # (E,), ascending
    ends = np.asarray(episode_ends, dtype=float)  # (E,)
    k = np.searchsorted(starts, boundaries, side="right") - 1  # (M,) the episode each boundary falls in
    inside = k >= 0
    return inside & (np.asarray(chunk_ends) <= np.where(inside, ends[np.maximum(k, 0)], -np.inf))


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


def write_trace(
    out: Path,
    times: np.ndarray,
    ee: np.ndarray,
    boundaries: np.ndarray,
    flags: np.ndarray,
    **arrays: np.ndarray | None,
) -> None:
    """`trace.npz` (the raw samples) and `speed.png` (EE speed with the dipped boundaries marked).

    arrays: more arrays saved for diagnosing dips (None ones are left out), e.g. chunk_points (M, P, 4) per
    Cartesian chunk (see `chunk_positions`: what the chunk at a dipped boundary commanded), gripper_width
    (N,), episode_starts / episode_ends (E,) (shaded in the plot) and grasp_phase (M,) bool (see
    `grasp_phase`; its dips are drawn in orange, the others in red).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    extra = {name: value for name, value in arrays.items() if value is not None}
    np.savez_compressed(
        out / "trace.npz", times=times, ee=ee, boundaries=boundaries, dip_flags=flags, **extra
    )
    if len(times) < 2:
        return
    _, counted = dip_fraction(flags)
    fig, ax = plt.subplots(figsize=(10, 3.5))
    speed = speed_around(times, ee, times, 0.01)  # (N,) the estimator the dip test uses
    ax.plot(times, speed, lw=0.8, color="#4c72b0", label="EE speed (20 ms mean)")
    starts, ends = arrays.get("episode_starts"), arrays.get("episode_ends")
    in_control = np.ones(len(times), dtype=bool)
    if starts is not None and ends is not None and len(starts):
        in_control[:] = False
        for k, (a, e) in enumerate(zip(starts, ends, strict=False)):
            label = "episode (policy in control)" if k == 0 else None
            ax.axvspan(a, e, color="#dddddd", alpha=0.5, lw=0, label=label)
            in_control |= (times >= a) & (times <= e)
    if in_control.any():  # the homing moves between episodes are off the scale
        ax.set_ylim(0.0, max(0.5, 1.3 * float(np.percentile(speed[in_control], 99.5))))
    grasp = arrays.get("grasp_phase")
    grasp = np.zeros(len(boundaries), dtype=bool) if grasp is None else np.asarray(grasp, dtype=bool)
    for b, g in zip(boundaries[flags == 1], grasp[flags == 1], strict=True):
        ax.axvline(b, color="#dd8452" if g else "#c44e52", lw=0.6, alpha=0.8)
    ax.set_xlabel("simulation time (s)")
    ax.set_ylabel("m/s")
    dipped = flags == 1
    ax.set_title(
        f"EE speed; chunk boundaries with a dip: {int(dipped.sum())} of {counted} "
        f"(orange: {int(np.sum(grasp & dipped))} while grasping, red: {int(np.sum(~grasp & dipped))})"
    )
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "speed.png", dpi=110)
    plt.close(fig)


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
    commanded = net_commanded_speed(times, ee, ends, boundaries, box) if len(times) else None
    if commanded is not None:  # chunks cut short by the episode's end (policy deactivated) command nothing
        commanded[~executed_within_episode(boundaries, ends[:, 0], starts, stops)] = 0.0
    flags = boundary_dips(times, ee, boundaries, commanded, episode_starts=starts)
    frac, counted = dip_fraction(flags)
    grasp = grasp_phase(times, ee, widths, boundaries)
    by_phase = {
        phase: {"dips": int(np.sum(flags[mask] == 1)), "counted": int(np.sum(flags[mask] >= 0))}
        for phase, mask in (("grasp", grasp), ("transit", ~grasp))
    }
    same_length = len({len(c) for c in chunk_points}) == 1
    write_trace(
        out,
        times,
        ee,
        boundaries,
        flags,
        chunk_points=np.stack(chunk_points) if same_length else None,
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
