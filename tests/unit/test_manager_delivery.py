"""Delivery failures through the alert manager.

Retryable errors are retried within the configured attempts; a raising, hanging or missing channel
fails alone.

With test doubles (no Airflow, no network, no sleeping clock); the builders are in manager_support.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import pytest
from manager_support import (
    FAST,
    NO_ESCALATION,
    StatsRecorder,
    by_channel,
    failure,
    harness,
    medium_failure,
    reasons,
    record_stats,
    warm_airflow_masker,
)

from airflow_alerting.manager import AlertManager, DeliveryOptions
from airflow_alerting.model import DecisionReason, DeliveryResult, Notification, Severity
from airflow_alerting.testing import FrozenClock, MemoryStore, RecordingChannel
from airflow_alerting.workers import WORKERS


@pytest.fixture(autouse=True)
def stats(monkeypatch: pytest.MonkeyPatch) -> StatsRecorder:
    warm_airflow_masker()
    return record_stats(monkeypatch)


def test_retryable_failure_is_retried_then_succeeds() -> None:
    flaky = RecordingChannel(
        "slack", failures=(DeliveryResult("slack", ok=False, retryable=True, detail="503"),)
    )
    h = harness(channels={"slack": flaky})

    outcome = h.manager.handle(medium_failure())

    delivery = by_channel(outcome)["slack"].delivery
    assert delivery is not None
    assert delivery.ok
    assert delivery.attempts == 2
    assert flaky.attempts == 2
    assert len(flaky.notifications) == 1
    assert outcome.sent_to == ("slack",)


def test_retryable_failure_stops_after_the_configured_attempts() -> None:
    h = harness()
    h.channels["slack"].fail_next(retryable=True, count=10)

    outcome = h.manager.handle(medium_failure())

    delivery = by_channel(outcome)["slack"].delivery
    assert delivery is not None
    assert not delivery.ok
    assert delivery.attempts == FAST.attempts
    assert h.channels["slack"].attempts == FAST.attempts
    assert outcome.failed == ("slack",)


def test_non_retryable_failure_is_not_retried_and_releases_the_window() -> None:
    h = harness(replace(NO_ESCALATION, summary_after=timedelta(0)))
    h.manager.handle(medium_failure(1))
    h.clock.advance(minutes=1)
    h.manager.handle(medium_failure(2))  # suppressed
    h.clock.advance(minutes=15)
    h.channels["slack"].fail_next(retryable=False, detail="channel_not_found")

    failed = h.manager.handle(medium_failure(3))  # window elapsed, but delivery fails

    delivery = by_channel(failed)["slack"].delivery
    assert delivery is not None
    assert (delivery.ok, delivery.attempts, delivery.detail) == (False, 1, "channel_not_found")
    assert failed.failed == ("slack",)

    h.clock.advance(minutes=1)
    after = h.manager.handle(medium_failure(4))

    assert after.sent_to == ("slack",)
    assert reasons(after)["slack"] is not DecisionReason.THROTTLED
    # the suppressed occurrence folded into the failed send is not lost
    assert h.got("slack")[-1].decision.suppressed.count == 1
    assert h.got("slack")[-1].decision.suppressed.sources == ("sales_etl.load_orders",)


def test_retryable_failure_is_not_delivered_twice() -> None:
    h = harness(NO_ESCALATION)
    h.channels["slack"].fail_next(retryable=True, count=FAST.attempts)
    h.manager.handle(medium_failure(1))
    h.clock.advance(minutes=2)

    h.manager.handle(medium_failure(2))

    assert len(h.got("slack")) == 1


def test_first_send_failing_leaves_the_next_occurrence_first() -> None:
    h = harness(NO_ESCALATION)
    h.channels["slack"].fail_next(retryable=False)
    h.manager.handle(medium_failure(1))
    h.clock.advance(seconds=30)

    outcome = h.manager.handle(medium_failure(2))

    assert reasons(outcome) == {"slack": DecisionReason.FIRST}
    assert len(h.got("slack")) == 1


class ExplodingChannel:
    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0

    def deliver(self, notification: Notification) -> DeliveryResult:
        self.calls += 1
        raise RuntimeError("boom: socket closed")


class HangingChannel:
    def __init__(self, name: str) -> None:
        self.name = name
        self.release = threading.Event()
        self.threads: list[threading.Thread] = []

    def deliver(self, notification: Notification) -> DeliveryResult:
        self.threads.append(threading.current_thread())
        self.release.wait(timeout=10)
        return DeliveryResult(self.name, ok=True)


def test_a_raising_channel_does_not_stop_the_others() -> None:
    exploding = ExplodingChannel("email")
    h = harness(channels={"email": exploding})

    outcome = h.manager.handle(failure(), severity=Severity.CRITICAL)

    assert set(outcome.sent_to) == {"slack", "pagerduty"}
    assert outcome.failed == ("email",)
    delivery = by_channel(outcome)["email"].delivery
    assert delivery is not None
    assert "RuntimeError" in delivery.detail  # says what went wrong
    assert exploding.calls == 1  # an exception is not worth retrying


@pytest.fixture
def hanging(stats: StatsRecorder) -> Iterator[HangingChannel]:
    channel = HangingChannel("email")
    yield channel
    # let the abandoned delivery finish while metrics are still stubbed (else it would import Airflow);
    # its thread stays alive (idle, for the next delivery), so wait for the call, not the thread
    channel.release.set()
    assert WORKERS.wait_idle(timeout=5)


def test_a_hanging_channel_does_not_stop_the_others(hanging: HangingChannel) -> None:
    h = harness(
        channels={"email": hanging},
        delivery=DeliveryOptions(attempts=3, deadline=0.8, backoff_base=0.01, backoff_cap=0.02),
    )
    started = time.monotonic()

    outcome = h.manager.handle(failure(), severity=Severity.CRITICAL)

    assert time.monotonic() - started < 3
    assert set(outcome.sent_to) == {"slack", "pagerduty"}
    assert outcome.failed == ("email",)
    delivery = by_channel(outcome)["email"].delivery
    assert delivery is not None
    assert delivery.detail == "deadline exceeded"
    assert len(h.got("slack")) == len(h.got("pagerduty")) == 1


def test_routed_channel_that_is_not_configured_fails_alone() -> None:
    clock = FrozenClock()
    manager = AlertManager(
        store=MemoryStore(), channels={"slack": RecordingChannel("slack")}, clock=clock, delivery=FAST
    )

    outcome = manager.handle(failure())  # high: email + slack, but only slack exists

    assert outcome.sent_to == ("slack",)
    assert outcome.failed == ("email",)
