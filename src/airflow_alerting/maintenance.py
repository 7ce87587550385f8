"""The ``alerting_maintenance`` DAG: housekeeping that must happen even when nothing fails.

It redelivers the outbox (notifications that could not be delivered when their alert fired,
e.g. during a Slack outage, and deferred incident edits and follow-ups); every alert callback
sweeps the outbox too, but a quiet system has no callbacks.  It sends the digest of
low-severity and silenced incidents, which tell nobody when they happen, with the causes whose
failure rate is rising, and expires stale incident state.

Put one line in a file in your dags folder::

    from airflow_alerting.maintenance import create_maintenance_dag

    dag = create_maintenance_dag()
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow_alerting import metrics

if TYPE_CHECKING:
    from airflow.sdk import DAG

    from airflow_alerting.analytics.results import Trend
    from airflow_alerting.manager import AlertManager

log = logging.getLogger("airflow_alerting")


def redeliver_outbox(limit: int = 200, manager: AlertManager | None = None) -> dict[str, int]:
    """Redeliver due outbox items (and due follow-up summaries); return counts for the task log / XCom.

    :param limit: most items handled in one run
    :param manager: the manager whose store holds the outbox; the configured shared one when omitted
    """
    from airflow_alerting.manager import shared_manager

    manager = manager or shared_manager()
    outcomes = manager.redeliver_outbox(limit=limit)
    delivered = sum(1 for o in outcomes if o.delivery is not None and o.delivery.ok)
    counts = {"attempted": len(outcomes), "delivered": delivered, "still_failing": len(outcomes) - delivered}
    try:
        depth = manager.store.outbox_depth()
    except Exception as err:  # housekeeping: the counts above matter more than the gauge
        log.warning("cannot count the alert outbox: %s", err)
        depth = None
    if depth is not None:
        metrics.gauge("alerting.outbox.depth", depth)
        counts["queued"] = depth
    return counts


def trending_causes(manager: AlertManager) -> list[Trend]:
    """The causes whose failure rate rose in the last hour against the day before, for the digest.

    Never raises: without its history the digest still goes out, without trends.

    :param manager: the manager whose store holds the history (its clock is "now")
    """
    from airflow_alerting.analytics import Analytics
    from airflow_alerting.state.base import StateUnavailableError

    try:
        return Analytics(manager.store).trending(now=manager.clock())
    except StateUnavailableError as err:
        log.warning("cannot read the alert history for trending causes: %s", err)
        return []


def send_digest(manager: AlertManager | None = None) -> dict[str, int]:
    """Send the digest of low-severity and silenced incidents, with the trending causes; return
    counts for the task log / XCom.

    The trends ride on the digest, which is sent when there are incidents to report.

    :param manager: the manager whose store holds the incidents; the configured shared one when omitted
    """
    from airflow_alerting.manager import shared_manager

    manager = manager or shared_manager()
    trends = trending_causes(manager)
    outcomes = manager.digest(trends=trends)
    delivered = sum(1 for o in outcomes if o.delivery is not None and o.delivery.ok)
    log.info("digest: %d trending cause(s) named", len(trends) if outcomes else 0)
    return {"channels": len(outcomes), "delivered": delivered}


def expire_state(manager: AlertManager | None = None) -> dict[str, int]:
    """Apply every retention rule: stale incidents, expired silences, idle throttle and outbox state.

    :param manager: the manager whose store to prune; the configured shared one when omitted
    """
    from airflow_alerting.manager import shared_manager

    return {"records_expired": (manager or shared_manager()).prune()}


#: ``create_maintenance_dag``'s default schedule: ``[alerting] maintenance_schedule``
FROM_CONFIG: Any = object()


def create_maintenance_dag(
    dag_id: str = "alerting_maintenance",
    schedule: Any = FROM_CONFIG,
    *,
    start_date: datetime = datetime(2026, 1, 1),
    manager: AlertManager | None = None,
) -> DAG:
    """Build the maintenance DAG.

    :param dag_id: its id
    :param schedule: cron expression, preset, timetable or ``None`` (manual runs only);
        ``[alerting] maintenance_schedule`` when omitted
    :param start_date: its start date (no catch-up runs are made)
    :param manager: the manager whose store to maintain, when the alerting DAGs use an explicit one
    """
    from airflow.sdk import DAG, task

    if schedule is FROM_CONFIG:
        from airflow_alerting.config import load_settings

        schedule = load_settings().maintenance_schedule

    with DAG(
        dag_id=dag_id,
        description="airflow-provider-alerting housekeeping: redelivery, digest, state expiry",
        schedule=schedule,
        start_date=start_date,
        catchup=False,
        max_active_runs=1,
        tags=["alerting", "maintenance"],
        default_args={"retries": 0, "execution_timeout": timedelta(minutes=10)},
    ) as dag:

        @task(task_id="redeliver_outbox")
        def redeliver() -> dict[str, int]:
            """Deliver what could not be delivered when its alert fired, and due follow-up summaries."""
            return redeliver_outbox(manager=manager)

        @task(task_id="send_digest")
        def digest() -> dict[str, int]:
            """Summarise low-severity and silenced incidents, which tell nobody when they happen,
            and name the causes whose failure rate is rising."""
            return send_digest(manager=manager)

        @task(task_id="expire_state")
        def expire() -> dict[str, int]:
            """Forget incidents resolved (or silent) for longer than the retention."""
            return expire_state(manager=manager)

        redeliver() >> digest() >> expire()
    return dag
