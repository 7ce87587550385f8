"""Bad input names the argument; history entries keep their new fields across JSON, and old
entries (without them) still load."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from airflow_alerting.analytics import Analytics, history_entry_json
from airflow_alerting.model import HistoryEntry
from airflow_alerting.testing import MemoryStore

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda a: a.volume(datetime(2026, 3, 1)), "since"),
        (lambda a: a.volume(NOW, bucket=timedelta(milliseconds=1500)), "bucket"),
        (lambda a: a.volume(NOW, bucket=timedelta(0)), "bucket"),
        (lambda a: a.volume(NOW, by="channel"), "by"),
        (lambda a: a.noisiest(NOW, by="severity"), "by"),
        (lambda a: a.noisiest(NOW, limit=-1), "limit"),
        (lambda a: a.noisiest("yesterday"), "since"),
        (lambda a: a.suppression(datetime(2026, 3, 1)), "since"),
        (lambda a: a.response_times(datetime(2026, 3, 1)), "since"),
        (lambda a: a.trending(datetime(2026, 3, 1)), "now"),
        (lambda a: a.trending(NOW, recent=timedelta(0)), "recent"),
        (lambda a: a.trending(NOW, baseline=-timedelta(hours=1)), "baseline"),
        (lambda a: a.trending(NOW, min_recent=0), "min_recent"),
        (lambda a: a.history(severity="urgent"), "severity"),
        (lambda a: a.history(limit=True), "limit"),
        (lambda a: a.report(NOW, NOW - timedelta(hours=1)), "before since"),
    ],
)
def test_bad_input_names_the_argument(call: Any, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        call(Analytics(MemoryStore()))


def test_an_empty_store_gives_zeros_not_errors() -> None:
    analytics = Analytics(MemoryStore())

    report = analytics.report(NOW - timedelta(days=7), NOW)

    assert report.volume == () and report.noisiest_dags == () and report.trending == ()
    assert report.bucket_seconds == 86400.0  # a week is bucketed by day
    assert report.suppression.to_json() == {
        "decisions": 0,
        "sent": 0,
        "suppressed": 0,
        "ratio": 0.0,
        "by_reason": {},
    }
    assert report.response_times.mtta_seconds is None
    json.dumps(report.to_json())


def entry(**fields: Any) -> HistoryEntry:
    base: dict[str, Any] = dict(
        at=NOW,
        fingerprint="fp",
        source="etl.load",
        kind="task_failure",
        severity="high",
        channel="slack",
        reason="first",
        sent=True,
    )
    return HistoryEntry(**{**base, **fields})


def test_history_entry_round_trips_the_analytics_fields() -> None:
    full = entry(incident_id="i1", dag_id="etl", task_id="load", alert_id="a1", cause="KeyError: 'x'")

    assert HistoryEntry.from_json(json.loads(json.dumps(full.to_json()))) == full
    assert history_entry_json(full)["cause"] == "KeyError: 'x'"


def test_old_history_json_loads_with_the_new_fields_unknown() -> None:
    old = entry().to_json()
    # what 0.1 wrote: none of the new keys
    assert not {"incident_id", "dag_id", "task_id", "alert_id", "cause"} & set(old)

    loaded = HistoryEntry.from_json(old)

    assert loaded == entry()
    assert history_entry_json(loaded)["incident_id"] is None


def test_entries_without_an_alert_id_are_not_alerts() -> None:
    """Redeliveries, digests and old entries are in the history but count as no alert."""
    store = MemoryStore()
    store.append_history(
        [
            entry(alert_id="a1", dag_id="etl", task_id="load"),
            entry(
                alert_id="a1", dag_id="etl", task_id="load", channel="email", sent=False, reason="throttled"
            ),
            entry(dag_id="etl", task_id="load", reason="redelivered"),
            entry(source="alerting_digest", reason="summary"),
        ]
    )
    analytics = Analytics(store)

    (row,) = analytics.noisiest(NOW - timedelta(hours=1), by="task")
    summary = analytics.suppression(NOW - timedelta(hours=1))

    assert (row.key, row.alerts, row.sent, row.suppressed) == ("etl.load", 1, 1, 1)
    assert (summary.decisions, summary.suppressed, dict(summary.by_reason)) == (2, 1, {"throttled": 1})
    assert len(analytics.history()) == 4  # the history itself shows everything
