"""`dm1 bench loop`: the whole stack on the twin, measured from outside through ROS 2.

Runs episodes of a model through twin → policy node → controller node → franky until `seconds` of simulated
time are covered, and reports the observation→chunk latency (policy ledger: tick → published), missed control
ticks (expected ticks at the card's rate while active minus chunks received) and the fraction of chunk
boundaries at which the end-effector speed (FK of `/joint_states`) dips below 20 % of its running median while
the chunk itself commands motion (`net_commanded_speed`: from the measured EE to the chunk's last point,
clipped to the controller's workspace box; a policy that deliberately stops, jitters in place while it
grasps, or pushes against the box floor is not a hand-over dip).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from dm1.control.limits import SafetyLimits
from dm1.kinematics import fr3_fk
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import MultiDOFJointTrajectory

from dm1_ros.conversions import from_time_msg, joint_state_to_arm, multidof_trajectory_to_arrays
from dm1_ros.evaluate import EvalDriver

CARTESIAN_TOPIC = "/dm1/action_chunk/cartesian"


def ee_speed(times: np.ndarray, ee: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(midpoint times (N-1,), EE speed m/s (N-1,)) from sampled times (N,) and positions (N, 3)."""
    speed = np.linalg.norm(np.diff(ee, axis=0), axis=1) / np.maximum(np.diff(times), 1e-6)
    return 0.5 * (times[1:] + times[:-1]), speed


def boundary_dips(
    times: np.ndarray,
    ee: np.ndarray,
    boundaries: np.ndarray,
    commanded: np.ndarray | None = None,
    window_s: float = 1.0,
    dip: float = 0.2,
    moving_speed: float = 0.01,
) -> np.ndarray:
    """Per chunk boundary: 1 = EE speed < `dip` × running median speed (a dip), 0 = no dip, -1 = not counted.

    times (N,), ee (N, 3) sampled positions; boundaries (M,) chunk start times; commanded (M,) the EE
    speed each chunk commands (m/s, nan = unknown; see `net_commanded_speed`). Boundaries where the running
    median speed is below `moving_speed` (m/s: the arm is deliberately still), or whose chunk itself commands
    less than `dip` x that median (the policy slows on purpose), are not counted. Returns (M,) ints; see
    `dip_fraction`.
    """
    flags = np.full(len(boundaries), -1, dtype=int)
    if len(times) < 3:
        return flags
    mid, speed = ee_speed(times, ee)
    cmd = np.full(len(boundaries), np.nan) if commanded is None else np.asarray(commanded, dtype=float)
    for i, (b, wanted) in enumerate(zip(boundaries, cmd, strict=True)):
        win = (mid > b - window_s) & (mid <= b)
        if win.sum() < 5:
            continue
        median = float(np.median(speed[win]))
        if median < moving_speed or wanted < dip * median:  # nan (unknown) compares False: counted
            continue
        at = int(np.clip(np.searchsorted(mid, b), 0, len(speed) - 1))
        flags[i] = int(speed[at] < dip * median)
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
    chunk_points: np.ndarray | None = None,
) -> None:
    """`trace.npz` (the raw samples) and `speed.png` (EE speed with the dipped boundaries marked).

    chunk_points: optional (M, P, 4) per Cartesian chunk (see `chunk_positions`), saved for diagnosing dips:
    what the chunk at a dipped boundary commanded.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    extra = {} if chunk_points is None else {"chunk_points": chunk_points}
    np.savez_compressed(
        out / "trace.npz", times=times, ee=ee, boundaries=boundaries, dip_flags=flags, **extra
    )
    if len(times) < 2:
        return
    frac, counted = dip_fraction(flags)
    fig, ax = plt.subplots(figsize=(10, 3.5))
    ax.plot(*ee_speed(times, ee), lw=0.8, color="#4c72b0", label="EE speed")
    for b in boundaries[flags == 1]:
        ax.axvline(b, color="#c44e52", lw=0.6, alpha=0.7)
    ax.set_xlabel("simulation time (s)")
    ax.set_ylabel("m/s")
    ax.set_title(f"EE speed; red: chunk boundaries with a dip ({int(np.sum(flags == 1))} of {counted})")
    fig.tight_layout()
    fig.savefig(out / "speed.png", dpi=110)
    plt.close(fig)


def run_loop_benchmark(args: Any) -> dict[str, Any]:
    """Measure the closed loop for `args.seconds` simulated seconds with model `args.model`."""
    from dm1.commands.graph_process import policy_launch_args, start_graph, stop_graph, wait_graph_ready
    from dm1.modelcard import load_card

    card = load_card(Path(args.model) / "model_card.json")
    rate = float(card.action.control_rate_hz)
    out = Path("runs/bench_loop")
    out.mkdir(parents=True, exist_ok=True)
    policy = policy_launch_args(args.noise_scale, args.ensemble_alpha)
    graph = start_graph(args.model, args.seed, out / "launch.log", policy)
    samples: list[tuple[float, np.ndarray]] = []  # (stamp, q (7,)): FK runs once, batched, after the run
    chunk_points: list[np.ndarray] = []  # (P, 4) per Cartesian chunk: absolute time, x, y, z
    chunk_stamps: list[float] = []  # header stamp (first action's time) of each
    episode_ends: list[float] = []  # sim time at which each episode's policy was deactivated
    latencies: list[float] = []  # observation assembled (tick) → chunk published, ms
    capture: list[float] = []  # image capture → chunk published, ms
    stages: dict[str, list[float]] = {"preprocess": [], "inference": [], "publish": []}  # ms per stage
    active_s = 0.0
    chunks = 0
    try:
        with rclpy.init():
            driver = EvalDriver()

            def on_js(msg: JointState) -> None:
                q, _ = joint_state_to_arm(msg)  # 200 Hz: no FK here, the client shares the stack's cores
                samples.append((from_time_msg(msg.header.stamp), q))

            def on_chunk(msg: MultiDOFJointTrajectory) -> None:
                points = chunk_positions(msg)
                if points is not None:
                    chunk_points.append(points)
                    chunk_stamps.append(from_time_msg(msg.header.stamp))

            driver.node.create_subscription(JointState, "/joint_states", on_js, 50)
            driver.node.create_subscription(MultiDOFJointTrajectory, CARTESIAN_TOPIC, on_chunk, 50)
            try:
                wait_graph_ready(graph, driver, out / "launch.log", 180.0, (TimeoutError, RuntimeError))
                episode = 0
                while active_s < args.seconds:
                    outcome = driver.run_episode(episode, max_sim_s=min(20.0, args.seconds - active_s + 1.0))
                    episode_ends.append(driver.sim_now())  # the policy was just deactivated
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
    finally:
        stop_graph(graph)
    times = np.array([t for t, _ in samples])
    order = np.argsort(times)
    ee = fr3_fk(np.array([q for _, q in samples])[order])[0] if samples else np.zeros((0, 3))  # (N, 3)
    boundaries = np.array(chunk_stamps)
    ends = np.array([c[-1] for c in chunk_points]).reshape(-1, 4)
    limits = SafetyLimits()
    box = (np.array(limits.workspace_min), np.array(limits.workspace_max))
    commanded = net_commanded_speed(times[order], ee, ends, boundaries, box) if len(times) else None
    if commanded is not None:  # chunks cut short by the episode's end (policy deactivated) command nothing
        e = np.array(episode_ends)[None, :]  # (1, E)
        commanded[np.any((boundaries[:, None] <= e) & (e < ends[:, :1]), axis=1)] = 0.0
    flags = boundary_dips(times[order], ee, boundaries, commanded)
    frac, counted = dip_fraction(flags)
    same_length = len({len(c) for c in chunk_points}) == 1
    write_trace(out, times[order], ee, boundaries, flags, np.stack(chunk_points) if same_length else None)
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
        "missed_ticks": max(expected - chunks, 0),
        "ticks": expected,
        "boundary_dip_fraction": frac,
        "boundaries_counted": counted,
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
