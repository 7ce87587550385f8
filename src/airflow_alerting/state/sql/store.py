"""The SQL store itself: the public API of claims, occurrences and delivered alerts.

The other operations are mixins: claims in :mod:`.claims`, incidents and silences in
:mod:`.incidents`, history and pruning in :mod:`.history`, the outbox in :mod:`.outbox`; the
plumbing they share (engine, tables, transactions, error wrapper) in :mod:`.core`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from airflow_alerting import throttle
from airflow_alerting.model import Severity
from airflow_alerting.state.base import Claim, OccurrenceRecord, OpenIncident, StateStore
from airflow_alerting.state.sql.claims import _ClaimOperations
from airflow_alerting.state.sql.clock import _Clock
from airflow_alerting.state.sql.connection import _upsert_insert
from airflow_alerting.state.sql.history import _PRUNE_BATCH, _HistoryOperations, history_from_row
from airflow_alerting.state.sql.incidents import _IncidentOperations
from airflow_alerting.state.sql.outbox import _OutboxOperations
from airflow_alerting.state.sql.schema import _digest, _json_object, _key, _schema

# importable from here as before (analytics reads history rows with it)
__all__ = ["_PRUNE_BATCH", "SqlStore", "history_from_row"]


@dataclass(frozen=True)
class _OccurrenceSql:
    """The statements of :meth:`SqlStore.record_occurrence`, built once per shape.

    Bound: ``p_fp``, ``p_occurrence``, ``p_group`` and the clock's parameters (``p_horizon``).
    """

    #: the distinct groups in the window, and whether this occurrence's group is among them
    count: Any
    #: the occurrence, unless already recorded (``rowcount`` 1 when it was not)
    insert: Any
    #: PostgreSQL: both in one statement; every part of a ``WITH`` sees the snapshot taken before
    #: the insert, so the count is still "before inserting"
    count_and_insert: Any


@cache
def _occurrence_sql(dialect: str, prefix: str, injected: bool) -> _OccurrenceSql:
    import sqlalchemy as sa

    t = _schema(prefix).occurrence
    clock = _Clock(dialect, injected)
    fp = sa.bindparam("p_fp", type_=sa.String())
    group_key = sa.bindparam("p_group", type_=sa.String())
    # counted before inserting, so this occurrence counts whatever the window (even zero)
    count = sa.select(
        sa.func.count(sa.distinct(t.c.group_key)),
        sa.func.count(sa.case((t.c.group_key == group_key, 1))),
    ).where(t.c.fingerprint == fp, t.c.at > clock.shifted("horizon"))
    values = {
        "fingerprint": fp,
        "occurrence_id": sa.bindparam("p_occurrence", type_=sa.String()),
        "group_key": group_key,
        "at": clock.now(),
    }
    if dialect == "mysql":
        from sqlalchemy.dialects.mysql import insert as mysql_insert

        return _OccurrenceSql(count, mysql_insert(t).prefix_with("IGNORE").values(**values), None)
    insert = (
        _upsert_insert(dialect, t)
        .values(**values)
        .on_conflict_do_nothing(index_elements=[t.c.fingerprint, t.c.occurrence_id])
    )
    both = None
    if dialect == "postgresql":
        inserting = insert.returning(t.c.occurrence_id).cte("inserted")
        both = count.add_columns(sa.select(sa.func.count()).select_from(inserting).scalar_subquery())
    return _OccurrenceSql(count, insert, both)


class SqlStore(_IncidentOperations, _ClaimOperations, _OutboxOperations, _HistoryOperations, StateStore):
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
    :param callback_deadline: ``[alerting] callback_deadline_seconds``: after a call times out, the
        calls of the next ``callback_deadline`` seconds fail at once (the rest of the callback)
    :param io_timeout: the budget of one call (connect, lock waits, statements, retries), after which
        it raises :class:`~airflow_alerting.state.base.StateUnavailableError`; default half of
        ``callback_deadline``, at least 1 s
    """

    name = "sql"

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

    def table_counts(self) -> dict[str, int]:
        """How many rows each table of the store holds, by table name (for operators; one ``COUNT`` each).

        Tables that do not exist yet are created first, so every table is listed.
        """

        def count() -> dict[str, int]:
            import sqlalchemy as sa

            with self._begin() as conn:
                return {
                    table.name: int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())
                    for table in self._schema().tables
                }

        return self._run("table_counts", count)

    # --- occurrences and delivered alerts -------------------------------------------------

    def _record_occurrence(
        self, fingerprint: str, occurrence_id: str, now: datetime, window: timedelta, group: str
    ) -> OccurrenceRecord:
        fp = _key(fingerprint)
        group_key = _digest(group)
        clock = self._clock()
        params = {
            **clock.params(now, horizon=-window),
            "p_fp": fp,
            "p_occurrence": _digest(occurrence_id),
            "p_group": group_key,
        }
        sql = _occurrence_sql(clock.dialect, self.table_prefix, clock.injected)
        if sql.count_and_insert is not None:  # PostgreSQL: one statement, committing on its own
            with self._autocommit() as conn:
                groups, of_this_group, inserted = conn.execute(sql.count_and_insert, params).one()
        else:
            with self._begin() as conn:
                groups, of_this_group = conn.execute(sql.count, params).one()
                inserted = conn.execute(sql.insert, params).rowcount
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
        with self._autocommit() as conn:
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
        # one statement where the database can return what it deletes, committing on its own
        with self._autocommit() as conn:
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
