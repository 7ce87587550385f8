"""The statements and row conversions of the incident tables, shared by :mod:`.incidents`.

A join runs a handful of statements while it holds its key's lock, and building SQLAlchemy
expressions (and their cache keys) costs more CPU than the round trips; in a storm every joiner of
the key waits for that, so the join's statements are built once per table prefix and reused with
bound parameters, as the claim statements are.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

from airflow_alerting.incidents.model import (
    MEMBER_SAMPLE,
    Announcement,
    Incident,
    IncidentMember,
    IncidentState,
)
from airflow_alerting.model import Severity
from airflow_alerting.state.sql.schema import _schema

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Row

_T = TypeVar("_T")


@dataclass(frozen=True)
class _JoinSql:
    """The statements of a join (and of the snapshots every incident method returns)."""

    #: the key's current row, locked: ``p_key``
    pointer: Any
    #: the incident's row, locked: ``p_id``
    record: Any
    #: the incident's row, read: ``p_id``
    record_read: Any
    #: PostgreSQL: the key's current row and its incident's row, both locked: ``p_key`` (no row when
    #: the key has no current row, or no incident)
    pointed: Any
    #: one row: the member's ``member_hash`` (``None`` when it is new), ``last_at``, ``last_run_id``
    #: and ``recovered_at``, and whether the DAG and the task are already in the incident
    #: (``dag_known``, ``task_known``): ``p_id``, ``p_member``, ``p_dag``, ``p_task``
    member: Any
    #: executed with the member's columns
    add_member: Any
    #: another failure of a member: ``p_id``, ``p_member``, ``p_last``, ``p_run``, ``p_recovered``
    fail_member: Any
    #: executed with ``p_id`` and the columns of :func:`_record_values`
    save_record: Any
    #: the members that can be in the sample: ``p_id``
    sample: Any
    #: PostgreSQL: ``save_record`` (its values bound as ``v_<column>``) in a ``WITH``, then ``sample``:
    #: one round trip; the sample does not read the incident's row, and sees the member written by
    #: the statement before
    save_and_sample: Any


@cache
def _join_sql(prefix: str) -> _JoinSql:
    import sqlalchemy as sa

    schema = _schema(prefix)
    record, member, current = schema.incident_record, schema.incident_member, schema.incident_current
    incident_id = sa.bindparam("p_id", type_=sa.String())
    of_incident = member.c.incident_id == incident_id
    mine = sa.and_(of_incident, member.c.member_hash == sa.bindparam("p_member", type_=sa.String()))
    recent = member.alias("recent")
    # the MEMBER_SAMPLE-th latest failure time: only members at least that recent can be in the
    # sample, and the index on (incident_id, last_at) finds them without reading the others
    threshold = (
        sa.select(recent.c.last_at)
        .where(recent.c.incident_id == incident_id)
        .order_by(recent.c.last_at.desc())
        .limit(1)
        .offset(MEMBER_SAMPLE - 1)
        .scalar_subquery()
    )

    def known(condition: Any) -> Any:
        return sa.exists().where(of_incident, condition)

    # one round trip instead of three: an outer join from a one-row table gives a row whether or not
    # the member exists yet
    one = sa.select(sa.literal(1).label("one")).subquery("one")
    dag_known = known(member.c.dag_id == sa.bindparam("p_dag", type_=sa.String()))
    task_known = known(member.c.task_hash == sa.bindparam("p_task", type_=sa.String()))

    sample = sa.select(member).where(of_incident, sa.or_(threshold.is_(None), member.c.last_at >= threshold))
    saved = (
        sa.update(record)
        .where(record.c.id == incident_id)
        .values({name: sa.bindparam(f"v_{name}", type_=record.c[name].type) for name in _RECORD_COLUMNS})
        .returning(record.c.id)
        .cte("saved")
    )
    return _JoinSql(
        pointer=sa.select(current.c.incident_id)
        .where(current.c.key_hash == sa.bindparam("p_key", type_=sa.String()))
        .with_for_update(),
        record=sa.select(record).where(record.c.id == incident_id).with_for_update(),
        record_read=sa.select(record).where(record.c.id == incident_id),
        pointed=sa.select(current.c.incident_id, record)
        .select_from(current.join(record, record.c.id == current.c.incident_id))
        .where(current.c.key_hash == sa.bindparam("p_key", type_=sa.String()))
        .with_for_update(),
        member=sa.select(
            member.c.member_hash,
            member.c.last_at,
            member.c.last_run_id,
            member.c.recovered_at,
            dag_known.label("dag_known"),
            task_known.label("task_known"),
        ).select_from(one.outerjoin(member, mine)),
        add_member=sa.insert(member),
        fail_member=sa.update(member)
        .where(mine)
        .values(
            failures=member.c.failures + 1,
            last_at=sa.bindparam("p_last", type_=member.c.last_at.type),
            last_run_id=sa.bindparam("p_run", type_=sa.Text()),
            recovered_at=sa.bindparam("p_recovered", type_=member.c.recovered_at.type),
        ),
        save_record=sa.update(record).where(record.c.id == incident_id),
        sample=sample,
        # add_cte: a data-modifying WITH runs whether or not the query reads it
        save_and_sample=sample.add_cte(saved),
    )


def _member_sample(conn: Connection, prefix: str, incident_id: str) -> tuple[IncidentMember, ...]:
    """The MEMBER_SAMPLE most recent members, ordered exactly as ``lifecycle.summarise`` orders them."""
    return _sample_of(conn.execute(_join_sql(prefix).sample, {"p_id": incident_id}).all())


def _sample_of(rows: Sequence[Row[Any]]) -> tuple[IncidentMember, ...]:
    """The member sample from the rows of ``_JoinSql.sample``."""
    # ties are broken by key in Python, so no database collation decides the order
    members = sorted((_member_from_row(row) for row in rows), key=_recency, reverse=True)
    return tuple(members[:MEMBER_SAMPLE])


#: the ``incident_record`` columns :func:`_record_values` gives
_RECORD_COLUMNS = (
    "state",
    "severity",
    "last_seen_at",
    "acknowledged_at",
    "acknowledged_by",
    "resolved_at",
    "resolved_by",
    "digested_at",
    "failures",
    "silenced",
    "member_count",
    "failing_count",
    "task_count",
    "dag_count",
    "dag_sample",
    "severity_reasons",
    "announcements",
)


def _record_values(incident: Incident) -> dict[str, Any]:
    """The ``incident_record`` columns a change can touch."""
    return {
        "state": incident.state.value,
        "severity": int(incident.severity),
        "last_seen_at": incident.last_seen_at,
        "acknowledged_at": incident.acknowledged_at,
        "acknowledged_by": incident.acknowledged_by,
        "resolved_at": incident.resolved_at,
        "resolved_by": incident.resolved_by,
        "digested_at": incident.digested_at,
        "failures": incident.failures,
        "silenced": incident.silenced,
        "member_count": incident.member_count,
        "failing_count": incident.failing_count,
        "task_count": incident.task_count,
        "dag_count": incident.dag_count,
        "dag_sample": _dumps(list(incident.dag_ids)),
        "severity_reasons": _dumps(list(incident.severity_reasons)),
        "announcements": _dumps({k: a.to_json() for k, a in incident.announcements.items()}),
    }


def _incident_from_row(row: Row[Any], members: tuple[IncidentMember, ...] = ()) -> Incident:
    return Incident(
        id=row.id,
        key=row.key_text,
        title=row.title,
        severity=Severity(int(row.severity)),
        opened_at=row.opened_at,
        last_seen_at=row.last_seen_at,
        state=IncidentState(row.state),
        severity_reasons=tuple(str(r) for r in _json(row.severity_reasons, list)),
        failures=int(row.failures),
        silenced=int(row.silenced),
        members=members,
        member_count=int(row.member_count),
        failing_count=int(row.failing_count),
        task_count=int(row.task_count),
        dag_ids=tuple(str(d) for d in _json(row.dag_sample, list)),
        dag_count=int(row.dag_count),
        acknowledged_at=row.acknowledged_at,
        acknowledged_by=row.acknowledged_by,
        resolved_at=row.resolved_at,
        resolved_by=row.resolved_by,
        announcements=MappingProxyType(
            {str(k): Announcement.from_json(v) for k, v in _json(row.announcements, dict).items()}
        ),
        digested_at=row.digested_at,
    )


def _member_from_row(row: Row[Any]) -> IncidentMember:
    return IncidentMember(
        dag_id=row.dag_id,
        task_id=row.task_id,
        map_index=int(row.map_index),
        failures=int(row.failures),
        first_at=row.first_at,
        last_at=row.last_at,
        last_run_id=row.last_run_id,
        recovered_at=row.recovered_at,
    )


def _recency(member: IncidentMember) -> tuple[float, str]:
    # the sample order of lifecycle.summarise: latest failure, then key, most recent first
    moment = member.last_at or member.first_at
    return (moment.timestamp() if moment is not None else 0.0, member.key)


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _json(value: Any, kind: type[_T]) -> _T:
    parsed = json.loads(value) if value else kind()
    if not isinstance(parsed, kind):
        raise ValueError(f"expected a JSON {kind.__name__}, found {type(parsed).__name__}")
    return parsed
