#!/usr/bin/env bash
# Set up, lint, type-check and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/ruff check src tests example_dags scripts
.venv/bin/ruff format --check src tests example_dags scripts
.venv/bin/mypy
exec .venv/bin/pytest "$@"
