"""DAGs used by the integration tests: one failure mode each, all alerting through AlertNotifier."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, get_current_context, task

from airflow_alerting import AlertNotifier

alerts = AlertNotifier()


def _scenario(dag_id: str, notifier: AlertNotifier = alerts) -> DAG:
    return DAG(
        dag_id=dag_id,
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        default_args={
            "owner": "itest",
            "email_on_failure": False,
            "email_on_retry": False,
            "on_failure_callback": [notifier],
            "on_retry_callback": [notifier],
            "on_success_callback": [notifier],
        },
    )


with _scenario("scenario_critical"):

    @task(params={"business_impact": "critical"})
    def charge() -> None:
        if get_current_context()["params"].get("recover"):
            return
        raise RuntimeError("ledger rejected batch 4411")

    charge()

with _scenario("scenario_high"):

    @task
    def load() -> None:
        raise PermissionError("permission denied for table analytics.orders")

    load()

with _scenario("scenario_medium"):

    @task
    def validate() -> None:
        raise ValueError("data quality check failed: 17 rows with null customer_id")

    validate()

with _scenario("scenario_retry_recovers"):

    @task(retries=2, retry_delay=timedelta(seconds=0))
    def flaky() -> None:
        if get_current_context()["ti"].try_number < 3:
            raise ConnectionError("connection refused by api-7.internal")

    flaky()

with _scenario("scenario_retries_exhausted"):

    @task(retries=2, retry_delay=timedelta(seconds=0))
    def extract() -> None:
        attempt = get_current_context()["ti"].try_number
        raise ConnectionError(f"connection refused by api-{attempt}.internal after {20 + attempt}s")

    extract()

# one notifier instance with a title template shared by two tasks: each alert must carry
# its own task's values (Airflow renders notifier templates in place unless we copy)
titled = AlertNotifier(title="{{ ti.task_id }} broke in {{ dag.dag_id }}")

with _scenario("scenario_shared_title", notifier=titled):

    @task
    def first_task() -> None:
        raise PermissionError("permission denied: first")

    @task
    def second_task() -> None:
        raise PermissionError("permission denied: second")

    first_task()
    second_task()

with _scenario("scenario_secret_leak"):

    @task
    def leaky() -> None:
        raise RuntimeError(
            "cannot connect to postgresql://etl:Sup3rS3cret@db.internal:5432/prod "
            "<!channel> <@U123> {{ 7 * 7 }} <script>alert(1)</script>"
        )

    leaky()
