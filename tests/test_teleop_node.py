"""Teleop node on the real graph: twin node + controller node + teleop node as processes, rclpy in between.

Everything is driven by simulation time (/clock from the twin); waits are bounded with `wait_for`.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from conftest import PYTHON, ProcessGroup, free_loopback_host, wait_for
from dm1_ros.spin_thread import SpinThread
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import JointState, Joy
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import MultiDOFJointTrajectory

pytestmark = pytest.mark.slow


class Probe(Node):
    """Test-side node: service calls, latest /joint_states, /twin/success, teleop status, chunk count."""

    def __init__(self) -> None:
        super().__init__("teleop_test_probe")
        self.joints: list[tuple[float, np.ndarray, np.ndarray]] = []
        self.success = False
        self.status: dict = {}
        self.chunks = 0
        self.create_subscription(JointState, "/joint_states", self._on_js, 10)
        self.create_subscription(Bool, "/twin/success", lambda m: setattr(self, "success", m.data), 10)
        self.create_subscription(
            String, "/teleop/status", lambda m: setattr(self, "status", json.loads(m.data)), 10
        )
        self.create_subscription(MultiDOFJointTrajectory, "/dm1/action_chunk/cartesian", self._on_chunk, 10)
        self.joy_pub = self.create_publisher(Joy, "/joy", 10)
        self.clients_: dict[str, object] = {}

    def _on_status(self, m: String) -> None:
        self.status = json.loads(m.data)

    def _on_js(self, m: JointState) -> None:
        t = m.header.stamp.sec + m.header.stamp.nanosec * 1e-9
        self.joints = [
            *self.joints[-400:],
            (t, np.array(m.position[:7]), np.array(m.velocity[:7] or [0] * 7)),
        ]

    def _on_chunk(self, m: MultiDOFJointTrajectory) -> None:
        self.chunks += 1

    def call(self, service: str, timeout: float = 30.0) -> Trigger.Response:
        if service not in self.clients_:
            self.clients_[service] = self.create_client(Trigger, service)
        client = self.clients_[service]
        wait_for(lambda: client.service_is_ready(), timeout, what=f"service {service}")
        future = client.call_async(Trigger.Request())
        return wait_for(
            lambda: future.result() if future.done() else None, timeout, what=f"reply of {service}"
        )

    def sim_time(self) -> float:
        return self.joints[-1][0] if self.joints else 0.0

    def wait_sim(self, seconds: float, timeout: float = 120.0) -> None:
        t0 = self.sim_time()
        wait_for(lambda: self.sim_time() >= t0 + seconds, timeout, what=f"{seconds} s of simulation time")


@pytest.fixture(scope="module")
def graph(ros_env, tmp_path_factory):
    """Twin + controller processes and an in-process probe node, shared by this module's tests."""
    logs = tmp_path_factory.mktemp("teleop_graph")
    group = ProcessGroup(ros_env, logs)
    host = free_loopback_host()
    sim = ["--ros-args", "-p", "use_sim_time:=true"]
    group.start("twin", [PYTHON, "-m", "dm1_sim.twin_node", "--ros-args", "-p", f"host:={host}"])
    rclpy.init()
    probe = Probe()
    executor = SingleThreadedExecutor()
    executor.add_node(probe)
    spinner = SpinThread(executor, "teleop-test-probe").start()
    try:
        wait_for(lambda: "twin up" in group.log("twin"), 180, what=f"twin node ({logs})")
        group.start("controller", [PYTHON, "-m", "dm1_ros.controller_node", *sim, "-p", f"robot_ip:={host}"])
        wait_for(lambda: len(probe.joints) > 10, 120, what=f"/joint_states from the controller ({logs})")
        yield group, probe, sim
    finally:
        group.close()
        spinner.stop()
        probe.destroy_node()
        rclpy.try_shutdown()


@contextlib.contextmanager
def _teleop(graph, name: str, out_dir: Path, device: str, *extra: str):
    """Start a teleop node, wait until its own status arrives, and always stop it afterwards."""
    group, probe, sim = graph
    args = [PYTHON, "-m", "dm1_ros.teleop_node", *sim, "-p", f"device:={device}", "-p", f"out_dir:={out_dir}"]
    proc = group.start(name, [*args, "-p", "min_free_mb:=1.0", *extra])
    probe.clients_.clear()  # new server process: new clients
    try:
        wait_for(lambda: probe.status.get("pid") == proc.pid, 120, what=f"status of {name}")
        yield proc
    finally:
        group.stop(name)


def _collect(probe: Probe, n: int) -> None:
    for _ in range(n):
        assert probe.call("/twin/reset").success
        probe.wait_sim(0.3)
        assert probe.call("/teleop/start").success
        probe.wait_sim(0.5)
        wait_for(lambda: probe.success, 300, interval=0.2, what="the scripted expert to lift the cube")
        assert probe.call("/teleop/mark_success").success
        reply = probe.call("/teleop/stop_save")
        assert reply.success, reply.message


@pytest.fixture(scope="module")
def collected(graph, tmp_path_factory):
    """Two scripted-expert episodes recorded through the teleop node (the second after a saved one)."""
    out = tmp_path_factory.mktemp("teleop_data") / "ds"
    with _teleop(graph, "teleop_scripted", out, "scripted", "-p", "mcap:=true"):
        _collect(graph[1], 2)
    return out


def test_scripted_episodes_validate_and_load_in_the_training_loader(collected):
    from dm1.config import DataConfig, ModelConfig
    from dm1.data.dataset import WindowDataset
    from dm1.data.tools import validate_dataset

    report = validate_dataset(collected)
    assert report["num_episodes"] == 2 and report["num_valid"] == 2, json.dumps(report, indent=1)
    for ep in report["episodes"]:
        assert ep["success"] is True and ep["out_of_range_actions"] == 0
        assert ep["recorder_qa"]["frames"] == ep["length"] > 20
    data_cfg = DataConfig(dataset_dir=str(collected), proprio_keys=("ee_pos", "gripper_width"))
    ds = WindowDataset(collected, ModelConfig(), data_cfg)
    assert len(ds) > 0


def test_mcap_mirror_holds_the_raw_topics_of_each_episode(collected):
    from mcap.reader import make_reader

    files = sorted((collected / "mcap").glob("*.mcap"))
    assert [f.name for f in files] == [f"episode_00000{i}.mcap" for i in range(2)]
    with open(files[0], "rb") as f:
        topics = {c.topic for c in make_reader(f).get_summary().channels.values()}
    assert {"/camera/front/color/image_raw", "/joint_states", "/dm1/action_chunk/cartesian"} <= topics


def _frames(probe: Probe) -> int:
    return probe.status.get("recorder_qa", {}).get("frames", 0)


def test_bad_camera_messages_are_refused_and_a_resized_camera_ends_the_episode_not_the_node(graph, tmp_path):
    """Before: a mono8 frame, or a frame of another size mid-episode, ended the teleop node ("bad
    configuration"): the episode was lost and the arm lost its commander."""
    from dm1_ros.conversions import image_to_msg
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    probe = graph[1]
    pub = probe.create_publisher(
        Image, "/camera/front/color/image_raw", QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    )
    try:
        with _teleop(graph, "teleop_bad_cam", tmp_path / "ds", "scripted") as proc:
            assert probe.call("/teleop/start").success
            wait_for(lambda: _frames(probe) >= 3, 120, what="3 recorded frames")

            def refused() -> int:
                pub.publish(image_to_msg(np.zeros((96, 96), np.uint8), "mono8", stamp=probe.sim_time()))
                return probe.status.get("refused_inputs", {}).get("front", 0)

            wait_for(lambda: refused() >= 3, 60, what="mono8 frames counted as refused")
            frames = _frames(probe)
            wait_for(lambda: _frames(probe) > frames + 3, 60, what="recording to go on")  # dropped, not fatal
            assert proc.poll() is None

            def ended() -> bool:
                pub.publish(image_to_msg(np.zeros((48, 64, 3), np.uint8), "rgb8", stamp=probe.sim_time()))
                return probe.status.get("state") == "idle"

            wait_for(ended, 60, what="the episode to end on a frame of another size")
            assert probe.status["hold"] and "(48, 64, 3)" in probe.status["last_error"]
            assert proc.poll() is None, graph[0].log("teleop_bad_cam")
            assert [p.name for p in (tmp_path / "ds").glob("*.partial")] == ["episode_000000.h5.partial"]
    finally:
        probe.destroy_publisher(pub)


def _joint_motion(probe: Probe, seconds: float) -> float:
    """Largest joint displacement (rad) over the last `seconds` of simulation time."""
    t_end = probe.sim_time()
    q = np.array([j[1] for j in probe.joints if j[0] >= t_end - seconds])
    return float(np.max(np.abs(q - q[-1]))) if len(q) else np.inf


def test_unwritable_output_refuses_to_record_and_keeps_holding(graph, tmp_path):
    from dm1.kinematics import fr3_fk

    probe = graph[1]
    (tmp_path / "a_file").write_text("not a directory")
    with _teleop(graph, "teleop_bad_out", tmp_path / "a_file" / "ds", "scripted"):
        reply = probe.call("/teleop/start")
        assert not reply.success and "cannot create output directory" in reply.message
        chunks = probe.chunks
        wait_for(lambda: probe.chunks > chunks + 5, 60, what="chunks of the held target")  # the loop runs
        t0 = probe.sim_time()
        probe.wait_sim(1.5)
        assert probe.status["hold"] and probe.status["state"] == "idle"
        ee = np.array([fr3_fk(q)[0] for t, q, _ in probe.joints if t >= t0])  # (T, 3) m
        # The scripted expert would be several cm on its way to the cube by now; the held target stays put
        # (the first ~1 s after the controller's watchdog hold moves the hand ~1 mm as tracking resumes).
        assert np.max(np.linalg.norm(ee - ee[0], axis=1)) < 5e-3
        assert _joint_motion(probe, 0.4) < 2e-3


def test_a_controller_fault_discards_the_episode_and_nothing_moves_after_recovery_until_start(
    graph, tmp_path
):
    """A reflex while recording: the controller latches it, the teleop node discards the episode (the arm
    stopped while the device's actions went on being recorded), refuses `start` while the fault is latched,
    and after `recover` holds the arm where it stopped, though the scripted device still steers toward the
    cube, until the operator starts a new episode."""
    probe = graph[1]
    out = tmp_path / "ds"
    with _teleop(graph, "teleop_fault", out, "scripted"):
        assert probe.call("/twin/reset").success
        assert probe.call("/teleop/start").success
        wait_for(lambda: _frames(probe) >= 10, 120, what="10 recorded frames")
        wait_for(lambda: probe.call("/twin/inject_reflex").success, 60, what="a reflex during a motion")
        wait_for(
            lambda: (
                probe.status.get("state") == "idle"
                and probe.status.get("last_error", "").startswith("controller fault")
            ),
            60,
            what="the teleop node dropping the episode on the controller's fault",
        )
        assert "reflex" in probe.status["last_error"].lower(), probe.status
        assert sorted(p.name for p in out.iterdir()) == [], "the faulted episode was kept"
        refused = probe.call("/teleop/start")
        assert not refused.success and "controller fault latched" in refused.message, refused.message
        from dm1.kinematics import fr3_fk

        assert probe.call("/dm1/controller/recover").success
        t0 = probe.sim_time()
        probe.wait_sim(1.5)
        ee = np.array([fr3_fk(q)[0] for t, q, _ in probe.joints if t >= t0])  # (T, 3) m
        # The scripted device would be cm on its way to the cube; the held target stays put (the arm settles
        # ~1 mm as tracking resumes, as after a watchdog hold)
        assert np.max(np.linalg.norm(ee - ee[0], axis=1)) < 5e-3, "the arm moved after the recovery"
        assert _joint_motion(probe, 0.4) < 2e-3
        assert probe.call("/teleop/start").success  # the operator's choice: the device drives again
        wait_for(lambda: _joint_motion(probe, 0.5) > 1e-3, 120, interval=0.2, what="motion after start")
        assert probe.call("/teleop/discard").success


def test_device_timeout_holds_the_arm_and_a_home_move_under_a_live_joystick_is_not_undone(graph, tmp_path):
    """One joystick teleop node. The joystick drives the arm, then goes silent: the deadman stops publishing
    and the controller holds the arm. Then the operator homes the arm while the joystick is connected again
    (alive, at rest): the teleop target must not pull the arm back to where it was (it did, at full speed,
    before: the target was kept through the move). The controller refuses a chunk starting far from the arm
    while idle, and the teleop node re-seeds its target from the homed pose, so the joystick drives on from
    home."""
    import threading

    from dm1.control.backend import HOME_EE_POS
    from dm1.kinematics import fr3_fk

    probe = graph[1]
    axes, connected, stop = [0.0, 1.0, 0.0], threading.Event(), threading.Event()

    def joystick() -> None:  # 20 Hz wall; sim time runs slower, so the input is fresh
        while not stop.is_set():
            if connected.is_set():
                probe.joy_pub.publish(Joy(axes=list(axes), buttons=[0, 0]))
            time.sleep(0.05)

    def ee_y() -> float:
        return float(fr3_fk(probe.joints[-1][1])[0][1])

    with _teleop(graph, "teleop_joy", tmp_path / "ds", "joy", "-p", "record:=false"):
        chunks0 = probe.chunks
        connected.set()
        thread = threading.Thread(target=joystick, daemon=True)
        thread.start()
        try:
            # Move in +y until 20 chunks came: on a loaded host the new node's /joy subscription can take
            # seconds to be discovered (a fixed 2 s of input once produced no chunk at all in a CI run), so
            # the wait is bounded instead of the input.
            wait_for(lambda: probe.chunks >= chunks0 + 20, 60, what="20 chunks from joystick input")
            assert _joint_motion(probe, 1.0) > 1e-3, "the arm did not follow the device"
            wait_for(lambda: ee_y() > 0.08, 120, interval=0.1, what="the arm following the joystick 8 cm")
            # The device goes silent: the deadman must stop publishing and the controller holds.
            connected.clear()
            probe.wait_sim(0.5)
            chunks_after = probe.chunks
            probe.wait_sim(1.0)
            assert probe.chunks == chunks_after, "teleop kept publishing without device input"
            assert not probe.status["deadman_alive"] and probe.status["deadman_trips"] >= 1
            assert _joint_motion(probe, 0.8) < 2e-3
            assert np.max(np.abs(probe.joints[-1][2])) < 0.02  # joint velocity ≈ 0

            axes[:] = [0.0, 0.0, 0.0]  # connected again, at rest: the node publishes its target again
            connected.set()
            chunks = probe.chunks
            wait_for(lambda: probe.chunks > chunks + 5, 60, what="chunks of the joystick at rest")
            assert probe.call("/dm1/controller/home", timeout=90.0).success
            t0 = probe.sim_time()
            probe.wait_sim(1.5)
            ee = np.array([fr3_fk(q)[0] for t, q, _ in probe.joints if t >= t0])  # (T, 3) m
            away = float(np.max(np.linalg.norm(ee - HOME_EE_POS, axis=1)))
            assert away < 5e-3, f"the arm left home by {1000 * away:.0f} mm after the home move"
            axes[:] = [0.0, 1.0, 0.0]
            wait_for(lambda: ee_y() > 0.02, 120, interval=0.1, what="the joystick driving on from home")
        finally:
            stop.set()
            thread.join()


def test_a_dataset_of_another_layout_is_named_at_startup_and_start_is_refused_while_the_node_holds(
    graph, tmp_path
):
    """`--record-dir` pointing at `dm1 data collect --via-teleop` episodes (proprio ee_pos + gripper_width)
    while the node records its default proprio keys: it logs the conflict once it is up, refuses `start`
    with the dataset check's message and keeps running, holding the arm; nothing is appended."""
    from dm1.teleop.recorder import EpisodeRecorder, RecorderConfig

    out = tmp_path / "ds"
    lift = EpisodeRecorder(
        RecorderConfig(out_dir=out, proprio_keys=("ee_pos", "gripper_width"), min_free_mb=0)
    )
    lift.start(0)
    for cam in lift.config.camera_names:
        lift.on_image(cam, np.zeros((96, 96, 3), np.uint8), 1.0, 1.0)
    lift.on_joint_state(np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785]), 0.08, 1.0, 1.0)
    assert lift.tick(1.0, np.array([0.5, 0.0, 0.3, 0.0]))
    lift.stop_save(success=True)
    group, probe, _ = graph
    with _teleop(graph, "teleop_mixed", out, "scripted") as proc:
        conflict = "holds a different dataset (episode_000000.h5: proprio_keys"
        wait_for(lambda: conflict in group.log("teleop_mixed"), 30, what="the startup error in the log")
        assert probe.status["hold"] and "holds a different dataset" in probe.status["last_error"]
        reply = probe.call("/teleop/start")
        assert not reply.success and "holds a different dataset (episode_000000.h5" in reply.message
        probe.wait_sim(0.5)
        assert proc.poll() is None and probe.status["state"] == "idle" and probe.status["hold"]
    assert sorted(p.name for p in out.iterdir()) == ["episode_000000.h5"]


def test_a_refused_second_start_leaves_the_episode_number_alone_and_discard_removes_the_episode(
    graph, tmp_path
):
    """start, start (refused: recording), mark_success, stop_save: the reply names the file written, and the
    next episode is the next number (`dm1 data collect --via-teleop` reads the file name from the reply);
    discarding that one, mid-recording, leaves no file of it behind."""
    probe, out = graph[1], tmp_path / "ds"
    with _teleop(graph, "teleop_restart", out, "scripted"):
        assert probe.call("/teleop/start").message == "recording episode 0"
        refused = probe.call("/teleop/start")
        assert not refused.success and "cannot start: session is recording" in refused.message
        wait_for(lambda: _frames(probe) >= 3, 120, what="3 recorded frames")
        assert probe.call("/teleop/mark_success").success
        saved = probe.call("/teleop/stop_save")
        assert saved.success and saved.message == "saved episode 0 (success=True)", saved.message
        assert (out / "episode_000000.h5").is_file()
        assert probe.call("/teleop/start").message == "recording episode 1"

        def recording_episode_1() -> bool:  # a status with episode 0 saved: not one from episode 0
            status = probe.status
            return status.get("state") == "recording" and status.get("saved") == 1 and _frames(probe) >= 5

        wait_for(recording_episode_1, 120, what="5 recorded frames of episode 1")
        reply = probe.call("/teleop/discard")
        assert reply.success and "discarded episode 1" in reply.message, reply.message
        assert sorted(p.name for p in out.iterdir()) == ["episode_000000.h5"]


# Last in the module on purpose: a SIGKILL mid-publish can leave a Fast DDS shared-memory lock held, which
# now and then stands the twin's physics still long enough for libfranka to time out and the shared
# controller to latch a lost link (README, "A peer process that dies while it publishes"): no later test of
# this module runs on that controller.
def test_kill_9_mid_episode_keeps_completed_episodes_and_quarantines_the_partial(graph, collected):
    from dm1.data.index import DatasetIndex
    from dm1.data.tools import validate_dataset

    probe = graph[1]
    with _teleop(graph, "teleop_kill", collected, "scripted") as proc:
        assert probe.call("/twin/reset").success
        assert probe.call("/teleop/start").success
        wait_for(lambda: _frames(probe) >= 10, 120, what="10 recorded frames")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert [p.name for p in collected.glob("*.partial")] == ["episode_000002.h5.partial"]
    report = validate_dataset(collected)
    assert report["num_valid"] == 2 and report["quarantined"] == ["episode_000002.h5.partial"]
    assert len(DatasetIndex(collected).scan().episodes) == 2
