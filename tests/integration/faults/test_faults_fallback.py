"""The policy's ``fallback_channel``: a critical alert whose channel fails also goes by email."""

from __future__ import annotations

import pytest
from faults_support import (
    Faults,
    InspectableStore,
    by_channel,
    failure,
    history,
    reasons,
    routed_to,
)

from airflow_alerting.model import DecisionReason, Severity

pytestmark = pytest.mark.integration


def test_critical_alert_falls_back_to_email_when_slack_fails(faults: Faults) -> None:
    store = InspectableStore()
    manager = faults.manager(
        routed_to("slack", "pagerduty", severity="critical", fallback_channel="email"), store=store
    )
    faults.slack.fail_next(500, count=3)

    outcome = manager.handle(failure(), severity=Severity.CRITICAL)

    # a critical incident pages once: its first failure is the incident's announcement
    assert reasons(outcome) == {
        "slack": DecisionReason.FIRST,
        "pagerduty": DecisionReason.FIRST,
        "email": DecisionReason.FALLBACK,
    }
    assert set(outcome.sent_to) == {"pagerduty", "email"}
    assert outcome.failed == ("slack",)
    fallback = by_channel(outcome)["email"]
    assert "slack" in fallback.decision.detail
    [mail] = faults.smtp.messages
    # incident mail: one stable subject per incident (its cause); severity and task are in the body
    assert "PermissionError" in mail["Subject"]
    body = mail.get_body(preferencelist=("plain",)).get_content()
    assert body.startswith("[CRITICAL] ")
    assert "load_orders" in body
    entries = {e.channel: e for e in history(manager)}
    assert (entries["email"].reason, entries["email"].delivered) == ("fallback", True)
    assert (entries["slack"].reason, entries["slack"].delivered) == ("first", False)
    # slack itself is still owed its message
    assert [i.channel for i in store.outbox()] == ["slack"]


def test_fallback_on_a_permanent_failure_too(faults: Faults) -> None:
    manager = faults.manager(routed_to("slack", severity="critical", fallback_channel="email"))
    faults.slack.slack_error_next("channel_not_found")

    outcome = manager.handle(failure(), severity=Severity.CRITICAL)

    assert reasons(outcome)["email"] is DecisionReason.FALLBACK
    assert outcome.sent_to == ("email",)
    assert len(faults.smtp.messages) == 1


def test_no_fallback_when_email_already_got_the_alert(faults: Faults) -> None:
    manager = faults.manager(
        routed_to("email", "slack", "pagerduty", severity="critical", fallback_channel="email")
    )
    faults.slack.fail_next(500, count=3)

    outcome = manager.handle(failure(), severity=Severity.CRITICAL)

    assert DecisionReason.FALLBACK not in reasons(outcome).values()
    assert [c.channel for c in outcome.channels] == ["email", "slack", "pagerduty"]
    assert len(faults.smtp.messages) == 1


@pytest.mark.parametrize("severity", [Severity.HIGH, Severity.MEDIUM])
def test_no_fallback_for_non_critical_alerts(faults: Faults, severity: Severity) -> None:
    manager = faults.manager(routed_to("slack", severity=severity.label, fallback_channel="email"))
    faults.slack.fail_next(500, count=3)

    outcome = manager.handle(failure(), severity=severity)

    assert outcome.failed == ("slack",)
    assert outcome.sent_to == ()
    assert "email" not in reasons(outcome)
    assert faults.smtp.messages == []


def test_no_fallback_when_nothing_failed(faults: Faults) -> None:
    manager = faults.manager(routed_to("slack", severity="critical", fallback_channel="email"))

    outcome = manager.handle(failure(), severity=Severity.CRITICAL)

    assert outcome.sent_to == ("slack",)
    assert faults.smtp.messages == []


def test_a_failing_fallback_channel_is_not_tried_twice(faults: Faults) -> None:
    store = InspectableStore()
    manager = faults.manager(
        routed_to("slack", "email", severity="critical", fallback_channel="email"), store=store
    )
    faults.slack.fail_next(500, count=3)
    faults.smtp.fail_next(451, count=3)  # every attempt of the one delivery this callback makes

    manager.handle(failure(), severity=Severity.CRITICAL)
    faults.clock.advance(minutes=2)
    manager.redeliver_outbox()

    assert [i.channel for i in store.outbox()] == []
    assert len(faults.smtp.messages) == 1
