"""DAGs for the distributed deployment test: 24 mapped tasks that fail together, one root cause.

Every mapped instance waits at a file barrier until all of them are running (and, if the run's
conf has ``not_before``, until that Unix time), then raises the same ``ConnectionError``, so
their failure callbacks race on the same incident (and fingerprint) from two Celery workers.  A second failure
callback, placed after the ``AlertNotifier``, writes a marker file holding what the notifier
decided in this process; the harness waits for all markers, so it knows every alert callback
has finished (the run is "failed" before its callbacks are done).

Settings come from the environment the harness gives every Airflow component:

``ALERTING_DEPLOY_SYNC_DIR``
    the directory for barrier and marker files (shared by all processes on this machine)
``ALERTING_DEPLOY_TABLE_PREFIX``
    the SQL state store's table prefix, unique per deployment
``ALERTING_DEPLOY_WIDTH``
    how many mapped instances (24)
``ALERTING_DEPLOY_UPDATE_INTERVAL``
    ``incidents.update_interval``, in seconds, of the ``alerting_deploy_sql`` DAG's policy: at most
    one in-place Slack edit per incident in that interval; the held-back final state is a deferred
    edit in the outbox, due that long after the first failure held back, which the
    ``alerting_deploy_maintenance`` DAG (built on the same manager) delivers
``ALERTING_DEPLOY_WORKER``
    set per Celery worker (``w1``, ``w2``); recorded in the markers
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.sdk import dag, task

from airflow_alerting import AlertManager, AlertNotifier, AlertPolicy
from airflow_alerting.maintenance import create_maintenance_dag
from airflow_alerting.state.sql import SqlStore
from airflow_alerting.state.variables import VariableStore

SYNC_DIR = Path(os.environ.get("ALERTING_DEPLOY_SYNC_DIR", "/tmp/alerting-deploy-sync"))
TABLE_PREFIX = os.environ.get("ALERTING_DEPLOY_TABLE_PREFIX", "alerting_")
WIDTH = int(os.environ.get("ALERTING_DEPLOY_WIDTH", "24"))
UPDATE_INTERVAL = float(os.environ.get("ALERTING_DEPLOY_UPDATE_INTERVAL", "30"))
#: the connection of the SQL state store (``AIRFLOW_CONN_ALERTING_STATE``)
STATE_CONN_ID = "alerting_state"
#: how long an instance waits for the others at the barrier before failing anyway
BARRIER_TIMEOUT = 180.0
ROOT_CAUSE = "database db-main.internal:5432 refused connection"


def run_dir(run_id: str) -> Path:
    """The barrier and marker directory of one DAG run."""
    return SYNC_DIR / run_id


def _wait_for_everyone(arrived: Path, not_before: float) -> None:
    deadline = time.monotonic() + BARRIER_TIMEOUT
    while sum(1 for _ in arrived.iterdir()) < WIDTH and time.monotonic() < deadline:
        time.sleep(0.01)
    while time.time() < not_before:
        time.sleep(0.01)


def _marker_callback(notifier: AlertNotifier) -> Any:
    """A failure callback recording ``notifier``'s outcome in this process (it runs after it)."""

    def write_marker(context: dict[str, Any]) -> None:
        ti = context["ti"]
        outcome = notifier.last_outcome
        record = {
            "map_index": ti.map_index,
            "hostname": ti.hostname,
            "worker": os.environ.get("ALERTING_DEPLOY_WORKER"),
            "pid": os.getpid(),
            "finished_at": time.time(),
            "fingerprint": outcome.fingerprint if outcome else None,
            "incident": outcome.incident.id if outcome and outcome.incident else None,
            # the incident's failure count as this callback saw it, right after joining
            "incident_failures": outcome.incident.failures if outcome and outcome.incident else None,
            "severity": outcome.severity.label if outcome else None,
            "escalation": outcome.escalation.describe() if outcome and outcome.escalation else None,
            "channels": [
                {
                    "channel": item.channel,
                    "send": item.decision.send,
                    "reason": item.decision.reason.value,
                    "delivered": item.delivery.ok if item.delivery is not None else None,
                    "suppressed_count": item.decision.suppressed.count,
                }
                for item in (outcome.channels if outcome else ())
            ],
        }
        done = run_dir(ti.run_id) / "done"
        done.mkdir(parents=True, exist_ok=True)
        partial = done / f".{ti.map_index}.tmp"
        partial.write_text(json.dumps(record))
        partial.rename(done / f"{ti.map_index}.json")  # atomic: the harness never reads half a file

    return write_marker


def _storm_dag(dag_id: str, manager: AlertManager, description: str) -> None:
    notifier = AlertNotifier(manager=manager)

    @dag(
        dag_id=dag_id,
        description=description,
        schedule=None,
        start_date=datetime(2024, 1, 1),
        catchup=False,
        max_active_runs=1,
        max_active_tasks=WIDTH,
        tags=["alerting-deployment-test"],
    )
    def storm() -> None:
        @task(retries=0, on_failure_callback=[notifier, _marker_callback(notifier)])
        def call_database(shard: int, **context: Any) -> None:
            directory = run_dir(context["ti"].run_id)
            arrived, raised = directory / "arrived", directory / "raised"
            arrived.mkdir(parents=True, exist_ok=True)
            raised.mkdir(parents=True, exist_ok=True)
            (arrived / str(shard)).touch()
            conf = context["dag_run"].conf or {}
            _wait_for_everyone(arrived, float(conf.get("not_before", 0)))
            (raised / str(shard)).write_text(repr(time.time()))
            raise ConnectionError(ROOT_CAUSE)

        call_database.expand(shard=list(range(WIDTH)))

    storm()


# Default policies (escalation after 3 runs within 1 h: the mapped instances of one run are one
# occurrence; failures correlate by cause into one incident within 30 min), except for the edit
# interval the tests wait for.
SQL_MANAGER = AlertManager(
    AlertPolicy.from_dict({"incidents": {"update_interval": UPDATE_INTERVAL}}),
    store=SqlStore(STATE_CONN_ID, table_prefix=TABLE_PREFIX),
)

_storm_dag(
    "alerting_deploy_sql",
    SQL_MANAGER,
    "Exact SQL state store (PostgreSQL): one incident, one Slack message, edited in place.",
)
_storm_dag(
    "alerting_deploy_variables",
    AlertManager(AlertPolicy(), store=VariableStore()),
    "Best-effort Variables state store, default policy.",
)
# manual runs only: the test triggers it once the SQL storm's deferred edit is due
maintenance = create_maintenance_dag(dag_id="alerting_deploy_maintenance", schedule=None, manager=SQL_MANAGER)
