"""What the alert manager records: history entries with their reasons, and decision metrics.

With test doubles (no Airflow, no network, no sleeping clock); the builders are in manager_support.py.
"""

from __future__ import annotations

import pytest
from manager_support import (
    NO_ESCALATION,
    StatsRecorder,
    failure,
    harness,
    medium_failure,
    record_stats,
    warm_airflow_masker,
)

from airflow_alerting.model import Severity


@pytest.fixture(autouse=True)
def stats(monkeypatch: pytest.MonkeyPatch) -> StatsRecorder:
    warm_airflow_masker()
    return record_stats(monkeypatch)


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
