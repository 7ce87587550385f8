"""Recoveries through the alert manager: a success resolves exactly what the failure reached.

With test doubles (no Airflow, no network, no sleeping clock); the builders are in manager_support.py.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from manager_support import (
    CHANNELS,
    EXPECTED_CHANNELS,
    FAST,
    StatsRecorder,
    failure,
    harness,
    reasons,
    record_stats,
    success,
    warm_airflow_masker,
)

from airflow_alerting.model import AlertKind, DecisionReason, Severity
from airflow_alerting.policy import AlertPolicy


@pytest.fixture(autouse=True)
def stats(monkeypatch: pytest.MonkeyPatch) -> StatsRecorder:
    warm_airflow_masker()
    return record_stats(monkeypatch)


def test_success_resolves_exactly_the_channels_that_got_the_alert() -> None:
    h = harness()
    h.channels["slack"].fail_next(retryable=False)
    failed = h.manager.handle(failure(1))
    assert failed.sent_to == ("email",)
    h.clock.advance(minutes=7)

    resolved = h.manager.handle(success(2))

    assert resolved.sent_to == ("email",)
    assert reasons(resolved) == {"email": DecisionReason.RESOLVED}
    notification = h.got("email")[-1]
    assert notification.resolved
    assert failed.incident is not None
    assert notification.fingerprint == failed.incident.id  # a resolution is about the incident
    assert notification.alert.kind is AlertKind.TASK_SUCCESS
    assert notification.opened_at == h.clock() - timedelta(minutes=7)
    assert h.got("slack") == []
    assert h.got("pagerduty") == []


def test_success_resolves_every_delivered_channel_once() -> None:
    h = harness()
    h.manager.handle(failure(1), severity=Severity.CRITICAL)

    first = h.manager.handle(success(2))
    second = h.manager.handle(success(3))

    assert set(first.sent_to) == {"email", "slack", "pagerduty"}
    assert all(h.got(name)[-1].resolved for name in CHANNELS)
    assert second.channels == ()
    assert h.counts() == {"email": 2, "slack": 2, "pagerduty": 2}


def test_failure_after_a_resolve_is_sent_again() -> None:
    h = harness()
    h.manager.handle(failure(1))
    h.clock.advance(minutes=1)
    h.manager.handle(success(2))
    h.clock.advance(minutes=1)

    again = h.manager.handle(failure(3))

    assert set(again.sent_to) == EXPECTED_CHANNELS[Severity.HIGH]
    assert not h.got("slack")[-1].resolved


def test_success_of_another_task_resolves_nothing() -> None:
    h = harness()
    h.manager.handle(failure(1))

    other = h.manager.handle(success(2, task_id="load_customers"))

    assert other.channels == ()
    assert h.manager.handle(success(3)).sent_to != ()


def test_success_without_a_prior_failure_sends_nothing() -> None:
    h = harness()

    outcome = h.manager.handle(success())

    assert outcome.channels == ()
    assert h.counts() == dict.fromkeys(CHANNELS, 0)


def test_resolve_can_be_switched_off() -> None:
    h = harness(AlertPolicy(resolve_on_success=False))
    h.manager.handle(failure(1))

    assert h.manager.handle(success(2)).channels == ()
    assert all(not n.resolved for name in CHANNELS for n in h.got(name))


def test_failed_resolve_is_redelivered_from_the_outbox() -> None:
    h = harness()
    h.manager.handle(failure(1))
    h.channels["email"].fail_next(retryable=True, count=FAST.attempts)

    first = h.manager.handle(success(2))
    assert first.failed == ("email",)
    assert not any(n.resolved for n in h.got("email"))
    # the incident is resolved already: a later success has nothing to resolve, the outbox does it
    assert h.manager.handle(success(3)).channels == ()
    h.clock.advance(minutes=5)

    h.manager.redeliver_outbox()

    resolutions = [n for n in h.got("email") if n.resolved]
    assert len(resolutions) == 1
    assert first.incident is not None
    assert resolutions[0].fingerprint == first.incident.id


def test_non_retryable_resolve_failure_is_recorded_not_retried() -> None:
    h = harness()
    h.manager.handle(failure(1))
    h.channels["email"].fail_next(retryable=False)

    first = h.manager.handle(success(2))
    second = h.manager.handle(success(3))
    h.clock.advance(minutes=5)
    h.manager.redeliver_outbox()

    assert first.failed == ("email",)
    assert second.channels == ()
    assert not any(n.resolved for n in h.got("email"))
    assert any(e.channel == "email" and e.delivered is False for e in h.store.history(limit=50))
