"""Pure incident rules: joining, blast radius, recovery, acknowledgement, resolution.

No I/O and no clock of their own, like :mod:`airflow_alerting.throttle`.  The document stores
apply them read-modify-write on the full member list; the SQL store keeps members in a table and
applies the same rules (:func:`raised_severity`) inside one transaction, and is tested against these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from airflow_alerting.incidents.model import (
    DAG_SAMPLE,
    MEMBER_SAMPLE,
    Incident,
    IncidentJoin,
    IncidentMember,
    IncidentState,
    Occurrence,
    new_incident_id,
)
from airflow_alerting.model import Severity

#: what failures are correlated by, unless the policy says otherwise
DEFAULT_CORRELATE_BY = ("cause",)


@dataclass(frozen=True)
class IncidentRules:
    """How failures become incidents, and how incidents are told (the policy's ``incidents`` section).

    :param correlate_by: what makes failures one incident: ``cause`` (exception type and normalised
        message), ``dag_id``, ``task_id``, ``rule`` (the first classification rule that matched) or
        ``tag:<prefix>`` (the value of the alert's ``<prefix>:<value>`` tag); empty means one incident
        per fingerprint (the dag/task/cause of :mod:`airflow_alerting.fingerprint`)
    :param window: a failure joins an open incident of its key when it comes within this long of the
        incident's latest failure; later, it opens a new incident
    :param update_interval: at most one in-place edit per incident and channel in this interval
        (Slack's ``chat.update`` is rate limited); the final state is always written
    :param repeat_interval: an unacknowledged critical incident that keeps failing is announced
        again after this long (Alertmanager's ``repeat_interval``)
    :param blast_radius_dags: an incident affecting this many DAGs is raised to ``blast_radius_severity``
        (0 disables)
    :param blast_radius_tasks: ... or this many distinct tasks (0 disables)
    :param blast_radius_severity: the severity a wide incident is raised to
    :param retention: resolved incidents are kept this long (for analytics); open incidents with no
        failure for this long are expired as stale
    """

    correlate_by: tuple[str, ...] = DEFAULT_CORRELATE_BY
    window: timedelta = timedelta(minutes=30)
    update_interval: timedelta = timedelta(seconds=30)
    repeat_interval: timedelta = timedelta(hours=4)
    blast_radius_dags: int = 5
    blast_radius_tasks: int = 25
    blast_radius_severity: Severity = Severity.CRITICAL
    retention: timedelta = timedelta(days=7)


def raised_severity(
    severity: Severity, reasons: tuple[str, ...], *, dag_count: int, task_count: int, rules: IncidentRules
) -> tuple[Severity, tuple[str, ...]]:
    """Apply the blast-radius rule: a wide incident is raised, once, with the reason.

    :param severity: the incident's severity from its members
    :param reasons: the reasons it already carries
    :param dag_count: distinct DAGs affected
    :param task_count: distinct tasks affected
    """
    target = rules.blast_radius_severity
    if severity >= target:
        return severity, reasons
    wide_dags = rules.blast_radius_dags > 0 and dag_count >= rules.blast_radius_dags
    wide_tasks = rules.blast_radius_tasks > 0 and task_count >= rules.blast_radius_tasks
    if not (wide_dags or wide_tasks):
        return severity, reasons
    what = f"{dag_count} DAGs" if wide_dags else f"{task_count} tasks"
    return target, (*reasons, f"blast radius: {what} affected, raised to {target.label}")


def starts_new(incident: Incident | None, occurrence: Occurrence, rules: IncidentRules) -> bool:
    """``True`` when ``occurrence`` opens a new incident rather than joining ``incident``."""
    if incident is None or not incident.is_open:
        return True
    return occurrence.at - incident.last_seen_at > rules.window


def join(
    incident: Incident | None,
    members: Mapping[str, IncidentMember],
    occurrence: Occurrence,
    rules: IncidentRules,
    *,
    previous_id: str | None = None,
) -> tuple[IncidentJoin, dict[str, IncidentMember]]:
    """Add ``occurrence`` to ``incident`` (or open a new one); return the join and the full member map.

    :param incident: the current incident of ``occurrence.key``, if any
    :param members: every member of ``incident`` by :attr:`IncidentMember.key`
    :param previous_id: the id the key pointed at, when its incident is gone (expired)
    """
    opened = starts_new(incident, occurrence, rules)
    at = occurrence.at
    if opened:
        previous: Severity | None = None
        incident = Incident(
            id=new_incident_id(occurrence.key, at, incident.id if incident is not None else previous_id),
            key=occurrence.key,
            title=occurrence.title,
            severity=occurrence.severity,
            # an escalated first failure opens the incident with the reason it is raised
            severity_reasons=occurrence.reasons,
            opened_at=at,
            last_seen_at=at,
        )
        members = {}
    else:
        assert incident is not None  # for mypy: starts_new() is True for None
        previous = incident.severity
    members = dict(members)
    current = members.get(occurrence.member_key)
    new_member = current is None or not current.failing
    if current is None:
        member = IncidentMember(
            dag_id=occurrence.dag_id,
            task_id=occurrence.task_id,
            map_index=occurrence.map_index,
            failures=1,
            first_at=at,
            last_at=at,
            last_run_id=occurrence.run_id,
        )
    else:
        # callbacks can arrive out of order: a late, older failure neither moves the latest
        # failure back nor re-opens a member that recovered after it
        latest = current.last_at is None or at >= current.last_at
        recovered = (
            current.recovered_at if current.recovered_at is not None and at < current.recovered_at else None
        )
        member = replace(
            current,
            failures=current.failures + 1,
            last_at=at if latest else current.last_at,
            last_run_id=occurrence.run_id if latest else current.last_run_id,
            recovered_at=recovered,
        )
    members[occurrence.member_key] = member
    reasons = incident.severity_reasons
    severity = incident.severity
    if occurrence.severity > severity:
        severity = occurrence.severity
        reasons = (*reasons, *occurrence.reasons) if occurrence.reasons else reasons
    updated = summarise(
        replace(
            incident,
            last_seen_at=max(incident.last_seen_at, at),
            failures=incident.failures + 1,
            silenced=incident.silenced + (1 if occurrence.silenced else 0),
        ),
        members,
    )
    severity, reasons = raised_severity(
        severity, reasons, dag_count=updated.dag_count, task_count=updated.task_count, rules=rules
    )
    updated = replace(updated, severity=severity, severity_reasons=reasons)
    return IncidentJoin(updated, opened=opened, new_member=new_member, previous_severity=previous), members


def summarise(incident: Incident, members: Mapping[str, IncidentMember]) -> Incident:
    """Recompute the counts and samples of ``incident`` from its full member map."""
    ordered = sorted(members.values(), key=_recency, reverse=True)
    dags = sorted({m.dag_id for m in ordered})
    return replace(
        incident,
        members=tuple(ordered[:MEMBER_SAMPLE]),
        member_count=len(ordered),
        failing_count=sum(1 for m in ordered if m.failing),
        task_count=len({m.task for m in ordered}),
        dag_ids=tuple(dags[:DAG_SAMPLE]),
        dag_count=len(dags),
    )


def recover(
    incident: Incident,
    members: Mapping[str, IncidentMember],
    *,
    dag_id: str,
    task_id: str | None,
    map_index: int,
    at: datetime,
) -> tuple[Incident, dict[str, IncidentMember], bool]:
    """Mark the members a success recovers; resolve the incident when none is failing any more.

    A task success recovers that task instance; a DAG success (``task_id`` ``None``) recovers every
    member of the DAG, since the whole run succeeded after them.  A success older than a member's
    latest failure recovers nothing (callbacks can arrive out of order).

    :return: the incident, its members, and ``True`` when this call resolved it
    """
    members = dict(members)
    changed = False
    for key, member in members.items():
        if not member.failing or member.dag_id != dag_id:
            continue
        if task_id is not None and (member.task_id != task_id or member.map_index != map_index):
            continue
        if member.last_at is not None and member.last_at > at:
            continue
        members[key] = replace(member, recovered_at=at)
        changed = True
    if not changed:
        return incident, members, False
    updated = summarise(incident, members)
    if updated.failing_count == 0 and updated.is_open:
        return (
            replace(updated, state=IncidentState.RESOLVED, resolved_at=at, resolved_by="recovery"),
            members,
            True,
        )
    return updated, members, False


def acknowledge(incident: Incident, *, by: str, at: datetime) -> Incident | None:
    """The acknowledged incident, or ``None`` when there is nothing to acknowledge (resolved, or already)."""
    if incident.state is not IncidentState.OPEN:
        return None
    return replace(incident, state=IncidentState.ACKNOWLEDGED, acknowledged_at=at, acknowledged_by=by)


def resolve(incident: Incident, *, by: str, at: datetime) -> Incident | None:
    """The incident resolved by hand, or ``None`` when it is already resolved."""
    if not incident.is_open:
        return None
    return replace(incident, state=IncidentState.RESOLVED, resolved_at=at, resolved_by=by)


def is_stale(incident: Incident, now: datetime, rules: IncidentRules) -> bool:
    """Expired state: resolved longer ago, or silent (no failure) longer, than ``rules.retention``."""
    if incident.resolved_at is not None:
        return now - incident.resolved_at > rules.retention
    return now - incident.last_seen_at > rules.retention


def _recency(member: IncidentMember) -> tuple[float, str]:
    moment = member.last_at or member.first_at
    return (moment.timestamp() if moment is not None else 0.0, member.key)
