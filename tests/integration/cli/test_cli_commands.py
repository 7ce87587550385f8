"""``state``, ``silence``, ``incidents``, ``history`` and ``stats`` as real subprocesses.

The commands use a SQL state store (a SQLite file reached through an Airflow connection); the
test process writes an incident into the same store through the alert manager, announcing it on
the local Slack, PagerDuty and SMTP servers, so ``incidents ack|resolve`` must tell them.
The tests of this module run in order and share the store.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_subprocess import require_console_script, run

pytestmark = pytest.mark.integration

CONN_ID = "alerting_cli_state"


@pytest.fixture(scope="module")
def state_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli_state") / "state.db"


@pytest.fixture(scope="module")
def env(state_db: Path) -> dict[str, str]:
    """The subprocesses' [alerting] settings: the SQL store in ``state_db``."""
    return {
        "AIRFLOW__ALERTING__STATE_BACKEND": "sql",
        "AIRFLOW__ALERTING__SQL_CONN_ID": CONN_ID,
        f"AIRFLOW_CONN_{CONN_ID.upper()}": json.dumps({"conn_type": "sqlite", "host": str(state_db)}),
    }


@pytest.fixture(scope="module")
def incident(airflow_db: Path, protocol_servers: Any, state_db: Path, env: dict[str, str]) -> Iterator[Any]:
    """A critical incident, announced on every channel by a manager in this process."""
    require_console_script()
    ran = run("state", "init", env=env)
    assert ran.code == 0, ran.explain()
    assert ran.stdout.startswith(f"tables ready at sqlite:///{state_db}: alerting_channel_state")
    with sqlite3.connect(state_db) as db:
        tables = {r[0] for r in db.execute("select name from sqlite_master where type = 'table'")}
    assert {"alerting_incident_record", "alerting_silence", "alerting_history"} <= tables

    from airflow_alerting.config import AlertingSettings
    from airflow_alerting.manager import AlertManager
    from airflow_alerting.state.sql import SqlStore

    protocol_servers.clear()
    settings = AlertingSettings.from_mapping(
        {
            "state_backend": "sql",
            "sql_conn_id": CONN_ID,
            "email_to": "oncall@example.test",
            "slack_channel": "#itest",
            # first deliveries of a process import the hooks: generous on a loaded CI machine
            "callback_deadline_seconds": 40,
        }
    )
    manager = AlertManager(store=SqlStore(url=f"sqlite:///{state_db}"), settings=settings)
    outcome = manager.send_alert(
        "Warehouse unreachable",
        "connection refused by warehouse.internal:5432",
        severity="critical",
        dag_id="cli_orders",
        task_id="load",
    )
    assert outcome.incident is not None
    assert {c.channel for c in outcome.channels if c.delivery and c.delivery.ok} == {
        "email",
        "pagerduty",
        "slack",
    }
    yield outcome.incident


def test_silence_add_list_expire(airflow_db: Path, env: dict[str, str], incident: Any) -> None:
    added = run(
        "silence", "add", "--dag", "cli_*", "--severity", "high", "--duration", "2h",
        "--comment", "warehouse upgrade", "--author", "ops", "-o", "json", env=env,
    )  # fmt: skip
    assert added.code == 0, added.explain()
    silence = added.json()
    assert silence["dag_ids"] == ["cli_*"] and silence["severities"] == ["high"]
    assert silence["state"] == "active" and silence["source"] == "store" and silence["author"] == "ops"

    listed = run("silence", "list", env=env)
    assert listed.code == 0, listed.explain()
    assert (
        silence["id"] in listed.stdout and "warehouse upgrade" in listed.stdout and "active" in listed.stdout
    )

    expired = run("silence", "expire", silence["id"], "-o", "json", env=env)
    assert expired.code == 0, expired.explain()
    assert expired.json()["expired"] is True and expired.json()["id"] == silence["id"]


def test_incidents_list_show_ack_resolve(
    airflow_db: Path, protocol_servers: Any, env: dict[str, str], incident: Any
) -> None:
    listed = run("incidents", "list", "-o", "json", env=env)
    assert listed.code == 0, listed.explain()
    document = listed.json()
    assert document["state"] == "open"
    assert [i["id"] for i in document["incidents"]] == [incident.id]
    assert document["incidents"][0]["severity"] == "critical"
    assert set(document["incidents"][0]["announcements"]) == {"email", "pagerduty", "slack"}

    shown = run("incidents", "show", incident.id, env=env)
    assert shown.code == 0, shown.explain()
    assert f"Incident {incident.id}" in shown.stdout and "cli_orders.load" in shown.stdout
    assert "critical" in shown.stdout and "open" in shown.stdout

    protocol_servers.clear()
    acked = run("incidents", "ack", incident.id, "--by", "alice", "-o", "json", env=env)
    assert acked.code == 0, acked.explain()
    body = acked.json()
    assert body["incident"]["state"] == "acknowledged" and body["incident"]["acknowledged_by"] == "alice"
    assert {t["channel"]: t["ok"] for t in body["channels"]} == {"pagerduty": True, "slack": True}
    dedup_key = f"airflow-alerting/{incident.id}"
    assert protocol_servers.pagerduty.incident_state(dedup_key) == "acknowledged"
    assert len(protocol_servers.slack.edits) == 1

    resolved = run("incidents", "resolve", incident.id, "--by", "alice", env=env)
    assert resolved.code == 0, resolved.explain()
    assert f"Incident {incident.id} resolved by alice" in resolved.stdout
    assert protocol_servers.pagerduty.incident_state(dedup_key) == "resolved"


def test_history_and_stats(airflow_db: Path, env: dict[str, str], incident: Any) -> None:
    history = run("history", "--dag", "cli_orders", env=env)
    assert history.code == 0, history.explain()
    assert "Alert history" in history.stdout and "cli_orders.load" in history.stdout
    assert "pagerduty" in history.stdout and "resolved" in history.stdout

    stats = run("stats", "--since", "1h", "-o", "json", env=env)
    assert stats.code == 0, stats.explain()
    report = stats.json()
    assert report["backend"] == "sql" and report["complete"] is True
    assert {"volume", "noisiest", "suppression", "response_times", "trending", "since", "now"} <= set(report)
    assert set(report["noisiest"]) == {"dag", "task", "cause"}
    assert report["noisiest"]["dag"][0]["key"] == "cli_orders" and report["noisiest"]["dag"][0]["alerts"] == 1
    assert report["noisiest"]["task"][0]["key"] == "cli_orders.load"
    times = report["response_times"]
    assert times["incidents"] == 1 and times["acknowledged"] == 1 and times["resolved"] == 1
    assert times["mtta_seconds"] >= 0 and times["mttr_seconds"] >= times["mtta_seconds"]


def test_state_check_and_prune(airflow_db: Path, env: dict[str, str], incident: Any) -> None:
    checked = run("state", "check", "-o", "json", env=env)
    assert checked.code == 0, checked.explain()
    state = checked.json()
    assert state["backend"] == "sql" and state["ok"] is True
    assert state["incidents"] == {"open": 0, "acknowledged": 0, "resolved": 1}
    assert state["silences"]["expired"] == 1 and state["history_entries"] >= 3
    assert state["tables"]["alerting_incident_record"] == 1

    pruned = run("state", "prune", env=env)
    assert pruned.code == 0, pruned.explain()
    assert "Pruned the sql state store" in pruned.stdout and "records forgotten" in pruned.stdout
