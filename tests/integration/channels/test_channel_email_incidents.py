"""EmailChannel and incidents: one conversation per incident, against a real (aiosmtpd) SMTP server."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from typing import Any

import pytest

from airflow_alerting.channels import EmailChannel
from airflow_alerting.channels.base import POSTING_ACTIONS, channel_actions
from airflow_alerting.channels.email import INCIDENT_HEADER, incident_message_id
from airflow_alerting.incidents.model import Announcement, Incident, IncidentMember, IncidentState
from airflow_alerting.model import (
    Alert,
    Classification,
    Decision,
    DecisionReason,
    DeliveryResult,
    Notification,
    NotificationAction,
    Severity,
    SuppressionSummary,
)
from airflow_alerting.testing.servers import SmtpServer, connection_env, smtp_connection

pytestmark = pytest.mark.integration

CONN = "itest_channel_smtp_incidents"
TO = ("oncall@example.test",)
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
SUBJECT = "[Airflow alert] OperationalError: could not connect to server"


def outage(**fields: Any) -> Incident:
    members = tuple(
        IncidentMember(f"dag_{i % 20:02d}", f"task_{i:03d}", last_at=T0 + timedelta(seconds=i))
        for i in reversed(range(500))
    )
    values: dict[str, Any] = {
        "id": "0f1e2d3c4b5a69788796",
        "key": "exc:OperationalError:could not connect",
        "title": "OperationalError: could not connect to server",
        "severity": Severity.CRITICAL,
        "opened_at": T0,
        "last_seen_at": T0 + timedelta(minutes=40),
        "severity_reasons": ("blast radius: 20 DAGs affected, raised to critical",),
        "failures": 500,
        "members": members,
        "member_count": 480,
        "failing_count": 480,
        "task_count": 480,
        "dag_ids": tuple(f"dag_{i:02d}" for i in range(20)),
        "dag_count": 20,
        **fields,
    }
    return Incident(**values)


def notification(
    action: NotificationAction,
    incident: Incident | None = None,
    announcement: Announcement | None = None,
    **decision: Any,
) -> Notification:
    return Notification(
        alert=Alert(
            dag_id="dag_07",
            task_id="task_487",
            run_id="scheduled__1",
            exception_type="psycopg2.OperationalError",
            message="could not connect to server: Connection refused",
            log_url="https://airflow.example/log?ti=1",
            occurred_at=T0 + timedelta(minutes=40),
        ),
        classification=Classification(Severity.HIGH, ("final try",)),
        fingerprint="0123456789abcdef",
        channel="email",
        decision=Decision(True, DecisionReason.FIRST, **decision),
        incident=incident or outage(),
        action=action,
        announcement=announcement,
    )


def announcement_from(result: DeliveryResult) -> Announcement:
    """What the manager stores from the announcement's result and hands back later."""
    return Announcement("email", result.external_id, result.conversation, Severity.CRITICAL, T0)


@pytest.fixture
def smtp(monkeypatch: pytest.MonkeyPatch) -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        monkeypatch.setenv(
            *connection_env(CONN, smtp_connection(server, from_email="alerts@mail.example.test"))
        )
        yield server


def body(message: EmailMessage, subtype: str = "plain") -> str:
    part = message.get_body((subtype,))
    assert part is not None, f"no text/{subtype} part"
    return str(part.get_content())


def channel() -> EmailChannel:
    return EmailChannel(smtp_conn_id=CONN, to=TO)


def test_declares_posting_actions() -> None:
    assert EmailChannel.actions == POSTING_ACTIONS
    assert channel_actions(channel()) == POSTING_ACTIONS


def test_announce_follow_up_resolve_share_one_thread(smtp: SmtpServer) -> None:
    announce = channel().deliver(notification(NotificationAction.ANNOUNCE))
    assert announce.ok, announce
    root_id = announce.external_id
    assert root_id is not None
    assert re.fullmatch(r"<0f1e2d3c4b5a69788796\.announce\.[0-9a-f]{16}@mail\.example\.test>", root_id)
    announced = announcement_from(announce)

    folded = SuppressionSummary(count=12, since=T0, until=T0 + timedelta(minutes=15), sources=("dag_03.t",))
    follow_up = channel().deliver(
        notification(NotificationAction.FOLLOW_UP, None, announced, suppressed=folded)
    )
    resolved = outage(
        state=IncidentState.RESOLVED,
        failing_count=0,
        resolved_at=T0 + timedelta(minutes=42),
        resolved_by="recovery",
    )
    resolve = channel().deliver(notification(NotificationAction.RESOLVE, resolved, announced))
    assert follow_up.ok and resolve.ok, (follow_up, resolve)

    first, second, third = smtp.wait_for_messages(3)
    assert first["Message-ID"].strip() == root_id
    assert first["Subject"] == SUBJECT
    assert first["In-Reply-To"] is None and first["References"] is None
    for reply, result, action in ((second, follow_up, "follow_up"), (third, resolve, "resolve")):
        assert reply["Subject"] == f"Re: {SUBJECT}"
        # the parser keeps the folding whitespace of long unstructured headers; clients ignore it
        assert reply["In-Reply-To"].strip() == root_id
        assert reply["References"].strip() == root_id
        assert reply["Message-ID"].strip() == result.external_id
        assert f".{action}." in reply["Message-ID"]
        assert reply["Message-ID"] != root_id
    assert {m[INCIDENT_HEADER] for m in (first, second, third)} == {"0f1e2d3c4b5a69788796"}
    assert smtp.thread(root_id) == [first, second, third]

    assert "500 failures in 480 tasks across 20 DAGs" in body(first)
    since = "12 more failures from 2024-05-01 12:00 UTC to 2024-05-01 12:15 UTC across: dag_03.t"
    assert f"Since the last message: {since}" in body(second)
    assert "Recovered after 42 min: all 480 tasks succeeded again" in body(third)
    assert "&lt;" not in body(first)  # the HTML part is the escaped one
    assert "Recovered after 42 min" in body(third, "html")


def test_escalate_and_renotify_reply_too(smtp: SmtpServer) -> None:
    announce = channel().deliver(notification(NotificationAction.ANNOUNCE))
    announced = announcement_from(announce)
    for action in (NotificationAction.ESCALATE, NotificationAction.RENOTIFY):
        assert channel().deliver(notification(action, None, announced)).ok
    messages = smtp.wait_for_messages(3)
    assert [m["In-Reply-To"].strip() for m in messages[1:]] == [announce.external_id] * 2
    assert len({m["Message-ID"].strip() for m in messages}) == 3


def test_without_announcement_a_follow_up_starts_its_own_thread(smtp: SmtpServer) -> None:
    result = channel().deliver(notification(NotificationAction.FOLLOW_UP))
    assert result.ok, result
    (message,) = smtp.wait_for_messages(1)
    assert message["Subject"] == SUBJECT
    assert message["In-Reply-To"] is None and message["References"] is None


@pytest.mark.parametrize(
    "ref",
    [
        "<x@y>\r\nBcc: victim@example.com",
        "<x@y>\nX-Injected: 1",
        "not a message id",
        "<two@ids> <other@ids>",
    ],
)
def test_a_corrupt_stored_message_id_is_not_sent(ref: str, smtp: SmtpServer) -> None:
    announced = Announcement("email", ref)
    result = channel().deliver(notification(NotificationAction.FOLLOW_UP, None, announced))
    assert result.ok, result
    (message,) = smtp.wait_for_messages(1)
    assert message["In-Reply-To"] is None and message["References"] is None
    assert message["Bcc"] is None and message["X-Injected"] is None
    assert smtp.envelopes == [("alerts@mail.example.test", list(TO))]


def test_hostile_title_cannot_inject_headers(smtp: SmtpServer) -> None:
    incident = outage(title="boom\r\nBcc: victim@example.com\r\n\r\n<script>alert(1)</script>")
    result = channel().deliver(notification(NotificationAction.ANNOUNCE, incident))
    assert result.ok, result
    (message,) = smtp.wait_for_messages(1)
    assert message["Bcc"] is None
    assert (
        message["Subject"].strip() == "[Airflow alert] boom Bcc: victim@example.com <script>alert(1)</script>"
    )
    assert smtp.envelopes == [("alerts@mail.example.test", list(TO))]
    assert "<script>" not in body(message, "html")


@pytest.mark.parametrize(
    ("incident_id", "domain", "pattern"),
    [
        ("abc", "example.test", r"<abc\.announce\.[0-9a-f]{16}@example\.test>"),
        ("abc", "", r"<abc\.announce\.[0-9a-f]{16}@airflow-alerting>"),
        ("a b<c>@\r\n", "ex ample\r\n.test>", r"<a_b_c____\.announce\.[0-9a-f]{16}@example\.test>"),
    ],
)
def test_incident_message_id(incident_id: str, domain: str, pattern: str) -> None:
    first = incident_message_id(incident_id, NotificationAction.ANNOUNCE, domain)
    assert re.fullmatch(pattern, first), first
    assert first != incident_message_id(incident_id, NotificationAction.ANNOUNCE, domain)


def test_legacy_notifications_keep_the_fingerprint_thread(smtp: SmtpServer) -> None:
    n = replace(notification(NotificationAction.ANNOUNCE), incident=None)
    assert channel().deliver(n).ok
    (message,) = smtp.wait_for_messages(1)
    assert message["References"] == "<alert.0123456789abcdef@airflow-alerting>"
    assert message[INCIDENT_HEADER] is None
