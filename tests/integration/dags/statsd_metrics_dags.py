"""DAG for tests/integration/test_statsd_metrics.py: one high-severity failure, alerted by AlertNotifier."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, task

from airflow_alerting import AlertNotifier

alerts = AlertNotifier()

with DAG(
    dag_id="statsd_metrics_failure",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    default_args={"on_failure_callback": [alerts], "on_success_callback": [alerts]},
):

    @task
    def load() -> None:
        raise PermissionError("permission denied for table metrics.orders")

    load()
