"""The outbox in SQL: undelivered notifications kept for redelivery, one row per item.

Sweepers take due items with ``FOR UPDATE SKIP LOCKED`` (PostgreSQL and MySQL/MariaDB; SQLite
serialises writers), so concurrent sweeps get disjoint items.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import cache
from typing import Any

from airflow_alerting import metrics
from airflow_alerting.state.base import OutboxItem
from airflow_alerting.state.sql.clock import _Clock
from airflow_alerting.state.sql.connection import _upsert_insert
from airflow_alerting.state.sql.core import _SqlCore, log
from airflow_alerting.state.sql.schema import TEXT_LENGTH, _json_object, _key, _schema

#: ``next_attempt_at`` of an outbox row that cannot be read: never due again, pruned by age.
#: Within MySQL's DATETIME range (year 9999 at most).
_QUARANTINED_UNTIL = datetime(9000, 1, 1, tzinfo=timezone.utc)


_COLUMNS = (
    "channel",
    "notification",
    "created_at",
    "next_attempt_at",
    "attempts",
    "last_error",
    "incident_key",
)


@dataclass(frozen=True)
class _OutboxSql:
    """The outbox statements of the alert path, built once per shape (``v_<column>`` bound)."""

    #: PostgreSQL and SQLite: the upsert of an item (``None`` on MySQL, built per call there)
    add: Any
    #: ``p_id``
    remove: Any
    #: PostgreSQL: take due items in one statement: ``p_limit`` and the clock's parameters
    claim: Any


@cache
def _outbox_sql(dialect: str, prefix: str, injected: bool) -> _OutboxSql:
    import sqlalchemy as sa

    t = _schema(prefix).outbox
    clock = _Clock(dialect, injected)
    values = {name: sa.bindparam(f"v_{name}", type_=t.c[name].type) for name in _COLUMNS}
    add = None
    if dialect != "mysql":
        add = (
            _upsert_insert(dialect, t)
            .values(id=sa.bindparam("v_id", type_=t.c.id.type), **values)
            .on_conflict_do_update(index_elements=[t.c.id], set_=values)
        )
    claim = None
    if dialect == "postgresql":
        due = (
            sa.select(t.c.id)
            .where(t.c.next_attempt_at <= clock.now())
            .order_by(t.c.created_at, t.c.id)
            .limit(sa.bindparam("p_limit", type_=sa.Integer()))
            # sweepers running at once take different items instead of queueing on the same rows
            .with_for_update(skip_locked=True)
        )
        claim = (
            sa.update(t).where(t.c.id.in_(due)).values(next_attempt_at=clock.shifted("lease")).returning(*t.c)
        )
    return _OutboxSql(
        add=add, remove=sa.delete(t).where(t.c.id == sa.bindparam("p_id", type_=sa.String())), claim=claim
    )


class _OutboxOperations(_SqlCore):
    """The outbox methods of :class:`~airflow_alerting.state.sql.SqlStore`."""

    # --- public StateStore API ------------------------------------------------------------

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

    # --- running them ---------------------------------------------------------------------

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
        clock = self._clock()
        sql = _outbox_sql(clock.dialect, self.table_prefix, clock.injected)
        with self._autocommit() as conn:
            if sql.add is None:  # MySQL
                from sqlalchemy.dialects.mysql import insert as mysql_insert

                conn.execute(
                    mysql_insert(t).values(id=_key(item.id), **values).on_duplicate_key_update(**values)
                )
            else:
                bound = {"v_id": _key(item.id), **{f"v_{name}": value for name, value in values.items()}}
                conn.execute(sql.add, bound)

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
        take = sa.update(t).values(next_attempt_at=clock.shifted("lease"))
        items: list[OutboxItem] = []
        claim = _outbox_sql(clock.dialect, self.table_prefix, clock.injected).claim
        if claim is not None:
            # PostgreSQL, one statement: the due rows are locked, moved and returned at once, so it
            # commits on its own (the manager sweeps on every alert, and mostly finds nothing due)
            with self._autocommit() as conn:
                rows = conn.execute(claim, {**params, "p_limit": limit}).all()
                for row in sorted(rows, key=lambda r: (r.created_at, r.id)):
                    self._read_item(conn, row, items)
            return items
        with self._begin() as conn:
            ids = list(conn.execute(due, params).scalars())
            if not ids:
                return []
            conn.execute(take.where(t.c.id.in_(ids)), params)
            rows = conn.execute(sa.select(t).where(t.c.id.in_(ids)).order_by(*order)).all()
            for row in rows:
                self._read_item(conn, row, items)
        return items

    def _read_item(self, conn: Any, row: Any, items: list[OutboxItem]) -> None:
        try:
            items.append(_outbox_item(row))
        except Exception as exc:
            # one unreadable row (a newer version's format, a truncated write) must not stop the
            # sweep of every other item: park it where no sweep finds it; it is pruned by age
            self._quarantine(conn, row.id, exc)

    def _quarantine(self, conn: Any, item_id: str, exc: Exception) -> None:
        import sqlalchemy as sa

        t = self._schema().outbox
        reason = f"quarantined by the SQL state store: cannot read the item: {type(exc).__name__}: {exc}"
        conn.execute(
            sa.update(t)
            .where(t.c.id == item_id)
            .values(next_attempt_at=_QUARANTINED_UNTIL, last_error=reason[:TEXT_LENGTH])
        )
        log.error("alerting outbox item %r cannot be read, quarantined: %s", item_id, reason)
        metrics.incr("outbox", "quarantined")

    def _outbox_update(self, item: OutboxItem) -> None:
        import sqlalchemy as sa

        t = self._schema().outbox
        with self._autocommit() as conn:
            conn.execute(sa.update(t).where(t.c.id == _key(item.id)).values(**self._outbox_values(item)))

    def _outbox_remove(self, item_id: str) -> None:
        clock = self._clock()
        remove = _outbox_sql(clock.dialect, self.table_prefix, clock.injected).remove
        with self._autocommit() as conn:
            conn.execute(remove, {"p_id": _key(item_id)})

    def _outbox_depth(self) -> int:
        import sqlalchemy as sa

        t = self._schema().outbox
        with self._autocommit() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one())

    def _outbox_drop(self, incident_key: str) -> int:
        import sqlalchemy as sa

        t = self._schema().outbox
        with self._autocommit() as conn:
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
