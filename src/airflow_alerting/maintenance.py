"""The ``alerting_maintenance`` DAG: housekeeping that must happen even when nothing fails.

Today it redelivers the outbox (notifications that could not be delivered when their alert
fired, e.g. during a Slack outage); every alert callback sweeps the outbox too, but a quiet
system has no callbacks.  It is also the home for later housekeeping (digests, state expiry).

Put one line in a file in your dags folder::

    from airflow_alerting.maintenance import create_maintenance_dag

    dag = create_maintenance_dag()
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import DAG


def redeliver_outbox(limit: int = 200) -> dict[str, int]:
    """Redeliver due outbox items with the shared manager; return counts for the task log / XCom.

    :param limit: most items handled in one run
    """
    from airflow_alerting.manager import shared_manager

    outcomes = shared_manager().redeliver_outbox(limit=limit)
    delivered = sum(1 for o in outcomes if o.delivery is not None and o.delivery.ok)
    return {"attempted": len(outcomes), "delivered": delivered, "still_failing": len(outcomes) - delivered}


def create_maintenance_dag(
    dag_id: str = "alerting_maintenance",
    schedule: Any = None,
    *,
    start_date: datetime = datetime(2026, 1, 1),
) -> DAG:
    """Build the maintenance DAG.

    :param dag_id: its id
    :param schedule: cron expression, preset or timetable; ``[alerting] maintenance_schedule`` when omitted
    :param start_date: its start date (no catch-up runs are made)
    """
    from airflow.sdk import DAG, task

    if schedule is None:
        from airflow_alerting.config import load_settings

        schedule = load_settings().maintenance_schedule

    with DAG(
        dag_id=dag_id,
        description="airflow-provider-alerting housekeeping: redelivers alerts that could not be delivered",
        schedule=schedule,
        start_date=start_date,
        catchup=False,
        max_active_runs=1,
        tags=["alerting", "maintenance"],
        default_args={"retries": 0, "execution_timeout": timedelta(minutes=10)},
    ) as dag:
        task(task_id="redeliver_outbox")(redeliver_outbox)()
    return dag
