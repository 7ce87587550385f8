"""Pure incident rules: joining, blast radius, recovery, acknowledgement, resolution.

No I/O and no clock of their own, like :mod:`airflow_alerting.throttle`.  The document stores
apply them read-modify-write on the full member list; the SQL store keeps members in a table and
applies the same rules (:func:`raised_severity`) inside one transaction, and is tested against these.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

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
    summary = _joined_summary(incident, members, occurrence.member_key, current, member)
    severity, reasons = raised_severity(
        severity, reasons, dag_count=summary["dag_count"], task_count=summary["task_count"], rules=rules
    )
    # one replace() of the 21-field incident, not three: every failure of a storm pays for it
    updated = replace(
        incident,
        last_seen_at=max(incident.last_seen_at, at),
        failures=incident.failures + 1,
        silenced=incident.silenced + (1 if occurrence.silenced else 0),
        severity=severity,
        severity_reasons=reasons,
        **summary,
    )
    return IncidentJoin(updated, opened=opened, new_member=new_member, previous_severity=previous), members


def summarise(incident: Incident, members: Mapping[str, IncidentMember]) -> Incident:
    """Recompute the counts and samples of ``incident`` from its full member map."""
    return replace(incident, **_summary(members))


def _joined_summary(
    incident: Incident,
    members: Mapping[str, IncidentMember],
    key: str,
    current: IncidentMember | None,
    member: IncidentMember,
) -> dict[str, Any]:
    """What :func:`_summary` of ``members`` returns, from ``incident``'s counts and samples and the
    one member that changed (``current`` became ``member``, at ``key``).

    A storm's incident has hundreds of members and every failure joins it: recounting them all
    (and ordering them for the sample) made each failure cost more than the one before.  A join
    only ever moves a member's latest failure forward, so the new sample is the best of the old
    sample and the changed member; a member seen before keeps the task and DAG counts; only a
    new member looks for another member of its task (and of its DAG when the DAG sample is cut).

    :param members: the member map with ``member`` in it
    """
    before = len(members) - (1 if current is None else 0)
    if incident.member_count != before or len(incident.members) != min(MEMBER_SAMPLE, before):
        return _summary(members)  # counts not made from this map (e.g. another sample size): recount
    sample = [m for m in incident.members if m.key != key]
    sample.append(member)
    failing = incident.failing_count + (1 if member.failing else 0)
    if current is not None and current.failing:
        failing -= 1
    task_count, dag_count, dag_ids = incident.task_count, incident.dag_count, incident.dag_ids
    if current is None:
        task, dag = member.task, member.dag_id
        if not _task_has_another_member(incident.members, members, key, task):
            task_count += 1
        sampled_all = len(dag_ids) == dag_count
        if dag not in dag_ids and not sampled_all:
            # a recent member of the DAG is usually in the sample; only a miss looks at them all
            seen = any(m.dag_id == dag for m in incident.members) or any(
                m.dag_id == dag for k, m in members.items() if k != key
            )
        else:
            seen = dag in dag_ids
        if not seen:
            dag_count += 1
            dag_ids = tuple(sorted((*dag_ids, dag))[:DAG_SAMPLE])
    return {
        "members": tuple(heapq.nlargest(MEMBER_SAMPLE, sample, key=_recency)),
        "member_count": len(members),
        "failing_count": failing,
        "task_count": task_count,
        "dag_ids": dag_ids,
        "dag_count": dag_count,
    }


def _task_has_another_member(
    sample: Sequence[IncidentMember], members: Mapping[str, IncidentMember], key: str, task: str
) -> bool:
    """Whether a member other than ``key`` belongs to ``task`` (``dag.task``).

    The members of a task have the key ``task`` or ``task[i]`` (:func:`member_key`), so the keys
    narrow the search to candidates, each confirmed: no member object is built or compared for
    the tens of thousands of other members a storm's incident holds, and a recent sibling (a
    mapped task's instances fail together) is found in the sample first.
    """
    if any(m.task == task and m.key != key for m in sample):
        return True
    same = members.get(task)
    if task != key and same is not None and same.task == task:
        return True
    prefix = task + "["
    return any(k != key and k.startswith(prefix) and members[k].task == task for k in members)


def _summary(members: Mapping[str, IncidentMember]) -> dict[str, Any]:
    """The counts and samples of an incident with ``members``, as :class:`Incident` field values."""
    # only the sample is ordered: the most recent MEMBER_SAMPLE, as sorted(reverse=True)[:n] would be
    recent = heapq.nlargest(MEMBER_SAMPLE, members.values(), key=_recency)
    dags = sorted({m.dag_id for m in members.values()})
    return {
        "members": tuple(recent),
        "member_count": len(members),
        "failing_count": sum(1 for m in members.values() if m.failing),
        "task_count": len({m.task for m in members.values()}),
        "dag_ids": tuple(dags[:DAG_SAMPLE]),
        "dag_count": len(dags),
    }


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
