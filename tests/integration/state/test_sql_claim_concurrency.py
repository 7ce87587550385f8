"""Exactly one winner per claim under real concurrency: processes, not threads.

``N`` processes (``ALERTING_CLAIM_PROCS``, default 32) claim the same key in each of ``R``
rounds (``ALERTING_CLAIM_ROUNDS``, default 200), released together by a barrier, with the
database's clock as in production.  Every round must have exactly one sender, and every
other process must be told the alert is in flight and counted as suppressed.

Processes are started with ``fork``: that is how Airflow's LocalExecutor and Celery's prefork
pool start the workers that run our callbacks, after the parent imported DAG files and possibly
used a store; forking from a parent that already holds an engine also exercises the store's
"new engine after fork" rule.  (``spawn`` would cost ~0.5 s of imports per process on the
2-core CI machines, ~15 s per database for 32 processes, and test a start-up path Airflow
workers do not take.)
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import pytest

from airflow_alerting.model import DecisionReason, Severity
from airflow_alerting.state.sql import SqlStore

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(sys.platform == "win32", reason="fork start method"),
]

PROCESSES = int(os.environ.get("ALERTING_CLAIM_PROCS", "32"))
ROUNDS = int(os.environ.get("ALERTING_CLAIM_ROUNDS", "200"))
POSTGRES_URL = os.environ.get(
    "ALERTING_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)
MARIADB_URL = os.environ.get("ALERTING_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
WINDOW = timedelta(hours=1)
CONTEXT = multiprocessing.get_context("fork")


def require_server(url: str) -> None:
    """Skip (or, in CI, fail) when the database server behind ``url`` does not answer."""
    import sqlalchemy as sa

    engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as exc:
        where = engine.url.render_as_string(hide_password=True)
        reason = f"{where} unreachable: {getattr(exc, 'orig', None) or exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: the database tests must run)")
        pytest.skip(reason)
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'claims.db'}"
    url = POSTGRES_URL if request.param == "postgresql" else MARIADB_URL
    require_server(url)
    return url


@pytest.fixture
def store(db_url: str) -> Iterator[SqlStore]:
    store = SqlStore(url=db_url, table_prefix=f"c{uuid.uuid4().hex[:10]}_", use_database_clock=True)
    # created by the parent, so the children inherit an engine they must not use
    store.create_tables()
    yield store
    store.drop_tables()


def now() -> datetime:
    return datetime.now(timezone.utc)


def run_processes(count: int, target: Callable[..., None], *args: Any, timeout: float) -> list[Any]:
    """Run ``target(queue, index, *args)`` in ``count`` forked processes; return what each put."""
    queue = CONTEXT.Queue()
    processes = [CONTEXT.Process(target=target, args=(queue, index, *args)) for index in range(count)]
    for process in processes:
        process.start()
    try:
        results = [queue.get(timeout=timeout) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
    failures = [r for r in results if isinstance(r, str)]
    assert not failures, failures
    return results


def claim_rounds(queue: Any, index: int, store: SqlStore, barrier: Barrier, rounds: int, tag: str) -> None:
    try:
        outcomes = []
        for number in range(rounds):
            barrier.wait(timeout=120)
            claim = store.claim(
                f"{tag}-round-{number}",
                "chat",
                now=now(),
                window=WINDOW,
                severity=Severity.HIGH,
                escalated=False,
                source=f"dag.worker_{index}",
                lease=timedelta(minutes=10),
            )
            outcomes.append(
                (number, claim.decision.send, claim.decision.reason, claim.decision.suppressed.count)
            )
        queue.put(outcomes)
    except BaseException as exc:  # reported to the parent, which fails the test with it
        barrier.abort()
        queue.put(f"process {index}: {exc!r}")


@pytest.mark.timeout(1800)  # the full 32 x 200 takes minutes on a 2-core machine
def test_exactly_one_winner_per_round(
    store: SqlStore, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    tag = uuid.uuid4().hex[:8]
    barrier = CONTEXT.Barrier(PROCESSES)
    started = time.perf_counter()
    results = run_processes(PROCESSES, claim_rounds, store, barrier, ROUNDS, tag, timeout=1800)
    elapsed = time.perf_counter() - started

    winners: Counter[int] = Counter()
    running_counts: dict[int, list[int]] = {number: [] for number in range(ROUNDS)}
    for outcomes in results:
        assert len(outcomes) == ROUNDS
        for number, sent, reason, count in outcomes:
            if sent:
                winners[number] += 1
                assert reason is DecisionReason.FIRST
            else:
                assert reason is DecisionReason.IN_FLIGHT
                running_counts[number].append(count)
    assert [winners[number] for number in range(ROUNDS)] == [1] * ROUNDS
    # every held-back claim was counted exactly once, one after another: 1, 2, ... N-1
    for number in range(ROUNDS):
        assert sorted(running_counts[number]) == list(range(1, PROCESSES)), number
    for number in range(ROUNDS):
        state = store.channel_state(f"{tag}-round-{number}", "chat")
        assert state is not None and state.suppressed.count == PROCESSES - 1

    backend = store.describe().split(":", 1)[0]
    with capsys.disabled():
        print(
            f"\n[claim concurrency] {backend}: {PROCESSES} processes x {ROUNDS} rounds in {elapsed:.1f} s "
            f"({elapsed / ROUNDS * 1000:.0f} ms per round)"
        )


def claim_once(
    queue: Any, _index: int, store: SqlStore, fingerprint: str, lease: timedelta, die: bool
) -> None:
    try:
        claim = store.claim(
            fingerprint,
            "chat",
            now=now(),
            window=WINDOW,
            severity=Severity.HIGH,
            escalated=False,
            source="dag.task",
            lease=lease,
        )
        queue.put((claim.decision.send, claim.decision.reason, claim.decision.suppressed.count))
    except BaseException as exc:
        queue.put(f"claim failed: {exc!r}")
    if die:
        # hand the result to the parent first: the queue's feeder thread dies with the process
        queue.close()
        queue.join_thread()
        # a worker killed mid-delivery: no confirm, no release, no clean-up of any kind
        os._exit(0)


def test_a_crashed_senders_lease_expires(store: SqlStore) -> None:
    # long enough that forking the next process cannot outlast it on a loaded machine
    fingerprint, lease = f"crash-{uuid.uuid4().hex[:8]}", timedelta(seconds=3)
    [crashed] = run_processes(1, claim_once, store, fingerprint, lease, True, timeout=60)
    assert crashed == (True, DecisionReason.FIRST, 0)

    [blocked] = run_processes(1, claim_once, store, fingerprint, lease, False, timeout=60)
    assert blocked == (False, DecisionReason.IN_FLIGHT, 1)  # held back, and counted

    time.sleep(lease.total_seconds() + 0.3)
    # several workers race for the expired claim: the roll-back and the new claim stay exact
    results = run_processes(4, claim_once, store, fingerprint, lease, False, timeout=60)
    winners = [r for r in results if r[0]]
    # never delivered, so "first" again, carrying the blocked occurrence
    assert winners == [(True, DecisionReason.FIRST, 1)]
    # the others are counted one by one against the new claim: running counts 1, 2, 3
    assert sorted(r for r in results if not r[0]) == [(False, DecisionReason.IN_FLIGHT, n) for n in (1, 2, 3)]


def create_tables(queue: Any, _index: int, url: str, prefix: str, barrier: Barrier) -> None:
    try:
        barrier.wait(timeout=60)
        queue.put(SqlStore(url=url, table_prefix=prefix).create_tables())
    except BaseException as exc:
        queue.put(f"create_tables failed: {exc!r}")


def test_processes_racing_to_create_the_tables(db_url: str) -> None:
    prefix = f"r{uuid.uuid4().hex[:10]}_"
    count = 6
    try:
        results = run_processes(count, create_tables, db_url, prefix, CONTEXT.Barrier(count), timeout=120)
        assert all(names == results[0] for names in results) and len(results[0]) == 9
    finally:
        SqlStore(url=db_url, table_prefix=prefix).drop_tables()
