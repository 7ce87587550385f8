"""DAGs for the incident lifecycle tests: one critical task that fails with a configurable cause.

The task raises ``RuntimeError(params["message"])`` unless ``recover`` is true (params and run
conf both work, since run conf overrides params).  The ``tier:1`` tag makes every failure
critical, so it routes to Slack (Web API), e-mail and PagerDuty under the default matrix.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param, get_current_context, task

from airflow_alerting import AlertNotifier

alerts = AlertNotifier()

# one DAG per id the tests need; the messages differ only in host and port, which the
# cause signature normalises away, so all of them correlate into one incident
INCIDENT_DAGS = {
    "incident_solo": "ledger db-3.internal:5432 rejected batch",
    "incident_dag_a": "ledger db-3.internal:5432 rejected batch",
    "incident_dag_b": "ledger db-17.internal:6432 rejected batch",
}


def _incident_dag(dag_id: str, message: str) -> DAG:
    with DAG(
        dag_id=dag_id,
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        tags=["tier:1"],
        params={"recover": Param(False, type="boolean"), "message": Param(message, type="string")},
        default_args={
            "owner": "itest",
            "email_on_failure": False,
            "email_on_retry": False,
            "on_failure_callback": [alerts],
            "on_success_callback": [alerts],
        },
    ) as dag:

        @task
        def post_ledger() -> None:
            params = get_current_context()["params"]
            if params.get("recover"):
                return
            raise RuntimeError(params["message"])

        post_ledger()
    return dag


for _dag_id, _message in INCIDENT_DAGS.items():
    globals()[_dag_id] = _incident_dag(_dag_id, _message)
