"""The StateStore contract for ``SqlStore`` on SQLite, PostgreSQL and MariaDB.

SQLite (a temporary file) always runs.  PostgreSQL and MariaDB are expected on 127.0.0.1
(override with ``ALERTING_TEST_POSTGRES_URL`` / ``ALERTING_TEST_MARIADB_URL``); when one is
unreachable its tests skip with the reason, except under ``CI=true`` where they fail.

Most tests inject the clock (``use_database_clock=False``) so window and lease boundaries can
be hit to the microsecond; the ``database clock`` tests sleep through a short real lease.
Every test gets its own table prefix and drops its tables afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from airflow_alerting import throttle
from airflow_alerting.model import DecisionReason, HistoryEntry, Severity, SuppressionSummary
from airflow_alerting.state.base import OpenIncident, OutboxItem, StateUnavailableError
from airflow_alerting.state.sql import SqlStore, url_from_connection

pytestmark = pytest.mark.integration

POSTGRES_URL = os.environ.get(
    "ALERTING_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)
MARIADB_URL = os.environ.get("ALERTING_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test")

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
WINDOW = timedelta(minutes=5)
LEASE = timedelta(seconds=30)
US = timedelta(microseconds=1)


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
        return f"sqlite:///{tmp_path / 'state.db'}"
    url = POSTGRES_URL if request.param == "postgresql" else MARIADB_URL
    require_server(url)
    return url


StoreFactory = Callable[..., SqlStore]


@pytest.fixture
def make_store(db_url: str) -> Iterator[StoreFactory]:
    """Stores sharing one fresh table prefix; injected clock unless asked otherwise."""
    prefix = f"t{uuid.uuid4().hex[:10]}_"
    made: list[SqlStore] = []

    def make(**kwargs: Any) -> SqlStore:
        options: dict[str, Any] = {"use_database_clock": False, **kwargs}
        store = SqlStore(url=db_url, table_prefix=prefix, **options)
        made.append(store)
        return store

    yield make
    if made:
        made[0].drop_tables()


@pytest.fixture
def store(make_store: StoreFactory) -> SqlStore:
    return make_store()


def claim(
    store: SqlStore,
    now: datetime,
    *,
    fingerprint: str = "fp",
    channel: str = "chat",
    window: timedelta = WINDOW,
    severity: Severity = Severity.HIGH,
    escalated: bool = False,
    source: str = "dag.task",
    lease: timedelta = LEASE,
) -> Any:
    return store.claim(
        fingerprint,
        channel,
        now=now,
        window=window,
        severity=severity,
        escalated=escalated,
        source=source,
        lease=lease,
    )


# --- decisions ----------------------------------------------------------------------------


def test_first_then_throttled_until_exactly_the_window_end(store: SqlStore) -> None:
    first = claim(store, T0)
    assert first.decision.send and first.decision.reason is DecisionReason.FIRST
    assert first.decision.suppressed == SuppressionSummary()
    store.confirm("fp", "chat", first.token)

    just_before = claim(store, T0 + WINDOW - US, source="dag.other")
    assert not just_before.decision.send and just_before.token is None
    assert just_before.decision.reason is DecisionReason.THROTTLED
    assert just_before.decision.detail == "window has 0s left"

    at_end = claim(store, T0 + WINDOW)
    assert at_end.decision.send and at_end.decision.reason is DecisionReason.WINDOW_ELAPSED
    assert at_end.decision.suppressed == SuppressionSummary(
        count=1, since=T0 + WINDOW - US, until=T0 + WINDOW - US, sources=("dag.other",)
    )


def test_zero_window_always_sends_even_over_a_pending_claim(store: SqlStore) -> None:
    decisions = [claim(store, T0, window=timedelta(0)).decision for _ in range(3)]
    assert [d.reason for d in decisions] == [DecisionReason.NO_WINDOW] * 3
    assert all(d.send for d in decisions)


def test_pending_claim_holds_the_window_in_flight(store: SqlStore) -> None:
    assert claim(store, T0).decision.send
    held = claim(store, T0 + LEASE - US)  # the lease, not the window, bounds a pending claim
    assert not held.decision.send
    assert held.decision.reason is DecisionReason.IN_FLIGHT


def test_escalation_sends_inside_the_window_only_when_severity_rises(store: SqlStore) -> None:
    store.confirm("fp", "chat", claim(store, T0, severity=Severity.HIGH).token)

    same = claim(store, T0 + timedelta(seconds=1), severity=Severity.HIGH, escalated=True)
    assert same.decision.reason is DecisionReason.THROTTLED

    higher = claim(store, T0 + timedelta(seconds=2), severity=Severity.CRITICAL, escalated=True)
    assert higher.decision.send and higher.decision.reason is DecisionReason.ESCALATED
    assert higher.decision.suppressed.count == 1
    store.confirm("fp", "chat", higher.token)

    again = claim(store, T0 + timedelta(seconds=3), severity=Severity.CRITICAL, escalated=True)
    assert again.decision.reason is DecisionReason.THROTTLED


def test_suppressed_occurrences_are_folded_into_the_next_send(store: SqlStore) -> None:
    store.confirm("fp", "chat", claim(store, T0).token)
    sources = [f"dag.task_{i % 12}" for i in range(15)]
    for i, source in enumerate(sources):
        assert not claim(store, T0 + timedelta(seconds=i + 1), source=source).decision.send

    sent = claim(store, T0 + WINDOW)
    assert sent.decision.suppressed == SuppressionSummary(
        count=15,
        since=T0 + timedelta(seconds=1),
        until=T0 + timedelta(seconds=15),
        # bounded: the first MAX_SOURCES distinct sources, in order
        sources=tuple(f"dag.task_{i}" for i in range(throttle.MAX_SOURCES)),
    )
    # reported once: the counters start again after the send
    state = store.channel_state("fp", "chat")
    assert state is not None and state.suppressed == SuppressionSummary()


def test_release_gives_back_the_window_and_the_counts(store: SqlStore) -> None:
    store.confirm("fp", "chat", claim(store, T0).token)
    claim(store, T0 + timedelta(seconds=1), source="dag.a")
    claim(store, T0 + timedelta(seconds=2), source="dag.b")

    failed = claim(store, T0 + WINDOW)
    assert failed.decision.suppressed.count == 2
    claim(store, T0 + WINDOW + timedelta(seconds=1), source="dag.c")  # in flight meanwhile
    store.release("fp", "chat", failed.token)

    state = store.channel_state("fp", "chat")
    assert state is not None
    assert state.claim_token is None and state.last_sent_at == T0
    assert state.suppressed.count == 3

    retried = claim(store, T0 + WINDOW + timedelta(seconds=2))
    assert retried.decision.send and retried.decision.reason is DecisionReason.WINDOW_ELAPSED
    assert retried.decision.suppressed == SuppressionSummary(
        count=3,
        since=T0 + timedelta(seconds=1),
        until=T0 + WINDOW + timedelta(seconds=1),
        sources=("dag.a", "dag.b", "dag.c"),
    )


def test_confirm_and_release_ignore_tokens_that_are_not_the_current_claim(store: SqlStore) -> None:
    current = claim(store, T0)
    store.confirm("fp", "chat", "not-a-token")
    store.release("fp", "chat", "not-a-token")
    store.release("other-fp", "chat", current.token)
    state = store.channel_state("fp", "chat")
    assert state is not None and state.claim_token == current.token

    store.confirm("fp", "chat", current.token)
    store.release("fp", "chat", current.token)  # too late: confirmed claims stay
    state = store.channel_state("fp", "chat")
    assert state is not None and state.claim_token is None and state.last_sent_at == T0


def test_an_expired_lease_stops_blocking_and_is_rolled_back(store: SqlStore) -> None:
    lease = timedelta(seconds=5)
    crashed = claim(store, T0, lease=lease)  # never confirmed nor released
    assert crashed.decision.send

    held = claim(store, T0 + lease - US, lease=lease, source="dag.waiting")
    assert held.decision.reason is DecisionReason.IN_FLIGHT

    # the crashed claim is rolled back: never sent before, so this is the first, carrying the count
    taken_over = claim(store, T0 + lease, lease=lease)
    assert taken_over.decision.send and taken_over.decision.reason is DecisionReason.FIRST
    assert taken_over.decision.suppressed.count == 1
    assert taken_over.decision.suppressed.sources == ("dag.waiting",)

    store.confirm("fp", "chat", crashed.token)  # the crashed sender wakes up: ignored
    state = store.channel_state("fp", "chat")
    assert state is not None and state.claim_token == taken_over.token


def test_an_expired_lease_restores_the_previous_send(store: SqlStore) -> None:
    store.confirm("fp", "chat", claim(store, T0).token)
    lease = timedelta(seconds=5)
    assert claim(store, T0 + WINDOW, lease=lease).decision.send  # then crashes
    after = claim(store, T0 + WINDOW + lease, lease=lease)
    assert after.decision.reason is DecisionReason.WINDOW_ELAPSED  # measured from T0 again


def test_expired_lease_with_a_zero_window(store: SqlStore) -> None:
    lease = timedelta(seconds=5)
    store.confirm("fp", "chat", claim(store, T0).token)
    claim(store, T0 + timedelta(seconds=1), source="dag.a")
    assert claim(store, T0 + WINDOW, lease=lease).decision.suppressed.count == 1  # then crashes
    now = claim(store, T0 + WINDOW + lease, window=timedelta(0))
    assert now.decision.reason is DecisionReason.NO_WINDOW
    assert now.decision.suppressed.count == 1  # the crashed claim's counts came back
    state = store.channel_state("fp", "chat")
    assert state is not None and state.previous_sent_at == T0


def test_reset_window_forgets_the_key(store: SqlStore) -> None:
    store.confirm("fp", "chat", claim(store, T0).token)
    claim(store, T0 + US)
    pending = claim(store, T0, channel="mail")
    assert claim(store, T0, channel="mail").decision.reason is DecisionReason.IN_FLIGHT

    store.reset_window("fp", "chat")
    store.reset_window("fp", "mail")
    store.reset_window("fp", "never-seen")
    assert store.channel_state("fp", "chat") is None
    again = claim(store, T0 + 2 * US)
    assert again.decision.reason is DecisionReason.FIRST and again.decision.suppressed.count == 0
    store.confirm("fp", "mail", pending.token)  # the forgotten claim's confirm changes nothing
    assert store.channel_state("fp", "mail") is None


def test_keys_are_independent_and_case_sensitive(store: SqlStore) -> None:
    assert claim(store, T0, fingerprint="abc").decision.send
    assert claim(store, T0, fingerprint="ABC").decision.send
    assert claim(store, T0, fingerprint="abc", channel="mail").decision.send
    long_fp = "x" * 400
    assert claim(store, T0, fingerprint=long_fp).decision.send
    assert not claim(store, T0, fingerprint=long_fp).decision.send
    assert store.channel_state(long_fp, "chat") is not None


def test_channel_state_of_an_unknown_key_is_none(store: SqlStore) -> None:
    assert store.channel_state("nope", "chat") is None


# --- the database clock -------------------------------------------------------------------


def test_database_clock_ignores_the_callers_clock(make_store: StoreFactory) -> None:
    store = make_store(use_database_clock=True)
    first = claim(store, datetime(2000, 1, 1, tzinfo=timezone.utc))
    store.confirm("fp", "chat", first.token)
    later = claim(store, datetime(2100, 1, 1, tzinfo=timezone.utc))
    assert later.decision.reason is DecisionReason.THROTTLED
    state = store.channel_state("fp", "chat")
    assert state is not None and state.last_sent_at is not None
    assert abs(state.last_sent_at - datetime.now(timezone.utc)) < timedelta(minutes=1)


def test_database_clock_lease_expires(make_store: StoreFactory) -> None:
    store = make_store(use_database_clock=True)
    # generous: a loaded 2-core CI machine can take hundreds of milliseconds between two claims
    lease = timedelta(seconds=1.5)
    assert claim(store, T0, lease=lease, window=timedelta(hours=1)).decision.send
    assert (
        claim(store, T0, lease=lease, window=timedelta(hours=1)).decision.reason is DecisionReason.IN_FLIGHT
    )
    time.sleep(1.8)
    again = claim(store, T0, lease=lease, window=timedelta(hours=1))
    assert again.decision.send and again.decision.suppressed.count == 1


def test_database_clock_window(make_store: StoreFactory) -> None:
    store = make_store(use_database_clock=True)
    window = timedelta(seconds=1.5)
    store.confirm("fp", "chat", claim(store, T0, window=window).token)
    assert claim(store, T0, window=window).decision.reason is DecisionReason.THROTTLED
    time.sleep(1.8)
    assert claim(store, T0, window=window).decision.reason is DecisionReason.WINDOW_ELAPSED


# --- occurrences, incidents, history, outbox ----------------------------------------------


def test_duplicate_occurrences_are_reported_and_not_counted(store: SqlStore) -> None:
    window = timedelta(minutes=10)
    first = store.record_occurrence("fp", "d|t|r1|-1|1|task_failure", now=T0, window=window)
    again = store.record_occurrence("fp", "d|t|r1|-1|1|task_failure", now=T0, window=window)
    second = store.record_occurrence("fp", "d|t|r2|-1|1|task_failure", now=T0 + US, window=window)
    assert (first.duplicate, first.count_in_window) == (False, 1)
    assert (again.duplicate, again.count_in_window) == (True, 1)
    assert (second.duplicate, second.count_in_window) == (False, 2)
    # only occurrences inside the window count; ids of very long runs are fine
    late = store.record_occurrence("fp", "d|t|" + "r" * 800, now=T0 + window, window=window)
    assert (late.duplicate, late.count_in_window) == (False, 2)
    other = store.record_occurrence("other", "d|t|r1|-1|1|task_failure", now=T0, window=window)
    assert (other.duplicate, other.count_in_window) == (False, 1)


def test_occurrences_of_one_group_count_once(store: SqlStore) -> None:
    window = timedelta(minutes=10)

    def record(occurrence: str, group: str | None, at: datetime = T0) -> tuple[bool, int]:
        result = store.record_occurrence("fp", occurrence, now=at, window=window, group=group)
        return result.duplicate, result.count_in_window

    # three mapped instances of one run fail together: one recurrence
    assert record("d|t|run1|0|1|task_failure", "run1") == (False, 1)
    assert record("d|t|run1|1|1|task_failure", "run1") == (False, 1)
    assert record("d|t|run1|2|1|task_failure", "run1") == (False, 1)
    assert record("d|t|run2|0|1|task_failure", "run2", T0 + US) == (False, 2)
    assert record("d|t|run1|1|1|task_failure", "run1", T0 + US) == (True, 2)
    assert record("d|t|run3|-1|1|task_failure", None, T0 + US) == (False, 3)
    # run1 (at T0) left the window; run2, run3 and this one are in it
    assert record("d|t|run4|-1|1|task_failure", None, T0 + window) == (False, 3)


def test_clear_suppressed_takes_reported_occurrences_off(store: SqlStore) -> None:
    store.confirm("fp", "chat", claim(store, T0).token)
    for i in range(4):
        claim(store, T0 + timedelta(seconds=i + 1), source=f"dag.task_{i}")
    store.clear_suppressed("fp", "chat", 3)  # a summary reported three; one more arrived since
    state = store.channel_state("fp", "chat")
    assert state is not None
    assert state.suppressed == SuppressionSummary(
        count=1,
        since=T0 + timedelta(seconds=1),
        until=T0 + timedelta(seconds=4),
        sources=tuple(f"dag.task_{i}" for i in range(4)),
    )
    store.clear_suppressed("fp", "chat", 5)
    state = store.channel_state("fp", "chat")
    assert state is not None and state.suppressed == SuppressionSummary()
    assert state.last_sent_at == T0
    store.clear_suppressed("never-seen", "chat", 1)
    assert store.channel_state("never-seen", "chat") is None


def test_incidents_are_popped_once(store: SqlStore) -> None:
    def incident(channel: str, fingerprint: str = "fp", **kwargs: Any) -> OpenIncident:
        values: dict[str, Any] = {"severity": Severity.HIGH, "opened_at": T0, **kwargs}
        return OpenIncident("dag.task", fingerprint, channel, **values)

    store.open_incident(incident("slack", external_id="1700000000.1"))
    store.open_incident(incident("pagerduty", severity=Severity.CRITICAL, extra={"dedup_key": "k"}))
    # the same (fingerprint, channel) again replaces the first
    store.open_incident(incident("slack", external_id="1700000000.2", opened_at=T0 + US))
    store.open_incident(OpenIncident("dag.other", "fp", "slack", Severity.LOW, T0))

    popped = store.pop_incidents("dag.task")
    assert sorted(popped, key=lambda i: i.channel) == [
        incident("pagerduty", severity=Severity.CRITICAL, extra={"dedup_key": "k"}),
        incident("slack", external_id="1700000000.2", opened_at=T0 + US),
    ]
    assert store.pop_incidents("dag.task") == []
    assert [i.incident_key for i in store.pop_incidents("dag.other")] == ["dag.other"]


def entry(at: datetime, reason: str = "first", **kwargs: Any) -> HistoryEntry:
    values: dict[str, Any] = {
        "fingerprint": "fp",
        "source": "dag.task",
        "kind": "task_failure",
        "severity": "high",
        "channel": "chat",
        "sent": True,
        **kwargs,
    }
    return HistoryEntry(at=at, reason=reason, **values)


def test_history_is_most_recent_first(store: SqlStore) -> None:
    entries = [
        entry(T0, delivered=True, why="rule a; rule b", run_id="manual__1"),
        entry(T0 + US, "throttled", sent=False, detail="window has 10s left"),
        entry(T0 + timedelta(seconds=1), delivered=False, detail="HTTP 500"),
    ]
    store.append_history(entries[:2])
    store.append_history(entries[2:])
    store.append_history([])
    assert store.history() == list(reversed(entries))
    assert store.history(limit=2) == [entries[2], entries[1]]
    assert store.history(limit=0) == []


def test_history_and_occurrences_older_than_the_retention_are_deleted(make_store: StoreFactory) -> None:
    store = make_store(history_retention=timedelta(days=1), prune_every=3)
    old = entry(T0 - timedelta(days=2), "old")
    store.record_occurrence("fp", "old", now=T0 - timedelta(days=2), window=timedelta(days=10))
    store.append_history([old])  # call 1 prunes, measured from its newest entry: nothing is older
    store.append_history([entry(T0, "new")])  # calls 2 and 3 do not prune
    store.append_history([entry(T0 + US, "newer")])
    assert [e.reason for e in store.history()] == ["newer", "new", "old"]

    store.append_history([entry(T0 + 2 * US, "newest")])  # call 4 prunes
    assert [e.reason for e in store.history()] == ["newest", "newer", "new"]
    counted = store.record_occurrence("fp", "new", now=T0, window=timedelta(days=10))
    assert counted.count_in_window == 1  # the old occurrence went too

    # explicit: two entries and one occurrence are now more than a day older than this
    assert store.prune(T0 + timedelta(days=1) + 2 * US) == 3
    assert store.history() == [entry(T0 + 2 * US, "newest")]


def outbox_item(name: str, created: datetime, due: datetime, incident_key: str = "dag.task") -> OutboxItem:
    return OutboxItem(
        id=f"item-{name}",
        channel="slack",
        notification={"alert": {"dag_id": "dag"}, "name": name},
        created_at=created,
        next_attempt_at=due,
        incident_key=incident_key,
    )


def test_outbox_items_are_leased_updated_and_removed(store: SqlStore) -> None:
    lease = timedelta(minutes=2)
    store.outbox_add(outbox_item("a", T0, T0))
    store.outbox_add(outbox_item("b", T0 + US, T0))
    store.outbox_add(outbox_item("later", T0, T0 + timedelta(hours=1)))

    first = store.outbox_claim(now=T0, limit=1, lease=lease)
    assert [i.id for i in first] == ["item-a"]
    assert first[0].next_attempt_at == T0 + lease
    assert first[0].notification == {"alert": {"dag_id": "dag"}, "name": "a"}
    # a leased item is hidden from the next sweeper
    assert [i.id for i in store.outbox_claim(now=T0, limit=5, lease=lease)] == ["item-b"]
    assert store.outbox_claim(now=T0, limit=5, lease=lease) == []
    assert store.outbox_claim(now=T0, limit=0, lease=lease) == []

    store.outbox_update(replace(first[0], attempts=3, last_error="HTTP 503", next_attempt_at=T0))
    store.outbox_remove("item-b")
    again = store.outbox_claim(now=T0 + lease, limit=5, lease=lease)
    assert [(i.id, i.attempts, i.last_error) for i in again] == [("item-a", 3, "HTTP 503")]
    store.outbox_remove("item-a")
    store.outbox_remove("item-a")
    due_later = store.outbox_claim(now=T0 + timedelta(hours=2), limit=5, lease=lease)
    assert due_later == [outbox_item("later", T0, T0 + timedelta(hours=2) + lease)]


def test_outbox_items_of_a_recovered_task_are_dropped(store: SqlStore) -> None:
    store.outbox_add(outbox_item("a", T0, T0))
    store.outbox_add(outbox_item("b", T0, T0 + timedelta(hours=1)))
    store.outbox_add(outbox_item("other", T0, T0, incident_key="dag.other_task"))
    assert store.outbox_drop("dag.task") == 2
    assert store.outbox_drop("dag.task") == 0
    remaining = store.outbox_claim(now=T0 + timedelta(days=1), limit=10, lease=LEASE)
    assert [i.id for i in remaining] == ["item-other"]


# --- failures -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg2://alerting:s3cret-Pa55word@127.0.0.1:1/test",
        "mysql+pymysql://alerting:s3cret-Pa55word@127.0.0.1:1/test",
    ],
    ids=["postgresql", "mysql"],
)
def test_database_down_raises_state_unavailable_without_the_password(url: str) -> None:
    store = SqlStore(url=url)
    operations: list[Callable[[], object]] = [
        lambda: claim(store, T0),
        lambda: store.channel_state("fp", "chat"),
        lambda: store.history(),
        store.create_tables,
    ]
    for operation in operations:
        with pytest.raises(StateUnavailableError) as caught:
            operation()
        message = str(caught.value)
        assert "s3cret-Pa55word" not in message and "s3cret-Pa55word" not in repr(caught.value)
        assert "alerting:***@127.0.0.1:1" in message
        assert caught.value.__cause__ is not None  # chained, for the traceback in the logs
    assert "s3cret-Pa55word" not in repr(store)


def test_an_unparsable_url_does_not_leak_it() -> None:
    with pytest.raises(StateUnavailableError) as caught:
        SqlStore(url="no scheme here user:hunter2-secret@host").history()
    assert "hunter2-secret" not in str(caught.value)


def test_unwritable_sqlite_file_raises_state_unavailable(tmp_path: Path) -> None:
    store = SqlStore(url=f"sqlite:///{tmp_path / 'missing-dir' / 'state.db'}")
    with pytest.raises(StateUnavailableError, match="unable to open database file"):
        claim(store, T0)


def test_a_corrupt_row_raises_state_unavailable(store: SqlStore, db_url: str) -> None:
    import sqlalchemy as sa

    claim(store, T0)
    engine = sa.create_engine(db_url)
    table = f"{store.table_prefix}channel_state"
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {table} SET last_sent_severity = 99, suppressed_sources = 'nope'"))
    engine.dispose()
    with pytest.raises(StateUnavailableError, match="channel_state failed"):
        store.channel_state("fp", "chat")


# --- configuration ------------------------------------------------------------------------


@dataclass
class FakeConnection:
    conn_type: str | None
    conn_id: str = "alerting_state"
    host: str | None = None
    schema: str | None = None
    login: str | None = None
    password: str | None = None
    port: int | None = None
    extra_dejson: dict[str, Any] = field(default_factory=dict)


@pytest.mark.parametrize(
    ("connection", "expected"),
    [
        (
            FakeConnection(
                "postgres",
                host="db",
                schema="airflow",
                login="u",
                password="p@ss",
                port=5433,
                extra_dejson={"sslmode": "require", "cursor": "dictcursor"},
            ),
            "postgresql+psycopg2://u:p%40ss@db:5433/airflow?sslmode=require",
        ),
        (FakeConnection("postgresql", host="db"), "postgresql+psycopg2://db"),
        (FakeConnection("mysql", host="db", schema="a", login="root"), "mysql+pymysql://root@db/a"),
        (
            FakeConnection("mariadb", host="db", extra_dejson={"charset": "utf8mb4"}),
            "mysql+pymysql://db?charset=utf8mb4",
        ),
        (FakeConnection("sqlite", host="/var/lib/alerting.db"), "sqlite:////var/lib/alerting.db"),
        (FakeConnection("sqlite", schema="/tmp/x.db"), "sqlite:////tmp/x.db"),
    ],
)
def test_url_from_connection(connection: FakeConnection, expected: str) -> None:
    assert url_from_connection(connection).render_as_string(hide_password=False) == expected


def test_url_from_connection_names_the_connection_for_unsupported_types() -> None:
    with pytest.raises(ValueError, match=r"connection 'alerting_state' has type 'mssql'"):
        url_from_connection(FakeConnection("mssql"))
    with pytest.raises(ValueError, match="names no database file"):
        url_from_connection(FakeConnection("sqlite"))


def test_constructor_validates_its_arguments() -> None:
    with pytest.raises(ValueError, match="exactly one of conn_id"):
        SqlStore()
    with pytest.raises(ValueError, match="exactly one of conn_id"):
        SqlStore("a", url="sqlite://")
    with pytest.raises(ValueError, match="table_prefix"):
        SqlStore(url="sqlite://", table_prefix="bad-prefix; drop table x")


def test_store_reached_through_an_airflow_connection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    path = tmp_path / "by-connection.db"
    monkeypatch.setenv("AIRFLOW_CONN_ALERTING_TEST_STATE", f'{{"conn_type": "sqlite", "host": "{path}"}}')
    store = SqlStore("alerting_test_state", use_database_clock=False)
    assert claim(store, T0).decision.send
    assert path.exists()
    assert store.describe() == f"sqlite:///{path}"

    missing = SqlStore("alerting_no_such_connection")
    with pytest.raises(StateUnavailableError, match="alerting_no_such_connection"):
        missing.history()


def test_importing_the_module_does_not_import_sqlalchemy() -> None:
    code = "import sys, airflow_alerting.state.sql; assert 'sqlalchemy' not in sys.modules, 'imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_command_line_creates_the_tables(tmp_path: Path) -> None:
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    command = [sys.executable, "-m", "airflow_alerting.state.sql", "--url", url, "--table-prefix", "cli_"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "cli_channel_state" in done.stdout
    assert set(sa.inspect(sa.create_engine(url)).get_table_names()) == {
        "cli_channel_state",
        "cli_occurrence",
        "cli_incident",
        "cli_history",
        "cli_outbox",
        "cli_incident_record",
        "cli_incident_current",
        "cli_incident_member",
        "cli_silence",
    }
    # running it again is harmless
    assert subprocess.run(command, capture_output=True, timeout=60, check=False).returncode == 0

    broken = [
        sys.executable,
        "-m",
        "airflow_alerting.state.sql",
        "--url",
        "mysql+pymysql://u:pw-xyz@127.0.0.1:1/x",
    ]
    failed = subprocess.run(broken, capture_output=True, text=True, timeout=60, check=False)
    assert failed.returncode == 1 and "error:" in failed.stderr and "pw-xyz" not in failed.stderr


def test_create_tables_is_idempotent(make_store: StoreFactory) -> None:
    store = make_store()
    names = store.create_tables()
    assert names == [
        f"{store.table_prefix}{n}"
        for n in (
            "channel_state",
            "occurrence",
            "incident",
            "history",
            "outbox",
            "incident_record",
            "incident_current",
            "incident_member",
            "silence",
        )
    ]
    assert make_store().create_tables() == names


def test_outbox_depth_counts_every_queued_item(store: SqlStore) -> None:
    assert store.outbox_depth() == 0
    store.outbox_add(outbox_item("a", T0, T0))
    store.outbox_add(outbox_item("later", T0, T0 + timedelta(hours=1)))
    store.outbox_add(outbox_item("a", T0, T0))  # replaced, not added

    assert store.outbox_depth() == 2
    store.outbox_remove("item-a")
    assert store.outbox_depth() == 1
