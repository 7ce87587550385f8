"""Incidents in SQL: the rules of :mod:`airflow_alerting.incidents.lifecycle`, exactly.

Every change to an incident is made under locks, in one order, so it cannot deadlock:

1. the ``incident_current`` row of the correlation key (joiners of one key and pruning take turns on it);
2. the ``incident_record`` row of the incident (joins, recoveries, acknowledgements, resolutions,
   announcements and pruning take turns on it, and only its holder touches the incident's members).

Nothing takes a current row while it holds an incident row, and a recovery holds one incident at a time.
On PostgreSQL and MySQL/MariaDB the locks are ``SELECT ... FOR UPDATE``; SQLite's ``BEGIN IMMEDIATE``
serialises every writer anyway.  MySQL transactions here run at ``READ COMMITTED``: under its default
``REPEATABLE READ`` a read made before taking a lock would pin a snapshot older than what the previous
lock holder committed, and next-key locks on the member indexes would make joins of different
incidents wait for each other.

Counts are kept in the incident row and changed by each join and recovery under its lock (distinct
tasks and DAGs with an existence check), so they are exact without counting the member table.
Times are the caller's (:attr:`Occurrence.at`, ``now``): the manager's clock is the authority for
incidents, unlike claims, which use the database's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from airflow_alerting.incidents import lifecycle
from airflow_alerting.incidents.model import (
    DAG_SAMPLE,
    Announcement,
    Incident,
    IncidentJoin,
    IncidentMember,
    IncidentState,
    Occurrence,
    new_incident_id,
)
from airflow_alerting.model import Severity
from airflow_alerting.state.base import StateUnavailableError
from airflow_alerting.state.sql.connection import _upsert_insert
from airflow_alerting.state.sql.incident_sql import (
    _dumps,
    _incident_from_row,
    _join_sql,
    _json,
    _member_sample,
    _record_values,
    _sample_of,
)
from airflow_alerting.state.sql.schema import _digest
from airflow_alerting.state.sql.silences import _SilenceOperations

if TYPE_CHECKING:
    from sqlalchemy import Table
    from sqlalchemy.engine import Connection, Row

    from airflow_alerting.incidents.lifecycle import IncidentRules

_T = TypeVar("_T")

#: a join finds its key's current row missing only on the key's first failure, or when pruning just
#: deleted it; each retry means one of those happened, so a few are plenty
_JOIN_ATTEMPTS = 10
#: ids per ``IN (...)`` list when several incidents are changed at once
_CHUNK = 200
_OPEN = IncidentState.OPEN.value
_ACKNOWLEDGED = IncidentState.ACKNOWLEDGED.value
_RESOLVED = IncidentState.RESOLVED.value


class _IncidentOperations(_SilenceOperations):
    """The incident methods of :class:`~airflow_alerting.state.sql.SqlStore`."""

    # --- public StateStore API ------------------------------------------------------------

    def join_incident(self, occurrence: Occurrence, rules: IncidentRules) -> IncidentJoin:
        """Add a failure to the open incident of ``occurrence.key``, or open a new one (``lifecycle.join``).

        Joiners of one key take turns on its ``incident_current`` row, so concurrent joins each see
        the last one's result: exactly one of them opens the incident, and every count is exact.

        :param occurrence: the failure, with the manager's time in ``occurrence.at``
        :param rules: the window and blast-radius rules
        :return: the incident after the join (members and dag ids sampled, counts complete)
        """
        return self._run("join_incident", lambda: self._join_incident(occurrence, rules))

    def incident(self, incident_id: str) -> Incident | None:
        """The incident with ``incident_id``, or ``None``.

        :param incident_id: :attr:`Incident.id`
        """
        return self._run("incident", lambda: self._incident(incident_id))

    def incidents(self, *, states: Sequence[IncidentState] = (), limit: int = 100) -> list[Incident]:
        """Incidents, most recently seen first.

        :param states: only incidents in these states (all when empty)
        :param limit: at most this many
        """
        if limit <= 0:
            return []
        return self._run("incidents", lambda: self._incidents(states, limit))

    def record_announcement(self, incident_id: str, announcement: Announcement) -> None:
        """Remember where the incident was announced on ``announcement.channel``, replacing that channel's.

        :param incident_id: :attr:`Incident.id`; an unknown id changes nothing
        :param announcement: the channel's message
        """
        self._run("record_announcement", lambda: self._record_announcement(incident_id, announcement))

    def recover_members(
        self, dag_id: str, task_id: str | None, map_index: int, *, now: datetime
    ) -> list[Incident]:
        """Mark the failing members a success recovers in every open incident (``lifecycle.recover``).

        :param dag_id: the DAG that succeeded
        :param task_id: the task that succeeded; ``None`` for a DAG success (all of its members recover)
        :param map_index: the mapped instance (ignored for a DAG success)
        :param now: when it succeeded; members that failed later stay failing
        :return: the incidents this call resolved; concurrent callers never return the same one
        """
        return self._run("recover_members", lambda: self._recover_members(dag_id, task_id, map_index, now))

    def acknowledge_incident(self, incident_id: str, *, by: str, now: datetime) -> Incident | None:
        """Acknowledge an open incident; ``None`` when unknown, resolved or already acknowledged.

        :param incident_id: :attr:`Incident.id`
        :param by: who
        :param now: when
        """
        return self._run(
            "acknowledge_incident",
            lambda: self._transition(
                incident_id,
                _OPEN,
                {"state": _ACKNOWLEDGED, "acknowledged_at": now, "acknowledged_by": by},
            ),
        )

    def resolve_incident(self, incident_id: str, *, by: str, now: datetime) -> Incident | None:
        """Resolve an open (or acknowledged) incident by hand; ``None`` when unknown or already resolved.

        :param incident_id: :attr:`Incident.id`
        :param by: who
        :param now: when
        """
        return self._run(
            "resolve_incident",
            lambda: self._transition(
                incident_id, None, {"state": _RESOLVED, "resolved_at": now, "resolved_by": by}
            ),
        )

    def mark_digested(self, incident_ids: Sequence[str], *, now: datetime) -> None:
        """Record that the maintenance digest reported these incidents at ``now``.

        :param incident_ids: :attr:`Incident.id` values; unknown ones are ignored
        :param now: when
        """
        if incident_ids:
            self._run("mark_digested", lambda: self._mark_digested(incident_ids, now))

    def prune_incidents(self, *, now: datetime, rules: IncidentRules) -> int:
        """Delete stale incidents (``lifecycle.is_stale``) with their members, and silences that ended
        more than ``rules.retention`` ago.

        :param now: the manager's time
        :param rules: ``rules.retention`` is how long they are kept
        :return: how many incidents were deleted
        """
        return self._run("prune_incidents", lambda: self._prune_incidents(now, rules))

    # --- joining --------------------------------------------------------------------------

    def _join_incident(self, occurrence: Occurrence, rules: IncidentRules) -> IncidentJoin:
        current = self._schema().incident_current
        key_hash = _digest(occurrence.key)
        sql = _join_sql(self.table_prefix)
        # PostgreSQL locks the current row and its incident's row in one statement, in the order of
        # its FROM list (current first, as the lock order requires); elsewhere, and when the key has
        # no incident yet, the pointer and the incident are read (and locked) one after the other
        both = self._dialect() == "postgresql"
        for _ in range(_JOIN_ATTEMPTS):
            with self._locking() as conn:
                if both:
                    found = conn.execute(sql.pointed, {"p_key": key_hash}).first()
                    if found is not None:
                        return self._join_locked(conn, occurrence, rules, key_hash, found.incident_id, found)
                row = conn.execute(sql.pointer, {"p_key": key_hash}).first()
                if row is not None:
                    return self._join_locked(conn, occurrence, rules, key_hash, row.incident_id)
            # the key's first failure: create the row joiners take turns on, committed on its own, since
            # MySQL's INSERT IGNORE takes a shared lock on an existing key, and two joiners holding it
            # while both asking for the exclusive one would deadlock
            with self._autocommit() as conn:
                conn.execute(self._insert_ignore(current, {"key_hash": key_hash, "incident_id": None}))
        raise StateUnavailableError(f"join_incident: the row of key {key_hash[:12]} kept disappearing")

    def _join_locked(
        self,
        conn: Connection,
        occurrence: Occurrence,
        rules: IncidentRules,
        key_hash: str,
        incident_id: str | None,
        found: Row[Any] | None = None,
    ) -> IncidentJoin:
        """``lifecycle.join``, incrementally, with the key's current row locked (and the incident's
        row, when it is given as ``found``)."""
        sql = _join_sql(self.table_prefix)
        if found is None and incident_id is not None:
            found = conn.execute(sql.record, {"p_id": incident_id}).first()
        current = _incident_from_row(found) if found is not None else None
        at = occurrence.at
        opened = lifecycle.starts_new(current, occurrence, rules)
        previous: Severity | None = None
        if opened:
            base = Incident(
                id=new_incident_id(occurrence.key, at, incident_id),
                key=occurrence.key,
                title=occurrence.title,
                severity=occurrence.severity,
                # an escalated first failure opens the incident with the reason it is raised
                severity_reasons=occurrence.reasons,
                opened_at=at,
                last_seen_at=at,
            )
            self._open_record(conn, base, key_hash)
        else:
            assert current is not None  # for mypy: starts_new() is True for None
            base, previous = current, current.severity

        mine = {"p_id": base.id, "p_member": _digest(occurrence.member_key)}
        task_hash = _digest(IncidentMember(occurrence.dag_id, occurrence.task_id, occurrence.map_index).task)
        looked_up = conn.execute(sql.member, {**mine, "p_dag": occurrence.dag_id, "p_task": task_hash}).one()
        existing = looked_up if looked_up.member_hash is not None else None
        new_dag = new_task = still_recovered = False
        if existing is None:
            # under the lock, so "not there yet" stays true until this insert commits
            new_dag = not looked_up.dag_known
            new_task = not looked_up.task_known
            conn.execute(
                sql.add_member,
                {
                    "incident_id": base.id,
                    "member_hash": mine["p_member"],
                    "member_key": occurrence.member_key,
                    "task_hash": task_hash,
                    "dag_id": occurrence.dag_id,
                    "task_id": occurrence.task_id,
                    "map_index": occurrence.map_index,
                    "failures": 1,
                    "first_at": at,
                    "last_at": at,
                    "last_run_id": occurrence.run_id,
                    "recovered_at": None,
                },
            )
        else:
            # as lifecycle.join: a late, older failure neither moves the latest failure back nor
            # re-opens a member that recovered after it
            latest = at >= existing.last_at
            recovered = existing.recovered_at
            still_recovered = recovered is not None and at < recovered
            conn.execute(
                sql.fail_member,
                {
                    **mine,
                    "p_last": at if latest else existing.last_at,
                    "p_run": occurrence.run_id if latest else existing.last_run_id,
                    "p_recovered": recovered if still_recovered else None,
                },
            )
        was_failing = existing is not None and existing.recovered_at is None
        is_failing = existing is None or not still_recovered
        new_member = not was_failing

        severity, reasons = base.severity, base.severity_reasons
        if occurrence.severity > severity:
            severity = occurrence.severity
            reasons = (*reasons, *occurrence.reasons) if occurrence.reasons else reasons
        dag_ids = base.dag_ids
        if new_dag:
            # DAGs only ever join, so the smallest DAG_SAMPLE so far plus the new one hold the new smallest
            dag_ids = tuple(sorted({*dag_ids, occurrence.dag_id}))[:DAG_SAMPLE]
        updated = replace(
            base,
            last_seen_at=max(base.last_seen_at, at),
            failures=base.failures + 1,
            silenced=base.silenced + (1 if occurrence.silenced else 0),
            member_count=base.member_count + (1 if existing is None else 0),
            failing_count=base.failing_count + int(is_failing) - int(was_failing),
            task_count=base.task_count + (1 if new_task else 0),
            dag_count=base.dag_count + (1 if new_dag else 0),
            dag_ids=dag_ids,
        )
        severity, reasons = lifecycle.raised_severity(
            severity, reasons, dag_count=updated.dag_count, task_count=updated.task_count, rules=rules
        )
        updated = replace(updated, severity=severity, severity_reasons=reasons)
        values = _record_values(updated)
        if conn.dialect.name == "postgresql":
            bound = {"p_id": updated.id, **{f"v_{name}": value for name, value in values.items()}}
            members = _sample_of(conn.execute(sql.save_and_sample, bound).all())
        else:
            conn.execute(sql.save_record, {"p_id": updated.id, **values})
            members = _member_sample(conn, self.table_prefix, updated.id)
        updated = replace(updated, members=members)
        return IncidentJoin(updated, opened=opened, new_member=new_member, previous_severity=previous)

    def _open_record(self, conn: Connection, incident: Incident, key_hash: str) -> None:
        """Insert a new incident and point its key at it (the key's current row is locked)."""
        import sqlalchemy as sa

        schema = self._schema()
        record, member, current = schema.incident_record, schema.incident_member, schema.incident_current
        # the same key opening again at the same instant gets the same id (new_incident_id); the document
        # stores overwrite that incident's document, so its rows are replaced here likewise
        conn.execute(sa.delete(member).where(member.c.incident_id == incident.id))
        conn.execute(sa.delete(record).where(record.c.id == incident.id))
        conn.execute(
            sa.insert(record).values(
                id=incident.id,
                key_hash=key_hash,
                key_text=incident.key,
                title=incident.title,
                opened_at=incident.opened_at,
                **_record_values(incident),
            )
        )
        conn.execute(sa.update(current).where(current.c.key_hash == key_hash).values(incident_id=incident.id))

    def _snapshot(self, conn: Connection, row: Row[Any]) -> Incident:
        """The incident of ``row`` with its member sample, read in the same transaction."""
        return _incident_from_row(row, _member_sample(conn, self.table_prefix, row.id))

    def _insert_ignore(self, table: Table, values: dict[str, Any]) -> Any:
        dialect = self._dialect()
        if dialect == "mysql":
            from sqlalchemy.dialects.mysql import insert as mysql_insert

            return mysql_insert(table).prefix_with("IGNORE").values(**values)
        return _upsert_insert(dialect, table).values(**values).on_conflict_do_nothing()

    # --- reading --------------------------------------------------------------------------

    def _incident(self, incident_id: str) -> Incident | None:
        read = _join_sql(self.table_prefix).record_read
        with self._autocommit() as conn:
            row = conn.execute(read, {"p_id": incident_id}).first()
            if row is None:
                return None
            return self._snapshot(conn, row)

    def _incidents(self, states: Sequence[IncidentState], limit: int) -> list[Incident]:
        import sqlalchemy as sa

        record = self._schema().incident_record
        query = sa.select(record).order_by(record.c.last_seen_at.desc(), record.c.id.desc()).limit(limit)
        if states:
            query = query.where(record.c.state.in_([IncidentState(s).value for s in states]))
        with self._autocommit() as conn:
            rows = conn.execute(query).all()
            return [self._snapshot(conn, row) for row in rows]

    # --- changing -------------------------------------------------------------------------

    def _record_announcement(self, incident_id: str, announcement: Announcement) -> None:
        import sqlalchemy as sa

        record = self._schema().incident_record
        mine = record.c.id == incident_id
        with self._locking() as conn:
            row = conn.execute(sa.select(record.c.announcements).where(mine).with_for_update()).first()
            if row is None:
                return
            merged = {**_json(row.announcements, dict), announcement.channel: announcement.to_json()}
            conn.execute(sa.update(record).where(mine).values(announcements=_dumps(merged)))

    def _recover_members(
        self, dag_id: str, task_id: str | None, map_index: int, now: datetime
    ) -> list[Incident]:
        import sqlalchemy as sa

        schema = self._schema()
        record, member = schema.incident_record, schema.incident_member
        matching = [member.c.dag_id == dag_id, member.c.recovered_at.is_(None)]
        if task_id is not None:
            matching += [member.c.task_id == task_id, member.c.map_index == map_index]
        candidates = (
            sa.select(member.c.incident_id)
            .distinct()
            .select_from(member.join(record, record.c.id == member.c.incident_id))
            .where(*matching, record.c.state != _RESOLVED)
        )
        with self._autocommit() as conn:
            incident_ids = sorted(conn.execute(candidates).scalars())
        resolved: list[Incident] = []
        # one incident per transaction: a recovery never holds two incident locks
        for incident_id in incident_ids:
            with self._locking() as conn:
                mine = record.c.id == incident_id
                row = conn.execute(sa.select(record).where(mine).with_for_update()).first()
                if row is None or row.state == _RESOLVED:
                    continue  # resolved or pruned since the candidates were read
                recovered = conn.execute(
                    sa.update(member)
                    .where(member.c.incident_id == incident_id, *matching, member.c.last_at <= now)
                    .values(recovered_at=now)
                ).rowcount
                if not recovered:
                    continue
                failing = int(row.failing_count) - recovered
                if failing > 0:
                    conn.execute(sa.update(record).where(mine).values(failing_count=failing))
                    continue
                # conditional behind the lock as well: a resolution is reported by exactly one caller
                done = conn.execute(
                    sa.update(record)
                    .where(mine, record.c.state != _RESOLVED)
                    .values(failing_count=0, state=_RESOLVED, resolved_at=now, resolved_by="recovery")
                ).rowcount
                if done == 1:
                    after = conn.execute(sa.select(record).where(mine)).one()
                    resolved.append(self._snapshot(conn, after))
        return resolved

    def _transition(self, incident_id: str, state: str | None, values: dict[str, Any]) -> Incident | None:
        """Apply ``values`` if the incident is in ``state`` (``None``: any open state); the new snapshot."""
        import sqlalchemy as sa

        record = self._schema().incident_record
        mine = record.c.id == incident_id
        condition = record.c.state == state if state is not None else record.c.state != _RESOLVED
        with self._locking() as conn:
            if conn.execute(sa.update(record).where(mine, condition).values(**values)).rowcount != 1:
                return None
            row = conn.execute(sa.select(record).where(mine)).one()
            return self._snapshot(conn, row)

    def _mark_digested(self, incident_ids: Sequence[str], now: datetime) -> None:
        import sqlalchemy as sa

        record = self._schema().incident_record
        ordered = sorted(set(incident_ids))
        with self._locking() as conn:
            for start in range(0, len(ordered), _CHUNK):
                chunk = ordered[start : start + _CHUNK]
                conn.execute(sa.update(record).where(record.c.id.in_(chunk)).values(digested_at=now))

    def _prune_incidents(self, now: datetime, rules: IncidentRules) -> int:
        import sqlalchemy as sa

        schema = self._schema()
        record, member, current = schema.incident_record, schema.incident_member, schema.incident_current
        cutoff = now - rules.retention
        # lifecycle.is_stale: resolved longer ago than the retention, or silent for longer
        stale = sa.or_(
            sa.and_(record.c.resolved_at.is_not(None), record.c.resolved_at < cutoff),
            sa.and_(record.c.resolved_at.is_(None), record.c.last_seen_at < cutoff),
        )
        with self._begin() as conn:
            found = conn.execute(
                sa.select(record.c.id, record.c.key_hash).where(stale).order_by(record.c.id)
            ).all()
        pruned = 0
        for start in range(0, len(found), _CHUNK):
            batch = found[start : start + _CHUNK]
            keys = sorted({row.key_hash for row in batch})
            with self._locking() as conn:
                # current rows before incident rows, the order joiners lock in; then check again, since
                # a join may have made one of them current since it was found
                conn.execute(
                    sa.select(current.c.key_hash)
                    .where(current.c.key_hash.in_(keys))
                    .order_by(current.c.key_hash)
                    .with_for_update()
                ).all()
                confirmed = list(
                    conn.execute(
                        sa.select(record.c.id)
                        .where(record.c.id.in_([row.id for row in batch]), stale)
                        .order_by(record.c.id)
                        .with_for_update()
                    ).scalars()
                )
                if not confirmed:
                    continue
                pointing = current.c.incident_id.in_(confirmed)
                conn.execute(sa.delete(current).where(current.c.key_hash.in_(keys), pointing))
                conn.execute(sa.delete(member).where(member.c.incident_id.in_(confirmed)))
                pruned += conn.execute(sa.delete(record).where(record.c.id.in_(confirmed))).rowcount
        self._prune_silences(cutoff)
        return int(pruned)
