"""Email rendering: a stable subject, a plain-text part and an HTML part.

The HTML comes from a packaged Jinja2 template rendered in a sandboxed, autoescaping
environment.  Untrusted text (exception messages, run ids, ...) is passed to the template
as *variables*, never as template source, so ``{{ 7*7 }}`` in an exception message is shown
literally and ``<script>`` is escaped.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from airflow_alerting.model import Notification, Severity
from airflow_alerting.render import text as t

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


@dataclass(frozen=True)
class EmailContent:
    """A rendered email.

    :param subject: one-line subject, stable per fingerprint so mail clients thread it
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


def subject(n: Notification) -> str:
    """``"[Airflow][HIGH] my_dag.load_warehouse failed"``.

    Deliberately free of timestamps, counts, try numbers and exception text, so every
    occurrence of one problem gets the same subject and mail clients thread them.

    :param n: the notification
    :return: the subject, without CR/LF
    """
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


def render_email(n: Notification) -> EmailContent:
    """Render a notification as an email with a stable subject and text + HTML bodies.

    :param n: the notification
    :return: the rendered content
    """
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
            error=None if n.resolved else t.error_text(n),
            link=t.link(n),
            link_label=t.link_label(n),
            fingerprint=n.fingerprint,
        )
    )
    return EmailContent(subject=subj, text=_plain_text(n), html=html)
