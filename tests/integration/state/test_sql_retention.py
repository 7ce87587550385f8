"""``SqlStore``: large and unreadable outbox rows, and the retention of every table.

SQLite (a temporary file) always runs; PostgreSQL and MariaDB on 127.0.0.1 skip when unreachable
(fail under ``CI=true``), as in ``test_sql_store``.  Every test uses its own table prefix.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from airflow_alerting import metrics
from airflow_alerting.model import HistoryEntry, Severity
from airflow_alerting.state.base import OUTBOX_ITEM_MAX_AGE, OpenIncident, OutboxItem
from airflow_alerting.state.sql import SqlStore
from airflow_alerting.state.sql.claims import _neutral_row
from airflow_alerting.state.sql.core import _READY

pytestmark = pytest.mark.integration

POSTGRES_URL = os.environ.get(
    "ALERTING_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)
MARIADB_URL = os.environ.get("ALERTING_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test")

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
WINDOW = timedelta(minutes=5)
LEASE = timedelta(seconds=30)
RETENTION = timedelta(days=7)


def require_server(url: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as exc:
        reason = f"{url} unreachable: {getattr(exc, 'orig', None) or exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: the database tests must run)")
        pytest.skip(reason)
    finally:
        engine.dispose()


def _url(name: str, tmp_path: Path) -> str:
    if name == "sqlite":
        return f"sqlite:///{tmp_path / 'h18-state.db'}"
    url = POSTGRES_URL if name == "postgresql" else MARIADB_URL
    require_server(url)
    return url


def _store(url: str) -> Iterator[SqlStore]:
    store = SqlStore(url=url, table_prefix=f"r{uuid.uuid4().hex[:10]}_", use_database_clock=False)
    store.create_tables()
    yield store
    store.drop_tables()


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    yield from _store(_url(request.param, tmp_path))


@pytest.fixture(params=["sqlite", "postgresql"])
def pruned_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    yield from _store(_url(request.param, tmp_path))


def item(item_id: str, *, created: datetime = T0, body: str = "disk full", **fields: Any) -> OutboxItem:
    return OutboxItem(
        id=item_id,
        channel="slack",
        notification={"title": "load_orders failed", "body": body},
        created_at=created,
        next_attempt_at=created,
        incident_key="etl.load_orders",
        **fields,
    )


def count(store: SqlStore, table: str) -> int:
    import sqlalchemy as sa

    t = getattr(store._schema(), table)
    with store._begin() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one())


# --- outbox: large and unreadable rows ------------------------------------------------------


def test_a_200_kb_notification_round_trips(store: SqlStore) -> None:
    # above MySQL's TEXT (64 KiB): MEDIUMTEXT there, TEXT elsewhere
    body = "é" * 100_000 + "x" * 100_000
    store.outbox_add(item("big", body=body))
    [claimed] = store.outbox_claim(now=T0, limit=10, lease=LEASE)
    assert claimed.notification["body"] == body


def test_an_unreadable_outbox_row_is_quarantined_not_blocking(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlalchemy as sa

    counted: list[tuple[str, ...]] = []
    monkeypatch.setattr(metrics, "incr", lambda *parts, count=1: counted.append(parts))
    store.outbox_add(item("a-good", created=T0))
    store.outbox_add(item("b-bad", created=T0 + timedelta(seconds=1)))
    store.outbox_add(item("c-good", created=T0 + timedelta(seconds=2)))
    t = store._schema().outbox
    with store._begin() as conn:
        # as a newer version (or a truncating server) might have left it
        conn.execute(sa.update(t).where(t.c.id == "b-bad").values(notification='{"title": "trunc'))

    claimed = store.outbox_claim(now=T0 + timedelta(minutes=1), limit=10, lease=LEASE)

    assert [i.id for i in claimed] == ["a-good", "c-good"]
    assert counted == [("outbox", "quarantined")]
    with store._begin() as conn:
        row = conn.execute(sa.select(t).where(t.c.id == "b-bad")).one()
    assert row.next_attempt_at.year >= 9000
    assert row.last_error.startswith("quarantined by the SQL state store")
    # never due again, and removed by age like any other item
    later = T0 + timedelta(days=1)
    assert "b-bad" not in [i.id for i in store.outbox_claim(now=later, limit=10, lease=LEASE)]
    assert store.prune_state(now=T0 + OUTBOX_ITEM_MAX_AGE + timedelta(hours=1), retention=RETENTION) >= 3


def test_mysql_text_columns_of_an_existing_deployment_are_widened(tmp_path: Path) -> None:
    import sqlalchemy as sa

    for store in _store(_url("mariadb", tmp_path)):
        name = store._schema().outbox.name
        engine = store._engine()
        with engine.begin() as conn:
            # what 0.1.0 created
            conn.exec_driver_sql(f"ALTER TABLE `{name}` MODIFY `notification` TEXT NOT NULL")
        _READY.discard(store._ready_key())

        store.create_tables()
        store.create_tables()  # idempotent

        with engine.connect() as conn:
            kind = conn.execute(
                sa.text(
                    "SELECT DATA_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
                    "AND TABLE_NAME = :t AND COLUMN_NAME = 'notification'"
                ),
                {"t": name},
            ).scalar_one()
        assert kind == "mediumtext"
        store.outbox_add(item("big", body="x" * 200_000))
        assert [i.id for i in store.outbox_claim(now=T0, limit=5, lease=LEASE)] == ["big"]


# --- retention ------------------------------------------------------------------------------


def history(at: datetime) -> HistoryEntry:
    return HistoryEntry(
        at=at,
        fingerprint="fp",
        source="etl.load_orders",
        kind="task_failure",
        severity="high",
        channel="slack",
        reason="first",
        sent=True,
        delivered=True,
        detail="",
        run_id="run_1",
        why="",
    )


def open_incident(key: str, at: datetime) -> OpenIncident:
    return OpenIncident(
        incident_key=key, fingerprint=f"fp-{key}", channel="slack", severity=Severity.HIGH, opened_at=at
    )


def test_prune_state_removes_stale_rows_and_keeps_live_ones(pruned_store: SqlStore) -> None:
    import sqlalchemy as sa

    store = pruned_store
    old = T0 - RETENTION - timedelta(days=1)
    now = T0
    # channel states: sent long ago (stale), a claim whose lease expired long ago (stale), sent
    # recently (live), a claim still pending (live), and a neutral row (MySQL's, mid-claim: kept)
    for fingerprint, at in (("stale-sent", old), ("live-sent", now - timedelta(hours=1))):
        claim = store.claim(
            fingerprint, "slack", now=at, window=WINDOW, severity=Severity.HIGH, escalated=False,
            source="etl.t", lease=LEASE,
        )  # fmt: skip
        assert claim.token is not None
        store.confirm(fingerprint, "slack", claim.token)
    store.claim(
        "stale-claim", "slack", now=old, window=WINDOW, severity=Severity.HIGH, escalated=False,
        source="etl.t", lease=LEASE,
    )  # fmt: skip
    store.claim(
        "live-claim", "slack", now=now, window=WINDOW, severity=Severity.HIGH, escalated=False,
        source="etl.t", lease=LEASE,
    )  # fmt: skip
    state = store._schema().channel_state
    with store._begin() as conn:
        conn.execute(sa.insert(state).values(fingerprint="neutral", channel="slack", **_neutral_row()))
    store.record_occurrence("fp", "old-run", now=old, window=WINDOW)
    store.record_occurrence("fp", "new-run", now=now, window=WINDOW)
    store.open_incident(open_incident("etl.old", old))
    store.open_incident(open_incident("etl.new", now - timedelta(days=1)))
    store.outbox_add(item("expired", created=now - OUTBOX_ITEM_MAX_AGE - timedelta(hours=1)))
    store.outbox_add(item("pending", created=now - timedelta(hours=1)))
    store.append_history([history(now)])
    # written directly: append_history prunes by itself on its first call in a process
    table = store._schema().history
    with store._begin() as conn:
        old_entry = vars(history(now - store.history_retention - timedelta(days=1)))
        conn.execute(sa.insert(table).values(**old_entry))

    assert store.prune_state(now=now, retention=RETENTION) == 2 + 1 + 1 + 1 + 1

    with store._begin() as conn:
        kept = sorted(conn.execute(sa.select(state.c.fingerprint)).scalars())
    assert kept == ["live-claim", "live-sent", "neutral"]
    assert count(store, "occurrence") == 1
    assert [i.incident_key for i in store.pop_incidents("etl.new")] == ["etl.new"]
    assert store.pop_incidents("etl.old") == []
    assert [i.id for i in store.outbox_claim(now=now, limit=5, lease=LEASE)] == ["pending"]
    assert [h.at for h in store.history()] == [now]
    # nothing left to do: a second run deletes nothing
    assert store.prune_state(now=now, retention=RETENTION) == 0


def test_prune_applies_the_history_retention_to_every_table(pruned_store: SqlStore) -> None:
    store = pruned_store
    old = T0 - store.history_retention - timedelta(days=1)
    claim = store.claim(
        "fp", "slack", now=old, window=WINDOW, severity=Severity.HIGH, escalated=False, source="etl.t",
        lease=LEASE,
    )  # fmt: skip
    assert claim.token is not None
    store.confirm("fp", "slack", claim.token)
    store.open_incident(open_incident("etl.old", old))
    store.outbox_add(item("old", created=old))
    store.record_occurrence("fp", "run", now=old, window=WINDOW)

    assert store.prune(T0) == 4
    assert store.channel_state("fp", "slack") is None
    assert count(store, "incident") == count(store, "outbox") == count(store, "occurrence") == 0


def test_prune_state_rejects_a_non_positive_retention(pruned_store: SqlStore) -> None:
    with pytest.raises(ValueError, match="retention"):
        pruned_store.prune_state(now=T0, retention=timedelta(0))


def test_large_incident_extra_is_kept(store: SqlStore) -> None:
    # incident extras are JSON documents too (MEDIUMTEXT on MySQL)
    extra = {"log": "y" * 100_000}
    store.open_incident(
        OpenIncident(
            incident_key="etl.big",
            fingerprint="fp",
            channel="slack",
            severity=Severity.HIGH,
            opened_at=T0,
            extra=extra,
        )
    )
    [popped] = store.pop_incidents("etl.big")
    assert json.dumps(popped.extra) == json.dumps(extra)


def test_prune_deletes_in_batches_until_done(pruned_store: SqlStore) -> None:
    import sqlalchemy as sa

    from airflow_alerting.state.sql.store import _PRUNE_BATCH

    store = pruned_store
    old = vars(history(T0 - store.history_retention - timedelta(days=1)))
    rows = 2 * _PRUNE_BATCH + 500
    with store._begin() as conn:
        conn.execute(sa.insert(store._schema().history), [old] * rows)
    assert store.prune(T0) == rows
    assert count(store, "history") == 0


def test_store_from_settings_bounds_each_call_by_a_share_of_the_callback_deadline() -> None:
    from airflow_alerting.config import AlertingSettings
    from airflow_alerting.state import store_from_settings

    settings = AlertingSettings.from_mapping(
        {"state_backend": "sql", "sql_conn_id": "alerting_state", "callback_deadline_seconds": "20"}
    )
    store = store_from_settings(settings)
    assert isinstance(store, SqlStore)
    assert (store.callback_deadline, store.io_timeout) == (20.0, 10.0)
    assert SqlStore(url="sqlite://", callback_deadline=2.0).io_timeout == 1.0  # at least 1 s
    assert SqlStore(url="sqlite://", io_timeout=0.5).io_timeout == 0.5
