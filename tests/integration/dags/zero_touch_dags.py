"""DAGs for tests/integration/test_zero_touch.py: no alerting of their own, or their own callbacks.

Zero-touch mode (``[alerting] zero_touch``) is off for every other test, so these DAGs never alert
there.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, task

from airflow_alerting import AlertNotifier

#: the file the teams' own callbacks append to (set by the test; unset, they record nothing)
MARKER_ENV = "ZERO_TOUCH_MARKER"


def team_callback(context: Any) -> None:
    """A team's own, non-alerting failure callback: zero-touch must keep it."""
    marker = os.environ.get(MARKER_ENV)
    if marker:
        ti = context.get("ti")
        where = f"{context['dag'].dag_id}.{ti.task_id}" if ti is not None else context["dag"].dag_id
        with Path(marker).open("a", encoding="utf-8") as out:
            out.write(f"team_callback {where}\n")


def _dag(dag_id: str, **kwargs: Any) -> DAG:
    return DAG(dag_id=dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False, **kwargs)


with _dag("zero_touch_plain"):

    @task
    def extract() -> None:
        raise PermissionError("permission denied for table warehouse.customers")

    extract()


with _dag("zero_touch_own_callbacks", on_failure_callback=team_callback):

    @task(on_failure_callback=team_callback)
    def publish() -> None:
        raise PermissionError("permission denied for bucket reports")

    publish()


own_alerts = AlertNotifier(title="own notifier {{ ti.task_id }}")

with _dag("zero_touch_own_notifier", on_failure_callback=[own_alerts]):

    @task(on_failure_callback=[own_alerts], on_success_callback=[team_callback])
    def report() -> None:
        raise PermissionError("permission denied for schema finance")

    report()


with _dag("zero_touch_opted_out", tags=["alerting:off"]):

    @task
    def scratch() -> None:
        raise PermissionError("permission denied for sandbox")

    scratch()
