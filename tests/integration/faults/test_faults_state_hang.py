"""A state database that hangs must not hold the callback: the store fails open within its budget.

Each test runs a full :meth:`AlertManager.handle` with a :class:`SqlStore` whose database does not
answer -- a TCP port that accepts and stays silent (PostgreSQL and MySQL URLs), tables locked by
another session (PostgreSQL, MariaDB), a SQLite file held by ``BEGIN EXCLUSIVE`` in another
process -- and checks that ``handle`` returns and the alert is still delivered.

The elapsed-time bounds are hang guards, not benchmarks: before the store bounded its I/O these
calls took 158 s to forever, so the bound (the deadline plus 10 s) is deliberately generous to
stay reliable on a loaded machine.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_alerting.manager import AlertManager, DeliveryOptions
from airflow_alerting.model import Alert, AlertOutcome, DecisionReason
from airflow_alerting.state.sql import SqlStore
from airflow_alerting.state.sql.core import _forget_outages
from airflow_alerting.testing import FrozenClock, RecordingChannel

pytestmark = pytest.mark.integration

POSTGRES_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
MARIADB_URL = "mysql+pymysql://root@127.0.0.1:3306/test"

#: ``[alerting] callback_deadline_seconds`` of these tests
DEADLINE = 5.0
#: hang guard (see the module docstring): far above the expected ~1-3 s, far below the old minutes
LIMIT = DEADLINE + 10.0
CHANNELS = ("email", "slack", "pagerduty")


class SilentServer:
    """Accepts TCP connections on 127.0.0.1 and never sends a byte (a hung database)."""

    def __init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self._accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        self._listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                continue
            self._accepted.append(conn)  # kept open and unanswered

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in self._accepted:
            conn.close()
        self._listener.close()


@pytest.fixture(autouse=True)
def _fresh_outages() -> Iterator[None]:
    # a remembered outage of one test must not make another's store fail before it is tried
    _forget_outages()
    yield
    _forget_outages()


def require(url: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as exc:
        pytest.skip(f"{url} unreachable: {exc}")
    finally:
        engine.dispose()


def store_for(url: str, prefix: str | None = None) -> SqlStore:
    prefix = prefix or f"h{uuid.uuid4().hex[:10]}_"
    return SqlStore(url=url, table_prefix=prefix, callback_deadline=DEADLINE)


def alert() -> Alert:
    # a fresh dag per test: the manager's in-process fail-open cap counts per fingerprint
    return Alert(
        dag_id=f"hang_{uuid.uuid4().hex[:8]}",
        task_id="load_orders",
        run_id="run_1",
        exception_type="PermissionError",
        exception_mro=("PermissionError", "OSError", "Exception"),
        message="role LOADER lacks USAGE on warehouse",
    )


def handle_timed(store: SqlStore) -> tuple[AlertOutcome, float, dict[str, RecordingChannel]]:
    channels = {name: RecordingChannel(name) for name in CHANNELS}
    manager = AlertManager(
        store=store,
        channels=dict[str, Any](channels),
        clock=FrozenClock(),
        delivery=DeliveryOptions(attempts=2, deadline=DEADLINE, backoff_base=0.01, backoff_cap=0.02),
    )
    started = time.monotonic()
    outcome = manager.handle(alert())
    elapsed = time.monotonic() - started
    print(f"handle() took {elapsed:.2f} s")  # shown with -s: the figures quoted in docs/state-sql.md
    return outcome, elapsed, channels


def assert_failed_open(outcome: AlertOutcome, elapsed: float, channels: dict[str, RecordingChannel]) -> None:
    assert elapsed < LIMIT, f"handle() took {elapsed:.1f} s with a {DEADLINE:g} s deadline"
    sent = [c for c in outcome.channels if c.delivery is not None]
    assert sent, f"nothing was sent: {[(c.channel, c.decision.reason) for c in outcome.channels]}"
    for channel in sent:
        assert channel.decision.reason == DecisionReason.STATE_UNAVAILABLE
        assert channel.delivery is not None and channel.delivery.ok
        assert len(channels[channel.channel].notifications) == 1


@pytest.mark.parametrize("scheme", ["postgresql+psycopg2", "mysql+pymysql"])
def test_silent_port_fails_open_within_the_deadline(scheme: str) -> None:
    with SilentServer() as server:
        store = store_for(f"{scheme}://alerting@127.0.0.1:{server.port}/test")
        outcome, elapsed, channels = handle_timed(store)
    assert_failed_open(outcome, elapsed, channels)


def test_tables_locked_on_postgresql_fail_open_within_the_deadline() -> None:
    require(POSTGRES_URL)
    import sqlalchemy as sa

    store = store_for(POSTGRES_URL)
    names = store.create_tables()
    holder = sa.create_engine(POSTGRES_URL)
    try:
        with holder.connect() as conn:
            locked = ", ".join(f'"{name}"' for name in names)
            # ACCESS EXCLUSIVE blocks reads too; held until the rollback at the end of the block
            conn.exec_driver_sql(f"LOCK TABLE {locked} IN ACCESS EXCLUSIVE MODE")
            outcome, elapsed, channels = handle_timed(store_for(POSTGRES_URL, store.table_prefix))
            conn.rollback()
    finally:
        holder.dispose()
        _forget_outages()
        store.drop_tables()
    assert_failed_open(outcome, elapsed, channels)


def test_rows_locked_on_mariadb_fail_open_within_the_deadline() -> None:
    require(MARIADB_URL)
    import sqlalchemy as sa

    store = store_for(MARIADB_URL)
    names = store.create_tables()
    holder = sa.create_engine(MARIADB_URL)
    try:
        with holder.connect() as conn:
            # LOCK TABLES ... WRITE: every other session waits on the table lock (lock_wait_timeout,
            # a year by default), for reads and writes alike
            conn.exec_driver_sql("LOCK TABLES " + ", ".join(f"`{name}` WRITE" for name in names))
            try:
                outcome, elapsed, channels = handle_timed(store_for(MARIADB_URL, store.table_prefix))
            finally:
                conn.exec_driver_sql("UNLOCK TABLES")
    finally:
        holder.dispose()
        _forget_outages()
        store.drop_tables()
    assert_failed_open(outcome, elapsed, channels)


def test_row_lock_on_mariadb_fails_open_within_the_deadline() -> None:
    """A row lock (InnoDB) rather than a table lock: innodb_lock_wait_timeout, not lock_wait_timeout."""
    require(MARIADB_URL)
    import sqlalchemy as sa

    store = store_for(MARIADB_URL)
    store.create_tables()
    # a first alert writes the rows the second one will need (occurrence, channel states)
    first = alert()
    manager = AlertManager(
        store=store,
        channels={name: RecordingChannel(name) for name in CHANNELS},
        clock=FrozenClock(),
        delivery=DeliveryOptions(attempts=2, deadline=DEADLINE, backoff_base=0.01, backoff_cap=0.02),
    )
    manager.handle(first)
    schema_names = [t.name for t in store._schema().tables]
    holder = sa.create_engine(MARIADB_URL)
    try:
        with holder.connect() as conn:
            for name in schema_names:
                conn.exec_driver_sql(f"SELECT * FROM `{name}` FOR UPDATE").all()
            outcome, elapsed, _ = handle_timed(store_for(MARIADB_URL, store.table_prefix))
            conn.rollback()
    finally:
        holder.dispose()
        _forget_outages()
        store.drop_tables()
    # the first alert's window holds the same fingerprint back when the store answers; here it
    # cannot answer, so the alert must go out (fail open) instead of waiting on the lock
    assert elapsed < LIMIT, f"handle() took {elapsed:.1f} s with a {DEADLINE:g} s deadline"
    assert any(c.delivery is not None and c.delivery.ok for c in outcome.channels)


_HOLD_EXCLUSIVE = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()  # until the test closes our stdin
conn.execute("ROLLBACK")
"""


def test_sqlite_file_locked_by_another_process_fails_open_within_the_deadline(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'h18-state.db'}"
    store = store_for(url)
    store.create_tables()
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_EXCLUSIVE, str(tmp_path / "h18-state.db")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        outcome, elapsed, channels = handle_timed(store_for(url, store.table_prefix))
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)
    assert_failed_open(outcome, elapsed, channels)
