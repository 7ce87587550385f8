"""Email rendering: a stable subject, a plain-text part and an HTML part.

The HTML comes from a packaged Jinja2 template rendered in a sandboxed, autoescaping
environment.  Untrusted text (exception messages, run ids, ...) is passed to the template
as *variables*, never as template source, so ``{{ 7*7 }}`` in an exception message is shown
literally and ``<script>`` is escaped.

Notifications about an :class:`~airflow_alerting.incidents.model.Incident` get one subject per
incident -- its root cause, with nothing that changes while it lasts -- so every message about
it (announcement, follow-ups, escalation, resolution) lands in one conversation; the channel
adds the ``In-Reply-To``/``References`` headers that thread them on the announcement.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from airflow_alerting.incidents.model import Incident
from airflow_alerting.model import Notification, NotificationAction, Severity
from airflow_alerting.render import _incident as inc
from airflow_alerting.render import text as t
from airflow_alerting.render.redact import sanitize

if TYPE_CHECKING:
    from jinja2 import Environment

TEMPLATE = "email_alert.html.j2"
#: long subjects get folded and cut by mail clients; keep the useful part visible
SUBJECT_LIMIT = 200

_ACCENT = {
    Severity.CRITICAL: "#b01e1e",
    Severity.HIGH: "#d9480f",
    Severity.MEDIUM: "#9c6f00",
    Severity.LOW: "#616061",
}
_RESOLVED_ACCENT = "#2b8a3e"
_ACKNOWLEDGED_ACCENT = "#1264a3"
#: stable prefix of incident subjects: recognisable in a mailbox and for mail filters
INCIDENT_SUBJECT_PREFIX = "[Airflow alert] "
#: prefix of every incident message after the announcement, as mail clients write replies
REPLY_PREFIX = "Re: "
#: affected DAGs listed in an incident e-mail (the snapshot carries at most 25)
EMAIL_DAGS = 25
#: affected task instances listed in an incident e-mail (the snapshot carries at most 50)
EMAIL_TASKS = 20


@dataclass(frozen=True)
class EmailContent:
    """A rendered email.

    :param subject: one-line subject, stable per fingerprint (per incident for incident
        notifications, plus ``"Re: "`` on replies) so mail clients thread it
    :param text: the ``text/plain`` alternative
    :param html: the ``text/html`` alternative
    """

    subject: str
    text: str
    html: str


def header_safe(value: str) -> str:
    """Make ``value`` safe for a mail header: no CR/LF or other control characters, one line.

    :param value: header text
    :return: the cleaned value
    """
    return t.one_line("".join(ch if ch.isprintable() else " " for ch in value))


def is_reply(n: Notification) -> bool:
    """Whether an incident notification is sent as a reply to the incident's announcement.

    Every action but ``ANNOUNCE`` is, once the announcement's ``Message-ID`` is known; without
    it (the announcement was never delivered) the message starts a conversation of its own.

    :param n: the notification
    :return: ``True`` for replies
    """
    return (
        n.incident is not None
        and n.action is not NotificationAction.ANNOUNCE
        and n.announcement is not None
        and bool(n.announcement.ref)
    )


def incident_subject(incident: Incident) -> str:
    """``"[Airflow alert] OperationalError: could not connect to server"``, the same for every action.

    Only the incident's title: counts, times and severity change while an incident lasts,
    and a changing subject splits the conversation in clients that thread by subject (Gmail).

    :param incident: the incident
    :return: the subject, without CR/LF and without a reply prefix
    """
    return t.truncate(header_safe(INCIDENT_SUBJECT_PREFIX + inc.title(incident)), SUBJECT_LIMIT)


def subject(n: Notification) -> str:
    """``"[Airflow][HIGH] my_dag.load_warehouse failed"``, or for incidents :func:`incident_subject`.

    Deliberately free of timestamps, counts, try numbers and exception text, so every
    occurrence of one problem gets the same subject and mail clients thread them.  Incident
    replies (:func:`is_reply`) are prefixed with ``"Re: "``.

    :param n: the notification
    :return: the subject, without CR/LF
    """
    if n.incident is not None:
        return (REPLY_PREFIX if is_reply(n) else "") + incident_subject(n.incident)
    return t.truncate(header_safe(f"[Airflow][{t.status_label(n)}] {t.event_phrase(n)}"), SUBJECT_LIMIT)


@functools.cache
def _environment() -> Environment:
    # jinja2 is imported here, not at module level, to keep DAG-file imports of the package cheap.
    from jinja2 import PackageLoader, StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    return SandboxedEnvironment(
        loader=PackageLoader("airflow_alerting", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


def _notes(n: Notification) -> list[str]:
    candidates = [
        t.recovery_text(n),
        None if n.resolved else f"Severity: {t.severity_text(n)}",
        t.escalation_text(n),
        t.suppressed_text(n),
    ]
    return [note[:1].upper() + note[1:] for note in candidates if note]


def _plain_text(n: Notification) -> str:
    parts = [t.headline(n), "", *t.summary_lines(n)]
    error = None if n.resolved else t.error_text(n)
    if error is not None and ("\n" in error or len(error) > t.SUMMARY_ERROR_LIMIT):
        # summary_lines carries a one-line excerpt; the full text is worth having for tracebacks.
        parts += ["", "Full error:", error]
    return "\n".join(parts) + "\n"


def _incident_notes(n: Notification, incident: Incident) -> list[str]:
    notes = [inc.action_note(n, incident), inc.counts(incident)]
    if incident.is_open and n.action is not NotificationAction.RESOLVE:
        notes.append(inc.failing(incident))
    return [note for note in notes if note]


def _incident_details(n: Notification, incident: Incident) -> list[tuple[str, str]]:
    pairs = [
        ("Severity", inc.severity(incident)),
        ("State", incident.state.value),
        ("First seen", inc.when(incident.opened_at)),
        ("Last seen", inc.when(incident.last_seen_at)),
    ]
    if incident.acknowledged_at is not None:
        by = f" by {inc.name(incident.acknowledged_by)}" if incident.acknowledged_by else ""
        pairs.append(("Acknowledged", inc.when(incident.acknowledged_at) + by))
    if incident.resolved_at is not None:
        pairs.append(("Resolved", inc.when(incident.resolved_at)))
    if inc.shows_error(n):
        pairs.append(("Latest failure", t.truncate(t.one_line(sanitize(n.alert.source)), inc.NAME_LIMIT)))
        if n.alert.run_id:
            pairs.append(("Run", t.truncate(t.one_line(sanitize(n.alert.run_id)), inc.NAME_LIMIT)))
    if incident.silenced:
        pairs.append(("Silenced", f"{incident.silenced} of {incident.failures} failures"))
    pairs.append(("Incident", inc.name(incident.id)))
    return pairs


def _incident_lists(incident: Incident) -> list[tuple[str, list[str], str | None]]:
    """``(heading, items, "and N more")`` for the affected DAGs and task instances."""
    dags, dags_more = inc.dag_sample(incident, EMAIL_DAGS)
    members, members_more = inc.member_sample(incident, EMAIL_TASKS)
    lists: list[tuple[str, list[str], str | None]] = []
    if dags:
        lists.append((f"DAGs ({incident.dag_count})", dags, inc.more(dags_more)))
    if members:
        heading = f"Tasks (latest {len(members)} of {incident.member_count})"
        lists.append((heading, [inc.member_line(m) for m in members], inc.more(members_more)))
    return lists


def _incident_text(n: Notification, incident: Incident, error: str | None) -> str:
    parts = [inc.headline(n, incident), ""]
    parts += [note[:1].upper() + note[1:] for note in _incident_notes(n, incident)]
    if error:
        parts.append(f"Latest error: {t.one_line(t.truncate(error, t.SUMMARY_ERROR_LIMIT))}")
    parts += [f"{label}: {value}" for label, value in _incident_details(n, incident)]
    url = t.link(n)
    if url:
        parts.append(f"Link: {url}")
    for heading, items, rest in _incident_lists(incident):
        parts += ["", f"{heading}:", *(f"  {item}" for item in items)]
        if rest:
            parts.append(f"  {rest}")
    if error is not None and ("\n" in error or len(error) > t.SUMMARY_ERROR_LIMIT):
        parts += ["", "Full error:", error]
    return "\n".join(parts) + "\n"


def _render_incident(n: Notification, incident: Incident) -> EmailContent:
    subj = subject(n)
    error = t.error_text(n) if inc.shows_error(n) else None
    if n.action is NotificationAction.RESOLVE:
        accent = _RESOLVED_ACCENT
    elif n.action is NotificationAction.ACKNOWLEDGE:
        accent = _ACKNOWLEDGED_ACCENT
    else:
        accent = _ACCENT[incident.severity]
    html = (
        _environment()
        .get_template(TEMPLATE)
        .render(
            subject=subj,
            headline=inc.headline(n, incident),
            accent=accent,
            notes=[note[:1].upper() + note[1:] for note in _incident_notes(n, incident)],
            details=_incident_details(n, incident),
            lists=_incident_lists(incident),
            error=error,
            link=t.link(n),
            link_label=t.link_label(n),
            fingerprint=n.fingerprint,
        )
    )
    return EmailContent(subject=subj, text=_incident_text(n, incident, error), html=html)


def render_email(n: Notification) -> EmailContent:
    """Render a notification as an email with a stable subject and text + HTML bodies.

    Incident notifications show the incident: what this message is about (follow-up,
    escalation, resolution ...), its counts, severity and why, first and last seen, the
    affected DAGs and a sample of its tasks, and the latest error.

    :param n: the notification
    :return: the rendered content
    """
    if n.incident is not None:
        return _render_incident(n, n.incident)
    subj = subject(n)
    html = (
        _environment()
        .get_template(TEMPLATE)
        .render(
            subject=subj,
            headline=t.headline(n),
            accent=_RESOLVED_ACCENT if n.resolved else _ACCENT[n.severity],
            notes=_notes(n),
            details=[("Severity", n.severity.label), *t.details(n)],
            lists=[],
            error=None if n.resolved else t.error_text(n),
            link=t.link(n),
            link_label=t.link_label(n),
            fingerprint=n.fingerprint,
        )
    )
    return EmailContent(subject=subj, text=_plain_text(n), html=html)
