#!/usr/bin/env bash
# Source ROS 2 and the dm1 overlay, then run the command (`dm1 ...`, `ros2 launch dm1_bringup ...`, bash).
set -e
source "/opt/ros/${ROS_DISTRO:-jazzy}/setup.bash"
source /opt/dm1/install/setup.bash
# ament_python installs console scripts under lib/<package>; put `dm1` on PATH.
export PATH="/opt/dm1/install/dm1/lib/dm1:${PATH}"
# onnxruntime-gpu loads CUDA/cuDNN from the NVIDIA wheels installed by the [cuda,cudnn] extras.
for d in /usr/local/lib/python3*/dist-packages/nvidia/*/lib; do
  [ -d "$d" ] && LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
export LD_LIBRARY_PATH
exec "$@"
