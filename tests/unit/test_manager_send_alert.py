"""The alert manager's calls for user code: ``send_alert`` and ``should_throttle``.

With test doubles (no Airflow, no network, no sleeping clock); the builders are in manager_support.py.
"""

from __future__ import annotations

import pytest
from manager_support import (
    EXPECTED_CHANNELS,
    StatsRecorder,
    failure,
    harness,
    reasons,
    record_stats,
    warm_airflow_masker,
)

from airflow_alerting.model import Alert, AlertKind, DecisionReason, Severity


@pytest.fixture(autouse=True)
def stats(monkeypatch: pytest.MonkeyPatch) -> StatsRecorder:
    warm_airflow_masker()
    return record_stats(monkeypatch)


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


def test_send_alert_twice_is_two_occurrences_not_a_duplicate_callback() -> None:
    h = harness()

    first = h.manager.send_alert("Export late", "export_orders has not started", severity="high")
    h.clock.advance(minutes=6)
    second = h.manager.send_alert("Export late", "export_orders has not started", severity="high")

    assert first.sent_to == ("email", "slack")
    assert second.sent_to == ("email", "slack")


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
