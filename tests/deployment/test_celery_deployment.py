"""End to end on a real distributed deployment: one root cause, 24 simultaneous failures, one incident.

The module starts PostgreSQL-backed Airflow with the CeleryExecutor (API server, scheduler, DAG
processor, two Celery workers with 12 slots each, Redis broker) once, and triggers storm DAGs
through the REST API: 24 mapped instances wait for each other at a barrier and then raise the
same ``ConnectionError`` at once, so their failure callbacks race on one incident from two
workers (see ``dags/alerting_deploy_dags.py`` and ``harness.py``).  Each storm must make exactly
one Slack announcement (``chat.postMessage``); every later failure is folded into the incident
and shown by in-place edits (``chat.update`` of the same ``ts``, at most one per
``incidents.update_interval``; the held-back final state is a deferred edit that the
maintenance DAG delivers).  The policies keep the default escalation rule (3 runs within 1 h),
which must not fire for one run however many of its mapped instances fail.

Run just these: ``pytest -m deployment``; skip them: ``pytest -m "not deployment"``.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from deployment.harness import (
    MAINTENANCE_DAG,
    SQL_DAG,
    Deployment,
    StormResult,
    measure_variables_duplicates,
    top_level_posts,
)

if TYPE_CHECKING:
    from airflow_alerting.incidents.model import Incident
    from airflow_alerting.model import HistoryEntry
    from airflow_alerting.testing.servers import SlackServer

# the module's deployment starts inside the first test: its budget covers migrate and start-up
pytestmark = [pytest.mark.deployment, pytest.mark.timeout(900)]

#: storms measured with the Variables store (``bench/variables_duplicate_rate.py`` runs more)
VARIABLES_RUNS = int(os.environ.get("ALERTING_DEPLOY_VARIABLES_RUNS", "5"))
#: a failure held back from Slack: folded into the announced incident, or the announcement is in flight
HELD_BACK = {"correlated", "in_flight", "throttled"}
#: chat.update calls one storm may cost (inline edits at most every 30 s, plus the deferred one)
MAX_EDITS_PER_STORM = 4


def _check_storm(result: StormResult, deployment: Deployment) -> str:
    """What every storm must look like; return its one fingerprint."""
    assert result.state == "failed"
    assert sorted(m["map_index"] for m in result.markers) == list(range(deployment.width))
    assert result.workers == {"w1", "w2"}, "both Celery workers must have run instances"
    # one fingerprint for all mapped instances: map_index is not part of it
    assert len(result.fingerprints) == 1, result.fingerprints
    assert {m["severity"] for m in result.markers} == {"medium"}
    # the default escalation rule counts runs, not mapped instances: one run never escalates
    assert [m["escalation"] for m in result.markers] == [None] * deployment.width
    # medium goes to Slack only; nothing was routed anywhere else
    assert {c["channel"] for m in result.markers for c in m["channels"]} == {"slack"}
    # the barrier works: the instances failed at nearly the same moment
    assert result.failure_spread < 5.0, result.failure_spread
    (fingerprint,) = result.fingerprints
    return str(fingerprint)


def _history(deployment: Deployment, run_id: str) -> list[HistoryEntry]:
    return [e for e in deployment.sql_store().history(1000) if e.run_id == run_id]


def _the_incident(deployment: Deployment) -> Incident:
    incidents = deployment.sql_store().incidents(limit=1000)
    assert len(incidents) == 1, [(i.id, i.title, i.failures) for i in incidents]
    return incidents[0]


def _deferred_edits(deployment: Deployment, incident_id: str) -> list[dict[str, Any]]:
    return [i for i in deployment.sql_outbox() if i["incident"] == incident_id and i["reason"] == "summary"]


def _shows(message: dict[str, Any], failures: int) -> bool:
    """Whether a Slack message (as it reads now) reports ``failures`` failures, in text and blocks."""
    pattern = re.compile(rf"\b{failures} failures in\b")
    return bool(pattern.search(str(message.get("text")))) and bool(pattern.search(str(message.get("blocks"))))


def _check_edits(slack: SlackServer, ts: str) -> list[dict[str, Any]]:
    """Every chat.update so far targets the announced message; nothing else was posted."""
    edits = slack.edits
    assert {e["ts"] for e in edits} <= {ts}, [e["ts"] for e in edits]
    assert len(slack.messages) == 1 + len(edits), "only the announcement and its edits"
    assert slack.replies(ts) == [], "no thread replies: nothing escalated or resolved"
    return edits


def _deliver_final_state(deployment: Deployment, incident_id: str) -> tuple[str, Any]:
    """Wait until the incident's deferred edits are due, then run the maintenance DAG."""
    due = [i["next_attempt_at"].timestamp() for i in _deferred_edits(deployment, incident_id)]
    # the outbox compares with the database's clock, which is this machine's
    wait = max(due, default=0.0) - time.time() + 0.5
    print(f"\ndeferred edits: {len(due)}, last due in {wait:.1f}s")
    time.sleep(max(0.0, wait))
    return deployment.run_maintenance()


@pytest.fixture(scope="module")
def sql_storm(deployment: Deployment, slack: SlackServer) -> StormResult:
    """One storm of ``alerting_deploy_sql`` (SQL store), shared by the tests of its incident."""
    slack.clear()
    result = deployment.run_storm(SQL_DAG)
    print(
        f"\nSQL storm: {result.seconds:.1f}s from trigger to the last callback,"
        f" failures within {result.failure_spread:.2f}s,"
        f" callbacks done {result.callback_spread:.1f}s after the first failure"
    )
    return result


def test_sql_store_announces_one_incident_for_a_storm(
    deployment: Deployment, slack: SlackServer, sql_storm: StormResult
) -> None:
    result = sql_storm
    _check_storm(result, deployment)
    width = deployment.width

    # exactly one top-level Slack message, through the Web API
    (announcement,) = slack.top_level_messages
    assert announcement["via"] == "api"
    assert "ConnectionError" in announcement["text"]
    edits = _check_edits(slack, announcement["ts"])

    # one incident, exact: every failure joined it once
    assert len(result.incidents) == 1 and None not in result.incidents, result.incidents
    incident = _the_incident(deployment)
    assert result.incidents == {incident.id}
    assert incident.failures == width
    assert incident.member_count == width
    assert len(incident.members) == width
    assert sorted(m.map_index for m in incident.members) == list(range(width))
    assert all(m.failures == 1 for m in incident.members)
    assert incident.dag_count == 1 and incident.task_count == 1
    assert incident.is_open and incident.severity.label == "medium"
    assert incident.announcements["slack"].ref == announcement["ts"]
    # each callback saw the incident one failure bigger: the joins were serialised
    assert sorted(m["incident_failures"] for m in result.markers) == list(range(1, width + 1))

    # one announcement; every other decision is an edit or held back, never a second send
    decisions = result.decisions("slack")
    announced = [d for d in decisions if d["send"] and d["reason"] != "updated"]
    assert len(announced) == 1, announced
    assert announced[0]["reason"] == "first"
    assert announced[0]["delivered"] is True
    inline_edits = [d for d in decisions if d["send"] and d["reason"] == "updated"]
    assert all(d["delivered"] is True for d in inline_edits), inline_edits
    assert len(inline_edits) <= len(edits)
    held = [d["reason"] for d in decisions if not d["send"]]
    assert len(held) == width - 1 - len(inline_edits)
    assert set(held) <= HELD_BACK, held

    # the alert history: one entry per callback, one per mapped instance, plus delivered deferred edits
    history = _history(deployment, result.run_id)
    callbacks = [e for e in history if e.reason != "summary"]
    assert len(callbacks) == width
    assert len({e.source for e in callbacks}) == width  # dag.task[map_index] each
    assert {e.channel for e in history} == {"slack"}, "escalated to high: routed to email too"
    assert {e.severity for e in callbacks} == {"medium"}
    assert [(e.reason, e.sent, e.delivered) for e in callbacks].count(("first", True, True)) == 1
    assert {e.reason for e in callbacks if not e.sent} <= HELD_BACK
    assert {(e.sent, e.delivered) for e in history if e.reason in ("updated", "summary")} <= {(True, True)}

    # the claim is keyed by the incident, and the announcing sender confirmed it
    state = deployment.sql_store().channel_state(incident.id, "slack")
    assert state is not None and state.last_sent_at is not None
    assert state.claim_token is None, "the sender confirmed its claim"

    # the final state is on Slack already, or a deferred edit will write it
    if not _shows(slack.current(announcement["ts"]), width):
        assert _deferred_edits(deployment, incident.id), "held-back failures never reach the message"
    print(f"storm 1: {len(edits)} chat.update calls, held back: {sorted(held)}")


def test_maintenance_dag_writes_the_final_state(
    deployment: Deployment, slack: SlackServer, sql_storm: StormResult
) -> None:
    """The deferred edit of the storm's held-back failures is delivered by the maintenance DAG.

    ``alerting_deploy_maintenance`` is ``create_maintenance_dag(..., manager=<alerting_deploy_sql's
    manager>)``; its policy has ``incidents.update_interval: 30`` s.
    """
    _check_storm(sql_storm, deployment)
    incident = _the_incident(deployment)
    (announcement,) = slack.top_level_messages
    ts = announcement["ts"]

    state, counts = _deliver_final_state(deployment, incident.id)
    assert state == "success"
    run_id = deployment.last_maintenance_run
    assert run_id is not None
    assert deployment.task_states(MAINTENANCE_DAG, run_id) == {
        "redeliver_outbox": "success",
        "send_digest": "success",
        "expire_state": "success",
    }
    assert counts["still_failing"] == 0 and counts["delivered"] == counts["attempted"], counts
    # a medium incident is neither low nor silenced: no digest; an open incident is not expired
    assert deployment.xcom(MAINTENANCE_DAG, run_id, "send_digest") == {"channels": 0, "delivered": 0}
    assert deployment.xcom(MAINTENANCE_DAG, run_id, "expire_state") == {"records_expired": 0}

    # still one top-level message; it now shows every failure, through a few edits of its ts
    assert len(slack.top_level_messages) == 1, [m.get("text") for m in slack.top_level_messages]
    edits = _check_edits(slack, ts)
    current = slack.current(ts)
    print(f"after maintenance: {len(edits)} chat.update calls; message: {current['text']}")
    assert _shows(current, deployment.width), current["text"]
    assert 1 <= len(edits) <= MAX_EDITS_PER_STORM, len(edits)
    assert _shows(edits[-1], deployment.width), edits[-1]["text"]
    assert _deferred_edits(deployment, incident.id) == []
    assert _the_incident(deployment).failures == deployment.width

    # nothing left: a second maintenance run sends nothing
    before = len(slack.messages)
    state, counts = deployment.run_maintenance()
    assert state == "success"
    assert counts == {"attempted": 0, "delivered": 0, "still_failing": 0, "queued": 0}
    assert len(slack.messages) == before, [m.get("text") for m in slack.messages[before:]]
    assert deployment.api("GET", f"/api/v2/dags/{MAINTENANCE_DAG}/dagRuns")["total_entries"] == 2


def test_next_storm_joins_the_open_incident(
    deployment: Deployment, slack: SlackServer, sql_storm: StormResult
) -> None:
    """Another run of the same DAG, same cause, within 30 min: the same incident, edited, no new message.

    Two runs are two recurrences: still below the default escalation rule's 3 (``_check_storm``).
    """
    width = deployment.width
    first = _the_incident(deployment)
    (announcement,) = slack.top_level_messages
    ts = announcement["ts"]
    edits_before = len(slack.edits)

    second = deployment.run_storm(SQL_DAG)
    assert _check_storm(second, deployment) == _check_storm(sql_storm, deployment)
    assert second.incidents == {first.id}, "the second storm opened another incident"
    assert sorted(m["incident_failures"] for m in second.markers) == list(range(width + 1, 2 * width + 1))

    decisions = second.decisions("slack")
    assert [d for d in decisions if d["send"] and d["reason"] != "updated"] == [], "announced again"
    assert {d["reason"] for d in decisions if not d["send"]} <= {"correlated"}
    history = [e for e in _history(deployment, second.run_id) if e.reason != "summary"]
    assert len(history) == width
    assert all(e.reason in ("updated", "correlated") for e in history), {e.reason for e in history}

    incident = _the_incident(deployment)
    assert incident.id == first.id
    assert incident.failures == 2 * width
    assert incident.member_count == width and len(incident.members) == width
    assert all(m.failures == 2 and m.last_run_id == second.run_id for m in incident.members)

    state, _ = _deliver_final_state(deployment, incident.id)
    assert state == "success"
    assert len(slack.top_level_messages) == 1, [m.get("text") for m in slack.top_level_messages]
    edits = _check_edits(slack, ts)
    current = slack.current(ts)
    print(f"storm 2: {len(edits) - edits_before} chat.update calls; message: {current['text']}")
    assert 1 <= len(edits) - edits_before <= MAX_EDITS_PER_STORM
    assert _shows(current, 2 * width), current["text"]
    assert _deferred_edits(deployment, incident.id) == []


def test_variables_store_duplicate_rate(deployment: Deployment, slack: SlackServer, tmp_path: Path) -> None:
    """Best effort: measured and reported, only loosely bounded (the SQL store is the exact one).

    The report goes to the test's temporary directory; ``ALERTING_DEPLOYMENT_REPORT=<path>`` asks
    for it elsewhere (``bench/results/`` is written by the benchmarks only, when asked).
    """
    measured = measure_variables_duplicates(deployment, slack, VARIABLES_RUNS)
    report = measured.report()
    print("\n" + report)
    target = Path(os.environ.get("ALERTING_DEPLOYMENT_REPORT") or tmp_path / "variables_duplicate_rate.txt")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(report)
    assert all(count <= deployment.width for count in measured.messages_per_run), report
    # duplicates are a nuisance, a lost alert is an incident: every storm must reach Slack
    assert measured.lost_runs == 0, report
    assert top_level_posts(slack.messages) == slack.top_level_messages
