"""The alert manager while the state store is down: it fails open, capped, and never raises into the task.

With test doubles (no Airflow, no network, no sleeping clock); the builders are in manager_support.py.
"""

from __future__ import annotations

from typing import Any, NoReturn

import pytest
from manager_support import (
    StatsRecorder,
    failure,
    harness,
    reasons,
    record_stats,
    success,
    warm_airflow_masker,
)

from airflow_alerting.model import AlertOutcome, DecisionReason
from airflow_alerting.state.base import StateUnavailableError
from airflow_alerting.testing import MemoryStore


@pytest.fixture(autouse=True)
def stats(monkeypatch: pytest.MonkeyPatch) -> StatsRecorder:
    warm_airflow_masker()
    return record_stats(monkeypatch)


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
