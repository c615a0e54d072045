"""`dm1 bench twin`: render time per camera frame and the twin's real-time factor, franky moving the arm."""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import numpy as np

from dm1.sim.config import CameraSpec, TwinConfig

SIM_S_PER_EPISODE = 12.0  # home + approach + lift, simulated seconds (sizes the run)


def run_twin_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Run the scripted expert on the twin for about `args.seconds` of simulation time and measure it.

    Reads (all optional): `seconds` (sim seconds, default 20), `width`/`height` (96), `fps` (20),
    `realtime` (True), `host` (None = first free loopback), `seed` (0: the twin's seed, the warm-up episode's
    cube seed; the timed episodes use seed + 1, ...). Two cameras (front, wrist).
    Returns `{"render_ms": {"median", "p99"}, "real_time_factor", "cameras", "size", "fps", "seed", "machine",
    ...}`.
    """
    from dm1.sim.expert import run_expert_episodes
    from dm1.sim.twin import Twin

    seconds = float(getattr(args, "seconds", 20.0) or 20.0)
    width = int(getattr(args, "width", 96) or 96)
    height = int(getattr(args, "height", 96) or 96)
    fps = float(getattr(args, "fps", 20.0) or 20.0)
    realtime = bool(getattr(args, "realtime", True))
    seed = int(getattr(args, "seed", 0) or 0)
    cams = {n: CameraSpec(width=width, height=height, fps=fps) for n in ("front", "wrist")}
    cfg = TwinConfig(host=getattr(args, "host", None), cameras=cams, realtime=realtime, seed=seed)
    with Twin(cfg) as twin:
        run_expert_episodes(twin, 1, seed=seed, max_sim_s=0.5)  # warm-up: connect, home, first renders
        twin.renderer.render_ms.clear()
        wall0, sim0 = time.monotonic(), twin.sim_time()
        results = run_expert_episodes(
            twin, max(1, math.ceil(seconds / SIM_S_PER_EPISODE)), seed=seed + 1, max_sim_s=15.0
        )
        episodes, successes = len(results), sum(r.success for r in results)
        wall, sim = time.monotonic() - wall0, twin.sim_time() - sim0
        render = np.asarray(twin.renderer.render_ms, dtype=float)
        frames, dropped = twin.renderer.frames_rendered, twin.renderer.frames_dropped
        waited = twin.renderer.physics_wait_s
    try:
        from dm1.commands.bench import machine_description

        machine = machine_description()
    except ImportError:
        machine = "unknown"
    return {
        "render_ms": {
            "median": round(float(np.median(render)), 2) if render.size else None,
            "p99": round(float(np.percentile(render, 99)), 2) if render.size else None,
        },
        "real_time_factor": round(sim / wall, 3),
        "cameras": 2,
        "size": [height, width],
        "fps": fps,
        "seed": seed,
        "realtime": realtime,
        "sim_seconds": round(sim, 2),
        "wall_seconds": round(wall, 2),
        "frames_rendered": frames,
        "frames_dropped": dropped,
        "physics_waited_for_render_s": round(waited, 2),
        "expert_episodes": episodes,
        "expert_successes": successes,
        "machine": machine,
    }
