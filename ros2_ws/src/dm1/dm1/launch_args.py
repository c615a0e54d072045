"""The arguments of the dm1 node graph (`LaunchArgs`) and the checks they pass on construction.

ROS-free (no rclpy, no launch): what `franka.launch.py` and `dm1 launch franka` accept (robot address or
twin, model, cameras, recorder, Foxglove bridge, policy settings), validated before any node starts, so that a
wrong argument is an error now and not a node that fails once the rest of the graph runs. `dm1.launch_graph`
turns validated `LaunchArgs` into the node graph; `twin_image_size` is the size the twin renders for a model.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, fields
from pathlib import Path

from dm1.modelcard import load_card, onnx_hash_problem
from dm1.policy_defaults import DEFAULT_ENSEMBLE_ALPHA

_CAMERA_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass
class LaunchArgs:
    """Arguments of `franka.launch.py` and `dm1 launch franka` (validated on construction).

    Args:
        robot_ip: FCI address of the real robot (required unless `use_sim`).
        model: exported model directory (`model.onnx` + `model_card.json`); None only with `no_policy`.
        cameras: camera names (topics `/camera/<name>/color/image_raw`).
        use_sim: run the franky-sim digital twin instead of the robot and the RealSense cameras.
        sim_host: loopback address the twin binds and the controller connects to in sim mode.
        external_cameras: cameras come from another driver (e.g. realsense2_camera, see docs/real-robot.md);
            do not start `dm1_ros.realsense_node`.
        rviz: start rviz2 with `dm1_bringup/rviz/dm1.rviz` (needs a ROS host).
        record: start the teleop recorder (`dm1_ros.teleop_node`), episodes into `record_dir`; it commands the
            robot, so it needs `no_policy`.
        record_dir: output directory of the recorder ("" = teleop.yaml's `out_dir`).
        teleop_device: input device of the recorder, one of `dm1.teleop.devices.DEVICES` ("" = teleop.yaml's
            `device`); needs `record`.
        foxglove: start the Foxglove bridge (websocket on `foxglove_port`, optional MCAP file).
        foxglove_port: websocket port (0 = any free port).
        foxglove_mcap: also write the bridged stream to this `.mcap` file ("" = no file); needs `foxglove`,
            and the file must not exist yet.
        no_policy: bring the graph up without the policy node.
        seed: seed of the twin's scene randomization.
        noise_scale: the policy's sampler noise scale (1 = trained distribution, 0 = deterministic).
        ensemble_alpha: the policy's temporal ensembling weight of the newest chunk (1 = off).
        config_dir: directory of the parameter YAML files (default: `dm1_bringup/config`).
    """

    robot_ip: str = ""
    model: str | None = None
    cameras: tuple[str, ...] = ("front", "wrist")
    use_sim: bool = False
    sim_host: str = "127.0.0.1"
    external_cameras: bool = False
    rviz: bool = False
    record: bool = False
    record_dir: str = ""
    teleop_device: str = ""
    foxglove: bool = False
    foxglove_port: int = 8765
    foxglove_mcap: str = ""
    no_policy: bool = False
    seed: int = 0
    noise_scale: float = 1.0
    ensemble_alpha: float = DEFAULT_ENSEMBLE_ALPHA
    config_dir: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.cameras, str):
            self.cameras = tuple(c.strip() for c in self.cameras.split(",") if c.strip())
        self.cameras = tuple(self.cameras)
        if not self.cameras:
            raise ValueError("LaunchArgs.cameras: expected at least one camera name, found none")
        for cam in self.cameras:
            if not _CAMERA_NAME.match(cam):
                raise ValueError(f"LaunchArgs.cameras: expected names like 'front', found {cam!r}")
        if len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"LaunchArgs.cameras: duplicate names in {list(self.cameras)}")
        if self.use_sim:
            _check_ip("sim_host", self.sim_host, loopback=True)
        elif not self.robot_ip:
            raise ValueError("LaunchArgs.robot_ip: required for the real robot (or pass use_sim), found ''")
        else:
            _check_ip("robot_ip", self.robot_ip, loopback=False)
        if self.record and not self.no_policy:
            raise ValueError(
                "LaunchArgs.record: the teleop recorder commands the robot, so it cannot run beside the "
                "policy; pass no_policy (policy rollouts are recorded by `dm1 eval`)"
            )
        if self.teleop_device:
            from dm1.teleop.devices import DEVICES

            if self.teleop_device not in DEVICES:
                raise ValueError(
                    f"LaunchArgs.teleop_device: expected one of {sorted(DEVICES)} (or '' for teleop.yaml's "
                    f"device), found {self.teleop_device!r}"
                )
            if not self.record:
                raise ValueError(
                    f"LaunchArgs.teleop_device: only used by the teleop recorder, expected record with it, "
                    f"found teleop_device={self.teleop_device!r} without record"
                )
        if self.model is None and not self.no_policy:
            raise ValueError(
                "LaunchArgs.model: expected an exported model directory (or no_policy), found None"
            )
        if self.model is not None and not self.no_policy:
            model = Path(self.model)
            missing = [f for f in ("model.onnx", "model_card.json") if not (model / f).is_file()]
            if missing:
                raise ValueError(
                    f"LaunchArgs.model: {model} lacks {', '.join(missing)} (expected `dm1 export` output)"
                )
            if problem := onnx_hash_problem(load_card(model), model / "model.onnx"):
                raise ValueError(f"LaunchArgs.model: {problem}")  # now, not once the twin and controller run
            if self.use_sim:
                twin_image_size(model, self.cameras)  # a clear error now, not a policy waiting for frames
        if not 0 <= self.foxglove_port <= 65535:
            raise ValueError(f"LaunchArgs.foxglove_port: expected 0..65535, found {self.foxglove_port}")
        if self.foxglove_mcap:
            _check_foxglove_mcap(self.foxglove_mcap, self.foxglove)
        if not 0.0 <= self.noise_scale <= 1.0:
            raise ValueError(f"LaunchArgs.noise_scale: expected 0..1, found {self.noise_scale}")
        if not 0.0 < self.ensemble_alpha <= 1.0:
            raise ValueError(f"LaunchArgs.ensemble_alpha: expected (0, 1], found {self.ensemble_alpha}")
        if self.seed < 0:
            raise ValueError(f"LaunchArgs.seed: expected >= 0, found {self.seed}")
        if self.config_dir is not None and not Path(self.config_dir).is_dir():
            raise ValueError(f"LaunchArgs.config_dir: {self.config_dir} is not a directory")

    @classmethod
    def field_names(cls) -> list[str]:
        """Names of all launch arguments (the launch file declares the same)."""
        return [f.name for f in fields(cls)]


def _check_ip(name: str, value: str, *, loopback: bool) -> None:
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        if loopback:
            raise ValueError(
                f"LaunchArgs.{name}: expected a loopback IPv4 address, found {value!r}"
            ) from None
        _check_hostname(name, value)  # a hostname is acceptable for the real robot
        return
    if loopback and not addr.is_loopback:
        raise ValueError(f"LaunchArgs.{name}: expected a loopback address (127.x.y.z), found {value!r}")


def _check_foxglove_mcap(path: str, foxglove: bool) -> None:
    """Refuse a recording path the bridge would not write: without the bridge (it was ignored silently), not
    `.mcap`, or already there (the bridge refuses it only once the rest of the graph runs)."""
    if not foxglove:
        raise ValueError(
            f"LaunchArgs.foxglove_mcap: written by the Foxglove bridge only, expected foxglove with it, "
            f"found foxglove_mcap={path!r} without foxglove"
        )
    mcap = Path(path)
    if mcap.suffix != ".mcap":
        raise ValueError(f"LaunchArgs.foxglove_mcap: expected a .mcap file, found {mcap}")
    if mcap.exists():
        raise ValueError(
            f"LaunchArgs.foxglove_mcap: {mcap} already exists (a recording is never overwritten): pass a "
            "new path"
        )


_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def _check_hostname(name: str, value: str) -> None:
    """Refuse what is neither an IP address nor a hostname (RFC 1123), e.g. a mistyped dotted quad."""
    labels = value.rstrip(".").split(".")
    if re.fullmatch(r"[0-9.]+", value):
        raise ValueError(f"LaunchArgs.{name}: expected an IPv4 address (four numbers 0-255), found {value!r}")
    if len(value) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
        raise ValueError(f"LaunchArgs.{name}: expected an IP address or a hostname, found {value!r}")


def twin_image_size(model: str | Path, cameras: tuple[str, ...]) -> tuple[int, int]:
    """(height, width) the twin renders for `model`: its cameras' common input size. The twin renders exactly
    `cameras`, all at one size: ValueError when one of the model's cameras is not among them, or when the
    model's cameras differ in size."""
    card = load_card(model)
    need = card.camera_names
    if lacking := [c for c in need if c not in cameras]:
        raise ValueError(
            f"LaunchArgs.cameras: the model {model} needs cameras {need}; the twin would render "
            f"only {list(cameras)}, lacking {lacking} (pass --cameras {','.join(need)})"
        )
    sizes = {tuple(c.shape[:2]) for c in card.cameras}
    if len(sizes) != 1:
        raise ValueError(
            f"LaunchArgs.model: {model} has cameras of different sizes "
            f"{ {c.name: list(c.shape[:2]) for c in card.cameras} }; the twin renders one size for all"
        )
    ((height, width),) = sizes
    return int(height), int(width)
