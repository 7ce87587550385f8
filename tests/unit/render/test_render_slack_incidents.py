"""Slack rendering of incident notifications: every action, limits, escaping, stable ids."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from airflow_alerting.incidents.model import Incident, IncidentMember, IncidentState
from airflow_alerting.model import (
    Alert,
    Classification,
    Decision,
    DecisionReason,
    Notification,
    NotificationAction,
    Severity,
    SuppressionSummary,
)
from airflow_alerting.render import text as t
from airflow_alerting.render.slack import (
    ACK_ACTION_ID,
    INCIDENT_ACTIONS_BLOCK_ID,
    INCIDENT_CONTEXT_BLOCK_ID,
    INCIDENT_DAGS_BLOCK_ID,
    INCIDENT_ERROR_BLOCK_ID,
    INCIDENT_EVENT_BLOCK_ID,
    INCIDENT_HEADER_BLOCK_ID,
    INCIDENT_REPLY_BLOCK_ID,
    INCIDENT_SUMMARY_BLOCK_ID,
    INCIDENT_TASKS_BLOCK_ID,
    INCIDENT_WHY_BLOCK_ID,
    MAX_BLOCKS,
    MAX_BUTTON_TEXT,
    MAX_HEADER,
    MAX_TEXT,
    RESOLVE_ACTION_ID,
    VIEW_LOG_ACTION_ID,
    SlackMessage,
    render_slack,
    render_slack_incident,
    render_slack_reply,
)
from airflow_alerting.testing.servers import slack_block_errors

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
INCIDENT_ID = "3f2a9c1e5b7d4a6f8e0c"
HOSTILE = "<!channel> <@U123> <!here|here> & <https://evil.example|click> *bold* ```fence``` :boom:"
SECRET_URI = "postgresql://etl:hunter2-SECRET@db.internal:5432/warehouse"


def outage(**overrides: Any) -> Incident:
    """One DB outage: 500 failures in 480 tasks across 20 DAGs (a sample of 50 members)."""
    members = tuple(
        IncidentMember(
            dag_id=f"dag_{i % 20:02d}",
            task_id=f"load_{i:03d}",
            failures=2 if i < 20 else 1,
            first_at=T0 + timedelta(seconds=i),
            last_at=T0 + timedelta(minutes=40) - timedelta(seconds=i),
            last_run_id="scheduled__2026-01-05T11:00:00+00:00",
        )
        for i in range(50)
    )
    fields: dict[str, Any] = {
        "id": INCIDENT_ID,
        "key": "exc:OperationalError:could not connect to server",
        "title": "OperationalError: could not connect to server: Connection refused",
        "severity": Severity.CRITICAL,
        "opened_at": T0,
        "last_seen_at": T0 + timedelta(minutes=40),
        "severity_reasons": (
            "exception OperationalError",
            "blast radius: 20 DAGs affected, raised to critical",
        ),
        "failures": 500,
        "members": members,
        "member_count": 480,
        "failing_count": 470,
        "task_count": 480,
        "dag_ids": tuple(f"dag_{i:02d}" for i in range(20)),
        "dag_count": 20,
    }
    fields.update(overrides)
    return Incident(**fields)


def notify(
    incident: Incident | None = None,
    action: NotificationAction = NotificationAction.ANNOUNCE,
    **alert: Any,
) -> Notification:
    fields: dict[str, Any] = {
        "dag_id": "dag_07",
        "task_id": "load_107",
        "run_id": "scheduled__2026-01-05T11:00:00+00:00",
        "exception_type": "sqlalchemy.exc.OperationalError",
        "message": "could not connect to server: Connection refused",
        "occurred_at": T0 + timedelta(minutes=40),
        **alert,
    }
    return Notification(
        alert=Alert(**fields),
        classification=Classification(Severity.HIGH, ("exception OperationalError",)),
        fingerprint="0123456789abcdef",
        channel="slack",
        decision=Decision(True, DecisionReason.FIRST),
        airflow_url="https://airflow.example/dags/dag_07/runs/x/tasks/load_107",
        incident=outage() if incident is None else incident,
        action=action,
    )


def acknowledged() -> Incident:
    return outage(
        state=IncidentState.ACKNOWLEDGED,
        acknowledged_at=T0 + timedelta(minutes=45),
        acknowledged_by="alice",
    )


def resolved() -> Incident:
    return outage(
        state=IncidentState.RESOLVED,
        failing_count=0,
        acknowledged_at=T0 + timedelta(minutes=45),
        acknowledged_by="alice",
        resolved_at=T0 + timedelta(hours=1, minutes=12),
        resolved_by="recovery",
    )


def strings(message: SlackMessage) -> Iterator[str]:
    """Every string Slack will display or interpret: the text and all text objects."""
    yield message.text

    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if node.get("type") in ("plain_text", "mrkdwn") and isinstance(node.get("text"), str):
                yield node["text"]
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list | tuple):
            for item in node:
                yield from walk(item)

    yield from walk(message.blocks)


def block(message: SlackMessage, block_id: str) -> dict[str, Any]:
    [found] = [b for b in message.blocks if b.get("block_id") == block_id]
    return found


def block_text(message: SlackMessage, block_id: str) -> str:
    return str(block(message, block_id)["text"]["text"])


def action_ids(message: SlackMessage) -> list[str]:
    actions = [b for b in message.blocks if b.get("block_id") == INCIDENT_ACTIONS_BLOCK_ID]
    return [e["action_id"] for b in actions for e in b["elements"]]


def assert_valid(message: SlackMessage) -> None:
    blocks = json.loads(json.dumps(message.blocks))
    assert slack_block_errors(blocks) == []
    assert 0 < len(blocks) <= MAX_BLOCKS
    assert 0 < len(message.text) <= MAX_TEXT
    ids = [b["block_id"] for b in blocks]
    assert len(ids) == len(set(ids)), ids
    actions = [e.get("action_id") for b in blocks if b["type"] == "actions" for e in b["elements"]]
    assert len(actions) == len(set(actions)), actions


ALL_ACTIONS = list(NotificationAction)
STATES = {"open": outage, "acknowledged": acknowledged, "resolved": resolved}


@pytest.mark.parametrize("action", ALL_ACTIONS, ids=lambda a: a.value)
@pytest.mark.parametrize("state", list(STATES))
def test_every_action_renders_valid_blocks(action: NotificationAction, state: str) -> None:
    n = notify(STATES[state](), action)
    for message in (render_slack(n), render_slack_incident(n), render_slack_reply(n)):
        assert_valid(message)


def test_announce_shows_the_incident() -> None:
    message = render_slack(notify())

    assert [b["block_id"] for b in message.blocks] == [
        INCIDENT_HEADER_BLOCK_ID,
        INCIDENT_SUMMARY_BLOCK_ID,
        INCIDENT_DAGS_BLOCK_ID,
        INCIDENT_TASKS_BLOCK_ID,
        INCIDENT_WHY_BLOCK_ID,
        INCIDENT_ERROR_BLOCK_ID,
        INCIDENT_CONTEXT_BLOCK_ID,
        INCIDENT_ACTIONS_BLOCK_ID,
    ]
    header = block(message, INCIDENT_HEADER_BLOCK_ID)["text"]["text"]
    assert header.startswith("\N{LARGE RED CIRCLE} CRITICAL \N{EM DASH} OperationalError: could not connect")
    summary = block(message, INCIDENT_SUMMARY_BLOCK_ID)
    assert summary["text"]["text"] == "*500 failures in 480 tasks across 20 DAGs*"
    fields = [f["text"] for f in summary["fields"]]
    assert fields == [
        "*Severity*\ncritical",
        "*State*\nopen, 470 of 480 task instances still failing",
        "*First seen*\n2026-01-05 12:00 UTC",
        "*Last seen*\n2026-01-05 12:40 UTC",
    ]
    dags = block_text(message, INCIDENT_DAGS_BLOCK_ID)
    assert dags == "*Affected DAGs*\n" + ", ".join(f"dag_{i:02d}" for i in range(10)) + " and 10 more"
    tasks = block_text(message, INCIDENT_TASKS_BLOCK_ID).splitlines()
    assert tasks[1] == "\N{BULLET} dag_00.load_000: 2 failures, last 2026-01-05 12:40 UTC"
    assert tasks[-1] == f"and {480 - t.INCIDENT_TASKS_SHOWN} more"
    assert len(tasks) == 1 + t.INCIDENT_TASKS_SHOWN + 1
    assert "blast radius: 20 DAGs affected" in block_text(message, INCIDENT_WHY_BLOCK_ID)
    error = block_text(message, INCIDENT_ERROR_BLOCK_ID)
    assert error.startswith("*Latest error*\n```sqlalchemy.exc.OperationalError: could not connect")
    assert "Incident 3f2a9c1e5b7d4a6f8e0c" in json.dumps(block(message, INCIDENT_CONTEXT_BLOCK_ID))
    assert message.text == (
        "[CRITICAL] OperationalError: could not connect to server: Connection refused"
        " \N{EM DASH} 500 failures in 480 tasks across 20 DAGs"
    )


def test_buttons_and_ids_are_stable() -> None:
    message = render_slack(notify())
    elements = block(message, INCIDENT_ACTIONS_BLOCK_ID)["elements"]

    assert [e["action_id"] for e in elements] == [ACK_ACTION_ID, RESOLVE_ACTION_ID, VIEW_LOG_ACTION_ID]
    assert ACK_ACTION_ID == "alerting_ack" and RESOLVE_ACTION_ID == "alerting_resolve"
    ack, resolve, link = elements
    assert ack["value"] == resolve["value"] == INCIDENT_ID
    assert [ack["text"]["text"], resolve["text"]["text"]] == ["Acknowledge", "Resolve"]
    assert link["url"].startswith("https://airflow.example/dags/dag_07")
    assert all(len(e["text"]["text"]) <= MAX_BUTTON_TEXT for e in elements)
    # the same incident renders the same ids whatever the action (the handler looks them up)
    for action in ALL_ACTIONS:
        assert render_slack_incident(notify(action=action)).blocks == render_slack_incident(notify()).blocks


def test_update_edits_to_the_current_state_without_an_event_line() -> None:
    grown = outage(failures=900, task_count=700, member_count=700, failing_count=650, dag_count=31)
    n = notify(grown, NotificationAction.UPDATE)
    message = render_slack(n)

    assert message == render_slack_incident(n)
    assert INCIDENT_EVENT_BLOCK_ID not in [b["block_id"] for b in message.blocks]
    assert block(message, INCIDENT_SUMMARY_BLOCK_ID)["text"]["text"] == (
        "*900 failures in 700 tasks across 31 DAGs*"
    )
    assert block_text(message, INCIDENT_DAGS_BLOCK_ID).endswith(" and 21 more")


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        (
            NotificationAction.ESCALATE,
            "Escalated to CRITICAL: blast radius: 20 DAGs affected, raised to critical."
            " Now 500 failures in 480 tasks across 20 DAGs.",
        ),
        (
            NotificationAction.RENOTIFY,
            "Still failing and not acknowledged: CRITICAL since 2026-01-05 12:00 UTC (failing for 40 min,"
            " last failure 2026-01-05 12:40 UTC). Now 500 failures in 480 tasks across 20 DAGs.",
        ),
    ],
)
def test_escalate_and_renotify_reply_and_lead_with_the_event(
    action: NotificationAction, expected: str
) -> None:
    n = notify(action=action)

    reply = render_slack_reply(n)
    assert block_text(reply, INCIDENT_REPLY_BLOCK_ID) == expected
    assert reply.text == expected
    # a channel that cannot thread posts the whole message, led by the same sentence
    standalone = render_slack(n)
    assert [b["block_id"] for b in standalone.blocks][:3] == [
        INCIDENT_HEADER_BLOCK_ID,
        INCIDENT_EVENT_BLOCK_ID,
        INCIDENT_SUMMARY_BLOCK_ID,
    ]
    assert block_text(standalone, INCIDENT_EVENT_BLOCK_ID) == expected
    # the edit shows the state only
    assert INCIDENT_EVENT_BLOCK_ID not in [b["block_id"] for b in render_slack_incident(n).blocks]


def test_resolved_incident() -> None:
    n = notify(resolved(), NotificationAction.RESOLVE, exception_type=None, message="")
    edit = render_slack_incident(n)

    header = block(edit, INCIDENT_HEADER_BLOCK_ID)["text"]["text"]
    assert header.startswith("\N{WHITE HEAVY CHECK MARK} RESOLVED \N{EM DASH} OperationalError")
    state = block(edit, INCIDENT_SUMMARY_BLOCK_ID)["fields"][1]["text"]
    assert state == (
        "*State*\nResolved at 2026-01-05 13:12 UTC after 1 h 12 min: every affected task recovered"
    )
    # nothing left to acknowledge or resolve; the link stays
    assert action_ids(edit) == [VIEW_LOG_ACTION_ID]
    assert INCIDENT_ERROR_BLOCK_ID not in [b["block_id"] for b in edit.blocks]
    assert block_text(render_slack_reply(n), INCIDENT_REPLY_BLOCK_ID) == (
        "Resolved at 2026-01-05 13:12 UTC after 1 h 12 min: every affected task recovered."
        " It was 500 failures in 480 tasks across 20 DAGs."
    )
    assert edit.text.startswith("[RESOLVED] OperationalError")


def test_resolved_by_hand_names_who() -> None:
    incident = replace(resolved(), resolved_by="bob")
    assert t.incident_state_text(incident) == "Resolved at 2026-01-05 13:12 UTC after 1 h 12 min by bob"


def test_acknowledged_incident() -> None:
    n = notify(acknowledged(), NotificationAction.ACKNOWLEDGE)
    edit = render_slack_incident(n)

    header = block(edit, INCIDENT_HEADER_BLOCK_ID)["text"]["text"]
    assert header.startswith("\N{LARGE RED CIRCLE} CRITICAL, ACKNOWLEDGED \N{EM DASH} OperationalError")
    state = block(edit, INCIDENT_SUMMARY_BLOCK_ID)["fields"][1]["text"]
    assert state == (
        "*State*\nAcknowledged by alice at 2026-01-05 12:45 UTC; 470 of 480 task instances still failing"
    )
    assert action_ids(edit) == [RESOLVE_ACTION_ID, VIEW_LOG_ACTION_ID]
    assert t.incident_reply_text(n) == "Acknowledged by alice at 2026-01-05 12:45 UTC."


def test_follow_up_says_what_was_folded_in() -> None:
    summary = SuppressionSummary(
        count=37,
        since=T0 + timedelta(minutes=10),
        until=T0 + timedelta(minutes=25),
        sources=tuple(f"dag_{i:02d}.load_{i:03d}" for i in range(12)),
    )
    n = replace(
        notify(action=NotificationAction.FOLLOW_UP),
        decision=Decision(True, DecisionReason.SUMMARY, summary),
    )
    event = block_text(render_slack(n), INCIDENT_EVENT_BLOCK_ID)

    assert event.startswith("37 more failures from 2026-01-05 12:10 UTC to 2026-01-05 12:25 UTC across: ")
    assert "dag_09.load_009 and 2 more." in event
    assert event.endswith("Now 500 failures in 480 tasks across 20 DAGs.")


def test_without_an_incident_the_old_message_is_rendered() -> None:
    n = replace(notify(), incident=None, action=NotificationAction.UPDATE)
    message = render_slack(n)

    assert message == render_slack_incident(n)
    assert message.blocks[0]["block_id"] == "alert_header"
    assert render_slack_reply(n).text == t.headline(n)


def hostile_incident() -> Incident:
    long = "x" * 20_000
    members = tuple(
        IncidentMember(dag_id=f"{HOSTILE} {long}", task_id=f"task_{i} {HOSTILE}", failures=3, last_at=T0)
        for i in range(50)
    )
    return outage(
        title=f"OperationalError: {HOSTILE} {SECRET_URI} {long}",
        severity_reasons=tuple(f"reason {i} {HOSTILE} {long}" for i in range(40)),
        members=members,
        dag_ids=tuple(f"dag_{i} {HOSTILE} {long}" for i in range(25)),
        state=IncidentState.ACKNOWLEDGED,
        acknowledged_by=f"{HOSTILE} {long}",
        acknowledged_at=T0,
        id=f"{INCIDENT_ID}&<x>",
    )


@pytest.mark.parametrize("action", ALL_ACTIONS, ids=lambda a: a.value)
def test_hostile_text_is_inert_and_limits_hold(action: NotificationAction) -> None:
    n = notify(hostile_incident(), action, message=f"{HOSTILE} {SECRET_URI} " + "y" * 50_000)
    for message in (render_slack(n), render_slack_incident(n), render_slack_reply(n)):
        assert_valid(message)
        for text in strings(message):
            assert "<!channel>" not in text and "<@U123>" not in text and "<!here" not in text
            assert "<https://evil" not in text
            assert "hunter2-SECRET" not in text
            assert len(text) <= MAX_TEXT
        header = [b for b in message.blocks if b["type"] == "header"]
        assert all(len(b["text"]["text"]) <= MAX_HEADER for b in header)
    dumped = json.dumps(render_slack(n).blocks)
    assert "&lt;!channel&gt;" in dumped and "&amp;" in dumped
    # the button value is the id as given, never escaped or cut
    values = {e.get("value") for e in block(render_slack(n), INCIDENT_ACTIONS_BLOCK_ID)["elements"]}
    assert f"{INCIDENT_ID}&<x>" in values


def test_a_fence_in_the_error_cannot_end_the_code_block() -> None:
    error = block_text(render_slack(notify(message="a ``` *b* ``` c")), INCIDENT_ERROR_BLOCK_ID)
    assert error.count("```") == 2


def test_text_helpers() -> None:
    incident = outage()

    assert t.incident_counts(incident) == "500 failures in 480 tasks across 20 DAGs"
    assert t.incident_dags_text(incident, shown=3) == "dag_00, dag_01, dag_02 and 17 more"
    assert t.incident_dags_text(outage(dag_ids=(), dag_count=0)) is None
    assert t.incident_tasks_text(incident, shown=2) == (
        "dag_00.load_000: 2 failures, last 2026-01-05 12:40 UTC\n"
        "dag_01.load_001: 2 failures, last 2026-01-05 12:39 UTC\n"
        "and 478 more"
    )
    assert t.incident_tasks_text(outage(members=(), member_count=0)) is None
    assert t.incident_state_text(incident) == "open, 470 of 480 task instances still failing"
    assert t.incident_seen_text(incident) == "first seen 2026-01-05 12:00 UTC, last seen 2026-01-05 12:40 UTC"
    assert t.incident_headline(incident) == (
        "[CRITICAL] OperationalError: could not connect to server: Connection refused"
    )
    assert t.incident_duration(timedelta(seconds=5)) == "1 min"
    assert t.incident_duration(timedelta(hours=3, minutes=5)) == "3 h 05 min"
    assert t.incident_duration(timedelta(days=3, hours=4)) == "3 d 4 h"
    recovered = replace(incident.members[0], recovered_at=T0 + timedelta(hours=1))
    assert t.incident_task_lines(replace(incident, members=(recovered,), member_count=1)) == [
        "dag_00.load_000: 2 failures, last 2026-01-05 12:40 UTC, recovered 2026-01-05 13:00 UTC"
    ]
    reasons = replace(incident, severity_reasons=tuple(f"r{i}" for i in range(8)))
    assert t.incident_reasons_text(reasons) == "…; r3; r4; r5; r6; r7"


def test_text_helpers_scrub_secrets_in_incident_fields() -> None:
    incident = outage(title=f"OperationalError: {SECRET_URI}", dag_ids=(f"dag {SECRET_URI}",))
    assert "hunter2" not in t.incident_title(incident)
    assert "hunter2" not in (t.incident_dags_text(incident) or "")
