"""Incident lifecycle end to end: one announcement per channel, one resolution when all recover.

Real Airflow runs the DAGs of ``tests/integration/dags/incident_dags.py`` (critical via the
``tier:1`` tag, so Slack Web API, e-mail and PagerDuty are all routed) against the local
protocol servers; state lives in Airflow Variables (the default backend) so that runs in
separate processes (``airflow dags test``) share the incident.
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


def _dags_test(dag_id: str, conf: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``airflow dags test`` in a subprocess, as an operator would from a shell."""
    # the default backend, spelled out: a subprocess can only share the incident through the DB
    env = {**os.environ, "AIRFLOW__ALERTING__STATE_BACKEND": "variables"}
    command = [sys.executable, "-m", "airflow", "dags", "test", dag_id]
    if conf is not None:
        command += ["--conf", json.dumps(conf)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=200)


def _actions(pagerduty: Any) -> list[tuple[str, str]]:
    return [(e["event_action"], e["dedup_key"]) for e in pagerduty.events]


def _in_reply_to(message: Any) -> str:
    # a folded header keeps a leading space after parsing (see SmtpServer.thread)
    return str(message.get("In-Reply-To", "")).strip()


@pytest.mark.timeout(280)
def test_fail_then_recover_resolves_once_on_every_channel(alerting: Any) -> None:
    slack, pagerduty, smtp = alerting.servers.slack, alerting.servers.pagerduty, alerting.servers.smtp
    # clear() keeps remote state (PagerDuty incidents) by design; earlier tests' incidents are
    # never asserted on, so ask about this test's dedup_key only (incident_state, not incident_states)

    failed = _dags_test("incident_solo")
    assert failed.returncode == 1, failed.stderr[-2000:]

    assert [e["event_action"] for e in pagerduty.events] == ["trigger"]
    dedup_key = pagerduty.events[0]["dedup_key"]
    assert pagerduty.incident_state(dedup_key) == "triggered"
    (announcement,) = slack.top_level_messages
    ts = announcement["ts"]
    assert slack.edits == [] and slack.replies(ts) == []
    (alert_mail,) = smtp.messages
    message_id = str(alert_mail["Message-ID"]).strip()
    assert message_id

    recovered = _dags_test("incident_solo", {"recover": True})
    assert recovered.returncode == 0, recovered.stderr[-2000:]

    assert _actions(pagerduty) == [("trigger", dedup_key), ("resolve", dedup_key)]
    assert [o.effect for o in pagerduty.outcomes] == ["triggered", "resolved"]
    assert pagerduty.incident_state(dedup_key) == "resolved"
    # the resolution lives in the original conversation: no second top-level message
    assert [m["ts"] for m in slack.top_level_messages] == [ts]
    assert [e["ts"] for e in slack.edits] == [ts]
    assert len(slack.replies(ts)) == 1
    assert "RESOLVED" in slack.current(ts)["text"]
    assert len(smtp.messages) == 2
    recovery_mail = smtp.messages[1]
    assert _in_reply_to(recovery_mail) == message_id
    assert [str(m["Message-ID"]).strip() for m in smtp.thread(message_id)] == [
        message_id,
        str(recovery_mail["Message-ID"]).strip(),
    ]


def test_shared_incident_resolves_only_when_every_member_has_recovered(alerting: Any) -> None:
    slack, pagerduty, smtp = alerting.servers.slack, alerting.servers.pagerduty, alerting.servers.smtp

    # same cause, different host and port: one incident across two DAGs
    alerting.run("incident_dag_a")
    alerting.run("incident_dag_b", advance=timedelta(minutes=1))

    assert [e["event_action"] for e in pagerduty.events] == ["trigger"], "one page for one incident"
    dedup_key = pagerduty.events[0]["dedup_key"]
    (announcement,) = slack.top_level_messages
    ts = announcement["ts"]
    assert all(e["ts"] == ts for e in slack.edits), "later failures edit the announcement"
    assert len(smtp.messages) == 1
    message_id = str(smtp.messages[0]["Message-ID"]).strip()

    alerting.run("incident_dag_a", {"recover": True}, advance=timedelta(minutes=5))

    # dag_b still fails: nothing may claim the incident is over
    assert [e["event_action"] for e in pagerduty.events] == ["trigger"]
    assert pagerduty.incident_state(dedup_key) == "triggered"
    assert len(slack.top_level_messages) == 1
    assert slack.replies(ts) == []
    assert "RESOLVED" not in slack.current(ts)["text"]
    assert len(smtp.messages) == 1

    alerting.run("incident_dag_b", {"recover": True}, advance=timedelta(minutes=5))

    assert _actions(pagerduty) == [("trigger", dedup_key), ("resolve", dedup_key)]
    assert pagerduty.incident_state(dedup_key) == "resolved"
    assert len(slack.top_level_messages) == 1
    assert len(slack.replies(ts)) == 1
    assert "RESOLVED" in slack.current(ts)["text"]
    assert len(smtp.messages) == 2
    assert _in_reply_to(smtp.messages[1]) == message_id

    # a further success has nothing left to resolve
    alerting.run("incident_dag_a", {"recover": True}, advance=timedelta(minutes=1))
    assert len(pagerduty.events) == 2 and len(slack.replies(ts)) == 1 and len(smtp.messages) == 2
