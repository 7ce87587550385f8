"""The local servers' incident bookkeeping: PagerDuty outcomes per dedup_key, SMTP threads."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest
import requests

from airflow_alerting.testing.servers import PagerDutyOutcome, PagerDutyServer, SmtpServer

ROUTING_KEY = "R0UTINGKEY0000000000000000000000"
OTHER_KEY = "S" * 32


@pytest.fixture
def pagerduty() -> Iterator[PagerDutyServer]:
    with PagerDutyServer() as server:
        yield server


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server


def _send(server: PagerDutyServer, action: str, dedup_key: str | None, routing_key: str = ROUTING_KEY) -> str:
    event: dict[str, Any] = {"routing_key": routing_key, "event_action": action}
    if dedup_key is not None:
        event["dedup_key"] = dedup_key
    if action == "trigger":
        event["payload"] = {"summary": "db down", "source": "airflow", "severity": "critical"}
    response = requests.post(server.url + "/v2/enqueue", json=event, timeout=5)
    assert response.status_code == 202, response.text
    return str(response.json()["dedup_key"])


def test_outcomes_follow_the_incident(pagerduty: PagerDutyServer) -> None:
    _send(pagerduty, "trigger", "k")
    _send(pagerduty, "trigger", "k")
    _send(pagerduty, "acknowledge", "k", OTHER_KEY)
    _send(pagerduty, "acknowledge", "k")
    _send(pagerduty, "acknowledge", "k")
    _send(pagerduty, "resolve", "k")
    _send(pagerduty, "resolve", "k")
    _send(pagerduty, "resolve", "unknown")

    assert pagerduty.outcomes_for("k") == [
        PagerDutyOutcome("trigger", "k", "triggered", "triggered"),
        PagerDutyOutcome("trigger", "k", "deduplicated", "triggered"),
        PagerDutyOutcome(
            "acknowledge", "k", "ignored", "triggered", "routing key differs from the trigger's"
        ),
        PagerDutyOutcome("acknowledge", "k", "acknowledged", "acknowledged"),
        PagerDutyOutcome("acknowledge", "k", "ignored", "acknowledged", "already acknowledged"),
        PagerDutyOutcome("resolve", "k", "resolved", "resolved"),
        PagerDutyOutcome("resolve", "k", "ignored", "resolved", "already resolved"),
    ]
    assert [o.reason for o in pagerduty.ignored] == [
        "routing key differs from the trigger's",
        "already acknowledged",
        "already resolved",
        "unknown dedup_key",
    ]
    assert pagerduty.incident_states() == {"k": "resolved"} == pagerduty.incidents
    assert pagerduty.incident_state("k") == "resolved"
    assert pagerduty.incident_state("unknown") is None
    assert len(pagerduty.events_for("k")) == 7
    assert pagerduty.events_for("unknown") == [
        {"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": "unknown"}
    ]
    assert len(pagerduty.outcomes) == len(pagerduty.events) == 8


def test_generated_dedup_keys_are_recorded(pagerduty: PagerDutyServer) -> None:
    key = _send(pagerduty, "trigger", None)
    assert [o.effect for o in pagerduty.outcomes_for(key)] == ["triggered"]
    assert len(pagerduty.events_for(key)) == 1


def test_clear_forgets_outcomes_but_not_incidents(pagerduty: PagerDutyServer) -> None:
    _send(pagerduty, "trigger", "k")
    pagerduty.clear()
    assert (pagerduty.outcomes, pagerduty.events_for("k"), pagerduty.incident_states()) == (
        [],
        [],
        {"k": "triggered"},
    )
    _send(pagerduty, "resolve", "k")
    assert [o.effect for o in pagerduty.outcomes] == ["resolved"]
    pagerduty.reset()
    assert (pagerduty.outcomes, pagerduty.incident_states()) == ([], {})


def _mail(subject: str, message_id: str, parent: str | None = None) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = "airflow@example.test"
    message["To"] = "oncall@example.test"
    message["Message-ID"] = message_id
    if parent is not None:
        message["In-Reply-To"] = parent
        message["References"] = parent
    message.set_content("body")
    return message


def test_smtp_thread_groups_replies(smtp: SmtpServer) -> None:
    root = "<incident-with-a-long-id-that-gets-folded.announce.0123456789abcdef@mail.example.test>"
    with smtplib.SMTP(smtp.host, smtp.port, local_hostname="localhost", timeout=5) as client:
        client.send_message(_mail("[Airflow alert] db down", root))
        client.send_message(_mail("unrelated", "<other@example.test>"))
        client.send_message(_mail("Re: [Airflow alert] db down", "<reply@example.test>", root))
    messages = smtp.wait_for_messages(3)
    thread = smtp.thread(root)
    assert thread == [messages[0], messages[2]]
    assert [str(m["Subject"]).strip() for m in thread] == [
        "[Airflow alert] db down",
        "Re: [Airflow alert] db down",
    ]
    assert str(thread[1]["In-Reply-To"]).strip() == root
    assert smtp.thread("<nothing@example.test>") == []
