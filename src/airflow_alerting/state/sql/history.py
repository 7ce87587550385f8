"""History in SQL: recording decisions, reading them back, and deleting what has expired.

Pruning is here too because history is what grows: :meth:`append_history` prunes every
``prune_every`` calls, and :meth:`prune`/:meth:`prune_state` delete expired rows of every table.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_alerting.model import HistoryEntry
from airflow_alerting.state.base import OUTBOX_ITEM_MAX_AGE
from airflow_alerting.state.sql.connection import _ENGINES_LOCK
from airflow_alerting.state.sql.core import _SqlCore, log
from airflow_alerting.state.sql.schema import CAUSE_LENGTH, TEXT_LENGTH, _add_history_columns, _as_utc, _key

#: rows deleted per statement by a prune: a statement deleting months of history at once could
#: outlast the statement timeout of the I/O budget and then never make progress
_PRUNE_BATCH = 1000

#: history rows inserted by one statement for sure: fewer than SQLAlchemy's batch of 1000, and
#: within every driver's limit on bound parameters
_ONE_STATEMENT_ROWS = 500

# append_history calls per (URL, prefix) in this process: the DAG processor builds a store per
# callback, and a per-instance count would prune on every one of them
_HISTORY_CALLS: dict[tuple[str, str], int] = {}

# (URL, prefix) -> the history columns added after 0.1 that the table has (after adding them)
_HISTORY_COLUMNS: dict[tuple[str, str], frozenset[str]] = {}

#: the history columns added after 0.1 (see ``schema._history_added_columns``)
_ADDED_HISTORY_COLUMNS = frozenset({"incident_id", "dag_id", "task_id", "alert_id", "cause"})


class _HistoryOperations(_SqlCore):
    """The history and pruning methods of :class:`~airflow_alerting.state.sql.SqlStore`."""

    # --- public StateStore API ------------------------------------------------------------

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

    # --- running them ---------------------------------------------------------------------

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
                "detail": entry.detail[:TEXT_LENGTH],
                "run_id": entry.run_id[:255] if entry.run_id is not None else None,
                "why": entry.why[:TEXT_LENGTH],
                **{name: value for name, value in _added_history_values(entry).items() if name in added},
            }
            for entry in entries
        ]
        # up to a few hundred rows are one statement (SQLAlchemy's "insertmanyvalues" batches 1000),
        # which commits on its own; more may be several statements, made atomic by a transaction
        with self._autocommit() if len(rows) <= _ONE_STATEMENT_ROWS else self._begin() as conn:
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
        with self._autocommit() as conn:
            rows = conn.execute(sa.select(*columns).order_by(t.c.id.desc()).limit(limit)).all()
        return [history_from_row(row._mapping) for row in rows]


def _added_history_values(entry: HistoryEntry) -> dict[str, Any]:
    return {
        "incident_id": entry.incident_id[:64] if entry.incident_id is not None else None,
        "dag_id": _key(entry.dag_id) if entry.dag_id is not None else None,
        "task_id": _key(entry.task_id) if entry.task_id is not None else None,
        "alert_id": entry.alert_id[:64] if entry.alert_id is not None else None,
        "cause": entry.cause[:CAUSE_LENGTH] if entry.cause is not None else None,
    }


def history_from_row(row: Any) -> HistoryEntry:
    """A history entry from a row (a mapping) of the history table; missing added columns read as ``None``.

    :param row: the row's mapping (``Row._mapping``)
    """
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
