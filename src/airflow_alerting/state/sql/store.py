"""The SQL store itself: the public API, occurrences, delivered alerts, history and the outbox.

Claims are in :mod:`.claims`, incidents and silences in :mod:`.incidents`; the plumbing they
share (engine, tables, transactions, error wrapper) in :mod:`.core`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_alerting import metrics, throttle
from airflow_alerting.model import HistoryEntry, Severity
from airflow_alerting.state.base import (
    OUTBOX_ITEM_MAX_AGE,
    Claim,
    OccurrenceRecord,
    OpenIncident,
    OutboxItem,
    StateStore,
)
from airflow_alerting.state.sql.claims import _ClaimOperations
from airflow_alerting.state.sql.connection import _ENGINES_LOCK, _upsert_insert
from airflow_alerting.state.sql.core import log
from airflow_alerting.state.sql.incidents import _IncidentOperations
from airflow_alerting.state.sql.schema import CAUSE_LENGTH, _add_history_columns, _as_utc, _digest, _key

#: free-text history fields are cut to this many characters (MySQL TEXT holds 64 KiB of UTF-8)
_TEXT_LENGTH = 4000

#: rows deleted per statement by a prune: a statement deleting months of history at once could
#: outlast the statement timeout of the I/O budget and then never make progress
_PRUNE_BATCH = 1000

#: ``next_attempt_at`` of an outbox row that cannot be read: never due again, pruned by age.
#: Within MySQL's DATETIME range (year 9999 at most).
_QUARANTINED_UNTIL = datetime(9000, 1, 1, tzinfo=timezone.utc)

# append_history calls per (URL, prefix) in this process: the DAG processor builds a store per
# callback, and a per-instance count would prune on every one of them
_HISTORY_CALLS: dict[tuple[str, str], int] = {}

# (URL, prefix) -> the history columns added after 0.1 that the table has (after adding them)
_HISTORY_COLUMNS: dict[tuple[str, str], frozenset[str]] = {}


class SqlStore(_IncidentOperations, _ClaimOperations, StateStore):
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

    def outbox_depth(self) -> int:
        """How many items the outbox table holds (one ``COUNT``)."""
        return self._run("outbox_depth", self._outbox_depth)

    def outbox_drop(self, incident_key: str) -> int:
        """Forget every item of ``incident_key`` (the task recovered); return how many.

        :param incident_key: ``dag_id`` or ``dag_id.task_id``, as the items were added with
        """
        return self._run("outbox_drop", lambda: self._outbox_drop(incident_key))

    def prune(self, now: datetime | None = None) -> int:
        """Delete what is older than ``history_retention``; return how many rows.

        History, occurrences, outbox items (by creation), open incidents (by opening) and idle
        channel states (see :meth:`prune_state`).  Incident records and silences have their own
        retention: :meth:`prune_incidents`.

        :param now: the reference time when not using the database clock (default: the local clock)
        """
        return self._run("prune", lambda: self._prune(now or datetime.now(timezone.utc)))

    def prune_state(self, *, now: datetime, retention: timedelta) -> int:
        """Forget throttle, claim, dedup and outbox state nobody will need again; return how many rows.

        * channel states (throttle windows, claims, suppressed counts) whose last send, last
          suppression and claim lease all lie more than ``retention`` ago; a row that was never
          claimed nor suppressed (MySQL's neutral row, mid-claim) is left alone;
        * occurrences recorded and open incidents (``open_incident``) opened more than ``retention`` ago;
        * outbox items created more than ``OUTBOX_ITEM_MAX_AGE`` ago (the manager gave up on them);
        * history older than ``history_retention``.

        :param now: the reference time when not using the database clock
        :param retention: longer than the longest throttle window and escalation period
        """
        if retention <= timedelta(0):
            raise ValueError("retention must be positive")
        return self._run(
            "prune_state",
            lambda: self._prune(now, retention=retention, outbox_age=OUTBOX_ITEM_MAX_AGE),
        )

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

    def _history_columns(self) -> frozenset[str]:
        """The added history columns the table has, adding missing ones once per process."""
        key = self._ready_key()
        with _ENGINES_LOCK:
            known = _HISTORY_COLUMNS.get(key)
        if known is None:
            known = _add_history_columns(self._engine(), self._schema(), log)
            with _ENGINES_LOCK:
                _HISTORY_COLUMNS[key] = known
        return known

    def _append_history(self, entries: Sequence[HistoryEntry]) -> None:
        import sqlalchemy as sa

        t = self._schema().history
        added = self._history_columns()
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
                **{name: value for name, value in _added_history_values(entry).items() if name in added},
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

    def _prune(
        self, now: datetime, *, retention: timedelta | None = None, outbox_age: timedelta | None = None
    ) -> int:
        import sqlalchemy as sa

        schema = self._schema()
        clock = self._clock()
        history_cutoff = clock.shifted("history_cutoff")
        cutoff = clock.shifted("cutoff")
        outbox_cutoff = clock.shifted("outbox_cutoff")
        state = schema.channel_state

        def before(column: Any) -> Any:
            return sa.or_(column.is_(None), column < cutoff)

        expired = (
            (schema.history, schema.history.c.at < history_cutoff),
            (schema.occurrence, schema.occurrence.c.at < cutoff),
            # the manager gives up on items long before this; these were orphaned by a removed deployment
            (schema.outbox, schema.outbox.c.created_at < outbox_cutoff),
            # delivered alerts whose recovery never came (the task was removed, or renamed)
            (schema.incident, schema.incident.c.opened_at < cutoff),
            # forgetting such a row only means the next occurrence is sent as new, which it would be
            # anyway after a window that long; a row with no timestamp at all may be MySQL's neutral
            # row between a claim's two transactions, and deleting it would lose that claim
            (
                state,
                sa.and_(
                    before(state.c.last_sent_at),
                    before(state.c.suppressed_until),
                    before(state.c.claim_expires_at),
                    sa.or_(
                        state.c.last_sent_at.is_not(None),
                        state.c.suppressed_until.is_not(None),
                        state.c.claim_expires_at.is_not(None),
                    ),
                ),
            ),
        )
        params = clock.params(
            now,
            history_cutoff=-self.history_retention,
            cutoff=-(retention or self.history_retention),
            outbox_cutoff=-(outbox_age or self.history_retention),
        )
        started = time.monotonic()
        deleted = 0
        for table, stale in expired:
            key = sa.tuple_(*table.primary_key.columns)
            while True:
                # in batches, each its own transaction, within half the call's budget: what is left
                # over is deleted by the next prune
                with self._begin() as conn:
                    batch = conn.execute(
                        sa.select(*table.primary_key.columns).where(stale).limit(_PRUNE_BATCH), params
                    ).all()
                    if batch:
                        # checked again: a row may have come back to life since it was read
                        keys = [tuple(row) for row in batch]
                        deleted += conn.execute(sa.delete(table).where(key.in_(keys), stale), params).rowcount
                if len(batch) < _PRUNE_BATCH or time.monotonic() - started >= self.io_timeout / 2:
                    break
        if deleted:
            log.debug("alerting SQL store pruned %d expired rows", deleted)
        return int(deleted)

    def _history(self, limit: int) -> list[HistoryEntry]:
        import sqlalchemy as sa

        t = self._schema().history
        added = self._history_columns()
        # a table the added columns could not be added to is read without them
        columns = [c for c in t.columns if c.name in added or c.name not in _ADDED_HISTORY_COLUMNS]
        with self._begin() as conn:
            rows = conn.execute(sa.select(*columns).order_by(t.c.id.desc()).limit(limit)).all()
        return [history_from_row(row._mapping) for row in rows]

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
        items: list[OutboxItem] = []
        with self._begin() as conn:
            ids = list(conn.execute(due, params).scalars())
            if not ids:
                return []
            conn.execute(
                sa.update(t).where(t.c.id.in_(ids)).values(next_attempt_at=clock.shifted("lease")), params
            )
            rows = conn.execute(sa.select(t).where(t.c.id.in_(ids)).order_by(*order)).all()
            for row in rows:
                try:
                    items.append(_outbox_item(row))
                except Exception as exc:
                    # one unreadable row (a newer version's format, a truncated write) must not stop
                    # the sweep of every other item: park it where no sweep finds it; it is pruned by age
                    self._quarantine(conn, row.id, exc)
        return items

    def _quarantine(self, conn: Any, item_id: str, exc: Exception) -> None:
        import sqlalchemy as sa

        t = self._schema().outbox
        reason = f"quarantined by the SQL state store: cannot read the item: {type(exc).__name__}: {exc}"
        conn.execute(
            sa.update(t)
            .where(t.c.id == item_id)
            .values(next_attempt_at=_QUARANTINED_UNTIL, last_error=reason[:_TEXT_LENGTH])
        )
        log.error("alerting outbox item %r cannot be read, quarantined: %s", item_id, reason)
        metrics.incr("outbox", "quarantined")

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

    def _outbox_depth(self) -> int:
        import sqlalchemy as sa

        t = self._schema().outbox
        with self._begin() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one())

    def _outbox_drop(self, incident_key: str) -> int:
        import sqlalchemy as sa

        t = self._schema().outbox
        with self._begin() as conn:
            return int(conn.execute(sa.delete(t).where(t.c.incident_key == incident_key)).rowcount)


def _outbox_item(row: Any) -> OutboxItem:
    return OutboxItem(
        id=row.id,
        channel=row.channel,
        notification=_json_object(row.notification),
        created_at=row.created_at,
        next_attempt_at=row.next_attempt_at,
        attempts=int(row.attempts),
        last_error=row.last_error,
        incident_key=row.incident_key,
    )


def _json_object(value: Any) -> dict[str, Any]:
    parsed = json.loads(value) if value else {}
    if not isinstance(parsed, dict):
        raise ValueError(f"expected a JSON object, found {type(parsed).__name__}")
    return parsed


#: the history columns added after 0.1 (see ``schema._history_added_columns``)
_ADDED_HISTORY_COLUMNS = frozenset({"incident_id", "dag_id", "task_id", "alert_id", "cause"})


def _added_history_values(entry: HistoryEntry) -> dict[str, Any]:
    return {
        "incident_id": entry.incident_id[:64] if entry.incident_id is not None else None,
        "dag_id": _key(entry.dag_id) if entry.dag_id is not None else None,
        "task_id": _key(entry.task_id) if entry.task_id is not None else None,
        "alert_id": entry.alert_id[:64] if entry.alert_id is not None else None,
        "cause": entry.cause[:CAUSE_LENGTH] if entry.cause is not None else None,
    }


def history_from_row(row: Any) -> HistoryEntry:
    """A history entry from a row (a mapping) of the history table; missing added columns read as ``None``."""
    return HistoryEntry(
        at=row["at"],
        fingerprint=row["fingerprint"],
        source=row["source"],
        kind=row["kind"],
        severity=row["severity"],
        channel=row["channel"],
        reason=row["reason"],
        sent=bool(row["sent"]),
        delivered=None if row["delivered"] is None else bool(row["delivered"]),
        detail=row["detail"],
        run_id=row["run_id"],
        why=row["why"],
        incident_id=row.get("incident_id"),
        dag_id=row.get("dag_id"),
        task_id=row.get("task_id"),
        alert_id=row.get("alert_id"),
        cause=row.get("cause"),
    )
