"""Exact incidents under real concurrency: processes, not threads.

``N`` processes (``ALERTING_INCIDENT_PROCS``, default 16) each join ``OCCURRENCES`` failures of one
correlation key at once, cycling over 40 task instances spread over 8 DAGs: exactly one incident
must open, with every count exact.  Then the same processes recover every member at once (half by
task success, half by DAG success): exactly one of them must get the incident back as resolved.

Processes are started with ``forkserver``: each child is forked from a clean server process that
imported this module once, so it builds its store and engine from scratch, as a separate worker
host would, without paying ~3 s of imports per child on a busy 2-core machine (``spawn`` would).
Each child runs both phases.  The
database helpers (and their skip / ``CI=true`` rules) are those of ``test_sql_claim_concurrency``.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from multiprocessing.synchronize import Barrier, Event
from pathlib import Path
from typing import Any

import pytest
from test_sql_claim_concurrency import MARIADB_URL, POSTGRES_URL, require_server

from airflow_alerting.incidents.lifecycle import IncidentRules
from airflow_alerting.incidents.model import IncidentState, Occurrence
from airflow_alerting.model import Severity
from airflow_alerting.state.sql import SqlStore

pytestmark = pytest.mark.integration

PROCESSES = int(os.environ.get("ALERTING_INCIDENT_PROCS", "16"))
OCCURRENCES = 25
MEMBERS = 40
DAGS = 8
KEY = "cause:OperationalError: could not connect to server"
RULES = IncidentRules(window=timedelta(hours=1), blast_radius_dags=5, blast_radius_tasks=0)
CONTEXT = multiprocessing.get_context("forkserver")
#: seconds a phase may take
PHASE_TIMEOUT = 600
#: imported by the fork server (a module that fails to import is skipped)
PRELOAD = (
    "sqlalchemy",
    "sqlalchemy.dialects.sqlite.pysqlite",
    "sqlalchemy.dialects.postgresql.psycopg2",
    "sqlalchemy.dialects.mysql.pymysql",
    "psycopg2",
    "pymysql",
)


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'incidents.db'}"
    url = POSTGRES_URL if request.param == "postgresql" else MARIADB_URL
    require_server(url)
    return url


@pytest.fixture
def store(db_url: str) -> Iterator[SqlStore]:
    store = SqlStore(url=db_url, table_prefix=f"n{uuid.uuid4().hex[:10]}_")
    store.create_tables()
    yield store
    store.drop_tables()


def member(index: int) -> tuple[str, str]:
    """The dag and task of member ``index``: 40 tasks, 5 in each of 8 DAGs."""
    return f"dag_{index % DAGS}", f"task_{index:02d}"


def now() -> datetime:
    return datetime.now(timezone.utc)


def worker(queue: Any, index: int, url: str, prefix: str, barrier: Barrier, go: Event) -> None:
    """Join this process's share of the failures, then (once the parent says so) recover them all."""
    try:
        store = SqlStore(url=url, table_prefix=prefix)
        store.incident("warm-up")  # connected, tables found: the race starts at the barrier
        barrier.wait(timeout=PHASE_TIMEOUT)
        joins = []
        for number in range(OCCURRENCES):
            dag_id, task_id = member((index * OCCURRENCES + number) % MEMBERS)
            occurrence = Occurrence(
                key=KEY,
                title="OperationalError: could not connect to server",
                dag_id=dag_id,
                task_id=task_id,
                map_index=-1,
                run_id=f"run-{index}-{number}",
                severity=Severity.HIGH,
                at=now(),
            )
            joined = store.join_incident(occurrence, RULES)
            joins.append((joined.incident.id, joined.opened, joined.new_member, joined.raised))
        queue.put(("joined", index, joins))

        if not go.wait(timeout=PHASE_TIMEOUT):
            return
        barrier.wait(timeout=PHASE_TIMEOUT)
        order = random.Random(index).sample(range(MEMBERS), MEMBERS)
        resolved: list[str] = []
        if index % 2 == 0:
            for number in order:
                dag_id, task_id = member(number)
                resolved += [i.id for i in store.recover_members(dag_id, task_id, -1, now=now())]
        else:
            for dag in random.Random(index).sample(range(DAGS), DAGS):
                resolved += [i.id for i in store.recover_members(f"dag_{dag}", None, -1, now=now())]
        queue.put(("recovered", index, resolved))
    except BaseException as exc:  # reported to the parent, which fails the test with it
        barrier.abort()
        queue.put(("error", index, f"process {index}: {exc!r}"))


def race(barrier: Barrier) -> None:
    """Wait with the children; a child that failed broke the barrier, and ``collect`` reports why."""
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait(timeout=PHASE_TIMEOUT)


def collect(queue: Any, phase: str, count: int) -> dict[int, Any]:
    results: dict[int, Any] = {}
    while len(results) < count:
        kind, index, payload = queue.get(timeout=PHASE_TIMEOUT)
        assert kind == phase, payload
        results[index] = payload
    return results


@pytest.mark.timeout(1800)
def test_concurrent_joins_and_recoveries_are_exact(
    store: SqlStore, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    queue = CONTEXT.Queue()
    # the parent waits at the barrier too, to time the start and the races apart
    barrier, go = CONTEXT.Barrier(PROCESSES + 1), CONTEXT.Event()
    processes = [
        CONTEXT.Process(target=worker, args=(queue, index, db_url, store.table_prefix, barrier, go))
        for index in range(PROCESSES)
    ]
    # the server imports these once (if this test starts it) and children are forked from it: the
    # store imports SQLAlchemy and the driver lazily, which would cost every child seconds of CPU
    CONTEXT.set_forkserver_preload([__name__, *PRELOAD])
    started = time.perf_counter()
    for process in processes:
        process.start()
    try:
        race(barrier)
        starting = time.perf_counter() - started
        joined = collect(queue, "joined", PROCESSES)
        joining = time.perf_counter() - started - starting

        joins = [join for index in sorted(joined) for join in joined[index]]
        assert len(joins) == PROCESSES * OCCURRENCES
        assert len({incident_id for incident_id, *_ in joins}) == 1
        assert sum(opened for _, opened, _, _ in joins) == 1
        assert sum(new for _, _, new, _ in joins) == MEMBERS
        assert sum(raised for *_, raised in joins) == 1  # the join that brought the 5th DAG

        [incident] = store.incidents()
        assert incident.failures == PROCESSES * OCCURRENCES
        counts = (incident.member_count, incident.failing_count, incident.task_count, incident.dag_count)
        assert counts == (MEMBERS, MEMBERS, MEMBERS, DAGS)
        assert incident.dag_ids == tuple(f"dag_{d}" for d in range(DAGS))
        assert incident.severity is Severity.CRITICAL
        assert incident.severity_reasons == ("blast radius: 5 DAGs affected, raised to critical",)
        failures: Counter[tuple[str, str]] = Counter(
            member((index * OCCURRENCES + number) % MEMBERS)
            for index in range(PROCESSES)
            for number in range(OCCURRENCES)
        )
        stored = member_failures(db_url, store.table_prefix, incident.id)
        assert stored == dict(failures) and len(stored) == MEMBERS

        go.set()
        race(barrier)
        recovering = time.perf_counter()
        recovered = collect(queue, "recovered", PROCESSES)
        recovery = time.perf_counter() - recovering
        resolved = [incident_id for index in sorted(recovered) for incident_id in recovered[index]]
        assert resolved == [incident.id]  # exactly one caller, exactly once
        final = store.incident(incident.id)
        assert final is not None and final.state is IncidentState.RESOLVED
        assert (final.resolved_by, final.failing_count, final.member_count) == ("recovery", 0, MEMBERS)
        assert all(not m.failing for m in final.members)
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()

    backend = store.describe().split(":", 1)[0]
    with capsys.disabled():
        print(
            f"\n[incident concurrency] {backend}: {PROCESSES} processes started in {starting:.1f} s; "
            f"x {OCCURRENCES} joins in {joining:.1f} s ({joining / PROCESSES / OCCURRENCES * 1000:.0f} ms "
            f"per join); all recovering in {recovery:.1f} s"
        )


def member_failures(url: str, prefix: str, incident_id: str) -> dict[tuple[str, str], int]:
    """Every member's failure count, read from the table (the snapshot carries a sample)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        table = sa.Table(f"{prefix}incident_member", sa.MetaData(), autoload_with=engine)
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(table.c.dag_id, table.c.task_id, table.c.failures).where(
                    table.c.incident_id == incident_id
                )
            ).all()
    finally:
        engine.dispose()
    return {(row.dag_id, row.task_id): int(row.failures) for row in rows}
