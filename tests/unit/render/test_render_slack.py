"""Slack Block Kit rendering: escaping, Slack's size limits, block structure."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from airflow_alerting.model import (
    Alert,
    AlertKind,
    Classification,
    Decision,
    DecisionReason,
    Notification,
    Severity,
    SuppressionSummary,
)
from airflow_alerting.render.slack import (
    ACTIONS_BLOCK_ID,
    ERROR_BLOCK_ID,
    MAX_BLOCKS,
    MAX_HEADER,
    MAX_TEXT,
    SlackMessage,
    escape,
    fit,
    render_slack,
)
from airflow_alerting.testing.servers import slack_block_errors

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def make(*, resolved: bool = False, reasons: tuple[str, ...] = ("final try",), **alert: Any) -> Notification:
    fields: dict[str, Any] = {
        "dag_id": "my_dag",
        "task_id": "load_warehouse",
        "run_id": "manual__1",
        "exception_type": "PermissionError",
        "message": "denied",
        "owner": "data-eng",
        "log_url": "https://airflow.example/log?dag_id=my_dag&task_id=load_warehouse",
        "occurred_at": NOW,
        **alert,
    }
    return Notification(
        alert=Alert(**fields),
        classification=Classification(Severity.HIGH, reasons),
        fingerprint="0123456789abcdef",
        channel="slack",
        decision=Decision(True, DecisionReason.FIRST),
        resolved=resolved,
    )


def text_objects(message: SlackMessage) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every Block Kit text object, with the type of the block it sits in."""

    def walk(node: Any, block_type: str) -> Iterator[tuple[str, dict[str, Any]]]:
        if isinstance(node, dict):
            if node.get("type") in ("plain_text", "mrkdwn") and "text" in node:
                yield block_type, node
            for value in node.values():
                yield from walk(value, block_type)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item, block_type)

    for block in message.blocks:
        yield from walk(block, block["type"])


def all_strings(message: SlackMessage) -> Iterator[str]:
    yield message.text
    for _, obj in text_objects(message):
        yield obj["text"]


HOSTILE = [
    pytest.param("<!channel> wake up", id="channel-ping"),
    pytest.param("<!here|here> and <!everyone>", id="here-ping"),
    pytest.param("ping <@U123ABC> and <#C0123|general>", id="user-mention"),
    pytest.param("<https://evil.example|click me>", id="disguised-link"),
    pytest.param("a & b &amp; c", id="ampersand"),
    pytest.param("<script>alert(1)</script>", id="html"),
]


@pytest.mark.parametrize("payload", HOSTILE)
@pytest.mark.parametrize(
    "field", ["message", "task_id", "run_id", "owner", "title", "exception_type", "reason"]
)
def test_untrusted_text_is_escaped_everywhere(payload: str, field: str) -> None:
    overrides: dict[str, Any] = {"reasons": (payload,)} if field == "reason" else {field: payload}
    n = make(**overrides)
    message = render_slack(n)
    rendered = list(all_strings(message))
    assert any("&lt;" in s or "&amp;" in s for s in rendered), rendered
    for s in rendered:
        assert "<" not in s and ">" not in s, s
        # a bare '&' would start an entity; every '&' we emit must be one of ours
        assert s.replace("&amp;", "").replace("&lt;", "").replace("&gt;", "").count("&") == 0, s


def test_suppressed_sources_are_escaped() -> None:
    n = make()
    summary = SuppressionSummary(count=2, sources=("<!channel>.x", "a&b.y"))
    n = replace(n, decision=replace(n.decision, suppressed=summary))
    context = next(b for b in render_slack(n).blocks if b["type"] == "context")
    texts = " ".join(e["text"] for e in context["elements"])
    assert "&lt;!channel&gt;.x" in texts and "a&amp;b.y" in texts


def test_no_parse_or_link_names() -> None:
    payload = json.dumps(render_slack(make(message="<!channel>")).blocks)
    assert "link_names" not in payload and '"parse"' not in payload


HUGE = "x" * 100_000


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"message": HUGE}, id="huge-message"),
        pytest.param({"message": "&" * 5000}, id="message-of-entities"),
        pytest.param({"message": "<" * 5000 + "\n" * 5000}, id="angles-and-newlines"),
        pytest.param({"title": HUGE}, id="huge-title"),
        pytest.param({"dag_id": "d" * 5000, "task_id": "t" * 5000}, id="huge-ids"),
        pytest.param({"owner": "&" * 5000, "run_id": "<" * 5000}, id="huge-fields"),
        pytest.param({"exception_type": "E" * 5000}, id="huge-type"),
        pytest.param({"reasons": tuple(f"reason {i} " * 50 for i in range(200))}, id="many-reasons"),
        pytest.param({"log_url": "https://airflow.example/" + "p" * 5000}, id="huge-url"),
    ],
)
def test_slack_limits(overrides: dict[str, Any]) -> None:
    message = render_slack(make(**overrides))
    assert len(message.blocks) <= MAX_BLOCKS
    assert 0 < len(message.text) <= MAX_TEXT
    for block_type, obj in text_objects(message):
        assert 0 < len(obj["text"]) <= MAX_TEXT
        if block_type == "header":
            assert len(obj["text"]) <= MAX_HEADER
    for block in message.blocks:
        for field in block.get("fields", []):
            assert len(field["text"]) <= 2000
        if block["type"] == "actions":
            for element in block["elements"]:
                assert len(element["text"]["text"]) <= 75
                assert len(element["url"]) <= 3000
    # the local Slack server validates blocks the way Slack does
    assert slack_block_errors(list(message.blocks)) == []


def test_block_layout() -> None:
    message = render_slack(make())
    assert [b["type"] for b in message.blocks] == ["header", "section", "section", "context", "actions"]
    assert message.text == "[HIGH] my_dag.load_warehouse failed: PermissionError"
    header = message.blocks[0]["text"]
    assert header == {"type": "plain_text", "text": message.text, "emoji": False}
    fields = [f["text"] for f in message.blocks[1]["fields"]]
    assert fields[:3] == ["*Severity*\nhigh", "*DAG*\nmy_dag", "*Task*\nload_warehouse"]
    error = next(b for b in message.blocks if b.get("block_id") == ERROR_BLOCK_ID)
    assert error["text"]["text"] == "```PermissionError: denied```"
    actions = next(b for b in message.blocks if b.get("block_id") == ACTIONS_BLOCK_ID)
    button = actions["elements"][0]
    assert button["url"] == "https://airflow.example/log?dag_id=my_dag&task_id=load_warehouse"
    assert button["text"]["text"] == "View log"
    assert button["action_id"]


def test_no_button_without_a_usable_url() -> None:
    for url in (None, "javascript:alert(1)", "https://airflow.example/" + "p" * 4000):
        types = [b["type"] for b in render_slack(make(log_url=url)).blocks]
        assert "actions" not in types


def test_resolved_message_has_no_error_block() -> None:
    message = render_slack(make(resolved=True, kind=AlertKind.TASK_SUCCESS))
    assert message.text == "[RESOLVED] my_dag.load_warehouse recovered"
    assert ERROR_BLOCK_ID not in [b.get("block_id") for b in message.blocks]


def test_code_fence_in_message_cannot_close_the_code_block() -> None:
    error = next(
        b
        for b in render_slack(make(message="a ``` *bold* ``` b")).blocks
        if b.get("block_id") == ERROR_BLOCK_ID
    )
    body = error["text"]["text"]
    assert body.startswith("```") and body.endswith("```")
    assert body[3:-3].count("```") == 0


@pytest.mark.parametrize(
    ("raw", "limit", "expected"),
    [
        ("a<b", 10, "a&lt;b"),
        ("&&&&", 10, "&amp;…"),
        ("&&&&", 11, "&amp;&amp;…"),
        ("<<<<", 6, "&lt;…"),
        ("<<<<", 4, "…"),
        ("abc", 9, "abc"),
    ],
)
def test_fit_never_splits_an_entity(raw: str, limit: int, expected: str) -> None:
    assert fit(raw, limit) == expected
    assert len(fit(raw, limit)) <= limit


def test_escape() -> None:
    assert escape("<!channel> & <@U1>") == "&lt;!channel&gt; &amp; &lt;@U1&gt;"


def test_suppression_and_escalation_in_context() -> None:
    n = make()
    summary = SuppressionSummary(
        count=3, since=NOW - timedelta(minutes=15), until=NOW, sources=("my_dag.load_warehouse",)
    )
    n = replace(n, decision=replace(n.decision, suppressed=summary))
    context = next(b for b in render_slack(n).blocks if b["type"] == "context")
    texts = [e["text"] for e in context["elements"]]
    assert "3 similar failures suppressed in the last 15 min across: my_dag.load_warehouse" in texts
    assert "Severity: high (final try)" in texts
