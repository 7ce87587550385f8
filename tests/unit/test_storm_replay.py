"""A database outage is one incident, not five hundred Slack posts: the storm replayed end to end.

The default storm (:func:`~airflow_alerting.testing.storm.generate_storm`): a PostgreSQL outage
failing 500 tasks in 20 DAGs within 10 minutes, mixed with 30 unrelated causes (near-miss pairs
included), replayed through the default policy with a frozen clock, the in-memory store and
recording channels.  No Airflow, no network: a unit test (named apart from
``tests/unit/testing/test_storm.py``, the generator's own tests, because test modules here are
not packages and two ``test_storm`` modules would collide).

Run with ``-s`` to see the report and the comparison with the stock one-message-per-failure approach.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from airflow_alerting import metrics
from airflow_alerting.manager import AlertManager, DeliveryOptions
from airflow_alerting.model import Notification, NotificationAction
from airflow_alerting.policy import AlertPolicy
from airflow_alerting.testing import FrozenClock, MemoryStore, RecordingChannel
from airflow_alerting.testing.storm import OUTAGE_CAUSE, ReplayReport, Storm, generate_storm, replay

#: PagerDuty's Events API: trigger (announce, escalate, renotify), acknowledge, resolve; no edits
PAGERDUTY_ACTIONS = frozenset(
    {
        NotificationAction.ANNOUNCE,
        NotificationAction.ESCALATE,
        NotificationAction.RENOTIFY,
        NotificationAction.ACKNOWLEDGE,
        NotificationAction.RESOLVE,
    }
)
#: at most this many Slack messages per distinct cause (1.0 is the floor: one per root cause)
SLACK_BUDGET = 1.15
#: scale 1 always; more (``ALERTING_STORM_SCALES=1,10``) once a replay at 10 takes seconds, not an
#: hour (measured: scale 1 replays in ~45 s, and the store's cost grows with the incident's size).
#: Scale 100 belongs to bench/storm.py.
SCALES = tuple(int(s) for s in os.environ.get("ALERTING_STORM_SCALES", "1").split(",") if s.strip())


@dataclass(frozen=True)
class Replayed:
    storm: Storm
    report: ReplayReport
    seconds: float


@pytest.fixture(scope="module", params=SCALES, ids=[f"scale{s}" for s in SCALES])
def replayed(request: pytest.FixtureRequest) -> Iterator[Replayed]:
    scale: int = request.param
    storm = generate_storm(scale=scale)
    clock = FrozenClock()
    channels = {
        "slack": RecordingChannel("slack", editable=True),
        "email": RecordingChannel("email"),
        "pagerduty": RecordingChannel("pagerduty", actions=PAGERDUTY_ACTIONS),
    }
    manager = AlertManager(
        AlertPolicy(),
        store=MemoryStore(),
        channels=channels,
        clock=clock,
        # no settings: nothing reads Airflow's config; recording channels never need a retry
        delivery=DeliveryOptions(attempts=1, deadline=30, backoff_base=0.0, backoff_cap=0.0),
    )
    # metrics would import Airflow's Stats; this test needs no Airflow
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(metrics, "_stats", lambda: None)
        began = time.perf_counter()
        report = replay(storm, manager, clock, channels=channels)
        seconds = time.perf_counter() - began
    print(f"\n--- storm replay, scale {scale}: {seconds:.1f} s ---\n{report.format()}", end="")
    yield Replayed(storm, report, seconds)


def _outage_notifications(replayed: Replayed, channel: str) -> list[Notification]:
    outage = replayed.report.incident_of(OUTAGE_CAUSE)
    assert outage is not None
    return [
        n
        for n in replayed.report.notifications[channel]
        if n.incident is not None and n.incident.id == outage.id
    ]


def test_slack_messages_close_to_one_per_cause(replayed: Replayed) -> None:
    report = replayed.report
    assert report.messages["slack"] <= SLACK_BUDGET * report.causes, report.format()
    # what we replace: every failure on Slack
    assert report.stock_messages["slack"] == report.failures


def test_every_cause_named_in_slack(replayed: Replayed) -> None:
    unnamed = replayed.report.unnamed_causes["slack"]
    assert not unnamed, [replayed.storm.causes[c] for c in unnamed[:10]]


def test_the_outage_is_one_incident(replayed: Replayed) -> None:
    storm, report = replayed.storm, replayed.report
    assert len(report.cause_incidents[OUTAGE_CAUSE]) == 1, report.cause_incidents[OUTAGE_CAUSE]
    outage = report.incident_of(OUTAGE_CAUSE)
    assert outage is not None
    failures = len(storm.events_of(OUTAGE_CAUSE))
    dags = len(storm.dag_ids(OUTAGE_CAUSE))
    assert (failures, dags) == (500 * storm.scale, 20 * storm.scale)
    assert (outage.failures, outage.dag_count) == (failures, dags)
    received = [name for name in report.notifications if _outage_notifications(replayed, name)]
    assert "slack" in received
    for name in received:
        told = _outage_notifications(replayed, name)
        announces = [n for n in told if n.action is NotificationAction.ANNOUNCE]
        assert len(announces) == 1, f"{name}: {len(announces)} announcements of the outage"
    # what Slack shows last is the final state: the last edit (or escalation) of the announcement
    last = [
        n
        for n in _outage_notifications(replayed, "slack")
        if n.action in (NotificationAction.UPDATE, NotificationAction.ESCALATE)
    ][-1]
    assert last.incident is not None
    assert (last.incident.failures, last.incident.dag_count) == (failures, dags)


def test_no_failure_lost_or_counted_twice(replayed: Replayed) -> None:
    report = replayed.report
    assert sum(i.failures for i in report.incidents) == report.failures
    assert report.unaccounted == 0
    assert report.double_counted == 0


def test_different_causes_are_different_incidents(replayed: Replayed) -> None:
    report = replayed.report
    shared = {}
    for cause, ids in report.cause_incidents.items():
        for incident_id in ids:
            shared.setdefault(incident_id, []).append(cause)
    merged = [[replayed.storm.causes[c] for c in causes] for causes in shared.values() if len(causes) > 1]
    assert not merged, merged[:3]
    assert len(report.incidents) == report.causes
