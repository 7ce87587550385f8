"""Format-neutral pieces for notifications about an incident (``Notification.incident``).

Shared by every renderer, like the alert pieces of :mod:`airflow_alerting.render.text` they
build on: everything returned is plain text that has already been through
:func:`~airflow_alerting.render.redact.sanitize`; each renderer adds its own escaping and
length limits.  Every name here is also reachable as ``airflow_alerting.render.text.<name>``.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow_alerting.incidents.model import Incident, IncidentState
from airflow_alerting.model import Notification, NotificationAction
from airflow_alerting.render.redact import sanitize
from airflow_alerting.render.text import (
    SOURCES_SHOWN,
    TITLE_LIMIT,
    _minutes,
    headline,
    one_line,
    truncate,
)

#: DAG ids :func:`incident_dags_text` names before "and N more"
INCIDENT_DAGS_SHOWN = 10
#: task instances :func:`incident_task_lines` names before "and N more"
INCIDENT_TASKS_SHOWN = 8
#: most recent severity reasons :func:`incident_reasons_text` shows
INCIDENT_REASONS_SHOWN = 5


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _untrusted(value: object, limit: int = TITLE_LIMIT) -> str:
    # Only a prefix is scrubbed, for the reason given in message(); the margin keeps a secret that
    # starts inside the shown part from being cut before it is scrubbed.
    raw = value if isinstance(value, str) else "" if value is None else str(value)
    return truncate(one_line(sanitize(raw[: 2 * limit])), limit)


def incident_time(value: datetime | None) -> str:
    """``"2026-01-05 12:00 UTC"``: the same for every reader, whatever their time zone.

    :param value: a timezone-aware datetime (naive ones are taken to be UTC already) or ``None``
    :return: the text, ``""`` for ``None``
    """
    if value is None:
        return ""
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc)
    return value.strftime("%Y-%m-%d %H:%M UTC")


def incident_duration(period: timedelta) -> str:
    """``"42 min"``, ``"3 h 05 min"`` or ``"2 d 4 h"``; at least ``"1 min"``.

    :param period: a duration
    :return: the duration, rounded up to whole minutes
    """
    minutes = _minutes(period)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def incident_title(incident: Incident) -> str:
    """The root cause on one line: ``"OperationalError: could not connect to server"``.

    :param incident: the incident
    :return: sanitized text of at most :data:`TITLE_LIMIT` characters, never empty
    """
    return _untrusted(incident.title) or "Untitled incident"


def incident_label(incident: Incident) -> str:
    """``"CRITICAL"``, ``"CRITICAL, ACKNOWLEDGED"`` or ``"RESOLVED"``.

    :param incident: the incident
    :return: the upper-case label for headlines and subjects
    """
    if incident.state is IncidentState.RESOLVED:
        return "RESOLVED"
    severity = incident.severity.label.upper()
    return f"{severity}, ACKNOWLEDGED" if incident.state is IncidentState.ACKNOWLEDGED else severity


def incident_headline(incident: Incident) -> str:
    """``"[CRITICAL] OperationalError: could not connect to server"``.

    :param incident: the incident
    :return: sanitized one-line headline (fallback text, subjects, summaries)
    """
    return f"[{incident_label(incident)}] {incident_title(incident)}"


def incident_counts(incident: Incident) -> str:
    """``"500 failures in 480 tasks across 20 DAGs"``; the counts are complete, not a sample.

    :param incident: the incident
    :return: the counts line
    """
    return incident.describe()


def incident_dags_text(incident: Incident, shown: int = INCIDENT_DAGS_SHOWN) -> str | None:
    """The affected DAGs: ``"billing, etl_daily, reports and 17 more"``.

    :param incident: the incident
    :param shown: DAG ids named at most (from the incident's sorted sample)
    :return: sanitized text, or ``None`` when the incident names no DAG
    """
    names = [_untrusted(dag_id) for dag_id in incident.dag_ids[: max(0, shown)]]
    if not names:
        return None
    more = max(incident.dag_count, len(incident.dag_ids)) - len(names)
    return ", ".join(names) + (f" and {more} more" if more > 0 else "")


def incident_task_lines(incident: Incident, shown: int = INCIDENT_TASKS_SHOWN) -> list[str]:
    """One line per affected task instance, most recent first, then ``"and N more"``.

    ``"etl.load[3]: 3 failures, last 2026-01-05 12:40 UTC"``; recovered members say so.

    :param incident: the incident
    :param shown: task instances named at most (from the incident's sample)
    :return: sanitized lines, empty when the incident has no members
    """
    lines: list[str] = []
    for member in incident.members[: max(0, shown)]:
        facts = [_plural(member.failures, "failure")]
        if member.last_at is not None:
            facts.append(f"last {incident_time(member.last_at)}")
        if member.recovered_at is not None:
            facts.append(f"recovered {incident_time(member.recovered_at)}")
        lines.append(f"{_untrusted(member.key)}: {', '.join(facts)}")
    more = max(incident.member_count, len(incident.members)) - len(lines)
    if lines and more > 0:
        lines.append(f"and {more} more")
    return lines


def incident_tasks_text(incident: Incident, shown: int = INCIDENT_TASKS_SHOWN) -> str | None:
    """:func:`incident_task_lines` joined with newlines.

    :param incident: the incident
    :param shown: task instances named at most
    :return: sanitized multi-line text, or ``None`` when the incident has no members
    """
    return "\n".join(incident_task_lines(incident, shown)) or None


def incident_seen_text(incident: Incident) -> str:
    """``"first seen 2026-01-05 12:00 UTC, last seen 2026-01-05 12:40 UTC"``.

    :param incident: the incident
    :return: the text
    """
    return f"first seen {incident_time(incident.opened_at)}, last seen {incident_time(incident.last_seen_at)}"


def incident_acknowledged_text(incident: Incident) -> str | None:
    """``"Acknowledged by alice at 2026-01-05 12:30 UTC"``.

    :param incident: the incident
    :return: sanitized text, or ``None`` when nobody acknowledged it
    """
    if incident.acknowledged_at is None and not incident.acknowledged_by:
        return None
    text = "Acknowledged"
    if incident.acknowledged_by:
        text += f" by {_untrusted(incident.acknowledged_by, 100)}"
    if incident.acknowledged_at is not None:
        text += f" at {incident_time(incident.acknowledged_at)}"
    return text


def incident_resolved_text(incident: Incident) -> str | None:
    """``"Resolved at 2026-01-05 13:12 UTC after 1 h 12 min: every affected task recovered"``.

    :param incident: the incident
    :return: sanitized text, or ``None`` while the incident is open
    """
    if incident.state is not IncidentState.RESOLVED:
        return None
    text = "Resolved"
    if incident.resolved_at is not None:
        text += f" at {incident_time(incident.resolved_at)}"
    period = incident.time_to_resolve
    if period is not None and period.total_seconds() >= 0:
        text += f" after {incident_duration(period)}"
    by = incident.resolved_by
    if by == "recovery":
        text += ": every affected task recovered"
    elif by:
        text += f" by {_untrusted(by, 100)}"
    return text


def incident_state_text(incident: Incident) -> str:
    """Where the incident is: ``"open, 470 of 480 task instances still failing"``.

    Acknowledged incidents add who and when, resolved ones when and how
    (:func:`incident_acknowledged_text`, :func:`incident_resolved_text`).

    :param incident: the incident
    :return: sanitized text
    """
    resolved = incident_resolved_text(incident)
    if resolved is not None:
        return resolved
    failing = (
        f"{incident.failing_count} of {_plural(incident.member_count, 'task instance')} still failing"
        if incident.member_count
        else "still failing"
    )
    acknowledged = incident_acknowledged_text(incident)
    if incident.state is IncidentState.ACKNOWLEDGED and acknowledged is not None:
        return f"{acknowledged}; {failing}"
    return f"{incident.state.value}, {failing}"


def incident_reasons_text(incident: Incident, shown: int = INCIDENT_REASONS_SHOWN) -> str | None:
    """Why the incident has its severity, latest last: ``"blast radius: 20 DAGs affected, ..."``.

    :param incident: the incident
    :param shown: most recent reasons shown; older ones are summarised as ``"…"``
    :return: sanitized text joined with ``"; "``, or ``None`` when there are none
    """
    reasons = [_untrusted(r) for r in incident.severity_reasons if r]
    if not reasons:
        return None
    kept = reasons[-max(1, shown) :]
    return ("…; " if len(kept) < len(reasons) else "") + "; ".join(kept)


def incident_follow_up_text(n: Notification) -> str | None:
    """What a ``FOLLOW_UP`` adds: ``"12 more failures from ... to ... across: a.b, c.d"``.

    :param n: the notification (its ``decision.suppressed`` says what was folded in)
    :return: sanitized text, or ``None`` when nothing was folded in
    """
    summary = n.decision.suppressed
    if summary.count <= 0:
        return None
    text = _plural(summary.count, "more failure")
    if summary.since is not None and summary.until is not None:
        text += f" from {incident_time(summary.since)} to {incident_time(summary.until)}"
    if summary.sources:
        shown = [_untrusted(s) for s in summary.sources[:SOURCES_SHOWN]]
        more = len(summary.sources) - len(shown)
        text += " across: " + ", ".join(shown) + (f" and {more} more" if more > 0 else "")
    return text


def incident_reply_text(n: Notification) -> str:
    """The short message an action adds to the conversation about its incident.

    Slack posts it as a thread reply, other channels as the lead of a new message:

    * ``ESCALATE``: ``"Escalated to CRITICAL: blast radius: .... Now 500 failures in ..."``
    * ``RENOTIFY``: ``"Still failing and not acknowledged: CRITICAL since 12:00 UTC ..."``
    * ``RESOLVE``: ``"Resolved at ... after 42 min: every affected task recovered. It was ..."``
    * ``ACKNOWLEDGE``: ``"Acknowledged by alice at ..."``
    * ``FOLLOW_UP``: :func:`incident_follow_up_text` plus the current counts
    * ``ANNOUNCE``/``UPDATE``: the counts and how many are still failing

    :param n: the notification; without an incident its :func:`headline`
    :return: sanitized text, one or two sentences
    """
    incident = n.incident
    if incident is None:
        return headline(n)
    counts = incident_counts(incident)
    severity = incident.severity.label.upper()
    action = n.action
    if action is NotificationAction.RESOLVE or incident.state is IncidentState.RESOLVED:
        return f"{incident_resolved_text(incident) or 'Resolved'}. It was {counts}."
    if action is NotificationAction.ESCALATE:
        reasons = [_untrusted(r) for r in incident.severity_reasons if r]
        return f"Escalated to {severity}" + (f": {reasons[-1]}" if reasons else "") + f". Now {counts}."
    if action is NotificationAction.RENOTIFY:
        period = incident_duration(incident.last_seen_at - incident.opened_at)
        return (
            f"Still failing and not acknowledged: {severity} since {incident_time(incident.opened_at)} "
            f"(failing for {period}, last failure {incident_time(incident.last_seen_at)}). Now {counts}."
        )
    if action is NotificationAction.ACKNOWLEDGE:
        return f"{incident_acknowledged_text(incident) or 'Acknowledged'}."
    if action is NotificationAction.FOLLOW_UP:
        folded = incident_follow_up_text(n)
        return (f"{folded[:1].upper()}{folded[1:]}. " if folded else "") + f"Now {counts}."
    return f"{counts[:1].upper()}{counts[1:]}; {incident_state_text(incident)}."
