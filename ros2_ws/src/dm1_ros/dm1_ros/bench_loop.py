"""`dm1 bench loop`: the whole stack on the twin, measured from outside through ROS 2.

Runs episodes of a model through twin → policy node → controller node → franky until `seconds` of simulated
time are covered, and reports the observation→chunk latency (policy ledger: tick → published), missed control
ticks (expected ticks at the card's rate while active minus chunks received) and the fraction of chunk
boundaries at which the end-effector speed (FK of `/joint_states`) dips below 20 % of its running median while
the chunk itself commands motion over its whole horizon (`dm1_ros.evaluate.commanded_speed`, its slowest
segment: a policy that deliberately slows or stops, e.g. to grasp, is not a hand-over dip).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from dm1.kinematics import fr3_fk
from sensor_msgs.msg import JointState

from dm1_ros.conversions import from_time_msg, joint_state_to_arm
from dm1_ros.evaluate import EvalDriver


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

    times (N,), ee (N, 3) sampled positions; boundaries (M,) chunk start times; commanded (M,) the slowest EE
    speed each chunk commands (m/s, nan = unknown). Boundaries where the running median speed is below
    `moving_speed` (m/s: the arm is deliberately still), or whose chunk itself commands less than `dip` x that
    median (the policy slows on purpose), are not counted. Returns (M,) ints; see `dip_fraction`.
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


def write_trace(
    out: Path, times: np.ndarray, ee: np.ndarray, boundaries: np.ndarray, flags: np.ndarray
) -> None:
    """`trace.npz` (the raw samples) and `speed.png` (EE speed with the dipped boundaries marked)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    np.savez_compressed(out / "trace.npz", times=times, ee=ee, boundaries=boundaries, dip_flags=flags)
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
    samples: list[tuple[float, np.ndarray]] = []
    latencies: list[float] = []  # observation assembled (tick) → chunk published, ms
    capture: list[float] = []  # image capture → chunk published, ms
    stages: dict[str, list[float]] = {"preprocess": [], "inference": [], "publish": []}  # ms per stage
    active_s = 0.0
    chunks = 0
    try:
        with rclpy.init():
            driver = EvalDriver()

            def on_js(msg: JointState) -> None:
                q, _ = joint_state_to_arm(msg)
                samples.append((from_time_msg(msg.header.stamp), fr3_fk(q)[0]))

            driver.node.create_subscription(JointState, "/joint_states", on_js, 50)
            try:
                wait_graph_ready(graph, driver, out / "launch.log", 180.0, (TimeoutError, RuntimeError))
                episode = 0
                while active_s < args.seconds:
                    outcome = driver.run_episode(episode, max_sim_s=min(20.0, args.seconds - active_s + 1.0))
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
    ee = np.array([p for _, p in samples])[order] if samples else np.zeros((0, 3))
    boundaries = np.array([stamp for _, stamp, _ in driver.chunk_log])
    commanded = np.array([speed for _, _, speed in driver.chunk_log])
    flags = boundary_dips(times[order], ee, boundaries, commanded)
    frac, counted = dip_fraction(flags)
    write_trace(out, times[order], ee, boundaries, flags)
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
