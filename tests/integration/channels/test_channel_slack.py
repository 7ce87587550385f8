"""SlackChannel end to end: the official Slack hooks against the local Slack server."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest

from airflow_alerting.channels import SlackChannel
from airflow_alerting.model import (
    Alert,
    Classification,
    Decision,
    DecisionReason,
    DeliveryResult,
    Notification,
    Severity,
)
from airflow_alerting.render.slack import render_slack
from airflow_alerting.testing.servers import (
    SlackServer,
    connection_env,
    slack_api_connection,
    slack_webhook_connection,
)

pytestmark = pytest.mark.integration

# Unique connection ids: the session's shared fixtures define the *_default ones.
API_CONN = "itest_channel_slack_api"
WEBHOOK_CONN = "itest_channel_slack_webhook"
TOKEN = "xoxb-itest-0123456789-SECRETTOKEN"


def notification(message: str = "permission denied for table sales <!channel>") -> Notification:
    return Notification(
        alert=Alert(
            dag_id="my_dag",
            task_id="load_warehouse",
            run_id="manual__1",
            exception_type="PermissionError",
            message=message,
            log_url="https://airflow.example/log?ti=1",
            occurred_at=datetime(2024, 5, 1, 12, tzinfo=timezone.utc),
        ),
        classification=Classification(Severity.HIGH, ("final try",)),
        fingerprint="0123456789abcdef",
        channel="slack",
        decision=Decision(True, DecisionReason.FIRST),
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def slack() -> Iterator[SlackServer]:
    with SlackServer(token=TOKEN) as server:
        yield server


@pytest.fixture
def api(slack: SlackServer, monkeypatch: pytest.MonkeyPatch) -> SlackServer:
    monkeypatch.setenv(*connection_env(API_CONN, slack_api_connection(slack)))
    monkeypatch.setenv(*connection_env(WEBHOOK_CONN, slack_webhook_connection(slack)))
    return slack


@pytest.fixture
def webhook_only(slack: SlackServer, monkeypatch: pytest.MonkeyPatch) -> SlackServer:
    monkeypatch.delenv(connection_env(API_CONN, {})[0], raising=False)
    monkeypatch.setenv(*connection_env(WEBHOOK_CONN, slack_webhook_connection(slack)))
    return slack


def channel(**kwargs: Any) -> SlackChannel:
    return SlackChannel(slack_conn_id=API_CONN, webhook_conn_id=WEBHOOK_CONN, **kwargs)


def assert_secret_free(result: DeliveryResult, server: SlackServer) -> None:
    webhook_path = server.webhook_url.split("/services/", 1)[1]
    for secret in (TOKEN, server.webhook_url, webhook_path, "SECRETTOKEN"):
        assert secret not in result.detail, result.detail


def test_delivers_once_through_the_web_api(api: SlackServer) -> None:
    n = notification()
    result = channel(channel="#data-alerts").deliver(n)

    assert result.ok, result
    messages = api.wait_for_messages(1)
    assert len(messages) == 1 and len(api.requests) == 1
    posted = messages[0]
    rendered = render_slack(n)
    assert posted["via"] == "api"
    assert posted["channel"] == "#data-alerts"
    assert posted["text"] == rendered.text
    assert posted["blocks"] == json.loads(json.dumps(rendered.blocks))
    assert "<!channel>" not in json.dumps(posted)
    assert result.external_id == posted["ts"]
    assert_secret_free(result, api)


def test_falls_back_to_the_webhook_without_an_api_connection(webhook_only: SlackServer) -> None:
    n = notification()
    result = channel().deliver(n)

    assert result.ok, result
    assert result.external_id is None
    (posted,) = webhook_only.wait_for_messages(1)
    assert posted["via"] == "webhook"
    assert posted["text"] == render_slack(n).text
    assert len(posted["blocks"]) == len(render_slack(n).blocks)
    assert_secret_free(result, webhook_only)


def test_no_connection_at_all_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for conn_id in (API_CONN, WEBHOOK_CONN):
        monkeypatch.delenv(connection_env(conn_id, {})[0], raising=False)
    result = channel().deliver(notification())
    assert not result.ok and not result.retryable
    assert API_CONN in result.detail and WEBHOOK_CONN in result.detail


@pytest.mark.parametrize("via", ["api", "webhook"])
@pytest.mark.parametrize(
    ("fault", "retryable", "retry_after", "in_detail"),
    [
        pytest.param({"status": 500}, True, None, "HTTP 500", id="500"),
        pytest.param({"status": 503}, True, None, "HTTP 503", id="503"),
        pytest.param({"status": 429, "retry_after": 7}, True, 7.0, "HTTP 429", id="429"),
        pytest.param({"status": 403, "body": "invalid_token"}, False, None, "HTTP 403", id="403"),
    ],
)
def test_http_errors(
    via: str,
    fault: dict[str, Any],
    retryable: bool,
    retry_after: float | None,
    in_detail: str,
    slack: SlackServer,
    request: pytest.FixtureRequest,
) -> None:
    request.getfixturevalue("api" if via == "api" else "webhook_only")
    slack.fail_next(**fault)

    result = channel().deliver(notification())

    assert not result.ok
    assert result.retryable is retryable
    assert result.retry_after == retry_after
    assert in_detail in result.detail
    # slack_sdk's own retry handlers are off: exactly one request per delivery
    assert len(slack.requests) == 1
    assert slack.messages == []
    assert_secret_free(result, slack)


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        ("channel_not_found", False),
        ("not_in_channel", False),
        ("is_archived", False),
        ("ratelimited", True),
        ("internal_error", True),
    ],
)
def test_api_ok_false(error: str, retryable: bool, api: SlackServer) -> None:
    api.slack_error_next(error)
    result = channel().deliver(notification())
    assert not result.ok
    assert result.retryable is retryable
    assert error in result.detail
    assert_secret_free(result, api)


def test_webhook_error_codes_are_not_retried(webhook_only: SlackServer) -> None:
    webhook_only.slack_error_next("channel_not_found")
    result = channel().deliver(notification())
    assert not result.ok and not result.retryable
    assert "HTTP 404 channel_not_found" in result.detail
    assert_secret_free(result, webhook_only)


def test_invalid_token_is_not_retried(slack: SlackServer, monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = {**slack_api_connection(slack), "password": "xoxb-wrong-token-value"}
    monkeypatch.setenv(*connection_env(API_CONN, wrong))
    result = channel().deliver(notification())
    assert not result.ok and not result.retryable
    assert "invalid_auth" in result.detail
    assert "xoxb-wrong-token-value" not in result.detail


@pytest.mark.parametrize("via", ["api", "webhook"])
def test_connection_refused_is_retryable(via: str, monkeypatch: pytest.MonkeyPatch) -> None:
    port = closed_port()
    monkeypatch.setenv(
        *connection_env(
            API_CONN,
            {"conn_type": "slack", "password": TOKEN, "extra": {"base_url": f"http://127.0.0.1:{port}/api/"}},
        )
    )
    webhook_url = f"http://127.0.0.1:{port}/services/T0/B0/SECRETTOKEN"
    monkeypatch.setenv(*connection_env(WEBHOOK_CONN, {"conn_type": "slackwebhook", "password": webhook_url}))
    if via == "webhook":
        monkeypatch.delenv(connection_env(API_CONN, {})[0])

    result = channel().deliver(notification())

    assert not result.ok and result.retryable, result
    assert "refused" in result.detail.lower()
    assert TOKEN not in result.detail and "SECRETTOKEN" not in result.detail


@pytest.mark.parametrize("via", ["api", "webhook"])
def test_timeout_is_retryable_and_bounded(
    via: str, slack: SlackServer, request: pytest.FixtureRequest
) -> None:
    request.getfixturevalue("api" if via == "api" else "webhook_only")
    slack.stall_next(3)

    started = time.monotonic()
    result = channel(timeout=0.5).deliver(notification())

    assert time.monotonic() - started < 2.5
    assert not result.ok and result.retryable, result
    assert "timed out" in result.detail
    # The server did post it: a retry after a read timeout can duplicate the message.
    assert len(slack.wait_for_messages(1)) == 1
    assert_secret_free(result, slack)


def test_tokens_in_the_error_are_not_posted(api: SlackServer) -> None:
    channel().deliver(notification(message=f"auth failed with {TOKEN} and xoxb-999-888-other"))
    posted = json.dumps(api.wait_for_messages(1))
    assert "SECRETTOKEN" not in posted and "999-888-other" not in posted
