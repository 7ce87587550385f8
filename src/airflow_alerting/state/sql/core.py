"""What every part of :class:`~airflow_alerting.state.sql.SqlStore` shares: configuration, the
engine, the tables, transactions and the error wrapper that turns every failure into
:class:`~airflow_alerting.state.base.StateUnavailableError`.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from airflow_alerting.state.base import StateUnavailableError
from airflow_alerting.state.sql.clock import _Clock
from airflow_alerting.state.sql.connection import (
    _engine_for,
    _is_disconnect,
    _is_transient,
    _reset_completed,
    _statements_completed,
    url_from_connection,
)
from airflow_alerting.state.sql.schema import _Schema, _schema, _widen_mysql_text

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Connection, Engine

log = logging.getLogger("airflow_alerting.state.sql")

_T = TypeVar("_T")

#: whole-operation retries after a deadlock / serialization failure, which roll the transaction back
_TRANSIENT_RETRIES = 3
_PREFIX_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")

# (URL, prefix) pairs whose tables this process has created or found
_READY: set[tuple[str, str]] = set()

#: share of the callback deadline one store call may spend; the rest is for the deliveries, which
#: run after the claims, and for the store calls made after them (skipped during an outage)
IO_SHARE = 0.5
#: a failed call that took at least this share of its budget was a timeout, not a refusal
_SLOW_FAILURE_SHARE = 0.5

# (connection id or URL, prefix) -> monotonic time until which calls fail at once: after a call
# spent its budget on a database that does not answer, the next calls of the same callback (a
# dozen or so) must not each wait that long again
_OUTAGES: dict[tuple[str, str], float] = {}
#: calls an earlier timeout never skips: losing them loses an alert
_ALWAYS_TRIED = frozenset({"outbox_add"})
_OUTAGES_LOCK = threading.Lock()


def io_timeout_for(callback_deadline: float) -> float:
    """The budget of one store call for a callback deadline: ``IO_SHARE`` of it, at least 1 s."""
    return max(1.0, callback_deadline * IO_SHARE)


def _forget_outages() -> None:
    """Forget remembered outages (tests)."""
    with _OUTAGES_LOCK:
        _OUTAGES.clear()


class _SqlCore:
    """Configuration and plumbing; the operations live in mixins, the public API in ``SqlStore``.

    See :class:`~airflow_alerting.state.sql.SqlStore` for the parameters.
    """

    def __init__(
        self,
        conn_id: str | None = None,
        *,
        url: str | None = None,
        table_prefix: str = "alerting_",
        use_database_clock: bool = True,
        history_retention: timedelta = timedelta(days=30),
        prune_every: int = 100,
        callback_deadline: float = 15.0,
        io_timeout: float | None = None,
    ) -> None:
        if (conn_id is None) == (url is None):
            raise ValueError("SqlStore needs exactly one of conn_id (an Airflow connection) or url")
        if not _PREFIX_PATTERN.fullmatch(table_prefix):
            raise ValueError(
                f"table_prefix {table_prefix!r} must be a letter or '_' then letters, digits or '_' "
                "(at most 40 characters)"
            )
        if history_retention <= timedelta(0):
            raise ValueError("history_retention must be positive")
        if prune_every < 1:
            raise ValueError("prune_every must be at least 1")
        if not (math.isfinite(callback_deadline) and callback_deadline > 0):
            raise ValueError("callback_deadline must be a positive number of seconds")
        if io_timeout is not None and not (math.isfinite(io_timeout) and io_timeout > 0):
            raise ValueError("io_timeout must be a positive number of seconds")
        self.conn_id = conn_id
        self.table_prefix = table_prefix
        self.use_database_clock = use_database_clock
        self.history_retention = history_retention
        self.prune_every = prune_every
        self.callback_deadline = callback_deadline
        self.io_timeout = io_timeout if io_timeout is not None else io_timeout_for(callback_deadline)
        self._raw_url = url
        self._url: URL | None = None
        self._url_lock = threading.Lock()
        self._cached_engine: tuple[int, Engine] | None = None
        self._cached_ready_key: tuple[str, str] | None = None

    def __repr__(self) -> str:
        return f"SqlStore({self.describe()}, table_prefix={self.table_prefix!r})"

    def describe(self) -> str:
        """Where the state lives, safe to log: the URL with its password masked, or the connection id."""
        if self._url is not None:
            return self._url.render_as_string(hide_password=True)
        if self.conn_id is not None:
            return f"connection {self.conn_id!r}"
        return "a URL not yet parsed"

    def create_tables(self) -> list[str]:
        """Create the tables (and indexes) that do not exist yet; return the names of all of them.

        Safe to run while workers use the store and from several processes at once.  The store also
        does this on first use; call it (or ``python -m airflow_alerting.state.sql``) to create them
        ahead of time, e.g. from a deployment job with DDL rights.
        """

        def create() -> list[str]:
            self._create_tables()
            return [table.name for table in self._schema().tables]

        return self._run("create_tables", create, ensure_tables=False)

    def drop_tables(self) -> None:
        """Drop the tables and everything in them (tests, uninstalling)."""

        def drop() -> None:
            self._schema().metadata.drop_all(self._engine(), checkfirst=True)
            _READY.discard(self._ready_key())

        self._run("drop_tables", drop, ensure_tables=False)

    # --- plumbing -------------------------------------------------------------------------

    def _run(self, action: str, body: Callable[[], _T], *, ensure_tables: bool = True) -> _T:
        """Run ``body`` with the tables in place; every failure becomes :class:`StateUnavailableError`.

        Bounded by ``io_timeout``: the connection's own timeouts end each wait, a transient error is
        retried only while budget remains, and after a call that timed out the calls of the next
        ``callback_deadline`` seconds fail at once instead of each waiting again.
        """
        started = time.monotonic()
        outage = self._outage_key()
        with _OUTAGES_LOCK:
            until = _OUTAGES.get(outage)
        # the outbox is where an undelivered alert goes: it is always tried (within its own budget),
        # because a timeout elsewhere is often one contended row, not a database that is down
        if until is not None and started < until and action not in _ALWAYS_TRIED:
            raise StateUnavailableError(
                self._scrub(
                    f"SQL state store at {self.describe()}: {action} skipped: the database did not answer "
                    f"within {self.io_timeout:g} s; trying again in {until - started:.0f} s"
                )
            )
        try:
            attempt = 0
            reconnected = False
            while True:
                attempt += 1
                try:
                    if ensure_tables:
                        self._ensure_tables(started)
                    _reset_completed()
                    return body()
                except Exception as exc:
                    spent = time.monotonic() - started
                    if attempt < _TRANSIENT_RETRIES and _is_transient(exc) and spent < self.io_timeout / 2:
                        log.debug("retrying %s after a transient database error: %s", action, exc)
                        continue
                    # a pooled connection the server dropped after the checkout check: once, and
                    # only if no statement completed, since one the server committed just before
                    # the connection dropped must not be applied twice (a second claim would lose
                    # to the first, and nobody would send)
                    if (
                        not reconnected
                        and _is_disconnect(exc)
                        and _statements_completed() == 0
                        and spent < self.io_timeout / 2
                    ):
                        reconnected = True
                        log.debug("retrying %s on a new connection: %s", action, exc)
                        continue
                    raise
        except Exception as exc:
            if time.monotonic() - started >= self.io_timeout * _SLOW_FAILURE_SHARE:
                with _OUTAGES_LOCK:
                    _OUTAGES[outage] = time.monotonic() + self.callback_deadline
            # the manager fails open on StateUnavailableError; anything else would cost the alert
            raise StateUnavailableError(self._failure_message(action, exc)) from exc
        finally:
            spent = time.monotonic() - started
            if spent > self.io_timeout * 2:
                # the timeouts should make this impossible; say so loudly if a driver ignores them
                log.warning("SQL state store %s took %.1f s (budget %g s)", action, spent, self.io_timeout)

    def _outage_key(self) -> tuple[str, str]:
        # the configured name, not the resolved URL: resolving may itself need the database
        return (self._raw_url if self._raw_url is not None else f"conn:{self.conn_id}", self.table_prefix)

    def _failure_message(self, action: str, exc: BaseException) -> str:
        cause: BaseException = getattr(exc, "orig", None) or exc
        lines = str(cause).strip().splitlines()
        detail = f"{type(cause).__name__}: {lines[0][:300]}" if lines else type(cause).__name__
        return self._scrub(f"SQL state store at {self.describe()}: {action} failed: {detail}")

    def _scrub(self, text: str) -> str:
        password = self._url.password if self._url is not None else None
        if password:
            text = text.replace(str(password), "***")
        return text

    def _resolve_url(self) -> URL:
        with self._url_lock:
            if self._url is not None:
                return self._url
            if self._raw_url is not None:
                from sqlalchemy.engine import make_url

                try:
                    url = make_url(self._raw_url)
                except Exception:
                    # not chained: the parser's message repeats the whole string, password included
                    raise StateUnavailableError(
                        "the url given to SqlStore is not a SQLAlchemy URL "
                        "(not shown: it may hold a password)"
                    ) from None
            else:
                from airflow.sdk import BaseHook

                assert self.conn_id is not None  # __init__ requires conn_id or url
                url = url_from_connection(BaseHook.get_connection(self.conn_id))
            self._url = url
            return url

    def _engine(self) -> Engine:
        # remembered per process: finding it renders the URL, which costs more than a statement's
        # own Python work, and a store makes a dozen calls per alert
        cached = self._cached_engine
        if cached is not None and cached[0] == os.getpid():
            return cached[1]
        engine = _engine_for(self._resolve_url(), self.io_timeout)
        self._cached_engine = (os.getpid(), engine)
        return engine

    def _dialect(self) -> str:
        return self._resolve_url().get_backend_name()

    def _schema(self) -> _Schema:
        return _schema(self.table_prefix)

    def _ready_key(self) -> tuple[str, str]:
        if self._cached_ready_key is None:
            self._cached_ready_key = (
                self._resolve_url().render_as_string(hide_password=False),
                self.table_prefix,
            )
        return self._cached_ready_key

    def _ensure_tables(self, started: float | None = None) -> None:
        if self._ready_key() not in _READY:
            self._create_tables(started)

    def _create_tables(self, started: float | None = None) -> None:
        from sqlalchemy.exc import DBAPIError

        started = time.monotonic() if started is None else started
        schema = self._schema()
        engine = self._engine()
        # each lost race means another process created at least one table, so this bounds the
        # retries; so does the budget, since a database that does not answer fails every attempt
        attempts = len(schema.tables) + 1
        for attempt in range(1, attempts + 1):
            try:
                schema.metadata.create_all(engine, checkfirst=True)
                break
            except DBAPIError:
                # another process created a table between our check and our CREATE; checking again
                # finds it.  A real problem (no privileges) fails every attempt and is raised.
                if attempt == attempts or time.monotonic() - started >= self.io_timeout / 2:
                    raise
        if engine.dialect.name == "mysql":
            _widen_mysql_text(engine, schema, log)
        _READY.add(self._ready_key())

    def _clock(self) -> _Clock:
        return _Clock(self._dialect(), injected=not self.use_database_clock)

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        with self._engine().begin() as conn:
            yield conn

    @contextmanager
    def _autocommit(self) -> Iterator[Connection]:
        """A connection on which each statement commits on its own, for calls whose statements need
        no transaction around them: one statement, or reads and conditional writes that are exact
        statement by statement.

        On PostgreSQL this saves two of the three round trips of a one-statement call: psycopg2
        sends ``BEGIN`` and ``COMMIT`` as statements of their own.  Under PostgreSQL's ``READ
        COMMITTED`` every statement of a transaction takes a fresh snapshot anyway, so only locks
        held across statements and multi-statement atomicity are given up.  The DBAPI flag is set
        directly: SQLAlchemy's ``AUTOCOMMIT`` isolation level resets the session with another
        round trip on every return to the pool.  MySQL's driver sends a statement to switch
        autocommit, and SQLite has no round trips, so elsewhere this is :meth:`_begin`.
        """
        engine = self._engine()
        if engine.dialect.name != "postgresql":
            with engine.begin() as conn:
                yield conn
            return
        with engine.connect() as conn:
            raw: Any = conn.connection.dbapi_connection
            raw.autocommit = True
            try:
                yield conn
            finally:
                # back to transactions for every other user of the pool (and the analytics)
                if not conn.invalidated and not raw.closed:
                    try:
                        raw.autocommit = False
                    except Exception:
                        conn.invalidate()

    @contextmanager
    def _locking(self) -> Iterator[Connection]:
        """A transaction for read-lock-write steps (``SELECT ... FOR UPDATE``), ``READ COMMITTED`` on MySQL.

        Under MySQL's default ``REPEATABLE READ`` a read made before the lock was granted pins a
        snapshot older than what the previous holder committed, and next-key locks on secondary
        indexes make unrelated writers wait for each other.  PostgreSQL reads committed data by
        default; SQLite's ``BEGIN IMMEDIATE`` serialises every writer.
        """
        with self._begin() as conn:
            if conn.dialect.name == "mysql":
                # before the transaction's first statement, so it applies to this transaction only
                conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
            yield conn
