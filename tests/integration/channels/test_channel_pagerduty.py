"""PagerDutyChannel end to end against the local Events API v2 server."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

import pytest

from airflow_alerting.channels import PagerDutyChannel
from airflow_alerting.channels.pagerduty import EndpointRefused, events_url
from airflow_alerting.model import (
    Alert,
    AlertKind,
    Classification,
    Decision,
    DecisionReason,
    DeliveryResult,
    Notification,
    Severity,
)
from airflow_alerting.render.pagerduty import render_pagerduty_event
from airflow_alerting.testing.servers import PagerDutyServer, connection_env, pagerduty_connection

pytestmark = pytest.mark.integration

CONN = "itest_channel_pagerduty"
ROUTING_KEY = "R0UT1NGKEYSECRET0000000000000042"


def notification(*, resolved: bool = False) -> Notification:
    return Notification(
        alert=Alert(
            dag_id="my_dag",
            task_id="load_warehouse",
            kind=AlertKind.TASK_SUCCESS if resolved else AlertKind.TASK_FAILURE,
            run_id="manual__1",
            exception_type="PermissionError",
            message="permission denied for table sales",
            hostname="worker-3",
            log_url="https://airflow.example/log?ti=1",
            occurred_at=datetime(2024, 5, 1, 12, tzinfo=timezone.utc),
        ),
        classification=Classification(Severity.CRITICAL, ("tag:tier1",)),
        fingerprint="0123456789abcdef",
        channel="pagerduty",
        decision=Decision(True, DecisionReason.RESOLVED if resolved else DecisionReason.FIRST),
        resolved=resolved,
    )


@pytest.fixture
def pagerduty(monkeypatch: pytest.MonkeyPatch) -> Iterator[PagerDutyServer]:
    with PagerDutyServer() as server:
        monkeypatch.setenv(*connection_env(CONN, pagerduty_connection(server, routing_key=ROUTING_KEY)))
        yield server


def channel(**kwargs: Any) -> PagerDutyChannel:
    return PagerDutyChannel(pagerduty_conn_id=CONN, **kwargs)


def assert_secret_free(result: DeliveryResult) -> None:
    assert ROUTING_KEY not in result.detail, result.detail


def test_trigger_then_resolve(pagerduty: PagerDutyServer) -> None:
    trigger = channel().deliver(notification())
    assert trigger.ok, trigger
    (event,) = pagerduty.wait_for_events(1)
    assert event == render_pagerduty_event(notification(), ROUTING_KEY)
    dedup_key = event["dedup_key"]
    assert trigger.external_id == dedup_key
    assert pagerduty.incidents == {dedup_key: "triggered"}

    resolve = channel().deliver(notification(resolved=True))
    assert resolve.ok, resolve
    events = pagerduty.wait_for_events(2)
    assert events[1] == {"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": dedup_key}
    assert resolve.external_id == dedup_key
    assert pagerduty.incidents == {dedup_key: "resolved"}
    for result in (trigger, resolve):
        assert_secret_free(result)


@pytest.mark.parametrize(
    ("fault", "retryable", "retry_after"),
    [
        pytest.param({"status": 500}, True, None, id="500"),
        pytest.param({"status": 502}, True, None, id="502"),
        pytest.param({"status": 429, "retry_after": 3}, True, 3.0, id="429"),
        pytest.param({"status": 429}, True, None, id="429-without-retry-after"),
        pytest.param(
            {
                "status": 400,
                "body": {
                    "status": "invalid event",
                    "message": "Event object is invalid",
                    "errors": [f"routing key {ROUTING_KEY} unknown"],
                },
            },
            False,
            None,
            id="400",
        ),
        pytest.param({"status": 404}, False, None, id="404"),
    ],
)
def test_http_errors(
    fault: dict[str, Any], retryable: bool, retry_after: float | None, pagerduty: PagerDutyServer
) -> None:
    pagerduty.fail_next(**fault)
    result = channel().deliver(notification())
    assert not result.ok
    assert result.retryable is retryable
    assert result.retry_after == retry_after
    assert f"HTTP {fault['status']}" in result.detail
    assert len(pagerduty.requests) == 1
    assert pagerduty.incidents == {}
    assert_secret_free(result)


def test_invalid_event_detail(pagerduty: PagerDutyServer) -> None:
    pagerduty.fail_next(400, body={"status": "invalid event", "message": "Event object is invalid"})
    result = channel().deliver(notification())
    assert result.detail == "pagerduty trigger: HTTP 400 Event object is invalid"


def test_connection_refused_is_retryable(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    conn = {"conn_type": "pagerduty_events", "password": ROUTING_KEY, "host": f"http://127.0.0.1:{port}"}
    monkeypatch.setenv(*connection_env(CONN, conn))
    result = channel().deliver(notification())
    assert not result.ok and result.retryable, result
    assert_secret_free(result)


def test_timeout_is_retryable(pagerduty: PagerDutyServer) -> None:
    pagerduty.stall_next(3)
    started = time.monotonic()
    result = channel(timeout=0.5).deliver(notification())
    assert time.monotonic() - started < 2.5
    assert not result.ok and result.retryable, result
    assert_secret_free(result)


@pytest.mark.parametrize(
    "host",
    ["http://example.com", "http://10.0.0.8:8080", "ftp://127.0.0.1", "http://127.0.0.1.evil.example"],
)
def test_plain_http_to_other_hosts_is_refused(host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        *connection_env(CONN, {"conn_type": "pagerduty_events", "password": ROUTING_KEY, "host": host})
    )
    started = time.monotonic()
    result = channel().deliver(notification())
    assert time.monotonic() - started < 1  # refused before any network I/O
    assert not result.ok and not result.retryable
    assert "refusing" in result.detail
    assert_secret_free(result)


def test_allowed_http_hosts_can_be_narrowed(pagerduty: PagerDutyServer) -> None:
    result = channel(allowed_http_hosts=()).deliver(notification())
    assert not result.ok and not result.retryable
    assert pagerduty.requests == []


def test_missing_routing_key(pagerduty: PagerDutyServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(*connection_env(CONN, {"conn_type": "pagerduty_events", "host": pagerduty.url}))
    result = channel().deliver(notification())
    assert not result.ok and not result.retryable
    assert "routing key" in result.detail


def test_missing_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(connection_env(CONN, {})[0], raising=False)
    result = channel().deliver(notification())
    assert not result.ok and not result.retryable
    assert f"{CONN!r}: connection not found" in result.detail, result.detail
    assert "airflow connections add" in result.detail  # the fix, for the error logged with it


def test_resolve_uses_the_trigger_dedup_key_even_for_long_fingerprints(pagerduty: PagerDutyServer) -> None:
    long_trigger = replace(notification(), fingerprint="f" * 600)
    long_resolve = replace(notification(resolved=True), fingerprint="f" * 600)
    assert channel().deliver(long_trigger).ok
    assert channel().deliver(long_resolve).ok
    assert list(pagerduty.incidents.values()) == ["resolved"]


@pytest.mark.parametrize(
    ("host", "schema", "port", "expected"),
    [
        (None, None, None, "https://events.pagerduty.com/v2/enqueue"),
        ("events.eu.pagerduty.com", None, None, "https://events.eu.pagerduty.com/v2/enqueue"),
        ("http://127.0.0.1:8080", None, None, "http://127.0.0.1:8080/v2/enqueue"),
        ("127.0.0.1", "http", 9000, "http://127.0.0.1:9000/v2/enqueue"),
        ("http://[::1]:8080/v2/enqueue", None, None, "http://[::1]:8080/v2/enqueue"),
        ("https://proxy.example/pd/", None, None, "https://proxy.example/pd/v2/enqueue"),
    ],
)
def test_events_url(host: str | None, schema: str | None, port: int | None, expected: str) -> None:
    allowed = ("127.0.0.1", "localhost", "::1")
    assert events_url(host, schema=schema, port=port, allowed_http_hosts=allowed) == expected


def test_events_url_refuses_plain_http_by_default() -> None:
    with pytest.raises(EndpointRefused, match="refusing"):
        events_url("http://127.0.0.1:8080")
