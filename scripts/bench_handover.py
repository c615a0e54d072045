"""Chunk hand-overs through the real controller path, without a policy: A/B of the clipped-target velocity.

`ChunkExecutor` + `FrankyBackend` against an in-process franky-sim FR3 (the tests' `SimArm`), ticked at
100 Hz of simulation time. A chunk of 4 points (50 ms apart) arrives every 50 ms along +y at `--speed`; from
0.5 s on every chunk is shifted along the motion by a seeded uniform jump in [-jitter, +jitter] (what a
policy's tick-to-tick disagreement looks like at a hand-over). The EE speed is read at every hand-over.

Arms: `zero` (a clipped target is sent without velocity: the tracker arrives at rest, the behaviour before
2026-11-29) and `stream` (`SafetyFilter.clipped_velocity`: the safe target stream's own velocity, the
default now). Prints one JSON line per run and a summary; run from the repository root with the venv and
`scripts/env.sh` sourced:

    python scripts/bench_handover.py --jitter 0.005 0.01 --seeds 0 1 --json docs/benchmarks/handover_ab.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def run_once(arm_kind: str, jitter: float, seed: int, speed: float, seconds: float) -> dict:
    from dm1.control import safety
    from dm1.control.executor import ChunkExecutor
    from dm1.control.franky_backend import FrankyBackend
    from dm1.control.limits import SafetyLimits
    from franky_sim_arm import SimArm
    from test_executor_on_franky_sim import stream_chunks

    stream_velocity = safety.SafetyFilter.clipped_velocity
    if arm_kind == "zero":
        safety.SafetyFilter.clipped_velocity = lambda self, report, previous, dt, mode: None  # type: ignore[method-assign]
    sim = SimArm()
    backend = FrankyBackend(sim.host, gripper=False)
    rng = np.random.default_rng(seed)
    try:
        ex = ChunkExecutor(backend, SafetyLimits(), lambda: sim.time, mode="cartesian")
        p0 = backend.read_state().ee_pos.copy()
        t0 = sim.time
        ease = 0.3  # s of constant acceleration up to `speed`
        handovers = []

        def y(t: float) -> float:  # nominal path along +y (m)
            return speed * t * t / (2 * ease) if t < ease else speed * (t - ease / 2)

        def chunk_positions(el: float, tfs: np.ndarray) -> np.ndarray:
            pos = p0 + np.outer([y(el + tf) for tf in tfs], [0.0, 1.0, 0.0])  # (4, 3)
            if el > 0.5:
                pos[:, 1] += rng.uniform(-jitter, jitter)
                handovers.append(t0 + el)
            return pos

        times, states = stream_chunks(ex, backend, sim, chunk_positions, seconds)
        ee = [s.ee_pos.copy() for s in states]
    finally:
        backend.close()
        sim.close()
        safety.SafetyFilter.clipped_velocity = stream_velocity  # type: ignore[method-assign]
    t, pos = np.array(times), np.array(ee)  # (N,), (N, 3)
    speed_samples = np.linalg.norm(np.diff(pos, axis=0), axis=1) / np.diff(t)  # (N-1,)
    mid = 0.5 * (t[1:] + t[:-1])
    at = speed_samples[np.clip(np.searchsorted(mid, handovers), 0, len(mid) - 1)]  # (H,)
    return {
        "arm": arm_kind,
        "jitter_m": jitter,
        "seed": seed,
        "handovers": len(handovers),
        "speed_at_handover_min": float(at.min()),
        "speed_at_handover_p5": float(np.percentile(at, 5)),
        "speed_at_handover_median": float(np.median(at)),
        "below_50pct_of_nominal": int(np.sum(at < 0.5 * speed)),
        "below_20pct_of_nominal": int(np.sum(at < 0.2 * speed)),
        "clamped_ticks": ex.counters["clamped"],
        "holds": ex.counters["holds"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jitter", type=float, nargs="+", default=[0.005, 0.01], help="m")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--speed", type=float, default=0.18, help="nominal EE speed (m/s)")
    ap.add_argument("--seconds", type=float, default=1.9, help="simulated s per run (stays in the box)")
    ap.add_argument("--json", type=Path, help="write all runs and the summary here")
    args = ap.parse_args()
    runs = []
    for jitter in args.jitter:
        for seed in args.seeds:
            for arm_kind in ("zero", "stream"):  # alternated, so both arms share each window of the host
                runs.append(run_once(arm_kind, jitter, seed, args.speed, args.seconds))
                print(json.dumps(runs[-1]), flush=True)
    summary = {
        f"{arm_kind}@{jitter}": {
            "speed_at_handover_min_median_over_seeds": float(
                np.median([r["speed_at_handover_min"] for r in runs if (r["arm"], r["jitter_m"]) == key])
            ),
            "below_50pct_of_nominal": int(
                sum(r["below_50pct_of_nominal"] for r in runs if (r["arm"], r["jitter_m"]) == key)
            ),
            "handovers": int(sum(r["handovers"] for r in runs if (r["arm"], r["jitter_m"]) == key)),
        }
        for jitter in args.jitter
        for arm_kind in ("zero", "stream")
        for key in [(arm_kind, jitter)]
    }
    from dm1.commands.bench import machine_description

    out = {"benchmark": "handover", "nominal_speed_m_s": args.speed, "machine": machine_description()}
    out |= {"summary": summary, "runs": runs}
    print(json.dumps({"summary": summary}))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
