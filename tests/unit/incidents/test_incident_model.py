"""Incident model: JSON round trips, describe(), MTTA/MTTR samples, dedup keys."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_alerting.incidents.model import (
    Announcement,
    Incident,
    IncidentMember,
    IncidentState,
    member_key,
    new_incident_id,
)
from airflow_alerting.model import Severity

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)

# aware datetimes with fixed offsets survive isoformat()/fromisoformat() exactly
AWARE = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=5, minutes=30))]),
)
MAYBE_AWARE = st.none() | AWARE
TEXT = st.text(max_size=30)
MEMBERS = st.builds(
    IncidentMember,
    dag_id=TEXT,
    task_id=st.none() | TEXT,
    map_index=st.integers(-1, 1000),
    failures=st.integers(1, 10_000),
    first_at=MAYBE_AWARE,
    last_at=MAYBE_AWARE,
    last_run_id=st.none() | TEXT,
    recovered_at=MAYBE_AWARE,
)
ANNOUNCEMENTS = st.builds(
    Announcement,
    channel=TEXT,
    ref=st.none() | TEXT,
    conversation=st.none() | TEXT,
    severity=st.sampled_from(Severity),
    at=MAYBE_AWARE,
)
COUNTS = st.integers(0, 10**6)
INCIDENTS = st.builds(
    Incident,
    id=TEXT,
    key=TEXT,
    title=TEXT,
    severity=st.sampled_from(Severity),
    opened_at=AWARE,
    last_seen_at=AWARE,
    state=st.sampled_from(IncidentState),
    severity_reasons=st.lists(TEXT, max_size=3).map(tuple),
    failures=COUNTS,
    silenced=COUNTS,
    members=st.lists(MEMBERS, max_size=3).map(tuple),
    member_count=COUNTS,
    failing_count=COUNTS,
    task_count=COUNTS,
    dag_ids=st.lists(TEXT, max_size=3).map(tuple),
    dag_count=COUNTS,
    acknowledged_at=MAYBE_AWARE,
    acknowledged_by=st.none() | TEXT,
    resolved_at=MAYBE_AWARE,
    resolved_by=st.none() | TEXT,
    announcements=st.dictionaries(TEXT, ANNOUNCEMENTS, max_size=2).map(MappingProxyType),
    digested_at=MAYBE_AWARE,
)


@settings(max_examples=100, deadline=None)
@given(MEMBERS)
def test_member_round_trip(member: IncidentMember) -> None:
    assert IncidentMember.from_json(json.loads(json.dumps(member.to_json()))) == member


@settings(max_examples=100, deadline=None)
@given(ANNOUNCEMENTS)
def test_announcement_round_trip(announcement: Announcement) -> None:
    assert Announcement.from_json(json.loads(json.dumps(announcement.to_json()))) == announcement


@settings(max_examples=100, deadline=None)
@given(INCIDENTS)
def test_incident_round_trip(incident: Incident) -> None:
    # through real JSON text, as the stores keep it
    back = Incident.from_json(json.loads(json.dumps(incident.to_json())))
    assert back == incident
    assert dict(back.announcements) == dict(incident.announcements)


def test_incident_from_json_defaults_and_errors() -> None:
    minimal = Incident.from_json({"id": "i", "key": "k", "opened_at": T0.isoformat()})
    assert (minimal.severity, minimal.state, minimal.last_seen_at, minimal.title) == (
        Severity.MEDIUM,
        IncidentState.OPEN,
        T0,
        "",
    )
    with pytest.raises(ValueError, match="without opened_at"):
        Incident.from_json({"id": "i", "key": "k"})


def incident(**kw) -> Incident:
    return Incident(id="i", key="k", title="t", severity=Severity.HIGH, opened_at=T0, last_seen_at=T0, **kw)


@pytest.mark.parametrize(
    ("failures", "tasks", "dags", "text"),
    [
        (1, 1, 1, "1 failure in 1 task across 1 DAG"),
        (0, 0, 0, "0 failures in 0 tasks across 0 DAGs"),
        (2, 1, 1, "2 failures in 1 task across 1 DAG"),
        (500, 480, 20, "500 failures in 480 tasks across 20 DAGs"),
        (1, 2, 1, "1 failure in 2 tasks across 1 DAG"),
    ],
)
def test_describe_plurals(failures: int, tasks: int, dags: int, text: str) -> None:
    assert incident(failures=failures, task_count=tasks, dag_count=dags).describe() == text


@pytest.mark.parametrize(
    ("acked", "resolved", "tta", "ttr"),
    [
        (None, None, None, None),
        (5, None, timedelta(minutes=5), None),
        (None, 30, None, timedelta(minutes=30)),
        (5, 30, timedelta(minutes=5), timedelta(minutes=30)),
        (0, 0, timedelta(0), timedelta(0)),
    ],
)
def test_time_to_acknowledge_and_resolve(
    acked: int | None, resolved: int | None, tta: timedelta | None, ttr: timedelta | None
) -> None:
    inc = incident(
        acknowledged_at=T0 + timedelta(minutes=acked) if acked is not None else None,
        resolved_at=T0 + timedelta(minutes=resolved) if resolved is not None else None,
    )
    assert (inc.time_to_acknowledge, inc.time_to_resolve) == (tta, ttr)


@settings(max_examples=100, deadline=None)
@given(key=st.text(max_size=2000), opened=AWARE)
def test_dedup_key_bounded_and_distinct(key: str, opened: datetime) -> None:
    inc = Incident(
        id=new_incident_id(key, opened),
        key=key,
        title="t",
        severity=Severity.LOW,
        opened_at=opened,
        last_seen_at=opened,
    )
    assert len(inc.dedup_key) <= 255 and inc.dedup_key.startswith("airflow-alerting/")
    # workers opening the same key on the same day agree on the id (Variables have no compare-and-set) ...
    same_day = opened.replace(hour=23, minute=59, second=59, microsecond=999999)
    assert new_incident_id(key, same_day) == new_incident_id(key, opened)
    # ... while the key's next incident, which follows this one, gets a new id, as does another day
    assert new_incident_id(key, opened, inc.id) != inc.id
    assert new_incident_id(key, opened + timedelta(days=1)) != inc.id


@pytest.mark.parametrize(
    ("args", "key", "task"),
    [
        (("d", "t", -1), "d.t", "d.t"),
        (("d", "t", 3), "d.t[3]", "d.t"),
        (("d", None, -1), "d", "d"),
    ],
)
def test_member_key_and_task(args: tuple[str, str | None, int], key: str, task: str) -> None:
    assert member_key(*args) == key
    m = IncidentMember(dag_id=args[0], task_id=args[1], map_index=args[2])
    assert (m.key, m.task) == (key, task)
    assert m.failing and not IncidentMember(dag_id="d", task_id="t", recovered_at=T0).failing


@pytest.mark.parametrize(("failures", "silenced", "fully"), [(0, 0, False), (3, 2, False), (3, 3, True)])
def test_fully_silenced(failures: int, silenced: int, fully: bool) -> None:
    assert incident(failures=failures, silenced=silenced).fully_silenced is fully
