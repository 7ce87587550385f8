"""``explain()``: the manager's decisions for one alert, from state it only reads."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sim_support import T0

from airflow_alerting import metrics
from airflow_alerting.manager import AlertManager, DeliveryOptions
from airflow_alerting.model import Alert, Severity
from airflow_alerting.policy import AlertPolicy
from airflow_alerting.simulation.explain import explain
from airflow_alerting.simulation.run import channel_actions_for
from airflow_alerting.testing import FrozenClock, MemoryStore, RecordingChannel

REFUSED = "could not connect to server: Connection refused (host db-{n}.internal)"


def failure(n: int = 1, **fields: object) -> Alert:
    values: dict[str, object] = {
        "dag_id": f"dag_{n}",
        "task_id": "load",
        "run_id": f"r{n}",
        "exception_type": "psycopg2.OperationalError",
        "message": REFUSED.format(n=n),
    }
    values.update(fields)
    return Alert(**values)  # type: ignore[arg-type]


@pytest.fixture
def live() -> tuple[AlertManager, MemoryStore, FrozenClock]:
    """A manager that handled one failure of the cause at T0 (Slack and e-mail announced it)."""
    store, clock = MemoryStore(), FrozenClock(T0)
    channels = {
        "slack": RecordingChannel("slack", actions=channel_actions_for("slack")),
        "email": RecordingChannel("email"),
        "pagerduty": RecordingChannel("pagerduty", actions=channel_actions_for("pagerduty")),
    }
    manager = AlertManager(
        store=store,
        channels=channels,
        clock=clock,
        delivery=DeliveryOptions(attempts=1, deadline=30, backoff_base=0.0, backoff_cap=0.0),
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(metrics, "_stats", lambda: None)
        manager.handle(failure(1, tags=frozenset({"tier:2"})))
    return manager, store, clock


def snapshot(store: MemoryStore) -> str:
    incidents = [i.to_json() for i in store.incidents(limit=100)]
    history = [h.to_json() for h in store.history(limit=1000)]
    return json.dumps([incidents, history, store._documents], sort_keys=True, default=str)


def test_on_fresh_state_a_failure_opens_an_incident_and_is_announced() -> None:
    policy = AlertPolicy()
    alert = failure(tags=frozenset({"tier:1"}))
    result = explain(alert, policy, MemoryStore(), now=T0, state="memory")
    expected = policy.classifier.classify(alert)
    assert result.severity is expected.severity is Severity.CRITICAL
    assert result.reasons == expected.reasons
    assert any("tier:1" in reason for reason in result.reasons)
    assert result.correlation_key.startswith("cause=psycopg2.OperationalError: could not connect")
    assert "<host>" in result.title
    assert result.incident is not None and result.incident.new
    assert result.route == policy.router.route(alert, Severity.CRITICAL).channels
    assert [(c.channel, c.send, c.action, c.reason) for c in result.channels] == [
        (name, True, "announce", "first") for name in result.route
    ]
    assert result.silence is None
    data = result.to_json()
    assert data["severity"] == "critical"
    assert data["channels"][0]["window_seconds"] == policy.incidents.repeat_interval.total_seconds()


def test_a_second_failure_joins_the_open_incident_and_writes_nothing(
    live: tuple[AlertManager, MemoryStore, FrozenClock],
) -> None:
    manager, store, _ = live
    (open_incident,) = store.incidents(limit=10)
    before = snapshot(store)
    result = explain(failure(2), manager.policy, store, now=T0 + timedelta(minutes=1), state="memory")
    assert snapshot(store) == before
    assert result.incident is not None
    assert (result.incident.new, result.incident.id) == (False, open_incident.id)
    assert result.incident.failures == open_incident.failures + 1
    assert result.incident.dag_count == 2
    verdicts = {c.channel: c for c in result.channels}
    assert set(verdicts) == set(open_incident.announcements)
    # a minute after the announcement: Slack's message is edited in place, e-mail is folded in
    assert (verdicts["slack"].send, verdicts["slack"].action) == (True, "update")
    assert (verdicts["email"].send, verdicts["email"].reason) == (False, "correlated")
    # the manager, handling that same alert, decides the same on every channel
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(metrics, "_stats", lambda: None)
        live[2].advance(minutes=1)
        outcome = manager.handle(failure(2))
    assert outcome.incident is not None and outcome.incident.id == open_incident.id
    assert outcome.incident.failures == result.incident.failures
    decided = {c.channel: (c.decision.send, c.decision.reason.value) for c in outcome.channels}
    assert decided == {c.channel: (c.send, c.reason) for c in result.channels}
    # and right after that edit, another failure would be folded: the next edit is deferred
    again = explain(failure(3), manager.policy, store, now=live[2].now + timedelta(seconds=5))
    slack = next(c for c in again.channels if c.channel == "slack")
    assert (slack.send, slack.reason) == (False, "correlated")
    assert "deferred" in slack.detail


def test_after_the_correlation_window_a_new_incident(
    live: tuple[AlertManager, MemoryStore, FrozenClock],
) -> None:
    manager, store, _ = live
    later = T0 + manager.policy.incidents.window + timedelta(minutes=1)
    result = explain(failure(2), manager.policy, store, now=later)
    assert result.incident is not None and result.incident.new
    assert all(c.action == "announce" for c in result.channels)


def test_a_matching_silence_holds_every_channel(live: tuple[AlertManager, MemoryStore, FrozenClock]) -> None:
    manager, store, _ = live
    silence = manager.add_silence(
        dag_ids=["dag_*"], duration=timedelta(hours=1), author="ops", comment="db work"
    )
    result = explain(failure(3), manager.policy, store, now=T0 + timedelta(minutes=2))
    assert result.silence is not None and silence.id in result.silence
    assert result.channels and all(not c.send and c.reason == "silenced" for c in result.channels)


def test_a_retry_is_throttled_per_fingerprint_and_opens_no_incident() -> None:
    alert = failure(try_number=1, max_tries=3)
    result = explain(alert, AlertPolicy(), MemoryStore(), now=T0)
    assert result.final_try is False
    assert result.incident is None
    assert any("retry" in note for note in result.notes)


def test_a_policy_rule_shows_as_a_reason_and_a_rule() -> None:
    policy = AlertPolicy.from_dict(
        {
            "classification": {
                "rules": [
                    {"name": "payments", "severity": "critical", "match": {"dag_ids": ["payments_*"]}},
                ]
            }
        }
    )
    result = explain(failure(dag_id="payments_eu"), policy, MemoryStore(), now=T0)
    assert result.severity is Severity.CRITICAL
    assert "payments" in result.rules
    assert any("payments" in reason for reason in result.reasons)
