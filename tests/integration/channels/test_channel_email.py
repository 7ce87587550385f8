"""EmailChannel end to end: the official SmtpHook against a real (aiosmtpd) SMTP server."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest

from airflow_alerting.channels import EmailChannel
from airflow_alerting.channels.email import FINGERPRINT_HEADER, thread_id
from airflow_alerting.model import (
    Alert,
    Classification,
    Decision,
    DecisionReason,
    Notification,
    Severity,
)
from airflow_alerting.render.email import render_email
from airflow_alerting.testing.servers import SmtpServer, connection_env, smtp_connection

pytestmark = pytest.mark.integration

CONN = "itest_channel_smtp"
PASSWORD = "smtp-S3CRET-password"
TO = ("oncall@example.test", "data-eng@example.test")


def notification(run_id: str = "manual__1") -> Notification:
    return Notification(
        alert=Alert(
            dag_id="my_dag",
            task_id="load_warehouse",
            run_id=run_id,
            exception_type="PermissionError",
            message="permission denied for table sales <script>alert(1)</script> {{ 7*7 }}",
            log_url="https://airflow.example/log?ti=1",
            occurred_at=datetime(2024, 5, 1, 12, tzinfo=timezone.utc),
        ),
        classification=Classification(Severity.HIGH, ("final try",)),
        fingerprint="0123456789abcdef",
        channel="email",
        decision=Decision(True, DecisionReason.FIRST),
    )


@pytest.fixture
def smtp(monkeypatch: pytest.MonkeyPatch) -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        # Login and password exercise the hook's AUTH path (the local server accepts any).
        conn = {**smtp_connection(server), "login": "airflow", "password": PASSWORD}
        monkeypatch.setenv(*connection_env(CONN, conn))
        yield server


def channel(**kwargs: Any) -> EmailChannel:
    return EmailChannel(smtp_conn_id=CONN, **{"to": TO, **kwargs})


def test_delivers_multipart_alternative(smtp: SmtpServer) -> None:
    n = notification()
    result = channel().deliver(n)

    assert result.ok, result
    (message,) = smtp.wait_for_messages(1)
    content = render_email(n)
    assert message.get_content_type() == "multipart/alternative"
    assert message["Subject"] == content.subject
    assert message["From"] == "airflow@example.test"
    assert [a.strip() for a in str(message["To"]).split(",")] == list(TO)
    assert smtp.envelopes == [("airflow@example.test", list(TO))]
    parts = {part.get_content_type(): part for part in message.iter_parts()}
    assert set(parts) == {"text/plain", "text/html"}
    assert parts["text/plain"].get_content().replace("\r\n", "\n") == content.text
    assert parts["text/html"].get_content().replace("\r\n", "\n") == content.html
    assert "&lt;script&gt;" in content.html and "{{ 7*7 }}" in content.html
    assert message[FINGERPRINT_HEADER] == "0123456789abcdef"
    assert message["References"] == message["In-Reply-To"] == thread_id("0123456789abcdef")
    assert message["Auto-Submitted"] == "auto-generated"
    assert result.external_id == message["Message-ID"]
    assert PASSWORD not in result.detail


def test_occurrences_share_subject_and_thread(smtp: SmtpServer) -> None:
    assert channel().deliver(notification("run_1")).ok
    assert channel().deliver(notification("run_2")).ok
    first, second = smtp.wait_for_messages(2)
    assert first["Subject"] == second["Subject"]
    assert first["References"] == second["References"]
    assert first["Message-ID"] != second["Message-ID"]


def test_explicit_sender_and_string_recipients(smtp: SmtpServer) -> None:
    result = channel(to="a@example.test; b@example.test", from_email="alerts@example.test").deliver(
        notification()
    )
    assert result.ok, result
    assert smtp.envelopes == [("alerts@example.test", ["a@example.test", "b@example.test"])]


def test_no_recipients_is_not_retryable(smtp: SmtpServer) -> None:
    result = channel(to=()).deliver(notification())
    assert not result.ok and not result.retryable
    assert result.detail == "email: no recipients configured"
    assert smtp.messages == []


def test_no_sender_is_not_retryable(smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch) -> None:
    conn = smtp_connection(smtp)
    conn["extra"] = {k: v for k, v in conn["extra"].items() if k != "from_email"}
    monkeypatch.setenv(*connection_env(CONN, conn))
    result = channel().deliver(notification())
    assert not result.ok and not result.retryable
    assert "from_email" in result.detail


@pytest.mark.parametrize(
    ("code", "retryable"),
    [(421, True), (451, True), (452, True), (550, False), (554, False)],
)
def test_smtp_reply_codes(code: int, retryable: bool, smtp: SmtpServer) -> None:
    smtp.fail_next(code)
    result = channel().deliver(notification())
    assert not result.ok
    assert result.retryable is retryable
    assert f"SMTP {code}" in result.detail
    assert PASSWORD not in result.detail
    assert smtp.messages == []


def test_connection_refused_is_retryable(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    conn = {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": port,
        "login": "airflow",
        "password": PASSWORD,
        "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "airflow@example.test"},
    }
    monkeypatch.setenv(*connection_env(CONN, conn))
    result = channel().deliver(notification())
    assert not result.ok and result.retryable, result
    assert "refused" in result.detail.lower()
    assert PASSWORD not in result.detail


def test_missing_connection_is_not_retryable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(connection_env(CONN, {})[0], raising=False)
    result = channel().deliver(notification())
    assert not result.ok and not result.retryable
    assert f"{CONN!r}: connection not found" in result.detail, result.detail
    assert "airflow connections add" in result.detail  # the fix, for the error logged with it
