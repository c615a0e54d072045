"""Foxglove live view (websocket) and MCAP recording of the dm1 stream, without ROS.

`FoxgloveBridge` owns a private `foxglove.Context` with a websocket server (open https://app.foxglove.dev and
connect to `ws://<host>:<port>`) and/or an MCAP file sink. The ROS node (`dm1_ros.foxglove_node`) feeds it
numpy/plain values; every method is non-blocking (the SDK queues to its own threads) and images are decimated
to `max_image_rate_hz`, so monitoring never slows the control path — it runs in its own process anyway.

Topics keep their ROS names. Images use the `foxglove.RawImage` schema, joint states `foxglove.JointStates`;
action chunks and diagnostics are JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class BridgeConfig:
    """Foxglove bridge settings.

    Args:
        host: websocket bind address ("127.0.0.1"; "0.0.0.0" to view from another machine).
        port: websocket port; 0 = any free port; None = no server (MCAP only).
        mcap_path: also write everything to this `.mcap` file ("" = no file). An existing file is refused.
        max_image_rate_hz: per-topic image decimation (0 = log every frame).
    """

    host: str = "127.0.0.1"
    port: int | None = 8765
    mcap_path: str = ""
    max_image_rate_hz: float = 10.0

    def __post_init__(self) -> None:
        if self.port is not None and not 0 <= self.port <= 65535:
            raise ValueError(f"BridgeConfig.port: expected 0..65535 or None, found {self.port}")
        if self.port is None and not self.mcap_path:
            raise ValueError("BridgeConfig: expected a port or an mcap_path, found neither (nothing to do)")
        if self.mcap_path:
            path = Path(self.mcap_path)
            if path.suffix != ".mcap":
                raise ValueError(f"BridgeConfig.mcap_path: expected a .mcap file, found {path}")
            if path.exists():
                raise ValueError(f"BridgeConfig.mcap_path: {path} already exists (refusing to overwrite)")
        if self.max_image_rate_hz < 0:
            raise ValueError(f"BridgeConfig.max_image_rate_hz: expected >= 0, found {self.max_image_rate_hz}")


class BridgeStartError(RuntimeError):
    """The bridge could not start its websocket server or open its recording (one line: where, and why)."""


def _ns(stamp_s: float) -> int:
    return int(round(stamp_s * 1e9))


class FoxgloveBridge:
    """Logs dm1 data to a Foxglove websocket server and/or an MCAP file (see the module doc)."""

    def __init__(self, cfg: BridgeConfig) -> None:
        import foxglove

        self._fg = foxglove
        self.cfg = cfg
        self.context = foxglove.Context()
        self.server = None
        self.mcap = None
        # The server first: it is what fails (a taken port), and a recording opened before it would be left
        # behind as a stub that makes the rerun refuse its path ("already exists").
        if cfg.port is not None:
            try:
                self.server = foxglove.start_server(
                    name="dm1", host=cfg.host, port=cfg.port, context=self.context
                )
            except RuntimeError as exc:
                raise BridgeStartError(f"Foxglove server on {cfg.host}:{cfg.port}: {_reason(exc)}") from None
        if cfg.mcap_path:
            try:
                Path(cfg.mcap_path).parent.mkdir(parents=True, exist_ok=True)
                self.mcap = foxglove.open_mcap(cfg.mcap_path, context=self.context)
            except (OSError, RuntimeError) as exc:
                self.close()
                raise BridgeStartError(f"MCAP recording {cfg.mcap_path}: {_reason(exc)}") from None
        self._channels: dict[str, Any] = {}
        self._last_image: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    @property
    def port(self) -> int | None:
        """The websocket port actually bound (useful with port 0)."""
        return None if self.server is None else int(self.server.port)

    def _channel(self, topic: str, kind: str) -> Any:
        channel = self._channels.get(topic)
        if channel is None:
            chans = self._fg.channels
            if kind == "image":
                channel = chans.RawImageChannel(topic, context=self.context)
            elif kind == "joints":
                channel = chans.JointStatesChannel(topic, context=self.context)
            else:
                channel = self._fg.Channel(topic, context=self.context)  # schemaless JSON
            self._channels[topic] = channel
        return channel

    def _timestamp(self, stamp_s: float) -> Any:
        sec = int(np.floor(stamp_s))
        return self._fg.messages.Timestamp(sec=sec, nsec=int(round((stamp_s - sec) * 1e9)) % 1_000_000_000)

    def log_image(
        self, topic: str, stamp_s: float, frame_id: str, image: np.ndarray, encoding: str = "rgb8"
    ) -> bool:
        """Log an (H, W, 3) uint8 or (H, W) uint16 image; returns False when decimated away."""
        image = np.ascontiguousarray(image)
        h, w = image.shape[:2]
        return self.log_raw_image(topic, stamp_s, frame_id, image.tobytes(), w, h, image.strides[0], encoding)

    def log_raw_image(
        self,
        topic: str,
        stamp_s: float,
        frame_id: str,
        data: bytes,
        width: int,
        height: int,
        step: int,
        encoding: str,
    ) -> bool:
        """Log image bytes laid out as in `sensor_msgs/Image` (rgb8, mono8, 16UC1...); False = decimated."""
        if self.cfg.max_image_rate_hz > 0:
            last = self._last_image.get(topic)
            if last is not None and 0 <= stamp_s - last < 1.0 / self.cfg.max_image_rate_hz:
                return False
        self._last_image[topic] = stamp_s
        stamp = self._timestamp(stamp_s)
        msg = self._fg.messages.RawImage(
            timestamp=stamp,
            frame_id=frame_id,
            width=width,
            height=height,
            encoding=encoding,
            step=step,
            data=data,
        )
        self._channel(topic, "image").log(msg, log_time=_ns(stamp_s))
        self.counts[topic] = self.counts.get(topic, 0) + 1
        return True

    def log_joint_state(
        self,
        topic: str,
        stamp_s: float,
        names: list[str],
        positions: np.ndarray,
        velocities: np.ndarray | None = None,
        efforts: np.ndarray | None = None,
    ) -> None:
        """Log one joint state (positions (J,), optional velocities/efforts (J,))."""
        messages = self._fg.messages
        joints = []
        for i, name in enumerate(names):
            extra = {}  # foxglove messages are immutable: every field goes to the constructor
            if velocities is not None and len(velocities) > i:
                extra["velocity"] = float(velocities[i])
            if efforts is not None and len(efforts) > i:
                extra["effort"] = float(efforts[i])
            joints.append(messages.JointState(name=name, position=float(positions[i]), **extra))
        msg = messages.JointStates(timestamp=self._timestamp(stamp_s), joints=joints)
        self._channel(topic, "joints").log(msg, log_time=_ns(stamp_s))
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def log_json(self, topic: str, stamp_s: float, payload: dict[str, Any]) -> None:
        """Log a JSON-serializable dict (action chunks, diagnostics, status)."""
        self._channel(topic, "json").log(payload, log_time=_ns(stamp_s))
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def log_chunk(
        self, topic: str, stamp_s: float, joint_names: list[str], points: np.ndarray, dt_s: float
    ) -> None:
        """Log an action chunk: points (T, D) spaced `dt_s` from `stamp_s`."""
        points = np.asarray(points, dtype=np.float64)
        self.log_json(
            topic,
            stamp_s,
            {"stamp": stamp_s, "dt": dt_s, "names": list(joint_names), "points": points.tolist()},
        )

    def close(self) -> None:
        """Flush and close the MCAP file, stop the server (idempotent)."""
        if self.mcap is not None:
            self.mcap.close()
            self.mcap = None
        if self.server is not None:
            self.server.stop()
            self.server = None


def _reason(exc: BaseException) -> str:
    """The SDK's message without its `FoxgloveError: ` prefix ("Failed to bind port: ...")."""
    return str(exc).removeprefix("FoxgloveError: ") or type(exc).__name__
