"""Bad configuration: invalid policies fail loudly naming the field; at run time a channel whose
connection is missing or malformed fails alone, with a logged error, while the others deliver."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from faults_support import (
    PAGERDUTY_CONN,
    ROUTING_KEY,
    SLACK_CONN,
    SMTP_CONN,
    TOKEN,
    WEBHOOK_CONN,
    Faults,
    InspectableStore,
    by_channel,
    failure,
    reasons,
)

from airflow_alerting.model import DecisionReason, Severity
from airflow_alerting.policy import AlertPolicy, PolicyError

pytestmark = pytest.mark.integration

ALL = {"email", "slack", "pagerduty"}

# --- policies ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "path", "fragment"),
    [
        pytest.param(
            {"routing": {"matrix": {"urgent": ["slack"]}}},
            "policy.routing.matrix.urgent",
            "unknown",
            id="matrix-severity",
        ),
        pytest.param(
            {"classification": {"default_severity": "urgent"}},
            "policy.classification.default_severity",
            "urgent",
            id="default-severity",
        ),
        pytest.param(
            {"throttle": {"windows": {"high": -60}}},
            "policy.throttle.windows.high",
            "negative",
            id="negative-window",
        ),
        pytest.param(
            {"throttle": {"windows": {"medium": "-15m"}}},
            "policy.throttle.windows.medium",
            "-15m",
            id="negative-window-text",
        ),
        pytest.param(
            {"fallback_channel": 3}, "policy.fallback_channel", "one channel name", id="fallback-not-a-name"
        ),
        pytest.param(
            {"fallback_channel": ""}, "policy.fallback_channel", "one channel name", id="fallback-empty-name"
        ),
    ],
)
def test_invalid_policy_names_the_field(data: dict[str, Any], path: str, fragment: str) -> None:
    with pytest.raises(PolicyError) as caught:
        AlertPolicy.from_dict(data)

    assert caught.value.path == path
    assert fragment in caught.value.problem
    assert str(caught.value).startswith(f"{path}: ")


def test_undeclared_fallback_channel_names_the_fallback_field() -> None:
    with pytest.raises(PolicyError) as caught:
        AlertPolicy.from_dict({"fallback_channel": "sms"})

    assert caught.value.path == "policy.fallback_channel"
    assert "sms" in caught.value.problem


def test_fallback_channel_must_be_one_channel() -> None:
    with pytest.raises(PolicyError) as caught:
        AlertPolicy.from_dict({"fallback_channel": ["email", "slack"]})

    assert caught.value.path == "policy.fallback_channel"


def test_fallback_to_a_declared_custom_channel(faults: Faults) -> None:
    policy = AlertPolicy.from_dict(
        {
            "channels": {"oncall-mail": {"type": "email", "to": ["pager@example.test"]}},
            "routing": {"matrix": {"critical": ["slack"]}},
            "fallback_channel": "oncall-mail",
            "escalation": {"after": 0},
        }
    )
    manager = faults.manager(policy)
    faults.slack.slack_error_next("invalid_auth")

    outcome = manager.handle(failure(), severity=Severity.CRITICAL)

    assert reasons(outcome) == {"slack": DecisionReason.NO_WINDOW, "oncall-mail": DecisionReason.FALLBACK}
    assert outcome.sent_to == ("oncall-mail",)
    [(_, rcpt_tos)] = faults.smtp.envelopes
    assert rcpt_tos == ["pager@example.test"]


# --- connections at run time --------------------------------------------------------------------


def _drop_slack(faults: Faults) -> None:
    faults.drop_connection(SLACK_CONN)
    faults.drop_connection(WEBHOOK_CONN)


BROKEN: list[Any] = [
    pytest.param("slack", _drop_slack, "no usable connection", id="slack-missing"),
    pytest.param(
        "slack",
        lambda f: f.set_connection(SLACK_CONN, "{not json"),
        "no usable connection",
        id="slack-env-not-json",
    ),
    pytest.param(
        "slack",
        lambda f: f.set_connection(
            SLACK_CONN, {"conn_type": "slack", "extra": {"base_url": f.slack.base_url}}
        ),
        "no usable connection",
        id="slack-no-token",
    ),
    pytest.param(
        "pagerduty", lambda f: f.drop_connection(PAGERDUTY_CONN), "connection not found", id="pd-missing"
    ),
    pytest.param(
        "pagerduty",
        lambda f: f.set_connection(
            PAGERDUTY_CONN,
            {"conn_type": "pagerduty_events", "password": ROUTING_KEY, "host": "http://example.com"},
        ),
        "https",
        id="pd-plain-http-host",
    ),
    pytest.param(
        "pagerduty",
        lambda f: f.set_connection(
            PAGERDUTY_CONN, {"conn_type": "pagerduty_events", "host": f.pagerduty.url}
        ),
        "no routing key",
        id="pd-no-routing-key",
    ),
    pytest.param("email", lambda f: f.drop_connection(SMTP_CONN), "connection not found", id="smtp-missing"),
]


@pytest.mark.parametrize(("channel", "breaker", "fragment"), BROKEN)
def test_a_broken_connection_fails_alone_with_a_logged_error(
    faults: Faults,
    channel: str,
    breaker: Callable[[Faults], None],
    fragment: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="airflow_alerting")
    store = InspectableStore()
    manager = faults.manager(store=store)
    breaker(faults)

    outcome = manager.handle(failure(), severity=Severity.CRITICAL)

    assert set(outcome.sent_to) == ALL - {channel}
    delivery = by_channel(outcome)[channel].delivery
    assert delivery is not None
    assert (delivery.ok, delivery.retryable, delivery.attempts) == (False, False, 1), delivery
    assert fragment in delivery.detail
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and channel in r.getMessage()]
    assert errors, caplog.text
    assert store.outbox() == []  # a configuration error does not heal by itself
    assert faults.blocked_hosts == []  # and nothing was sent anywhere else instead


def test_a_policy_channel_with_an_unknown_connection_fails_alone(faults: Faults) -> None:
    policy = AlertPolicy.from_dict(
        {
            "channels": {
                "team-slack": {
                    "type": "slack",
                    "conn_id": "faults_no_such_conn",
                    "webhook_conn_id": "faults_nope",
                }
            },
            "routing": {"matrix": {"high": ["team-slack", "email"]}},
            "escalation": {"after": 0},
        }
    )
    manager = faults.manager(policy)

    outcome = manager.handle(failure(), severity=Severity.HIGH)

    assert outcome.sent_to == ("email",)
    assert outcome.failed == ("team-slack",)


def test_slack_connection_with_malformed_extra_is_a_configuration_error(faults: Faults) -> None:
    faults.set_connection(
        SLACK_CONN,
        {"conn_type": "slack", "password": TOKEN, "extra": '{"base_url": "' + faults.slack.base_url + '",}'},
    )
    manager = faults.manager()

    outcome = manager.handle(failure(), severity=Severity.CRITICAL)

    assert set(outcome.sent_to) == {"email", "pagerduty"}
    assert faults.blocked_hosts == []
    delivery = by_channel(outcome)["slack"].delivery
    assert delivery is not None and not delivery.retryable


def test_smtp_connection_without_host_is_a_configuration_error(faults: Faults) -> None:
    faults.set_connection(
        SMTP_CONN,
        {
            "conn_type": "smtp",
            "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "a@example.test"},
        },
    )
    store = InspectableStore()
    manager = faults.manager(store=store)

    outcome = manager.handle(failure(), severity=Severity.CRITICAL)

    assert set(outcome.sent_to) == {"slack", "pagerduty"}
    delivery = by_channel(outcome)["email"].delivery
    assert delivery is not None
    assert (delivery.retryable, delivery.attempts) == (False, 1), delivery
    assert store.outbox() == []
