"""The exact state store: tables in PostgreSQL, MySQL/MariaDB or SQLite, reached through a connection.

Who sends is decided by one atomic statement per attempt, evaluated by the database against
its own clock, so any number of workers, DAG processors and triggerers racing on the same
(fingerprint, channel) produce exactly one sender per throttle window:

* PostgreSQL and SQLite (>= 3.35): ``INSERT ... ON CONFLICT (fingerprint, channel) DO UPDATE
  SET <claim> WHERE <claimable> RETURNING ...`` -- only the winner gets a row back.
* MySQL/MariaDB: ``INSERT IGNORE`` of a neutral row, then ``UPDATE ... SET <claim> WHERE
  <claimable>``; the winner is the one whose update matched a row.

``<claimable>`` is :func:`airflow_alerting.throttle.decide`'s send rule written in SQL.  A
losing attempt counts itself as suppressed with a second conditional statement in the same
short transaction (``WHERE <held back>``), so the counts reported by the next send are exact too.
Rolling a claim back (a failed delivery, or a crashed sender whose lease expired) merges two
bounded source lists, which the dialects express very differently; that rare path is a
compare-and-set on a ``version`` column using the pure rules of :mod:`~airflow_alerting.throttle`.

Importing this module is cheap: SQLAlchemy and the drivers are imported on first use, because
DAG files import the package at parse time.  See ``docs/state-sql.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from airflow_alerting import throttle
from airflow_alerting.model import Decision, DecisionReason, HistoryEntry, Severity, SuppressionSummary
from airflow_alerting.state.base import (
    Claim,
    OccurrenceRecord,
    OpenIncident,
    OutboxItem,
    StateStore,
    StateUnavailableError,
)

if TYPE_CHECKING:
    from sqlalchemy import Column, MetaData, Table
    from sqlalchemy.engine import URL, Connection, Engine, Row
    from sqlalchemy.engine.interfaces import Dialect
    from sqlalchemy.sql.elements import ColumnElement
    from sqlalchemy.types import TypeDecorator, TypeEngine

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: longest fingerprint / channel stored as is; longer ones are shortened with a digest (index key limits)
KEY_LENGTH = 255
#: a claim, a suppression and a roll-back can interleave with other workers; each retry means another
#: worker changed the row, so a handful is plenty and more means something is badly wrong
_CLAIM_ATTEMPTS = 20
#: compare-and-set retries for release (it only conflicts with concurrent suppressions)
_RELEASE_ATTEMPTS = 20
#: whole-operation retries after a deadlock / serialization failure, which roll the transaction back
_TRANSIENT_RETRIES = 3
_PREFIX_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")
_EMPTY_SOURCES = "[]"
#: free-text history fields are cut to this many characters (MySQL TEXT holds 64 KiB of UTF-8)
_TEXT_LENGTH = 4000

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


# --- schema -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Schema:
    metadata: MetaData
    channel_state: Table
    occurrence: Table
    incident: Table
    history: Table
    outbox: Table

    @property
    def tables(self) -> tuple[Table, ...]:
        return (self.channel_state, self.occurrence, self.incident, self.history, self.outbox)


@cache
def _utc_datetime() -> type[TypeDecorator[datetime]]:
    """The column type for every timestamp: aware UTC in Python, UTC in the database.

    PostgreSQL gets ``timestamptz`` (absolute instants, any session time zone); MySQL gets
    ``DATETIME(6)`` holding UTC, written by ``UTC_TIMESTAMP(6)`` or by us; SQLite gets
    SQLAlchemy's fixed-width ``YYYY-MM-DD HH:MM:SS.ffffff`` text, which compares correctly as text.
    """
    import sqlalchemy as sa
    from sqlalchemy.dialects import mysql, postgresql

    class UtcDateTime(sa.types.TypeDecorator[datetime]):
        impl = sa.DateTime
        cache_ok = True

        def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
            if dialect.name == "postgresql":
                return dialect.type_descriptor(postgresql.TIMESTAMP(timezone=True, precision=6))
            if dialect.name == "mysql":
                return dialect.type_descriptor(mysql.DATETIME(fsp=6))
            return dialect.type_descriptor(sa.DateTime())

        def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
            if value is None:
                return None
            value = _as_utc(value)
            # only PostgreSQL stores the offset; a naive value there would be read in the session time zone
            return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

        def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
            if value is None:
                return None
            if isinstance(value, str):
                value = datetime.fromisoformat(value)
            if not isinstance(value, datetime):
                raise ValueError(f"expected a timestamp, the database returned {type(value).__name__}")
            return _as_utc(value)

    return UtcDateTime


@cache
def _schema(prefix: str) -> _Schema:
    import sqlalchemy as sa

    utc = _utc_datetime()
    metadata = sa.MetaData()
    # utf8mb4_bin: MySQL's default collations are case- and accent-insensitive, which would merge keys
    options: dict[str, Any] = {
        "mysql_engine": "InnoDB",
        "mysql_charset": "utf8mb4",
        "mysql_collate": "utf8mb4_bin",
    }

    def summary_columns(name: str) -> list[Column[Any]]:
        return [
            sa.Column(f"{name}_count", sa.Integer(), nullable=False),
            sa.Column(f"{name}_since", utc()),
            sa.Column(f"{name}_until", utc()),
            # a JSON array of at most throttle.MAX_SOURCES strings
            sa.Column(f"{name}_sources", sa.Text(), nullable=False),
        ]

    channel_state = sa.Table(
        f"{prefix}channel_state",
        metadata,
        sa.Column("fingerprint", sa.String(KEY_LENGTH), primary_key=True),
        sa.Column("channel", sa.String(KEY_LENGTH), primary_key=True),
        sa.Column("last_sent_at", utc()),
        sa.Column("last_sent_severity", sa.SmallInteger()),
        sa.Column("claim_token", sa.String(64)),
        sa.Column("claim_expires_at", utc()),
        sa.Column("previous_sent_at", utc()),
        sa.Column("previous_sent_severity", sa.SmallInteger()),
        *summary_columns("suppressed"),
        *summary_columns("previous_suppressed"),
        # bumped by every write, so the rare read-modify-write paths can compare-and-set
        sa.Column("version", sa.Integer(), nullable=False),
        **options,
    )
    occurrence = sa.Table(
        f"{prefix}occurrence",
        metadata,
        sa.Column("fingerprint", sa.String(KEY_LENGTH), primary_key=True),
        # sha256 of Alert.occurrence_id: the raw id (dag|task|run|...) can exceed any index key limit
        sa.Column("occurrence_id", sa.String(64), primary_key=True),
        # sha256 of the recurrence group (the occurrence id when none): escalation counts groups
        sa.Column("group_key", sa.String(64), nullable=False),
        sa.Column("at", utc(), nullable=False),
        sa.Index(f"{prefix}occurrence_fp_at", "fingerprint", "at"),
        sa.Index(f"{prefix}occurrence_at", "at"),
        **options,
    )
    incident = sa.Table(
        f"{prefix}incident",
        metadata,
        # sha256 of incident_key: "dag.task" can be 500 characters, too long for a MySQL key with the others
        sa.Column("key_hash", sa.String(64), primary_key=True),
        sa.Column("fingerprint", sa.String(KEY_LENGTH), primary_key=True),
        sa.Column("channel", sa.String(KEY_LENGTH), primary_key=True),
        sa.Column("incident_key", sa.String(512), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("opened_at", utc(), nullable=False),
        sa.Column("external_id", sa.String(512)),
        sa.Column("extra", sa.Text(), nullable=False),
        **options,
    )
    history = sa.Table(
        f"{prefix}history",
        metadata,
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
        ),
        sa.Column("at", utc(), nullable=False),
        sa.Column("fingerprint", sa.String(KEY_LENGTH), nullable=False),
        sa.Column("source", sa.String(512), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(KEY_LENGTH), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("sent", sa.Boolean(), nullable=False),
        sa.Column("delivered", sa.Boolean()),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("run_id", sa.String(255)),
        sa.Column("why", sa.Text(), nullable=False),
        sa.Index(f"{prefix}history_at", "at"),
        **options,
    )
    outbox = sa.Table(
        f"{prefix}outbox",
        metadata,
        sa.Column("id", sa.String(KEY_LENGTH), primary_key=True),
        sa.Column("channel", sa.String(KEY_LENGTH), nullable=False),
        # the notification as model.notification_to_json wrote it
        sa.Column("notification", sa.Text(), nullable=False),
        sa.Column("created_at", utc(), nullable=False),
        sa.Column("next_attempt_at", utc(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        # the alert's dag or dag.task, so its recovery can drop what it supersedes
        sa.Column("incident_key", sa.String(512), nullable=False),
        # every alert sweeps the outbox: finding due items must not scan the table
        sa.Index(f"{prefix}outbox_due", "next_attempt_at"),
        sa.Index(f"{prefix}outbox_incident", "incident_key"),
        **options,
    )
    return _Schema(metadata, channel_state, occurrence, incident, history, outbox)


# --- engines ------------------------------------------------------------------------------

# one engine per (process, URL): notifiers build stores freely, but a pool per store would leak
# connections, and a pool inherited through fork() shares sockets with the parent
_ENGINES: dict[str, tuple[int, Engine]] = {}
_ENGINES_LOCK = threading.Lock()
# engines inherited through fork(), kept referenced and never used: garbage-collecting their
# connections in the child could close the parent's sockets (or SQLite handles) from under it
_INHERITED: list[Engine] = []
# (URL, prefix) pairs whose tables this process has created or found
_READY: set[tuple[str, str]] = set()
# append_history calls per (URL, prefix) in this process: the DAG processor builds a store per
# callback, and a per-instance count would prune on every one of them
_HISTORY_CALLS: dict[tuple[str, str], int] = {}


def _engine_for(url: URL) -> Engine:
    key = url.render_as_string(hide_password=False)
    pid = os.getpid()
    with _ENGINES_LOCK:
        cached = _ENGINES.get(key)
        if cached is not None and cached[0] == pid:
            return cached[1]
        if cached is not None:
            _INHERITED.append(cached[1])
        engine = _create_engine(url)
        _ENGINES[key] = (pid, engine)
        return engine


def _create_engine(url: URL) -> Engine:
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
        engine = sa.create_engine(
            url,
            pool_pre_ping=True,
            # writers wait for each other instead of failing with "database is locked"
            connect_args={"timeout": 30.0, "check_same_thread": False},
            poolclass=sa.pool.StaticPool if in_memory else None,
        )
        sa.event.listen(engine, "connect", _sqlite_driver_autocommit)
        sa.event.listen(engine, "begin", _sqlite_begin_immediate)
        return engine
    if backend == "postgresql":
        connect_args: dict[str, Any] = {"connect_timeout": 10}
        if "application_name" not in url.query:
            connect_args["application_name"] = "airflow-alerting"
        return sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    if backend == "mysql":
        if "charset" not in url.query:
            url = url.update_query_dict({"charset": "utf8mb4"})
        return sa.create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 10})
    raise ValueError(f"the SQL state store supports postgresql, mysql and sqlite, not {backend!r}")


def _sqlite_driver_autocommit(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite's own transaction handling starts transactions late and DEFERRED; we issue BEGIN ourselves
    dbapi_connection.isolation_level = None


def _sqlite_begin_immediate(conn: Connection) -> None:
    # IMMEDIATE takes the write lock up front: two DEFERRED readers upgrading to writers would
    # deadlock, and SQLite reports that as "database is locked" without waiting
    conn.exec_driver_sql("BEGIN IMMEDIATE")


# --- clocks -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Clock:
    """``now`` and ``now + offset`` as SQL: the database's clock, or the caller's ``now`` bound in.

    Offsets are bound parameters (``p_<name>``), so a statement is built once per shape and reused;
    :meth:`params` turns the actual times into their values.
    """

    dialect: str
    #: bind the caller's ``now`` (``use_database_clock=False``) instead of reading the database's
    injected: bool

    def now(self) -> ColumnElement[datetime]:
        import sqlalchemy as sa

        utc = _utc_datetime()()
        if self.injected:
            return sa.bindparam("p_now", type_=utc)
        if self.dialect == "postgresql":
            # the transaction's start: stable within it, and every transaction here is one short step
            return sa.literal_column("now()", utc)
        if self.dialect == "mysql":
            # evaluated once per statement; (6) keeps the microseconds DATETIME(6) stores
            return sa.literal_column("UTC_TIMESTAMP(6)", utc)
        return sa.type_coerce(self._sqlite_now(sa.literal("+0 seconds")), utc)

    def shifted(self, name: str) -> ColumnElement[datetime]:
        """``now`` plus the offset given to :meth:`params` as ``name``."""
        import sqlalchemy as sa

        utc = _utc_datetime()()
        param = f"p_{name}"
        if self.injected:
            return sa.bindparam(param, type_=utc)
        if self.dialect == "postgresql":
            now = sa.literal_column("now()", sa.DateTime(timezone=True))
            return sa.type_coerce(now + sa.bindparam(param, type_=sa.Interval()), utc)
        if self.dialect == "mysql":
            micros = sa.bindparam(param, type_=sa.BigInteger())
            now = sa.literal_column("UTC_TIMESTAMP(6)")
            return sa.type_coerce(sa.func.timestampadd(sa.literal_column("MICROSECOND"), micros, now), utc)
        return sa.type_coerce(self._sqlite_now(sa.bindparam(param, type_=sa.String())), utc)

    def params(self, now: datetime, **offsets: timedelta) -> dict[str, Any]:
        """Values for :meth:`now` and :meth:`shifted` (``now`` is used only when injected)."""
        if self.injected:
            now = _as_utc(now)
            return {"p_now": now, **{f"p_{name}": now + offset for name, offset in offsets.items()}}
        if self.dialect == "postgresql":
            return {f"p_{name}": offset for name, offset in offsets.items()}
        if self.dialect == "mysql":
            return {f"p_{name}": offset // timedelta(microseconds=1) for name, offset in offsets.items()}
        return {f"p_{name}": f"{offset.total_seconds():+.6f} seconds" for name, offset in offsets.items()}

    @staticmethod
    def _sqlite_now(modifier: ColumnElement[Any]) -> ColumnElement[Any]:
        import sqlalchemy as sa

        # 'now' is fixed for the duration of a statement; SQLite's clock has millisecond resolution,
        # padded to the six digits of the stored text so that text comparison stays exact
        return sa.func.strftime("%Y-%m-%d %H:%M:%f", "now", modifier).concat("000")


# --- the claim statements -----------------------------------------------------------------


@dataclass(frozen=True)
class _ClaimSql:
    """The statements of one claim shape, built once and reused.

    Building SQLAlchemy expressions and their cache keys costs more CPU than the database round
    trips, and in an alert storm dozens of processes claim at once on a couple of cores.
    """

    #: MySQL: ``INSERT IGNORE`` of a neutral row, so that the claim can be a conditional UPDATE
    ensure_row: Any
    #: PostgreSQL/SQLite: the upsert returning the winner's row; MySQL: the conditional UPDATE
    claim: Any
    #: MySQL: reads back the winner's row (under the row lock of the update)
    claimed_row: Any
    #: counts a held-back occurrence if the row still holds it back (``None``: zero window)
    suppress: Any
    #: MySQL: reads back the row after a suppression
    suppressed_row: Any


@cache
def _claim_sql(
    dialect: str, prefix: str, injected: bool, positive_window: bool, escalated: bool
) -> _ClaimSql:
    import sqlalchemy as sa

    t = _schema(prefix).channel_state
    clock = _Clock(dialect, injected)
    key = sa.and_(t.c.fingerprint == sa.bindparam("p_fp"), t.c.channel == sa.bindparam("p_channel"))
    severity = sa.bindparam("p_severity", type_=sa.SmallInteger())
    claimable = _claimable(t, clock, severity, positive_window, escalated)
    # MySQL evaluates single-table UPDATE assignments left to right with the values already
    # assigned, so every column is read before it is overwritten; PostgreSQL and SQLite read the
    # old row throughout, where the order does not matter
    assignments: list[tuple[Column[Any], Any]] = [
        # the state before the claim (settled: expired claims are rolled back beforehand), kept for
        # release and returned to the winner, whose notification reports the suppressed counts
        (t.c.previous_sent_at, t.c.last_sent_at),
        (t.c.previous_sent_severity, t.c.last_sent_severity),
        (t.c.previous_suppressed_count, t.c.suppressed_count),
        (t.c.previous_suppressed_since, t.c.suppressed_since),
        (t.c.previous_suppressed_until, t.c.suppressed_until),
        (t.c.previous_suppressed_sources, t.c.suppressed_sources),
        (t.c.suppressed_count, 0),
        (t.c.suppressed_since, None),
        (t.c.suppressed_until, None),
        (t.c.suppressed_sources, _EMPTY_SOURCES),
        (t.c.last_sent_at, clock.now()),
        (t.c.last_sent_severity, severity),
        (t.c.claim_token, sa.bindparam("p_token")),
        (t.c.claim_expires_at, clock.shifted("lease")),
        (t.c.version, t.c.version + 1),
    ]
    returning = (
        t.c.claim_token,
        t.c.previous_sent_at,
        t.c.previous_sent_severity,
        t.c.previous_suppressed_count,
        t.c.previous_suppressed_since,
        t.c.previous_suppressed_until,
        t.c.previous_suppressed_sources,
    )
    suppress = None
    if positive_window:
        # each assignment reads only its own column, so MySQL's left-to-right evaluation is harmless
        suppress = (
            sa.update(t)
            .where(key, _held_back(t, clock, severity, escalated))
            .values(
                suppressed_count=t.c.suppressed_count + 1,
                suppressed_since=sa.func.coalesce(t.c.suppressed_since, clock.now()),
                suppressed_until=clock.now(),
                suppressed_sources=_append_source(dialect, t.c.suppressed_sources, sa.bindparam("p_source")),
                version=t.c.version + 1,
            )
        )
    # after a suppression: what held it back, and the running summary including it
    observed = (
        t.c.claim_token,
        t.c.last_sent_at,
        t.c.suppressed_count,
        t.c.suppressed_since,
        t.c.suppressed_until,
        t.c.suppressed_sources,
        clock.now().label("db_now"),
    )
    if dialect == "mysql":  # neither MySQL nor MariaDB has UPDATE ... RETURNING
        from sqlalchemy.dialects.mysql import insert as mysql_insert

        neutral = {
            **_neutral_row(),
            "fingerprint": sa.bindparam("p_fp"),
            "channel": sa.bindparam("p_channel"),
        }
        return _ClaimSql(
            ensure_row=mysql_insert(t).prefix_with("IGNORE").values(**neutral),
            claim=sa.update(t).where(key, claimable).ordered_values(*assignments),
            claimed_row=sa.select(*returning).where(key),
            suppress=suppress,
            suppressed_row=sa.select(*observed).where(key),
        )
    fresh = {
        **_neutral_row(),
        "fingerprint": sa.bindparam("p_fp"),
        "channel": sa.bindparam("p_channel"),
        "last_sent_at": clock.now(),
        "last_sent_severity": severity,
        "claim_token": sa.bindparam("p_token"),
        "claim_expires_at": clock.shifted("lease"),
        "version": 1,
    }
    claim = (
        _upsert_insert(dialect, t)
        .values(**fresh)
        .on_conflict_do_update(
            index_elements=[t.c.fingerprint, t.c.channel],
            set_={column.name: value for column, value in assignments},
            where=claimable,
        )
        .returning(*returning)
    )
    return _ClaimSql(
        ensure_row=None,
        claim=claim,
        claimed_row=None,
        suppress=None if suppress is None else suppress.returning(*observed),
        suppressed_row=None,
    )


def _claimable(
    t: Table, clock: _Clock, severity: ColumnElement[Any], positive_window: bool, escalated: bool
) -> ColumnElement[bool]:
    """``throttle.decide``'s send rule, for rows without an expired claim.

    A row whose claim expired is never claimable here: rolling the claim back merges two source
    lists, which ``SqlStore._roll_back_expired`` does first, so the claim itself only copies
    columns and the decision sees exactly ``ChannelState.settled``.
    """
    import sqlalchemy as sa

    if not positive_window:
        # a zero window sends whatever else is pending, taking over an unexpired claim
        return sa.or_(
            t.c.claim_token.is_(None),
            t.c.claim_expires_at.is_(None),
            t.c.claim_expires_at > clock.now(),
        )
    reasons: list[ColumnElement[bool]] = [t.c.last_sent_at.is_(None)]
    if escalated:
        reasons.append(sa.or_(t.c.last_sent_severity.is_(None), t.c.last_sent_severity < severity))
    # now - last_sent_at >= window: exactly at the window's end the next alert goes out
    reasons.append(t.c.last_sent_at <= clock.shifted("horizon"))
    return sa.and_(t.c.claim_token.is_(None), sa.or_(*reasons))


def _held_back(t: Table, clock: _Clock, severity: ColumnElement[Any], escalated: bool) -> ColumnElement[bool]:
    """The complement of :func:`_claimable` (positive window) among rows without an expired claim.

    Written out rather than ``NOT (...)`` so no NULL can make both false.
    """
    import sqlalchemy as sa

    in_flight = sa.and_(
        t.c.claim_token.is_not(None),
        sa.or_(t.c.claim_expires_at.is_(None), t.c.claim_expires_at > clock.now()),
    )
    throttled: list[ColumnElement[bool]] = [
        t.c.claim_token.is_(None),
        t.c.last_sent_at.is_not(None),
        t.c.last_sent_at > clock.shifted("horizon"),
    ]
    if escalated:
        throttled.append(sa.and_(t.c.last_sent_severity.is_not(None), t.c.last_sent_severity >= severity))
    return sa.or_(in_flight, sa.and_(*throttled))


# --- the store ----------------------------------------------------------------------------


class SqlStore(StateStore):
    """Throttle, dedup, incident and history state in SQL tables; exact under concurrency.

    :param conn_id: Airflow connection of type ``postgres``, ``mysql`` (MariaDB too) or ``sqlite``
        (path in the host field); looked up on first use, not at DAG parse time
    :param url: a SQLAlchemy URL instead of a connection (tests, scripts)
    :param table_prefix: prefix of the table names (letters, digits, ``_``; at most 40 characters)
    :param use_database_clock: compare windows and leases with the database's clock, ignoring the
        ``now`` callers pass, so workers with skewed clocks still agree; ``False`` uses the ``now``
        passed in (deterministic tests)
    :param history_retention: history and occurrence rows older than this are deleted
    :param prune_every: delete expired rows on the first :meth:`append_history` call in a process
        and then every ``prune_every`` calls (counted per database and prefix, across instances)
    """

    name = "sql"

    def __init__(
        self,
        conn_id: str | None = None,
        *,
        url: str | None = None,
        table_prefix: str = "alerting_",
        use_database_clock: bool = True,
        history_retention: timedelta = timedelta(days=30),
        prune_every: int = 100,
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
        self.conn_id = conn_id
        self.table_prefix = table_prefix
        self.use_database_clock = use_database_clock
        self.history_retention = history_retention
        self.prune_every = prune_every
        self._raw_url = url
        self._url: URL | None = None
        self._url_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SqlStore({self.describe()}, table_prefix={self.table_prefix!r})"

    def describe(self) -> str:
        """Where the state lives, safe to log: the URL with its password masked, or the connection id."""
        if self._url is not None:
            return self._url.render_as_string(hide_password=True)
        if self.conn_id is not None:
            return f"connection {self.conn_id!r}"
        return "a URL not yet parsed"

    # --- public StateStore API ------------------------------------------------------------

    def record_occurrence(
        self,
        fingerprint: str,
        occurrence_id: str,
        *,
        now: datetime,
        window: timedelta,
        group: str | None = None,
    ) -> OccurrenceRecord:
        """Record one occurrence of ``fingerprint``; a repeated ``occurrence_id`` is a duplicate, not counted.

        :param fingerprint: the alert's fingerprint
        :param occurrence_id: identity of the callback (``Alert.occurrence_id``)
        :param now: the current time (ignored when using the database clock)
        :param window: the escalation window to count recurrences in
        :param group: occurrences sharing a group count as one recurrence (the mapped instances of
            one run failing together); defaults to ``occurrence_id``
        :return: whether it is a duplicate, and the distinct groups within ``window``, this one included
        """
        return self._run(
            "record_occurrence",
            lambda: self._record_occurrence(fingerprint, occurrence_id, now, window, group or occurrence_id),
        )

    def claim(
        self,
        fingerprint: str,
        channel: str,
        *,
        now: datetime,
        window: timedelta,
        severity: Severity,
        escalated: bool,
        source: str,
        lease: timedelta,
    ) -> Claim:
        """Atomically decide whether this caller sends, as :func:`throttle.decide` would.

        :param fingerprint: the alert's fingerprint
        :param channel: the channel name
        :param now: the current time (ignored when using the database clock)
        :param window: the throttle window; zero or negative always sends
        :param severity: the occurrence's severity after escalation
        :param escalated: the escalation rule raised the severity
        :param source: ``dag.task`` of the occurrence, remembered when it is suppressed
        :param lease: how long the claim holds the window if neither confirmed nor released
        """
        return self._run(
            "claim",
            lambda: self._claim(
                _key(fingerprint), _key(channel), now, window, severity, escalated, source, lease
            ),
        )

    def confirm(self, fingerprint: str, channel: str, token: str) -> None:
        """Keep the window claimed by ``token`` (its delivery succeeded); a foreign token is ignored.

        :param fingerprint: the alert's fingerprint
        :param channel: the channel name
        :param token: the token of the :class:`~airflow_alerting.state.base.Claim`
        """
        self._run("confirm", lambda: self._confirm(_key(fingerprint), _key(channel), token))

    def release(self, fingerprint: str, channel: str, token: str) -> None:
        """Give back the window claimed by ``token`` and restore the suppressed counts it carried.

        :param fingerprint: the alert's fingerprint
        :param channel: the channel name
        :param token: the token of the :class:`~airflow_alerting.state.base.Claim`
        """
        self._run("release", lambda: self._release(_key(fingerprint), _key(channel), token))

    def clear_suppressed(self, fingerprint: str, channel: str, count: int) -> None:
        """Take ``count`` reported occurrences off the suppressed count (a summary reported them).

        Atomic, so suppressions counted meanwhile by other workers are kept; at zero the summary
        starts afresh (``throttle.take_suppressed``).

        :param fingerprint: the alert's fingerprint
        :param channel: the channel name
        :param count: how many the summary reported
        """
        self._run("clear_suppressed", lambda: self._clear_suppressed(_key(fingerprint), _key(channel), count))

    def reset_window(self, fingerprint: str, channel: str) -> None:
        """Forget the throttle state of (fingerprint, channel) so its next occurrence is sent as new.

        A claim pending on it is forgotten too: its confirm or release then changes nothing.

        :param fingerprint: the alert's fingerprint
        :param channel: the channel name
        """
        self._run("reset_window", lambda: self._reset_window(_key(fingerprint), _key(channel)))

    def channel_state(self, fingerprint: str, channel: str) -> throttle.ChannelState | None:
        """The stored state of one (fingerprint, channel), as written (an expired claim is not rolled back).

        :param fingerprint: the alert's fingerprint
        :param channel: the channel name
        """
        return self._run("channel_state", lambda: self._channel_state(_key(fingerprint), _key(channel)))

    def open_incident(self, incident: OpenIncident) -> None:
        """Remember a delivered alert; replaces the open incident of the same fingerprint and channel.

        :param incident: the incident to remember
        """
        self._run("open_incident", lambda: self._open_incident(incident))

    def pop_incidents(self, incident_key: str) -> list[OpenIncident]:
        """Return and delete the open incidents of ``incident_key``; concurrent callers each get them once.

        :param incident_key: ``dag_id`` or ``dag_id.task_id``
        """
        return self._run("pop_incidents", lambda: self._pop_incidents(incident_key))

    def append_history(self, entries: Sequence[HistoryEntry]) -> None:
        """Record decisions; rows older than ``history_retention`` are deleted from time to time.

        :param entries: the decisions to record
        """
        if not entries:
            return
        self._run("append_history", lambda: self._append_history(entries))

    def history(self, limit: int = 100) -> list[HistoryEntry]:
        """The most recently recorded decisions first.

        :param limit: at most this many entries
        """
        if limit <= 0:
            return []
        return self._run("history", lambda: self._history(limit))

    def outbox_add(self, item: OutboxItem) -> None:
        """Keep an undelivered notification for redelivery (an item with the same id is replaced).

        :param item: the notification and its redelivery schedule
        """
        self._run("outbox_add", lambda: self._outbox_add(item))

    def outbox_claim(self, *, now: datetime, limit: int, lease: timedelta) -> list[OutboxItem]:
        """Take up to ``limit`` due items, oldest first, hiding them from other sweepers for ``lease``.

        Concurrent sweepers get disjoint items (``FOR UPDATE SKIP LOCKED`` on PostgreSQL and
        MySQL/MariaDB; SQLite serialises writers).

        :param now: the current time (ignored when using the database clock)
        :param limit: at most this many items
        :param lease: how long the items stay hidden unless updated or removed
        """
        if limit <= 0:
            return []
        return self._run("outbox_claim", lambda: self._outbox_claim(now, limit, lease))

    def outbox_update(self, item: OutboxItem) -> None:
        """Store a changed item (attempts, next attempt, last error); a removed item stays removed.

        :param item: the item, matched by id
        """
        self._run("outbox_update", lambda: self._outbox_update(item))

    def outbox_remove(self, item_id: str) -> None:
        """Forget an item (delivered, or given up).

        :param item_id: the item's id
        """
        self._run("outbox_remove", lambda: self._outbox_remove(item_id))

    def outbox_drop(self, incident_key: str) -> int:
        """Forget every item of ``incident_key`` (the task recovered); return how many.

        :param incident_key: ``dag_id`` or ``dag_id.task_id``, as the items were added with
        """
        return self._run("outbox_drop", lambda: self._outbox_drop(incident_key))

    # --- maintenance ----------------------------------------------------------------------

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

    def prune(self, now: datetime | None = None) -> int:
        """Delete history, occurrence and outbox rows older than ``history_retention``; return how many.

        :param now: the reference time when not using the database clock (default: the local clock)
        """
        return self._run("prune", lambda: self._prune(now or datetime.now(timezone.utc)))

    # --- plumbing -------------------------------------------------------------------------

    def _run(self, action: str, body: Callable[[], _T], *, ensure_tables: bool = True) -> _T:
        """Run ``body`` with the tables in place; every failure becomes :class:`StateUnavailableError`."""
        try:
            attempt = 0
            while True:
                attempt += 1
                try:
                    if ensure_tables:
                        self._ensure_tables()
                    return body()
                except Exception as exc:
                    if attempt < _TRANSIENT_RETRIES and _is_transient(exc):
                        log.debug("retrying %s after a transient database error: %s", action, exc)
                        continue
                    raise
        except Exception as exc:
            # the manager fails open on StateUnavailableError; anything else would cost the alert
            raise StateUnavailableError(self._failure_message(action, exc)) from exc

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
        return _engine_for(self._resolve_url())

    def _dialect(self) -> str:
        return self._resolve_url().get_backend_name()

    def _schema(self) -> _Schema:
        return _schema(self.table_prefix)

    def _ready_key(self) -> tuple[str, str]:
        return (self._resolve_url().render_as_string(hide_password=False), self.table_prefix)

    def _ensure_tables(self) -> None:
        if self._ready_key() not in _READY:
            self._create_tables()

    def _create_tables(self) -> None:
        from sqlalchemy.exc import DBAPIError

        schema = self._schema()
        engine = self._engine()
        # each lost race means another process created at least one table, so this bounds the retries
        attempts = len(schema.tables) + 1
        for attempt in range(1, attempts + 1):
            try:
                schema.metadata.create_all(engine, checkfirst=True)
                break
            except DBAPIError:
                # another process created a table between our check and our CREATE; checking again
                # finds it.  A real problem (no privileges) fails every attempt and is raised.
                if attempt == attempts:
                    raise
        _READY.add(self._ready_key())

    def _clock(self) -> _Clock:
        return _Clock(self._dialect(), injected=not self.use_database_clock)

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        with self._engine().begin() as conn:
            yield conn

    # --- claims ---------------------------------------------------------------------------

    def _claim(
        self,
        fingerprint: str,
        channel: str,
        now: datetime,
        window: timedelta,
        severity: Severity,
        escalated: bool,
        source: str,
        lease: timedelta,
    ) -> Claim:
        clock = self._clock()
        positive = window > timedelta(0)
        sql = _claim_sql(clock.dialect, self.table_prefix, clock.injected, positive, escalated)
        token = uuid.uuid4().hex
        params = {
            "p_fp": fingerprint,
            "p_channel": channel,
            "p_severity": int(severity),
            "p_token": token,
            "p_source": source,
            **clock.params(now, lease=lease, horizon=-window),
        }
        for _ in range(_CLAIM_ATTEMPTS):
            if sql.ensure_row is not None:
                # committed on its own: INSERT IGNORE on an existing key takes a shared lock, and two
                # transactions holding it while both go on to UPDATE the row would deadlock
                with self._begin() as conn:
                    conn.execute(sql.ensure_row, params)
            # one short transaction for both statements: a losing claim usually keeps the row locked,
            # so the suppression sees the same row, and a loser pays one commit instead of two
            with self._begin() as conn:
                won = self._try_claim(conn, sql, params)
                held = self._try_suppress(conn, sql, params) if won is None and positive else None
            if won is not None:
                return Claim(_sending_decision(won, window, severity, escalated), token)
            if held is not None:
                return Claim(_held_decision(held, window))
            # neither claimable nor held back: a crashed sender's claim expired (roll it back), or the
            # row changed between our two statements (try again)
            self._roll_back_expired(fingerprint, channel, now)
        raise StateUnavailableError(
            f"claim on {fingerprint}/{channel} kept changing under {_CLAIM_ATTEMPTS} attempts"
        )

    @staticmethod
    def _try_claim(conn: Connection, sql: _ClaimSql, params: dict[str, Any]) -> Row[Any] | None:
        """The atomic claim; returns the winner's row (the state before the claim in ``previous_*``)."""
        if sql.claimed_row is not None:  # MySQL
            if conn.execute(sql.claim, params).rowcount != 1:
                return None
            # our row lock is held until commit, so this reads exactly what the update wrote
            row: Row[Any] = conn.execute(sql.claimed_row, params).one()
            return row
        returned: Row[Any] | None = conn.execute(sql.claim, params).first()
        if returned is None or returned.claim_token != params["p_token"]:
            return None
        return returned

    @staticmethod
    def _try_suppress(conn: Connection, sql: _ClaimSql, params: dict[str, Any]) -> Row[Any] | None:
        """Count a held-back occurrence, only if the row still holds it back; return what it saw."""
        if sql.suppressed_row is not None:  # MySQL
            if conn.execute(sql.suppress, params).rowcount != 1:
                return None
            row: Row[Any] = conn.execute(sql.suppressed_row, params).one()
            return row
        returned: Row[Any] | None = conn.execute(sql.suppress, params).first()
        return returned

    def _roll_back_expired(self, fingerprint: str, channel: str, now: datetime) -> None:
        import sqlalchemy as sa

        t = self._schema().channel_state
        clock = self._clock()
        key = sa.and_(t.c.fingerprint == fingerprint, t.c.channel == channel)
        with self._begin() as conn:
            row = conn.execute(
                sa.select(t, clock.now().label("db_now")).where(key), clock.params(now)
            ).first()
        if row is None or row.claim_token is None or row.claim_expires_at is None:
            return
        if row.claim_expires_at > row.db_now:
            return
        settled = _state_from_row(row).settled(row.db_now)
        with self._begin() as conn:
            # a concurrent suppression or roll-back bumps the version; the caller's next attempt sees it
            conn.execute(
                sa.update(t)
                .where(key, t.c.version == row.version)
                .values(**_state_values(settled), version=t.c.version + 1)
            )

    def _confirm(self, fingerprint: str, channel: str, token: str) -> None:
        import sqlalchemy as sa

        t = self._schema().channel_state
        with self._begin() as conn:
            conn.execute(
                sa.update(t)
                .where(t.c.fingerprint == fingerprint, t.c.channel == channel, t.c.claim_token == token)
                .values(
                    claim_token=None,
                    claim_expires_at=None,
                    previous_sent_at=None,
                    previous_sent_severity=None,
                    previous_suppressed_count=0,
                    previous_suppressed_since=None,
                    previous_suppressed_until=None,
                    previous_suppressed_sources=_EMPTY_SOURCES,
                    version=t.c.version + 1,
                )
            )

    def _release(self, fingerprint: str, channel: str, token: str) -> None:
        import sqlalchemy as sa

        t = self._schema().channel_state
        mine = sa.and_(t.c.fingerprint == fingerprint, t.c.channel == channel, t.c.claim_token == token)
        for _ in range(_RELEASE_ATTEMPTS):
            with self._begin() as conn:
                row = conn.execute(sa.select(t).where(mine)).first()
            if row is None:
                return
            released = throttle.release(_state_from_row(row), token)
            with self._begin() as conn:
                result = conn.execute(
                    sa.update(t)
                    .where(mine, t.c.version == row.version)
                    .values(**_state_values(released), version=t.c.version + 1)
                )
            if result.rowcount == 1:
                return
        raise StateUnavailableError(f"release on {fingerprint}/{channel} kept conflicting with other writers")

    def _clear_suppressed(self, fingerprint: str, channel: str, count: int) -> None:
        import sqlalchemy as sa

        t = self._schema().channel_state
        emptied = t.c.suppressed_count - count <= 0
        # the count goes last: MySQL assigns left to right, and the others test the old count
        assignments: list[tuple[Column[Any], Any]] = [
            (t.c.suppressed_since, sa.case((emptied, None), else_=t.c.suppressed_since)),
            (t.c.suppressed_until, sa.case((emptied, None), else_=t.c.suppressed_until)),
            (t.c.suppressed_sources, sa.case((emptied, _EMPTY_SOURCES), else_=t.c.suppressed_sources)),
            (t.c.suppressed_count, sa.case((emptied, 0), else_=t.c.suppressed_count - count)),
            (t.c.version, t.c.version + 1),
        ]
        key = sa.and_(t.c.fingerprint == fingerprint, t.c.channel == channel)
        with self._begin() as conn:
            conn.execute(sa.update(t).where(key).ordered_values(*assignments))

    def _reset_window(self, fingerprint: str, channel: str) -> None:
        import sqlalchemy as sa

        t = self._schema().channel_state
        with self._begin() as conn:
            conn.execute(sa.delete(t).where(t.c.fingerprint == fingerprint, t.c.channel == channel))

    def _channel_state(self, fingerprint: str, channel: str) -> throttle.ChannelState | None:
        import sqlalchemy as sa

        t = self._schema().channel_state
        with self._begin() as conn:
            row = conn.execute(
                sa.select(t).where(t.c.fingerprint == fingerprint, t.c.channel == channel)
            ).first()
        return _state_from_row(row) if row is not None else None

    # --- occurrences, incidents, history --------------------------------------------------

    def _record_occurrence(
        self, fingerprint: str, occurrence_id: str, now: datetime, window: timedelta, group: str
    ) -> OccurrenceRecord:
        import sqlalchemy as sa

        t = self._schema().occurrence
        fp = _key(fingerprint)
        group_key = _digest(group)
        clock = self._clock()
        params = clock.params(now, horizon=-window)
        # counted before inserting, so this occurrence counts whatever the window (even zero)
        recent = sa.select(
            sa.func.count(sa.distinct(t.c.group_key)),
            sa.func.count(sa.case((t.c.group_key == group_key, 1))),
        ).where(t.c.fingerprint == fp, t.c.at > clock.shifted("horizon"))
        with self._begin() as conn:
            groups, of_this_group = conn.execute(recent, params).one()
            values = {
                "fingerprint": fp,
                "occurrence_id": _digest(occurrence_id),
                "group_key": group_key,
                "at": clock.now(),
            }
            if clock.dialect == "mysql":
                from sqlalchemy.dialects.mysql import insert as mysql_insert

                inserted = conn.execute(
                    mysql_insert(t).prefix_with("IGNORE").values(**values), params
                ).rowcount
            else:
                insert = _upsert_insert(clock.dialect, t)
                statement = insert.values(**values).on_conflict_do_nothing(
                    index_elements=[t.c.fingerprint, t.c.occurrence_id]
                )
                inserted = conn.execute(statement, params).rowcount
        if inserted != 1:
            return OccurrenceRecord(duplicate=True, count_in_window=int(groups))
        return OccurrenceRecord(duplicate=False, count_in_window=int(groups) + (0 if of_this_group else 1))

    def _open_incident(self, incident: OpenIncident) -> None:
        t = self._schema().incident
        values = {
            "key_hash": _digest(incident.incident_key),
            "fingerprint": _key(incident.fingerprint),
            "channel": _key(incident.channel),
            "incident_key": incident.incident_key,
            "severity": incident.severity.label,
            "opened_at": incident.opened_at,
            "external_id": incident.external_id,
            # default=str: an odd value in extra must not cost the incident
            "extra": json.dumps(incident.extra, sort_keys=True, default=str),
        }
        replaced = {
            name: values[name] for name in ("incident_key", "severity", "opened_at", "external_id", "extra")
        }
        dialect = self._dialect()
        with self._begin() as conn:
            if dialect == "mysql":
                from sqlalchemy.dialects.mysql import insert as mysql_insert

                conn.execute(mysql_insert(t).values(**values).on_duplicate_key_update(**replaced))
            else:
                statement = (
                    _upsert_insert(dialect, t)
                    .values(**values)
                    .on_conflict_do_update(
                        index_elements=[t.c.key_hash, t.c.fingerprint, t.c.channel], set_=replaced
                    )
                )
                conn.execute(statement)

    def _pop_incidents(self, incident_key: str) -> list[OpenIncident]:
        import sqlalchemy as sa

        t = self._schema().incident
        mine = sa.and_(t.c.key_hash == _digest(incident_key), t.c.incident_key == incident_key)
        with self._begin() as conn:
            if conn.dialect.delete_returning:  # PostgreSQL, SQLite, MariaDB
                rows = list(conn.execute(sa.delete(t).where(mine).returning(*t.c)))
            else:
                # MySQL: the row locks make a concurrent pop wait, then find nothing
                rows = list(conn.execute(sa.select(t).where(mine).with_for_update()))
                conn.execute(sa.delete(t).where(mine))
        incidents = [
            OpenIncident(
                incident_key=row.incident_key,
                fingerprint=row.fingerprint,
                channel=row.channel,
                severity=Severity.parse(row.severity),
                opened_at=row.opened_at,
                external_id=row.external_id,
                extra=_json_object(row.extra),
            )
            for row in rows
        ]
        return sorted(incidents, key=lambda i: (i.opened_at, i.channel, i.fingerprint))

    def _append_history(self, entries: Sequence[HistoryEntry]) -> None:
        import sqlalchemy as sa

        t = self._schema().history
        rows = [
            {
                "at": entry.at,
                "fingerprint": _key(entry.fingerprint),
                "source": entry.source[:512],
                "kind": entry.kind[:32],
                "severity": entry.severity[:16],
                "channel": _key(entry.channel),
                "reason": entry.reason[:64],
                "sent": bool(entry.sent),
                "delivered": entry.delivered,
                "detail": entry.detail[:_TEXT_LENGTH],
                "run_id": entry.run_id[:255] if entry.run_id is not None else None,
                "why": entry.why[:_TEXT_LENGTH],
            }
            for entry in entries
        ]
        with self._begin() as conn:
            conn.execute(sa.insert(t), rows)
        with _ENGINES_LOCK:
            calls = _HISTORY_CALLS[self._ready_key()] = _HISTORY_CALLS.get(self._ready_key(), 0) + 1
        if calls % self.prune_every == 1 or self.prune_every == 1:
            # without the database clock the newest entry is the best "now" we have
            self._prune(max(_as_utc(entry.at) for entry in entries))

    def _prune(self, now: datetime) -> int:
        import sqlalchemy as sa

        schema = self._schema()
        clock = self._clock()
        cutoff = clock.shifted("cutoff")
        expired = (
            sa.delete(schema.history).where(schema.history.c.at < cutoff),
            sa.delete(schema.occurrence).where(schema.occurrence.c.at < cutoff),
            # the manager gives up on items long before this; these were orphaned by a removed deployment
            sa.delete(schema.outbox).where(schema.outbox.c.created_at < cutoff),
        )
        with self._begin() as conn:
            params = clock.params(now, cutoff=-self.history_retention)
            deleted = sum(conn.execute(statement, params).rowcount for statement in expired)
        if deleted:
            log.debug("alerting SQL store pruned %d rows older than %s", deleted, self.history_retention)
        return int(deleted)

    def _history(self, limit: int) -> list[HistoryEntry]:
        import sqlalchemy as sa

        t = self._schema().history
        with self._begin() as conn:
            rows = conn.execute(sa.select(t).order_by(t.c.id.desc()).limit(limit)).all()
        return [
            HistoryEntry(
                at=row.at,
                fingerprint=row.fingerprint,
                source=row.source,
                kind=row.kind,
                severity=row.severity,
                channel=row.channel,
                reason=row.reason,
                sent=bool(row.sent),
                delivered=None if row.delivered is None else bool(row.delivered),
                detail=row.detail,
                run_id=row.run_id,
                why=row.why,
            )
            for row in rows
        ]

    def _outbox_values(self, item: OutboxItem) -> dict[str, Any]:
        return {
            "channel": _key(item.channel),
            "notification": json.dumps(item.notification, sort_keys=True),
            "created_at": item.created_at,
            "next_attempt_at": item.next_attempt_at,
            "attempts": item.attempts,
            "last_error": item.last_error,
            "incident_key": item.incident_key,
        }

    def _outbox_add(self, item: OutboxItem) -> None:
        t = self._schema().outbox
        values = self._outbox_values(item)
        dialect = self._dialect()
        with self._begin() as conn:
            if dialect == "mysql":
                from sqlalchemy.dialects.mysql import insert as mysql_insert

                conn.execute(
                    mysql_insert(t).values(id=_key(item.id), **values).on_duplicate_key_update(**values)
                )
            else:
                statement = (
                    _upsert_insert(dialect, t)
                    .values(id=_key(item.id), **values)
                    .on_conflict_do_update(index_elements=[t.c.id], set_=values)
                )
                conn.execute(statement)

    def _outbox_claim(self, now: datetime, limit: int, lease: timedelta) -> list[OutboxItem]:
        import sqlalchemy as sa

        t = self._schema().outbox
        clock = self._clock()
        params = clock.params(now, lease=lease)
        order = (t.c.created_at, t.c.id)
        due = (
            sa.select(t.c.id)
            .where(t.c.next_attempt_at <= clock.now())
            .order_by(*order)
            .limit(limit)
            # sweepers running at once take different items instead of queueing on the same rows
            .with_for_update(skip_locked=True)
        )
        with self._begin() as conn:
            ids = list(conn.execute(due, params).scalars())
            if not ids:
                return []
            conn.execute(
                sa.update(t).where(t.c.id.in_(ids)).values(next_attempt_at=clock.shifted("lease")), params
            )
            rows = conn.execute(sa.select(t).where(t.c.id.in_(ids)).order_by(*order)).all()
        return [
            OutboxItem(
                id=row.id,
                channel=row.channel,
                notification=_json_object(row.notification),
                created_at=row.created_at,
                next_attempt_at=row.next_attempt_at,
                attempts=int(row.attempts),
                last_error=row.last_error,
                incident_key=row.incident_key,
            )
            for row in rows
        ]

    def _outbox_update(self, item: OutboxItem) -> None:
        import sqlalchemy as sa

        t = self._schema().outbox
        with self._begin() as conn:
            conn.execute(sa.update(t).where(t.c.id == _key(item.id)).values(**self._outbox_values(item)))

    def _outbox_remove(self, item_id: str) -> None:
        import sqlalchemy as sa

        t = self._schema().outbox
        with self._begin() as conn:
            conn.execute(sa.delete(t).where(t.c.id == _key(item_id)))

    def _outbox_drop(self, incident_key: str) -> int:
        import sqlalchemy as sa

        t = self._schema().outbox
        with self._begin() as conn:
            return int(conn.execute(sa.delete(t).where(t.c.incident_key == incident_key)).rowcount)


# --- helpers ------------------------------------------------------------------------------


def _as_utc(value: datetime) -> datetime:
    # naive datetimes are taken as UTC, which is what the database columns hold
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def _key(value: str) -> str:
    """``value`` itself, or a prefix plus its digest when it would not fit an index key."""
    if len(value) <= KEY_LENGTH:
        return value
    return f"{value[: KEY_LENGTH - 65]}~{_digest(value)}"


def _is_transient(exc: BaseException) -> bool:
    """A deadlock or serialization failure: the database rolled the transaction back, so rerun it."""
    orig = getattr(exc, "orig", None)
    if orig is None:
        return False
    if getattr(orig, "pgcode", None) in ("40P01", "40001"):
        return True
    args: tuple[Any, ...] = tuple(getattr(orig, "args", ()))
    return bool(args) and args[0] in (1213, 1205)  # MySQL deadlock, lock wait timeout


def _upsert_insert(dialect: str, table: Table) -> Any:
    """PostgreSQL's or SQLite's ``insert``, the ones with ``on_conflict_do_*`` (same API)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)


def _neutral_row() -> dict[str, Any]:
    """A row's values (besides its key) that behave exactly like "never seen": no send, no claim,
    nothing suppressed."""
    return {
        "suppressed_count": 0,
        "suppressed_sources": _EMPTY_SOURCES,
        "previous_suppressed_count": 0,
        "previous_suppressed_sources": _EMPTY_SOURCES,
        "version": 0,
    }


def _append_source(dialect: str, column: Column[Any], source: ColumnElement[Any]) -> ColumnElement[Any]:
    """``throttle.add_suppressed``'s source rule in SQL: append if absent and fewer than MAX_SOURCES.

    Done in the statement so concurrent suppressions cannot overwrite each other's sources.
    """
    import sqlalchemy as sa

    limit = throttle.MAX_SOURCES
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import JSONB

        array = sa.cast(column, JSONB)
        item = sa.func.jsonb_build_array(sa.cast(source, sa.Text()))
        absent = sa.not_(array.op("@>", return_type=sa.Boolean())(item))
        appendable = sa.and_(sa.func.jsonb_array_length(array) < limit, absent)
        return sa.case((appendable, sa.cast(array.op("||")(item), sa.Text())), else_=column)
    if dialect == "mysql":
        missing = sa.func.json_contains(column, sa.func.json_quote(source)) == 0
        appendable = sa.and_(sa.func.json_length(column) < limit, missing)
        return sa.case((appendable, sa.func.json_array_append(column, "$", source)), else_=column)
    each = sa.func.json_each(column).table_valued("value")
    present = sa.exists().where(each.c.value == source)
    appendable = sa.and_(sa.func.json_array_length(column) < limit, sa.not_(present))
    return sa.case((appendable, sa.func.json_insert(column, "$[#]", source)), else_=column)


def _sending_decision(row: Row[Any], window: timedelta, severity: Severity, escalated: bool) -> Decision:
    """The reason ``throttle.decide`` gives for a send, from the state before the claim (``previous_*``).

    Same precedence as ``decide``: escalation, then a zero window, then first, then window elapsed;
    the model test (tests/unit/state/test_sql_store_model.py) holds the two together.
    """
    carried = _summary(
        row.previous_suppressed_count,
        row.previous_suppressed_since,
        row.previous_suppressed_until,
        row.previous_suppressed_sources,
    )
    previous_severity = _severity(row.previous_sent_severity)
    if escalated and (previous_severity is None or severity > previous_severity):
        reason = DecisionReason.ESCALATED
    elif window <= timedelta(0):
        reason = DecisionReason.NO_WINDOW
    elif row.previous_sent_at is None:
        reason = DecisionReason.FIRST
    else:
        reason = DecisionReason.WINDOW_ELAPSED
    return Decision(True, reason, carried)


def _held_decision(row: Row[Any], window: timedelta) -> Decision:
    """``throttle.decide``'s verdict for a held-back occurrence, from the row the suppression left.

    Like the document stores, it carries the running suppressed summary, this occurrence included,
    so the manager can tell the first occurrence held back after a send.
    """
    running = _summary(
        row.suppressed_count, row.suppressed_since, row.suppressed_until, row.suppressed_sources
    )
    if row.claim_token is not None:
        return Decision(False, DecisionReason.IN_FLIGHT, running, "another worker is sending this alert")
    remaining = int((window - (row.db_now - row.last_sent_at)).total_seconds())
    return Decision(False, DecisionReason.THROTTLED, running, f"window has {max(remaining, 0)}s left")


def _severity(value: Any) -> Severity | None:
    return None if value is None else Severity(int(value))


def _sources(value: Any) -> tuple[str, ...]:
    parsed = json.loads(value) if value else []
    if not isinstance(parsed, list):
        raise ValueError(f"suppressed sources must be a JSON array, found {type(parsed).__name__}")
    return tuple(str(source) for source in parsed)


def _summary(count: Any, since: datetime | None, until: datetime | None, sources: Any) -> SuppressionSummary:
    return SuppressionSummary(count=int(count or 0), since=since, until=until, sources=_sources(sources))


def _json_object(value: Any) -> dict[str, Any]:
    parsed = json.loads(value) if value else {}
    if not isinstance(parsed, dict):
        raise ValueError(f"expected a JSON object, found {type(parsed).__name__}")
    return parsed


def _state_from_row(row: Row[Any]) -> throttle.ChannelState:
    return throttle.ChannelState(
        last_sent_at=row.last_sent_at,
        last_sent_severity=_severity(row.last_sent_severity),
        suppressed=_summary(
            row.suppressed_count, row.suppressed_since, row.suppressed_until, row.suppressed_sources
        ),
        claim_token=row.claim_token,
        claim_expires_at=row.claim_expires_at,
        previous_sent_at=row.previous_sent_at,
        previous_sent_severity=_severity(row.previous_sent_severity),
        previous_suppressed=_summary(
            row.previous_suppressed_count,
            row.previous_suppressed_since,
            row.previous_suppressed_until,
            row.previous_suppressed_sources,
        ),
    )


def _state_values(state: throttle.ChannelState) -> dict[str, Any]:
    def summary(prefix: str, value: SuppressionSummary) -> dict[str, Any]:
        return {
            f"{prefix}_count": value.count,
            f"{prefix}_since": value.since,
            f"{prefix}_until": value.until,
            f"{prefix}_sources": json.dumps(list(value.sources)),
        }

    return {
        "last_sent_at": state.last_sent_at,
        "last_sent_severity": None if state.last_sent_severity is None else int(state.last_sent_severity),
        "claim_token": state.claim_token,
        "claim_expires_at": state.claim_expires_at,
        "previous_sent_at": state.previous_sent_at,
        "previous_sent_severity": None
        if state.previous_sent_severity is None
        else int(state.previous_sent_severity),
        **summary("suppressed", state.suppressed),
        **summary("previous_suppressed", state.previous_suppressed),
    }


# --- command line -------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m airflow_alerting.state.sql --conn-id ID``: create the tables ahead of time.

    :param argv: the arguments (default: ``sys.argv[1:]``)
    :return: the process exit code
    """
    parser = argparse.ArgumentParser(
        prog="python -m airflow_alerting.state.sql",
        description="Create the tables of the airflow-provider-alerting SQL state store if missing.",
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--conn-id", help="Airflow connection (postgres, mysql or sqlite) holding the tables")
    target.add_argument(
        "--url", help="SQLAlchemy URL instead of a connection (visible in the process list: avoid passwords)"
    )
    parser.add_argument("--table-prefix", default="alerting_", help="table name prefix (default: alerting_)")
    args = parser.parse_args(argv)
    try:
        store = SqlStore(args.conn_id, url=args.url, table_prefix=args.table_prefix)
        names = store.create_tables()
    except (StateUnavailableError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"tables ready at {store.describe()}: {', '.join(names)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
