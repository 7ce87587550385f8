"""Incident text for the e-mail and PagerDuty renderers (private to :mod:`airflow_alerting.render`).

A thin layer over the shared ``incident_*`` helpers of :mod:`airflow_alerting.render.text`
(so times, titles and counts read the same on every channel), adding what these two
renderers need on top: samples as lists with a separate "not shown" count, and the sentence
each action leads with.  Everything returned is plain text that has been through
:func:`~airflow_alerting.render.redact.sanitize`; every list is capped here, whatever the
caller passed in, because an incident may be built from hundreds of members.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from airflow_alerting.incidents.model import Incident, IncidentMember
from airflow_alerting.model import Notification, NotificationAction
from airflow_alerting.render import text as t
from airflow_alerting.render.redact import sanitize

#: longest DAG id or task key shown; Airflow allows 250-character ids, which is already a lot
NAME_LIMIT = 250


def title(incident: Incident) -> str:
    """The incident's root cause on one line: ``"OperationalError: could not connect to server"``.

    :param incident: the incident
    :return: sanitized, at most :data:`~airflow_alerting.render.text.TITLE_LIMIT` characters, never empty
    """
    return t.incident_title(incident)


def name(value: str) -> str:
    """A DAG id or task key made safe to show on one line."""
    return t.truncate(t.one_line(sanitize(value[: 2 * NAME_LIMIT])), NAME_LIMIT)


def when(value: datetime | None) -> str:
    """``"2024-05-01 12:00 UTC"`` (as every channel shows times), ``"unknown"`` for ``None``."""
    return t.incident_time(value) or "unknown"


def minutes(period: timedelta) -> int:
    """Whole minutes, rounded up and at least 1, so a 20-second outage does not read "0 min"."""
    return max(1, math.ceil(period.total_seconds() / 60))


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def counts(incident: Incident) -> str:
    """``"500 failures in 480 tasks across 20 DAGs"``."""
    return t.incident_counts(incident)


def failing(incident: Incident) -> str:
    """``"312 of 480 task instances still failing"``."""
    return f"{incident.failing_count} of {_plural(incident.member_count, 'task instance')} still failing"


def severity(incident: Incident) -> str:
    """``"critical (blast radius: 20 DAGs affected, raised to critical)"``."""
    reasons = t.incident_reasons_text(incident)
    return f"{incident.severity.label} ({reasons})" if reasons else incident.severity.label


def dag_sample(incident: Incident, limit: int) -> tuple[list[str], int]:
    """The first ``limit`` DAG ids of the snapshot's sample, and how many DAGs are not shown.

    :return: sanitized ids, and ``dag_count`` minus the number shown (never negative)
    """
    shown = [name(dag_id) for dag_id in incident.dag_ids[:limit]]
    return shown, max(0, max(incident.dag_count, len(incident.dag_ids)) - len(shown))


def member_line(member: IncidentMember) -> str:
    """``"my_dag.load[3]: 2 failures, last 2024-05-01 12:00:00 UTC"`` (``", recovered"`` if so)."""
    text = f"{name(member.key)}: {_plural(member.failures, 'failure')}"
    if member.last_at is not None:
        text += f", last {when(member.last_at)}"
    if not member.failing:
        text += ", recovered"
    return text


def member_sample(incident: Incident, limit: int) -> tuple[list[IncidentMember], int]:
    """The first ``limit`` members (most recent first), and how many task instances are not shown."""
    shown = list(incident.members[:limit])
    return shown, max(0, max(incident.member_count, len(incident.members)) - len(shown))


def more(count: int) -> str | None:
    """``"and 455 more"`` or ``None``."""
    return f"and {count} more" if count > 0 else None


def folded_in(n: Notification) -> str | None:
    """What joined the incident: ``"Since the last message: 12 more failures from ... across: a.b"``.

    :param n: the notification (its ``decision.suppressed`` is what was folded in)
    :return: text, or ``None`` when nothing was folded in
    """
    text = t.incident_follow_up_text(n)
    return f"Since the last message: {text}" if text else None


def escalated(incident: Incident) -> str:
    """``"Severity raised to critical: blast radius: 20 DAGs affected"`` (the latest reason)."""
    text = f"Severity raised to {incident.severity.label}"
    if incident.severity_reasons:
        latest = incident.severity_reasons[-1]
        text += f": {t.truncate(t.one_line(sanitize(latest[: 2 * t.TITLE_LIMIT])), t.TITLE_LIMIT)}"
    return text


def renotified(incident: Incident) -> str:
    """``"Not acknowledged and still failing after 45 min"``."""
    failing_for = minutes(incident.last_seen_at - incident.opened_at)
    return f"Not acknowledged and still failing after {failing_for} min"


def acknowledged(incident: Incident) -> str:
    """``"Acknowledged by alice at 2024-05-01 12:04 UTC"``."""
    return t.incident_acknowledged_text(incident) or "Acknowledged"


def resolved(incident: Incident) -> str:
    """``"Recovered after 42 min: all 480 tasks succeeded again"`` (or ``"Resolved by alice ..."``)."""
    took = incident.time_to_resolve
    after = f" after {minutes(took)} min" if took is not None else ""
    if incident.resolved_by in (None, "recovery"):
        return f"Recovered{after}: all {_plural(incident.task_count, 'task')} succeeded again"
    text = f"Resolved by {name(incident.resolved_by or '')}{after}"
    if incident.failing_count > 0:
        text += f" ({incident.failing_count} still failing)"
    return text


def action_note(n: Notification, incident: Incident) -> str | None:
    """The sentence that says why this message was sent, for every action but ``ANNOUNCE``.

    :param n: the notification
    :param incident: ``n.incident``
    :return: text, or ``None``
    """
    action = n.action
    if action is NotificationAction.ESCALATE:
        return escalated(incident)
    if action is NotificationAction.RENOTIFY:
        return renotified(incident)
    if action is NotificationAction.ACKNOWLEDGE:
        return acknowledged(incident)
    if action is NotificationAction.RESOLVE:
        return resolved(incident)
    if action in (NotificationAction.FOLLOW_UP, NotificationAction.UPDATE):
        return folded_in(n)
    return None


def status_label(n: Notification, incident: Incident) -> str:
    """``"RESOLVED"``, ``"ACKNOWLEDGED"`` or the upper-case severity, for headlines."""
    if n.action is NotificationAction.RESOLVE:
        return "RESOLVED"
    if n.action is NotificationAction.ACKNOWLEDGE:
        return "ACKNOWLEDGED"
    return incident.severity.label.upper()


_HEADLINE_PREFIX = {
    NotificationAction.FOLLOW_UP: "Update: ",
    NotificationAction.UPDATE: "Update: ",
    NotificationAction.ESCALATE: "Escalated: ",
    NotificationAction.RENOTIFY: "Still failing: ",
}


def headline(n: Notification, incident: Incident) -> str:
    """``"[CRITICAL] Escalated: OperationalError: could not connect to server"``."""
    return f"[{status_label(n, incident)}] {_HEADLINE_PREFIX.get(n.action, '')}{title(incident)}"


def shows_error(n: Notification) -> bool:
    """Whether the latest error is worth showing: not once everything recovered."""
    return n.action is not NotificationAction.RESOLVE and not n.resolved
