"""The pure throttle decision and the claim / confirm / release state transitions."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from airflow_alerting import throttle
from airflow_alerting.model import DecisionReason, Severity, SuppressionSummary
from airflow_alerting.throttle import ChannelState

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
WINDOW = timedelta(minutes=5)
LEASE = timedelta(minutes=2)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def sent_at(minutes: float, severity: Severity = Severity.HIGH, **extra: Any) -> ChannelState:
    """A settled state: last delivered ``minutes`` after T0."""
    return ChannelState(last_sent_at=at(minutes), last_sent_severity=severity, **extra)


def pending_claim(minutes: float, severity: Severity = Severity.HIGH) -> ChannelState:
    """A claim taken at ``minutes`` (nothing sent before) whose lease has not been settled."""
    return ChannelState(
        last_sent_at=at(minutes),
        last_sent_severity=severity,
        claim_token="tok",
        claim_expires_at=at(minutes) + LEASE,
    )


DECIDE_TABLE = [
    # id, state, now (min), window, severity, escalated, send, reason
    ("first", None, 0, WINDOW, Severity.HIGH, False, True, DecisionReason.FIRST),
    ("first_empty_state", ChannelState(), 0, WINDOW, Severity.HIGH, False, True, DecisionReason.FIRST),
    ("no_window_first", None, 0, timedelta(0), Severity.CRITICAL, False, True, DecisionReason.NO_WINDOW),
    (
        "no_window_repeat",
        sent_at(0, Severity.CRITICAL),
        0,
        timedelta(0),
        Severity.CRITICAL,
        False,
        True,
        DecisionReason.NO_WINDOW,
    ),
    ("throttled_inside", sent_at(0), 1, WINDOW, Severity.HIGH, False, False, DecisionReason.THROTTLED),
    (
        "throttled_just_before_end",
        sent_at(0),
        4.99,
        WINDOW,
        Severity.HIGH,
        False,
        False,
        DecisionReason.THROTTLED,
    ),
    (
        "exactly_at_window_end",
        sent_at(0),
        5,
        WINDOW,
        Severity.HIGH,
        False,
        True,
        DecisionReason.WINDOW_ELAPSED,
    ),
    ("after_window", sent_at(0), 60, WINDOW, Severity.HIGH, False, True, DecisionReason.WINDOW_ELAPSED),
    (
        "escalated_above_last",
        sent_at(0, Severity.MEDIUM),
        1,
        WINDOW,
        Severity.HIGH,
        True,
        True,
        DecisionReason.ESCALATED,
    ),
    ("escalated_first", None, 0, WINDOW, Severity.HIGH, True, True, DecisionReason.ESCALATED),
    (
        "escalated_same_severity",
        sent_at(0, Severity.HIGH),
        1,
        WINDOW,
        Severity.HIGH,
        True,
        False,
        DecisionReason.THROTTLED,
    ),
    (
        "escalated_below_last",
        sent_at(0, Severity.CRITICAL),
        1,
        WINDOW,
        Severity.HIGH,
        True,
        False,
        DecisionReason.THROTTLED,
    ),
    (
        "escalated_same_after_window",
        sent_at(0, Severity.HIGH),
        6,
        WINDOW,
        Severity.HIGH,
        True,
        True,
        DecisionReason.WINDOW_ELAPSED,
    ),
    (
        "higher_but_not_escalated",
        sent_at(0, Severity.MEDIUM),
        1,
        WINDOW,
        Severity.HIGH,
        False,
        False,
        DecisionReason.THROTTLED,
    ),
    ("in_flight", pending_claim(0), 1, WINDOW, Severity.HIGH, False, False, DecisionReason.IN_FLIGHT),
    (
        "in_flight_even_if_window_passed",
        pending_claim(0),
        1.9,
        timedelta(seconds=30),
        Severity.HIGH,
        False,
        False,
        DecisionReason.IN_FLIGHT,
    ),
    (
        "in_flight_escalated",
        pending_claim(0, Severity.MEDIUM),
        1,
        WINDOW,
        Severity.HIGH,
        True,
        False,
        DecisionReason.IN_FLIGHT,
    ),
    ("lease_expired", pending_claim(0), 2, WINDOW, Severity.HIGH, False, True, DecisionReason.FIRST),
    ("lease_expired_later", pending_claim(0), 30, WINDOW, Severity.HIGH, False, True, DecisionReason.FIRST),
    (
        "pending_claim_no_window",
        pending_claim(0, Severity.CRITICAL),
        0.5,
        timedelta(0),
        Severity.CRITICAL,
        False,
        True,
        DecisionReason.NO_WINDOW,
    ),
]


@pytest.mark.parametrize(
    ("state", "now", "window", "severity", "escalated", "send", "reason"),
    [pytest.param(*row[1:], id=row[0]) for row in DECIDE_TABLE],
)
def test_decide(
    state: ChannelState | None,
    now: float,
    window: timedelta,
    severity: Severity,
    escalated: bool,
    send: bool,
    reason: DecisionReason,
) -> None:
    decision = throttle.decide(state, now=at(now), window=window, severity=severity, escalated=escalated)

    assert decision.send is send
    assert decision.reason is reason


def test_throttled_decision_says_how_long_is_left() -> None:
    decision = throttle.decide(sent_at(0), now=at(1), window=WINDOW, severity=Severity.HIGH)

    assert "240" in decision.detail


def test_expired_lease_restores_the_previous_send() -> None:
    # a send at 0 was confirmed; a claim at 10 crashed; at 13 the crashed claim no longer counts
    state = ChannelState(
        last_sent_at=at(10),
        last_sent_severity=Severity.HIGH,
        claim_token="crashed",
        claim_expires_at=at(12),
        previous_sent_at=at(0),
        previous_sent_severity=Severity.HIGH,
    )

    window_10 = timedelta(minutes=10)
    assert throttle.decide(state, now=at(11), window=window_10, severity=Severity.HIGH).reason is (
        DecisionReason.IN_FLIGHT
    )
    decision = throttle.decide(state, now=at(13), window=window_10, severity=Severity.HIGH)
    assert decision.send
    assert decision.reason is DecisionReason.WINDOW_ELAPSED
    # with a window still running from the confirmed send it is throttled, not in flight
    assert throttle.decide(
        state, now=at(13), window=timedelta(minutes=20), severity=Severity.HIGH
    ).reason is (DecisionReason.THROTTLED)


def test_sending_decisions_carry_what_was_suppressed() -> None:
    summary = SuppressionSummary(count=4, since=at(1), until=at(3), sources=("etl.load",))
    state = sent_at(0, suppressed=summary)

    for now, window, escalated, severity in [
        (6, WINDOW, False, Severity.HIGH),
        (1, WINDOW, True, Severity.CRITICAL),
        (1, timedelta(0), False, Severity.HIGH),
    ]:
        decision = throttle.decide(state, now=at(now), window=window, severity=severity, escalated=escalated)
        assert decision.send
        assert decision.suppressed == summary


# --- apply / confirm / release -------------------------------------------------------------


def claim(
    state: ChannelState | None,
    minutes: float,
    *,
    token: str,
    source: str = "etl.load",
    severity: Severity = Severity.HIGH,
    window: timedelta = WINDOW,
    escalated: bool = False,
) -> tuple[ChannelState, bool]:
    """What a document store does: decide, then apply.  Returns the new state and whether to send."""
    decision = throttle.decide(state, now=at(minutes), window=window, severity=severity, escalated=escalated)
    new = throttle.apply(
        state, decision, now=at(minutes), severity=severity, source=source, token=token, lease=LEASE
    )
    return new, decision.send


def test_claim_then_confirm_keeps_the_window() -> None:
    state, send = claim(None, 0, token="a")
    assert send
    state = throttle.confirm(state, "a")

    assert state.claim_token is None
    assert state.last_sent_at == at(0)
    assert state.last_sent_severity is Severity.HIGH
    # confirmed: a lease expiring later changes nothing, the window holds
    _, send_again = claim(state, 3, token="b")
    assert not send_again


def test_release_restores_previous_last_sent_and_merges_suppressed_counts() -> None:
    state, _ = claim(None, 0, token="a")
    state = throttle.confirm(state, "a")
    state, _ = claim(state, 1, token="x", source="etl.load")  # suppressed
    state, _ = claim(state, 2, token="x", source="etl.load[3]")  # suppressed
    state, send = claim(state, 6, token="b")  # window elapsed: claims, carrying 2 suppressed
    assert send
    assert state.suppressed.count == 0
    state, _ = claim(state, 6.5, token="x", source="etl.other")  # in flight: counted too

    released = throttle.release(state, "b")

    assert released.claim_token is None
    assert released.last_sent_at == at(0)
    assert released.last_sent_severity is Severity.HIGH
    assert released.suppressed.count == 3
    assert released.suppressed.since == at(1)
    assert released.suppressed.until == at(6.5)
    assert set(released.suppressed.sources) == {"etl.load", "etl.load[3]", "etl.other"}
    # the next occurrence is not throttled by the failed claim, and reports everything
    decision = throttle.decide(released, now=at(7), window=WINDOW, severity=Severity.HIGH)
    assert decision.send
    assert decision.suppressed.count == 3


def test_release_of_a_first_claim_leaves_nothing_sent() -> None:
    state, _ = claim(None, 0, token="a")

    released = throttle.release(state, "a")

    assert released.last_sent_at is None
    assert throttle.decide(released, now=at(0.1), window=WINDOW, severity=Severity.HIGH).reason is (
        DecisionReason.FIRST
    )


@pytest.mark.parametrize("operation", [throttle.confirm, throttle.release], ids=["confirm", "release"])
def test_wrong_token_is_a_no_op(operation: Callable[[ChannelState, str], ChannelState]) -> None:
    state, _ = claim(sent_at(-10), 0, token="mine")

    assert operation(state, "someone-elses") == state


def test_confirm_after_lease_was_taken_over_is_a_no_op() -> None:
    state, _ = claim(None, 0, token="slow")
    # the slow sender's lease expired; another worker claimed at 5
    state, send = claim(state, 5, token="fast")
    assert send
    assert throttle.confirm(state, "slow") == state
    assert throttle.release(state, "slow") == state


def test_suppressed_summary_counts_and_bounds_sources() -> None:
    state = throttle.confirm(claim(None, 0, token="a")[0], "a")
    total = throttle.MAX_SOURCES + 5
    for i in range(total):
        state, send = claim(state, 0.1 * (i + 1), token="x", source=f"etl.task_{i}")
        assert not send

    summary = state.suppressed
    assert summary.count == total
    assert summary.since == at(0.1)
    assert summary.until == at(0.1 * total)
    assert summary.period == at(0.1 * total) - at(0.1)
    assert len(summary.sources) == throttle.MAX_SOURCES
    assert summary.sources[0] == "etl.task_0"
    assert len(set(summary.sources)) == len(summary.sources)


def test_repeated_source_is_listed_once() -> None:
    summary = SuppressionSummary()
    for minute in range(3):
        summary = throttle.add_suppressed(summary, at(minute), "etl.load")

    assert summary.count == 3
    assert summary.sources == ("etl.load",)


def test_merge_suppressed_bounds_sources_and_spans_both() -> None:
    a = SuppressionSummary(count=2, since=at(5), until=at(6), sources=tuple(f"a{i}" for i in range(8)))
    b = SuppressionSummary(count=3, since=at(1), until=at(9), sources=tuple(f"b{i}" for i in range(8)))

    merged = throttle.merge_suppressed(a, b)

    assert merged.count == 5
    assert (merged.since, merged.until) == (at(1), at(9))
    assert len(merged.sources) == throttle.MAX_SOURCES
    assert throttle.merge_suppressed(SuppressionSummary(), b) == b
    assert throttle.merge_suppressed(a, SuppressionSummary()) == a


# --- serialisation ------------------------------------------------------------------------

ROUND_TRIP = [
    ChannelState(),
    sent_at(0),
    sent_at(0, Severity.CRITICAL, suppressed=SuppressionSummary(3, at(1), at(2), ("etl.a", "etl.b[2]"))),
    ChannelState(
        last_sent_at=at(10),
        last_sent_severity=Severity.LOW,
        suppressed=SuppressionSummary(1, at(11), at(11), ("x",)),
        claim_token="tok",
        claim_expires_at=at(12),
        previous_sent_at=at(0),
        previous_sent_severity=Severity.MEDIUM,
        previous_suppressed=SuppressionSummary(7, at(1), at(9), ("y", "z")),
    ),
]


@pytest.mark.parametrize("state", ROUND_TRIP, ids=["empty", "sent", "suppressed", "pending_claim"])
def test_channel_state_json_round_trip(state: ChannelState) -> None:
    encoded = json.dumps(state.to_json())  # must be plain JSON for Variables and SQL columns

    assert ChannelState.from_json(json.loads(encoded)) == state


def test_channel_state_from_partial_json() -> None:
    state = ChannelState.from_json({"last_sent_at": at(0).isoformat(), "last_sent_severity": "high"})

    assert state.last_sent_at == at(0)
    assert state.last_sent_severity is Severity.HIGH
    assert state.suppressed == SuppressionSummary()
    assert state.claim_token is None
