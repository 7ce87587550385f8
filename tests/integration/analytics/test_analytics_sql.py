"""``Analytics`` over ``SqlStore``: the SQL aggregates agree with the in-Python computation.

A small storm and a generated day of rising and steady causes are handled by a real
``AlertManager`` writing to the store (simulated clock), some incidents are acknowledged and
resolved; then every analytics call aggregated in SQL is compared with
:mod:`airflow_alerting.analytics.compute` run on the same rows read back from the store.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from analytics_sql_support import database_url, new_store
from analytics_support import build_manager, play, scenario

from airflow_alerting import metrics
from airflow_alerting.analytics import Analytics, compute
from airflow_alerting.incidents.model import Incident
from airflow_alerting.model import HistoryEntry
from airflow_alerting.state.sql import SqlStore
from airflow_alerting.testing import FrozenClock
from airflow_alerting.testing.storm import OUTAGE_CAUSE, generate_storm, replay

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
SINCE = NOW - timedelta(days=3)


@dataclass(frozen=True)
class Filled:
    store: SqlStore
    analytics: Analytics
    entries: list[HistoryEntry]
    incidents: list[Incident]


@pytest.fixture(scope="module", params=["sqlite", "postgresql", "mariadb"])
def filled(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Filled]:
    directory: Path = tmp_path_factory.mktemp(request.param)
    store = new_store(database_url(request.param, directory))
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(metrics, "_stats", lambda: None)
            clock = FrozenClock(NOW - timedelta(hours=30))
            manager, channels = build_manager(store, clock)
            storm = generate_storm(seed=2, outage_tasks=24, outage_dags=4, unrelated_causes=5)
            report = replay(storm, manager, clock, channels=channels)
            outage = report.incident_of(OUTAGE_CAUSE)
            assert outage is not None
            clock.advance(minutes=9, seconds=13, microseconds=250)
            manager.acknowledge(outage.id, by="oncall")
            others = [i for i in report.incidents if i.id != outage.id]
            clock.advance(minutes=31)
            manager.resolve(others[0].id, by="oncall")
            play(manager, clock, scenario(NOW))
        entries = store.history(limit=1_000_000)
        incidents = store.incidents(limit=100_000)
        yield Filled(store, Analytics(store), entries, incidents)
    finally:
        store.drop_tables()


def test_the_sql_store_is_complete_and_the_history_is_attributed(filled: Filled) -> None:
    assert filled.analytics.complete is True
    alerts = [e for e in filled.entries if e.alert_id is not None]
    assert len(alerts) > 100
    assert all(e.dag_id and e.kind for e in alerts)
    assert sum(1 for e in alerts if e.cause is not None and e.incident_id is not None) > 100


@pytest.mark.parametrize("by", compute.VOLUME_BY)
@pytest.mark.parametrize("bucket", [timedelta(minutes=1), timedelta(minutes=15), timedelta(days=1)])
def test_volume(filled: Filled, by: str, bucket: timedelta) -> None:
    in_sql = filled.analytics.volume(SINCE, bucket, by)

    assert in_sql == compute.volume(filled.entries, SINCE, int(bucket.total_seconds()), by)
    assert in_sql  # not vacuous


@pytest.mark.parametrize("by", compute.NOISIEST_BY)
@pytest.mark.parametrize("limit", [3, 1000])
def test_noisiest(filled: Filled, by: str, limit: int) -> None:
    in_sql = filled.analytics.noisiest(SINCE, by, limit)

    assert in_sql == compute.noisiest(filled.entries, SINCE, by, limit)
    assert len(in_sql) == limit or limit == 1000


def test_noisiest_since_a_later_time(filled: Filled) -> None:
    since = NOW - timedelta(hours=2)

    in_sql = filled.analytics.noisiest(since, "cause", 1000)

    assert in_sql == compute.noisiest(filled.entries, since, "cause", 1000)
    everything = filled.analytics.noisiest(SINCE, "cause", 1000)
    assert 0 < sum(r.alerts for r in in_sql) < sum(r.alerts for r in everything)


def test_suppression(filled: Filled) -> None:
    in_sql = filled.analytics.suppression(SINCE)

    assert in_sql == compute.suppression(filled.entries, SINCE)
    assert in_sql.suppressed > 0 and in_sql.sent > 0


def test_response_times(filled: Filled) -> None:
    in_sql = filled.analytics.response_times(SINCE)
    in_python = compute.response_times(filled.incidents, SINCE)

    assert (in_sql.incidents, in_sql.acknowledged, in_sql.resolved) == (
        in_python.incidents,
        in_python.acknowledged,
        in_python.resolved,
    )
    assert in_sql.acknowledged >= 1 and in_sql.resolved >= 1
    # SQLite computes durations from Julian days: exact to well under a millisecond
    assert in_sql.mtta_seconds == pytest.approx(in_python.mtta_seconds, abs=1e-3)
    assert in_sql.mttr_seconds == pytest.approx(in_python.mttr_seconds, abs=1e-3)


@pytest.mark.parametrize(
    ("recent", "baseline", "min_recent"),
    [(timedelta(hours=1), timedelta(days=1), 3), (timedelta(hours=2), timedelta(hours=12), 2)],
)
def test_trending(filled: Filled, recent: timedelta, baseline: timedelta, min_recent: int) -> None:
    in_sql = filled.analytics.trending(NOW, recent, baseline, min_recent=min_recent)

    in_python = compute.trending(filled.entries, NOW, recent, baseline, 10, min_recent=min_recent)
    assert [(t.cause, t.recent, t.baseline, t.severity) for t in in_sql] == [
        (t.cause, t.recent, t.baseline, t.severity) for t in in_python
    ]
    assert [t.ratio for t in in_sql] == pytest.approx([t.ratio for t in in_python])
    assert len(in_sql) >= 2


@pytest.mark.parametrize(
    ("since", "limit", "dag_id", "severity"),
    [
        (None, 100, None, None),
        (None, 5, None, None),
        (NOW - timedelta(hours=1), 1000, None, None),
        (None, 1000, "rising_dag", None),
        (None, 7, None, "high"),
    ],
)
def test_history(
    filled: Filled, since: datetime | None, limit: int, dag_id: str | None, severity: str | None
) -> None:
    in_sql = filled.analytics.history(since=since, limit=limit, dag_id=dag_id, severity=severity)

    expected = compute.filter_history(
        filled.entries, since=since, limit=limit, dag_id=dag_id, severity=severity
    )
    assert in_sql == expected
    assert in_sql or severity is not None


def test_report_is_the_parts(filled: Filled) -> None:
    report = filled.analytics.report(NOW - timedelta(hours=36), NOW)

    assert report.complete is True and report.bucket_seconds == 3600.0
    assert list(report.volume) == [
        b for b in filled.analytics.volume(NOW - timedelta(hours=36), timedelta(hours=1)) if b.start <= NOW
    ]
    assert list(report.trending) == filled.analytics.trending(NOW)
