#!/usr/bin/env bash
# One-time set-up on a fresh Debian 12 / Ubuntu machine: system packages + .venv with pinned versions.
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PKGS=(util-linux libusb-1.0-0 libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 libopengl0 libglib2.0-0)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[bootstrap] apt install ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[bootstrap] creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.dm1-installed
want=$(cat requirements.txt constraints.txt ros2_ws/src/*/setup.py | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[bootstrap] pip install (pinned by constraints.txt)"
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
  .venv/bin/python -m pip install -q -r requirements.txt -c constraints.txt 2>&1 | grep -v "is ignored" || true
  for pkg in dm1 dm1_sim dm1_ros dm1_bringup; do
    .venv/bin/python -m pip install -q --no-deps -e "ros2_ws/src/$pkg" 2>&1 | grep -v "is ignored" || true
  done
  .venv/bin/python -c "import dm1, torch, onnxruntime, rclpy, franky, franky_sim, pyrealsense2" 
  echo "$want" > "$stamp"
fi
echo "[bootstrap] ready: source .venv/bin/activate"
