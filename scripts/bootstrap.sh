#!/usr/bin/env bash
# Create .venv (if needed) and install the project with its development dependencies.
# Idempotent: a second run only re-checks the installed packages.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
  # a pyenv shim can exist for a version that is not active: ask each candidate to actually run
  for candidate in python3.11 python3.12 python3.10 python3; do
    if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 10))' >/dev/null 2>&1; then
      PYTHON="$candidate"
      break
    fi
  done
fi
if [[ -z "$PYTHON" ]]; then
  echo "no Python >= 3.10 found; set PYTHON=/path/to/python3" >&2
  exit 1
fi
if [[ ! -x .venv/bin/python ]]; then
  echo "Creating .venv with $("$PYTHON" --version)" >&2
  "$PYTHON" -m venv .venv
fi
# uv resolves Airflow's large dependency tree in seconds; pip is the fallback
if ! .venv/bin/python -m pip install --quiet --disable-pip-version-check uv >/dev/null 2>&1; then
  echo "uv unavailable, using pip" >&2
fi
if [[ -x .venv/bin/uv ]]; then
  .venv/bin/uv pip install --quiet --python .venv/bin/python -e ".[dev]"
else
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
fi
