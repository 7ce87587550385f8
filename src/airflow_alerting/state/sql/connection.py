"""Reaching the database: Airflow connection to SQLAlchemy URL, one engine per process, dialect quirks.

Nothing here imports SQLAlchemy or a driver at module level: DAG files import the package at parse time.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from airflow_alerting.state.base import StateUnavailableError

if TYPE_CHECKING:
    from sqlalchemy import Table
    from sqlalchemy.engine import URL, Connection, Engine

#: connection ``extra`` keys passed to the driver; Airflow extras also hold hook-only keys that
#: a driver would reject, so only these known driver options go through
_DRIVER_EXTRAS: Mapping[str, tuple[str, ...]] = {
    "postgresql+psycopg2": ("sslmode", "sslrootcert", "sslcert", "sslkey", "application_name", "options"),
    "mysql+pymysql": ("charset", "ssl_ca", "ssl_cert", "ssl_key"),
}


class ConnectionLike(Protocol):
    """The fields of an Airflow connection that :func:`url_from_connection` reads."""

    @property
    def conn_id(self) -> str: ...
    @property
    def conn_type(self) -> str | None: ...
    @property
    def host(self) -> str | None: ...
    @property
    def schema(self) -> str | None: ...
    @property
    def login(self) -> str | None: ...
    @property
    def password(self) -> str | None: ...
    @property
    def port(self) -> int | None: ...
    @property
    def extra_dejson(self) -> dict[str, Any]: ...


def url_from_connection(conn: ConnectionLike) -> URL:
    """Build the SQLAlchemy URL for an Airflow connection.

    ``postgres``/``postgresql`` -> ``postgresql+psycopg2``; ``mysql``/``mariadb`` ->
    ``mysql+pymysql``; ``sqlite`` -> a file whose path is in the host (or schema) field.

    :param conn: the connection, as returned by ``BaseHook.get_connection``
    :raises ValueError: for other connection types, naming the connection
    """
    from sqlalchemy.engine import URL

    conn_type = (conn.conn_type or "").lower()
    if conn_type == "sqlite":
        path = conn.host or conn.schema
        if not path:
            raise ValueError(
                f"connection {conn.conn_id!r} (sqlite) names no database file: put its path in host"
            )
        return URL.create("sqlite", database=path)
    drivers = {"postgres": "postgresql+psycopg2", "postgresql": "postgresql+psycopg2"}
    drivers.update({"mysql": "mysql+pymysql", "mariadb": "mysql+pymysql"})
    driver = drivers.get(conn_type)
    if driver is None:
        raise ValueError(
            f"connection {conn.conn_id!r} has type {conn.conn_type!r}; the SQL state store supports "
            "postgres, mysql/mariadb and sqlite connections"
        )
    extra = conn.extra_dejson or {}
    query = {key: str(extra[key]) for key in _DRIVER_EXTRAS[driver] if extra.get(key) not in (None, "")}
    return URL.create(
        driver,
        username=conn.login or None,
        password=conn.password or None,
        host=conn.host or None,
        port=conn.port or None,
        database=conn.schema or None,
        query=query,
    )


# --- engines ------------------------------------------------------------------------------

# one engine per (process, URL, I/O timeout): notifiers build stores freely, but a pool per store
# would leak connections, and a pool inherited through fork() shares sockets with the parent
_ENGINES: dict[tuple[str, float], tuple[int, Engine]] = {}
_ENGINES_LOCK = threading.Lock()
# engines inherited through fork(), kept referenced and never used: garbage-collecting their
# connections in the child could close the parent's sockets (or SQLite handles) from under it
_INHERITED: list[Engine] = []


def _engine_for(url: URL, io_timeout: float) -> Engine:
    """The process's engine for ``url`` whose connections give up on any wait after ``io_timeout`` s."""
    key = (url.render_as_string(hide_password=False), io_timeout)
    pid = os.getpid()
    with _ENGINES_LOCK:
        cached = _ENGINES.get(key)
        if cached is not None and cached[0] == pid:
            return cached[1]
        if cached is not None:
            _INHERITED.append(cached[1])
        engine = _create_engine(url, io_timeout)
        _ENGINES[key] = (pid, engine)
        return engine


def _create_engine(url: URL, io_timeout: float) -> Engine:
    """An engine whose connect, lock waits, statements and socket reads are bounded by ``io_timeout``.

    Without these a database that accepts connections and never answers, or a table locked by
    another session, holds the callback until the DAG processor kills it (measured: 158 s to
    "forever"), and the store could not fail open as ``docs/guarantees.md`` promises.
    """
    import sqlalchemy as sa

    backend = url.get_backend_name()
    if backend == "sqlite":
        import sqlite3

        if sqlite3.sqlite_version_info < (3, 35, 0):
            raise StateUnavailableError(
                "the SQL state store needs SQLite >= 3.35 (for RETURNING); "
                f"this Python has {sqlite3.sqlite_version}"
            )
        in_memory = url.database in (None, "", ":memory:")
        # no pre-ping: a file has no server that could have dropped the connection
        engine = sa.create_engine(
            url,
            # writers wait for each other instead of failing with "database is locked", but no
            # longer than the I/O budget: a file locked by another process fails the call open
            connect_args={"timeout": io_timeout, "check_same_thread": False},
            poolclass=sa.pool.StaticPool if in_memory else None,
        )
        sa.event.listen(engine, "connect", _sqlite_driver_autocommit)
        sa.event.listen(engine, "begin", _sqlite_begin_immediate)
        _count_statements(engine)
        return engine
    millis = max(1, int(io_timeout * 1000))
    if backend == "postgresql":
        # libpq's connect_timeout is whole seconds and treats anything below 2 as 2; it covers the
        # TCP connect and the startup exchange, so a port that accepts and never answers gives up
        connect_args: dict[str, Any] = {"connect_timeout": max(2, math.ceil(io_timeout))}
        if "application_name" not in url.query:
            connect_args["application_name"] = "airflow-alerting"
        # server-side bounds on lock waits and statements; options given in the connection's
        # extras are kept (ours come last, so they win for these two settings only)
        ours = f"-c statement_timeout={millis} -c lock_timeout={millis}"
        given = url.query.get("options")
        given_text = given if isinstance(given, str) else " ".join(given or ())
        connect_args["options"] = f"{given_text} {ours}".strip()
        # no pre-ping, which costs a round trip per transaction (a third of a single-statement call):
        # a connection the server closed is found without one on checkout (_drop_if_closed), and
        # SqlStore._run retries a call once when one was dropped in between (see _is_disconnect)
        engine = sa.create_engine(url, connect_args=connect_args)
        sa.event.listen(engine, "checkout", _drop_if_closed)
        _count_statements(engine)
        return engine
    if backend == "mysql":
        if "charset" not in url.query:
            url = url.update_query_dict({"charset": "utf8mb4"})
        # the server's lock waits are whole seconds and end first, so a locked row fails with a
        # clean "lock wait timeout" error; the client's socket timeouts are the backstop for a
        # server that stops answering (PyMySQL waits forever without read_timeout, even in the
        # handshake right after connect)
        lock_wait = max(1, round(io_timeout * 0.75))
        socket_timeout = max(io_timeout, lock_wait + 1.0)
        engine = sa.create_engine(
            url,
            pool_pre_ping=True,
            connect_args={
                "connect_timeout": max(1, math.ceil(io_timeout)),
                "read_timeout": socket_timeout,
                "write_timeout": socket_timeout,
            },
        )
        sa.event.listen(engine, "connect", _mysql_session_timeouts(lock_wait))
        _count_statements(engine)
        return engine
    raise ValueError(f"the SQL state store supports postgresql, mysql and sqlite, not {backend!r}")


# statements that completed in this thread since the store call's attempt began: a call whose
# connection dropped before any of them completed changed nothing, so running it again is safe
_COMPLETED = threading.local()


def _count_statements(engine: Engine) -> None:
    import sqlalchemy as sa

    def completed(*_args: Any) -> None:
        _COMPLETED.count = getattr(_COMPLETED, "count", 0) + 1

    sa.event.listen(engine, "after_cursor_execute", completed)


def _statements_completed() -> int:
    """How many statements this thread completed since :func:`_reset_completed`."""
    return int(getattr(_COMPLETED, "count", 0))


def _reset_completed() -> None:
    _COMPLETED.count = 0


def _drop_if_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Discard a pooled PostgreSQL connection the server has closed, without a round trip.

    An idle connection has nothing to read: the server only writes to it when it ends it (a restart,
    ``pg_terminate_backend``, ``idle_session_timeout``: a FATAL message, then end of file).  Anything
    readable therefore means "closed", and raising ``DisconnectionError`` makes the pool connect
    afresh.  A false alarm only costs a new connection.
    """
    import select

    from sqlalchemy.exc import DisconnectionError

    try:
        poller = select.poll()
        poller.register(dbapi_connection.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
        ready = poller.poll(0)
    except Exception as exc:  # a closed psycopg2 connection has no file descriptor
        raise DisconnectionError(f"pooled connection unusable: {exc}") from exc
    if ready:
        raise DisconnectionError("the server closed the pooled connection")


def _mysql_session_timeouts(seconds: int) -> Any:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # innodb_lock_wait_timeout: row locks; lock_wait_timeout: metadata and table locks (LOCK
        # TABLES, DDL), whose default is a year.  MariaDB also bounds whole statements.
        statements = [
            f"SET SESSION innodb_lock_wait_timeout = {seconds}",
            f"SET SESSION lock_wait_timeout = {seconds}",
        ]
        if "mariadb" in str(dbapi_connection.get_server_info()).lower():
            statements.append(f"SET SESSION max_statement_time = {seconds}")
        cursor = dbapi_connection.cursor()
        try:
            for statement in statements:
                cursor.execute(statement)
        finally:
            cursor.close()

    return on_connect


def _sqlite_driver_autocommit(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite's own transaction handling starts transactions late and DEFERRED; we issue BEGIN ourselves
    dbapi_connection.isolation_level = None


def _sqlite_begin_immediate(conn: Connection) -> None:
    # IMMEDIATE takes the write lock up front: two DEFERRED readers upgrading to writers would
    # deadlock, and SQLite reports that as "database is locked" without waiting
    conn.exec_driver_sql("BEGIN IMMEDIATE")


# --- dialect helpers ----------------------------------------------------------------------


def _is_transient(exc: BaseException) -> bool:
    """A deadlock or serialization failure: the database rolled the transaction back, so rerun it."""
    orig = getattr(exc, "orig", None)
    if orig is None:
        return False
    if getattr(orig, "pgcode", None) in ("40P01", "40001"):
        return True
    args: tuple[Any, ...] = tuple(getattr(orig, "args", ()))
    return bool(args) and args[0] in (1213, 1205)  # MySQL deadlock, lock wait timeout


def _is_disconnect(exc: BaseException) -> bool:
    """The connection was lost (SQLAlchemy invalidated it, and the pool's older connections with it)."""
    return bool(getattr(exc, "connection_invalidated", False))


def _upsert_insert(dialect: str, table: Table) -> Any:
    """PostgreSQL's or SQLite's ``insert``, the ones with ``on_conflict_do_*`` (same API)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)
