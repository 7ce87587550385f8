"""What every channel promises: the Channel protocol, never raising, cheap imports, and one
shared, secret-free classification of failures."""

from __future__ import annotations

import http.client
import smtplib
import ssl
import subprocess
import sys
from datetime import datetime, timezone
from email.utils import format_datetime
from urllib.error import HTTPError, URLError

import pytest

from airflow_alerting.channels import Channel, EmailChannel, PagerDutyChannel, SlackChannel
from airflow_alerting.channels._results import exception_failure, hide, parse_retry_after, transport_error
from airflow_alerting.model import Alert, Classification, Decision, DecisionReason, Notification, Severity

pytestmark = pytest.mark.integration

CHANNELS = [
    pytest.param(lambda: SlackChannel(slack_conn_id="nope_api", webhook_conn_id="nope_hook"), id="slack"),
    pytest.param(lambda: EmailChannel(smtp_conn_id="nope_smtp", to=["a@example.test"]), id="email"),
    pytest.param(lambda: PagerDutyChannel(pagerduty_conn_id="nope_pd"), id="pagerduty"),
]


def notification() -> Notification:
    return Notification(
        alert=Alert(dag_id="d", task_id="t", exception_type="ValueError", message="boom"),
        classification=Classification(Severity.CRITICAL, ()),
        fingerprint="f" * 16,
        channel="x",
        decision=Decision(True, DecisionReason.FIRST),
    )


@pytest.mark.parametrize("factory", CHANNELS)
def test_channels_satisfy_the_protocol(factory: object) -> None:
    channel = factory()  # type: ignore[operator]
    assert isinstance(channel, Channel)
    assert channel.name in ("slack", "email", "pagerduty")


@pytest.mark.parametrize("factory", CHANNELS)
def test_deliver_never_raises(factory: object, monkeypatch: pytest.MonkeyPatch) -> None:
    import airflow_alerting.channels.email as email_module
    import airflow_alerting.channels.pagerduty as pagerduty_module
    import airflow_alerting.channels.slack as slack_module

    def explode(*args: object) -> object:
        raise RuntimeError("renderer bug with https://hooks.slack.com/services/T/B/SECRET in it")

    for module, name in (
        (slack_module, "render_slack"),
        (email_module, "render_email"),
        (pagerduty_module, "render_pagerduty_event"),
    ):
        monkeypatch.setattr(module, name, explode)
    monkeypatch.setenv("AIRFLOW_CONN_NOPE_PD", '{"conn_type": "pagerduty_events", "password": "k" }')
    monkeypatch.setenv(
        "AIRFLOW_CONN_NOPE_HOOK", '{"conn_type": "slackwebhook", "password": "http://127.0.0.1:1/x"}'
    )

    result = factory().deliver(notification())  # type: ignore[operator]

    assert not result.ok and not result.retryable
    assert "SECRET" not in result.detail


def test_importing_channels_stays_cheap() -> None:
    code = (
        "import sys, airflow_alerting.channels as c, airflow_alerting.channels.slack, "
        "airflow_alerting.channels.email, airflow_alerting.channels.pagerduty, "
        "airflow_alerting.render.slack, airflow_alerting.render.email, airflow_alerting.render.pagerduty\n"
        "c.SlackChannel, c.EmailChannel, c.PagerDutyChannel\n"
        "heavy = [m for m in ('airflow', 'slack_sdk', 'requests', 'jinja2') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("7", 7.0), (" 1.5 ", 1.5), ("-3", 0.0), ("soon", None), ("", None), (None, None)],
)
def test_parse_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date() -> None:
    now = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    later = format_datetime(datetime(2024, 5, 1, 12, 0, 30, tzinfo=timezone.utc), usegmt=True)
    assert parse_retry_after(later, now=now.timestamp()) == 30.0


def _raised_from(outer: BaseException, inner: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException:
            raise outer  # noqa: B904 -- the implicit __context__ is what hooks produce
    except BaseException as exc:
        return exc


@pytest.mark.parametrize(
    ("exc", "retryable"),
    [
        pytest.param(ConnectionRefusedError(111, "Connection refused"), True, id="refused"),
        pytest.param(TimeoutError("timed out"), True, id="timeout"),
        pytest.param(URLError(ConnectionResetError(104, "reset")), True, id="urlerror-wrapping-socket"),
        pytest.param(URLError("unknown url type: htp"), False, id="urlerror-bad-url"),
        pytest.param(HTTPError("u", 503, "unavailable", None, None), True, id="httperror-503"),  # type: ignore[arg-type]
        pytest.param(HTTPError("u", 401, "unauthorized", None, None), False, id="httperror-401"),  # type: ignore[arg-type]
        pytest.param(http.client.RemoteDisconnected("closed"), True, id="remote-disconnected"),
        pytest.param(ssl.SSLCertVerificationError("certificate verify failed"), False, id="bad-certificate"),
        pytest.param(smtplib.SMTPServerDisconnected("gone"), True, id="smtp-disconnected"),
        pytest.param(
            _raised_from(RuntimeError("Unable to connect to smtp server"), smtplib.SMTPServerDisconnected()),
            True,
            id="hook-wrapped-disconnect",
        ),
    ],
)
def test_transport_errors(exc: BaseException, retryable: bool) -> None:
    classified = transport_error(exc)
    assert classified is not None
    assert classified[0] is retryable


def test_requests_errors() -> None:
    import requests

    assert transport_error(requests.ConnectTimeout("x")) == (True, "ConnectTimeout")
    assert transport_error(requests.ConnectionError("x"))[0] is True  # type: ignore[index]
    assert transport_error(requests.exceptions.InvalidURL("x"))[0] is False  # type: ignore[index]


def test_other_exceptions_are_not_transport_errors() -> None:
    assert transport_error(RuntimeError("bug")) is None
    result = exception_failure("x", KeyError("k"), action="deliver")
    assert not result.ok and not result.retryable
    assert result.detail == "deliver: KeyError"


def test_details_never_repeat_exception_text() -> None:
    exc = ConnectionError("POST https://hooks.slack.com/services/T0/B0/SECRET failed")
    result = exception_failure("slack", exc, action="slack webhook")
    assert "SECRET" not in result.detail
    assert result.retryable


def test_hide() -> None:
    assert hide("token xoxb-1 in url http://h/x/SECRET", ["xoxb-1", "http://h/x/SECRET", None, ""]) == (
        "token *** in url ***"
    )
