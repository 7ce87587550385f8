"""``simulate()``: a real manager on a fresh in-memory store with a simulated clock."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sim_support import T0, outage_events

from airflow_alerting import metrics
from airflow_alerting.model import AlertKind
from airflow_alerting.policy import AlertPolicy
from airflow_alerting.simulation import FailureEvent, SimulationResult, simulate

PER_TASK = AlertPolicy.from_dict({"incidents": {"correlate_by": []}})


def channel(result: SimulationResult, name: str) -> Any:
    found = result.channel(name)
    assert found is not None, name
    return found


def test_one_cause_across_dags_is_one_incident_and_one_message() -> None:
    result = simulate(outage_events(), AlertPolicy())
    assert (result.events, result.failures, result.retries, result.recoveries) == (6, 6, 0, 0)
    assert len(result.incidents) == 2
    big = result.incidents[0]
    assert (big.failures, big.dag_count, big.task_count) == (5, 3, 5)
    slack = channel(result, "slack")
    # one announcement per incident; the stock approach posts every failure
    assert slack.actions["announce"] == 2
    assert slack.messages == 2
    assert slack.stock == 6
    # the four later outage failures were edited into the announcement or folded in
    assert slack.folded > 0
    assert slack.actions["update"] >= 1
    assert slack.follow_ups == 0  # Slack's Web API edits instead
    cause = result.causes[0]
    assert cause.cause.startswith("psycopg2.OperationalError: could not connect")
    assert (cause.failures, cause.dags, cause.tasks, cause.incidents, cause.messages) == (5, 3, 5, 1, 1)
    assert result.held["correlated"] == sum(c.folded for c in result.channels)


def test_a_webhook_slack_gets_follow_ups_instead_of_edits() -> None:
    result = simulate(outage_events(), AlertPolicy(), slack_api=False)
    slack = channel(result, "slack")
    assert slack.edits == 0
    assert slack.follow_ups >= 1
    assert slack.messages == slack.actions["announce"] + slack.follow_ups


def test_per_fingerprint_correlation_and_recoveries() -> None:
    events = outage_events()
    events += [
        FailureEvent(time=T0 + timedelta(minutes=4 + i), dag_id=f"dag_{i % 3}", task_id=f"t{i}", kind=kind)
        for i, kind in enumerate([AlertKind.TASK_SUCCESS] * 5)
    ]
    result = simulate(events, PER_TASK)
    assert result.recoveries == 5
    assert len(result.incidents) == 6
    states = sorted(i.state for i in result.incidents)
    assert states == ["open"] + ["resolved"] * 5
    assert channel(result, "slack").actions["resolve"] == 5


def test_retries_are_counted_apart_and_open_no_incident() -> None:
    retry = FailureEvent(time=T0, dag_id="d", task_id="t", try_number=1, max_tries=2, exception_type="E")
    result = simulate([retry], AlertPolicy())
    assert (result.failures, result.retries) == (0, 1)
    assert result.incidents == ()
    assert result.causes == ()


def test_the_deployment_metrics_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[Any, ...]] = []

    class Recorder:
        def __getattr__(self, method: str) -> Any:
            return lambda *args, **kwargs: sent.append((method, args))

    def stats() -> Recorder:
        return Recorder()

    monkeypatch.setattr(metrics, "_stats", stats)
    result = simulate(outage_events(), AlertPolicy())
    assert result.messages > 0
    assert sent == []
    assert metrics._stats is stats  # put back afterwards


def test_no_events_is_an_empty_result() -> None:
    result = simulate([], AlertPolicy(), label="empty")
    assert (result.events, result.start, result.incidents, result.messages) == (0, None, (), 0)
    assert result.to_json()["policy"] == "empty"


def test_json_shape() -> None:
    data = simulate(outage_events(), AlertPolicy(), label="p.yaml").to_json()
    assert set(data) >= {
        "policy",
        "events",
        "failures",
        "channels",
        "incidents",
        "causes",
        "held",
        "messages",
    }
    assert data["policy"] == "p.yaml"
    assert {c["name"] for c in data["channels"]} == {"slack", "email", "pagerduty"}
    assert data["messages"] == sum(c["messages"] for c in data["channels"])
    assert data["incidents"][0]["failures"] == 5


def test_silences_in_force_hold_the_failures_they_match() -> None:
    from airflow_alerting.incidents.silences import Silence

    silence = Silence(
        id="db-maintenance",
        starts_at=T0 - timedelta(minutes=1),
        ends_at=T0 + timedelta(minutes=2),
        dag_ids=("dag_*",),
    )
    result = simulate(outage_events(), AlertPolicy(), silences=[silence])
    slack = channel(result, "slack")
    # the five outage failures fall in the silence; the unrelated one at +3 min does not
    assert slack.silenced == 5
    assert slack.actions["announce"] == 1
    assert result.held["silenced"] == 5
    assert channel(simulate(outage_events(), AlertPolicy()), "slack").silenced == 0
