"""A history table made by 0.1 (without the analytics columns) gets them on first use, keeps its
rows, and analytics works over old and new rows together."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from analytics_sql_support import database_url, new_store

from airflow_alerting.analytics import Analytics
from airflow_alerting.model import HistoryEntry
from airflow_alerting.state.base import StateUnavailableError
from airflow_alerting.state.sql import SqlStore
from airflow_alerting.state.sql.schema import _utc_datetime

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
ADDED = {"incident_id", "dag_id", "task_id", "alert_id", "cause"}


def old_history_table(store: SqlStore) -> None:
    """Create ``<prefix>history`` exactly as 0.1 did, with one row in it."""
    import sqlalchemy as sa

    metadata = sa.MetaData()
    big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    table = sa.Table(
        f"{store.table_prefix}history",
        metadata,
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        # the column type 0.1 used: timestamptz on PostgreSQL, DATETIME(6) on MySQL
        sa.Column("at", _utc_datetime()(), nullable=False),
        sa.Column("fingerprint", sa.String(255), nullable=False),
        sa.Column("source", sa.String(512), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(255), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("sent", sa.Boolean(), nullable=False),
        sa.Column("delivered", sa.Boolean()),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("run_id", sa.String(255)),
        sa.Column("why", sa.Text(), nullable=False),
    )
    engine = sa.create_engine(store._resolve_url())
    try:
        metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(
                sa.insert(table),
                [
                    {
                        "at": NOW - timedelta(hours=2),
                        "fingerprint": "old-fp",
                        "source": "legacy.load",
                        "kind": "task_failure",
                        "severity": "high",
                        "channel": "slack",
                        "reason": "first",
                        "sent": True,
                        "delivered": True,
                        "detail": "",
                        "run_id": "r0",
                        "why": "written by 0.1",
                    }
                ],
            )
    finally:
        engine.dispose()


def columns(store: SqlStore) -> set[str]:
    import sqlalchemy as sa

    engine = sa.create_engine(store._resolve_url())
    try:
        return {c["name"] for c in sa.inspect(engine).get_columns(f"{store.table_prefix}history")}
    finally:
        engine.dispose()


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql", "mariadb"])
def test_an_old_history_table_gets_the_new_columns(dialect: str, tmp_path: Path) -> None:
    url = database_url(dialect, tmp_path)
    store = new_store(url)
    try:
        old_history_table(store)
        assert not ADDED & columns(store)
        new = HistoryEntry(
            at=NOW - timedelta(minutes=5),
            fingerprint="fp",
            source="etl.load",
            kind="task_failure",
            severity="critical",
            channel="pagerduty",
            reason="first",
            sent=True,
            delivered=True,
            incident_id="inc-1",
            dag_id="etl",
            task_id="load",
            alert_id="alert-1",
            cause="OperationalError: connection refused",
        )

        store.append_history([new])

        assert columns(store) >= ADDED
        newest, oldest = store.history(limit=10)
        assert newest == new
        assert oldest.source == "legacy.load" and oldest.why == "written by 0.1"
        assert (oldest.incident_id, oldest.dag_id, oldest.alert_id, oldest.cause) == (None, None, None, None)
        # a second store in a new process finds the columns and adds nothing
        again = new_store(url, store.table_prefix)
        assert again.history(limit=10) == [newest, oldest]
        analytics = Analytics(store)
        (row,) = analytics.noisiest(NOW - timedelta(days=1), by="cause")
        assert (row.key, row.alerts) == ("OperationalError: connection refused", 1)
        assert analytics.suppression(NOW - timedelta(days=1)).decisions == 1  # the 0.1 row is no alert
        assert len(analytics.history(since=NOW - timedelta(days=1))) == 2
    finally:
        store.drop_tables()


def test_without_alter_rights_alerts_are_still_recorded_and_analytics_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL: the history table belongs to another role, so ALTER TABLE is refused."""
    import sqlalchemy as sa

    admin_url = database_url("postgresql", tmp_path)
    owner = new_store(admin_url)
    role = f"alerting_ro_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(admin_url)
    created = False
    try:
        old_history_table(owner)
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE ROLE "{role}" LOGIN')
        created = True
        with admin.begin() as conn:
            # enough to create the other tables and write history, not to alter a table it does not own
            conn.exec_driver_sql(f'GRANT CREATE, USAGE ON SCHEMA public TO "{role}"')
            conn.exec_driver_sql(f'GRANT SELECT, INSERT, DELETE ON "{owner.table_prefix}history" TO "{role}"')
            conn.exec_driver_sql(f'GRANT USAGE ON SEQUENCE "{owner.table_prefix}history_id_seq" TO "{role}"')
        restricted_url = sa.make_url(admin_url).set(username=role).render_as_string(hide_password=False)
        store = new_store(restricted_url, owner.table_prefix)
        entry = HistoryEntry(
            at=NOW,
            fingerprint="fp",
            source="etl.load",
            kind="task_failure",
            severity="high",
            channel="slack",
            reason="first",
            sent=True,
            dag_id="etl",
            task_id="load",
            alert_id="a1",
            cause="KeyError: 'x'",
        )

        with caplog.at_level("WARNING", logger="airflow_alerting.state.sql"):
            store.append_history([entry])

        assert "could not add" in caplog.text and "ALTER TABLE" in caplog.text
        newest = store.history(limit=1)[0]
        assert (newest.source, newest.alert_id, newest.cause) == ("etl.load", None, None)
        with pytest.raises(StateUnavailableError, match="lacks the column"):
            Analytics(store).noisiest(NOW - timedelta(days=1))
    finally:
        owner.drop_tables()
        if created:
            with admin.begin() as conn:
                conn.exec_driver_sql(f'DROP OWNED BY "{role}"')
                conn.exec_driver_sql(f'DROP ROLE "{role}"')
        admin.dispose()
