"""PagerDuty Events v2 rendering: event shape, severity mapping, PagerDuty's length limits."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
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
)
from airflow_alerting.render.pagerduty import MAX_DEDUP_KEY, MAX_SUMMARY, dedup_key, render_pagerduty_event
from airflow_alerting.testing.servers import pagerduty_event_errors

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
KEY = "R0UTINGKEY0000000000000000000000"


def make(severity: Severity = Severity.CRITICAL, *, resolved: bool = False, **alert: Any) -> Notification:
    fields: dict[str, Any] = {
        "dag_id": "my_dag",
        "task_id": "load_warehouse",
        "run_id": "manual__1",
        "exception_type": "builtins.PermissionError",
        "message": "denied for table sales\nsecond line",
        "hostname": "worker-3",
        "log_url": "https://airflow.example/log",
        "occurred_at": NOW,
        **alert,
    }
    return Notification(
        alert=Alert(**fields),
        classification=Classification(severity, ("final try", "tag:tier1")),
        fingerprint="0123456789abcdef",
        channel="pagerduty",
        decision=Decision(True, DecisionReason.FIRST),
        resolved=resolved,
    )


@pytest.mark.parametrize(
    ("severity", "expected"),
    [
        (Severity.CRITICAL, "critical"),
        (Severity.HIGH, "error"),
        (Severity.MEDIUM, "warning"),
        (Severity.LOW, "info"),
    ],
)
def test_severity_mapping(severity: Severity, expected: str) -> None:
    assert render_pagerduty_event(make(severity), KEY)["payload"]["severity"] == expected


def test_trigger_event() -> None:
    event = render_pagerduty_event(make(), KEY)
    assert event["routing_key"] == KEY
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == "airflow-alerting/0123456789abcdef"
    assert event["client"] == "Airflow"
    assert event["links"] == [{"href": "https://airflow.example/log", "text": "View log"}]
    payload = event["payload"]
    assert payload["summary"] == "my_dag.load_warehouse failed: PermissionError: denied for table sales"
    assert payload["source"] == "worker-3"
    assert payload["component"] == "my_dag"
    assert payload["group"] == "load_warehouse"
    assert payload["class"] == "builtins.PermissionError"
    assert payload["timestamp"] == NOW.isoformat()
    details = payload["custom_details"]
    assert details["reasons"] == ["final try", "tag:tier1"]
    assert details["fingerprint"] == "0123456789abcdef"
    assert details["error"] == "builtins.PermissionError: denied for table sales\nsecond line"
    assert pagerduty_event_errors(event) == []


def test_defaults_without_host_task_or_url() -> None:
    event = render_pagerduty_event(
        make(hostname=None, task_id=None, kind=AlertKind.DAG_FAILURE, log_url=None, exception_type=None), KEY
    )
    assert event["payload"]["source"] == "airflow"
    assert event["payload"]["group"] == "my_dag"
    assert "class" not in event["payload"]
    assert "links" not in event
    assert pagerduty_event_errors(event) == []


def test_resolve_event_is_minimal_and_matches_the_trigger() -> None:
    trigger = render_pagerduty_event(make(), KEY)
    resolve = render_pagerduty_event(make(resolved=True, kind=AlertKind.TASK_SUCCESS), KEY)
    assert resolve == {"routing_key": KEY, "event_action": "resolve", "dedup_key": trigger["dedup_key"]}
    assert pagerduty_event_errors(resolve) == []


@pytest.mark.parametrize(
    "overrides",
    [
        {"message": "m" * 100_000},
        {"title": "t" * 5000},
        {"dag_id": "d" * 5000, "task_id": "t" * 5000, "hostname": "h" * 5000, "exception_type": "E" * 5000},
    ],
)
def test_lengths(overrides: dict[str, Any]) -> None:
    event = render_pagerduty_event(make(**overrides), KEY)
    payload = event["payload"]
    assert len(payload["summary"]) <= MAX_SUMMARY
    for key in ("source", "component", "group", "class"):
        assert len(payload[key]) <= 255
    assert pagerduty_event_errors(event) == []


def test_long_fingerprint_gives_a_stable_short_dedup_key() -> None:
    n = replace(make(), fingerprint="f" * 1000)
    key = dedup_key(n)
    assert len(key) <= MAX_DEDUP_KEY
    assert key == render_pagerduty_event(replace(n, resolved=True), KEY)["dedup_key"]
    assert key != dedup_key(replace(n, fingerprint="f" * 999))


def test_untrusted_text_is_scrubbed() -> None:
    event = render_pagerduty_event(make(message="connect postgresql://u:s3cret@db/x failed"), KEY)
    assert "s3cret" not in str(event["payload"])
