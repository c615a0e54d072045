"""Chunk-boundary speed dips, the smoothness metric of `dm1 bench loop` (ROS-free: numpy and matplotlib).

A boundary (a chunk's first action time) is a *dip* when the end-effector speed there falls below 20 % of its
running median speed while the policy commands motion on both sides of it: the commands leading into the
boundary (`commanded_speed_before`: the net motion of the box-clipped commanded target over the last 0.15 s)
and the chunk that starts there (`net_commanded_speed`: from the measured EE to its last point, clipped to
the box). A policy that deliberately stops, jitters in place while it grasps, or pushes against the box floor
is not a hand-over dip; a controller that stops at a hand-over in a steady stream of chunks is.
`boundary_dips` with no commanded speeds counts every boundary where the arm moves (the unfiltered figure
`dm1 bench loop` also reports). The running median never reaches back into the previous episode, and the
dips are split by phase: the grasp (settling on the cube, closing the fingers) and the transit
(`grasp_phase`). `mid_period_dips` is the control: the same test halfway between boundaries, where no
hand-over happens; dips the policy causes show up there as often as at the boundaries.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


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


def mid_period_dips(
    times: np.ndarray,
    ee: np.ndarray,
    boundaries: np.ndarray,
    commanded: np.ndarray | None = None,
    episode_starts: np.ndarray | None = None,
) -> np.ndarray:
    """The control for `boundary_dips`: the same test halfway between consecutive boundaries, away from any
    hand-over, each with the commanded speed of the chunk in force there (the earlier boundary's).

    A controller that stops at hand-overs dips at the boundaries and not between them; a policy that slows on
    its own (settling on the cube) dips as often between them. Returns (M-1,) flags as `boundary_dips` does,
    -1 for a pair with an episode start between its boundaries or further apart than twice their median
    spacing (the arm held between episodes). boundaries (M,) ascending; commanded (M,) or None.
    """
    b = np.asarray(boundaries, dtype=float)  # (M,)
    if len(b) < 2:
        return np.full(0, -1, dtype=int)
    gap = np.diff(b)  # (M-1,)
    starts = np.asarray([] if episode_starts is None else episode_starts, dtype=float)
    split = np.searchsorted(starts, b[:-1], side="right") != np.searchsorted(starts, b[1:], side="right")
    usable = ~split & (gap <= 2 * np.median(gap))  # (M-1,)
    cmd = np.full(len(b) - 1, np.nan) if commanded is None else np.asarray(commanded, dtype=float)[:-1]
    flags = boundary_dips(times, ee, 0.5 * (b[:-1] + b[1:]), cmd, episode_starts=episode_starts)
    return np.where(usable, flags, -1)


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


def commanded_path(
    chunk_points: np.ndarray,
    at: np.ndarray,
    box: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """(K, 3) m: the target the chunks command at each instant `at` (K,): the newest chunk that has started by
    then (first point's time <= the instant), interpolated between its points and held at its last one,
    clipped to the workspace box as the controller's safety filter clips it; nan before the first chunk.

    chunk_points (M, P, 4): absolute time (s) and x, y, z of each chunk's points, chunks in arrival order
    (their first points' times ascending, as the policy's ticks stamp them).
    Depends on the policy's output only, never on how the controller executed it.
    """
    at = np.atleast_1d(np.asarray(at, dtype=float))
    starts = chunk_points[:, 0, 0]  # (M,)
    newest = np.searchsorted(starts, at, side="right") - 1  # (K,) index of the chunk in force
    out = np.full((len(at), 3), np.nan)
    for k, (i, tau) in enumerate(zip(newest, at, strict=True)):
        if i >= 0:
            pts = chunk_points[i]  # (P, 4)
            out[k] = [np.interp(tau, pts[:, 0], pts[:, 1 + j]) for j in range(3)]
    return out if box is None else np.clip(out, box[0], box[1])


def commanded_speed_before(
    chunk_points: np.ndarray,
    boundaries: np.ndarray,
    box: tuple[np.ndarray, np.ndarray] | None = None,
    window_s: float = 0.15,
    tick_s: float = 0.05,
    episode_starts: np.ndarray | None = None,
) -> np.ndarray:
    """(M,) m/s: net speed of the commanded target (`commanded_path`) over the `window_s` leading into each
    boundary (M,), i.e. what the policy asked the arm to do just before the hand-over.

    Each end of the window is the commanded target averaged over one control period `tick_s` (the arm
    tracks the target ~25 ms late on the twin, so it cannot follow what changes within a tick). Replanning
    every tick executes only each chunk's first points, so a policy that jitters in place (a few mm to and fro
    from tick to tick, e.g. while it settles on the cube) commands ~0 net motion, however fast each jitter
    step; a steady stream of chunks commands its cruise speed. 0.15 s is three 20 Hz ticks. The window starts
    no earlier than the boundary's episode (`episode_starts`): nan where it would reach back before the
    episode or before the first chunk.
    """
    b = np.asarray(boundaries, dtype=float)  # (M,)
    since = b - window_s - tick_s  # the earliest instant the window reads
    if episode_starts is not None and len(episode_starts):
        starts = np.sort(np.asarray(episode_starts, dtype=float))
        k = np.searchsorted(starts, b, side="right") - 1
        began = np.where(k >= 0, starts[np.maximum(k, 0)], np.inf)
        since = np.where(since < began, np.nan, since)
    speed = np.full(len(b), np.nan)
    frac = np.linspace(0.0, 1.0, 11)  # (S,) samples across one tick
    for i in np.flatnonzero(~np.isnan(since)):
        end = commanded_path(chunk_points, b[i] - tick_s + frac * tick_s, box).mean(axis=0)  # (3,)
        start = commanded_path(chunk_points, since[i] + frac * tick_s, box).mean(axis=0)
        speed[i] = np.linalg.norm(end - start) / window_s
    return speed


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
