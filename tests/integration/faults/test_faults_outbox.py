"""The outbox: notifications that failed at alert time are redelivered once the service recovers."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

import pytest
from faults_support import (
    PAGERDUTY_CONN,
    RECIPIENT,
    SLACK_CHANNEL,
    SLACK_CONN,
    SMTP_CONN,
    WEBHOOK_CONN,
    Faults,
    InspectableStore,
    by_channel,
    failure,
    history,
    posts,
    reasons,
    routed_to,
    success,
)

from airflow_alerting import maintenance, manager_base
from airflow_alerting import manager as manager_module
from airflow_alerting import state as state_module
from airflow_alerting.manager import OUTBOX_MAX_AGE
from airflow_alerting.model import DecisionReason, Severity

pytestmark = pytest.mark.integration


def slack_text(message: dict[str, Any]) -> str:
    """What a Slack message shows: incident messages name the tasks in their blocks."""
    return json.dumps(message.get("blocks", [])) + message.get("text", "")


def freeze_shared_clock(monkeypatch: pytest.MonkeyPatch, clock: Any) -> None:
    """Give managers built by ``shared_manager()`` the test's clock.

    Their default clock reads ``manager_base.utcnow`` (the function moved there from
    ``manager``), so patching ``manager.utcnow`` alone no longer moves it; both are patched.
    """
    monkeypatch.setattr(manager_module, "utcnow", clock)
    monkeypatch.setattr(manager_base, "utcnow", clock)


def test_redeliver_outbox_delivers_once_the_service_recovers(faults: Faults) -> None:
    store = InspectableStore()
    manager = faults.manager(routed_to("slack"), store=store)
    faults.slack.fail_next(500, count=3)
    manager.handle(failure(), severity=Severity.HIGH)
    [queued] = store.outbox()

    # not due yet: nothing is attempted
    assert manager.redeliver_outbox() == []
    assert len(posts(faults.slack)) == 3

    faults.clock.advance(minutes=1)
    [outcome] = manager.redeliver_outbox()

    assert outcome.channel == "slack"
    assert outcome.decision.reason is DecisionReason.REDELIVERED
    assert "attempt 4" in outcome.decision.detail
    assert outcome.delivery is not None and outcome.delivery.ok
    [message] = faults.slack.messages
    assert message["channel"] == SLACK_CHANNEL
    assert "load_orders" in slack_text(message)
    assert store.outbox() == []
    assert faults.metrics.count("outbox", "redelivered") == 1
    last = history(manager)[-1]
    assert (last.channel, last.reason, last.delivered, last.fingerprint) == (
        "slack",
        "redelivered",
        True,
        queued.notification["fingerprint"],
    )
    # a second sweep has nothing left to do
    faults.clock.advance(hours=1)
    assert manager.redeliver_outbox() == []
    assert len(faults.slack.messages) == 1

    # the redelivered alert opened an incident: the task's recovery resolves it
    resolved = manager.handle(success())
    assert resolved.sent_to == ("slack",)


def test_the_next_alert_sweeps_the_outbox(faults: Faults) -> None:
    store = InspectableStore()
    manager = faults.manager(routed_to("slack", "email"), store=store)
    faults.slack.fail_next(500, count=3)
    manager.handle(failure(task_id="extract"), severity=Severity.HIGH)
    assert [i.channel for i in store.outbox()] == ["slack"]
    assert len(faults.smtp.messages) == 1
    faults.clock.advance(minutes=2)

    # another cause, so another incident: its own announcement goes out beside the redelivery
    # (the same cause would only join the first incident and be folded into it)
    outcome = manager.handle(
        failure(task_id="transform", message="relation staging.orders does not exist"),
        severity=Severity.HIGH,
    )

    assert set(outcome.sent_to) == {"slack", "email"}
    texts = [slack_text(m) for m in faults.slack.messages]
    assert len(texts) == 2
    assert any("transform" in t for t in texts) and any("extract" in t for t in texts)
    assert len(faults.smtp.messages) == 2  # email was not redelivered: it had been delivered
    assert store.outbox() == []


def test_still_failing_items_back_off(faults: Faults) -> None:
    store = InspectableStore()
    manager = faults.manager(routed_to("pagerduty"), store=store)
    faults.pagerduty.fail_next(503, count=100)
    manager.handle(failure(), severity=Severity.HIGH)
    [item] = store.outbox()
    assert item.next_attempt_at - faults.clock() == timedelta(minutes=1)

    faults.clock.advance(minutes=1)
    [first] = manager.redeliver_outbox()
    assert first.delivery is not None and not first.delivery.ok
    [item] = store.outbox()
    first_backoff = item.next_attempt_at - faults.clock()
    assert item.attempts == 6  # 3 at alert time + 3 in the sweep
    assert first_backoff > timedelta(minutes=1)
    assert item.last_error == first.delivery.detail
    requests = len(faults.pagerduty.requests)

    # until it is due again, sweeps leave it alone
    faults.clock.advance(first_backoff - timedelta(seconds=1))
    assert manager.redeliver_outbox() == []
    assert len(faults.pagerduty.requests) == requests

    faults.clock.advance(seconds=1)
    [second] = manager.redeliver_outbox()
    assert second.delivery is not None and not second.delivery.ok
    [item] = store.outbox()
    second_backoff = item.next_attempt_at - faults.clock()
    assert second_backoff >= first_backoff
    assert second_backoff <= timedelta(minutes=60)
    assert item.attempts == 9
    assert len(faults.pagerduty.requests) == requests + 3
    assert faults.metrics.count("outbox", "redelivered") == 0


def test_outbox_backoff_follows_the_documented_schedule(faults: Faults) -> None:
    store = InspectableStore()
    manager = faults.manager(routed_to("pagerduty"), store=store)
    faults.pagerduty.fail_next(503, count=100)
    manager.handle(failure(), severity=Severity.HIGH)

    backoffs = []
    for _ in range(3):
        [item] = store.outbox()
        faults.clock.now = item.next_attempt_at
        manager.redeliver_outbox()
        [item] = store.outbox()
        backoffs.append(item.next_attempt_at - faults.clock())

    assert backoffs == [timedelta(minutes=2), timedelta(minutes=4), timedelta(minutes=8)]


def test_items_older_than_a_day_are_dropped_with_an_error(
    faults: Faults, caplog: pytest.LogCaptureFixture
) -> None:
    store = InspectableStore()
    manager = faults.manager(routed_to("slack"), store=store)
    faults.slack.fail_next(500, count=100)
    manager.handle(failure(), severity=Severity.HIGH)

    faults.clock.advance(OUTBOX_MAX_AGE - timedelta(hours=1))
    manager.redeliver_outbox()
    assert len(store.outbox()) == 1  # still young enough: kept

    caplog.clear()
    caplog.set_level(logging.ERROR, logger="airflow_alerting")
    faults.clock.advance(hours=2)
    [outcome] = manager.redeliver_outbox()

    assert outcome.delivery is not None and not outcome.delivery.ok
    assert store.outbox() == []
    assert faults.metrics.count("outbox", "expired") == 1
    giving_up = [r for r in caplog.records if "giving up" in r.getMessage()]
    assert len(giving_up) == 1
    assert giving_up[0].levelno == logging.ERROR
    assert "faults_etl.load_orders" in giving_up[0].getMessage()
    assert "slack" in giving_up[0].getMessage()
    # and it is gone for good
    faults.slack.clear()
    faults.clock.advance(hours=1)
    assert manager.redeliver_outbox() == []
    assert faults.slack.messages == []


def test_the_maintenance_dag_task_redelivers_with_the_shared_manager(
    faults: Faults, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``alerting_maintenance``'s task function, with the manager built from ``[alerting]`` config."""
    for option, value in {
        "STATE_BACKEND": "memory",
        "SLACK_CONN_ID": SLACK_CONN,
        "SLACK_WEBHOOK_CONN_ID": WEBHOOK_CONN,
        "SLACK_CHANNEL": SLACK_CHANNEL,
        "SMTP_CONN_ID": SMTP_CONN,
        "EMAIL_TO": RECIPIENT,
        "PAGERDUTY_CONN_ID": PAGERDUTY_CONN,
        "DELIVERY_ATTEMPTS": "1",
        "DELIVERY_TIMEOUT_SECONDS": "2",
        "CALLBACK_DEADLINE_SECONDS": "5",
    }.items():
        monkeypatch.setenv(f"AIRFLOW__ALERTING__{option}", value)
    for option in ("POLICY_VARIABLE", "POLICY_FILE", "BASE_URL"):
        monkeypatch.delenv(f"AIRFLOW__ALERTING__{option}", raising=False)
    monkeypatch.setattr(manager_module, "_MANAGERS", {})
    monkeypatch.setattr(state_module, "_MEMORY_STORES", {})
    freeze_shared_clock(monkeypatch, faults.clock)

    shared = manager_module.shared_manager()
    faults.slack.fail_next(500)
    outcome = shared.handle(failure(), severity=Severity.CRITICAL)
    assert outcome.failed == ("slack",)
    assert set(outcome.sent_to) == {"email", "pagerduty"}

    # not due yet, but queued (the maintenance run reports the depth)
    assert maintenance.redeliver_outbox() == {"attempted": 0, "delivered": 0, "still_failing": 0, "queued": 1}

    faults.clock.advance(minutes=1)
    counts = maintenance.redeliver_outbox()

    assert counts == {"attempted": 1, "delivered": 1, "still_failing": 0, "queued": 0}
    assert manager_module.shared_manager() is shared
    [message] = faults.slack.messages
    assert message["channel"] == SLACK_CHANNEL
    assert maintenance.redeliver_outbox() == {"attempted": 0, "delivered": 0, "still_failing": 0, "queued": 0}


def test_maintenance_reports_items_that_still_fail(faults: Faults, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__ALERTING__STATE_BACKEND", "memory")
    monkeypatch.setenv("AIRFLOW__ALERTING__PAGERDUTY_CONN_ID", PAGERDUTY_CONN)
    monkeypatch.setenv("AIRFLOW__ALERTING__SLACK_CONN_ID", SLACK_CONN)
    monkeypatch.setenv("AIRFLOW__ALERTING__SMTP_CONN_ID", SMTP_CONN)
    monkeypatch.setenv("AIRFLOW__ALERTING__EMAIL_TO", RECIPIENT)
    monkeypatch.setenv("AIRFLOW__ALERTING__DELIVERY_ATTEMPTS", "1")
    monkeypatch.setattr(manager_module, "_MANAGERS", {})
    monkeypatch.setattr(state_module, "_MEMORY_STORES", {})
    freeze_shared_clock(monkeypatch, faults.clock)
    faults.pagerduty.fail_next(503, count=2)
    manager_module.shared_manager().handle(failure(), severity=Severity.CRITICAL)
    faults.clock.advance(minutes=1)

    assert maintenance.redeliver_outbox() == {"attempted": 1, "delivered": 0, "still_failing": 1, "queued": 1}


def test_a_recovery_before_redelivery_does_not_leave_a_page_ringing(faults: Faults) -> None:
    store = InspectableStore()
    manager = faults.manager(routed_to("pagerduty", severity="critical"), store=store)
    faults.pagerduty.fail_next(503, count=3)
    manager.handle(failure(1), severity=Severity.CRITICAL)
    manager.handle(success(2))  # the task recovered while PagerDuty was down
    faults.clock.advance(minutes=2)

    manager.redeliver_outbox()

    assert "triggered" not in faults.pagerduty.incidents.values()


def test_a_redelivered_notification_keeps_its_decision_and_reasons(faults: Faults) -> None:
    store = InspectableStore()
    manager = faults.manager(routed_to("slack", severity="critical"), store=store)
    faults.slack.fail_next(500, count=3)
    first = manager.handle(failure(), severity=Severity.CRITICAL)
    # a critical incident pages once: the first failure is its announcement
    assert reasons(first) == {"slack": DecisionReason.FIRST}
    faults.clock.advance(minutes=1)

    [outcome] = manager.redeliver_outbox()

    assert outcome.delivery is not None and outcome.delivery.ok
    entry = history(manager)[-1]
    assert entry.severity == "critical"
    assert "given by the caller" in entry.why
    assert by_channel(first)["slack"].delivery is not None
