"""custom_alerting_dag: one run exercises every row of the routing matrix.

Each task fails the way real pipelines fail, and the default policy routes it:

================================  =========================================  ==================
task                              failure                                    default routing
================================  =========================================  ==================
``extract_orders_api``            transient ``ConnectionError``, 2 retries   retries: low (not
                                                                             sent); final:
                                                                             medium -> Slack
``validate_orders``               data-quality check                         medium -> Slack
``load_warehouse``                ``PermissionError``                        high -> email+Slack
``charge_customers``              business-critical (``business_impact``)    critical -> email+
                                                                             Slack+PagerDuty
``refresh_cache``                 fails once, succeeds on its retry          low (recorded)
================================  =========================================  ==================

Trigger it again with ``{"recover": true}``: ``load_warehouse`` and ``charge_customers``
succeed, which resolves their open alerts (PagerDuty incident resolved, Slack and email
told), while the repeated failures of the others fall inside their throttle windows and
are counted instead of sent.  A third run within the hour escalates the failures that
keep recurring one severity level, and their message reports what was suppressed.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param, get_current_context, task

from airflow_alerting import AlertNotifier

# One notifier shared by every callback and the DAG-level callback: the policy comes from
# the [alerting] config (defaults: the routing matrix in docs/routing.md).
alerts = AlertNotifier()


def _recovering() -> bool:
    return bool(get_current_context()["params"].get("recover"))


with DAG(
    dag_id="custom_alerting_dag",
    description="Shows classification, routing, throttling and resolution of alerts",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["example", "alerting"],
    params={"recover": Param(False, type="boolean", description="make the failing tasks succeed")},
    default_args={
        "owner": "data-platform",
        "email": ["data-oncall@example.test"],
        "retries": 0,
        # our notifier sends the emails; Airflow's stock failure email would duplicate them
        "email_on_failure": False,
        "email_on_retry": False,
        "on_failure_callback": [alerts],
        "on_retry_callback": [alerts],
        "on_success_callback": [alerts],
    },
    on_failure_callback=[alerts],
) as dag:

    @task(retries=2, retry_delay=timedelta(seconds=0))
    def extract_orders_api() -> None:
        """The orders API is down: every try is refused, so the retries run out."""
        attempt = get_current_context()["ti"].try_number
        raise ConnectionError(
            f"Connection refused by orders-api-{attempt}.internal:443 after {25 + attempt}s"
        )

    @task
    def validate_orders() -> None:
        """A data-quality check on today's partition."""
        raise ValueError("data quality check failed: 17 rows with null customer_id in orders_2026_11_27")

    @task
    def load_warehouse() -> None:
        """The warehouse role lost its grant."""
        if _recovering():
            return
        raise PermissionError("permission denied for table analytics.orders (role etl_writer)")

    @task(params={"business_impact": "critical"})
    def charge_customers() -> None:
        """Business-critical: customers are not charged until this succeeds."""
        if _recovering():
            return
        raise RuntimeError("payment batch 8812 rejected by ledger: balance mismatch of 1204.55 EUR")

    @task
    def send_invoices() -> None:
        """Waits for charge_customers (counted as blocked downstream work)."""
        print("invoices sent")

    @task(retries=1, retry_delay=timedelta(seconds=0))
    def refresh_cache() -> None:
        """Flaky: times out on the first try, succeeds on the retry."""
        if get_current_context()["ti"].try_number == 1:
            raise TimeoutError("cache warm-up timed out after 30s on redis-2")

    extract_orders_api()
    validate_orders()
    load_warehouse()
    charge_customers() >> send_invoices()
    refresh_cache()
