"""``VariableStore`` incidents under real concurrency: racing workers converge on one incident per key.

Two levels, both through Airflow's own ``Variable`` model:

- threads, each its own store (its own writer), joining failures of one correlation key at once on
  the session's migrated metadata database;
- separate worker processes alerting one storm through ``AlertManager`` on a fresh PostgreSQL
  metadata database (``tests/deployment/variables_storm.py``, what ``bench/variables_duplicate_rate.py``
  measures at 16 processes), skipped without PostgreSQL on 127.0.0.1 (failed under ``CI=true``).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from airflow_alerting.incidents.lifecycle import IncidentRules
from airflow_alerting.incidents.model import IncidentJoin, IncidentState, Occurrence, new_incident_id
from airflow_alerting.model import Severity
from airflow_alerting.state.variables import VariableStore

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from deployment.variables_storm import postgres_unavailable, storm_workers

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
RULES = IncidentRules(window=timedelta(hours=1), blast_radius_dags=0, blast_radius_tasks=0)
KEY = "cause:ConnectionError: could not connect to server"
THREADS = 8
PROCESSES = int(os.environ.get("ALERTING_VARIABLES_STORM_PROCS", "6"))
STORMS = 2


@pytest.fixture
def clean(airflow_db: Path) -> Iterator[None]:
    from airflow.models import Variable
    from airflow.utils.session import create_session

    def forget() -> None:
        with create_session() as session:
            session.query(Variable).filter(Variable.key.like("alerting.%")).delete(synchronize_session=False)

    forget()
    yield
    forget()


def failure(index: int) -> Occurrence:
    return Occurrence(
        key=KEY,
        title="ConnectionError: could not connect to server",
        dag_id="etl",
        task_id="load",
        map_index=index,
        run_id="storm",
        severity=Severity.HIGH,
        at=T0,
    )


def test_racing_threads_join_one_incident_with_every_failure_counted_and_indexed(clean: None) -> None:
    workers = [VariableStore() for _ in range(THREADS)]
    start = threading.Barrier(THREADS)
    joins: dict[int, IncidentJoin] = {}
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            start.wait(timeout=60)
            joins[index] = workers[index].join_incident(failure(index), RULES)
            workers[index]._index_new_keys()  # what the end of an alert does
        except BaseException as err:  # reported below: a thread's exception is otherwise lost
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    expected = new_incident_id(KEY, T0)
    assert {j.incident.id for j in joins.values()} == {expected}
    reader = VariableStore(verify_delay=0)
    (incident,) = reader.incidents(states=[IncidentState.OPEN])
    assert incident.id == expected and incident.failures == THREADS
    index: dict[str, Any] = reader._dag_index("etl")
    assert sorted(index[expected]) == sorted(f"etl.load[{i}]" for i in range(THREADS))


def test_processes_alerting_one_storm_open_one_incident_and_post_once_at_least() -> None:
    reason = postgres_unavailable()
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"the Variables storm must run in CI: {reason}")
        pytest.skip(reason)
    with storm_workers(PROCESSES) as workers:
        storms = [workers.storm() for _ in range(STORMS)]

    for storm in storms:
        assert storm.width == PROCESSES
        # one root cause: every process joined the same incident, and the store lists only it
        assert (storm.incidents, storm.stored_incidents) == (1, 1), storm
        # a lost alert is an incident; duplicates are measured by the benchmark, not bounded here
        assert storm.posts >= 1, storm
        assert storm.decisions.get("sent/first", 0) >= 1, storm
