"""The storm generator and the replay report, without a real manager."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from airflow_alerting.incidents.model import Incident, IncidentMember
from airflow_alerting.incidents.signature import cause_signature
from airflow_alerting.model import (
    Alert,
    AlertKind,
    Classification,
    Decision,
    DecisionReason,
    Notification,
    NotificationAction,
    Severity,
)
from airflow_alerting.policy import AlertPolicy
from airflow_alerting.testing import FrozenClock, RecordingChannel
from airflow_alerting.testing.storm import (
    OUTAGE_CAUSE,
    Storm,
    StormEvent,
    generate_storm,
    replay,
    storm_alert,
    summarise,
)

START = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def storm() -> Storm:
    return generate_storm()


def _runs_by_task(storm: Storm, cause: str) -> dict[str, list[str]]:
    runs: dict[str, list[str]] = defaultdict(list)
    for e in storm.events_of(cause):
        runs[e.member_key].append(e.run_id)
    return runs


def _recurring(storm: Storm) -> list[str]:
    """Causes that fail one task in three different runs."""
    return [
        cause
        for cause in storm.causes
        if any(len(set(runs)) >= 3 for runs in _runs_by_task(storm, cause).values())
    ]


# --- determinism ------------------------------------------------------------------------------


def test_same_seed_same_storm() -> None:
    assert generate_storm(7) == generate_storm(7)
    assert generate_storm(7, scale=2) == generate_storm(7, scale=2)


def test_different_seeds_differ() -> None:
    assert generate_storm(1).events != generate_storm(2).events


# --- counts -----------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1, 10])
def test_counts_as_specified(scale: int) -> None:
    storm = generate_storm(scale=scale)
    outage = storm.events_of(OUTAGE_CAUSE)
    assert len(outage) == 500 * scale
    assert len(storm.dag_ids(OUTAGE_CAUSE)) == 20 * scale
    # one task instance, one failure: the outage fails 500 task instances once each
    assert len({e.member_key for e in outage}) == 500 * scale
    unrelated = [c for c in storm.causes if c != OUTAGE_CAUSE]
    assert len(unrelated) == 30 * scale
    per_cause = Counter(e.cause for e in storm.events)
    assert all(1 <= per_cause[c] <= 6 for c in unrelated)
    assert storm.failures == sum(per_cause.values())
    # unrelated causes fail other DAGs than the outage
    assert not storm.dag_ids(OUTAGE_CAUSE) & {e.dag_id for e in storm.events if e.cause != OUTAGE_CAUSE}
    assert len(_recurring(storm)) == 2 * scale


def test_recurring_causes_fail_one_task_in_three_consecutive_runs(storm: Storm) -> None:
    for cause in _recurring(storm):
        events = storm.events_of(cause)
        assert len({e.member_key for e in events}) == 1
        runs = [e.run_id for e in events]
        assert len(set(runs)) == 3
        # consecutive runs, in order: their logical dates increase with the failures
        assert runs == sorted(runs)


def test_parameters_scale_the_storm() -> None:
    storm = generate_storm(outage_tasks=40, outage_dags=4, unrelated_causes=5, duration=timedelta(minutes=5))
    assert len(storm.events_of(OUTAGE_CAUSE)) == 40
    assert len(storm.dag_ids(OUTAGE_CAUSE)) == 4
    assert len(storm.causes) == 6
    assert all(e.offset < timedelta(minutes=5) for e in storm.events)
    assert OUTAGE_CAUSE not in generate_storm(outage_tasks=0).causes


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scale": 0},
        {"outage_tasks": 5, "outage_dags": 6},
        {"unrelated_causes": -1},
        {"duration": timedelta(0)},
    ],
)
def test_rejects_impossible_storms(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        generate_storm(**kwargs)


# --- timing and shape ---------------------------------------------------------------------------


def test_events_sorted_and_within_the_duration(storm: Storm) -> None:
    offsets = [e.offset for e in storm.events]
    assert offsets == sorted(offsets)
    assert offsets[0] >= timedelta(0)
    assert offsets[-1] < timedelta(minutes=10)
    outage = storm.events_of(OUTAGE_CAUSE)
    assert outage[-1].offset - outage[0].offset <= timedelta(minutes=10)


def test_every_failure_is_a_distinct_final_try(storm: Storm) -> None:
    # a repeated occurrence id would be dropped as a duplicate callback and skew every count
    assert len({e.occurrence_id for e in storm.events}) == storm.failures
    assert all(e.try_number == e.max_tries + 1 for e in storm.events)


def test_storm_alert_is_a_final_task_failure(storm: Storm) -> None:
    event = storm.events[-1]
    alert = storm_alert(event, START)
    assert alert.kind is AlertKind.TASK_FAILURE
    assert alert.is_final_try
    assert alert.occurred_at == START + event.offset
    assert alert.occurrence_id == event.occurrence_id
    assert alert.source == event.member_key
    assert (alert.dag_id, alert.task_id, alert.map_index, alert.run_id) == (
        event.dag_id,
        event.task_id,
        event.map_index,
        event.run_id,
    )
    assert (alert.exception_type, alert.exception_mro, alert.message, alert.tags) == (
        event.exception_type,
        event.exception_mro,
        event.message,
        event.tags,
    )


# --- causes -------------------------------------------------------------------------------------


def test_outage_messages_vary_like_real_ones(storm: Storm) -> None:
    messages = {e.message for e in storm.events_of(OUTAGE_CAUSE)}
    hosts = {re.search(r'host "([^"]+)"', m).group(1) for m in messages}  # type: ignore[union-attr]
    ips = {re.search(r"\((\d+\.\d+\.\d+\.\d+)\)", m).group(1) for m in messages}  # type: ignore[union-attr]
    ports = {re.search(r"port (\d+)\?", m).group(1) for m in messages}  # type: ignore[union-attr]
    assert len(hosts) > 1 and len(ips) > 1 and len(ports) > 1
    assert all(m.startswith("could not connect to server: Connection refused\n") for m in messages)
    assert {e.exception_type for e in storm.events_of(OUTAGE_CAUSE)} == {"psycopg2.OperationalError"}


def test_causes_are_distinct(storm: Storm) -> None:
    assert len(set(storm.causes.values())) == len(storm.causes)
    assert len({e.cause for e in storm.events}) == len(storm.causes)
    # what each cause raises: one (type, message shape) per cause, no two causes alike
    shapes = {}
    for cause in storm.causes:
        if cause == OUTAGE_CAUSE:
            continue
        first = storm.events_of(cause)[0]
        shapes[cause] = (first.exception_type, first.message.splitlines()[0])
    assert len(set(shapes.values())) == len(shapes)


def test_the_near_miss_pairs_are_there(storm: Storm) -> None:
    raised = {(e.exception_type, e.message.splitlines()[0]) for e in storm.events}
    text = "\n".join(f"{t}: {m}" for t, m in raised)
    for needle in (
        "HTTPError: 404 Client Error: Not Found for url: https://api.hubapi.com/",
        "HTTPError: 500 Server Error: Internal Server Error for url: https://api.hubapi.com/",
        'relation "analytics.orders" does not exist',
        'relation "analytics.customers" does not exist',
        "ORA-00942: table or view does not exist",
        "ORA-01017: invalid username/password; logon denied",
        "non-zero exit code 137.",
        "non-zero exit code 1.",
        "An error occurred (AccessDenied) when calling the GetObject operation",
        "An error occurred (NoSuchKey) when calling the GetObject operation",
        "KeyError: 'user_id'",
        "KeyError: 'order_id'",
    ):
        assert needle in text, needle


@pytest.mark.parametrize("scale", [1, 10])
def test_causes_have_distinct_signatures(scale: int) -> None:
    """What correlation must do with this storm: one signature per cause, a different one for each.

    A failure here is the normaliser's (``incidents.signature``), not the generator's, unless the
    generator produced two causes that really are the same.
    """
    storm = generate_storm(scale=scale)
    signatures: dict[str, set[str]] = defaultdict(set)
    # distinct texts only: the outage's 5,000 messages at scale 10 are a few dozen variants
    for cause, exception_type, message in {(e.cause, e.exception_type, e.message) for e in storm.events}:
        signatures[cause].add(cause_signature(exception_type, message))
    spread = {c: s for c, s in signatures.items() if len(s) > 1}
    assert not spread, f"causes whose failures do not correlate: {sorted(spread)[:5]}"
    owners: dict[str, list[str]] = defaultdict(list)
    for cause, sigs in signatures.items():
        owners[next(iter(sigs))].append(cause)
    merged = {sig: [storm.causes[c] for c in cs] for sig, cs in owners.items() if len(cs) > 1}
    assert not merged, f"different causes with one signature: {merged}"


# --- the report, with a scripted manager ----------------------------------------------------------


@dataclass
class ScriptedStore:
    found: list[Incident] = field(default_factory=list)

    def incidents(self, *, limit: int = 100) -> list[Incident]:
        return self.found[:limit]


@dataclass
class ScriptedManager:
    """Announces the first failure of each cause on Slack and edits it after; keeps one incident per cause."""

    storm: Storm
    slack: RecordingChannel
    policy: AlertPolicy = field(default_factory=AlertPolicy)
    store: ScriptedStore = field(default_factory=ScriptedStore)
    #: causes whose failures are dropped (to check unaccounted) or counted twice (double_counted)
    drop: frozenset[str] = frozenset()
    double: frozenset[str] = frozenset()
    _incidents: dict[str, Incident] = field(default_factory=dict)
    handled: list[Alert] = field(default_factory=list)
    sweeps: int = 0

    def redeliver_outbox(self, limit: int = 20) -> list[Any]:
        self.sweeps += 1
        return []

    def handle(self, alert: Alert) -> None:
        self.handled.append(alert)
        cause = next(e.cause for e in self.storm.events if e.occurrence_id == alert.occurrence_id)
        if cause in self.drop:
            return
        event = next(e for e in self.storm.events if e.occurrence_id == alert.occurrence_id)
        current = self._incidents.get(cause)
        member = IncidentMember(event.dag_id, event.task_id, event.map_index, failures=1)
        if current is None:
            current = Incident(
                id=cause,
                key=cause,
                title=cause_signature(event.exception_type, event.message),
                severity=Severity.MEDIUM,
                opened_at=START,
                last_seen_at=START,
            )
            action = NotificationAction.ANNOUNCE
        else:
            action = NotificationAction.UPDATE
        bump = 2 if cause in self.double else 1
        current = replace(current, failures=current.failures + bump, members=(*current.members, member))
        self._incidents[cause] = current
        self.store.found = list(self._incidents.values())
        self.slack.deliver(
            Notification(
                alert=alert,
                classification=Classification(Severity.MEDIUM, ()),
                fingerprint=cause,
                channel="slack",
                decision=Decision(True, DecisionReason.FIRST),
                incident=current,
                action=action,
            )
        )


@pytest.fixture(scope="module")
def small() -> Storm:
    return generate_storm(3, outage_tasks=30, outage_dags=3, unrelated_causes=12)


def _replay(storm: Storm, **kwargs: Any) -> tuple[ScriptedManager, Any]:
    slack = RecordingChannel("slack", editable=True)
    manager = ScriptedManager(storm, slack, **kwargs)
    clock = FrozenClock(START)
    report = replay(storm, manager, clock, channels={"slack": slack})  # type: ignore[arg-type]
    return manager, report


def test_replay_advances_the_clock_and_counts(small: Storm) -> None:
    manager, report = _replay(small)
    assert [a.occurrence_id for a in manager.handled] == [e.occurrence_id for e in small.events]
    assert [a.occurred_at for a in manager.handled] == [START + e.offset for e in small.events]
    assert manager.sweeps == 1  # the storm settled: one sweep found nothing due
    assert len(report.handle_seconds) == small.failures
    assert report.failures == small.failures
    assert report.causes == len(small.causes)
    assert report.messages["slack"] == len(small.causes)
    assert report.edits["slack"] == small.failures - len(small.causes)
    assert report.actions["slack"][NotificationAction.ANNOUNCE] == len(small.causes)
    assert report.floor_ratio("slack") == 1.0
    # the default matrix sends every (medium or worse) failure to Slack
    assert report.stock_messages["slack"] == small.failures
    assert len(report.incidents) == len(small.causes)
    assert all(len(ids) == 1 for ids in report.cause_incidents.values())
    assert report.incident_of(OUTAGE_CAUSE) is not None
    assert report.unaccounted == 0
    assert report.double_counted == 0
    assert report.unnamed_causes == {"slack": ()}
    assert report.latency(0.5) <= report.latency(0.99)
    assert "slack" in report.format()


def test_replay_finds_lost_and_double_counted_failures(small: Storm) -> None:
    lost = next(c for c in small.causes if c != OUTAGE_CAUSE)
    twice = next(c for c in small.causes if c not in (OUTAGE_CAUSE, lost))
    _, report = _replay(small, drop=frozenset({lost}), double=frozenset({twice}))
    assert report.unaccounted == len(small.events_of(lost))
    assert report.double_counted == len(small.events_of(twice))


def test_unnamed_causes_are_those_no_message_titles(small: Storm) -> None:
    recorded = {"slack": ()}
    report = summarise(small, recorded, ())
    assert set(report.unnamed_causes["slack"]) == set(small.causes)
    assert report.unaccounted == small.failures


def test_storm_event_member_key_matches_incident_members() -> None:
    event = StormEvent(
        offset=timedelta(0),
        dag_id="d",
        task_id="t",
        map_index=3,
        run_id="r",
        try_number=1,
        max_tries=0,
        exception_type="KeyError",
        exception_mro=("KeyError",),
        message="'x'",
        tags=frozenset(),
        cause="c",
    )
    assert event.member_key == IncidentMember("d", "t", 3).key == storm_alert(event, START).source
