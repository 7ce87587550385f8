"""``test-channel`` against the local Slack, PagerDuty and SMTP servers, as real subprocesses."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cli_subprocess import AIRFLOW, require_console_script, run

pytestmark = pytest.mark.integration

ROUTING_KEY = "R0UTINGKEYFROMTHEMETADATADB00000"


def _no_open_test_page(pagerduty: Any) -> None:
    incidents: dict[str, str] = pagerduty.incidents
    still_open = {k: v for k, v in incidents.items() if "test-channel" in k and v != "resolved"}
    assert not still_open, f"test incidents left open: {still_open}"


@pytest.fixture(scope="module")
def db_connection(airflow_db: Path, protocol_servers: Any) -> str:
    """A PagerDuty connection in the metadata DB, added the way an operator adds one."""
    conn_id = "alerting_cli_pagerduty_db"
    command = [str(AIRFLOW), "connections", "add", conn_id, "--conn-type", "pagerduty_events"]
    command += ["--conn-password", ROUTING_KEY, "--conn-host", protocol_servers.pagerduty.url]
    added = subprocess.run(
        command, capture_output=True, text=True, env=dict(os.environ), timeout=120, check=False
    )
    assert added.returncode == 0, added.stdout + added.stderr
    return conn_id


def test_airflow_alerting_test_channel_sends_through_every_channel(
    protocol_servers: Any, db_connection: str
) -> None:
    servers = protocol_servers
    servers.clear()
    conn_id = db_connection
    ran = run("test-channel", airflow=True, env={"AIRFLOW__ALERTING__PAGERDUTY_CONN_ID": conn_id})

    assert ran.code == 0, ran.explain()
    rows = [line for line in ran.stdout.splitlines() if line.startswith("│")]
    assert len(rows) == 3 and all(" ok " in row for row in rows), ran.stdout
    assert conn_id in ran.stdout and "resolved" in ran.stdout
    slack = servers.slack.messages
    assert len(slack) == 1 and "[TEST]" in slack[0]["text"] and slack[0]["channel"] == "#itest"
    mails = servers.smtp.messages
    assert len(mails) == 1 and "[TEST]" in mails[0]["Subject"]
    events = servers.pagerduty.events
    assert [e["event_action"] for e in events] == ["trigger", "resolve"]
    assert {e["routing_key"] for e in events} == {ROUTING_KEY}
    assert events[0]["dedup_key"] == events[1]["dedup_key"]
    assert servers.pagerduty.incident_state(events[0]["dedup_key"]) == "resolved"
    _no_open_test_page(servers.pagerduty)


def test_failures_name_the_connection_and_the_fix_and_still_resolve_pagerduty(
    protocol_servers: Any, db_connection: str
) -> None:
    require_console_script()
    servers = protocol_servers
    servers.clear()
    servers.pagerduty.fail_next(500)

    ran = run(
        "test-channel",
        "-o",
        "json",
        env={
            "AIRFLOW__ALERTING__SLACK_CONN_ID": "cli_missing_slack",
            "AIRFLOW__ALERTING__SLACK_WEBHOOK_CONN_ID": "cli_missing_webhook",
            # a connection from the metadata DB makes Airflow log a warning: it must not reach stdout
            "AIRFLOW__ALERTING__PAGERDUTY_CONN_ID": db_connection,
        },
    )

    assert ran.code == 1, ran.explain()
    document = ran.json()
    assert set(document) == {"ok", "timeout_seconds", "channels"} and document["ok"] is False
    assert document["timeout_seconds"] == 10.0  # [alerting] delivery_timeout_seconds
    checks = {c["channel"]: c for c in document["channels"]}
    assert set(checks) == {"email", "pagerduty", "slack"}
    for check in checks.values():
        assert set(check) == {
            "channel",
            "type",
            "connection",
            "ok",
            "detail",
            "fix",
            "seconds",
            "resolved",
            "dedup_key",
        }
    assert checks["email"]["ok"] is True and checks["email"]["fix"] == ""
    slack = checks["slack"]
    assert slack["ok"] is False
    assert "'cli_missing_slack'" in slack["detail"] and "'cli_missing_webhook'" in slack["detail"]
    assert "airflow connections add cli_missing_slack --conn-type slack" in slack["fix"]
    pagerduty = checks["pagerduty"]
    assert pagerduty["ok"] is False and "HTTP 500" in pagerduty["detail"]
    assert db_connection in pagerduty["fix"]
    # the trigger failed with a 500, which PagerDuty may have acted on: it is resolved anyway
    assert pagerduty["resolved"] is True
    resolves = servers.pagerduty.events_for(pagerduty["dedup_key"])
    assert [e["event_action"] for e in resolves] == ["resolve"]
    _no_open_test_page(servers.pagerduty)
    assert servers.slack.messages == []

    unknown = run("test-channel", "slack", "nope")
    assert unknown.code == 2, unknown.explain()
    assert "argument NAME: unknown channel 'nope'" in unknown.stderr
    assert unknown.stdout == ""


_HANGING_BACKEND = '''
import threading
from airflow.secrets import BaseSecretsBackend


class HangingBackend(BaseSecretsBackend):
    """A secrets backend that never answers a connection look-up."""

    def get_conn_value(self, conn_id):
        threading.Event().wait(600)

    def get_variable(self, key):
        return None
'''


def test_a_connection_look_up_that_never_answers_is_bounded_by_the_timeout(tmp_path: Path) -> None:
    (tmp_path / "hanging_secrets.py").write_text(_HANGING_BACKEND)
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH", "")) if p)
    env = {"PYTHONPATH": path, "AIRFLOW__SECRETS__BACKEND": "hanging_secrets.HangingBackend"}

    ran = run("test-channel", "slack", "--timeout", "2", "-o", "json", env=env, timeout=90)

    assert ran.code == 1, ran.explain()
    check = __import__("json").loads(ran.stdout)["channels"][0]
    assert check["ok"] is False
    assert "connection look-up" in check["detail"] and "within 2s" in check["detail"]
    assert check["seconds"] < 60  # bounded, not the backend's 600 s (a generous, non-timing bound)
