"""Test-session setup shared by unit and integration tests.

Airflow reads ``AIRFLOW_HOME`` and its database URL once, at first import, so the session's
isolated Airflow home must be in the environment before any test module imports Airflow.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="alerting-test-airflow-home-"))
# dag.test() needs DAG files inside the dags folder: the test scenarios and the shipped example
DAGS_FOLDER = AIRFLOW_HOME / "dags"
DAGS_FOLDER.mkdir()
for _dag_file in [
    *(ROOT / "tests" / "integration" / "dags").glob("*.py"),
    *(ROOT / "example_dags").glob("*.py"),
]:
    (DAGS_FOLDER / _dag_file.name).symlink_to(_dag_file)

os.environ.update(
    {
        "AIRFLOW_HOME": str(AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{AIRFLOW_HOME / 'airflow.db'}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
    }
)
# a developer's shell must not change what the tests expect
for _name in [n for n in os.environ if n.startswith("AIRFLOW__ALERTING__") or n.startswith("AIRFLOW_CONN_")]:
    del os.environ[_name]
