"""Incidents end to end through the alert manager: correlation, escalation, repeats, edits, silences."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from airflow_alerting import metrics
from airflow_alerting.channels.pagerduty import PAGERDUTY_ACTIONS
from airflow_alerting.incidents.model import IncidentState
from airflow_alerting.manager import AlertManager, DeliveryOptions
from airflow_alerting.model import (
    Alert,
    AlertKind,
    AlertOutcome,
    DecisionReason,
    NotificationAction,
    Severity,
)
from airflow_alerting.policy import AlertPolicy, EscalationPolicy
from airflow_alerting.testing import FrozenClock, MemoryStore, RecordingChannel

A = NotificationAction
FAST = DeliveryOptions(attempts=2, deadline=5, backoff_base=0.01, backoff_cap=0.02)
NO_ESCALATION = AlertPolicy(escalation=EscalationPolicy(after=0))


class _Stats:
    """Stands in for Airflow's Stats so the manager never imports Airflow here."""

    def incr(self, name: str, count: int = 1) -> None:
        pass

    def timing(self, name: str, value: float) -> None:
        pass


@pytest.fixture(autouse=True)
def _no_airflow_stats(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "_stats", _Stats)


@dataclass
class Harness:
    manager: AlertManager
    clock: FrozenClock
    store: MemoryStore
    channels: dict[str, RecordingChannel] = field(default_factory=dict)

    def actions(self, name: str) -> list[NotificationAction]:
        return [n.action for n in self.channels[name].notifications]


def harness(policy: AlertPolicy | None = None, *, slack_editable: bool = False) -> Harness:
    clock = FrozenClock()
    channels = {
        "email": RecordingChannel("email"),
        "slack": RecordingChannel("slack", editable=slack_editable),
        # declares what the real PagerDuty channel does: no follow-ups, no edits
        "pagerduty": RecordingChannel("pagerduty", actions=PAGERDUTY_ACTIONS),
    }
    store = MemoryStore()
    manager = AlertManager(policy, store=store, channels=dict(channels), clock=clock, delivery=FAST)
    return Harness(manager, clock, store, channels)


def failure(dag_id: str = "sales_etl", task_id: str = "load_orders", run: int = 1, **overrides: Any) -> Alert:
    """A final-try failure (PermissionError: high unless overridden)."""
    fields: dict[str, Any] = {
        "dag_id": dag_id,
        "task_id": task_id,
        "run_id": f"run_{run}",
        "exception_type": "PermissionError",
        "exception_mro": ("PermissionError", "OSError", "Exception"),
        "message": "role LOADER lacks USAGE on warehouse",
    }
    fields.update(overrides)
    return Alert(**fields)


def critical(dag_id: str = "sales_etl", task_id: str = "load_orders", run: int = 1) -> Alert:
    # a full disk is classified critical by the default rules
    return failure(
        dag_id,
        task_id,
        run,
        exception_type="OSError",
        exception_mro=("OSError", "Exception"),
        message="No space left on device",
    )


def medium(dag_id: str = "sales_etl", task_id: str = "load_orders", run: int = 1, **kw: Any) -> Alert:
    return failure(
        dag_id,
        task_id,
        run,
        exception_type="AssertionError",
        exception_mro=("AssertionError", "Exception"),
        message="row count mismatch",
        **kw,
    )


def success(dag_id: str = "sales_etl", task_id: str | None = "load_orders", run: int = 99) -> Alert:
    kind = AlertKind.TASK_SUCCESS if task_id else AlertKind.DAG_SUCCESS
    return failure(dag_id, task_id, run, kind=kind, exception_type=None, exception_mro=(), message="")


def incident_of(outcome: AlertOutcome) -> Any:
    assert outcome.incident is not None
    return outcome.incident


def reasons(outcome: AlertOutcome) -> dict[str, DecisionReason]:
    return {c.channel: c.decision.reason for c in outcome.channels}


# --- correlation ------------------------------------------------------------------------------


def test_one_cause_in_three_dags_is_one_incident_announced_once() -> None:
    h = harness()
    outcomes = []
    for dag_id in ("sales_etl", "billing", "crm_sync"):
        outcomes.append(h.manager.handle(critical(dag_id)))
        h.clock.advance(minutes=2)

    assert len({incident_of(o).id for o in outcomes}) == 1
    incident = incident_of(outcomes[-1])
    assert incident.dag_count == 3
    assert set(incident.dag_ids) == {"sales_etl", "billing", "crm_sync"}
    assert incident.failures == 3
    assert h.actions("pagerduty") == [A.ANNOUNCE]
    assert reasons(outcomes[1])["pagerduty"] is DecisionReason.CORRELATED


def test_different_causes_in_one_dag_are_separate_incidents() -> None:
    h = harness()

    perms = h.manager.handle(failure(task_id="load_orders"))
    rows = h.manager.handle(medium(task_id="check_rows"))

    assert incident_of(perms).id != incident_of(rows).id
    assert reasons(rows) == {"slack": DecisionReason.FIRST}
    assert h.actions("slack") == [A.ANNOUNCE, A.ANNOUNCE]


@pytest.mark.parametrize(("correlate_by", "incidents"), [(None, 1), ("none", 2)], ids=["cause", "opt_out"])
def test_correlate_by_none_gives_one_incident_per_task(correlate_by: str | None, incidents: int) -> None:
    policy = AlertPolicy.from_dict({"incidents": {"correlate_by": correlate_by}}) if correlate_by else None
    h = harness(policy)

    first = h.manager.handle(failure(task_id="load_orders"))
    second = h.manager.handle(failure(task_id="load_customers"))

    assert len({incident_of(first).id, incident_of(second).id}) == incidents
    assert len(h.channels["slack"].by_action(A.ANNOUNCE)) == incidents


# --- raising the severity -----------------------------------------------------------------------


def test_blast_radius_raises_once_with_the_reason_and_pages_once() -> None:
    h = harness(NO_ESCALATION)
    outcomes = []
    for n in range(7):
        outcomes.append(h.manager.handle(medium(f"dag_{n}")))
        h.clock.advance(minutes=1)

    assert incident_of(outcomes[3]).severity is Severity.MEDIUM
    incident = incident_of(outcomes[-1])
    assert incident.severity is Severity.CRITICAL
    blast = [r for r in incident.severity_reasons if "blast radius" in r]
    assert len(blast) == 1 and "5 DAGs" in blast[0]
    assert h.actions("pagerduty") == [A.ANNOUNCE]  # newly routed by the raised severity
    assert len(h.channels["slack"].by_action(A.ESCALATE)) == 1  # announced before: told once


def test_a_task_failing_in_three_runs_raises_its_incident_once() -> None:
    h = harness()
    for run in range(1, 6):
        h.manager.handle(medium(run=run))
        h.clock.advance(minutes=1)

    assert len(h.channels["slack"].by_action(A.ESCALATE)) == 1
    assert h.actions("email") == [A.ANNOUNCE]  # high routes email too
    assert h.actions("pagerduty") == []


@pytest.mark.parametrize(("ceiling", "pages"), [("critical", 1), ("high", 0)])
def test_escalation_ceiling_caps_the_raised_severity(ceiling: str, pages: int) -> None:
    h = harness(AlertPolicy.from_dict({"escalation": {"ceiling": ceiling}}))
    outcomes = []
    for run in range(1, 5):
        outcomes.append(h.manager.handle(failure(run=run)))  # high
        h.clock.advance(minutes=1)

    expected = Severity.CRITICAL if pages else Severity.HIGH
    assert incident_of(outcomes[-1]).severity is expected
    assert len(h.channels["pagerduty"].by_action(A.ANNOUNCE)) == pages
    assert len(h.channels["slack"].by_action(A.ESCALATE)) == pages


# --- repeats and acknowledgement -----------------------------------------------------------------


def _keep_failing(h: Harness, until: timedelta, step: timedelta = timedelta(minutes=20)) -> None:
    """Fail again every ``step`` (inside the incident window) until ``until`` after the first."""
    start = h.clock()
    while h.clock() - start + step <= until:
        h.clock.advance(step)
        # a run id per point in time: the same run twice would be a duplicate callback
        h.manager.handle(critical(run=int(h.clock().timestamp())))


def test_unacknowledged_critical_is_renotified_after_the_repeat_interval() -> None:
    h = harness()
    h.manager.handle(critical())

    _keep_failing(h, timedelta(hours=3, minutes=59))
    assert h.channels["pagerduty"].by_action(A.RENOTIFY) == []

    _keep_failing(h, timedelta(minutes=20))  # now past 4 h
    assert len(h.channels["pagerduty"].by_action(A.RENOTIFY)) == 1
    assert h.actions("pagerduty").count(A.ANNOUNCE) == 1


def test_acknowledge_stops_renotify_and_is_sent_where_supported() -> None:
    h = harness()
    first = h.manager.handle(critical())
    h.clock.advance(minutes=10)

    acked = h.manager.acknowledge(incident_of(first), by="alice")

    assert acked is not None
    assert acked.state is IncidentState.ACKNOWLEDGED
    assert acked.acknowledged_by == "alice"
    assert acked.time_to_acknowledge == timedelta(minutes=10)
    assert h.actions("pagerduty") == [A.ANNOUNCE, A.ACKNOWLEDGE]
    assert h.channels["email"].by_action(A.ACKNOWLEDGE) == []  # e-mail cannot acknowledge
    assert h.manager.acknowledge(acked.id, by="bob") is None
    assert len(h.channels["pagerduty"].by_action(A.ACKNOWLEDGE)) == 1

    _keep_failing(h, timedelta(hours=5))
    assert h.channels["pagerduty"].by_action(A.RENOTIFY) == []


# --- recovery and resolution ----------------------------------------------------------------------


def test_incident_resolves_only_when_every_dag_recovered() -> None:
    h = harness()
    opened = h.manager.handle(failure("dag_a"))
    h.manager.handle(failure("dag_b"))
    incident_id = incident_of(opened).id
    h.clock.advance(minutes=5)

    partial = h.manager.handle(success("dag_a"))

    assert partial.channels == ()
    assert h.channels["slack"].by_action(A.RESOLVE) == []
    (still,) = h.store.incidents(states=(IncidentState.OPEN,))
    assert still.id == incident_id
    h.clock.advance(minutes=5)

    done = h.manager.handle(success("dag_b"))

    assert set(done.sent_to) == {"email", "slack"}
    for name in ("email", "slack"):
        (resolve,) = h.channels[name].by_action(A.RESOLVE)
        assert resolve.fingerprint == incident_id
    assert incident_of(done).time_to_resolve == timedelta(minutes=10)


def test_dag_success_recovers_every_member_of_the_dag() -> None:
    h = harness()
    h.manager.handle(failure(task_id="load_orders"))
    h.manager.handle(failure(task_id="load_items", run=2))

    resolved = h.manager.handle(success(task_id=None))

    assert set(resolved.sent_to) == {"email", "slack"}
    assert len(h.channels["slack"].by_action(A.RESOLVE)) == 1


# --- coalesced edits -----------------------------------------------------------------------------


def test_a_storm_becomes_a_few_edits_and_the_final_state_is_written() -> None:
    h = harness(NO_ESCALATION, slack_editable=True)
    for index in range(100):  # one mapped task: one task for the blast radius, 100 failures in 2 min
        h.manager.handle(medium(map_index=index))
        h.clock.advance(seconds=1.2)

    slack = h.channels["slack"]
    assert len(slack.by_action(A.ANNOUNCE)) == 1
    assert 1 <= len(slack.by_action(A.UPDATE)) <= 6
    assert slack.by_action(A.FOLLOW_UP) == []

    h.clock.advance(seconds=31)
    h.manager.redeliver_outbox()

    last = slack.by_action(A.UPDATE)[-1]
    assert last.incident is not None
    assert last.incident.failures == 100
    assert len(slack.by_action(A.UPDATE)) <= 6


# --- silences and digest ---------------------------------------------------------------------------


def test_silence_by_dag_glob_until_it_expires() -> None:
    h = harness()
    silence = h.manager.add_silence(duration=timedelta(hours=1), dag_ids=["sales_*"], comment="migration")

    held = h.manager.handle(failure("sales_etl"))
    other = h.manager.handle(medium("billing"))

    assert set(reasons(held).values()) == {DecisionReason.SILENCED}
    assert held.sent_to == ()
    assert incident_of(held).silenced == 1
    assert other.sent_to == ("slack",)

    assert h.manager.expire_silence(silence.id) is True
    h.clock.advance(minutes=1)
    after = h.manager.handle(failure("sales_etl", run=2))
    assert set(after.sent_to) == {"email", "slack"}
    assert incident_of(after).silenced == 1  # the silenced failure is still counted


def test_silence_ends_by_itself() -> None:
    h = harness()
    h.manager.add_silence(duration=timedelta(minutes=10), dag_ids=["sales_etl"])
    assert h.manager.handle(failure()).sent_to == ()

    h.clock.advance(minutes=11)

    assert set(h.manager.handle(failure(run=2)).sent_to) == {"email", "slack"}


@pytest.mark.parametrize("bypass", [False, True])
def test_critical_bypass_of_silences(bypass: bool) -> None:
    h = harness(AlertPolicy(silence_critical_bypass=bypass))
    h.manager.add_silence(duration=timedelta(hours=1), dag_ids=["sales_etl"])

    outcome = h.manager.handle(critical())

    if bypass:
        assert set(outcome.sent_to) == {"email", "slack", "pagerduty"}
    else:
        assert outcome.sent_to == ()
        assert set(reasons(outcome).values()) == {DecisionReason.SILENCED}
        assert h.channels["pagerduty"].notifications == []


def test_digest_is_sent_once_until_a_new_failure() -> None:
    h = harness()
    h.manager.add_silence(duration=timedelta(hours=2), dag_ids=["sales_etl"])
    h.manager.handle(failure())
    h.clock.advance(minutes=5)

    first = h.manager.digest()

    assert [o.channel for o in first] == ["slack"]
    assert first[0].delivery is not None and first[0].delivery.ok
    assert len(h.channels["slack"].notifications) == 1
    h.clock.advance(minutes=5)
    assert h.manager.digest() == []
    assert len(h.channels["slack"].notifications) == 1

    h.manager.handle(failure(run=2))
    h.clock.advance(minutes=5)
    assert [o.channel for o in h.manager.digest()] == ["slack"]
    assert len(h.channels["slack"].notifications) == 2


def test_trending_causes_ride_on_the_digest_and_make_none_of_their_own() -> None:
    from airflow_alerting.analytics import Trend

    h = harness()
    trend = Trend("ConnectionError: db refused", 12, 3, 12.0, 0.13, 92.0, "high")
    assert h.manager.digest(trends=[trend]) == []  # nothing low or silenced to report

    h.manager.add_silence(duration=timedelta(hours=2), dag_ids=["sales_etl"])
    h.manager.handle(failure())
    h.clock.advance(minutes=5)
    outcomes = h.manager.digest(trends=[trend])

    assert [o.channel for o in outcomes] == ["slack"]
    (sent,) = h.channels["slack"].notifications
    assert "ConnectionError: db refused" in sent.alert.message
    assert "1 trending cause" in sent.alert.title
