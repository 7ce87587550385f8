"""Reading events files: the line format, its errors (naming line and field), the alert history."""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta, timezone

import pytest

from airflow_alerting import metrics
from airflow_alerting.manager import AlertManager, DeliveryOptions
from airflow_alerting.model import Alert, AlertKind, Severity
from airflow_alerting.simulation.events import (
    EventError,
    FailureEvent,
    parse_event,
    parse_lines,
    read_events,
    storm_events,
    write_events,
)
from airflow_alerting.testing import FrozenClock, MemoryStore, RecordingChannel
from airflow_alerting.testing.storm import generate_storm, storm_alert

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=timezone.utc)


def line(**fields: object) -> str:
    return json.dumps(fields)


def test_a_minimal_line_is_a_final_task_failure() -> None:
    (event,) = parse_lines([line(time="2026-03-02T09:30:00Z", dag="d", task="t", exception="E", message="m")])
    assert event.time == T0
    assert (event.dag_id, event.task_id, event.exception_type, event.message) == ("d", "t", "E", "m")
    assert event.kind is AlertKind.TASK_FAILURE
    assert event.alert().is_final_try
    assert event.line == 1


def test_alert_field_names_and_epoch_seconds_are_accepted() -> None:
    (event,) = parse_lines(
        [
            line(
                occurred_at=T0.timestamp(),
                dag_id="d",
                task_id="t",
                try_number=1,
                max_tries=2,
                exception_type="E",
                exception_mro=["E", "Exception"],
                downstream_count=12,
                tags=["tier:1"],
                params={"business_impact": "high"},
                map_index=4,
            )
        ]
    )
    assert event.time == T0
    alert = event.alert()
    assert not alert.is_final_try
    assert alert.exception_mro == ("E", "Exception")
    assert alert.downstream_count == 12
    assert alert.source == "d.t[4]"
    assert alert.params["business_impact"] == "high"


def test_a_time_without_offset_is_utc_and_events_are_sorted() -> None:
    events = parse_lines(
        [
            line(time="2026-03-02T09:31:00", dag="late", task="t"),
            "",
            "# a comment",
            line(time="2026-03-02T09:30:00", dag="early", task="t"),
        ]
    )
    assert [e.dag_id for e in events] == ["early", "late"]
    assert events[0].time == T0
    assert [e.line for e in events] == [4, 1]


@pytest.mark.parametrize(
    ("bad", "field", "words"),
    [
        ('{"time": "2026-03-02T09:30:00Z", "dag": "d",', "", "invalid JSON"),
        (line(dag="d", task="t"), "time", "required"),
        (line(time="yesterday", dag="d"), "time", "not an ISO 8601 time"),
        (line(time=T0.isoformat(), task="t"), "dag", "required"),
        (line(time=T0.isoformat(), dag="d", task="t", dga="x"), "dga", "unknown field"),
        (line(time=T0.isoformat(), dag="d", dag_id="d", task="t"), "dag_id", "given twice"),
        (line(time=T0.isoformat(), dag="d", task="t", **{"try": "2"}), "try", "must be an integer"),
        (line(time=T0.isoformat(), dag="d", task="t", max_tries=-1), "max_tries", "must be >= 0"),
        (line(time=T0.isoformat(), dag="d", task="t", kind="boom"), "kind", "unknown kind"),
        (line(time=T0.isoformat(), dag="d", task="t", tags=["a", 3]), "tags", "list of"),
        (line(time=T0.isoformat(), dag="d", task="t", params=[1]), "params", "JSON object"),
        ("[1, 2]", "", "must be a JSON object"),
    ],
)
def test_a_bad_line_names_its_number_and_field(bad: str, field: str, words: str) -> None:
    good = line(time=T0.isoformat(), dag="d", task="t")
    lines = [good, "", bad] if not bad.startswith("[") else [bad]
    with pytest.raises(EventError) as caught:
        parse_lines(lines)
    expected_line = 3 if not bad.startswith("[") else 1
    assert caught.value.line == expected_line
    assert caught.value.field == field
    assert str(caught.value).startswith(f"line {expected_line}: ")
    assert words in str(caught.value)


def test_explain_may_leave_the_time_out() -> None:
    event = parse_event({"dag": "d", "task": "t", "message": "m"}, now=T0)
    assert event.time == T0
    with pytest.raises(EventError, match="time: required"):
        parse_event({"dag": "d", "task": "t"})


def test_events_round_trip_through_a_file(tmp_path: object) -> None:
    storm = generate_storm(outage_tasks=30, outage_dags=3, unrelated_causes=5)
    events = storm_events(storm)
    buffer = io.StringIO()
    assert write_events(events, buffer) == storm.failures
    buffer.seek(0)
    back = read_events(buffer)
    assert [e.alert() for e in back] == [e.alert() for e in events]
    # what the storm replay would hand the manager, field for field
    start = events[0].time - storm.events[0].offset
    assert [e.alert() for e in events] == [storm_alert(s, start) for s in storm.events]


def _history(store: MemoryStore, clock: FrozenClock) -> list[str]:
    channels = {n: RecordingChannel(n) for n in ("slack", "email", "pagerduty")}
    manager = AlertManager(
        store=store,
        channels=channels,
        clock=clock,
        delivery=DeliveryOptions(attempts=1, deadline=30, backoff_base=0.0, backoff_cap=0.0),
    )
    alerts = [
        Alert("sales", task_id="load", run_id="r1", exception_type="KeyError", message="'customer_id'"),
        Alert("sales", task_id="load", run_id="r2", exception_type="KeyError", message="'customer_id'"),
        Alert("ops", task_id="fan", run_id="r1", map_index=3, message="boom", exception_type="ValueError"),
        Alert("ops", kind=AlertKind.DAG_FAILURE, run_id="r1", message="boom"),
    ]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(metrics, "_stats", lambda: None)
        for alert in alerts:
            manager.handle(alert)
            clock.advance(minutes=1)
    return [json.dumps(entry.to_json()) for entry in store.history(limit=100)]


def test_the_alert_history_reads_as_one_event_per_alert() -> None:
    store, clock = MemoryStore(), FrozenClock(T0)
    lines = _history(store, clock)
    entries = [json.loads(text) for text in lines]
    assert len(entries) > 4  # one entry per channel: more entries than alerts
    events = parse_lines(lines)
    assert len(events) == 4
    assert [e.time for e in events] == [T0 + timedelta(minutes=i) for i in range(4)]
    assert [(e.dag_id, e.task_id, e.map_index) for e in events] == [
        ("sales", "load", -1),
        ("sales", "load", -1),
        ("ops", "fan", 3),
        ("ops", None, -1),
    ]
    recorded = {(e["source"], e["at"]): Severity.parse(e["severity"]) for e in entries}
    for event in events:
        assert event.severity is recorded[(event.alert().source, event.time.isoformat())]
    # the fingerprint stands for the cause: the two sales failures share it, the others do not
    assert events[0].exception_type == events[1].exception_type != events[2].exception_type
    # a JSON array (a whole export) reads the same
    assert parse_lines(["[" + ",".join(lines) + "]"]) == events


def test_a_history_entry_without_its_fields_is_an_error() -> None:
    entry = {"at": T0.isoformat(), "fingerprint": "f", "source": "d.t", "channel": "slack", "reason": "first"}
    with pytest.raises(EventError) as caught:
        parse_lines([json.dumps(entry)])
    assert (caught.value.line, caught.value.field) == (1, "kind")


def test_event_json_carries_only_what_is_set() -> None:
    event = FailureEvent(time=T0, dag_id="d", task_id="t", exception_type="E", message="m")
    assert event.to_json() == {
        "time": T0.isoformat(),
        "dag": "d",
        "task": "t",
        "try": 1,
        "max_tries": 0,
        "exception": "E",
        "message": "m",
    }
