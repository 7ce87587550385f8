"""Format-neutral rendering helpers: headlines, summary lines, truncation, secret scrubbing."""

from __future__ import annotations

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
    Escalation,
    Notification,
    Severity,
    SuppressionSummary,
)
from airflow_alerting.render import text
from airflow_alerting.render.redact import sanitize, scrub

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def make(
    severity: Severity = Severity.HIGH, *, resolved: bool = False, suppressed: int = 0, **alert: Any
) -> Notification:
    fields: dict[str, Any] = {
        "dag_id": "my_dag",
        "task_id": "load_warehouse",
        "run_id": "scheduled__2024-05-01",
        "try_number": 1,
        "max_tries": 0,
        "exception_type": "PermissionError",
        "message": "permission denied for table sales",
        "owner": "data-eng",
        "occurred_at": NOW,
        **alert,
    }
    summary = SuppressionSummary(
        count=suppressed,
        since=NOW - timedelta(minutes=15) if suppressed else None,
        until=NOW if suppressed else None,
        sources=("my_dag.load_warehouse", "other_dag.extract") if suppressed else (),
    )
    return Notification(
        alert=Alert(**fields),
        classification=Classification(severity, ("exception PermissionError", "final try")),
        fingerprint="0123456789abcdef",
        channel="slack",
        decision=Decision(True, DecisionReason.FIRST, suppressed=summary),
        resolved=resolved,
    )


@pytest.mark.parametrize(
    ("notification", "expected"),
    [
        pytest.param(make(), "[HIGH] my_dag.load_warehouse failed: PermissionError", id="final-failure"),
        pytest.param(
            make(Severity.LOW, try_number=1, max_tries=2, kind=AlertKind.TASK_RETRY),
            "[LOW] my_dag.load_warehouse failed: PermissionError, will retry (try 1 of 3)",
            id="retry",
        ),
        pytest.param(
            # Airflow has fired failure callbacks while retries remain (apache/airflow#65400)
            make(try_number=2, max_tries=3),
            "[HIGH] my_dag.load_warehouse failed: PermissionError, will retry (try 2 of 4)",
            id="failure-callback-with-retries-left",
        ),
        pytest.param(
            make(resolved=True, kind=AlertKind.TASK_SUCCESS),
            "[RESOLVED] my_dag.load_warehouse recovered",
            id="resolved",
        ),
        pytest.param(
            make(Severity.CRITICAL, task_id=None, kind=AlertKind.DAG_FAILURE, exception_type=None),
            "[CRITICAL] my_dag failed",
            id="dag-failure",
        ),
        pytest.param(
            make(map_index=3), "[HIGH] my_dag.load_warehouse[3] failed: PermissionError", id="mapped"
        ),
        pytest.param(
            make(exception_type="airflow.exceptions.AirflowException"),
            "[HIGH] my_dag.load_warehouse failed: AirflowException",
            id="qualified-type",
        ),
        pytest.param(
            make(kind=AlertKind.CUSTOM, title="Nightly load\nlate"),
            "[HIGH] Nightly load late",
            id="custom-title-one-line",
        ),
    ],
)
def test_headline(notification: Notification, expected: str) -> None:
    assert text.headline(notification) == expected


def test_summary_lines_carry_every_fact() -> None:
    n = replace(
        make(suppressed=3, log_url="https://airflow.example/log?ti=1"),
        escalation=Escalation(Severity.MEDIUM, Severity.HIGH, occurrences=5, window=timedelta(minutes=30)),
    )
    lines = text.summary_lines(n)
    joined = "\n".join(lines)
    assert "Severity: high (exception PermissionError; final try)" in lines
    assert "Escalated from medium to high: 5 occurrences within 30 min" in lines
    assert (
        "3 similar failures suppressed in the last 15 min across: my_dag.load_warehouse, other_dag.extract"
        in lines
    )
    assert "Error: PermissionError: permission denied for table sales" in lines
    for expected in ("DAG: my_dag", "Task: load_warehouse", "Run: scheduled__2024-05-01", "Try: 1"):
        assert expected in lines
    assert "Owner: data-eng" in lines
    assert "Link: https://airflow.example/log?ti=1" in lines
    assert lines[-1] == "Fingerprint: 0123456789abcdef"
    assert all("\n" not in line for line in lines), joined


def test_summary_lines_leave_out_what_is_absent() -> None:
    lines = text.summary_lines(make(owner=None, run_id=None, message="", exception_type=None))
    assert not any(line.startswith(("Owner", "Run", "Error", "Link")) for line in lines)
    assert not any("suppressed" in line for line in lines)


def test_suppressed_sources_are_bounded() -> None:
    n = make(suppressed=40)
    many = SuppressionSummary(count=40, sources=tuple(f"dag.t{i}" for i in range(25)))
    n = replace(n, decision=replace(n.decision, suppressed=many))
    assert text.suppressed_text(n) == (
        "40 similar failures suppressed across: "
        + ", ".join(f"dag.t{i}" for i in range(text.SOURCES_SHOWN))
        + " and 15 more"
    )


@pytest.mark.parametrize(
    ("value", "limit", "expected"),
    [
        ("short", 10, "short"),
        ("exactly10!", 10, "exactly10!"),
        ("this is too long", 10, "this is t…"),
        ("abc", 1, "…"),
        ("abc", 0, ""),
    ],
)
def test_truncate(value: str, limit: int, expected: str) -> None:
    assert text.truncate(value, limit) == expected
    assert len(text.truncate(value, limit)) <= limit


def test_error_text_is_capped() -> None:
    n = make(message="x" * 100_000)
    error = text.error_text(n, 500)
    assert error is not None
    assert len(error) == 500
    assert error.endswith(text.ELLIPSIS)


@pytest.mark.parametrize(
    ("airflow_url", "log_url", "expected", "label"),
    [
        (
            "https://af.example/dags/x",
            "https://af.example/log",
            "https://af.example/dags/x",
            "Open in Airflow",
        ),
        (None, "https://af.example/log", "https://af.example/log", "View log"),
        ("javascript:alert(1)", "https://af.example/log", "https://af.example/log", "View log"),
        (None, "/relative/log", None, "View log"),
        (None, None, None, "View log"),
    ],
)
def test_link_only_http_urls(
    airflow_url: str | None, log_url: str | None, expected: str | None, label: str
) -> None:
    n = replace(make(log_url=log_url), airflow_url=airflow_url)
    assert text.link(n) == expected
    assert text.link_label(n) == label


def test_recovery_time() -> None:
    n = replace(make(resolved=True, kind=AlertKind.TASK_SUCCESS), opened_at=NOW - timedelta(minutes=42))
    assert text.recovery_text(n) == "resolved after 42 min"
    assert "Resolved after 42 min" in text.summary_lines(n)


# -- secret scrubbing -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "secret", "kept"),
    [
        ("could not connect: postgresql://user:s3cret@db/x", "s3cret", "postgresql://user:***@db/x"),
        ("engine postgresql+psycopg2://airflow:pa55@db:5432/af", "pa55", "airflow:***@db:5432/af"),
        ("mysql://u:p@ss@h/db failed", "p@ss", "mysql://u:***@h/db"),
        ("redis://:r3dis@cache:6379/0", "r3dis", "redis://:***@cache"),
        ("invalid_auth for xoxb-123456789012-abcdefABCDEF", "123456789012-abcdefABCDEF", "xoxb-***"),
        ("xoxp-1-2-3-deadbeef rejected", "deadbeef", "xoxp-***"),
        (
            "POST https://hooks.slack.com/services/T000/B000/SeCrEt failed",
            "SeCrEt",
            "hooks.slack.com/services/***",
        ),
        ("login failed password=hunter22 user=bob", "hunter22", "user=bob"),
        ("GET /api?token=abc123&page=2", "abc123", "page=2"),
        ("DB_PASSWORD = 'quoted value' set", "quoted value", "DB_PASSWORD = ***"),
        ("{'user': 'bob', 'password': 'pw1234'}", "pw1234", "'user': 'bob'"),
        ('{"api_key": "k3y-value"}', "k3y-value", '"api_key": ***'),
        ("Authorization: Bearer abcdef1234567", "abcdef1234567", "Bearer ***"),
        ("aws AKIAABCDEFGHIJKLMNOP used", "AKIAABCDEFGHIJKLMNOP", "aws *** used"),
    ],
)
def test_scrub_removes_secrets(raw: str, secret: str, kept: str) -> None:
    for clean in (scrub(raw), sanitize(raw)):
        assert secret not in clean
        assert kept in clean


@pytest.mark.parametrize(
    "harmless",
    [
        "invalid token: expected int, got str",
        "https://example.com/path?page=2",
        "mail bob@example.com bounced",
        "passwords are hard",
        "x=1 y=2",
    ],
)
def test_scrub_leaves_ordinary_text_alone(harmless: str) -> None:
    assert scrub(harmless) == harmless


def test_scrub_is_linear_on_adversarial_input() -> None:
    import time

    started = time.perf_counter()
    for adversarial in ("_a" * 50_000, "-" * 100_000, "a:" * 50_000, "x://a:" + "b" * 100_000, "a=" * 50_000):
        scrub(adversarial)
    assert time.perf_counter() - started < 5


def test_sanitize_uses_airflows_masker() -> None:
    from airflow.sdk.log import mask_secret

    mask_secret("registered-secret-value")
    assert sanitize("boom registered-secret-value boom") == "boom *** boom"


def test_renderers_scrub_untrusted_fields() -> None:
    n = make(
        message="connect postgresql://user:s3cret@db/x with xoxb-111-222-abc",
        run_id="manual__token=zzz999",
        title="",
    )
    joined = "\n".join([text.headline(n), *text.summary_lines(n)])
    assert "s3cret" not in joined
    assert "111-222-abc" not in joined
    assert "zzz999" not in joined
