"""Retries, backoff and Retry-After of a real AlertManager against misbehaving local services.

Channels are the real Slack, PagerDuty and email channels built from ``[alerting]`` settings;
the local servers answer 5xx, 429 or 4xx on demand and record when each request arrived, so the
gaps between attempts are measured on the wire.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from faults_support import (
    RECIPIENT,
    SLACK_CONN,
    Faults,
    InspectableStore,
    SleepSpy,
    by_channel,
    failure,
    gaps,
    history,
    posts,
    reasons,
    routed_to,
    timed,
)

from airflow_alerting.manager import DeliveryOptions
from airflow_alerting.model import DecisionReason, Severity
from airflow_alerting.testing.servers import slack_api_connection

pytestmark = pytest.mark.integration


#: time a request/response round trip may add to a measured gap on a busy 2-core machine
OVERHEAD = 0.5
#: clock granularity between the sleeping client and the recording server
EPSILON = 0.005


def http_requests(faults: Faults, channel: str) -> list[Any]:
    if channel == "slack":
        return posts(faults.slack)
    if channel == "pagerduty":
        return list(faults.pagerduty.requests)
    raise AssertionError(f"no request log for {channel}")


def delivered_count(faults: Faults, channel: str) -> int:
    return {
        "slack": lambda: len(faults.slack.messages),
        "pagerduty": lambda: len(faults.pagerduty.events),
        "email": lambda: len(faults.smtp.messages),
    }[channel]()


def inject_transient(faults: Faults, channel: str, count: int) -> None:
    if channel == "slack":
        faults.slack.fail_next(500, count=count)
    elif channel == "pagerduty":
        faults.pagerduty.fail_next(503, count=count)
    else:
        faults.smtp.fail_next(451, count=count)


# --- 1. 5xx: retried with capped, jittered, growing backoff -------------------------------


def assert_backoff(sleeps: list[float], measured: list[float], ceilings: tuple[float, ...]) -> None:
    """Each delay is jittered within [d/2, d] for its ceiling d, and really waited on the wire."""
    assert len(sleeps) == len(measured) == len(ceilings), (sleeps, measured)
    for slept, gap, ceiling in zip(sleeps, measured, ceilings, strict=True):
        assert ceiling / 2 <= slept <= ceiling, (sleeps, ceilings)
        assert slept - EPSILON <= gap <= slept + OVERHEAD, (sleeps, measured)


@pytest.mark.parametrize("channel", ["slack", "pagerduty"])
def test_5xx_is_retried_with_growing_jittered_backoff_until_it_succeeds(
    faults: Faults, sleeps: SleepSpy, channel: str
) -> None:
    base, cap = 0.2, 0.4
    manager = faults.manager(
        routed_to(channel),
        delivery=DeliveryOptions(attempts=3, deadline=10, backoff_base=base, backoff_cap=cap),
    )
    inject_transient(faults, channel, count=2)

    outcome = manager.handle(failure(), severity=Severity.HIGH)

    delivery = by_channel(outcome)[channel].delivery
    assert delivery is not None and delivery.ok, delivery
    assert delivery.attempts == 3
    assert delivered_count(faults, channel) == 1
    measured = gaps(http_requests(faults, channel))
    # attempt k sleeps uniform(d/2, d) with d = min(cap, base * 2**(k-1)): here d = 0.2, then 0.4
    assert_backoff(sleeps.sleeps, measured, (base, cap))
    assert sleeps.sleeps[1] >= sleeps.sleeps[0], "backoff must grow"
    assert measured[1] >= base - EPSILON  # the second wait is at least its floor, d/2 = base
    entries = [e for e in history(manager) if e.channel == channel]
    assert [(e.sent, e.delivered) for e in entries] == [(True, True)]
    assert faults.metrics.count("sent", channel) == 1


def test_backoff_is_capped(faults: Faults, sleeps: SleepSpy) -> None:
    base, cap = 0.05, 0.08
    manager = faults.manager(
        routed_to("pagerduty"),
        delivery=DeliveryOptions(attempts=5, deadline=10, backoff_base=base, backoff_cap=cap),
    )
    faults.pagerduty.fail_next(502, count=4)

    outcome = manager.handle(failure(), severity=Severity.HIGH)

    delivery = by_channel(outcome)["pagerduty"].delivery
    assert delivery is not None and delivery.ok and delivery.attempts == 5
    # uncapped the ceilings would be 0.05, 0.1, 0.2, 0.4
    assert_backoff(sleeps.sleeps, gaps(faults.pagerduty.requests), (0.05, 0.08, 0.08, 0.08))


@pytest.mark.parametrize("channel", ["slack", "pagerduty", "email"])
def test_failing_every_attempt_goes_to_the_outbox_and_keeps_the_window(
    faults: Faults, channel: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="airflow_alerting")
    store = InspectableStore()
    manager = faults.manager(routed_to(channel), store=store)
    inject_transient(faults, channel, count=3)

    first = manager.handle(failure(1), severity=Severity.HIGH)

    delivery = by_channel(first)[channel].delivery
    assert delivery is not None
    assert (delivery.ok, delivery.retryable, delivery.attempts) == (False, True, 3)
    if channel != "email":
        assert len(http_requests(faults, channel)) == 3
    assert delivered_count(faults, channel) == 0
    [item] = store.outbox()
    assert item.channel == channel
    assert item.attempts == 3
    assert item.last_error == delivery.detail
    assert item.next_attempt_at > faults.clock()
    [entry] = [e for e in history(manager) if e.channel == channel]
    assert (entry.sent, entry.delivered, entry.detail) == (True, False, delivery.detail)
    assert faults.metrics.count("failed", channel) == 1
    assert faults.metrics.count("outbox", "added") == 1
    assert any("not delivered" in r.getMessage() for r in caplog.records)

    # the notification is queued, so the window is kept (AlertManager._settle): the next
    # occurrence inside it is folded in rather than sent beside the queued one ...
    faults.clock.advance(seconds=30)
    second = manager.handle(failure(2), severity=Severity.HIGH)

    assert reasons(second) == {channel: DecisionReason.THROTTLED}
    assert delivered_count(faults, channel) == 0
    # ... and once the outbox is due, the next alert's sweep delivers the first one: exactly once
    faults.clock.advance(minutes=2)
    third = manager.handle(failure(3), severity=Severity.HIGH)

    assert reasons(third) == {channel: DecisionReason.THROTTLED}
    assert delivered_count(faults, channel) == 1
    assert store.outbox() == []


# --- 2. 429 + Retry-After ----------------------------------------------------------------------


@pytest.mark.parametrize("channel", ["slack", "pagerduty"])
def test_retry_after_that_fits_the_deadline_is_honoured(
    faults: Faults, sleeps: SleepSpy, channel: str
) -> None:
    manager = faults.manager(
        routed_to("slack", "pagerduty", "email", severity="critical"),
        # the jittered backoff alone would wait at most 20 ms
        delivery=DeliveryOptions(attempts=3, deadline=6, backoff_base=0.01, backoff_cap=0.02),
    )
    server = faults.slack if channel == "slack" else faults.pagerduty
    server.fail_next(429, retry_after=1)

    outcome, took = timed(manager.handle, failure(), severity=Severity.CRITICAL)

    delivery = by_channel(outcome)[channel].delivery
    assert delivery is not None and delivery.ok and delivery.attempts == 2, delivery
    assert sleeps.sleeps == [1.0]
    [gap] = gaps(http_requests(faults, channel))
    assert gap >= 1.0 - EPSILON
    assert took < 6
    # waiting out one channel's Retry-After does not hold back the others
    assert set(outcome.sent_to) == {"slack", "pagerduty", "email"}
    other = "pagerduty" if channel == "slack" else "slack"
    assert http_requests(faults, other)[0].received_at < http_requests(faults, channel)[-1].received_at - 0.8


@pytest.mark.parametrize("channel", ["slack", "pagerduty"])
def test_retry_after_beyond_the_deadline_is_not_waited_for(
    faults: Faults, sleeps: SleepSpy, channel: str
) -> None:
    deadline = 2.0
    store = InspectableStore()
    manager = faults.manager(
        routed_to(channel),
        store=store,
        delivery=DeliveryOptions(attempts=5, deadline=deadline, backoff_base=0.01, backoff_cap=0.02),
    )
    server = faults.slack if channel == "slack" else faults.pagerduty
    server.fail_next(429, retry_after=30, count=5)

    outcome, took = timed(manager.handle, failure(), severity=Severity.HIGH)

    delivery = by_channel(outcome)[channel].delivery
    assert delivery is not None
    assert (delivery.ok, delivery.retryable, delivery.attempts) == (False, True, 1), delivery
    assert delivery.retry_after == 30
    assert len(http_requests(faults, channel)) == 1  # stopped instead of sleeping past the deadline
    assert sleeps.sleeps == []
    assert took < deadline
    [item] = store.outbox()
    assert item.channel == channel


# --- 3. 4xx and Slack ok:false: one request, no retry, no outbox ------------------------------


def _slack_api_error(error: str) -> Callable[[Faults], None]:
    return lambda faults: faults.slack.slack_error_next(error)


def _wrong_token(faults: Faults) -> None:
    conn = slack_api_connection(faults.slack)
    conn["password"] = "xoxb-0000-0000-SomeoneElsesToken"
    faults.set_connection(SLACK_CONN, conn)


def _webhook(inject: Callable[[Faults], None]) -> Callable[[Faults], None]:
    def setup(faults: Faults) -> None:
        faults.use_slack_webhook()
        inject(faults)

    return setup


PD_INVALID = {"status": "invalid event", "message": "Event object is invalid", "errors": ["bad"]}

NON_RETRYABLE: list[Any] = [
    pytest.param(
        "slack", _slack_api_error("channel_not_found"), "channel_not_found", id="slack-channel_not_found"
    ),
    pytest.param("slack", _slack_api_error("invalid_auth"), "invalid_auth", id="slack-invalid_auth"),
    pytest.param("slack", _wrong_token, "invalid_auth", id="slack-real-wrong-token"),
    pytest.param("slack", lambda f: f.slack.fail_next(403), "HTTP 403", id="slack-http-403"),
    pytest.param(
        "slack",
        _webhook(lambda f: f.slack.slack_error_next("channel_not_found")),
        "HTTP 404",
        id="webhook-404",
    ),
    pytest.param("slack", _webhook(lambda f: f.slack.fail_next(400)), "HTTP 400", id="webhook-400"),
    pytest.param("pagerduty", lambda f: f.pagerduty.fail_next(400, body=PD_INVALID), "HTTP 400", id="pd-400"),
    pytest.param("pagerduty", lambda f: f.pagerduty.fail_next(404), "HTTP 404", id="pd-404"),
    pytest.param("email", lambda f: f.smtp.fail_next(550), "SMTP 550", id="smtp-550"),
]


@pytest.mark.parametrize(("channel", "inject", "fragment"), NON_RETRYABLE)
def test_permanent_errors_are_sent_once_and_recorded_as_failed(
    faults: Faults,
    channel: str,
    inject: Callable[[Faults], None],
    fragment: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="airflow_alerting")
    store = InspectableStore()
    manager = faults.manager(routed_to(channel), store=store)
    inject(faults)

    outcome = manager.handle(failure(), severity=Severity.HIGH)

    delivery = by_channel(outcome)[channel].delivery
    assert delivery is not None
    assert (delivery.ok, delivery.retryable, delivery.attempts) == (False, False, 1), delivery
    assert fragment in delivery.detail
    if channel != "email":
        assert len(http_requests(faults, channel)) == 1
    assert delivered_count(faults, channel) == 0
    assert store.outbox() == []
    assert faults.metrics.count("outbox", "added") == 0
    [entry] = [e for e in history(manager) if e.channel == channel]
    assert (entry.sent, entry.delivered) == (True, False)
    assert fragment in entry.detail
    assert any(channel in r.getMessage() and "not delivered" in r.getMessage() for r in caplog.records)

    # nothing is left to redeliver later either
    faults.clock.advance(hours=1)
    assert manager.redeliver_outbox() == []


def test_permanent_error_does_not_cost_the_other_channels(faults: Faults) -> None:
    manager = faults.manager()
    faults.slack.slack_error_next("channel_not_found")

    outcome = manager.handle(failure(), severity=Severity.CRITICAL)

    assert set(outcome.sent_to) == {"email", "pagerduty"}
    assert outcome.failed == ("slack",)
    [message] = faults.smtp.messages
    assert RECIPIENT in message["To"]
    assert len(faults.pagerduty.events) == 1


def test_next_occurrence_after_a_permanent_error_is_sent_again(faults: Faults) -> None:
    """A 4xx releases the window too: once fixed, the next occurrence is not throttled."""
    manager = faults.manager(routed_to("slack"))
    faults.slack.slack_error_next("channel_not_found")
    manager.handle(failure(1), severity=Severity.HIGH)
    faults.clock.advance(timedelta(seconds=30))

    outcome = manager.handle(failure(2), severity=Severity.HIGH)

    assert reasons(outcome) == {"slack": DecisionReason.FIRST}
    assert len(faults.slack.messages) == 1
