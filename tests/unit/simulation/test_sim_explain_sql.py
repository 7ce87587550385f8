"""``explain`` reads a real SQL state store and writes nothing to it (SQLite file and PostgreSQL)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sim_support import T0

from airflow_alerting import metrics
from airflow_alerting.manager import AlertManager, DeliveryOptions
from airflow_alerting.model import Alert
from airflow_alerting.simulation.explain import explain
from airflow_alerting.simulation.run import channel_actions_for
from airflow_alerting.state.sql import SqlStore
from airflow_alerting.testing import FrozenClock, RecordingChannel

POSTGRES = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


def _postgres_up() -> bool:
    try:
        with sa.create_engine(POSTGRES, connect_args={"connect_timeout": 3}).connect():
            return True
    except Exception:
        return False


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    prefix = f"sim{uuid.uuid4().hex[:8]}_"
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}", prefix
        return
    if not _postgres_up():
        pytest.skip("PostgreSQL on 127.0.0.1:5432 is not reachable")
    yield POSTGRES, prefix
    SqlStore(url=POSTGRES, table_prefix=prefix).drop_tables()


def counts(url: str, prefix: str) -> dict[str, int]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        names = [n for n in sa.inspect(conn).get_table_names() if n.startswith(prefix)]
        found = {n: conn.execute(sa.text(f'SELECT COUNT(*) FROM "{n}"')).scalar_one() for n in names}
    engine.dispose()
    return found


def alert(n: int) -> Alert:
    return Alert(
        f"dag_{n}",
        task_id="load",
        run_id=f"r{n}",
        exception_type="psycopg2.OperationalError",
        message=f"could not connect to server: Connection refused (host db-{n}.internal)",
    )


def test_explain_reads_the_sql_store_and_writes_nothing(database: tuple[str, str]) -> None:
    url, prefix = database
    store = SqlStore(url=url, table_prefix=prefix)
    clock = FrozenClock(T0)
    channels = {
        "slack": RecordingChannel("slack", actions=channel_actions_for("slack")),
        "email": RecordingChannel("email"),
        "pagerduty": RecordingChannel("pagerduty", actions=channel_actions_for("pagerduty")),
    }
    manager = AlertManager(
        store=store,
        channels=channels,
        clock=clock,
        delivery=DeliveryOptions(attempts=1, deadline=30, backoff_base=0.0, backoff_cap=0.0),
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(metrics, "_stats", lambda: None)
        manager.handle(alert(1))
    (incident,) = store.incidents(limit=10)
    before = counts(url, prefix)
    assert before and sum(before.values()) > 0

    reader = SqlStore(url=url, table_prefix=prefix)  # a separate store, as the command builds one
    result = explain(alert(2), manager.policy, reader, now=T0 + timedelta(minutes=1), state="sql")
    assert result.incident is not None
    assert (result.incident.new, result.incident.id) == (False, incident.id)
    verdicts = {c.channel: (c.send, c.reason) for c in result.channels}
    # announced on Slack a minute ago, not edited since: the edit goes out now
    assert verdicts == {"slack": (True, "updated")}
    assert counts(url, prefix) == before


def test_on_an_empty_database_explain_creates_the_tables_and_nothing_else(tmp_path: Path) -> None:
    url, prefix = f"sqlite:///{tmp_path / 'empty.db'}", "empty_"
    result = explain(alert(1), AlertManager().policy, SqlStore(url=url, table_prefix=prefix), now=T0)
    assert result.incident is not None and result.incident.new
    tables = counts(url, prefix)
    assert tables  # the store creates its tables on first use
    assert set(tables.values()) == {0}
