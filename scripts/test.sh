#!/usr/bin/env bash
# The README's test command: set up (idempotent), lint, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
source scripts/env.sh
.venv/bin/ruff check .
.venv/bin/python -m pytest tests "$@"
