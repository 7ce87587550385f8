"""End to end: real Airflow (``dag.test()``), real SMTP, local Slack and PagerDuty servers.

Each test runs DAGs from ``tests/integration/dags`` whose tasks fail in one way each and
alert through ``AlertNotifier()`` with the default policy and the Variables state store.
The managers' clock is frozen per test (see the ``alerting`` fixture) so throttle windows
can be crossed without sleeping.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from typing import Any

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _frozen_default_clock(alerting: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Drive the managers' default clock from the harness's frozen clock.

    The ``alerting`` fixture patches ``manager.utcnow``, but managers built by
    ``shared_manager()`` read ``manager_base.utcnow`` now, so without this the clock is real.
    """
    from airflow_alerting import manager_base

    monkeypatch.setattr(manager_base, "utcnow", alerting.clock)


# (dag id, slack messages, emails, pagerduty events) for one failed run under the default matrix
SEVERITY_ROWS = [
    pytest.param("scenario_critical", 1, 1, 1, id="critical->email+slack+pagerduty"),
    pytest.param("scenario_high", 1, 1, 0, id="high->email+slack"),
    pytest.param("scenario_medium", 1, 0, 0, id="medium->slack"),
    pytest.param("scenario_retry_recovers", 0, 0, 0, id="low(retries)->nothing"),
]


def _counts(harness: Any) -> tuple[int, int, int]:
    servers = harness.servers
    return len(servers.slack.messages), len(servers.smtp.messages), len(servers.pagerduty.events)


def _slack_text(message: dict[str, Any]) -> str:
    return json.dumps(message.get("blocks", [])) + message.get("text", "")


def _mail_text(message: Any) -> str:
    return str(message.get_body(preferencelist=("plain",)).get_content())


@pytest.mark.parametrize(("dag_id", "slack", "email", "pagerduty"), SEVERITY_ROWS)
def test_each_severity_reaches_exactly_its_channels(
    alerting: Any, dag_id: str, slack: int, email: int, pagerduty: int
) -> None:
    alerting.run(dag_id)

    assert _counts(alerting) == (slack, email, pagerduty)
    if email:
        message = alerting.servers.smtp.messages[0]
        assert message["To"] == "oncall@example.test"
        assert message.get_content_type() == "multipart/alternative"
    if pagerduty:
        event = alerting.servers.pagerduty.events[0]
        assert event["event_action"] == "trigger"
        assert event["payload"]["severity"] == "critical"


def test_a_repeat_edits_the_incident_in_place_and_a_later_one_opens_a_new_incident(alerting: Any) -> None:
    slack = alerting.servers.slack
    alerting.run("scenario_medium")
    alerting.run("scenario_medium", advance=timedelta(minutes=5))

    # the repeat joins the incident: no second post, the announcement is edited to count it
    [announcement] = slack.top_level_messages
    [edit] = slack.edits
    assert edit["ts"] == announcement["ts"]
    assert "2 failures" in _slack_text(edit)
    assert "scenario_medium.validate" in _slack_text(edit)

    # more than the 30 min correlation window after its latest failure, and far enough from the
    # first run that escalation (3 in 1 h) stays out: a new incident, announced again
    alerting.run("scenario_medium", advance=timedelta(minutes=56))

    assert len(slack.top_level_messages) == 2
    assert len(slack.edits) == 1
    second = slack.top_level_messages[1]
    assert "1 failure" in _slack_text(second)
    assert "scenario_medium.validate" in _slack_text(second)
    reasons = [e.reason for e in alerting.history() if e.channel == "slack"]
    assert reasons == ["first", "updated", "first"]


def test_recurring_failure_escalates_after_three_occurrences(alerting: Any) -> None:
    for _ in range(3):
        alerting.run("scenario_medium", advance=timedelta(minutes=1))

    servers = alerting.servers
    # one incident: announced on slack, edited for the second failure; the third raises it
    # medium -> high, which tells slack once (edit + thread reply) and announces it on email
    [announcement] = servers.slack.top_level_messages
    assert [len(servers.smtp.messages), len(servers.pagerduty.events)] == [1, 0]
    [reply] = servers.slack.replies(announcement["ts"])
    assert "escalated from medium to high" in _slack_text(reply)
    assert "3 failures" in _slack_text(reply)
    assert "[HIGH]" in servers.slack.current(announcement["ts"])["text"]
    assert _mail_text(servers.smtp.messages[0]).startswith("[HIGH] ")
    reasons = [(e.channel, e.reason) for e in alerting.history() if e.sent]
    assert reasons == [("slack", "first"), ("slack", "updated"), ("email", "first"), ("slack", "escalated")]


def test_occurrences_spread_beyond_the_escalation_window_do_not_escalate(alerting: Any) -> None:
    # 40 min apart: beyond the 30 min correlation window too, so each failure is its own incident
    for _ in range(3):
        alerting.run("scenario_medium", advance=timedelta(minutes=40))

    assert _counts(alerting) == (3, 0, 0)
    assert len(alerting.servers.slack.top_level_messages) == 3
    assert {e.severity for e in alerting.history()} == {"medium"}


def test_retries_do_not_page_and_the_final_failure_alerts_once(alerting: Any) -> None:
    alerting.run("scenario_retries_exhausted")

    assert _counts(alerting) == (1, 0, 0)
    kinds = [(e.kind, e.severity, e.reason) for e in alerting.history()]
    assert kinds == [
        ("task_retry", "low", "not_routed"),
        ("task_retry", "low", "not_routed"),
        ("task_failure", "medium", "first"),
    ]
    assert "final failure after 3 tries" in alerting.history()[-1].why


def test_success_resolves_the_pagerduty_incident_and_tells_slack_and_email(alerting: Any) -> None:
    alerting.run("scenario_critical")
    dedup_key = alerting.servers.pagerduty.events[0]["dedup_key"]
    assert alerting.servers.pagerduty.incidents[dedup_key] == "triggered"

    alerting.run("scenario_critical", {"recover": True}, advance=timedelta(minutes=42))

    resolve = alerting.servers.pagerduty.events[-1]
    assert (resolve["event_action"], resolve["dedup_key"]) == ("resolve", dedup_key)
    assert dedup_key.startswith("airflow-alerting/")  # the incident's key, the same as the trigger's
    assert alerting.servers.pagerduty.incidents[dedup_key] == "resolved"
    # slack: the announcement is edited to RESOLVED and a reply in its thread says so
    slack = alerting.servers.slack
    [announcement] = slack.top_level_messages
    assert "RESOLVED" in slack.current(announcement["ts"])["text"]
    [reply] = slack.replies(announcement["ts"])
    assert "after 42 min" in _slack_text(reply)
    # email: the recovery is threaded on the announcement
    first_mail, recovery = alerting.servers.smtp.messages
    assert recovery["In-Reply-To"] == first_mail["Message-ID"]
    assert "recovered" in _mail_text(recovery)
    resolved = [e for e in alerting.history() if e.reason == "resolved"]
    assert sorted(e.channel for e in resolved) == ["email", "pagerduty", "slack"]
    # a resolution's notification is about the incident: its fingerprint is the incident id
    incident_id = dedup_key.removeprefix("airflow-alerting/")
    assert f"Fingerprint: {incident_id}" in _slack_text(slack.current(announcement["ts"]))

    alerting.run("scenario_critical", {"recover": True}, advance=timedelta(minutes=1))
    assert len(alerting.servers.pagerduty.events) == 2, "a second success has nothing left to resolve"


def test_shared_notifier_renders_each_tasks_own_title(alerting: Any) -> None:
    alerting.run("scenario_shared_title")

    titles = sorted(m["text"] for m in alerting.servers.slack.messages)
    assert len(titles) == 2
    assert "first_task broke in scenario_shared_title" in titles[0]
    assert "second_task broke in scenario_shared_title" in titles[1]
    shared = alerting.dag("scenario_shared_title").get_task("first_task").on_failure_callback[0]
    assert shared.title == "{{ ti.task_id }} broke in {{ dag.dag_id }}", (
        "the shared instance was rendered in place"
    )


def test_a_failing_channel_does_not_stop_the_others(alerting: Any) -> None:
    # 500 on every one of the default 3 delivery attempts
    alerting.servers.slack.fail_next(500, count=3)

    alerting.run("scenario_high")

    assert len(alerting.servers.smtp.messages) == 1
    assert alerting.servers.slack.messages == []
    slack_entries = [e for e in alerting.history() if e.channel == "slack"]
    assert [(e.sent, e.delivered) for e in slack_entries] == [(True, False)]
    assert len(alerting.servers.slack.requests) == 3, "a 500 is retried up to the attempt limit"

    # the undelivered announcement waits in the outbox and keeps its window (so it is not sent
    # twice); the next alert's callback redelivers it once Slack is back: nothing is lost, and it
    # is re-rendered with the incident as it is now (both failures)
    alerting.run("scenario_high", advance=timedelta(minutes=1))
    [message] = alerting.servers.slack.messages
    assert "scenario_high.load" in _slack_text(message)
    assert "2 failures" in message["text"]
    # held back while the announcement waits in the outbox: "throttled", since "correlated" means
    # folded into an incident already announced on the channel, and slack has no announcement yet
    slack_reasons = [(e.reason, e.delivered) for e in alerting.history() if e.channel == "slack"]
    assert slack_reasons == [("first", False), ("throttled", None), ("redelivered", True)]
    # email had announced the incident: the repeat is folded into it
    email_reasons = [e.reason for e in alerting.history() if e.channel == "email"]
    assert email_reasons == ["first", "correlated"]


def test_untrusted_text_is_escaped_and_secrets_never_leave(alerting: Any) -> None:
    alerting.run("scenario_secret_leak")

    slack_payload = json.dumps(alerting.servers.slack.messages)
    assert "Sup3rS3cret" not in slack_payload
    assert "<!channel>" not in slack_payload and "<@U123>" not in slack_payload
    assert "&lt;!channel&gt;" in slack_payload
    assert "{{ 7 * 7 }}" in slack_payload, "untrusted text is data: never rendered as a template"
    for request in alerting.servers.slack.requests:
        assert b"Sup3rS3cret" not in request.body


@pytest.mark.timeout(240)
def test_airflow_dags_test_cli_routes_and_exits_nonzero(alerting: Any, airflow_db: Any) -> None:
    env = {**os.environ, "AIRFLOW__ALERTING__STATE_BACKEND": "variables"}

    result = subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "test", "scenario_high"],
        env=env,
        capture_output=True,
        text=True,
        timeout=200,
    )

    assert result.returncode == 1, result.stderr[-2000:]
    assert len(alerting.servers.slack.messages) == 1
    assert len(alerting.servers.smtp.messages) == 1
    assert "scenario_high.load" in _slack_text(alerting.servers.slack.messages[0])


def test_a_shadowed_state_variable_never_suppresses_alerts(
    alerting: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from airflow_alerting.fingerprint import fingerprint
    from airflow_alerting.incidents.correlate import correlation_key
    from airflow_alerting.incidents.model import new_incident_id
    from airflow_alerting.model import Alert, Classification, Severity

    alert = Alert(
        dag_id="scenario_high",
        task_id="load",
        exception_type="PermissionError",
        message="permission denied for table analytics.orders",
    )
    fp = fingerprint(alert)
    # the throttle window of a channel lives in the claim document of the incident (keyed by the
    # incident id, which the first failure opens now) and occurrences in the fingerprint's
    cause, _ = correlation_key(alert, Classification(Severity.HIGH, ()), fp, ("cause",))
    incident_id = new_incident_id(cause, alerting.clock.now)
    # an operator's AIRFLOW_VAR_* (or a secrets backend) holding state documents that say
    # "just sent": Airflow reads them and silently ignores every write to the keys
    just_sent = {"last_sent_at": alerting.clock.now.isoformat(), "last_sent_severity": "high"}
    for claim_key in (fp, incident_id):
        key = f"alerting.fp.{claim_key}"
        frozen = {"fingerprint": key, "seen": [], "occurrences": [], "channels": {"slack": just_sent}}
        monkeypatch.setenv(f"AIRFLOW_VAR_{key.upper()}", json.dumps(frozen))

    with caplog.at_level("WARNING", logger="airflow_alerting"):
        alerting.run("scenario_high")
        alerting.run("scenario_high", advance=timedelta(minutes=1))

    slack = alerting.servers.slack
    assert len(slack.top_level_messages) == 1, "a frozen document must not throttle: fail open"
    # the second failure joins the (unshadowed) incident: it fails open too, as an edit
    slack_entries = [(e.reason, e.sent) for e in alerting.history() if e.channel == "slack"]
    assert [sent for _, sent in slack_entries] == [True, True]
    assert slack_entries[0][0] == "state_unavailable"
    assert "shadowed" in caplog.text
