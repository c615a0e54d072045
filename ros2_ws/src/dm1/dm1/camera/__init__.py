"""Camera drivers without ROS (`dm1.camera.realsense`: pyrealsense2 devices, `.db3` playback, recording)."""

from dm1.camera.realsense import (
    CameraConfig,
    CameraFrame,
    ClockMapper,
    FrameDropCounter,
    Intrinsics,
    NoDeviceError,
    PlaybackFileError,
    RealSenseCamera,
    camera_configs,
    list_devices,
)
from dm1.camera.recording import record_synthetic

__all__ = [
    "CameraConfig",
    "CameraFrame",
    "ClockMapper",
    "FrameDropCounter",
    "Intrinsics",
    "NoDeviceError",
    "PlaybackFileError",
    "RealSenseCamera",
    "camera_configs",
    "list_devices",
    "record_synthetic",
]
