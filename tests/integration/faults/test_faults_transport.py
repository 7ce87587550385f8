"""Network faults: refused connections, read timeouts and hangs longer than the callback deadline.

Whatever one channel's transport does, the other channels still deliver, ``handle()`` returns
within the deadline (plus a small margin) and nothing raises into the task.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from faults_support import (
    FAST,
    PAGERDUTY_CONN,
    ROUTING_KEY,
    SLACK_CONN,
    SMTP_CONN,
    BlackholeSmtp,
    Faults,
    InspectableStore,
    by_channel,
    closed_port,
    failure,
    posts,
    routed_to,
    timed,
)

from airflow_alerting.manager import DeliveryOptions
from airflow_alerting.model import Severity
from airflow_alerting.testing.servers import smtp_connection

pytestmark = pytest.mark.integration

ALL = {"email", "slack", "pagerduty"}
#: what handle() may take beyond its deadline: thread start-up, recording, the outbox sweep
MARGIN = 0.6


@pytest.fixture
def blackhole() -> Iterator[BlackholeSmtp]:
    server = BlackholeSmtp()
    yield server
    server.close()


def _refuse(faults: Faults, channel: str) -> None:
    port = closed_port()
    if channel == "slack":
        faults.set_connection(
            SLACK_CONN,
            {
                "conn_type": "slack",
                "password": faults.slack.token,
                "extra": {"base_url": f"http://127.0.0.1:{port}/api/"},
            },
        )
    elif channel == "pagerduty":
        faults.set_connection(
            PAGERDUTY_CONN,
            {"conn_type": "pagerduty_events", "password": ROUTING_KEY, "host": f"http://127.0.0.1:{port}"},
        )
    else:
        conn = smtp_connection(faults.smtp)
        conn["port"] = port
        faults.set_connection(SMTP_CONN, conn)


@pytest.mark.parametrize("channel", sorted(ALL))
def test_connection_refused_fails_alone_and_is_retried(faults: Faults, channel: str) -> None:
    store = InspectableStore()
    manager = faults.manager(store=store)
    _refuse(faults, channel)

    outcome, took = timed(manager.handle, failure(), severity=Severity.CRITICAL)

    assert set(outcome.sent_to) == ALL - {channel}
    delivery = by_channel(outcome)[channel].delivery
    assert delivery is not None
    assert (delivery.ok, delivery.retryable, delivery.attempts) == (False, True, FAST.attempts), delivery
    assert "refused" in delivery.detail.lower() or "ConnectionError" in delivery.detail, delivery.detail
    assert took < FAST.deadline
    assert [item.channel for item in store.outbox()] == [channel]


def test_read_timeout_is_retried_within_the_per_attempt_timeout(faults: Faults) -> None:
    timeout = 0.3
    manager = faults.manager(delivery_timeout_seconds=timeout)
    faults.slack.stall_next(3, count=FAST.attempts)
    faults.pagerduty.stall_next(3, count=FAST.attempts)

    outcome, took = timed(manager.handle, failure(), severity=Severity.CRITICAL)

    assert outcome.sent_to == ("email",)
    for channel in ("slack", "pagerduty"):
        delivery = by_channel(outcome)[channel].delivery
        assert delivery is not None
        assert (delivery.ok, delivery.retryable, delivery.attempts) == (False, True, FAST.attempts), delivery
        assert "timed out" in delivery.detail or "Timeout" in delivery.detail, delivery.detail
    # three attempts of 0.3 s each plus tiny backoffs: far less than the 5 s deadline
    assert took < FAST.attempts * timeout + 1.5
    # a read timeout after the service acted duplicates the post (at-least-once delivery); bounded
    assert len(posts(faults.slack)) == FAST.attempts
    # PagerDuty deduplicates the retries by dedup_key: one incident
    assert len(faults.pagerduty.incidents) == 1


@pytest.mark.parametrize("channel", ["slack", "pagerduty", "email"])
def test_a_hang_longer_than_the_callback_deadline_is_abandoned(
    faults: Faults, channel: str, blackhole: BlackholeSmtp
) -> None:
    """The deadline comes from ``[alerting] callback_deadline_seconds`` (no DeliveryOptions given)."""
    deadline = 0.8
    store = InspectableStore()
    manager = faults.manager(
        store=store,
        delivery=None,
        callback_deadline_seconds=deadline,
        delivery_attempts=2,
        delivery_timeout_seconds=30,  # the channel itself would wait much longer
    )
    if channel == "slack":
        faults.slack.stall_next(10)
    elif channel == "pagerduty":
        faults.pagerduty.stall_next(10)
    else:
        conn = smtp_connection(faults.smtp)
        conn["port"] = blackhole.port
        faults.set_connection(SMTP_CONN, conn)

    outcome, took = timed(manager.handle, failure(), severity=Severity.CRITICAL)

    assert took < deadline + MARGIN
    assert set(outcome.sent_to) == ALL - {channel}
    delivery = by_channel(outcome)[channel].delivery
    assert delivery is not None
    assert (delivery.ok, delivery.retryable, delivery.detail) == (False, True, "deadline exceeded")
    assert [item.channel for item in store.outbox()] == [channel]


def test_email_attempts_are_bounded_by_the_delivery_timeout(faults: Faults, blackhole: BlackholeSmtp) -> None:
    manager = faults.manager(
        routed_to("email"),
        delivery=DeliveryOptions(attempts=2, deadline=1.5, backoff_base=0.01, backoff_cap=0.02),
        delivery_timeout_seconds=0.2,
    )
    conn = smtp_connection(faults.smtp)
    conn["port"] = blackhole.port
    faults.set_connection(SMTP_CONN, conn)

    outcome, took = timed(manager.handle, failure(), severity=Severity.HIGH)

    delivery = by_channel(outcome)["email"].delivery
    assert delivery is not None
    assert delivery.detail != "deadline exceeded"
    assert "timed out" in delivery.detail
    assert delivery.attempts == 2
    assert took < 1.0


def test_handle_stays_within_the_deadline_when_the_outbox_sweep_hangs_too(faults: Faults) -> None:
    deadline = 1.0
    manager = faults.manager(
        routed_to("slack"), delivery=DeliveryOptions(attempts=1, deadline=deadline, backoff_base=0.01)
    )
    faults.slack.fail_next(500)
    manager.handle(failure(1, task_id="first"), severity=Severity.HIGH)  # -> outbox, at once
    faults.slack.stall_next(4, count=2)
    faults.clock.advance(minutes=2)  # the queued item is due

    _, took = timed(manager.handle, failure(1, task_id="second"), severity=Severity.HIGH)

    assert took < deadline + MARGIN


def test_handle_stays_within_the_deadline_when_the_fallback_hangs_too(
    faults: Faults, blackhole: BlackholeSmtp
) -> None:
    deadline = 1.0
    manager = faults.manager(
        routed_to("slack", "pagerduty", severity="critical", fallback_channel="email"),
        delivery=DeliveryOptions(attempts=1, deadline=deadline, backoff_base=0.01),
    )
    faults.slack.stall_next(4)
    conn = smtp_connection(faults.smtp)
    conn["port"] = blackhole.port
    faults.set_connection(SMTP_CONN, conn)

    outcome, took = timed(manager.handle, failure(), severity=Severity.CRITICAL)

    assert outcome.sent_to == ("pagerduty",)
    assert took < deadline + MARGIN
