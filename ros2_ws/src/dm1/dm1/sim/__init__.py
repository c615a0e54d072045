"""The franky-sim digital twin: scene, cameras, cube reset, success signal and a scripted Lift expert.

Heavy dependencies (mujoco, franky_sim) load when `Twin` starts, so importing this package stays cheap.
"""

from dm1.sim.config import CAMERA_PRESETS, CameraSpec, TableSpec, TwinConfig

__all__ = ["CAMERA_PRESETS", "CameraSpec", "TableSpec", "TwinConfig"]
