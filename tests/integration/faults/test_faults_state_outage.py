"""State store outage: alerts still go out through the real channels, capped, and counted."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from faults_support import Faults, failure, reasons, routed_to, success

from airflow_alerting.model import AlertOutcome, DecisionReason, Severity
from airflow_alerting.state.base import StateStore, StateUnavailableError
from airflow_alerting.testing import MemoryStore

pytestmark = pytest.mark.integration

UNAVAILABLE = DecisionReason.STATE_UNAVAILABLE
CAPPED = DecisionReason.STATE_UNAVAILABLE_CAPPED


class DownStore(MemoryStore):
    """Every method of the store interface raises, as when the metadata API or database is down."""

    name = "down"

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()


def _unavailable(name: str) -> Callable[..., Any]:
    def method(self: DownStore, *args: Any, **kwargs: Any) -> Any:
        self.calls[name] += 1
        raise StateUnavailableError(f"{name}: connection refused")

    method.__name__ = name
    return method


for _name in sorted(StateStore.__abstractmethods__):
    setattr(DownStore, _name, _unavailable(_name))


def counts(faults: Faults) -> dict[str, int]:
    return {
        "email": len(faults.smtp.messages),
        "slack": len(faults.slack.messages),
        "pagerduty": len(faults.pagerduty.events),
    }


def test_every_store_method_is_down() -> None:
    store = DownStore()
    with pytest.raises(StateUnavailableError):
        store.history()
    assert set(StateStore.__abstractmethods__) <= set(vars(DownStore))


def test_state_outage_fails_open_capped_per_cause_and_channel(
    faults: Faults, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="airflow_alerting")
    store = DownStore()
    manager = faults.manager(store=store)
    outcomes: list[AlertOutcome] = []
    for run in range(1, 6):
        outcomes.append(manager.handle(failure(run), severity=Severity.CRITICAL))
        faults.clock.advance(seconds=5)

    for outcome in outcomes[:3]:
        assert reasons(outcome) == {"email": UNAVAILABLE, "slack": UNAVAILABLE, "pagerduty": UNAVAILABLE}
        assert set(outcome.sent_to) == {"email", "slack", "pagerduty"}
    for outcome in outcomes[3:]:
        assert reasons(outcome) == {"email": CAPPED, "slack": CAPPED, "pagerduty": CAPPED}
        assert outcome.sent_to == ()
    assert counts(faults) == {"email": 3, "slack": 3, "pagerduty": 3}
    assert store.calls["record_occurrence"] == 5
    # counted: the outage itself, the sends, and the capped ones by reason
    assert faults.metrics.count("state_unavailable") >= 5
    for channel in ("email", "slack", "pagerduty"):
        assert faults.metrics.count("sent", channel) == 3
    assert faults.metrics.count("suppressed", "state_unavailable_capped") == 6
    assert any("failing open" in r.getMessage() for r in caplog.records)

    # the cap is a rate, not a ban. Its window is the incident's: a critical incident is
    # announced again only after repeat_interval (4 h), so a few minutes later it is still capped ...
    faults.clock.advance(minutes=2)
    assert manager.handle(failure(8), severity=Severity.CRITICAL).sent_to == ()
    # ... and once repeat_interval has passed, critical alerts flow again
    faults.clock.advance(hours=4)
    later = manager.handle(failure(9), severity=Severity.CRITICAL)
    assert set(later.sent_to) == {"email", "slack", "pagerduty"}


def test_state_outage_cap_is_kept_per_channel(faults: Faults) -> None:
    manager = faults.manager(store=DownStore())
    for run in range(1, 4):
        manager.handle(failure(run), severity=Severity.MEDIUM)  # slack only
    assert counts(faults)["slack"] == 3

    # same fingerprint, now high: slack has used its allowance, email has not
    outcome = manager.handle(failure(4), severity=Severity.HIGH)

    assert reasons(outcome) == {"email": UNAVAILABLE, "slack": CAPPED}
    assert outcome.sent_to == ("email",)
    # the cap is per cause (the correlation key), not per task: another task failing the same
    # way shares it ...
    same_cause = manager.handle(failure(5, task_id="load_customers"), severity=Severity.MEDIUM)
    assert reasons(same_cause) == {"slack": CAPPED}
    # ... and another cause has its own allowance
    other = manager.handle(
        failure(6, task_id="load_customers", message="relation staging.customers does not exist"),
        severity=Severity.MEDIUM,
    )
    assert other.sent_to == ("slack",)


def test_failed_delivery_during_a_state_outage_is_reported_lost(
    faults: Faults, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="airflow_alerting")
    manager = faults.manager(routed_to("slack", "email"), store=DownStore())
    faults.slack.fail_next(500, count=3)

    outcome = manager.handle(failure(), severity=Severity.HIGH)

    assert outcome.failed == ("slack",)
    assert outcome.sent_to == ("email",)
    assert faults.metrics.count("outbox", "lost") == 1
    assert faults.metrics.count("failed", "slack") == 1
    lost = [r for r in caplog.records if "lost" in r.getMessage()]
    assert lost and lost[0].levelno == logging.ERROR
    assert "slack" in lost[0].getMessage()

    # the sweep cannot read the outbox either: it says so and returns, it does not raise
    caplog.clear()
    assert manager.redeliver_outbox() == []
    assert any("outbox" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_recovery_during_a_state_outage_sends_nothing_and_does_not_raise(faults: Faults) -> None:
    manager = faults.manager(store=DownStore())
    manager.handle(failure(), severity=Severity.CRITICAL)

    outcome = manager.handle(success())

    assert outcome.sent_to == ()
    assert faults.metrics.count("state_unavailable") >= 2
