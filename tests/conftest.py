"""Shared fixtures: isolated ROS 2 domains, bounded process management, repository paths."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Tests use rclpy and pyrealsense2 in this process; rclpy must be loaded first (dm1.camera.realsense._rs:
# loaded the other way round, the two Fast DDS copies segfault at exit, after a clean run).
import rclpy  # noqa: F401, E402

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def _isolated_env() -> dict[str, str]:
    env = dict(os.environ)
    # One DDS domain per test session, so parallel runs (and other developers) never cross-talk.
    env.setdefault("DM1_TEST_DOMAIN", str(random.randint(1, 100)))
    env["ROS_DOMAIN_ID"] = env["DM1_TEST_DOMAIN"]
    env.setdefault("MUJOCO_GL", "egl")
    env.setdefault("PYOPENGL_PLATFORM", "egl")
    env.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["PYTHONUNBUFFERED"] = "1"
    return env


#: `SafetyLimits` overrides that leave only the per-joint clamps binding: every end-effector limit (applied to
#: joint targets through the FK) at the widest value `SafetyLimits` accepts, the box the arm's whole reach.
EE_LIMITS_WIDEST: dict[str, object] = {
    "max_ee_speed": 3.0,
    "max_ee_step": 0.5,
    "max_ee_angular_speed": 2.5,
    "max_ee_rotation_step": 1.0,
    "workspace_min": (-1.1, -1.1, -0.8),  # dm1.control.limits.FR3_REACH_MIN
    "workspace_max": (1.1, 1.1, 1.45),  # FR3_REACH_MAX
}


@pytest.fixture(scope="session")
def ros_env() -> dict[str, str]:
    """Environment for ROS 2 processes of this test session (unique ROS_DOMAIN_ID, localhost discovery)."""
    env = _isolated_env()
    os.environ["ROS_DOMAIN_ID"] = env["ROS_DOMAIN_ID"]
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["FASTDDS_BUILTIN_TRANSPORTS"] = env["FASTDDS_BUILTIN_TRANSPORTS"]
    return env


def dm1_operator(
    action: str, timeout_s: float = 30.0, extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """`dm1 operator <action>` as an operator runs it (a process of its own, this session's ROS domain)."""
    cmd = [PYTHON, "-m", "dm1.cli", "operator", action, "--timeout", str(timeout_s), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=6 * timeout_s)


def free_loopback_host() -> str:
    """A random loopback address (127.0.0.2-254) so concurrent franky-sim servers do not collide."""
    return f"127.0.{random.randint(1, 250)}.{random.randint(2, 250)}"


def kill_twin_on(host: str) -> int:
    """SIGKILL the twin node serving franky-sim on `host` (a launched graph's, by its `host:=` parameter);
    returns how many processes were killed."""
    pattern = f"dm1_sim.twin_node.*host:={host}"
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    for pid in found.stdout.split():
        os.kill(int(pid), signal.SIGKILL)
    return len(found.stdout.split())


class ProcessGroup:
    """Starts child processes in their own process groups and always kills them (SIGINT, then SIGKILL)."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            args, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs.append((name, proc))
        return proc

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, name: str, sig: int = signal.SIGINT, timeout: float = 10.0) -> None:
        for n, proc in self.procs:
            if n == name and proc.poll() is None:
                _terminate(proc, sig, timeout)

    def close(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                _terminate(proc, signal.SIGINT, 10.0)


def _terminate(proc: subprocess.Popen[bytes], sig: int, timeout: float) -> None:
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=timeout)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


@pytest.fixture
def procs(ros_env: dict[str, str], tmp_path: Path) -> Iterator[ProcessGroup]:
    """Real child processes for integration tests; logs land in tmp_path and are killed at teardown."""
    group = ProcessGroup(ros_env, tmp_path)
    try:
        yield group
    finally:
        group.close()


def as_background_job(cmd: list[str]) -> list[str]:
    """`cmd` started with SIGINT ignored, as a shell starts a background job (`cmd &`): through `trap '' INT`
    and exec, so no Python runs in the forked child (a Popen preexec_fn can deadlock there while the test
    process has other threads)."""
    return ["bash", "-c", 'trap "" INT; exec "$@"', "bash", *cmd]


class FakeClock:
    """A settable clock for fake-clock unit tests (seconds): call it for the time; `advance` and `sleep` move
    it (a fake `time.sleep` always takes some time, so a loop that sleeps 0 still moves on)."""

    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> float:
        self.t += dt
        return self.t

    def sleep(self, dt: float) -> None:
        self.t += max(dt, 1e-4)


def wait_for(predicate, timeout: float, interval: float = 0.05, what: str = "condition", detail=None):
    """Poll `predicate` until it returns a truthy value or `timeout` seconds pass (then fail the test, adding
    `detail()`, e.g. the ends of the processes' logs, to the message)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.1f} s waiting for {what}" + (f"\n{detail()}" if detail else ""))


@pytest.fixture(autouse=True)
def _no_real_time_priority_leaks_into_later_tests() -> Iterator[None]:
    """Give the test runner's main thread its scheduling back after each test: libfranka raises a thread that
    connects to SCHED_FIFO 99 (as root), and every process started later would inherit it."""
    from dm1.scheduling import ThreadScheduling

    own = ThreadScheduling.current()
    yield
    if ThreadScheduling.current() != own:
        own.apply()


@pytest.fixture(autouse=True)
def _no_sim_host_claim_leaks_into_later_tests() -> Iterator[None]:
    """Release the franky-sim addresses a test claimed in this process (`dm1 launch` in-process, the launch
    file's preflight): a launch holds its claim for its process's lifetime, and this process is the runner."""
    from dm1.sim.hosts import claimed_hosts, release_host

    yield
    for host in claimed_hosts():
        release_host(host)


def thread_scheduling(pid: int | str = "self") -> dict[int, tuple[int, int]]:
    """Thread id -> (scheduling policy, real-time priority) for every thread of process `pid`."""
    from dm1.scheduling import process_thread_ids

    out = {}
    for tid in process_thread_ids(pid):
        with contextlib.suppress(ProcessLookupError):  # the thread ended meanwhile
            out[tid] = (os.sched_getscheduler(tid), os.sched_getparam(tid).sched_priority)
    return out


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic dataset of 2 episodes x 40 steps with 32x32 images (configs/tiny.yaml trains on it)."""
    from dm1.data.synthetic import make_synthetic_dataset

    out = tmp_path_factory.mktemp("tiny_data")
    make_synthetic_dataset(out, n_episodes=2, episode_len=40, seed=0, image_size=(32, 32))
    return out


# The real-process rigs shared by several modules; each imports franky / rclpy only when a test asks for it.
@pytest.fixture
def sim_arm() -> Iterator[Any]:
    """A franky-sim FR3 served in this process (tests/franky_sim_arm.py), closed afterwards."""
    from franky_sim_arm import served_arm

    yield from served_arm()


@pytest.fixture
def rig(ros_env: dict[str, str], procs: ProcessGroup) -> Iterator[Any]:
    """franky-sim on /clock, a test node and `controller_node` as a process (tests/controller_rig.py)."""
    from controller_rig import running_rig

    yield from running_rig(procs)


@pytest.fixture
def stack(ros_env: dict[str, str], procs: ProcessGroup, tmp_path: Path) -> Iterator[tuple[Any, ProcessGroup]]:
    """Twin + controller + policy as processes, and the probe: (probe, procs) (tests/stack_probe.py)."""
    from stack_probe import running_stack

    yield from running_stack(procs, tmp_path)
