"""SlackServer conversations: thread replies, edits, and the views tests assert on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook import WebhookClient

from airflow_alerting.testing.servers import SlackServer

TOKEN = "xoxb-test-token"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # slack_sdk ignores NO_PROXY; a developer's proxy must not see 127.0.0.1 traffic
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def slack() -> Iterator[SlackServer]:
    with SlackServer(token=TOKEN) as server:
        yield server


@pytest.fixture
def client(slack: SlackServer) -> WebClient:
    return WebClient(base_url=slack.base_url, token=TOKEN)


def test_replies_answer_with_channel_id_and_ts(slack: SlackServer, client: WebClient) -> None:
    parent = client.chat_postMessage(channel="#alerts", text="parent")
    reply = client.chat_postMessage(channel=parent["channel"], text="reply", thread_ts=parent["ts"])

    assert reply["channel"] == parent["channel"] and reply["channel"].startswith("C")
    assert reply["ts"] != parent["ts"]
    assert reply["message"]["thread_ts"] == parent["ts"]
    # the channel may be named or given by ID: it is the same conversation
    assert client.chat_postMessage(channel="#alerts", text="again", thread_ts=parent["ts"])["ok"]


@pytest.mark.parametrize("where", ["unknown-ts", "other-channel", "reply-to-a-reply"])
def test_a_reply_needs_a_top_level_parent_in_its_channel(
    where: str, slack: SlackServer, client: WebClient
) -> None:
    parent = client.chat_postMessage(channel="#alerts", text="parent")
    reply = client.chat_postMessage(channel="#alerts", text="reply", thread_ts=parent["ts"])
    channel, thread_ts = {
        "unknown-ts": ("#alerts", "1.000001"),
        "other-channel": ("#other", parent["ts"]),
        "reply-to-a-reply": ("#alerts", reply["ts"]),
    }[where]

    with pytest.raises(SlackApiError) as excinfo:
        client.chat_postMessage(channel=channel, text="lost", thread_ts=thread_ts)

    assert excinfo.value.response["error"] == "thread_not_found"
    assert len(slack.messages) == 2


def test_conversation_views(slack: SlackServer, client: WebClient) -> None:
    first = client.chat_postMessage(channel="#alerts", text="first")
    second = client.chat_postMessage(channel="#alerts", text="second")
    reply = client.chat_postMessage(channel="#alerts", text="reply", thread_ts=first["ts"])
    client.chat_update(channel=first["channel"], ts=first["ts"], text="first, edited")
    client.chat_update(channel=reply["channel"], ts=reply["ts"], text="reply, edited")
    WebhookClient(slack.webhook_url).send(text="from a webhook")

    assert [m["text"] for m in slack.top_level_messages] == ["first", "second", "from a webhook"]
    assert [(e["ts"], e["text"]) for e in slack.edits] == [
        (first["ts"], "first, edited"),
        (reply["ts"], "reply, edited"),
    ]
    assert slack.replies(first["ts"]) == [
        {"channel": "#alerts", "text": "reply, edited", "thread_ts": first["ts"], "ts": reply["ts"]}
    ]
    assert slack.replies(second["ts"]) == []
    current = slack.current(first["ts"])
    assert current["text"] == "first, edited"
    assert (current["ts"], current["channel_id"]) == (first["ts"], first["channel"])
    # messages keeps recording every call in order
    assert [m["via"] for m in slack.messages] == ["api", "api", "api", "update", "update", "webhook"]


def test_views_are_copies_and_remote_state_survives_clear(slack: SlackServer, client: WebClient) -> None:
    parent = client.chat_postMessage(channel="#alerts", text="parent")
    client.chat_postMessage(channel="#alerts", text="reply", thread_ts=parent["ts"])
    slack.current(parent["ts"])["text"] = "mutated"
    assert slack.current(parent["ts"])["text"] == "parent"

    slack.clear()
    assert slack.top_level_messages == [] and slack.edits == []
    assert slack.current(parent["ts"])["text"] == "parent"
    assert len(slack.replies(parent["ts"])) == 1

    slack.reset()
    assert slack.replies(parent["ts"]) == []
    with pytest.raises(KeyError):
        slack.current(parent["ts"])
