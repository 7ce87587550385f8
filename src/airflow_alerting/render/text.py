"""Format-neutral building blocks shared by every renderer.

Everything returned here is plain text that has already been through
:func:`~airflow_alerting.render.redact.sanitize`; the channel-specific renderers only add
their own escaping (Slack mrkdwn, HTML) and length limits.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

from airflow_alerting.incidents.model import Incident, IncidentState
from airflow_alerting.model import AlertKind, Notification, NotificationAction
from airflow_alerting.render.redact import sanitize

ELLIPSIS = "…"
#: longest exception message any renderer carries (before its own, usually tighter, limit)
MESSAGE_LIMIT = 4000
#: longest title or exception type shown in a headline
TITLE_LIMIT = 300
#: how many suppressed sources are named before "and N more"
SOURCES_SHOWN = 10
#: the error line inside :func:`summary_lines` is a summary; the full text goes to :func:`error_text`
SUMMARY_ERROR_LIMIT = 500


def truncate(text: str, limit: int, marker: str = ELLIPSIS) -> str:
    """Cut ``text`` to at most ``limit`` characters, ending in ``marker`` when something was cut.

    :param text: the text to shorten
    :param limit: maximum length of the result, marker included
    :param marker: appended to show that text was removed
    :return: ``text`` itself when it fits, otherwise a prefix plus ``marker``
    """
    if limit <= 0:
        return ""
    if len(text) <= limit:
        return text
    if len(marker) >= limit:
        return marker[:limit]
    return text[: limit - len(marker)] + marker


def one_line(text: str) -> str:
    """Collapse all whitespace, including CR/LF, to single spaces.

    :param text: any text
    :return: the text on one line, stripped
    """
    return " ".join(text.split())


def short_type(exception_type: str | None) -> str:
    """The unqualified class name of a (possibly dotted) exception type.

    :param exception_type: ``"builtins.PermissionError"``, ``"PermissionError"`` or ``None``
    :return: ``"PermissionError"``, or ``""`` for ``None``
    """
    if not exception_type:
        return ""
    return sanitize(exception_type.rsplit(".", 1)[-1])


def status_label(n: Notification) -> str:
    """``"RESOLVED"`` for recoveries, otherwise the upper-case severity (``"HIGH"``).

    :param n: the notification
    :return: the label shown in brackets in headlines and subjects
    """
    return "RESOLVED" if n.resolved else n.severity.label.upper()


def will_retry(n: Notification) -> bool:
    """``True`` when Airflow will run the failed task again.

    :param n: the notification
    :return: whether the failure is not final
    """
    alert = n.alert
    if n.resolved or alert.task_id is None:
        return False
    return alert.kind in (AlertKind.TASK_FAILURE, AlertKind.TASK_RETRY) and not alert.is_final_try


def try_text(n: Notification) -> str:
    """``"1 of 3"`` (try number of total tries), or just ``"1"`` when the task has no retries.

    :param n: the notification
    :return: the try description
    """
    alert = n.alert
    if alert.max_tries > 0:
        return f"{alert.try_number} of {alert.max_tries + 1}"
    return str(alert.try_number)


def event_phrase(n: Notification) -> str:
    """What happened, without details that vary per occurrence: ``"my_dag.load failed"``.

    The user-given alert title when there is one; otherwise ``"<source> failed"``,
    ``"<source> recovered"`` or ``"<source> alert"``.  Stable per fingerprint, which is what
    email subjects need for threading.

    :param n: the notification
    :return: sanitized one-line phrase
    """
    alert = n.alert
    if alert.title:
        text = sanitize(alert.title)
    else:
        source = sanitize(alert.source)
        if n.resolved or alert.kind.is_recovery:
            text = f"{source} recovered"
        elif alert.kind is AlertKind.CUSTOM:
            text = f"{source} alert"
        else:
            text = f"{source} failed"
    return truncate(one_line(text), TITLE_LIMIT)


def title(n: Notification) -> str:
    """The headline without its ``[LABEL]`` prefix, e.g. ``"my_dag.load failed: PermissionError"``.

    :param n: the notification
    :return: sanitized one-line title
    """
    text = event_phrase(n)
    failure = not (n.alert.title or n.resolved or n.alert.kind.is_recovery)
    if failure:
        exc = short_type(n.alert.exception_type)
        if exc:
            text += f": {exc}"
        if will_retry(n):
            text += f", will retry (try {try_text(n)})"
    return truncate(text, TITLE_LIMIT)


def headline(n: Notification) -> str:
    """One-line summary: ``"[HIGH] my_dag.load_warehouse failed: PermissionError"``.

    Retries read ``"... will retry (try 1 of 3)"``, recoveries ``"[RESOLVED] my_dag.load recovered"``.

    :param n: the notification
    :return: sanitized headline, used as Slack fallback text and PagerDuty summary base
    """
    return f"[{status_label(n)}] {title(n)}"


def _safe_url(candidate: str | None) -> str | None:
    if not candidate:
        return None
    url = sanitize(candidate.strip())
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    # Anything else (javascript:, data:, relative paths) is useless at best in a chat or mail.
    if parts.scheme in ("http", "https") and parts.netloc and not any(c.isspace() for c in url):
        return url
    return None


def link(n: Notification) -> str | None:
    """The best URL to open: the Airflow UI link, else the log URL; only ``http(s)`` URLs.

    :param n: the notification
    :return: a sanitized absolute URL or ``None``
    """
    return _safe_url(n.airflow_url) or _safe_url(n.alert.log_url)


def link_label(n: Notification) -> str:
    """Button/link text for :func:`link`: ``"Open in Airflow"`` or ``"View log"``.

    :param n: the notification
    :return: the label
    """
    return "Open in Airflow" if _safe_url(n.airflow_url) else "View log"


def reasons_text(n: Notification) -> str | None:
    """The classifier's reasons, joined: ``"exception PermissionError; final try"``.

    :param n: the notification
    :return: sanitized text, or ``None`` when the classifier gave none
    """
    reasons = "; ".join(sanitize(r) for r in n.classification.reasons if r)
    return reasons or None


def severity_text(n: Notification) -> str:
    """Severity and why: ``"high (exception PermissionError; final try)"``.

    :param n: the notification
    :return: sanitized text
    """
    reasons = reasons_text(n)
    return f"{n.severity.label} ({reasons})" if reasons else n.severity.label


def escalation_text(n: Notification) -> str | None:
    """The escalation sentence, when the severity was raised for recurrence.

    :param n: the notification
    :return: text or ``None``
    """
    return n.escalation.describe() if n.escalation is not None else None


def _minutes(period: timedelta) -> int:
    return max(1, math.ceil(period.total_seconds() / 60))


def suppressed_text(n: Notification) -> str | None:
    """``"3 similar failures suppressed in the last 15 min across: a.b, c.d"`` or ``None``.

    :param n: the notification
    :return: text when the decision folded suppressed occurrences into this notification
    """
    summary = n.decision.suppressed
    if summary.count <= 0:
        return None
    noun = "failure" if summary.count == 1 else "failures"
    text = f"{summary.count} similar {noun} suppressed"
    period = summary.period
    if period is not None:
        text += f" in the last {_minutes(period)} min"
    if summary.sources:
        shown = [sanitize(s) for s in summary.sources[:SOURCES_SHOWN]]
        more = len(summary.sources) - len(shown)
        text += " across: " + ", ".join(shown) + (f" and {more} more" if more > 0 else "")
    return text


def recovery_text(n: Notification) -> str | None:
    """``"resolved after 42 min"`` for recoveries whose opening time is known.

    :param n: the notification
    :return: text or ``None``
    """
    if not n.resolved or n.opened_at is None or n.alert.occurred_at is None:
        return None
    try:
        period = n.alert.occurred_at - n.opened_at
    except TypeError:  # naive vs aware datetimes from different sources
        return None
    if period.total_seconds() < 0:
        return None
    return f"resolved after {_minutes(period)} min"


def message(n: Notification) -> str:
    """The exception message, sanitized and capped at :data:`MESSAGE_LIMIT` characters.

    :param n: the notification
    :return: the message, possibly empty
    """
    # Only a prefix is scrubbed: rendering never shows more than MESSAGE_LIMIT characters, and
    # scanning a multi-megabyte message once per renderer would make alerts slow.  The margin
    # keeps a credential that starts inside the shown part from being cut before it is scrubbed.
    raw = n.alert.message[: 2 * MESSAGE_LIMIT].strip()
    return truncate(sanitize(raw), MESSAGE_LIMIT) if raw else ""


def error_text(n: Notification, limit: int = MESSAGE_LIMIT) -> str | None:
    """``"PermissionError: denied for table x"`` (full type and message, multi-line kept).

    :param n: the notification
    :param limit: maximum length of the result
    :return: sanitized, truncated text, or ``None`` when there is no error information
    """
    exc = sanitize(n.alert.exception_type) if n.alert.exception_type else ""
    text = message(n)
    if not exc and not text:
        return None
    return truncate(f"{exc}: {text}" if exc and text else exc or text, limit)


def details(n: Notification) -> list[tuple[str, str]]:
    """Label/value pairs identifying the run: DAG, task, run, try, owner, host.

    :param n: the notification
    :return: sanitized pairs in display order; absent values are left out
    """
    alert = n.alert
    pairs: list[tuple[str, str]] = [("DAG", sanitize(alert.dag_id))]
    if alert.task_id is not None:
        task = sanitize(alert.task_id)
        pairs.append(("Task", f"{task}[{alert.map_index}]" if alert.map_index >= 0 else task))
    if alert.run_id:
        pairs.append(("Run", sanitize(alert.run_id)))
    if alert.task_id is not None:
        pairs.append(("Try", try_text(n)))
    if alert.owner:
        pairs.append(("Owner", sanitize(alert.owner)))
    if alert.hostname:
        pairs.append(("Host", sanitize(alert.hostname)))
    return [(label, truncate(one_line(value), TITLE_LIMIT)) for label, value in pairs]


def summary_lines(n: Notification) -> list[str]:
    """Everything a human needs, one fact per line, as plain text.

    Severity and why, escalation, suppressed occurrences, the error (truncated), where it
    happened, the link and the fingerprint.

    :param n: the notification
    :return: sanitized lines without trailing newlines
    """
    lines = [f"Status: resolved ({n.severity.label})" if n.resolved else f"Severity: {severity_text(n)}"]
    for optional in (recovery_text(n), escalation_text(n), suppressed_text(n)):
        if optional:
            lines.append(optional[:1].upper() + optional[1:])
    error = error_text(n, SUMMARY_ERROR_LIMIT)
    if error:
        lines.append(f"Error: {one_line(error)}")
    lines.extend(f"{label}: {value}" for label, value in details(n))
    url = link(n)
    if url:
        lines.append(f"Link: {url}")
    lines.append(f"Fingerprint: {n.fingerprint}")
    return lines


# -- incidents ----------------------------------------------------------------------------
# Pieces for notifications about an incident (``Notification.incident``), shared by every
# renderer.  Like everything above they return sanitized plain text; each renderer adds its own
# escaping and length limits.

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
