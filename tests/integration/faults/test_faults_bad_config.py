"""Bad configuration: invalid policies fail loudly naming the field; at run time a channel whose
connection is missing or malformed fails alone, with a logged error, while the others deliver."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
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

    # a critical incident's first announcement is FIRST: criticals no longer page on every failure
    assert reasons(outcome) == {"slack": DecisionReason.FIRST, "oncall-mail": DecisionReason.FALLBACK}
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


# --- bad [alerting] values: reported, replaced by the default, and the alert still goes out ------

#: one unusable value per [alerting] option (and a few more for the options that matter most)
BAD_OPTION_VALUES: list[tuple[str, str]] = [
    ("state_backend", "redis"),
    ("state_backend", "sql"),  # without sql_conn_id
    ("sql_conn_id", "alerting\ndb"),
    ("slack_conn_id", "faults slack\tapi"),
    ("slack_webhook_conn_id", "hook\r\nX-Injected: 1"),
    ("slack_channel", "#faults\r\nX-Injected: 1"),
    ("smtp_conn_id", "smtp\x7fops"),
    ("email_to", "oncall"),
    ("email_from", "airflow"),
    ("pagerduty_conn_id", "pd\x1b[31m"),
    ("base_url", "airflow.example.com"),
    ("policy_file", "/nonexistent/alerting-policy.yaml"),
    ("policy_file", "{malformed}"),
    ("policy_file", "{invalid}"),
    ("policy_variable", "alerting\npolicy"),
    ("silences_variable", "alerting\tsilences"),
    ("callback_deadline_seconds", "soon"),
    ("callback_deadline_seconds", "120"),  # above [dag_processor] dag_file_processor_timeout (50)
    ("delivery_attempts", "three"),
    ("delivery_attempts", "0"),
    ("delivery_timeout_seconds", "-1"),
    ("allowed_http_hosts", "http://localhost"),
    ("allowed_http_hosts", "127.0.0.1:8080"),
    ("history_limit", "lots"),
    ("maintenance_schedule", "every five minutes"),
    ("zero_touch", "maybe"),
]


def test_every_option_has_a_bad_value_case() -> None:
    from airflow_alerting.config import OPTIONS

    assert {option for option, _ in BAD_OPTION_VALUES} == set(OPTIONS)


@pytest.fixture
def configured(faults: Faults, airflow_db: Any, tmp_path: Path) -> Iterator[Faults]:
    """``[alerting]`` pointing at the fault servers through AIRFLOW__ALERTING__* (as operators set it).

    The default connection ids point at the same servers, so an option that falls back to its
    default (``slack_conn_id`` -> ``slack_api_default``) still reaches them.
    """
    from airflow_alerting import config
    from airflow_alerting import manager as manager_module
    from airflow_alerting.testing.servers import pagerduty_connection, slack_api_connection, smtp_connection

    # the default Variables backend: its state is cleared below, so no test sees another's alerts
    env = {
        "SLACK_CONN_ID": SLACK_CONN,
        "SLACK_WEBHOOK_CONN_ID": WEBHOOK_CONN,
        "SLACK_CHANNEL": "#faults",
        "SMTP_CONN_ID": SMTP_CONN,
        "EMAIL_TO": "oncall@example.test",
        "PAGERDUTY_CONN_ID": PAGERDUTY_CONN,
        "DELIVERY_TIMEOUT_SECONDS": "2",
        "CALLBACK_DEADLINE_SECONDS": "10",
    }
    for name in [n for n in os.environ if n.startswith("AIRFLOW__ALERTING__")]:
        faults.monkeypatch.delenv(name)
    faults.monkeypatch.delenv("AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT", raising=False)
    for option, value in env.items():
        faults.monkeypatch.setenv(f"AIRFLOW__ALERTING__{option}", value)
    faults.set_connection("slack_api_default", slack_api_connection(faults.slack))
    faults.set_connection("smtp_default", smtp_connection(faults.smtp))
    faults.set_connection(
        "pagerduty_events_default", pagerduty_connection(faults.pagerduty, routing_key=ROUTING_KEY)
    )
    (tmp_path / "malformed.yaml").write_text("routing: [unclosed\n")
    (tmp_path / "invalid.yaml").write_text("routing:\n  matrix:\n    critical: [sms]\n")
    faults.monkeypatch.setattr(config, "_REPORTED", set(), raising=False)
    faults.monkeypatch.setattr(config, "_CHECKED", {}, raising=False)
    manager_module._MANAGERS.clear()
    _forget_alerting_variables()
    yield faults
    manager_module._MANAGERS.clear()


def _forget_alerting_variables() -> None:
    from airflow.models import Variable
    from airflow.utils.session import create_session

    with create_session() as session:
        session.query(Variable).filter(Variable.key.like("alerting.%")).delete(synchronize_session=False)


def _dag_failure() -> dict[str, Any]:
    """The context of a DAG-level failure callback (runs in the DAG processor) of a new run."""
    dag_id = "faults_bad_config"
    return {
        "dag": SimpleNamespace(dag_id=dag_id, tags=[]),
        "dag_run": SimpleNamespace(dag_id=dag_id, run_id=f"manual__{uuid.uuid4().hex}"),
        "reason": "task_failure",
    }


@pytest.mark.parametrize(("option", "value"), BAD_OPTION_VALUES)
def test_a_bad_option_is_reported_and_the_alert_still_goes_out(
    configured: Faults, caplog: pytest.LogCaptureFixture, tmp_path: Path, option: str, value: str
) -> None:
    from airflow_alerting import AlertNotifier

    value = value.format(malformed=tmp_path / "malformed.yaml", invalid=tmp_path / "invalid.yaml")
    configured.monkeypatch.setenv(f"AIRFLOW__ALERTING__{option.upper()}", value)
    reported_as = "sql_conn_id" if value == "sql" else option

    with caplog.at_level(logging.ERROR, logger="airflow_alerting"):
        notifier = AlertNotifier(severity="critical")  # as a DAG file does, at parse time
        parse_time = [r.getMessage() for r in caplog.records]
        caplog.clear()
        notifier(_dag_failure())  # as Airflow does when the DAG run fails

    # at parse time: one error naming the option, the value and what is used instead
    [error] = parse_time
    assert error.startswith(f"[alerting] {reported_as}: ")
    assert repr(value)[:30] in error or value in error  # numbers are shown as parsed: 120.0
    assert error.endswith(" instead")
    # at alert time: the same error again, in the log of the callback that used the fallback ...
    assert error in [r.getMessage() for r in caplog.records]
    assert configured.metrics.count("config_errors", reported_as) == 2
    assert not [r for r in caplog.records if "AlertNotifier failed" in r.getMessage()]
    # ... and the alert is delivered
    outcome = notifier.last_outcome
    assert outcome is not None
    assert "slack" in outcome.sent_to, [(c.channel, c.decision, c.delivery) for c in outcome.channels]
    [message] = configured.slack.wait_for_messages(1)
    assert "faults_bad_config" in str(message)


def test_a_bad_policy_file_falls_back_to_the_default_policy(
    configured: Faults, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # the invalid file would route critical to an undeclared "sms"; the default routes it everywhere
    configured.monkeypatch.setenv("AIRFLOW__ALERTING__POLICY_FILE", str(tmp_path / "invalid.yaml"))
    from airflow_alerting import AlertNotifier

    notifier = AlertNotifier(severity="critical")
    with caplog.at_level(logging.ERROR, logger="airflow_alerting"):
        notifier(_dag_failure())

    assert notifier.last_outcome is not None
    assert set(notifier.last_outcome.sent_to) == ALL
    assert "policy(invalid.yaml).routing.matrix.critical[0]: undeclared channel 'sms'" in caplog.text
