"""MTTA and MTTR from incidents acknowledged and resolved at known times (MemoryStore, simulated clock)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from analytics_support import build_manager

from airflow_alerting import metrics
from airflow_alerting.analytics import Analytics
from airflow_alerting.testing import FrozenClock, MemoryStore
from airflow_alerting.testing.storm import OUTAGE_CAUSE, generate_storm, replay


def test_mtta_and_mttr_are_the_means_over_the_incidents_opened_since(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "_stats", lambda: None)
    storm = generate_storm(seed=5, outage_tasks=12, outage_dags=3, unrelated_causes=4)
    clock = FrozenClock()
    store = MemoryStore(history_limit=100_000)
    manager, channels = build_manager(store, clock)
    start = clock.now
    report = replay(storm, manager, clock, channels=channels)
    analytics = Analytics(store)
    outage = report.incident_of(OUTAGE_CAUSE)
    assert outage is not None
    others = sorted((i for i in report.incidents if i.id != outage.id), key=lambda i: i.opened_at)
    assert len(others) >= 2

    untouched = analytics.response_times(start)
    assert (untouched.incidents, untouched.acknowledged, untouched.resolved) == (len(report.incidents), 0, 0)
    assert untouched.mtta_seconds is None and untouched.mttr_seconds is None

    clock.advance(minutes=7)
    acked_at = clock.now
    manager.acknowledge(outage.id, by="oncall")
    clock.advance(minutes=3, seconds=30)
    second_ack = clock.now
    manager.acknowledge(others[0].id, by="oncall")
    clock.advance(minutes=20)
    resolved_at = clock.now
    manager.resolve(others[0].id, by="oncall")
    manager.resolve(others[1].id, by="oncall")

    times = analytics.response_times(start)

    assert (times.incidents, times.acknowledged, times.resolved) == (len(report.incidents), 2, 2)
    to_ack = [(acked_at - outage.opened_at), (second_ack - others[0].opened_at)]
    to_resolve = [(resolved_at - others[0].opened_at), (resolved_at - others[1].opened_at)]
    assert times.mtta_seconds == pytest.approx(sum(d.total_seconds() for d in to_ack) / 2)
    assert times.mttr_seconds == pytest.approx(sum(d.total_seconds() for d in to_resolve) / 2)
    assert times.to_json() == {
        "incidents": times.incidents,
        "acknowledged": 2,
        "resolved": 2,
        "mtta_seconds": times.mtta_seconds,
        "mttr_seconds": times.mttr_seconds,
    }
    # only incidents opened since count
    later = analytics.response_times(others[1].opened_at + timedelta(microseconds=1))
    assert later.incidents == sum(1 for i in report.incidents if i.opened_at > others[1].opened_at)
