"""Helpers to run the ``airflow alerting`` commands as subprocesses against the session's Airflow home.

Each subprocess pays Airflow's start-up (seconds), so the tests batch their assertions per run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

BIN = Path(sys.executable).parent
#: the console script installed by `scripts/bootstrap.sh`, and Airflow's own CLI
CONSOLE = BIN / "airflow-alerting"
AIRFLOW = BIN / "airflow"


@dataclass(frozen=True)
class Ran:
    """A finished command: exit code, output, and the JSON document when ``-o json`` was asked."""

    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        try:
            return json.loads(self.stdout)
        except ValueError as err:
            raise AssertionError(f"{self.args}: stdout is not one JSON document:\n{self.stdout}") from err

    def explain(self) -> str:
        return f"{' '.join(self.args)} exited {self.code}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


def run(*args: str, airflow: bool = False, env: Mapping[str, str] | None = None, timeout: float = 120) -> Ran:
    """Run ``airflow-alerting ARGS`` (or ``airflow alerting ARGS``) with this session's environment.

    :param args: the command's arguments
    :param airflow: go through Airflow's own CLI instead of the console script
    :param env: variables to add to (or, with an empty value, remove from) the environment
    """
    environment = dict(os.environ)
    for name, value in (env or {}).items():
        if value:
            environment[name] = value
        else:
            environment.pop(name, None)
    command = [str(AIRFLOW), "alerting", *args] if airflow else [str(CONSOLE), *args]
    done = subprocess.run(
        command, capture_output=True, text=True, env=environment, timeout=timeout, check=False
    )
    shown = ("airflow", "alerting", *args) if airflow else ("airflow-alerting", *args)
    return Ran(shown, done.returncode, done.stdout, done.stderr)


def require_console_script() -> None:
    """Fail with the fix when the console script is not installed."""
    if not CONSOLE.exists():
        pytest.fail(f"{CONSOLE} is missing: run `bash scripts/bootstrap.sh` to install the console script")
