"""Analytics over a replayed storm (MemoryStore, simulated clock): every figure is checked
against what the storm generator produced or what the channels recorded."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta

from analytics_support import Replayed

from airflow_alerting.analytics import NO_KEY, Analytics
from airflow_alerting.model import DecisionReason
from airflow_alerting.testing.storm import OUTAGE_CAUSE


def ranked(counts: Counter[str]) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def test_a_document_store_is_a_reduced_view(replayed: Replayed) -> None:
    assert Analytics(replayed.store).complete is False


def test_noisiest_dags_and_tasks_count_each_failure_once(replayed: Replayed) -> None:
    analytics = Analytics(replayed.store)
    since = replayed.clock.now - timedelta(days=1)
    by_dag = Counter(e.dag_id for e in replayed.storm.events)
    by_task = Counter(f"{e.dag_id}.{e.task_id}" for e in replayed.storm.events)

    dags = analytics.noisiest(since, by="dag", limit=1000)
    tasks = analytics.noisiest(since, by="task", limit=1000)

    # a failure routed to three channels is still one alert
    assert [(r.key, r.alerts) for r in dags] == ranked(by_dag)
    assert [(r.key, r.alerts) for r in tasks] == ranked(by_task)
    assert [r.key for r in analytics.noisiest(since, by="dag", limit=3)] == [k for k, _ in ranked(by_dag)[:3]]
    last = {d: max(e.offset for e in replayed.storm.events if e.dag_id == d) for d in by_dag}
    start = replayed.start
    assert {r.key: r.last_seen for r in dags} == {d: start + off for d, off in last.items()}


def test_noisiest_causes_are_the_storm_causes(replayed: Replayed) -> None:
    report = replayed.report
    titles: Counter[str] = Counter()
    for cause in replayed.storm.causes:
        names = {i.title for i in report.incidents if i.id in report.cause_incidents.get(cause, ())}
        assert len(names) == 1, (cause, names)
        titles[names.pop()] += len(replayed.storm.events_of(cause))

    causes = Analytics(replayed.store).noisiest(replayed.clock.now - timedelta(days=1), by="cause", limit=100)

    assert [(r.key, r.alerts) for r in causes] == ranked(titles)
    outage = report.incident_of(OUTAGE_CAUSE)
    assert outage is not None and causes[0].key == outage.title
    assert causes[0].alerts == len(replayed.storm.events_of(OUTAGE_CAUSE))


def test_volume_per_minute_follows_the_storm(replayed: Replayed) -> None:
    analytics = Analytics(replayed.store)
    start = replayed.start
    expected: Counter[object] = Counter()
    for event in replayed.storm.events:
        at = start + event.offset
        expected[at.replace(second=0, microsecond=0)] += 1

    buckets = analytics.volume(start - timedelta(hours=1), bucket=timedelta(minutes=1), by="severity")

    per_minute: Counter[object] = Counter()
    for bucket in buckets:
        per_minute[bucket.start] += bucket.alerts
    assert per_minute == expected
    assert [(b.start, b.key) for b in buckets] == sorted((b.start, b.key) for b in buckets)
    assert {b.key for b in buckets} <= {"low", "medium", "high", "critical"}


def test_volume_by_incident_and_dag(replayed: Replayed) -> None:
    analytics = Analytics(replayed.store)
    since = replayed.clock.now - timedelta(days=1)
    outage = replayed.report.incident_of(OUTAGE_CAUSE)
    assert outage is not None

    by_incident: Counter[str] = Counter()
    for bucket in analytics.volume(since, bucket=timedelta(hours=1), by="incident"):
        by_incident[bucket.key] += bucket.alerts
    by_dag: Counter[str] = Counter()
    for bucket in analytics.volume(since, bucket=timedelta(hours=1), by="dag"):
        by_dag[bucket.key] += bucket.alerts

    assert by_incident[outage.id] == len(replayed.storm.events_of(OUTAGE_CAUSE))
    assert NO_KEY not in by_incident  # every storm failure is final: each joined an incident
    assert sum(by_incident.values()) == replayed.storm.failures
    assert by_dag == Counter(e.dag_id for e in replayed.storm.events)


def test_suppression_matches_what_the_channels_received(replayed: Replayed) -> None:
    summary = Analytics(replayed.store).suppression(replayed.clock.now - timedelta(days=1))
    # notifications sent at alert time; the outbox's (deferred edits, follow-ups) are not decisions
    later = {DecisionReason.REDELIVERED, DecisionReason.SUMMARY}
    sent_at_alert_time = sum(
        1 for ch in replayed.channels.values() for n in ch.notifications if n.decision.reason not in later
    )

    assert summary.sent == sent_at_alert_time
    assert summary.decisions == summary.sent + summary.suppressed
    assert summary.suppressed == sum(summary.by_reason.values())
    assert summary.ratio == summary.suppressed / summary.decisions
    # a storm of one cause is mostly folded into its incident
    assert summary.by_reason.get(DecisionReason.CORRELATED.value, 0) > 0.5 * replayed.storm.failures
    assert set(summary.by_reason) <= {r.value for r in DecisionReason}


def test_history_filters(replayed: Replayed) -> None:
    analytics = Analytics(replayed.store)
    dag = Counter(e.dag_id for e in replayed.storm.events).most_common(1)[0][0]
    everything = replayed.store.history(limit=100_000)

    entries = analytics.history(dag_id=dag, limit=100_000)
    high = analytics.history(severity="HIGH", limit=5)

    assert entries == [e for e in everything if e.dag_id == dag]
    assert {e.dag_id for e in entries} == {dag}
    assert high == [e for e in everything if e.severity == "high"][:5]
    assert analytics.history(since=replayed.clock.now + timedelta(seconds=1)) == []
    assert len(analytics.history(limit=7)) == 7


def test_report_is_json(replayed: Replayed) -> None:
    analytics = Analytics(replayed.store)
    now = replayed.clock.now
    report = analytics.report(now - timedelta(hours=3), now)

    data = json.loads(json.dumps(report.to_json()))

    assert data["complete"] is False and data["bucket_seconds"] == 3600.0
    assert sum(b["alerts"] for b in data["volume"]) == replayed.storm.failures
    assert data["noisiest"]["cause"][0]["alerts"] == len(replayed.storm.events_of(OUTAGE_CAUSE))
    assert data["suppression"] == analytics.suppression(now - timedelta(hours=3)).to_json()
    assert data["response_times"]["incidents"] == len(replayed.report.incidents)
