#!/usr/bin/env bash
# The README's main command: set up (idempotent), then run the bundled model on the franky-sim twin through
# the full ROS 2 stack (twin → policy node → controller node → franky) and print success + latency.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
source scripts/env.sh
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-42}
.venv/bin/dm1 demo "$@"
