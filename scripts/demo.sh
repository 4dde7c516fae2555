#!/usr/bin/env bash
# Set everything up, start a private Mosquitto and InfluxDB, and run the shipped flows against
# them in the foreground (Ctrl-C stops cleanly).
# Extra arguments go to `klimaflow run`, e.g. --log-level debug.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
