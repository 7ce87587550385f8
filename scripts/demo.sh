#!/usr/bin/env bash
# The main job: set up, then run custom_alerting_dag in an embedded Airflow and show what was routed where.
# Extra arguments go to scripts/demo.py (--real to use your configured connections, --fresh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python scripts/demo.py "$@"
