"""Format-neutral building blocks shared by every renderer.

Everything returned here is plain text that has already been through
:func:`~airflow_alerting.render.redact.sanitize`; the channel-specific renderers only add
their own escaping (Slack mrkdwn, HTML) and length limits.

This module holds the pieces about one alert; the pieces about an incident live in
:mod:`airflow_alerting.render.incident_text` and are reachable here too (``text.incident_*``,
loaded on first use: that module builds on this one, so importing it from here eagerly would
be circular).
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from airflow_alerting._lazy import lazy_exports
from airflow_alerting.model import AlertKind, Notification
from airflow_alerting.render.redact import sanitize

if TYPE_CHECKING:
    from airflow_alerting.render.incident_text import (
        INCIDENT_DAGS_SHOWN,
        INCIDENT_REASONS_SHOWN,
        INCIDENT_TASKS_SHOWN,
        incident_acknowledged_text,
        incident_counts,
        incident_dags_text,
        incident_duration,
        incident_follow_up_text,
        incident_headline,
        incident_label,
        incident_reasons_text,
        incident_reply_text,
        incident_resolved_text,
        incident_seen_text,
        incident_state_text,
        incident_task_lines,
        incident_tasks_text,
        incident_time,
        incident_title,
    )

__all__ = [
    "ELLIPSIS",
    "INCIDENT_DAGS_SHOWN",
    "INCIDENT_REASONS_SHOWN",
    "INCIDENT_TASKS_SHOWN",
    "MESSAGE_LIMIT",
    "SOURCES_SHOWN",
    "SUMMARY_ERROR_LIMIT",
    "TITLE_LIMIT",
    "details",
    "error_text",
    "escalation_text",
    "event_phrase",
    "headline",
    "incident_acknowledged_text",
    "incident_counts",
    "incident_dags_text",
    "incident_duration",
    "incident_follow_up_text",
    "incident_headline",
    "incident_label",
    "incident_reasons_text",
    "incident_reply_text",
    "incident_resolved_text",
    "incident_seen_text",
    "incident_state_text",
    "incident_task_lines",
    "incident_tasks_text",
    "incident_time",
    "incident_title",
    "link",
    "link_label",
    "message",
    "one_line",
    "reasons_text",
    "recovery_text",
    "severity_text",
    "short_type",
    "status_label",
    "summary_lines",
    "suppressed_text",
    "title",
    "truncate",
    "try_text",
    "will_retry",
]

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


#: names defined in :mod:`airflow_alerting.render.incident_text`, imported when first asked for
_INCIDENT_NAMES = frozenset(
    {
        "INCIDENT_DAGS_SHOWN",
        "INCIDENT_TASKS_SHOWN",
        "INCIDENT_REASONS_SHOWN",
        "_plural",
        "_untrusted",
        "incident_time",
        "incident_duration",
        "incident_title",
        "incident_label",
        "incident_headline",
        "incident_counts",
        "incident_dags_text",
        "incident_task_lines",
        "incident_tasks_text",
        "incident_seen_text",
        "incident_acknowledged_text",
        "incident_resolved_text",
        "incident_state_text",
        "incident_reasons_text",
        "incident_follow_up_text",
        "incident_reply_text",
    }
)

__getattr__, __dir__ = lazy_exports(
    globals(), dict.fromkeys(_INCIDENT_NAMES, "airflow_alerting.render.incident_text")
)
