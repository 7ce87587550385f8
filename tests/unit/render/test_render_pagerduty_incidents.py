"""PagerDuty rendering of incidents: one dedup_key per incident, trigger/acknowledge/resolve."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from airflow_alerting.incidents.model import Incident, IncidentMember, IncidentState
from airflow_alerting.model import (
    Alert,
    Classification,
    Decision,
    DecisionReason,
    Notification,
    NotificationAction,
    Severity,
)
from airflow_alerting.render.pagerduty import (
    DETAIL_DAGS,
    DETAIL_TASKS,
    MAX_DEDUP_KEY,
    MAX_FIELD,
    MAX_SUMMARY,
    dedup_key,
    event_action,
    render_pagerduty_event,
)
from airflow_alerting.testing.servers import pagerduty_event_errors

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
KEY = "R0UTINGKEY0000000000000000000000"
TITLE = "OperationalError: could not connect to server"
BLAST = "blast radius: 20 DAGs affected, raised to critical"


def outage(size: int = 500, **fields: Any) -> Incident:
    """One DB outage: ``size`` failures in ``size`` tasks across 20 DAGs."""
    sample = tuple(
        IncidentMember(dag_id=f"dag_{i % 20:02d}", task_id=f"task_{i:03d}", last_at=T0 + timedelta(seconds=i))
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
    action: NotificationAction = NotificationAction.ANNOUNCE, incident: Incident | None = None, **alert: Any
) -> Notification:
    fields: dict[str, Any] = {
        "dag_id": "dag_07",
        "task_id": "task_487",
        "run_id": "scheduled__2024-05-01",
        "exception_type": "psycopg2.OperationalError",
        "message": "could not connect to server: Connection refused\nIs the server running?",
        "hostname": "worker-3",
        "log_url": "https://airflow.example/log?dag_id=dag_07",
        "occurred_at": T0 + timedelta(minutes=40),
        **alert,
    }
    return Notification(
        alert=Alert(**fields),
        classification=Classification(Severity.HIGH, ("exception OperationalError",)),
        fingerprint="0123456789abcdef",
        channel="pagerduty",
        decision=Decision(True, DecisionReason.FIRST),
        incident=incident if incident is not None else outage(),
        action=action,
    )


TRIGGERS = [NotificationAction.ANNOUNCE, NotificationAction.ESCALATE, NotificationAction.RENOTIFY]


@pytest.mark.parametrize("action", TRIGGERS)
def test_trigger_actions(action: NotificationAction) -> None:
    event = render_pagerduty_event(make(action), KEY)
    assert pagerduty_event_errors(event) == []
    assert event["event_action"] == "trigger"
    assert event["routing_key"] == KEY
    assert event["dedup_key"] == "airflow-alerting/abc"
    payload = event["payload"]
    assert payload["summary"] == f"{TITLE} (500 failures in 500 tasks across 20 DAGs)"
    assert payload["severity"] == "critical"
    assert payload["source"] == "airflow.example"
    assert payload["class"] == "psycopg2.OperationalError"
    assert "component" not in payload  # 20 DAGs: no single component
    assert event["links"] == [{"href": "https://airflow.example/log?dag_id=dag_07", "text": "View log"}]


@pytest.mark.parametrize(
    ("action", "expected"),
    [(NotificationAction.ACKNOWLEDGE, "acknowledge"), (NotificationAction.RESOLVE, "resolve")],
)
def test_acknowledge_and_resolve_carry_no_payload(action: NotificationAction, expected: str) -> None:
    incident = outage(state=IncidentState.RESOLVED, resolved_at=T0 + timedelta(minutes=42))
    event = render_pagerduty_event(make(action, incident), KEY)
    assert event == {"routing_key": KEY, "event_action": expected, "dedup_key": "airflow-alerting/abc"}
    assert pagerduty_event_errors(event) == []


def test_every_action_uses_the_incident_dedup_key() -> None:
    keys = {render_pagerduty_event(make(action), KEY)["dedup_key"] for action in NotificationAction}
    assert keys == {outage().dedup_key}
    # ... whatever the failure the notification is about
    other = make(dag_id="another", task_id="t", message="other", run_id="r2")
    assert render_pagerduty_event(other, KEY)["dedup_key"] == outage().dedup_key


def test_follow_up_and_update_fall_back_to_a_trigger() -> None:
    # Not declared by the channel; should one arrive anyway, a trigger only refreshes the alert.
    assert event_action(make(NotificationAction.FOLLOW_UP)) == "trigger"
    assert event_action(make(NotificationAction.UPDATE)) == "trigger"


def test_resolved_flag_resolves_too() -> None:
    assert event_action(replace(make(), resolved=True)) == "resolve"


@pytest.mark.parametrize(
    ("severity", "expected"),
    [
        (Severity.CRITICAL, "critical"),
        (Severity.HIGH, "error"),
        (Severity.MEDIUM, "warning"),
        (Severity.LOW, "info"),
    ],
)
def test_severity_is_the_incident_s(severity: Severity, expected: str) -> None:
    event = render_pagerduty_event(make(incident=outage(severity=severity)), KEY)
    assert event["payload"]["severity"] == expected


def test_custom_details_describe_the_incident() -> None:
    details = render_pagerduty_event(make(NotificationAction.ESCALATE), KEY)["payload"]["custom_details"]
    assert details["summary"] == "500 failures in 500 tasks across 20 DAGs"
    assert details["counts"] == {
        "failures": 500,
        "tasks": 500,
        "task_instances": 500,
        "failing": 500,
        "dags": 20,
        "silenced": 0,
    }
    assert details["dags"] == [f"dag_{i:02d}" for i in range(20)]
    assert "dags_not_shown" not in details
    assert len(details["tasks"]) == DETAIL_TASKS
    assert details["tasks"][0] == "dag_19.task_499: 1 failure, last 2024-05-01 12:08 UTC"
    assert details["task_instances_not_shown"] == 500 - DETAIL_TASKS
    assert details["first_seen"] == "2024-05-01 12:00 UTC"
    assert details["last_seen"] == "2024-05-01 12:40 UTC"
    assert details["severity"] == "critical"
    assert details["severity_reasons"] == ["exception OperationalError", BLAST]
    assert details["note"] == f"Severity raised to critical: {BLAST}"
    assert details["latest_error"].startswith("psycopg2.OperationalError: could not connect")
    assert details["latest_failure"]["dag"] == "dag_07"
    assert details["incident"] == "abc"


def test_renotify_note() -> None:
    details = render_pagerduty_event(make(NotificationAction.RENOTIFY), KEY)["payload"]["custom_details"]
    assert details["note"] == "Not acknowledged and still failing after 40 min"


def test_single_dag_incident_names_its_component() -> None:
    incident = outage(size=3, dag_ids=("billing",), dag_count=1)
    assert render_pagerduty_event(make(incident=incident), KEY)["payload"]["component"] == "billing"


def test_limits_with_500_members_and_huge_names() -> None:
    huge = "x" * 5_000
    members = tuple(IncidentMember(huge + str(i), huge, last_at=T0) for i in range(500))
    incident = outage(
        title="E" * 10_000,
        members=members,
        dag_ids=tuple(huge + str(i) for i in range(500)),
        dag_count=500,
        severity_reasons=tuple(huge for _ in range(100)),
    )
    event = render_pagerduty_event(make(incident=incident, message="m" * 1_000_000), KEY)
    assert pagerduty_event_errors(event) == []
    payload = event["payload"]
    assert len(payload["summary"]) <= MAX_SUMMARY
    assert payload["summary"].endswith("… (500 failures in 500 tasks across 500 DAGs)")
    details = payload["custom_details"]
    assert len(details["dags"]) == DETAIL_DAGS and details["dags_not_shown"] == 500 - DETAIL_DAGS
    assert len(details["tasks"]) == DETAIL_TASKS
    assert all(len(task) <= MAX_FIELD for task in details["tasks"])
    assert len(details["severity_reasons"]) == 10
    assert len(json.dumps(event)) < 64 * 1024


def test_long_incident_id_still_fits_dedup_key() -> None:
    incident = outage(id="i" * 400)
    keys = {
        render_pagerduty_event(make(action, incident), KEY)["dedup_key"]
        for action in (
            NotificationAction.ANNOUNCE,
            NotificationAction.ACKNOWLEDGE,
            NotificationAction.RESOLVE,
        )
    }
    (key,) = keys
    assert len(key) <= MAX_DEDUP_KEY
    assert key == dedup_key(make(incident=incident))


HOSTILE = "<b>x</b> password=hunter2 postgresql://app:s3cret@db/x xoxb-1234-5678-abcdefgh\r\nInjected: yes"


def test_hostile_text_is_sanitized_everywhere() -> None:
    member = IncidentMember(HOSTILE, HOSTILE, last_at=T0)
    incident = outage(
        size=1, title=HOSTILE, dag_ids=(HOSTILE,), dag_count=1, members=(member,), severity_reasons=(HOSTILE,)
    )
    event = render_pagerduty_event(
        make(NotificationAction.ESCALATE, incident, message=HOSTILE, exception_type=HOSTILE), KEY
    )
    assert pagerduty_event_errors(event) == []
    text = json.dumps(event)
    for secret in ("hunter2", "s3cret", "5678-abcdefgh"):
        assert secret not in text
    payload = event["payload"]
    assert "\n" not in payload["summary"] and "\r" not in payload["summary"]
    assert "\n" not in payload["component"]
    assert all("\n" not in task for task in payload["custom_details"]["tasks"])
    assert "\n" not in payload["custom_details"]["severity_reasons"][0]


def test_notification_without_incident_renders_as_before() -> None:
    n = replace(make(), incident=None)
    event = render_pagerduty_event(n, KEY)
    assert event["dedup_key"] == "airflow-alerting/0123456789abcdef"
    assert event["payload"]["severity"] == "error"  # the notification's HIGH, as before
    resolved = render_pagerduty_event(replace(n, resolved=True), KEY)
    assert resolved == {"routing_key": KEY, "event_action": "resolve", "dedup_key": event["dedup_key"]}
