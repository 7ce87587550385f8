"""Email rendering: stable subjects, escaping, untrusted text as data (never template source)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from airflow_alerting.model import (
    Alert,
    AlertKind,
    Classification,
    Decision,
    DecisionReason,
    Notification,
    Severity,
    SuppressionSummary,
)
from airflow_alerting.render.email import SUBJECT_LIMIT, EmailContent, header_safe, render_email

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def make(severity: Severity = Severity.HIGH, *, resolved: bool = False, **alert: Any) -> Notification:
    fields: dict[str, Any] = {
        "dag_id": "my_dag",
        "task_id": "load_warehouse",
        "run_id": "manual__1",
        "exception_type": "PermissionError",
        "message": "denied",
        "log_url": "https://airflow.example/log?dag_id=my_dag&task_id=load_warehouse",
        "occurred_at": NOW,
        **alert,
    }
    return Notification(
        alert=Alert(**fields),
        classification=Classification(severity, ("final try",)),
        fingerprint="0123456789abcdef",
        channel="email",
        decision=Decision(True, DecisionReason.FIRST),
        resolved=resolved,
    )


def _override(field: str, value: str) -> dict[str, Any]:
    return {field: value}


def test_subject() -> None:
    assert render_email(make()).subject == "[Airflow][HIGH] my_dag.load_warehouse failed"
    resolved = render_email(make(resolved=True, kind=AlertKind.TASK_SUCCESS))
    assert resolved.subject == "[Airflow][RESOLVED] my_dag.load_warehouse recovered"


def test_subject_is_stable_across_occurrences_of_one_fingerprint() -> None:
    first = make(run_id="scheduled__1", try_number=1, message="timeout after 31s on host-3")
    later = make(
        run_id="scheduled__2",
        try_number=4,
        max_tries=5,
        message="timeout after 29s on host-7",
        occurred_at=NOW + timedelta(hours=3),
    )
    summary = SuppressionSummary(count=17, since=NOW, until=NOW + timedelta(hours=3), sources=("a.b",))
    later = replace(later, decision=replace(later.decision, suppressed=summary))
    assert render_email(first).subject == render_email(later).subject


@pytest.mark.parametrize(
    "hostile",
    [
        "Nightly load\r\nBcc: victim@example.com",
        "line\nbreak",
        "carriage\rreturn",
        "tab\tand\x00nul\x0bvt",
        "unicode\u2028line\u2029separators\x85",
    ],
)
@pytest.mark.parametrize("field", ["title", "dag_id", "task_id"])
def test_subject_has_no_line_breaks(hostile: str, field: str) -> None:
    subject = render_email(make(**_override(field, hostile))).subject
    assert "\r" not in subject and "\n" not in subject
    assert all(ch.isprintable() for ch in subject), repr(subject)
    assert len(subject) <= SUBJECT_LIMIT


def test_subject_is_bounded() -> None:
    assert len(render_email(make(title="t" * 10_000)).subject) == SUBJECT_LIMIT


@pytest.mark.parametrize(
    ("payload", "forbidden", "escaped"),
    [
        ("<script>alert(1)</script>", "<script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
        ('"><img src=x onerror=alert(1)>', "<img", "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;"),
        ("Tom & Jerry", "Tom & Jerry", "Tom &amp; Jerry"),
    ],
)
@pytest.mark.parametrize("field", ["message", "title", "run_id", "owner", "task_id"])
def test_html_escapes_untrusted_text(payload: str, forbidden: str, escaped: str, field: str) -> None:
    content = render_email(make(**_override(field, payload)))
    assert forbidden not in content.html
    assert escaped in content.html


@pytest.mark.parametrize(
    "payload",
    [
        "{{ 7*7 }}",
        "{% for x in range(3) %}loop{% endfor %}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{# comment #}",
    ],
)
@pytest.mark.parametrize("field", ["message", "title", "run_id"])
def test_template_syntax_in_data_is_shown_literally(payload: str, field: str) -> None:
    content = render_email(make(**_override(field, payload)))
    # Jinja's autoescape turns quotes into entities; undo only that to compare literally.
    html = content.html.replace("&#39;", "'").replace("&#34;", '"')
    assert payload in html
    assert payload in content.text
    assert "49" not in html
    assert "looploop" not in html


def test_javascript_links_are_not_rendered() -> None:
    content = render_email(make(log_url="javascript:alert(document.cookie)"))
    assert "javascript:" not in content.html
    assert "href" not in content.html


def test_link_is_attribute_escaped() -> None:
    content = render_email(make())
    assert 'href="https://airflow.example/log?dag_id=my_dag&amp;task_id=load_warehouse"' in content.html


def test_text_part_has_the_summary_and_the_full_error() -> None:
    trace = "Traceback (most recent call last):\n  File 'x.py', line 1\nPermissionError: denied"
    content = render_email(make(message=trace))
    assert content.text.startswith("[HIGH] my_dag.load_warehouse failed: PermissionError\n\n")
    assert "Severity: high (final try)" in content.text
    assert "Fingerprint: 0123456789abcdef" in content.text
    assert trace in content.text


def test_secrets_are_scrubbed_from_every_part() -> None:
    content = render_email(
        make(message="could not connect to postgresql://user:s3cret@db/x using xoxb-123-456-abcdef")
    )
    for part in (content.subject, content.text, content.html):
        assert "s3cret" not in part
        assert "123-456-abcdef" not in part
    assert "postgresql://user:***@db/x" in content.text


def test_resolved_email_has_no_error() -> None:
    content = render_email(make(resolved=True, kind=AlertKind.TASK_SUCCESS, message="old failure"))
    assert "old failure" not in content.html
    assert isinstance(content, EmailContent)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("a\r\nb", "a b"), ("  many   spaces ", "many spaces"), ("nul\x00byte", "nul byte")],
)
def test_header_safe(value: str, expected: str) -> None:
    assert header_safe(value) == expected
