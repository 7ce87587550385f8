"""Fixtures of the analytics unit tests (see ``analytics_support``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from analytics_support import Replayed, build_manager

from airflow_alerting import metrics
from airflow_alerting.testing import FrozenClock, MemoryStore
from airflow_alerting.testing.storm import generate_storm, replay


@pytest.fixture(autouse=True)
def no_airflow_stats(monkeypatch: pytest.MonkeyPatch) -> None:
    # metrics would import Airflow's Stats; these tests need no Airflow
    monkeypatch.setattr(metrics, "_stats", lambda: None)


@pytest.fixture(scope="module")
def replayed() -> Iterator[Replayed]:
    storm = generate_storm(seed=11, outage_tasks=80, outage_dags=6, unrelated_causes=10)
    clock = FrozenClock()
    # large enough to keep every decision: the numbers below are exact only then
    store = MemoryStore(history_limit=100_000)
    manager, channels = build_manager(store, clock)
    start = clock.now
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(metrics, "_stats", lambda: None)
        report = replay(storm, manager, clock, channels=channels)
    yield Replayed(storm, report, manager, store, clock, channels, start)
