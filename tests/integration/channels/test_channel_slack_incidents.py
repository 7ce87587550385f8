"""SlackChannel and incidents: announce, edit in place, thread replies, against the local Slack server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from airflow_alerting.channels import SlackChannel
from airflow_alerting.channels.base import POSTING_ACTIONS, channel_actions
from airflow_alerting.channels.slack import API_ACTIONS, WEBHOOK_ACTIONS
from airflow_alerting.incidents.model import Announcement, Incident, IncidentMember, IncidentState
from airflow_alerting.model import (
    Alert,
    Classification,
    Decision,
    DecisionReason,
    DeliveryResult,
    Notification,
    NotificationAction,
    Severity,
)
from airflow_alerting.render.slack import (
    ACK_ACTION_ID,
    INCIDENT_ACTIONS_BLOCK_ID,
    INCIDENT_HEADER_BLOCK_ID,
    INCIDENT_SUMMARY_BLOCK_ID,
    RESOLVE_ACTION_ID,
    render_slack,
    render_slack_incident,
)
from airflow_alerting.testing.servers import (
    SlackServer,
    connection_env,
    slack_api_connection,
    slack_webhook_connection,
)

pytestmark = pytest.mark.integration

# Unique connection ids: the session's shared fixtures define the *_default ones.
API_CONN = "itest_slack_incidents_api"
WEBHOOK_CONN = "itest_slack_incidents_webhook"
TOKEN = "xoxb-itest-0123456789-INCIDENTSECRET"
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
A = NotificationAction


def incident(failures: int = 1, dags: int = 1, **overrides: Any) -> Incident:
    members = tuple(
        IncidentMember(f"dag_{i % dags:02d}", f"load_{i:03d}", last_at=T0 + timedelta(minutes=i))
        for i in range(min(failures, 50))
    )
    fields: dict[str, Any] = {
        "id": "3f2a9c1e5b7d4a6f8e0c",
        "key": "exc:OperationalError:could not connect",
        "title": "OperationalError: could not connect to server <!channel>",
        "severity": Severity.HIGH,
        "opened_at": T0,
        "last_seen_at": T0 + timedelta(minutes=40),
        "failures": failures,
        "members": members,
        "member_count": failures,
        "failing_count": failures,
        "task_count": failures,
        "dag_ids": tuple(f"dag_{i:02d}" for i in range(min(dags, 25))),
        "dag_count": dags,
    }
    fields.update(overrides)
    return Incident(**fields)


def notification(
    action: NotificationAction,
    current: Incident,
    announcement: Announcement | None = None,
) -> Notification:
    return Notification(
        alert=Alert(
            dag_id="dag_00",
            task_id="load_000",
            exception_type="OperationalError",
            message="could not connect to server <@U123>",
            occurred_at=current.last_seen_at,
        ),
        classification=Classification(Severity.HIGH, ("exception OperationalError",)),
        fingerprint="0123456789abcdef",
        channel="slack",
        decision=Decision(True, DecisionReason.FIRST),
        airflow_url="https://airflow.example/dags/dag_00",
        incident=current,
        action=action,
        announcement=announcement,
    )


@pytest.fixture
def slack() -> Iterator[SlackServer]:
    with SlackServer(token=TOKEN) as server:
        yield server


@pytest.fixture
def api(slack: SlackServer, monkeypatch: pytest.MonkeyPatch) -> SlackServer:
    monkeypatch.setenv(*connection_env(API_CONN, slack_api_connection(slack)))
    monkeypatch.setenv(*connection_env(WEBHOOK_CONN, slack_webhook_connection(slack)))
    return slack


@pytest.fixture
def webhook_only(slack: SlackServer, monkeypatch: pytest.MonkeyPatch) -> SlackServer:
    monkeypatch.delenv(connection_env(API_CONN, {})[0], raising=False)
    monkeypatch.setenv(*connection_env(WEBHOOK_CONN, slack_webhook_connection(slack)))
    return slack


def channel(**kwargs: Any) -> SlackChannel:
    return SlackChannel(slack_conn_id=API_CONN, webhook_conn_id=WEBHOOK_CONN, channel="#incidents", **kwargs)


def header(message: dict[str, Any]) -> str:
    [found] = [b for b in message["blocks"] if b["block_id"] == INCIDENT_HEADER_BLOCK_ID]
    return str(found["text"]["text"])


def counts(message: dict[str, Any]) -> str:
    [found] = [b for b in message["blocks"] if b["block_id"] == INCIDENT_SUMMARY_BLOCK_ID]
    return str(found["text"]["text"])


def buttons(message: dict[str, Any]) -> list[str]:
    found = [b for b in message["blocks"] if b["block_id"] == INCIDENT_ACTIONS_BLOCK_ID]
    return [e["action_id"] for b in found for e in b["elements"]]


def assert_clean(result: DeliveryResult, server: SlackServer) -> None:
    assert TOKEN not in result.detail and "INCIDENTSECRET" not in result.detail
    posted = json.dumps(server.messages)
    assert "<!channel>" not in posted and "<@U123>" not in posted


def test_an_incident_lives_in_one_message_and_its_thread(api: SlackServer) -> None:
    slack_channel = channel()
    assert channel_actions(slack_channel) == API_ACTIONS

    # announce: one top-level message; its ts and channel ID come back for later edits
    first = incident()
    announced = slack_channel.deliver(notification(A.ANNOUNCE, first))
    assert announced.ok, announced
    [top] = api.top_level_messages
    ts = top["ts"]
    conversation = api.current(ts)["channel_id"]
    assert (announced.external_id, announced.conversation) == (ts, conversation)
    assert top["channel"] == "#incidents"
    assert top["blocks"] == json.loads(json.dumps(render_slack(notification(A.ANNOUNCE, first)).blocks))
    where = Announcement(channel="slack", ref=ts, conversation=conversation, severity=first.severity, at=T0)

    # update: the same message now tells the whole outage
    outage = incident(failures=500, dags=20, task_count=480, member_count=480, failing_count=470)
    updated = slack_channel.deliver(notification(A.UPDATE, outage, where))
    assert updated.ok, updated
    assert (updated.external_id, updated.conversation) == (ts, conversation)
    [edit] = api.edits
    assert (edit["channel"], edit["ts"]) == (conversation, ts)
    assert counts(api.current(ts)) == "*500 failures in 480 tasks across 20 DAGs*"
    assert len(api.top_level_messages) == 1 and api.replies(ts) == []

    # escalate: the message shows CRITICAL, and a reply in its thread says why (also to the channel)
    critical = replace(
        outage,
        severity=Severity.CRITICAL,
        severity_reasons=("blast radius: 20 DAGs affected, raised to critical",),
    )
    escalated = slack_channel.deliver(notification(A.ESCALATE, critical, where))
    assert escalated.ok, escalated
    assert len(api.edits) == 2
    assert "CRITICAL" in header(api.current(ts))
    [reply] = api.replies(ts)
    assert reply["text"].startswith("Escalated to CRITICAL: blast radius: 20 DAGs affected")
    assert reply["reply_broadcast"] is True
    assert (escalated.external_id, escalated.conversation) == (reply["ts"], conversation)

    # acknowledge: an edit only
    acked = replace(critical, state=IncidentState.ACKNOWLEDGED, acknowledged_by="alice", acknowledged_at=T0)
    assert slack_channel.deliver(notification(A.ACKNOWLEDGE, acked, where)).ok
    assert len(api.edits) == 3 and len(api.replies(ts)) == 1
    assert "ACKNOWLEDGED" in header(api.current(ts))
    assert buttons(api.current(ts)) == [RESOLVE_ACTION_ID, "airflow_alerting_view_log"]

    # resolve: the message says RESOLVED and loses its buttons, the thread says so
    done = replace(
        acked,
        state=IncidentState.RESOLVED,
        failing_count=0,
        resolved_at=T0 + timedelta(hours=1),
        resolved_by="recovery",
    )
    resolved = slack_channel.deliver(notification(A.RESOLVE, done, where))
    assert resolved.ok, resolved
    assert len(api.edits) == 4
    assert "RESOLVED" in header(api.current(ts))
    assert ACK_ACTION_ID not in buttons(api.current(ts)) and RESOLVE_ACTION_ID not in buttons(api.current(ts))
    last = api.replies(ts)[-1]
    assert last["text"].startswith("Resolved at 2026-01-05 13:00 UTC after 1 h 00 min")
    assert "reply_broadcast" not in last
    assert resolved.external_id == last["ts"]

    # through it all: one top-level message, one thread
    assert len(api.top_level_messages) == 1
    assert len(api.replies(ts)) == 2
    assert_clean(resolved, api)


def test_renotify_threads_a_reminder(api: SlackServer) -> None:
    slack_channel = channel()
    announced = slack_channel.deliver(notification(A.ANNOUNCE, incident()))
    where = Announcement("slack", announced.external_id, announced.conversation)

    result = slack_channel.deliver(notification(A.RENOTIFY, incident(severity=Severity.CRITICAL), where))

    assert result.ok, result
    [reply] = api.replies(str(announced.external_id))
    assert reply["text"].startswith("Still failing and not acknowledged: CRITICAL")
    assert reply["reply_broadcast"] is True


@pytest.mark.parametrize("action", list(NotificationAction), ids=lambda a: a.value)
def test_webhook_posts_every_action_top_level(action: NotificationAction, webhook_only: SlackServer) -> None:
    slack_channel = channel()
    assert slack_channel.actions == WEBHOOK_ACTIONS == POSTING_ACTIONS
    n = notification(action, incident(), Announcement("slack", None))

    result = slack_channel.deliver(n)

    assert result.ok, result
    assert result.external_id is None and result.conversation is None
    [posted] = webhook_only.messages
    assert posted["via"] == "webhook"
    assert posted["text"] == render_slack(n).text
    assert webhook_only.edits == []
    assert_clean(result, webhook_only)


@pytest.mark.parametrize("action", [A.UPDATE, A.ACKNOWLEDGE])
@pytest.mark.parametrize(
    "announcement",
    [None, Announcement("slack", None), Announcement("slack", "1.000001", None)],
    ids=["none", "no-ref", "no-conversation"],
)
def test_editing_without_an_announcement_fails_cleanly(
    action: NotificationAction, announcement: Announcement | None, api: SlackServer
) -> None:
    result = channel().deliver(notification(action, incident(), announcement))

    assert not result.ok and not result.retryable
    assert "no announced Slack message" in result.detail
    assert action.value in result.detail
    assert api.requests == []


@pytest.mark.parametrize("action", [A.ESCALATE, A.RENOTIFY, A.RESOLVE])
def test_threaded_actions_without_an_announcement_post_a_new_message(
    action: NotificationAction, api: SlackServer
) -> None:
    n = notification(action, incident())
    result = channel().deliver(n)

    assert result.ok, result
    [posted] = api.top_level_messages
    assert (
        result.external_id == posted["ts"] and result.conversation == api.current(posted["ts"])["channel_id"]
    )
    assert posted["blocks"] == json.loads(json.dumps(render_slack(n).blocks))
    assert api.edits == []


def test_a_failed_edit_does_not_stop_the_reply(api: SlackServer) -> None:
    slack_channel = channel()
    announced = slack_channel.deliver(notification(A.ANNOUNCE, incident()))
    where = Announcement("slack", announced.external_id, announced.conversation)
    api.slack_error_next("ratelimited")  # the chat.update

    result = slack_channel.deliver(notification(A.ESCALATE, incident(severity=Severity.CRITICAL), where))

    assert result.ok, result
    assert "edit failed" in result.detail and "ratelimited" in result.detail
    assert len(api.replies(str(announced.external_id))) == 1
    assert api.edits == []


def test_a_deleted_announcement_gets_a_new_message(api: SlackServer) -> None:
    slack_channel = channel()
    announced = slack_channel.deliver(notification(A.ANNOUNCE, incident()))
    api.reset()  # Slack forgot the message, as if someone deleted it
    where = Announcement("slack", announced.external_id, announced.conversation)
    n = notification(
        A.RESOLVE, incident(state=IncidentState.RESOLVED, resolved_at=T0, resolved_by="recovery")
    )

    result = slack_channel.deliver(replace(n, announcement=where))

    assert result.ok, result
    assert "announced message gone: message_not_found" in result.detail
    [posted] = api.top_level_messages
    assert posted["text"].startswith("[RESOLVED]")
    assert result.external_id == posted["ts"]


def test_a_failed_reply_is_the_delivery_result(api: SlackServer) -> None:
    slack_channel = channel()
    announced = slack_channel.deliver(notification(A.ANNOUNCE, incident()))
    where = Announcement("slack", announced.external_id, announced.conversation)
    api.fail_next(200, body={"ok": True})  # the edit "succeeds" without changing anything
    api.slack_error_next("internal_error")  # the reply

    result = slack_channel.deliver(notification(A.RESOLVE, incident(state=IncidentState.RESOLVED), where))

    assert not result.ok and result.retryable
    assert "internal_error" in result.detail and "in thread" in result.detail


def test_edit_renders_the_current_incident(api: SlackServer) -> None:
    slack_channel = channel()
    announced = slack_channel.deliver(notification(A.ANNOUNCE, incident()))
    where = Announcement("slack", announced.external_id, announced.conversation)
    n = notification(A.UPDATE, incident(failures=30, dags=3), where)

    assert slack_channel.deliver(n).ok
    [edit] = api.edits
    assert edit["blocks"] == json.loads(json.dumps(render_slack_incident(n).blocks))
    assert edit["text"] == render_slack_incident(n).text


# -- which actions the channel declares ---------------------------------------------------------


def test_actions_follow_the_connection_and_are_cached(
    slack: SlackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(*connection_env(API_CONN, slack_api_connection(slack)))
    slack_channel = channel()
    assert slack_channel.actions == API_ACTIONS
    assert A.FOLLOW_UP not in slack_channel.actions and A.UPDATE in slack_channel.actions

    # the choice is cached: no lookup per question ...
    monkeypatch.delenv(connection_env(API_CONN, {})[0])
    monkeypatch.setenv(*connection_env(WEBHOOK_CONN, slack_webhook_connection(slack)))
    assert slack_channel.actions == API_ACTIONS
    # ... until a delivery finds out what it really uses
    assert slack_channel.deliver(notification(A.ANNOUNCE, incident())).ok
    assert slack_channel.actions == WEBHOOK_ACTIONS


def test_neither_connection_declares_posting_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for conn_id in (API_CONN, WEBHOOK_CONN):
        monkeypatch.delenv(connection_env(conn_id, {})[0], raising=False)
    assert channel().actions == POSTING_ACTIONS


def test_a_failed_lookup_declares_posting_only_and_is_not_cached(
    api: SlackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    slack_channel = channel()

    def broken() -> None:
        raise RuntimeError("metadata database unavailable")

    slack_channel._api_client = broken  # type: ignore[assignment,method-assign]
    assert slack_channel.actions == POSTING_ACTIONS
    del slack_channel._api_client
    assert slack_channel.actions == API_ACTIONS


def test_a_malformed_api_connection_still_declares_the_api(
    slack: SlackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = {**slack_api_connection(slack), "extra": "{not json"}
    monkeypatch.setenv(*connection_env(API_CONN, conn))
    slack_channel = channel()
    # delivery refuses it rather than falling back to a webhook, so the API set is the truth
    assert slack_channel.actions == API_ACTIONS
