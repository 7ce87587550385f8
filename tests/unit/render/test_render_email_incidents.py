"""Email rendering of incidents: one stable subject per incident, the incident in the body."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from airflow_alerting.incidents.model import Announcement, Incident, IncidentMember, IncidentState
from airflow_alerting.model import (
    Alert,
    Classification,
    Decision,
    DecisionReason,
    Notification,
    NotificationAction,
    Severity,
    SuppressionSummary,
)
from airflow_alerting.render.email import (
    EMAIL_DAGS,
    EMAIL_TASKS,
    SUBJECT_LIMIT,
    incident_subject,
    is_reply,
    render_email,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
TITLE = "OperationalError: could not connect to server"
SUBJECT = f"[Airflow alert] {TITLE}"
BLAST = "blast radius: 20 DAGs affected, raised to critical"
ANNOUNCED = Announcement("email", "<abc.announce.1234@example.test>", severity=Severity.HIGH, at=T0)


def outage(size: int = 500, **fields: Any) -> Incident:
    """One DB outage: ``size`` failures in ``size`` tasks across 20 DAGs."""
    sample = tuple(
        IncidentMember(
            dag_id=f"dag_{i % 20:02d}",
            task_id=f"task_{i:03d}",
            first_at=T0 + timedelta(seconds=i),
            last_at=T0 + timedelta(seconds=i),
            last_run_id="scheduled__2024-05-01",
        )
        for i in reversed(range(size))
    )
    values: dict[str, Any] = {
        "id": "abc",
        "key": "exc:OperationalError:could not connect",
        "title": TITLE,
        "severity": Severity.CRITICAL,
        "opened_at": T0,
        "last_seen_at": T0 + timedelta(minutes=40),
        "severity_reasons": ("exception OperationalError", BLAST),
        "failures": size,
        "members": sample,
        "member_count": size,
        "failing_count": size,
        "task_count": size,
        "dag_ids": tuple(f"dag_{i:02d}" for i in range(20)),
        "dag_count": 20,
        **fields,
    }
    return Incident(**values)


def make(
    action: NotificationAction = NotificationAction.ANNOUNCE,
    incident: Incident | None = None,
    *,
    announcement: Announcement | None = None,
    suppressed: SuppressionSummary | None = None,
    **alert: Any,
) -> Notification:
    fields: dict[str, Any] = {
        "dag_id": "dag_07",
        "task_id": "task_487",
        "run_id": "scheduled__2024-05-01",
        "exception_type": "psycopg2.OperationalError",
        "message": "could not connect to server: Connection refused\n\tIs the server running?",
        "log_url": "https://airflow.example/log?dag_id=dag_07",
        "occurred_at": T0 + timedelta(minutes=40),
        **alert,
    }
    decision = Decision(True, DecisionReason.FIRST)
    if suppressed is not None:
        decision = replace(decision, suppressed=suppressed)
    return Notification(
        alert=Alert(**fields),
        classification=Classification(Severity.HIGH, ("exception OperationalError",)),
        fingerprint="0123456789abcdef",
        channel="email",
        decision=decision,
        incident=incident if incident is not None else outage(),
        action=action,
        announcement=announcement,
    )


def resolved_outage(**fields: Any) -> Incident:
    return outage(
        state=IncidentState.RESOLVED,
        failing_count=0,
        resolved_at=T0 + timedelta(minutes=42),
        resolved_by="recovery",
        **fields,
    )


# -- subject -----------------------------------------------------------------------------


def test_announcement_subject_is_the_incident_title() -> None:
    content = render_email(make())
    assert content.subject == SUBJECT
    assert incident_subject(outage()) == SUBJECT


@pytest.mark.parametrize("action", [a for a in NotificationAction if a is not NotificationAction.ANNOUNCE])
def test_later_messages_reply_under_the_same_subject(action: NotificationAction) -> None:
    incident = resolved_outage() if action is NotificationAction.RESOLVE else outage()
    n = make(action, incident, announcement=ANNOUNCED)
    assert is_reply(n)
    assert render_email(n).subject == f"Re: {SUBJECT}"


def test_subject_is_stable_while_the_incident_changes() -> None:
    announce = make(NotificationAction.ANNOUNCE, outage(size=1, severity=Severity.MEDIUM))
    later = [
        make(NotificationAction.FOLLOW_UP, outage(size=120, severity=Severity.HIGH), announcement=ANNOUNCED),
        make(NotificationAction.ESCALATE, outage(size=480), announcement=ANNOUNCED, run_id="other_run"),
        make(
            NotificationAction.RENOTIFY,
            outage(last_seen_at=T0 + timedelta(hours=5)),
            announcement=ANNOUNCED,
            message="a different message",
        ),
        make(NotificationAction.RESOLVE, resolved_outage(), announcement=ANNOUNCED),
    ]
    subjects = {render_email(n).subject.removeprefix("Re: ") for n in [announce, *later]}
    assert subjects == {SUBJECT}


@pytest.mark.parametrize("announcement", [None, Announcement("email", None)])
def test_without_a_delivered_announcement_a_follow_up_is_not_a_reply(
    announcement: Announcement | None,
) -> None:
    n = make(NotificationAction.FOLLOW_UP, announcement=announcement)
    assert not is_reply(n)
    assert render_email(n).subject == SUBJECT


@pytest.mark.parametrize(
    "hostile",
    [
        "could not connect\r\nBcc: victim@example.com",
        "line\nbreak",
        "nul\x00 and \x0bvt and \x1b[31m escape",
        "unicode\u2028line\u2029separators\x85",
    ],
)
def test_subject_cannot_inject_headers(hostile: str) -> None:
    for action, announcement in (
        (NotificationAction.ANNOUNCE, None),
        (NotificationAction.RESOLVE, ANNOUNCED),
    ):
        subject = render_email(make(action, outage(title=hostile), announcement=announcement)).subject
        assert "\r" not in subject and "\n" not in subject
        assert all(ch.isprintable() for ch in subject), repr(subject)


def test_subject_is_bounded_and_the_reply_prefix_kept() -> None:
    incident = outage(title="x" * 10_000)
    assert len(render_email(make(incident=incident)).subject) == SUBJECT_LIMIT
    reply = render_email(make(NotificationAction.FOLLOW_UP, incident, announcement=ANNOUNCED)).subject
    assert reply.startswith("Re: [Airflow alert] xxx") and len(reply) == SUBJECT_LIMIT + len("Re: ")


def test_untitled_incident_gets_a_generic_subject() -> None:
    assert render_email(make(incident=outage(title="  "))).subject == "[Airflow alert] Untitled incident"


# -- body --------------------------------------------------------------------------------


def test_announcement_shows_the_incident() -> None:
    content = render_email(make())
    for part in (content.text, content.html):
        assert "500 failures in 500 tasks across 20 DAGs" in part
        assert "500 of 500 task instances still failing" in part
        assert f"critical (exception OperationalError; {BLAST})" in part
        assert "2024-05-01 12:00 UTC" in part  # first seen
        assert "2024-05-01 12:40 UTC" in part  # last seen
        assert "dag_00" in part and "dag_19" in part
        assert "dag_19.task_499: 1 failure, last 2024-05-01 12:08 UTC" in part  # most recent first
        assert "psycopg2.OperationalError: could not connect to server" in part
        assert "Is the server running?" in part  # the full error, not only its first line
    assert content.text.startswith(f"[CRITICAL] {TITLE}\n\n")
    assert "First seen: 2024-05-01 12:00 UTC" in content.text
    assert "Last seen: 2024-05-01 12:40 UTC" in content.text
    assert "Latest failure: dag_07.task_487" in content.text
    assert "Link: https://airflow.example/log?dag_id=dag_07" in content.text
    assert "#b01e1e" in content.html  # critical accent


def test_follow_up_says_what_was_folded_in() -> None:
    folded = SuppressionSummary(
        count=12, since=T0, until=T0 + timedelta(minutes=15), sources=tuple(f"dag.t{i}" for i in range(14))
    )
    content = render_email(make(NotificationAction.FOLLOW_UP, announcement=ANNOUNCED, suppressed=folded))
    expected = (
        "Since the last message: 12 more failures from 2024-05-01 12:00 UTC to 2024-05-01 12:15 UTC "
        "across: dag.t0, dag.t1"
    )
    assert content.text.startswith(f"[CRITICAL] Update: {TITLE}\n\n{expected}")
    assert "dag.t9 and 4 more\n" in content.text
    assert expected in content.html


def test_escalation_says_why() -> None:
    content = render_email(make(NotificationAction.ESCALATE, announcement=ANNOUNCED))
    assert content.text.startswith(f"[CRITICAL] Escalated: {TITLE}\n\nSeverity raised to critical: {BLAST}\n")
    assert f"Severity raised to critical: {BLAST}" in content.html


def test_renotification_says_it_is_unacknowledged() -> None:
    content = render_email(make(NotificationAction.RENOTIFY, announcement=ANNOUNCED))
    assert "Not acknowledged and still failing after 40 min" in content.text
    assert content.text.startswith(f"[CRITICAL] Still failing: {TITLE}")


def test_resolution_says_how_long_it_took() -> None:
    content = render_email(make(NotificationAction.RESOLVE, resolved_outage(), announcement=ANNOUNCED))
    for part in (content.text, content.html):
        assert "Recovered after 42 min: all 500 tasks succeeded again" in part
        assert "still failing" not in part
        assert "Connection refused" not in part  # the error is over
    assert content.text.startswith(f"[RESOLVED] {TITLE}\n\n")
    assert "#2b8a3e" in content.html


def test_resolution_by_hand_names_who() -> None:
    incident = outage(
        state=IncidentState.RESOLVED,
        resolved_at=T0 + timedelta(minutes=61),
        resolved_by="alice",
        failing_count=3,
    )
    content = render_email(make(NotificationAction.RESOLVE, incident, announcement=ANNOUNCED))
    assert "Resolved by alice after 61 min (3 still failing)" in content.text


def test_acknowledged_incident_says_by_whom() -> None:
    incident = outage(
        state=IncidentState.ACKNOWLEDGED, acknowledged_at=T0 + timedelta(minutes=4), acknowledged_by="bob"
    )
    content = render_email(make(NotificationAction.RENOTIFY, incident, announcement=ANNOUNCED))
    assert "Acknowledged: 2024-05-01 12:04 UTC by bob" in content.text


def test_500_members_are_capped() -> None:
    content = render_email(make())
    task_lines = [line for line in content.text.splitlines() if line.startswith("  dag_") and ": " in line]
    assert len(task_lines) == EMAIL_TASKS
    assert f"Tasks (latest {EMAIL_TASKS} of 500)" in content.text
    assert f"  and {500 - EMAIL_TASKS} more" in content.text
    assert content.html.count("<li>dag_") == 20 + EMAIL_TASKS  # every DAG + the task sample
    assert len(content.text) < 10_000
    assert len(content.html) < 30_000


def test_dag_sample_says_how_many_are_not_shown() -> None:
    incident = outage(dag_ids=tuple(f"d{i}" for i in range(40)), dag_count=300)
    content = render_email(make(incident=incident))
    assert (
        sum(1 for line in content.text.splitlines() if line.startswith("  d") and line[3:4].isdigit()) == 25
    )
    assert "DAGs (300):" in content.text
    assert f"  and {300 - EMAIL_DAGS} more" in content.text


def test_huge_names_are_truncated() -> None:
    huge = "d" * 100_000
    member = IncidentMember(huge, "t" * 100_000, last_at=T0)
    content = render_email(make(incident=outage(size=0, dag_ids=(huge,), dag_count=1, members=(member,))))
    assert len(content.text) < 5_000
    assert max(len(line) for line in content.text.splitlines()) < 600


HOSTILE = '<script>alert(1)</script> {{ 7*7 }} "><img src=x onerror=alert(1)> password=hunter2'


def test_hostile_incident_text_is_escaped_and_scrubbed() -> None:
    member = IncidentMember(HOSTILE, HOSTILE, last_at=T0)
    incident = outage(
        size=1,
        title=HOSTILE + " postgresql://app:s3cret@db/x",
        dag_ids=(HOSTILE,),
        members=(member,),
        severity_reasons=(HOSTILE,),
        acknowledged_at=T0,
        acknowledged_by=HOSTILE,
    )
    folded = SuppressionSummary(count=1, sources=(HOSTILE,))
    content = render_email(
        make(
            NotificationAction.FOLLOW_UP, incident, announcement=ANNOUNCED, suppressed=folded, message=HOSTILE
        )
    )
    for part in (content.subject, content.text, content.html):
        assert "hunter2" not in part
        assert "s3cret" not in part
    assert "<script>" not in content.html and "<img" not in content.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in content.html
    assert "{{ 7*7 }}" in content.html and "49" not in content.html
    assert "<script>alert(1)</script> {{ 7*7 }}" in content.text  # plain text stays literal


def test_notification_without_incident_renders_as_before() -> None:
    n = replace(make(), incident=None)
    content = render_email(n)
    assert content.subject == "[Airflow][HIGH] dag_07.task_487 failed"
    assert "Fingerprint: 0123456789abcdef" in content.text
