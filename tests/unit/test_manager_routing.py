"""The alert manager routes each alert to its severity's channels and throttles repeats.

Correlation windows, escalation of recurring failures and follow-up summaries of what was held back.

With test doubles (no Airflow, no network, no sleeping clock); the builders are in manager_support.py.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from manager_support import (
    CHANNELS,
    EXPECTED_CHANNELS,
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

from airflow_alerting.model import DecisionReason, NotificationAction, Severity
from airflow_alerting.policy import AlertPolicy, EscalationPolicy


@pytest.fixture(autouse=True)
def stats(monkeypatch: pytest.MonkeyPatch) -> StatsRecorder:
    warm_airflow_masker()
    return record_stats(monkeypatch)


@pytest.mark.parametrize("severity", list(Severity), ids=lambda s: s.label)
def test_each_severity_reaches_exactly_its_channels_once(severity: Severity) -> None:
    h = harness()

    outcome = h.manager.handle(failure(), severity=severity)

    expected = EXPECTED_CHANNELS[severity]
    assert set(outcome.sent_to) == expected
    assert outcome.failed == ()
    assert h.counts() == {name: int(name in expected) for name in CHANNELS}
    for name in expected:
        (notification,) = h.got(name)
        assert notification.severity is severity
        assert notification.channel == name
        assert notification.fingerprint == outcome.fingerprint
        assert notification.decision.send
    if not expected:
        assert reasons(outcome) == {"-": DecisionReason.NOT_ROUTED}


def test_classified_alert_is_routed_by_its_severity() -> None:
    h = harness()

    outcome = h.manager.handle(failure())  # PermissionError: high

    assert outcome.severity is Severity.HIGH
    assert set(outcome.sent_to) == EXPECTED_CHANNELS[Severity.HIGH]
    assert reasons(outcome) == {"email": DecisionReason.FIRST, "slack": DecisionReason.FIRST}


def test_repeat_within_window_is_correlated_and_counted() -> None:
    h = harness(NO_ESCALATION)
    first = h.manager.handle(medium_failure(1))
    h.clock.advance(minutes=1)

    second = h.manager.handle(medium_failure(2))

    assert first.fingerprint == second.fingerprint
    # the repeat joins the incident the first one opened: folded in, not a message of its own
    assert first.incident is not None and second.incident is not None
    assert first.incident.id == second.incident.id
    assert reasons(second) == {"slack": DecisionReason.CORRELATED}
    assert second.sent_to == ()
    assert not by_channel(second)["slack"].decision.send
    assert len(h.got("slack")) == 1
    # the throttle claim is keyed by the incident, not by the fingerprint
    state = h.store.channel_state(second.incident.id, "slack")
    assert state is not None
    assert state.suppressed.count == 1


def test_after_the_window_the_next_notification_reports_what_was_folded_in() -> None:
    # follow-up summaries off: this is about what the next regular notification says
    policy = AlertPolicy(
        escalation=EscalationPolicy(after=0),
        group_by=("dag_id", "exception", "message"),
        summary_after=timedelta(0),
    )
    h = harness(policy)
    start = h.clock()
    h.manager.handle(medium_failure(1))
    h.clock.advance(minutes=1)
    h.manager.handle(medium_failure(2, task_id="load_customers"))
    h.clock.advance(minutes=2)
    h.manager.handle(medium_failure(3, task_id="load_items", map_index=4))
    h.clock.advance(minutes=12)  # 15 min after the first send: the medium window has elapsed

    outcome = h.manager.handle(medium_failure(4))

    assert reasons(outcome) == {"slack": DecisionReason.WINDOW_ELAPSED}
    notification = h.got("slack")[-1]
    suppressed = notification.decision.suppressed
    assert suppressed.count == 2
    assert suppressed.since == start + timedelta(minutes=1)
    assert suppressed.until == start + timedelta(minutes=3)
    assert set(suppressed.sources) == {"sales_etl.load_customers", "sales_etl.load_items[4]"}
    # reported once: the following window starts from zero
    h.clock.advance(minutes=16)
    h.manager.handle(medium_failure(5))
    assert h.got("slack")[-1].decision.suppressed.count == 0


def test_escalation_after_three_occurrences_within_an_hour() -> None:
    h = harness()
    h.manager.handle(medium_failure(1))
    h.clock.advance(minutes=1)
    second = h.manager.handle(medium_failure(2))
    h.clock.advance(minutes=1)

    third = h.manager.handle(medium_failure(3))

    assert second.escalation is None
    assert reasons(second) == {"slack": DecisionReason.CORRELATED}
    assert third.escalation is not None
    assert third.escalation.from_severity is Severity.MEDIUM
    assert third.escalation.to_severity is Severity.HIGH
    assert third.escalation.occurrences == 3
    assert third.severity is Severity.HIGH
    # escalation bypasses the incident window on slack (which announced it) and widens routing:
    # email is newly routed by the higher severity, so it gets the incident's announcement
    assert reasons(third) == {"email": DecisionReason.FIRST, "slack": DecisionReason.ESCALATED}
    assert h.got("email")[-1].action is NotificationAction.ANNOUNCE
    assert h.got("slack")[-1].action is NotificationAction.ESCALATE
    assert h.got("email")[-1].severity is Severity.HIGH
    assert h.got("slack")[-1].escalation == third.escalation
    assert h.got("slack")[-1].decision.suppressed.count == 1

    # a fourth occurrence is escalated to the same level: the window applies again
    h.clock.advance(minutes=1)
    fourth = h.manager.handle(medium_failure(4))
    assert fourth.severity is Severity.HIGH
    assert set(reasons(fourth).values()) == {DecisionReason.CORRELATED}


def test_no_escalation_when_occurrences_spread_over_more_than_an_hour() -> None:
    # 35 min apart is also past the incident window (30 min): each failure opens a new incident
    h = harness()
    for run in (1, 2):
        h.manager.handle(medium_failure(run))
        h.clock.advance(minutes=35)

    third = h.manager.handle(medium_failure(3))  # 70 min after the first

    assert third.escalation is None
    assert third.severity is Severity.MEDIUM
    assert reasons(third) == {"slack": DecisionReason.FIRST}
    assert h.got("email") == []


def test_critical_is_never_escalated_and_pages_once_per_incident() -> None:
    h = harness()
    outcomes = []
    for run in range(1, 5):
        outcomes.append(h.manager.handle(failure(run), severity=Severity.CRITICAL))
        h.clock.advance(seconds=10)

    assert all(o.escalation is None for o in outcomes)
    # one incident: announced once everywhere; it repeats only after repeat_interval if unacknowledged
    assert len({o.incident.id for o in outcomes if o.incident is not None}) == 1
    assert h.counts() == {"email": 1, "slack": 1, "pagerduty": 1}
    assert set(reasons(outcomes[0]).values()) <= {DecisionReason.FIRST, DecisionReason.NO_WINDOW}
    assert {r for o in outcomes[1:] for r in reasons(o).values()} == {DecisionReason.CORRELATED}


def test_mapped_instances_failing_together_are_one_recurrence_not_an_escalation() -> None:
    h = harness()

    for index in range(24):
        h.manager.handle(medium_failure(1, map_index=index))

    assert h.counts() == {"email": 0, "slack": 1, "pagerduty": 0}
    assert h.got("slack")[0].escalation is None


def test_a_burst_is_summarised_once_it_settles() -> None:
    h = harness()
    for index in range(5):
        h.manager.handle(medium_failure(1, map_index=index))
    assert h.counts()["slack"] == 1

    h.clock.advance(minutes=2)
    h.manager.redeliver_outbox()
    assert h.counts()["slack"] == 1, "a follow-up waits for the burst to settle and the channel's window"

    h.clock.advance(minutes=13)  # the medium window: 15 min after the first held-back failure
    h.manager.redeliver_outbox()

    summary = h.got("slack")[1]
    assert summary.decision.reason is DecisionReason.SUMMARY
    assert summary.decision.suppressed.count == 4
    assert "4 more similar failures since the last alert" in summary.alert.title
    # reported once: the next notification after the window does not count them again
    h.clock.advance(minutes=15)
    h.manager.handle(medium_failure(2))
    assert h.got("slack")[2].decision.suppressed.count == 0
    h.manager.redeliver_outbox()
    assert h.counts()["slack"] == 3


def test_no_summary_when_a_regular_notification_already_reported_the_burst() -> None:
    h = harness(AlertPolicy(summary_after=timedelta(minutes=30)))
    h.manager.handle(medium_failure(1))
    h.manager.handle(medium_failure(2))
    h.clock.advance(minutes=16)
    h.manager.handle(medium_failure(3))  # window elapsed: reports the 1 held back
    assert h.got("slack")[1].decision.suppressed.count == 1

    h.clock.advance(minutes=30)
    h.manager.redeliver_outbox()

    assert h.counts()["slack"] == 2
