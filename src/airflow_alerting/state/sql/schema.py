"""The tables, and the column type every timestamp uses.

Built lazily (and once per prefix): importing this module does not import SQLAlchemy.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import Column, MetaData, Table
    from sqlalchemy.engine import Engine
    from sqlalchemy.engine.interfaces import Dialect
    from sqlalchemy.types import TypeDecorator, TypeEngine

#: longest fingerprint / channel stored as is; longer ones are shortened with a digest (index key limits)
KEY_LENGTH = 255

#: (table name without prefix, column) of the documents that can outgrow MySQL's TEXT (64 KiB):
#: notifications (a long log excerpt, many members), delivery errors, incident extras and
#: announcements, silences.  They are MEDIUMTEXT (16 MiB, above MariaDB's default
#: max_allowed_packet) on MySQL; other dialects' TEXT is unbounded already.
LARGE_TEXT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("outbox", "notification"),
    ("outbox", "last_error"),
    ("incident", "extra"),
    ("incident_record", "severity_reasons"),
    ("incident_record", "announcements"),
    ("silence", "document"),
)


@dataclass(frozen=True)
class _Schema:
    metadata: MetaData
    channel_state: Table
    occurrence: Table
    incident: Table
    history: Table
    outbox: Table
    incident_record: Table
    incident_current: Table
    incident_member: Table
    silence: Table

    @property
    def tables(self) -> tuple[Table, ...]:
        return (
            self.channel_state,
            self.occurrence,
            self.incident,
            self.history,
            self.outbox,
            self.incident_record,
            self.incident_current,
            self.incident_member,
            self.silence,
        )


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
def _large_text() -> TypeEngine[str]:
    """TEXT, but MEDIUMTEXT on MySQL: see :data:`LARGE_TEXT_COLUMNS`."""
    import sqlalchemy as sa
    from sqlalchemy.dialects import mysql

    return sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql")


def _widen_mysql_text(engine: Engine, schema: _Schema, log: logging.Logger) -> None:
    """Turn the :data:`LARGE_TEXT_COLUMNS` of tables made by earlier versions (TEXT) into MEDIUMTEXT.

    Idempotent and cheap when nothing is left to do (one information_schema query per process).
    Done here rather than left to a manual migration because a notification above 64 KiB is
    otherwise lost from the outbox without anyone noticing.  A user without ALTER rights gets a
    warning naming the statement, and the store carries on as before.
    """
    import sqlalchemy as sa

    wanted = {(getattr(schema, table).name, column) for table, column in LARGE_TEXT_COLUMNS}
    names = sorted({table for table, _ in wanted})
    query = sa.text(
        "SELECT TABLE_NAME, COLUMN_NAME, IS_NULLABLE FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN :names "
        "AND DATA_TYPE IN ('tinytext', 'text')"
    ).bindparams(sa.bindparam("names", expanding=True))
    with engine.connect() as conn:
        narrow = [row for row in conn.execute(query, {"names": names}) if (row[0], row[1]) in wanted]
    for table, column, nullable in narrow:
        null = "NULL" if nullable == "YES" else "NOT NULL"
        statement = (
            f"ALTER TABLE `{table}` MODIFY `{column}` MEDIUMTEXT "
            f"CHARACTER SET utf8mb4 COLLATE utf8mb4_bin {null}"
        )
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql(statement)
            log.info("alerting SQL store widened %s.%s to MEDIUMTEXT", table, column)
        except Exception as exc:
            log.warning(
                "alerting SQL store could not widen %s.%s (rows above 64 KiB will fail): %s; run %r "
                "as a user with ALTER rights",
                table,
                column,
                getattr(exc, "orig", None) or exc,
                statement,
            )


#: longest cause (an incident title) kept in a history row: VARCHAR, so MySQL groups by all of it
CAUSE_LENGTH = 512


def _history_added_columns() -> list[Column[Any]]:
    """The history columns analytics needs, added after the table's first release; all nullable."""
    import sqlalchemy as sa

    return [
        sa.Column("incident_id", sa.String(64)),
        sa.Column("dag_id", sa.String(KEY_LENGTH)),
        sa.Column("task_id", sa.String(KEY_LENGTH)),
        sa.Column("alert_id", sa.String(64)),
        sa.Column("cause", sa.String(CAUSE_LENGTH)),
    ]


def _add_history_columns(engine: Engine, schema: _Schema, log: logging.Logger) -> frozenset[str]:
    """Add the columns of :func:`_history_added_columns` that a history table made earlier lacks.

    ``create_all`` never alters an existing table, so without this an upgraded deployment would
    keep writing rows analytics cannot attribute.  Idempotent; a concurrent process adding the same
    column is tolerated.  A user without ALTER rights gets a warning naming the statement, and the
    store keeps writing the columns that exist.

    :return: the added columns the table has now
    """
    import sqlalchemy as sa

    table = schema.history
    wanted = {c.name: c for c in _history_added_columns()}

    def present() -> set[str]:
        return {c["name"] for c in sa.inspect(engine).get_columns(table.name)} & set(wanted)

    have = present()
    for name in sorted(set(wanted) - have):
        column_type = wanted[name].type.compile(dialect=engine.dialect)
        quoted = engine.dialect.identifier_preparer
        statement = (
            f"ALTER TABLE {quoted.format_table(table)} ADD COLUMN {quoted.quote(name)} {column_type} NULL"
        )
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql(statement)
            log.info("alerting SQL store added %s.%s", table.name, name)
        except Exception as exc:
            if name in present():
                continue  # another process added it meanwhile
            log.warning(
                "alerting SQL store could not add %s.%s (analytics will not see it): %s; run %r "
                "as a user with ALTER rights",
                table.name,
                name,
                getattr(exc, "orig", None) or exc,
                statement,
            )
    return frozenset(present())


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
        sa.Column("extra", _large_text(), nullable=False),
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
        # added after 0.1: tables made before get them from _add_history_columns
        *_history_added_columns(),
        sa.Index(f"{prefix}history_at", "at"),
        **options,
    )
    outbox = sa.Table(
        f"{prefix}outbox",
        metadata,
        sa.Column("id", sa.String(KEY_LENGTH), primary_key=True),
        sa.Column("channel", sa.String(KEY_LENGTH), nullable=False),
        # the notification as model.notification_to_json wrote it
        sa.Column("notification", _large_text(), nullable=False),
        sa.Column("created_at", utc(), nullable=False),
        sa.Column("next_attempt_at", utc(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", _large_text(), nullable=False),
        # the alert's dag or dag.task, so its recovery can drop what it supersedes
        sa.Column("incident_key", sa.String(512), nullable=False),
        # every alert sweeps the outbox: finding due items must not scan the table
        sa.Index(f"{prefix}outbox_due", "next_attempt_at"),
        sa.Index(f"{prefix}outbox_incident", "incident_key"),
        **options,
    )
    incident_record, incident_current, incident_member, silence = _incident_tables(prefix, metadata, options)
    return _Schema(
        metadata,
        channel_state,
        occurrence,
        incident,
        history,
        outbox,
        incident_record,
        incident_current,
        incident_member,
        silence,
    )


def _incident_tables(prefix: str, metadata: MetaData, options: dict[str, Any]) -> tuple[Table, ...]:
    """The tables of :mod:`airflow_alerting.incidents` (see ``docs/state-sql.md``).

    ``<prefix>incident`` is taken by the delivered alerts of 0.1.0 (``open_incident``), and
    ``create_all`` skips a table whose name exists, so the incidents live in ``incident_record``.
    Index names stay within 23 characters after the prefix (PostgreSQL's 63, a 40-character prefix).
    """
    import sqlalchemy as sa

    utc = _utc_datetime()
    record = sa.Table(
        f"{prefix}incident_record",
        metadata,
        sa.Column("id", sa.String(64), primary_key=True),
        # sha256 of the correlation key, which can be longer than any index key
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("key_text", sa.Text(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("severity", sa.SmallInteger(), nullable=False),
        sa.Column("opened_at", utc(), nullable=False),
        sa.Column("last_seen_at", utc(), nullable=False),
        sa.Column("acknowledged_at", utc()),
        sa.Column("acknowledged_by", sa.Text()),
        sa.Column("resolved_at", utc()),
        sa.Column("resolved_by", sa.Text()),
        sa.Column("digested_at", utc()),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("silenced", sa.Integer(), nullable=False),
        # maintained incrementally under the row lock, so a join never counts the member table
        sa.Column("member_count", sa.Integer(), nullable=False),
        sa.Column("failing_count", sa.Integer(), nullable=False),
        sa.Column("task_count", sa.Integer(), nullable=False),
        sa.Column("dag_count", sa.Integer(), nullable=False),
        # JSON: the first DAG_SAMPLE dag ids in code-point order (DAGs only ever join), kept here so
        # no dialect's collation decides the order
        sa.Column("dag_sample", sa.Text(), nullable=False),
        sa.Column("severity_reasons", _large_text(), nullable=False),  # JSON array
        sa.Column("announcements", _large_text(), nullable=False),  # JSON object by channel
        sa.Index(f"{prefix}incident_record_seen", "last_seen_at"),
        sa.Index(f"{prefix}incident_record_state", "state", "last_seen_at"),
        **options,
    )
    current = sa.Table(
        f"{prefix}incident_current",
        metadata,
        # the row joiners of one correlation key lock to take turns
        sa.Column("key_hash", sa.String(64), primary_key=True),
        sa.Column("incident_id", sa.String(64)),
        **options,
    )
    member = sa.Table(
        f"{prefix}incident_member",
        metadata,
        sa.Column("incident_id", sa.String(64), primary_key=True),
        # sha256 of IncidentMember.key (dag.task[map_index])
        sa.Column("member_hash", sa.String(64), primary_key=True),
        # the key itself breaks ties between equally recent members, as lifecycle.summarise does
        sa.Column("member_key", sa.Text(), nullable=False),
        # sha256 of IncidentMember.task: distinct tasks are counted by it, exactly as summarise does
        sa.Column("task_hash", sa.String(64), nullable=False),
        # Airflow ids are at most 250 characters
        sa.Column("dag_id", sa.String(KEY_LENGTH), nullable=False),
        sa.Column("task_id", sa.String(KEY_LENGTH)),
        sa.Column("map_index", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("first_at", utc(), nullable=False),
        sa.Column("last_at", utc(), nullable=False),
        sa.Column("last_run_id", sa.Text()),
        sa.Column("recovered_at", utc()),
        # a success finds its members across incidents (a DAG success by the prefix)
        sa.Index(f"{prefix}incident_member_ti", "dag_id", "task_id", "map_index"),
        # a join asks "is this DAG / task new to the incident?"
        sa.Index(f"{prefix}incident_member_dag", "incident_id", "dag_id"),
        sa.Index(f"{prefix}incident_member_task", "incident_id", "task_hash"),
        # the most recent members, for the snapshot's sample
        sa.Index(f"{prefix}incident_member_last", "incident_id", "last_at"),
        **options,
    )
    silence = sa.Table(
        f"{prefix}silence",
        metadata,
        sa.Column("id", sa.String(KEY_LENGTH), primary_key=True),
        sa.Column("starts_at", utc(), nullable=False),
        sa.Column("ends_at", utc(), nullable=False),
        sa.Column("document", _large_text(), nullable=False),  # Silence.to_json()
        **options,
    )
    return record, current, member, silence


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


#: free-text history and outbox fields are cut to this many characters (MySQL TEXT holds 64 KiB of UTF-8)
TEXT_LENGTH = 4000


def _json_object(value: Any) -> dict[str, Any]:
    """A JSON object stored as text (an empty value is ``{}``)."""
    import json

    parsed = json.loads(value) if value else {}
    if not isinstance(parsed, dict):
        raise ValueError(f"expected a JSON object, found {type(parsed).__name__}")
    return parsed
