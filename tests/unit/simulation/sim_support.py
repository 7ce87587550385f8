"""Events shared by the simulation tests (imported as a plain module: test folders are not packages)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow_alerting.simulation import FailureEvent

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=timezone.utc)
OUTAGE = "could not connect to server: Connection refused (host db-{n}.internal)"


def outage_events(count: int = 5, dags: int = 3) -> list[FailureEvent]:
    """``count`` failures of one cause across ``dags`` DAGs, 20 s apart, then an unrelated one."""
    events = [
        FailureEvent(
            time=T0 + timedelta(seconds=20 * i),
            dag_id=f"dag_{i % dags}",
            task_id=f"t{i}",
            exception_type="psycopg2.OperationalError",
            message=OUTAGE.format(n=i),
        )
        for i in range(count)
    ]
    events.append(
        FailureEvent(
            time=T0 + timedelta(minutes=3),
            dag_id="other",
            task_id="x",
            exception_type="KeyError",
            message="'id'",
        )
    )
    return events
