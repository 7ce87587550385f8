"""What one ``SqlStore`` call costs the database on PostgreSQL, counted, and connections it loses.

Statement and commit counts are deterministic, unlike timings, so a change that adds round trips
to the decision path fails here.  PostgreSQL is where they are counted: each statement, each
``BEGIN`` and each ``COMMIT`` is a network round trip there, so single-statement calls run without
a transaction and no connection is pinged on checkout.  A connection the server ended while it
sat in the pool is replaced without the caller seeing an error.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from airflow_alerting.incidents.lifecycle import IncidentRules
from airflow_alerting.incidents.model import Occurrence
from airflow_alerting.model import HistoryEntry, Severity
from airflow_alerting.state.base import OutboxItem
from airflow_alerting.state.sql import SqlStore

pytestmark = pytest.mark.integration

POSTGRES_URL = os.environ.get(
    "ALERTING_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
WINDOW = timedelta(minutes=5)
LEASE = timedelta(seconds=30)


def require_postgres() -> None:
    """Skip (or, in CI, fail) when PostgreSQL does not answer."""
    import sqlalchemy as sa

    engine = sa.create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as exc:
        reason = f"PostgreSQL unreachable: {getattr(exc, 'orig', None) or exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: the database tests must run)")
        pytest.skip(reason)
    finally:
        engine.dispose()


@dataclass
class Tally:
    """Statements, commits and pre-pings seen on the store's engine since the last :meth:`reset`."""

    statements: int = 0
    commits: int = 0
    pings: int = 0

    def reset(self) -> None:
        self.statements = self.commits = self.pings = 0

    def taken(self) -> tuple[int, int, int]:
        """``(statements, commits, pings)`` so far, and start counting afresh."""
        seen = (self.statements, self.commits, self.pings)
        self.reset()
        return seen


@pytest.fixture
def counted() -> Iterator[tuple[SqlStore, Tally]]:
    """A store with its own tables (tables created, columns checked) and a tally of its engine."""
    import sqlalchemy as sa

    require_postgres()
    store = SqlStore(url=POSTGRES_URL, table_prefix=f"rt{uuid.uuid4().hex[:10]}_", use_database_clock=False)
    store.create_tables()
    store.history(1)  # adds the history columns added after 0.1, once per process
    store.append_history([entry(0)])  # the first append of a process prunes, as do every 100th
    engine = store._engine()
    tally = Tally()
    listeners: list[tuple[str, Any]] = []

    def statement(*_args: Any) -> None:
        tally.statements += 1

    def commit(*_args: Any) -> None:
        tally.commits += 1

    for name, listener in (("before_cursor_execute", statement), ("commit", commit)):
        sa.event.listen(engine, name, listener)
        listeners.append((name, listener))
    dialect: Any = engine.dialect
    real_ping = dialect.do_ping

    def ping(dbapi_connection: Any) -> bool:
        tally.pings += 1
        return bool(real_ping(dbapi_connection))

    dialect.do_ping = ping
    try:
        yield store, tally
    finally:
        dialect.do_ping = real_ping
        for name, listener in listeners:
            sa.event.remove(engine, name, listener)
        store.drop_tables()


def occurrence(task_id: str, at: datetime = T0) -> Occurrence:
    return Occurrence(
        key="cause:ConnectionError",
        title="ConnectionError: refused",
        dag_id="etl",
        task_id=task_id,
        map_index=-1,
        run_id="run-1",
        severity=Severity.HIGH,
        at=at,
    )


def entry(index: int) -> HistoryEntry:
    return HistoryEntry(
        at=T0,
        fingerprint=f"fp{index}",
        source="etl.load",
        kind="task_failure",
        severity="high",
        channel="slack",
        reason="first",
        sent=True,
        why="counted",
    )


def outbox_item(item_id: str) -> OutboxItem:
    return OutboxItem(
        id=item_id,
        channel="slack",
        notification={"text": "hello"},
        created_at=T0,
        next_attempt_at=T0,
        attempts=1,
        incident_key="etl.load",
    )


def test_each_decision_call_is_one_statement_and_no_transaction(counted: tuple[SqlStore, Tally]) -> None:
    store, tally = counted
    cost: dict[str, tuple[int, int, int]] = {}

    def claim(name: str, channel: str) -> bool:
        decision = store.claim(
            "fp",
            channel,
            now=T0,
            window=WINDOW,
            severity=Severity.HIGH,
            escalated=False,
            source="etl.load",
            lease=LEASE,
        ).decision
        cost[name] = tally.taken()
        return decision.send

    tally.reset()
    store.record_occurrence("fp", "occ-1", now=T0, window=WINDOW)
    cost["record_occurrence"] = tally.taken()
    assert claim("claim (first, sends)", "slack")
    assert not claim("claim (in flight, held back)", "slack")
    winner = store.claim(
        "fp", "email", now=T0, window=WINDOW, severity=Severity.HIGH, escalated=False, source="a", lease=LEASE
    )
    tally.reset()
    assert winner.token is not None
    store.confirm("fp", "email", winner.token)
    cost["confirm"] = tally.taken()
    assert not claim("claim (throttled, held back)", "email")
    store.clear_suppressed("fp", "email", 1)
    cost["clear_suppressed"] = tally.taken()
    store.channel_state("fp", "email")
    cost["channel_state"] = tally.taken()
    store.append_history([entry(1)])
    cost["append_history"] = tally.taken()
    store.outbox_add(outbox_item("item-1"))
    cost["outbox_add"] = tally.taken()
    assert [item.id for item in store.outbox_claim(now=T0, limit=10, lease=LEASE)] == ["item-1"]
    cost["outbox_claim"] = tally.taken()
    store.outbox_remove("item-1")
    cost["outbox_remove"] = tally.taken()
    store.silences()
    cost["silences"] = tally.taken()

    # one statement each, no BEGIN/COMMIT (psycopg2 sends both as statements), no pre-ping
    assert cost == {name: (1, 0, 0) for name in cost}


def test_a_join_is_one_short_transaction(counted: tuple[SqlStore, Tally]) -> None:
    store, tally = counted
    rules = IncidentRules()
    opened = store.join_incident(occurrence("load"), rules)
    tally.reset()

    joined = store.join_incident(occurrence("transform", T0 + timedelta(seconds=1)), rules)
    statements, commits, pings = tally.taken()

    assert joined.incident.id == opened.incident.id and joined.new_member
    # the key's and the incident's rows locked at once; the member and whether its DAG and task are
    # known; the member added; the incident saved and the member sample read back at once
    assert (statements, commits, pings) == (4, 1, 0)
    assert joined.incident.member_count == 2
    assert {member.task_id for member in joined.incident.members} == {"load", "transform"}

    store.incident(joined.incident.id)
    assert tally.taken() == (2, 0, 0)  # the incident and its member sample


def test_the_saved_incident_columns_are_the_bound_ones() -> None:
    """The one-statement save binds exactly the columns ``_record_values`` gives."""
    from airflow_alerting.incidents.model import Incident
    from airflow_alerting.state.sql.incident_sql import _RECORD_COLUMNS, _record_values

    incident = Incident(id="i", key="k", title="t", severity=Severity.HIGH, opened_at=T0, last_seen_at=T0)
    assert tuple(_record_values(incident)) == _RECORD_COLUMNS


def _backend_pid(store: SqlStore) -> int:
    with store._engine().connect() as conn:
        return int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())


def _terminate(pid: int) -> None:
    """End a backend from another connection and wait until it is gone (its socket closed)."""
    import sqlalchemy as sa

    killer = sa.create_engine(POSTGRES_URL, poolclass=sa.pool.NullPool)
    try:
        with killer.connect() as conn:
            assert conn.exec_driver_sql(f"SELECT pg_terminate_backend({pid})").scalar_one()
            deadline = time.monotonic() + 10
            while conn.exec_driver_sql(
                f"SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}"
            ).scalar_one():
                assert time.monotonic() < deadline, f"backend {pid} still there"
                time.sleep(0.05)
    finally:
        killer.dispose()


@pytest.mark.parametrize("checked_on_checkout", [True, False])
def test_a_pooled_connection_the_server_ended_is_replaced_without_an_error(
    checked_on_checkout: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """``pg_terminate_backend`` on the pooled connection: the next call still succeeds.

    With the checkout check the pool replaces the connection before using it; without it (a
    connection ended between the check and the first statement) the call fails on the dead
    connection and is run again once on a new one.
    """
    import sqlalchemy as sa

    from airflow_alerting.state.sql.connection import _drop_if_closed

    require_postgres()
    # an I/O budget of its own gives the store an engine of its own, whose listeners can change
    store = SqlStore(url=POSTGRES_URL, table_prefix=f"rt{uuid.uuid4().hex[:10]}_", io_timeout=7.25)
    engine = store._engine()
    if not checked_on_checkout:
        sa.event.remove(engine, "checkout", _drop_if_closed)
    try:
        assert store.outbox_depth() == 0
        pid = _backend_pid(store)
        _terminate(pid)

        caplog.set_level(logging.DEBUG, logger="airflow_alerting.state.sql")
        store.outbox_add(outbox_item("after-terminate"))
        retried = any("on a new connection" in record.getMessage() for record in caplog.records)
        assert retried is not checked_on_checkout
        assert store.outbox_depth() == 1
        assert _backend_pid(store) != pid
    finally:
        if not checked_on_checkout:
            sa.event.listen(engine, "checkout", _drop_if_closed)
        store.drop_tables()
        engine.dispose()


def test_claims_stay_exact_when_winners_and_losers_interleave(counted: tuple[SqlStore, Tally]) -> None:
    """The one-statement claim counts every held-back occurrence and reports the state it replaced."""
    store, _ = counted
    outcomes: Counter[str] = Counter()
    token = None
    for second in range(6):
        claim = store.claim(
            "fp",
            "slack",
            now=T0 + timedelta(seconds=second),
            window=WINDOW,
            severity=Severity.HIGH,
            escalated=False,
            source=f"etl.task{second % 2}",
            lease=LEASE,
        )
        outcomes[claim.decision.reason.value] += 1
        if claim.token is not None:
            token = claim.token
            assert claim.decision.suppressed.count == 0
    assert token is not None
    store.confirm("fp", "slack", token)
    state = store.channel_state("fp", "slack")
    assert state is not None and state.suppressed.count == 5
    assert state.suppressed.sources == ("etl.task1", "etl.task0")
    later = store.claim(
        "fp",
        "slack",
        now=T0 + WINDOW + timedelta(seconds=1),
        window=WINDOW,
        severity=Severity.HIGH,
        escalated=False,
        source="etl.task0",
        lease=LEASE,
    )
    assert later.decision.send
    assert later.decision.suppressed.count == 5  # the window's held-back occurrences, carried
    assert sum(outcomes.values()) == 6 and outcomes["first"] == 1
