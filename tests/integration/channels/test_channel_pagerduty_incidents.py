"""PagerDutyChannel and incidents: one dedup_key from trigger to resolve, against the local Events API."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from airflow_alerting.channels import PagerDutyChannel
from airflow_alerting.channels.base import channel_actions
from airflow_alerting.channels.pagerduty import PAGERDUTY_ACTIONS, routing_key_digest
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
)
from airflow_alerting.render.pagerduty import render_pagerduty_event
from airflow_alerting.testing.servers import (
    PagerDutyOutcome,
    PagerDutyServer,
    connection_env,
    pagerduty_connection,
)

pytestmark = pytest.mark.integration

CONN = "itest_channel_pagerduty_incidents"
ROUTING_KEY = "R0UT1NGKEYSECRET0000000000000042"
NEW_ROUTING_KEY = "R0UT1NGKEYSECRET00000000000NEW99"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
DEDUP_KEY = "airflow-alerting/0f1e2d3c4b5a69788796"


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
    action: NotificationAction, incident: Incident | None = None, announcement: Announcement | None = None
) -> Notification:
    return Notification(
        alert=Alert(
            dag_id="dag_07",
            task_id="task_487",
            run_id="scheduled__1",
            exception_type="psycopg2.OperationalError",
            message="could not connect to server: Connection refused",
            hostname="worker-3",
            log_url="https://airflow.example/log?ti=1",
            occurred_at=T0 + timedelta(minutes=40),
        ),
        classification=Classification(Severity.HIGH, ("final try",)),
        fingerprint="0123456789abcdef",
        channel="pagerduty",
        decision=Decision(True, DecisionReason.FIRST),
        incident=incident or outage(),
        action=action,
        announcement=announcement,
    )


def announcement_from(result: DeliveryResult) -> Announcement:
    """What the manager stores from the trigger's result and hands back later."""
    return Announcement("pagerduty", result.external_id, result.conversation, Severity.CRITICAL, T0)


def use_routing_key(monkeypatch: pytest.MonkeyPatch, server: PagerDutyServer, key: str) -> None:
    monkeypatch.setenv(*connection_env(CONN, pagerduty_connection(server, routing_key=key)))


@pytest.fixture
def pagerduty(monkeypatch: pytest.MonkeyPatch) -> Iterator[PagerDutyServer]:
    with PagerDutyServer() as server:
        use_routing_key(monkeypatch, server, ROUTING_KEY)
        yield server


def channel() -> PagerDutyChannel:
    return PagerDutyChannel(pagerduty_conn_id=CONN)


def assert_secret_free(result: DeliveryResult) -> None:
    for key in (ROUTING_KEY, NEW_ROUTING_KEY):
        assert key not in result.detail
        assert key not in (result.conversation or "")
        assert key not in (result.external_id or "")


def test_declares_its_actions() -> None:
    assert PagerDutyChannel.actions == PAGERDUTY_ACTIONS
    assert channel_actions(channel()) == {
        NotificationAction.ANNOUNCE,
        NotificationAction.ESCALATE,
        NotificationAction.RENOTIFY,
        NotificationAction.ACKNOWLEDGE,
        NotificationAction.RESOLVE,
    }


def test_routing_key_digest() -> None:
    assert routing_key_digest(ROUTING_KEY) == hashlib.sha256(ROUTING_KEY.encode()).hexdigest()[:12]
    assert routing_key_digest(ROUTING_KEY) != routing_key_digest(NEW_ROUTING_KEY)


def test_trigger_acknowledge_resolve_one_incident(
    pagerduty: PagerDutyServer, caplog: pytest.LogCaptureFixture
) -> None:
    trigger = channel().deliver(notification(NotificationAction.ANNOUNCE))
    assert trigger.ok, trigger
    assert trigger.external_id == DEDUP_KEY
    assert trigger.conversation == hashlib.sha256(ROUTING_KEY.encode()).hexdigest()[:12]
    assert pagerduty.incident_state(DEDUP_KEY) == "triggered"
    announced = announcement_from(trigger)

    acknowledged = outage(state=IncidentState.ACKNOWLEDGED, acknowledged_at=T0, acknowledged_by="alice")
    with caplog.at_level(logging.WARNING, logger="airflow_alerting"):
        ack = channel().deliver(notification(NotificationAction.ACKNOWLEDGE, acknowledged, announced))
        assert pagerduty.incident_state(DEDUP_KEY) == "acknowledged"
        resolved = outage(state=IncidentState.RESOLVED, resolved_at=T0 + timedelta(minutes=42))
        resolve = channel().deliver(notification(NotificationAction.RESOLVE, resolved, announced))
    assert ack.ok and resolve.ok, (ack, resolve)
    assert not caplog.records  # same key: nothing to warn about

    assert pagerduty.incident_states() == {DEDUP_KEY: "resolved"}
    events = pagerduty.events_for(DEDUP_KEY)
    assert [e["event_action"] for e in events] == ["trigger", "acknowledge", "resolve"]
    assert events[0] == render_pagerduty_event(notification(NotificationAction.ANNOUNCE), ROUTING_KEY)
    assert events[1:] == [
        {"routing_key": ROUTING_KEY, "event_action": action, "dedup_key": DEDUP_KEY}
        for action in ("acknowledge", "resolve")
    ]
    assert [o.effect for o in pagerduty.outcomes_for(DEDUP_KEY)] == ["triggered", "acknowledged", "resolved"]
    assert ack.external_id == resolve.external_id == DEDUP_KEY
    assert ack.conversation is None and resolve.conversation is None  # only the trigger says where
    for result in (trigger, ack, resolve):
        assert_secret_free(result)


def test_escalate_and_renotify_add_to_the_open_incident(pagerduty: PagerDutyServer) -> None:
    assert channel().deliver(notification(NotificationAction.ANNOUNCE)).ok
    for action in (NotificationAction.ESCALATE, NotificationAction.RENOTIFY):
        result = channel().deliver(notification(action))
        assert result.ok and result.external_id == DEDUP_KEY, result
    assert [o.effect for o in pagerduty.outcomes] == ["triggered", "deduplicated", "deduplicated"]
    assert pagerduty.incident_states() == {DEDUP_KEY: "triggered"}
    assert pagerduty.events[1]["payload"]["custom_details"]["note"].startswith("Severity raised to critical")


def test_routing_key_change_is_warned_about_and_ignored_by_pagerduty(
    pagerduty: PagerDutyServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    trigger = channel().deliver(notification(NotificationAction.ANNOUNCE))
    announced = announcement_from(trigger)
    use_routing_key(monkeypatch, pagerduty, NEW_ROUTING_KEY)

    resolved = outage(state=IncidentState.RESOLVED, resolved_at=T0 + timedelta(minutes=42))
    with caplog.at_level(logging.WARNING, logger="airflow_alerting"):
        resolve = channel().deliver(notification(NotificationAction.RESOLVE, resolved, announced))

    # sent anyway (the old key may be gone), accepted by PagerDuty, and ignored by it
    assert resolve.ok, resolve
    assert "routing key changed since the trigger" in resolve.detail
    assert pagerduty.events_for(DEDUP_KEY)[-1]["routing_key"] == NEW_ROUTING_KEY
    assert pagerduty.incident_state(DEDUP_KEY) == "triggered"
    assert pagerduty.ignored == [
        PagerDutyOutcome(
            "resolve", DEDUP_KEY, "ignored", "triggered", "routing key differs from the trigger's"
        )
    ]
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    message = record.getMessage()
    assert "routing key" in message and CONN in message and DEDUP_KEY in message
    assert routing_key_digest(ROUTING_KEY) in message and routing_key_digest(NEW_ROUTING_KEY) in message
    assert ROUTING_KEY not in message and NEW_ROUTING_KEY not in message
    assert_secret_free(resolve)


def test_acknowledge_of_an_unknown_incident_is_accepted_and_recorded(pagerduty: PagerDutyServer) -> None:
    result = channel().deliver(notification(NotificationAction.ACKNOWLEDGE))
    assert result.ok, result
    assert pagerduty.incident_states() == {}
    assert pagerduty.ignored == [
        PagerDutyOutcome("acknowledge", DEDUP_KEY, "ignored", None, "unknown dedup_key")
    ]


def test_failed_trigger_reports_no_conversation(pagerduty: PagerDutyServer) -> None:
    pagerduty.fail_next(500)
    result = channel().deliver(notification(NotificationAction.ANNOUNCE))
    assert not result.ok and result.retryable
    assert result.conversation is None
    assert_secret_free(result)
