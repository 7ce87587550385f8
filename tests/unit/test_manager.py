"""The alert manager end to end with test doubles: no Airflow, no network, no sleeping clock."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, NoReturn

import pytest

from airflow_alerting import metrics
from airflow_alerting.manager import AlertManager, DeliveryOptions
from airflow_alerting.model import (
    Alert,
    AlertKind,
    AlertOutcome,
    DecisionReason,
    DeliveryResult,
    Notification,
    NotificationAction,
    Severity,
)
from airflow_alerting.policy import AlertPolicy, EscalationPolicy
from airflow_alerting.state.base import StateStore, StateUnavailableError
from airflow_alerting.testing import FrozenClock, MemoryStore, RecordingChannel
from airflow_alerting.workers import WORKERS

CHANNELS = ("email", "slack", "pagerduty")
FAST = DeliveryOptions(attempts=3, deadline=5, backoff_base=0.01, backoff_cap=0.02)
NO_ESCALATION = AlertPolicy(escalation=EscalationPolicy(after=0))

# the design's matrix (DESIGN.md), independent of routing.DEFAULT_MATRIX
EXPECTED_CHANNELS = {
    Severity.CRITICAL: {"email", "slack", "pagerduty"},
    Severity.HIGH: {"email", "slack"},
    Severity.MEDIUM: {"slack"},
    Severity.LOW: set(),
}


class StatsRecorder:
    """Stands in for Airflow's Stats so the manager never imports Airflow here."""

    def __init__(self) -> None:
        self.counters: list[str] = []

    def incr(self, name: str, count: int = 1) -> None:
        self.counters.extend([name] * count)

    def timing(self, name: str, value: float) -> None:
        pass


@pytest.fixture(autouse=True)
def stats(monkeypatch: pytest.MonkeyPatch) -> StatsRecorder:
    recorder = StatsRecorder()
    monkeypatch.setattr(metrics, "_stats", lambda: recorder)
    return recorder


@dataclass
class Harness:
    manager: AlertManager
    clock: FrozenClock
    store: StateStore
    channels: dict[str, Any] = field(default_factory=dict)

    def got(self, name: str) -> list[Notification]:
        return list(self.channels[name].notifications)

    def counts(self) -> dict[str, int]:
        return {name: len(ch.notifications) for name, ch in self.channels.items()}


def harness(
    policy: AlertPolicy | None = None,
    *,
    store: StateStore | None = None,
    channels: dict[str, Any] | None = None,
    delivery: DeliveryOptions = FAST,
) -> Harness:
    clock = FrozenClock()
    chans: dict[str, Any] = {name: RecordingChannel(name) for name in CHANNELS}
    chans.update(channels or {})
    store = store if store is not None else MemoryStore()
    manager = AlertManager(policy, store=store, channels=chans, clock=clock, delivery=delivery)
    return Harness(manager, clock, store, chans)


def failure(run: int = 1, **overrides: Any) -> Alert:
    """A final-try task failure; a different ``run`` is a different occurrence of the same problem."""
    fields: dict[str, Any] = {
        "dag_id": "sales_etl",
        "task_id": "load_orders",
        "run_id": f"run_{run}",
        "exception_type": "PermissionError",
        "exception_mro": ("PermissionError", "OSError", "Exception"),
        "message": "role LOADER lacks USAGE on warehouse",
    }
    fields.update(overrides)
    return Alert(**fields)


def medium_failure(run: int = 1, **overrides: Any) -> Alert:
    return failure(
        run,
        exception_type="AssertionError",
        exception_mro=("AssertionError", "Exception"),
        message=f"row count mismatch: {run} != 100",
        **overrides,
    )


def success(run: int = 99, **overrides: Any) -> Alert:
    return failure(
        run, kind=AlertKind.TASK_SUCCESS, exception_type=None, exception_mro=(), message="", **overrides
    )


def by_channel(outcome: AlertOutcome) -> dict[str, Any]:
    return {c.channel: c for c in outcome.channels}


def reasons(outcome: AlertOutcome) -> dict[str, DecisionReason]:
    return {c.channel: c.decision.reason for c in outcome.channels}


# --- routing and delivery -----------------------------------------------------------------


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


# --- throttling -----------------------------------------------------------------------------


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


# --- retries and duplicates -----------------------------------------------------------------


@pytest.mark.parametrize(
    "alert",
    [
        pytest.param(failure(kind=AlertKind.TASK_RETRY, try_number=1, max_tries=2), id="retry_callback"),
        pytest.param(failure(try_number=1, max_tries=2), id="failure_callback_with_retries_left"),
        pytest.param(
            failure(
                kind=AlertKind.TASK_RETRY,
                try_number=1,
                max_tries=2,
                tags=frozenset({"tier:1"}),
                message="No space left on device",
            ),
            id="retry_of_a_critical_cause",
        ),
    ],
)
def test_a_retry_never_reaches_a_channel(alert: Alert) -> None:
    h = harness()

    outcome = h.manager.handle(alert)
    silent = harness(AlertPolicy.from_dict({"classification": {"retry": "silent"}}))
    silenced = silent.manager.handle(alert)

    assert h.counts() == dict.fromkeys(CHANNELS, 0)
    assert outcome.sent_to == ()
    assert reasons(outcome) == {"-": DecisionReason.NOT_ROUTED}
    assert silent.counts() == dict.fromkeys(CHANNELS, 0)
    assert reasons(silenced) == {"-": DecisionReason.SILENCED}


def test_retries_do_not_count_towards_escalation() -> None:
    h = harness()
    for try_number in (1, 2, 3):
        h.manager.handle(medium_failure(1, try_number=try_number, max_tries=3))
        h.clock.advance(minutes=1)

    final = h.manager.handle(medium_failure(1, try_number=4, max_tries=3))

    assert final.escalation is None
    assert reasons(final) == {"slack": DecisionReason.FIRST}


@pytest.mark.parametrize("severity", [None, Severity.CRITICAL], ids=["classified", "critical"])
def test_duplicate_callback_is_ignored(severity: Severity | None) -> None:
    h = harness()
    alert = failure()
    h.manager.handle(alert, severity=severity)
    before = h.counts()

    duplicate = h.manager.handle(alert, severity=severity)

    assert h.counts() == before
    assert reasons(duplicate) == {"-": DecisionReason.DUPLICATE_CALLBACK}
    assert duplicate.sent_to == ()


def test_duplicate_dag_failure_callback_is_ignored_whatever_its_last_task_try() -> None:
    h = harness()
    dag_failure = failure(
        kind=AlertKind.DAG_FAILURE,
        task_id=None,
        exception_type=None,
        exception_mro=(),
        message="DAG run failed (timed_out)",
        try_number=1,
        max_tries=2,
    )
    h.manager.handle(dag_failure, severity=Severity.CRITICAL)

    duplicate = h.manager.handle(dag_failure, severity=Severity.CRITICAL)

    assert reasons(duplicate) == {"-": DecisionReason.DUPLICATE_CALLBACK}


# --- delivery failures ----------------------------------------------------------------------


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


# --- state outage -----------------------------------------------------------------------------


class UnavailableStore(MemoryStore):
    """Every read and write fails, as when the metadata API or the database is down."""

    name = "down"

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def _down(self) -> NoReturn:
        self.calls += 1
        raise StateUnavailableError("connection refused")

    def _read(self, key: str) -> dict[str, Any] | None:
        self._down()

    def _write(self, key: str, document: dict[str, Any]) -> None:
        self._down()

    def _delete(self, key: str) -> None:
        self._down()


def test_state_outage_fails_open_but_capped() -> None:
    store = UnavailableStore()
    h = harness(store=store)
    outcomes = []
    for run in range(1, 6):
        outcomes.append(h.manager.handle(failure(run)))
        h.clock.advance(seconds=30)

    assert store.calls > 0
    for outcome in outcomes[:3]:
        assert reasons(outcome) == {
            "email": DecisionReason.STATE_UNAVAILABLE,
            "slack": DecisionReason.STATE_UNAVAILABLE,
        }
        assert set(outcome.sent_to) == {"email", "slack"}
    for outcome in outcomes[3:]:
        assert reasons(outcome) == {
            "email": DecisionReason.STATE_UNAVAILABLE_CAPPED,
            "slack": DecisionReason.STATE_UNAVAILABLE_CAPPED,
        }
        assert outcome.sent_to == ()
    assert h.counts() == {"email": 3, "slack": 3, "pagerduty": 0}

    h.clock.advance(minutes=10)  # past the high window: the cap makes room again
    later = h.manager.handle(failure(9))
    assert set(later.sent_to) == {"email", "slack"}


def test_state_outage_cap_is_per_correlation_key() -> None:
    h = harness(store=UnavailableStore())
    for run in range(1, 5):
        h.manager.handle(failure(run))

    # without state every failure looks like a new incident: the cap is by cause, so another task
    # failing for the same reason is capped, while a different cause still gets through
    same_cause = h.manager.handle(failure(1, task_id="load_customers"))
    other_cause = h.manager.handle(failure(1, task_id="load_items", message="role AUDIT lacks SELECT"))

    assert same_cause.sent_to == ()
    assert set(other_cause.sent_to) == {"email", "slack"}


def test_state_outage_during_resolution_does_not_raise() -> None:
    h = harness(store=UnavailableStore())

    outcome = h.manager.handle(success())

    assert outcome.sent_to == ()


def test_should_throttle_fails_open_during_a_state_outage() -> None:
    h = harness(store=UnavailableStore())

    assert h.manager.should_throttle(failure()) is False


def test_unexpected_store_error_never_raises_into_the_task() -> None:
    class Broken(MemoryStore):
        def record_occurrence(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("bug in a store")

    h = harness(store=Broken())

    outcome = h.manager.handle(failure())  # must return, not raise

    assert isinstance(outcome, AlertOutcome)
    assert outcome.alert.source == "sales_etl.load_orders"


# --- resolution -------------------------------------------------------------------------------


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


# --- send_alert and should_throttle -----------------------------------------------------------


@pytest.mark.parametrize("severity", ["critical", Severity.CRITICAL], ids=["label", "enum"])
def test_send_alert_with_forced_severity(severity: str | Severity) -> None:
    h = harness()

    outcome = h.manager.send_alert(
        "Nightly export late", "export is 2 h behind", severity=severity, dag_id="exports", tags=["team:data"]
    )

    assert set(outcome.sent_to) == EXPECTED_CHANNELS[Severity.CRITICAL]
    notification = h.got("pagerduty")[0]
    assert notification.alert.title == "Nightly export late"
    assert notification.alert.kind is AlertKind.CUSTOM
    assert notification.alert.detected_by == "user"
    assert notification.alert.dag_id == "exports"
    assert any("given by the caller" in r for r in outcome.classification.reasons)


def test_send_alert_without_severity_is_classified() -> None:
    h = harness()

    outcome = h.manager.send_alert("Warehouse access", exception=PermissionError("denied"))

    assert outcome.severity is Severity.HIGH
    assert set(outcome.sent_to) == EXPECTED_CHANNELS[Severity.HIGH]
    assert h.got("slack")[0].alert.message == "denied"


def test_should_throttle_is_read_only() -> None:
    h = harness()

    assert h.manager.should_throttle(failure(1)) is False
    assert h.manager.should_throttle(failure(1)) is False
    assert h.store.history() == []
    first = h.manager.handle(failure(1))
    # the checks above neither claimed the window nor recorded the occurrence
    assert reasons(first) == {"email": DecisionReason.FIRST, "slack": DecisionReason.FIRST}

    h.clock.advance(minutes=1)
    states = {name: h.store.channel_state(first.fingerprint, name) for name in ("email", "slack")}
    history = h.store.history()
    for _ in range(2):
        assert h.manager.should_throttle(failure(2)) is True
        assert h.manager.should_throttle(failure(2), channel="slack") is True
    assert {name: h.store.channel_state(first.fingerprint, name) for name in ("email", "slack")} == states
    assert h.store.history() == history

    h.clock.advance(minutes=4)  # five minutes after the send: the high window has elapsed
    assert h.manager.should_throttle(failure(2)) is False
    later = h.manager.handle(failure(2))
    assert reasons(later) == {"email": DecisionReason.WINDOW_ELAPSED, "slack": DecisionReason.WINDOW_ELAPSED}
    assert h.got("slack")[-1].decision.suppressed.count == 0  # should_throttle counted nothing


@pytest.mark.parametrize(
    ("alert", "expected"),
    [
        pytest.param(failure(1, try_number=1, max_tries=2), True, id="retry_goes_nowhere"),
        # an announced critical incident is only repeated after repeat_interval (4 h)
        pytest.param(failure(1, message="No space left on device"), True, id="critical_already_announced"),
    ],
)
def test_should_throttle_edge_cases(alert: Alert, expected: bool) -> None:
    h = harness()
    h.manager.handle(failure(5, message=alert.message))

    assert h.manager.should_throttle(alert) is expected


# --- history and metrics ----------------------------------------------------------------------


def test_history_records_every_decision_with_reasons() -> None:
    h = harness(NO_ESCALATION)
    outcomes = [h.manager.handle(failure(1))]
    h.clock.advance(minutes=1)
    outcomes.append(h.manager.handle(failure(2)))  # throttled on both
    outcomes.append(h.manager.handle(failure(3, try_number=1, max_tries=1)))  # retry: not routed
    outcomes.append(h.manager.handle(failure(2)))  # duplicate
    h.channels["pagerduty"].fail_next(retryable=False)
    outcomes.append(h.manager.handle(failure(4, task_id="t2"), severity=Severity.CRITICAL))

    history = h.store.history(limit=100)

    expected = [(c.channel, c.decision.reason.value) for o in outcomes for c in o.channels]
    assert sorted((e.channel, e.reason) for e in history) == sorted(expected)
    assert len(history) == len(expected)
    assert all(e.why.strip() for e in history)
    for entry in history:
        assert entry.source.startswith("sales_etl.")
        if entry.reason == "correlated":
            assert (entry.sent, entry.delivered) == (False, None)
    first = [e for e in history if e.run_id == "run_1"]
    assert {e.channel for e in first} == {"email", "slack"}
    assert all(e.delivered and "rule permission" in e.why for e in first)
    failed = [e for e in history if e.channel == "pagerduty"]
    assert [(e.sent, e.delivered) for e in failed] == [(True, False)]
    assert history[0].at >= history[-1].at  # most recent first


def test_history_mentions_escalation() -> None:
    h = harness()
    for run in (1, 2, 3):
        h.manager.handle(medium_failure(run))
        h.clock.advance(minutes=1)

    latest = h.store.history(limit=1)[0]

    assert "escalated from medium to high" in latest.why


def test_decisions_are_counted_in_metrics(stats: StatsRecorder) -> None:
    h = harness(NO_ESCALATION)
    h.manager.handle(medium_failure(1))
    h.manager.handle(medium_failure(2))

    assert "alerting.sent.slack" in stats.counters
    assert "alerting.suppressed.correlated" in stats.counters


def test_mapped_instances_failing_together_are_one_recurrence_not_an_escalation() -> None:
    h = harness()

    for index in range(24):
        h.manager.handle(medium_failure(1, map_index=index))

    assert h.counts() == {"email": 0, "slack": 1, "pagerduty": 0}
    assert h.got("slack")[0].escalation is None


def test_send_alert_twice_is_two_occurrences_not_a_duplicate_callback() -> None:
    h = harness()

    first = h.manager.send_alert("Export late", "export_orders has not started", severity="high")
    h.clock.advance(minutes=6)
    second = h.manager.send_alert("Export late", "export_orders has not started", severity="high")

    assert first.sent_to == ("email", "slack")
    assert second.sent_to == ("email", "slack")


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
