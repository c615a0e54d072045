"""The robot path (runtime, safety, control, observation assembly, nodes) must run without torch installed."""

from __future__ import annotations

import subprocess
import sys

import pytest

ROBOT_PATH_MODULES = [
    "dm1.runtime",
    "dm1.modelcard",
    "dm1.control",
    "dm1.control.safety",
    "dm1.control.schedule",
    "dm1.control.executor",
    "dm1.policy",
    "dm1.policy.observation",
    "dm1.policy.step",
    "dm1.proprio",
    "dm1.kinematics",
    "dm1_ros.policy_node",
    "dm1_ros.controller_node",
]

_BLOCK_TORCH = "import sys; sys.modules['torch'] = None  # any 'import torch' now raises ImportError\n"


@pytest.mark.parametrize("module", ROBOT_PATH_MODULES)
def test_robot_path_module_imports_without_torch(module: str) -> None:
    code = _BLOCK_TORCH + f"import importlib; importlib.import_module({module!r})"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{module} needs torch (or failed to import):\n{result.stderr[-2000:]}"


def test_torch_block_really_blocks() -> None:
    """Guard against a vacuous test: with the block in place, importing torch must fail."""
    code = _BLOCK_TORCH + "import torch"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
