"""Train/serve parity (peer-features §4.6): a recorded episode replayed through the real policy node gives the
chunks the training code computes for the same steps.

Serve side: ROS messages (`sensor_msgs/Image` rgb8, `/joint_states`) → the policy node process (message
conversion, `ObservationAssembler`, proprio from the joint state's forward kinematics, onnxruntime, chunk
timing) → `MultiDOFJointTrajectory`. Train side: `WindowDataset` (the episode's stored proprio and frames,
normalised with the checkpoint's normalisers) → `DM1Network` → the MeanFlow one-step sampler →
de-normalisation, relative actions added back to the observed EE position. Same weights, zero noise; they must
agree to float32 precision, so any skew in channel order, normalisation, proprio order or source, relative
actions, action order or chunk timing fails here.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import PYTHON, wait_for

rclpy = pytest.importorskip("rclpy")
from dm1.checkpoint import latest_checkpoint, load_checkpoint  # noqa: E402
from dm1.config import TrainConfig, load_train_config  # noqa: E402
from dm1.data.dataset import WindowDataset  # noqa: E402
from dm1.data.episode import read_episode  # noqa: E402
from dm1.data.episode_writer import EpisodeWriter  # noqa: E402
from dm1.export import build_policy, export_model  # noqa: E402
from dm1.kinematics import FR3_HOME_Q, fr3_fk  # noqa: E402
from dm1.meanflow import sample  # noqa: E402
from dm1.train.trainer import Trainer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RATE, STEPS, TA = 20.0, 12, 4
T0 = 10.0  # simulated time of the episode's first step on replay


def record_episode(directory: Path) -> Path:
    """An episode as the teleop recorder writes one: joint positions and the proprio computed from them (FK),
    frames whose three channels differ (a swapped channel order changes the model's input)."""
    rng = np.random.default_rng(7)
    writer = EpisodeWriter(
        directory / "episode_000000.h5",
        ("front", "wrist"),
        {"ee_pos": 3, "gripper_width": 1, "joint_pos": 7},
        ("x", "y", "z", "gripper"),
        "ee_position",
        RATE,
        {"ee_pos": "m", "gripper_width": "m", "joint_pos": "rad", "actions": ["m", "m", "m", "1"]},
        "fr3_link0",
    )
    for i in range(STEPS):
        q = FR3_HOME_Q + 0.2 * np.sin(0.3 * i + np.arange(7))  # (7,)
        ee = fr3_fk(q)[0]
        width = 0.08 - 0.003 * i
        base = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
        images = {"front": base, "wrist": base[:, :, ::-1].copy()}  # wrist: the same pixels as BGR
        proprio = {
            "ee_pos": ee.astype(np.float32),
            "gripper_width": np.array([width], np.float32),
            "joint_pos": q.astype(np.float32),
        }
        action = np.array([*(ee + [0.01, -0.005, 0.002 * i]), float(i > 6)], np.float32)
        writer.append(images, proprio, action, i / RATE)
    return writer.close(success=True)


def train_and_export(data: Path, out: Path) -> tuple[TrainConfig, Path, Path]:
    d = load_train_config(REPO / "configs" / "tiny.yaml").to_dict()
    d["data"]["dataset_dir"] = str(data)
    d["model"]["relative_action_dims"] = 3  # as the bundled model: EE targets learned as offsets
    d.update(steps=3, warmup_steps=1, checkpoint_every=3, ema_start_step=0, log_every=1)
    cfg = TrainConfig.from_dict(d)
    Trainer(cfg, out_dir=out / "run", progress=False).fit()
    ckpt_dir = latest_checkpoint(out / "run")
    export_model(ckpt_dir, out / "model")
    return cfg, ckpt_dir, out / "model"


def training_code_chunks(cfg: TrainConfig, ckpt_dir: Path, data: Path) -> np.ndarray:
    """(W, Ta, 4) absolute actions for every window of the episode, through the training code path."""
    ckpt = load_checkpoint(ckpt_dir)
    net = build_policy(ckpt).net.eval()
    ds = WindowDataset(data, cfg.model, cfg.data, normalizers=ckpt.normalizers)
    batch = ds.gather(ds.episode_windows(0))
    with torch.no_grad():
        z = sample(net, batch["images"], batch["proprio"], torch.zeros_like(batch["actions"]))  # (W, Ta, 4)
    actions = ckpt.normalizers["action"].denormalize(z.numpy())  # offsets for x, y, z
    observed = ckpt.normalizers["proprio"].denormalize(batch["proprio"].numpy())[:, :3]  # (W, 3) ee_pos
    actions[..., :3] += observed[:, None, :]
    return actions


class Replayer:
    """Publishes /clock, the episode's frames and joint states; records the policy's chunks."""

    def __init__(self) -> None:
        from rclpy.executors import SingleThreadedExecutor
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import Image, JointState
        from trajectory_msgs.msg import MultiDOFJointTrajectory

        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node("parity_replayer", context=self.ctx)
        self.clock = self.node.create_publisher(Clock, "/clock", 10)
        self.cams = {
            c: self.node.create_publisher(Image, f"/camera/{c}/color/image_raw", 10)
            for c in ("front", "wrist")
        }
        self.joints = self.node.create_publisher(JointState, "/joint_states", 10)
        self.chunks: list = []  # MultiDOFJointTrajectory, as received
        topic = "/dm1/action_chunk/cartesian"
        self.node.create_subscription(MultiDOFJointTrajectory, topic, self.chunks.append, 50)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.01)

    def set_clock(self, t: float) -> None:
        from dm1_ros.conversions import to_time_msg
        from rosgraph_msgs.msg import Clock

        self.clock.publish(Clock(clock=to_time_msg(t)))

    def publish_step(self, stamp: float, images: dict[str, np.ndarray], q: np.ndarray, width: float) -> None:
        from dm1_ros.conversions import image_to_msg, make_joint_state

        for cam, pub in self.cams.items():
            pub.publish(image_to_msg(images[cam], "rgb8", stamp))
        self.joints.publish(make_joint_state(q, width, stamp, np.zeros(7)))

    def answer_at(self, tick: float, wall_timeout_s: float) -> np.ndarray | None:
        """The policy's answer to the tick at `tick`: the actions (N, 4) of its chunk (first action due one
        period after the observation, i.e. at `tick` + 1 ms), or None for an explicit hold at `tick`."""
        from dm1_ros.conversions import from_time_msg, multidof_trajectory_to_arrays

        deadline = time.monotonic() + wall_timeout_s
        while time.monotonic() < deadline:
            for msg in self.chunks:
                if not msg.points and abs(from_time_msg(msg.header.stamp) - tick) < 1e-6:
                    return None
                if msg.points and abs(multidof_trajectory_to_arrays(msg)[0] - (tick + 0.001)) < 1e-6:
                    return multidof_trajectory_to_arrays(msg)[2]
            self.executor.spin_once(timeout_sec=0.01)
        stamps = [round(from_time_msg(m.header.stamp), 4) for m in self.chunks[-5:]]
        raise AssertionError(f"no answer to the tick at {tick:.4f} within {wall_timeout_s} s; last {stamps}")

    def close(self) -> None:
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)


@pytest.mark.slow
def test_a_recorded_episode_replayed_through_the_policy_node_gives_the_training_codes_chunks(
    procs, ros_env, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    record_episode(data)
    cfg, ckpt_dir, model = train_and_export(data, tmp_path)
    expected = training_code_chunks(cfg, ckpt_dir, data)  # (W, Ta, 4): one window per observed step
    episode = read_episode(data / "episode_000000.h5")
    node_args = [
        *("-p", f"model_dir:={model}", "-p", "autostart:=true", "-p", "use_sim_time:=true"),
        *("-p", "noise_scale:=0.0", "-p", "ensemble_alpha:=1.0", "-p", "rt_priority:=0"),
        *("-p", "max_obs_age_s:=0.06"),  # a step's input not yet delivered: a hold, never the step before
    ]
    procs.start("policy", [PYTHON, "-m", "dm1_ros.policy_node", "--ros-args", *node_args])
    replay = Replayer()
    dt = 1.0 / RATE
    try:

        def first_tick() -> bool:  # the clock jumps to just before the first step: one tick, no inputs yet
            replay.set_clock(T0 - 0.001)
            replay.spin(0.1)
            return any(not m.points for m in replay.chunks)

        wait_for(first_tick, 120, what="the policy node's first tick (an explicit hold: no inputs yet)")
        compared: list[int] = []
        for i in range(len(expected)):
            stamp = T0 + i * dt  # the clock stands 1 ms before it: no tick while the step is delivered
            images = {c: episode.images[c][i] for c in ("front", "wrist")}
            replay.publish_step(
                stamp, images, episode.proprio["joint_pos"][i], float(episode.proprio["gripper_width"][i, 0])
            )
            replay.spin(0.5)
            replay.set_clock(stamp + dt - 0.001)  # one control period: one tick, 49 ms after the observation
            served = replay.answer_at(stamp + dt - 0.001, 30.0)
            if served is None:  # a message not delivered in time: the previous step's is too old (60 ms)
                continue
            # the first action (due at `stamp`) is already past: the chunk holds actions 1..Ta-1
            np.testing.assert_allclose(served, expected[i, 1:], atol=1e-4, err_msg=f"step {i}")
            compared.append(i)
        assert len(compared) >= len(expected) - 2, (
            f"the policy held at steps {set(range(len(expected))) - set(compared)}"
        )
    finally:
        replay.close()
