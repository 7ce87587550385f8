"""``test-channel``'s decisions that need no server: which channels exist and what fix to suggest."""

from __future__ import annotations

import pytest

from airflow_alerting.cli.channel_check import _fix, known_channels
from airflow_alerting.model import DeliveryResult
from airflow_alerting.policy import AlertPolicy, ChannelSpec


def test_known_channels_are_the_builtins_and_the_declared_ones() -> None:
    assert known_channels(AlertPolicy()) == ["email", "pagerduty", "slack"]
    policy = AlertPolicy.from_dict(
        {
            "channels": {"team_slack": {"type": "slack", "channel": "#team"}},
            "routing": {"matrix": {"high": ["team_slack"]}},
        }
    )
    assert known_channels(policy) == ["email", "pagerduty", "slack", "team_slack"]


@pytest.mark.parametrize(
    ("spec", "result", "fix"),
    [
        (
            ChannelSpec("pagerduty", "pagerduty"),
            DeliveryResult("pagerduty", ok=False, detail="connection not found: 'pd' is not defined"),
            "airflow connections add pd --conn-type pagerduty_events",
        ),
        (
            ChannelSpec("slack", "slack"),
            DeliveryResult("slack", ok=False, detail="slack: no usable connection: neither 'a' nor 'b'"),
            "airflow connections add a --conn-type slack",
        ),
        (
            ChannelSpec("slack", "slack"),
            DeliveryResult("slack", ok=False, detail="slack chat.postMessage: invalid_auth"),
            "credentials of connection 'a' were refused",
        ),
        (
            ChannelSpec("email", "email"),
            DeliveryResult("email", ok=False, retryable=True, detail="email: timed out"),
            "endpoint of connection 'a' failed or could not be reached",
        ),
    ],
)
def test_fix_names_the_connection(spec: ChannelSpec, result: DeliveryResult, fix: str) -> None:
    connection = "pd" if spec.type == "pagerduty" else "a (or webhook b)" if spec.type == "slack" else "a"
    assert fix in _fix(spec, result, connection)


def test_no_fix_for_success() -> None:
    assert _fix(ChannelSpec("email", "email"), DeliveryResult("email", ok=True), "smtp_default") == ""


@pytest.mark.parametrize(
    ("result", "may_be_open"),
    [
        (DeliveryResult("pagerduty", ok=True, detail="pagerduty trigger: accepted"), True),
        (DeliveryResult("pagerduty", ok=False, retryable=True, detail="pagerduty trigger: HTTP 500"), True),
        (DeliveryResult("pagerduty", ok=False, retryable=True, detail="no answer within 10s"), True),
        (DeliveryResult("pagerduty", ok=False, detail="pagerduty trigger: HTTP 400 invalid event"), False),
        (
            DeliveryResult(
                "pagerduty", ok=False, retryable=True, detail="pagerduty via 'pd': could not be looked up"
            ),
            False,
        ),
    ],
)
def test_a_test_incident_is_resolved_whenever_the_trigger_may_have_opened_it(
    result: DeliveryResult, may_be_open: bool
) -> None:
    from airflow_alerting.cli.channel_check import _may_have_opened

    assert _may_have_opened(result) is may_be_open
