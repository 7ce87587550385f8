"""Tests of the local protocol servers, driven by the real clients our channels use."""

from __future__ import annotations

import contextlib
import json
import smtplib
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from typing import Any

import pytest
import requests
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook import WebhookClient

from airflow_alerting.testing.servers import (
    PagerDutyServer,
    RecordedRequest,
    SlackServer,
    SmtpServer,
    connection_env,
    pagerduty_connection,
    slack_api_connection,
    slack_block_errors,
    slack_webhook_connection,
    smtp_connection,
)

TOKEN = "xoxb-test-token"
ROUTING_KEY = "R0UTINGKEY0000000000000000000000"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # slack_sdk routes every request through HTTP(S)_PROXY and ignores NO_PROXY, which
    # would send our 127.0.0.1 traffic to an external host.
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def slack() -> Iterator[SlackServer]:
    with SlackServer(token=TOKEN) as server:
        yield server


@pytest.fixture
def pagerduty() -> Iterator[PagerDutyServer]:
    with PagerDutyServer() as server:
        yield server


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server


def _client(server: SlackServer, **kwargs: Any) -> WebClient:
    return WebClient(base_url=server.base_url, token=TOKEN, **kwargs)


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _post_raw(url: str, body: bytes, content_type: str) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _trigger(summary: str = "task failed", **overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "payload": {"summary": summary, "source": "airflow", "severity": "error"},
    }
    event.update(overrides)
    return event


def _enqueue(server: PagerDutyServer, event: Any, **kwargs: Any) -> requests.Response:
    return requests.post(server.url + "/v2/enqueue", json=event, timeout=kwargs.pop("timeout", 5), **kwargs)


def _refuses_connections(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) != 0


# -- Slack Web API -----------------------------------------------------------------------


def test_post_message_records_args_and_answers_like_slack(slack: SlackServer) -> None:
    blocks = [{"type": "header", "text": {"type": "plain_text", "text": "Task failed"}}, _section("*x*")]

    response = _client(slack).chat_postMessage(channel="#alerts", text="fallback", blocks=blocks)

    assert response["ok"] is True
    assert response["channel"].startswith("C")
    assert response["message"]["blocks"] == blocks
    [message] = slack.messages
    assert message == {
        "channel": "#alerts",
        "text": "fallback",
        "blocks": blocks,
        "ts": response["ts"],
        "via": "api",
    }
    [request] = slack.requests
    assert request.path == "/api/chat.postMessage"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["content-type"].startswith("application/json")
    assert request.json == {"channel": "#alerts", "text": "fallback", "blocks": blocks}


def test_channel_ids_are_stable_and_ids_pass_through(slack: SlackServer) -> None:
    client = _client(slack)
    first = client.chat_postMessage(channel="#alerts", text="a")["channel"]
    assert client.chat_postMessage(channel="alerts", text="b")["channel"] == first
    assert client.chat_postMessage(channel="#other", text="c")["channel"] != first
    assert client.chat_postMessage(channel="C0123ABCDE", text="d")["channel"] == "C0123ABCDE"


def test_ts_values_are_unique_and_increasing(slack: SlackServer) -> None:
    client = _client(slack)
    stamps = [client.chat_postMessage(channel="#alerts", text=str(i))["ts"] for i in range(20)]

    assert len(set(stamps)) == len(stamps)
    assert [float(ts) for ts in stamps] == sorted(float(ts) for ts in stamps)


def test_chat_update_targets_a_posted_message(slack: SlackServer) -> None:
    client = _client(slack)
    posted = client.chat_postMessage(channel="#alerts", text="failing", thread_ts=None)
    slack.clear()

    updated = client.chat_update(channel=posted["channel"], ts=posted["ts"], text="resolved")

    assert updated["ts"] == posted["ts"]
    assert updated["message"]["text"] == "resolved"
    assert slack.messages == [
        {"channel": posted["channel"], "ts": posted["ts"], "text": "resolved", "via": "update"}
    ]
    with pytest.raises(SlackApiError) as excinfo:
        client.chat_update(channel=posted["channel"], ts="1.000001", text="nope")
    assert excinfo.value.response["error"] == "message_not_found"


def test_thread_replies_keep_thread_ts(slack: SlackServer) -> None:
    client = _client(slack)
    parent = client.chat_postMessage(channel="#alerts", text="parent")
    client.chat_postMessage(channel="#alerts", text="reply", thread_ts=parent["ts"])

    assert slack.wait_for_messages(2)[1]["thread_ts"] == parent["ts"]


def test_auth_test_and_token_checks(slack: SlackServer) -> None:
    assert _client(slack).auth_test()["user_id"] == "U0BOT"

    with pytest.raises(SlackApiError) as excinfo:
        WebClient(base_url=slack.base_url, token="xoxb-wrong").chat_postMessage(channel="#a", text="x")
    assert excinfo.value.response.status_code == 200
    assert excinfo.value.response["error"] == "invalid_auth"

    with pytest.raises(SlackApiError) as excinfo:
        WebClient(base_url=slack.base_url).chat_postMessage(channel="#a", text="x")
    assert excinfo.value.response["error"] == "not_authed"
    assert slack.messages == []


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        pytest.param(
            {"channel": "#a", "text": "x", "blocks": [_section("b")] * 51}, "invalid_blocks", id="51"
        ),
        pytest.param(
            {
                "channel": "#a",
                "blocks": [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}],
            },
            "invalid_blocks",
            id="long-header",
        ),
        pytest.param(
            {"channel": "#a", "blocks": [_section("s" * 3001)]}, "invalid_blocks", id="long-section"
        ),
        pytest.param({"channel": "#a", "blocks": "[not json"}, "invalid_blocks_format", id="blocks-not-json"),
        pytest.param({"channel": "#a", "text": ""}, "no_text", id="no-text"),
        pytest.param({"channel": "", "text": "x"}, "channel_not_found", id="no-channel"),
    ],
)
def test_post_message_validation(slack: SlackServer, kwargs: dict[str, Any], error: str) -> None:
    with pytest.raises(SlackApiError) as excinfo:
        _client(slack).chat_postMessage(**kwargs)

    assert excinfo.value.response.status_code == 200
    assert excinfo.value.response["error"] == error
    assert slack.messages == []


def test_invalid_blocks_answer_names_the_offending_field(slack: SlackServer) -> None:
    with pytest.raises(SlackApiError) as excinfo:
        _client(slack).chat_postMessage(channel="#a", text="x", blocks=[_section("ok"), _section("s" * 3001)])

    assert excinfo.value.response["errors"] == [
        "must be less than 3001 characters [json-pointer:/blocks/1/text/text]"
    ]


def test_block_validator_accepts_typical_alert_blocks() -> None:
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": "Task failed"}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": "*DAG*\netl"}] * 4},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "try 3 of 3"}]},
        {"type": "divider"},
        {
            "type": "actions",
            "elements": [
                {"type": "button", "text": {"type": "plain_text", "text": "Logs"}, "url": "http://x.test/l"}
            ],
        },
    ]
    assert slack_block_errors(blocks) == []
    assert slack_block_errors([{"type": "divider", "block_id": "a"}, {"type": "divider", "block_id": "a"}])


def test_unknown_method(slack: SlackServer) -> None:
    with pytest.raises(SlackApiError) as excinfo:
        _client(slack).api_call("conversations.list")
    assert excinfo.value.response["error"] == "unknown_method"


def test_form_posts_are_parsed_and_json_fields_decoded(slack: SlackServer) -> None:
    blocks = [_section("from a form")]
    response = requests.post(
        slack.base_url + "chat.postMessage",
        data={"token": TOKEN, "channel": "#alerts", "text": "t", "blocks": json.dumps(blocks)},
        timeout=5,
    )

    assert response.json()["ok"] is True
    assert slack.requests[0].json == {"token": TOKEN, "channel": "#alerts", "text": "t", "blocks": blocks}
    assert slack.messages[0]["blocks"] == blocks
    assert "token" not in slack.messages[0]


def test_multipart_form_posts_are_parsed(slack: SlackServer) -> None:
    # slack_sdk switches to multipart/form-data as soon as files are involved.
    blocks = [_section("multipart")]
    requests.post(
        slack.base_url + "chat.postMessage",
        headers={"Authorization": f"Bearer {TOKEN}"},
        files={"channel": (None, "#alerts"), "blocks": (None, json.dumps(blocks))},
        timeout=5,
    )

    assert slack.requests[0].headers["content-type"].startswith("multipart/form-data")
    assert slack.requests[0].json == {"channel": "#alerts", "blocks": blocks}
    assert slack.messages[0]["blocks"] == blocks


def test_slack_sdk_data_argument_sends_urlencoded_form(slack: SlackServer) -> None:
    _client(slack).api_call("chat.postMessage", data={"channel": "#alerts", "text": "form", "mrkdwn": False})

    assert slack.requests[0].headers["content-type"] == "application/x-www-form-urlencoded"
    # slack_sdk turns booleans into "1"/"0" in forms.
    assert slack.messages[0]["mrkdwn"] == "0"


def test_blocks_sent_as_json_string_inside_json_are_decoded(slack: SlackServer) -> None:
    # SlackNotifier json.dumps() its blocks and attachments even in a JSON body.
    _client(slack).api_call(
        "chat.postMessage", json={"channel": "#a", "text": "t", "blocks": "[]", "attachments": "[]"}
    )

    assert slack.messages[0]["blocks"] == []
    assert slack.messages[0]["attachments"] == []


# -- Slack webhooks ----------------------------------------------------------------------


def test_webhook_client_posts_are_recorded(slack: SlackServer) -> None:
    response = WebhookClient(slack.webhook_url).send(text="hook", blocks=[_section("b")])

    assert (response.status_code, response.body) == (200, "ok")
    assert slack.messages == [{"text": "hook", "blocks": [_section("b")], "via": "webhook"}]


@pytest.mark.parametrize(
    ("body", "status", "answer"),
    [
        (b"{not json", 400, "invalid_payload"),
        (b"[]", 400, "invalid_payload"),
        (b'{"blocks": []}', 400, "no_text"),
        (json.dumps({"text": "x", "blocks": [_section("b")] * 51}).encode(), 400, "invalid_blocks"),
    ],
)
def test_webhook_validation(slack: SlackServer, body: bytes, status: int, answer: str) -> None:
    assert _post_raw(slack.webhook_url, body, "application/json") == (status, answer)
    assert slack.messages == []


def test_unknown_webhook_path_is_no_service(slack: SlackServer) -> None:
    url = f"http://127.0.0.1:{slack.port}/services/only-one-segment"
    assert _post_raw(url, b'{"text": "x"}', "application/json") == (404, "no_service")


def test_legacy_form_webhook_payload(slack: SlackServer) -> None:
    body = "payload=" + urllib.request.quote(json.dumps({"text": "legacy"}))
    status, _ = _post_raw(slack.webhook_url, body.encode(), "application/x-www-form-urlencoded")

    assert status == 200
    assert slack.messages == [{"text": "legacy", "via": "webhook"}]


# -- Slack fault injection ---------------------------------------------------------------


def test_fail_next_answers_http_errors_in_order(slack: SlackServer) -> None:
    client = _client(slack)
    slack.fail_next(503, count=2)
    slack.slack_error_next("is_archived")

    errors = []
    for _ in range(3):
        with pytest.raises(SlackApiError) as excinfo:
            client.chat_postMessage(channel="#a", text="x")
        errors.append((excinfo.value.response.status_code, excinfo.value.response["error"]))

    assert errors == [(503, "internal_error"), (503, "internal_error"), (200, "is_archived")]
    assert client.chat_postMessage(channel="#a", text="x")["ok"] is True
    assert len(slack.requests) == 4
    assert len(slack.messages) == 1


def test_rate_limit_sets_retry_after(slack: SlackServer) -> None:
    slack.fail_next(429, retry_after=7)

    with pytest.raises(SlackApiError) as excinfo:
        _client(slack).chat_postMessage(channel="#a", text="x")

    assert excinfo.value.response.status_code == 429
    assert excinfo.value.response.headers["Retry-After"] == "7"
    assert excinfo.value.response["error"] == "ratelimited"


def test_fail_next_with_custom_body(slack: SlackServer) -> None:
    slack.fail_next(502, body="<html>bad gateway</html>")
    assert _post_raw(slack.webhook_url, b'{"text": "x"}', "application/json") == (
        502,
        "<html>bad gateway</html>",
    )


def test_webhook_faults_use_webhook_style_answers(slack: SlackServer) -> None:
    client = WebhookClient(slack.webhook_url)
    slack.slack_error_next("channel_is_archived")
    slack.fail_next(429, retry_after=0.2)

    archived = client.send(text="x")
    limited = client.send(text="x")

    assert (archived.status_code, archived.body) == (410, "channel_is_archived")
    assert (limited.status_code, limited.body) == (429, "rate_limited")
    assert limited.headers["Retry-After"] == "1"  # whole seconds, rounded up, as Slack sends


def test_stall_causes_client_read_timeout_after_the_post_happened(slack: SlackServer) -> None:
    slack.stall_next(5)
    started = time.monotonic()

    with pytest.raises(TimeoutError):
        _client(slack, timeout=0.3).chat_postMessage(channel="#a", text="slow")

    assert time.monotonic() - started < 2
    # Slack acted although the client saw a timeout; slack_sdk's default handler does not retry.
    assert len(slack.requests) == 1
    assert [m["text"] for m in slack.messages] == ["slow"]


def test_clear_drops_pending_faults(slack: SlackServer) -> None:
    slack.fail_next(500, count=3)
    slack.clear()
    assert _client(slack).chat_postMessage(channel="#a", text="x")["ok"] is True


def test_wait_for_messages_times_out_with_assertion(slack: SlackServer) -> None:
    with pytest.raises(AssertionError, match="expected at least 1 Slack messages"):
        slack.wait_for_messages(1, timeout=0.05)


def test_wait_for_messages_sees_posts_from_other_threads(slack: SlackServer) -> None:
    def post_later() -> None:
        time.sleep(0.1)
        _client(slack).chat_postMessage(channel="#a", text="later")

    thread = threading.Thread(target=post_later)
    thread.start()
    try:
        assert slack.wait_for_messages(1, timeout=5)[0]["text"] == "later"
    finally:
        thread.join()


# -- PagerDuty ---------------------------------------------------------------------------


def test_trigger_generates_dedup_key(pagerduty: PagerDutyServer) -> None:
    response = _enqueue(pagerduty, _trigger())

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "success"
    assert body["message"] == "Event processed"
    assert pagerduty.incidents == {body["dedup_key"]: "triggered"}
    assert pagerduty.events == [_trigger()]


def test_incident_lifecycle_respects_routing_key(pagerduty: PagerDutyServer) -> None:
    key = "dag/task/run"
    assert _enqueue(pagerduty, _trigger(dedup_key=key)).json()["dedup_key"] == key

    other_key = {"routing_key": "S" * 32, "dedup_key": key}
    assert _enqueue(pagerduty, {**other_key, "event_action": "resolve"}).status_code == 202
    assert pagerduty.incidents[key] == "triggered"

    same_key = {"routing_key": ROUTING_KEY, "dedup_key": key}
    _enqueue(pagerduty, {**same_key, "event_action": "acknowledge"})
    assert pagerduty.incidents[key] == "acknowledged"
    _enqueue(pagerduty, {**same_key, "event_action": "resolve"})
    assert pagerduty.incidents[key] == "resolved"
    # Acknowledging a resolved incident does nothing; a new trigger opens a new incident.
    _enqueue(pagerduty, {**same_key, "event_action": "acknowledge"})
    assert pagerduty.incidents[key] == "resolved"
    _enqueue(pagerduty, _trigger(dedup_key=key))
    assert pagerduty.incidents[key] == "triggered"
    assert len(pagerduty.wait_for_events(6)) == 6


def test_resolve_of_unknown_incident_is_accepted_and_ignored(pagerduty: PagerDutyServer) -> None:
    response = _enqueue(pagerduty, {"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": "x"})
    assert response.status_code == 202
    assert pagerduty.incidents == {}


@pytest.mark.parametrize(
    ("event", "mentions"),
    [
        pytest.param(_trigger(routing_key=""), "routing_key", id="empty-routing-key"),
        pytest.param({k: v for k, v in _trigger().items() if k != "routing_key"}, "routing_key", id="no-key"),
        pytest.param(_trigger(event_action="escalate"), "event_action", id="bad-action"),
        pytest.param(_trigger(payload={"source": "a", "severity": "error"}), "payload.summary", id="summary"),
        pytest.param(_trigger(payload={"summary": "a", "severity": "error"}), "payload.source", id="source"),
        pytest.param(_trigger(payload={"summary": "a", "source": "b"}), "payload.severity", id="no-severity"),
        pytest.param(
            _trigger(payload={"summary": "a", "source": "b", "severity": "fatal"}),
            "payload.severity",
            id="bad-severity",
        ),
        pytest.param(_trigger("s" * 1025), "payload.summary", id="long-summary"),
        pytest.param(_trigger(dedup_key="d" * 256), "dedup_key", id="long-dedup-key"),
        pytest.param(
            {"routing_key": ROUTING_KEY, "event_action": "resolve"}, "dedup_key", id="resolve-no-key"
        ),
        pytest.param(["not", "an", "object"], "JSON object", id="not-object"),
    ],
)
def test_invalid_events_are_rejected(pagerduty: PagerDutyServer, event: Any, mentions: str) -> None:
    response = _enqueue(pagerduty, event)

    assert response.status_code == 400
    body = response.json()
    assert body["status"] == "invalid event"
    assert any(mentions in error for error in body["errors"]), body["errors"]
    assert pagerduty.events == []


def test_limits_are_inclusive(pagerduty: PagerDutyServer) -> None:
    assert _enqueue(pagerduty, _trigger("s" * 1024, dedup_key="d" * 255)).status_code == 202


def test_non_json_body_is_rejected(pagerduty: PagerDutyServer) -> None:
    status, body = _post_raw(pagerduty.url + "/v2/enqueue", b"summary=x", "text/plain")
    assert status == 400
    assert json.loads(body)["status"] == "invalid event"


def test_pagerduty_rate_limit_and_errors(pagerduty: PagerDutyServer) -> None:
    pagerduty.fail_next(429, retry_after=3)
    pagerduty.fail_next(500, body={"custom": True})

    limited = _enqueue(pagerduty, _trigger())
    failed = _enqueue(pagerduty, _trigger())
    accepted = _enqueue(pagerduty, _trigger())

    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "3")
    assert limited.json()["status"] == "throttle event"
    assert (failed.status_code, failed.json()) == (500, {"custom": True})
    assert accepted.status_code == 202
    assert len(pagerduty.events) == 1
    assert [r.json["event_action"] for r in pagerduty.requests] == ["trigger"] * 3


def test_pagerduty_stall_causes_read_timeout(pagerduty: PagerDutyServer) -> None:
    pagerduty.stall_next(5)
    with pytest.raises(requests.exceptions.ReadTimeout):
        _enqueue(pagerduty, _trigger(), timeout=0.3)
    assert len(pagerduty.events) == 1


def test_pagerduty_unknown_path(pagerduty: PagerDutyServer) -> None:
    assert requests.post(pagerduty.url + "/v1/enqueue", json=_trigger(), timeout=5).status_code == 404


def test_reset_forgets_incidents_but_clear_keeps_them(pagerduty: PagerDutyServer) -> None:
    _enqueue(pagerduty, _trigger(dedup_key="k"))
    pagerduty.clear()
    assert (pagerduty.events, pagerduty.requests, pagerduty.incidents) == ([], [], {"k": "triggered"})
    pagerduty.reset()
    assert pagerduty.incidents == {}


# -- SMTP --------------------------------------------------------------------------------


def _email(subject: str = "Task failed", *, html: str | None = None) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = "airflow@example.test"
    message["To"] = "oncall@example.test"
    message.set_content("plain body")
    if html is not None:
        message.add_alternative(html, subtype="html")
    return message


def _smtp_client(server: SmtpServer) -> smtplib.SMTP:
    return smtplib.SMTP(server.host, server.port, local_hostname="localhost", timeout=5)


def test_smtp_plain_message(smtp: SmtpServer) -> None:
    with _smtp_client(smtp) as client:
        client.send_message(_email(), to_addrs=["oncall@example.test", "bcc@example.test"])

    [message] = smtp.wait_for_messages(1)
    assert message["Subject"] == "Task failed"
    assert message.get_content().strip() == "plain body"
    assert smtp.envelopes == [("airflow@example.test", ["oncall@example.test", "bcc@example.test"])]


def test_smtp_multipart_alternative(smtp: SmtpServer) -> None:
    with _smtp_client(smtp) as client:
        client.send_message(_email(html="<p>html <b>body</b></p>"))

    [message] = smtp.messages
    assert message.get_content_type() == "multipart/alternative"
    plain, html = message.get_body(("plain",)), message.get_body(("html",))
    assert plain is not None and html is not None
    assert plain.get_content().strip() == "plain body"
    assert html.get_content().strip() == "<p>html <b>body</b></p>"


@pytest.mark.parametrize(
    ("code", "text"), [(451, b"4.3.0 Try again later"), (550, b"5.7.1 Message rejected")]
)
def test_smtp_fail_next(smtp: SmtpServer, code: int, text: bytes) -> None:
    smtp.fail_next(code)
    with _smtp_client(smtp) as client:
        with pytest.raises(smtplib.SMTPDataError) as excinfo:
            client.send_message(_email("first"))
        assert (excinfo.value.smtp_code, excinfo.value.smtp_error) == (code, text)
        client.send_message(_email("second"))

    assert [message["Subject"] for message in smtp.messages] == ["second"]


def test_smtp_accepts_any_login(smtp: SmtpServer) -> None:
    with _smtp_client(smtp) as client:
        client.login("user", "secret")
        client.send_message(_email())
    assert len(smtp.messages) == 1


def test_smtp_fixed_port_can_be_reused(smtp: SmtpServer) -> None:
    port = smtp.port
    smtp.stop()
    with SmtpServer(port=port) as again, _smtp_client(again) as client:
        client.send_message(_email())
        assert again.port == port
        assert again.wait_for_messages(1)[0]["Subject"] == "Task failed"


def test_smtp_wait_times_out(smtp: SmtpServer) -> None:
    with pytest.raises(AssertionError, match="expected at least 1 emails"):
        smtp.wait_for_messages(1, timeout=0.05)


# -- Lifecycle ---------------------------------------------------------------------------


def test_servers_start_in_parallel_and_stop_without_leaks() -> None:
    threads_before = set(threading.enumerate())
    servers: list[SlackServer | PagerDutyServer | SmtpServer] = [
        kind() for kind in (SlackServer, PagerDutyServer, SmtpServer) for _ in range(3)
    ]
    with ThreadPoolExecutor(max_workers=len(servers)) as pool:
        list(pool.map(lambda server: server.start(), servers))
    ports = [server.port for server in servers]
    assert len(set(ports)) == len(ports)

    slack = servers[0]
    assert isinstance(slack, SlackServer)
    slack.stall_next(30)  # a request still stalled at stop() must not hold the thread
    with contextlib.suppress(requests.exceptions.ReadTimeout):
        requests.post(slack.base_url + "auth.test", timeout=0.2)

    started = time.monotonic()
    for server in servers:
        server.stop()
        server.stop()  # idempotent
    assert time.monotonic() - started < 3
    assert all(_refuses_connections(port) for port in ports)
    assert set(threading.enumerate()) - threads_before == set()


def test_port_and_urls_require_a_running_server() -> None:
    with pytest.raises(RuntimeError, match="not running"):
        _ = SlackServer().base_url
    with pytest.raises(RuntimeError, match="not running"):
        _ = SmtpServer().port


def test_start_twice_is_an_error(slack: SlackServer) -> None:
    with pytest.raises(RuntimeError, match="already running"):
        slack.start()


def test_recorded_request_is_frozen(slack: SlackServer) -> None:
    _client(slack).auth_test()
    request = slack.requests[0]
    assert isinstance(request, RecordedRequest)
    assert request.received_at <= time.time()
    with pytest.raises(AttributeError):
        request.path = "/elsewhere"  # type: ignore[misc]


# -- Airflow connections and the official hooks ------------------------------------------


def test_connection_helpers(slack: SlackServer, pagerduty: PagerDutyServer, smtp: SmtpServer) -> None:
    assert slack_api_connection(slack) == {
        "conn_type": "slack",
        "password": TOKEN,
        "extra": {"base_url": f"http://127.0.0.1:{slack.port}/api/"},
    }
    assert slack_webhook_connection(slack)["password"] == slack.webhook_url
    assert pagerduty_connection(pagerduty)["host"] == pagerduty.url
    assert len(ROUTING_KEY) == 32 and pagerduty_connection(pagerduty)["password"] == ROUTING_KEY
    assert smtp_connection(smtp)["port"] == smtp.port
    name, value = connection_env("my_conn", pagerduty_connection(pagerduty, "K"))
    assert name == "AIRFLOW_CONN_MY_CONN"
    assert json.loads(value)["password"] == "K"


@pytest.mark.integration  # importing Airflow alone takes 5-10 s
def test_official_slack_hooks(slack: SlackServer, monkeypatch: pytest.MonkeyPatch) -> None:
    slack_hooks = pytest.importorskip("airflow.providers.slack.hooks.slack")
    webhook_hooks = pytest.importorskip("airflow.providers.slack.hooks.slack_webhook")
    notifications = pytest.importorskip("airflow.providers.slack.notifications.slack")
    monkeypatch.setenv(*connection_env("alerts_slack_api", slack_api_connection(slack)))
    monkeypatch.setenv(*connection_env("alerts_slack_webhook", slack_webhook_connection(slack)))

    hook = slack_hooks.SlackHook(slack_conn_id="alerts_slack_api")
    assert hook.test_connection()[0] is True
    hook.client.chat_postMessage(channel="#alerts", text="from SlackHook")
    webhook_hooks.SlackWebhookHook(slack_webhook_conn_id="alerts_slack_webhook").send(
        text="from webhook hook"
    )
    notifications.SlackNotifier(
        slack_conn_id="alerts_slack_api", channel="#ops", text="from notifier"
    ).notify({})

    messages = slack.wait_for_messages(3)
    assert [(m["via"], m["text"]) for m in messages] == [
        ("api", "from SlackHook"),
        ("webhook", "from webhook hook"),
        ("api", "from notifier"),
    ]
    assert messages[2]["blocks"] == []  # the notifier sends json.dumps([]) strings


@pytest.mark.integration  # importing Airflow alone takes 5-10 s
def test_official_smtp_hook(smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch) -> None:
    smtp_hooks = pytest.importorskip("airflow.providers.smtp.hooks.smtp")
    monkeypatch.setenv(*connection_env("alerts_smtp", smtp_connection(smtp)))
    # SmtpHook retries every failure, permanent ones included, immediately.
    smtp.fail_next(550)

    with smtp_hooks.SmtpHook(smtp_conn_id="alerts_smtp") as hook:
        hook.send_email_smtp(to="oncall@example.test", subject="Task failed", html_content="<b>x</b>")

    [message] = smtp.wait_for_messages(1)
    assert message["Subject"] == "Task failed"
    assert smtp.envelopes == [("airflow@example.test", ["oncall@example.test"])]


@pytest.mark.integration  # importing Airflow alone takes 5-10 s
def test_pagerduty_connection_is_readable_by_airflow(
    pagerduty: PagerDutyServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    base_hook = pytest.importorskip("airflow.sdk").BaseHook
    monkeypatch.setenv(*connection_env("alerts_pagerduty", pagerduty_connection(pagerduty)))

    connection = base_hook.get_connection("alerts_pagerduty")

    assert (connection.conn_type, connection.host, connection.password) == (
        "pagerduty_events",
        pagerduty.url,
        ROUTING_KEY,
    )
