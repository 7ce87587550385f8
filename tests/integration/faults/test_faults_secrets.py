"""Secrets never leak: not to the services (beyond what their protocol needs), not into results,
history, logs or persisted state -- whether deliveries succeed, fail, echo, or raise.

Planted: the Slack bot token (connection password), a Slack webhook URL (its path is the
credential), the PagerDuty routing key, the SMTP password, and -- inside the alert's exception
message -- a ``postgresql://user:<password>@host`` URL, the bot token itself and another
``xoxb-`` token.  Also: plain-http endpoints outside ``allowed_http_hosts`` are refused and the
SMTP default keeps TLS certificate verification.
"""

from __future__ import annotations

import datetime as dt
import html
import ipaddress
import json
import logging
import ssl
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from faults_support import (
    DB_PASSWORD,
    PAGERDUTY_CONN,
    ROUTING_KEY,
    SERVER_SIDE_LOGGERS,
    SLACK_CONN,
    SMTP_CONN,
    SMTP_PASSWORD,
    TOKEN,
    WEBHOOK_CONN,
    WEBHOOK_SECRET,
    Faults,
    InspectableStore,
    by_channel,
    closed_port,
    failure,
    history,
    routed_to,
)

from airflow_alerting.channels.slack import SlackChannel
from airflow_alerting.manager import AlertManager
from airflow_alerting.model import AlertOutcome, DeliveryResult, Severity
from airflow_alerting.testing.servers import PagerDutyServer, RecordedRequest, SlackServer, _Response
from redaction_catalogue import SAMPLES, Sample

pytestmark = pytest.mark.integration

MESSAGE_TOKEN = "xoxb-1111-2222-PlantedMessageToken"
DB_URL = f"postgresql://user:{DB_PASSWORD}@db.internal:5432/warehouse"
LEAKY_MESSAGE = (
    f"could not connect to {DB_URL}: password authentication failed; "
    f"retry with token {TOKEN} or {MESSAGE_TOKEN}"
)
#: values that must never appear anywhere but where a protocol requires them
CONNECTION_SECRETS = (TOKEN, ROUTING_KEY, SMTP_PASSWORD, WEBHOOK_SECRET)
MESSAGE_SECRETS = (DB_PASSWORD, MESSAGE_TOKEN, "PlantedMessageToken")
ALL_SECRETS = (*CONNECTION_SECRETS, *MESSAGE_SECRETS)


def leaky_failure(run: int = 1) -> Any:
    return failure(run, message=LEAKY_MESSAGE, exception_type="psycopg2.OperationalError")


def found_in(text: str, secrets: tuple[str, ...] = ALL_SECRETS) -> list[str]:
    return [secret for secret in secrets if secret in text]


# --- what the services receive ---------------------------------------------------------------


def _request_text(request: RecordedRequest) -> tuple[str, str, str]:
    headers = "\n".join(f"{k}: {v}" for k, v in request.headers.items())
    return request.path, request.body.decode("utf-8", "replace"), headers


def assert_slack_requests_clean(slack: SlackServer) -> None:
    assert slack.requests
    for request in slack.requests:
        path, body, headers = _request_text(request)
        if request.path.startswith("/api/"):
            # the bot token travels in the Authorization header, and only there
            assert request.headers.get("authorization") == f"Bearer {TOKEN}"
            others = "\n".join(f"{k}: {v}" for k, v in request.headers.items() if k != "authorization")
            assert found_in(path + body + others) == [], request
        else:
            # the webhook URL path is the credential: it is the request target, and only that
            assert WEBHOOK_SECRET in path
            assert found_in(body + headers) == [], request
            assert found_in(path, (TOKEN, ROUTING_KEY, SMTP_PASSWORD, *MESSAGE_SECRETS)) == []


def assert_pagerduty_requests_clean(pagerduty: PagerDutyServer) -> None:
    assert pagerduty.requests
    for request in pagerduty.requests:
        path, body, headers = _request_text(request)
        # the routing key travels in the body's routing_key field, once, and nowhere else
        assert body.count(ROUTING_KEY) == 1
        assert json.loads(body)["routing_key"] == ROUTING_KEY
        without_key = body.replace(json.dumps(ROUTING_KEY), '"<routing key>"')
        assert found_in(path + without_key + headers) == [], request


def _mail_text(message: EmailMessage) -> str:
    parts = [str(message)]  # headers and the encoded body
    for part in message.walk():
        if not part.is_multipart():
            parts.append(str(part.get_content()))  # decoded, whatever the transfer encoding
    return "\n".join(parts)


def assert_mail_clean(messages: list[EmailMessage]) -> None:
    assert messages
    for message in messages:
        assert found_in(_mail_text(message)) == [], message["Subject"]


# --- what the product keeps ------------------------------------------------------------------


def assert_results_clean(outcomes: list[AlertOutcome]) -> None:
    for outcome in outcomes:
        for channel in outcome.channels:
            delivery: DeliveryResult | None = channel.delivery
            texts = [channel.decision.detail, *(() if delivery is None else (delivery.detail, str(delivery)))]
            for text in texts:
                assert found_in(text) == [], (channel.channel, text)


def assert_history_clean(manager: AlertManager) -> None:
    entries = history(manager)
    assert entries
    for entry in entries:
        assert found_in(json.dumps(entry.to_json())) == [], entry


def client_side_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if not r.name.startswith(SERVER_SIDE_LOGGERS)]


def assert_logs_clean(caplog: pytest.LogCaptureFixture) -> None:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    for record in client_side_records(caplog):
        text = formatter.format(record)  # message, arguments and any traceback
        assert found_in(text) == [], text


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="airflow_alerting")
    return caplog


# --- echoing failures --------------------------------------------------------------------------


def _echo_slack(request: RecordedRequest) -> _Response:
    """A 5xx whose body repeats the request: its credential and its payload."""
    if request.path.startswith("/services/"):
        return _Response.of_text(503, f"{request.path} {request.body.decode('utf-8', 'replace')}")
    credential = request.headers.get("authorization", "")
    return _Response.of_json(500, {"ok": False, "error": credential, "request": request.body.decode()})


def _echo_pagerduty(request: RecordedRequest) -> _Response:
    event = request.json or {}
    return _Response.of_json(
        502, {"status": "error", "message": event.get("routing_key"), "errors": [request.body.decode()]}
    )


@pytest.fixture
def echoing(faults: Faults, monkeypatch: pytest.MonkeyPatch) -> Faults:
    monkeypatch.setattr(faults.slack, "_failure_response", lambda status, request: _echo_slack(request))
    monkeypatch.setattr(
        faults.pagerduty, "_failure_response", lambda status, request: _echo_pagerduty(request)
    )
    return faults


@pytest.mark.parametrize("via", ["api", "webhook"])
def test_no_secret_leaks_on_success_or_failure(
    echoing: Faults, debug_logs: pytest.LogCaptureFixture, via: str
) -> None:
    faults = echoing
    if via == "webhook":
        faults.use_slack_webhook()
    store = InspectableStore()
    manager = faults.manager(store=store)
    outcomes = []

    # 1. every channel delivers
    outcomes.append(manager.handle(leaky_failure(1), severity=Severity.CRITICAL))
    assert set(outcomes[-1].sent_to) == {"email", "slack", "pagerduty"}

    # 2. every channel fails, the HTTP services echoing what they were sent; past the incident
    # window, so the same failure opens a new incident and is announced again
    faults.clock.advance(minutes=31)
    faults.slack.fail_next(500, count=3)
    faults.pagerduty.fail_next(502, count=3)
    faults.smtp.fail_next(451, count=3)
    outcomes.append(manager.handle(leaky_failure(2), severity=Severity.CRITICAL))
    assert set(outcomes[-1].failed) == {"email", "slack", "pagerduty"}
    slack_detail = by_channel(outcomes[-1])["slack"].delivery
    assert slack_detail is not None and "HTTP 5" in slack_detail.detail

    # 3. they recover and the outbox redelivers
    faults.clock.advance(minutes=2)
    redelivered = manager.redeliver_outbox()
    assert {o.channel for o in redelivered if o.delivery is not None and o.delivery.ok} == {
        "email",
        "slack",
        "pagerduty",
    }

    assert_slack_requests_clean(faults.slack)
    assert_pagerduty_requests_clean(faults.pagerduty)
    assert_mail_clean(faults.smtp.messages)
    assert_results_clean(outcomes)
    for outcome in redelivered:
        assert outcome.delivery is not None and found_in(outcome.delivery.detail) == []
    assert_history_clean(manager)
    assert_logs_clean(debug_logs)
    # the capture really covered the client libraries, not just our own logger
    assert any(not r.name.startswith("airflow_alerting") for r in client_side_records(debug_logs))
    # and the messages still say what went wrong, without the credentials
    # masked, not dropped: the summary is the incident's normalised cause, the details carry the error
    assert "postgresql://user:***@db.internal" in json.dumps(faults.pagerduty.events[0]["payload"])


@pytest.mark.parametrize("via", ["api", "webhook"])
def test_credentials_echoed_in_error_replies_are_hidden(
    echoing: Faults, debug_logs: pytest.LogCaptureFixture, via: str
) -> None:
    """Short error codes from a reply are kept in details; a code that is a credential is masked."""
    faults = echoing
    if via == "webhook":
        faults.use_slack_webhook()
        faults.slack.fail_next(400, body=f"invalid_token {faults.webhook_url}")
    else:
        faults.slack.fail_next(400, body={"ok": False, "error": TOKEN})
    faults.pagerduty.fail_next(400, body={"status": "invalid event", "message": ROUTING_KEY})
    faults.smtp.fail_next(550)
    manager = faults.manager()

    outcome = manager.handle(leaky_failure(), severity=Severity.CRITICAL)

    assert set(outcome.failed) == {"email", "slack", "pagerduty"}
    details = {c.channel: c.delivery.detail for c in outcome.channels if c.delivery is not None}
    # the reply's code was kept, and masked: the detail still shows that the server said something
    assert details["pagerduty"].endswith("HTTP 400 ***")
    if via == "api":
        assert details["slack"].endswith("HTTP 400 ***")
    assert_results_clean([outcome])
    assert_history_clean(manager)
    assert_logs_clean(debug_logs)


@pytest.mark.parametrize("via", ["api", "webhook"])
def test_secrets_in_exceptions_raised_by_the_transports_stay_out(
    faults: Faults, debug_logs: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, via: str
) -> None:
    """Client libraries put URLs, bodies and server replies in their exception messages."""
    import smtplib
    import urllib.error

    import requests
    from slack_sdk import WebClient
    from slack_sdk.webhook import WebhookClient

    def slack_raises(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise ConnectionResetError(f"reset while posting with {self.token}: {LEAKY_MESSAGE}")

    def webhook_raises(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise urllib.error.URLError(ConnectionResetError(f"reset by {self.url}: {kwargs.get('text')}"))

    def pagerduty_raises(url: str, json: Any = None, **kwargs: Any) -> Any:
        raise requests.ConnectionError(f"Max retries exceeded with url: {url} (body: {json!r})")

    def smtp_raises(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise smtplib.SMTPDataError(
            451, f"4.3.0 rejected for alerts:{SMTP_PASSWORD} {LEAKY_MESSAGE}".encode()
        )

    monkeypatch.setattr(WebClient, "chat_postMessage", slack_raises)
    monkeypatch.setattr(WebhookClient, "send", webhook_raises)
    if via == "webhook":
        faults.use_slack_webhook()
    monkeypatch.setattr(requests, "post", pagerduty_raises)
    monkeypatch.setattr(smtplib.SMTP, "send_message", smtp_raises)
    manager = faults.manager()

    outcome = manager.handle(leaky_failure(), severity=Severity.CRITICAL)

    assert set(outcome.failed) == {"email", "slack", "pagerduty"}
    details = {c.channel: c.delivery.detail for c in outcome.channels if c.delivery is not None}
    assert "ConnectionResetError" in details["slack"]
    assert "ConnectionError" in details["pagerduty"]
    assert "SMTP 451" in details["email"]
    assert_results_clean([outcome])
    assert_history_clean(manager)
    assert_logs_clean(debug_logs)


def test_a_raising_channel_leaks_nothing_into_the_logs(
    faults: Faults, debug_logs: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    faults.use_slack_webhook()

    def deliver(self: SlackChannel, notification: Any) -> DeliveryResult:
        raise RuntimeError(f"could not post to {faults.webhook_url}: {notification.alert.message}")

    monkeypatch.setattr(SlackChannel, "deliver", deliver)
    manager = faults.manager()

    outcome = manager.handle(leaky_failure(), severity=Severity.CRITICAL)

    assert outcome.failed == ("slack",)
    assert_results_clean([outcome])
    assert_history_clean(manager)
    assert_logs_clean(debug_logs)


def test_persisted_state_holds_no_secrets(faults: Faults) -> None:
    store = InspectableStore()
    manager = faults.manager(routed_to("slack"), store=store)
    faults.slack.fail_next(500, count=3)

    manager.handle(leaky_failure(), severity=Severity.HIGH)

    assert store.outbox()
    assert found_in(json.dumps(store.documents())) == []


# --- https only --------------------------------------------------------------------------------


def _assert_refused_without_contact(faults: Faults, outcome: AlertOutcome, channel: str) -> None:
    delivery = by_channel(outcome)[channel].delivery
    assert delivery is not None
    assert (delivery.ok, delivery.retryable) == (False, False), delivery
    assert "https" in delivery.detail
    assert faults.blocked_hosts == []  # not even resolved: the secret never left


def test_pagerduty_refuses_plain_http_outside_the_allowed_hosts(faults: Faults) -> None:
    faults.set_connection(
        PAGERDUTY_CONN,
        {"conn_type": "pagerduty_events", "password": ROUTING_KEY, "host": "http://example.com"},
    )
    manager = faults.manager()

    outcome = manager.handle(failure(), severity=Severity.CRITICAL)

    _assert_refused_without_contact(faults, outcome, "pagerduty")
    assert set(outcome.sent_to) == {"email", "slack"}
    assert ROUTING_KEY not in by_channel(outcome)["pagerduty"].delivery.detail  # type: ignore[union-attr]


def test_pagerduty_over_plain_http_to_loopback_needs_allowed_http_hosts(faults: Faults) -> None:
    manager = faults.manager(allowed_http_hosts="localhost")  # 127.0.0.1 no longer allowed

    outcome = manager.handle(failure(), severity=Severity.CRITICAL)

    _assert_refused_without_contact(faults, outcome, "pagerduty")
    assert faults.pagerduty.requests == []


def test_slack_api_refuses_plain_http_outside_the_allowed_hosts(faults: Faults) -> None:
    faults.set_connection(
        SLACK_CONN,
        {"conn_type": "slack", "password": TOKEN, "extra": {"base_url": "http://example.com/api/"}},
    )
    manager = faults.manager()

    outcome = manager.handle(failure(), severity=Severity.CRITICAL)

    _assert_refused_without_contact(faults, outcome, "slack")


def test_slack_webhook_refuses_plain_http_outside_the_allowed_hosts(faults: Faults) -> None:
    faults.drop_connection(SLACK_CONN)
    faults.set_connection(
        WEBHOOK_CONN,
        {"conn_type": "slackwebhook", "password": f"http://example.com/services/T0/B0/{WEBHOOK_SECRET}"},
    )
    manager = faults.manager()

    outcome = manager.handle(failure(), severity=Severity.CRITICAL)

    _assert_refused_without_contact(faults, outcome, "slack")


# --- SMTP keeps TLS certificate verification --------------------------------------------------------


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


class _Recorder:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope.original_content or b"")
        return "250 OK"


@pytest.fixture
def untrusted_smtp(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Two local relays with a self-signed certificate: implicit TLS and STARTTLS."""
    from aiosmtpd.controller import Controller

    cert, key = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    recorder = _Recorder()
    implicit = Controller(
        recorder, hostname="127.0.0.1", port=closed_port(), ssl_context=context, server_hostname="localhost"
    )
    starttls = Controller(
        recorder,
        hostname="127.0.0.1",
        port=closed_port(),
        tls_context=context,
        require_starttls=True,
        server_hostname="localhost",
        auth_require_tls=True,
    )
    try:
        implicit.start()
        starttls.start()
        yield {"implicit": implicit.port, "starttls": starttls.port, "recorder": recorder}
    finally:
        starttls.stop(no_assert=True)
        implicit.stop(no_assert=True)


@pytest.fixture
def smtp_conn_factory(faults: Faults) -> Any:
    def make(port: int, **extra: Any) -> None:
        faults.set_connection(
            SMTP_CONN,
            {
                "conn_type": "smtp",
                "host": "127.0.0.1",
                "port": port,
                "login": "alerts",
                "password": SMTP_PASSWORD,
                "extra": {"from_email": "airflow@example.test", "timeout": 5, "retry_limit": 0, **extra},
            },
        )

    return make


def test_smtp_hook_defaults_keep_certificate_verification(faults: Faults, smtp_conn_factory: Any) -> None:
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    smtp_conn_factory(465)  # a connection that says nothing about TLS
    hook = SmtpHook(smtp_conn_id=SMTP_CONN)
    hook.smtp_connection = hook.get_connection(SMTP_CONN)

    assert hook.use_ssl is True
    assert hook.smtp_starttls is True
    context = hook._build_ssl_context()
    assert context is not None
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname is True


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_email_channel_refuses_an_untrusted_certificate(
    faults: Faults,
    untrusted_smtp: dict[str, Any],
    smtp_conn_factory: Any,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
) -> None:
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    built: list[ssl.SSLContext | None] = []
    original = SmtpHook._build_ssl_context

    def spy(self: SmtpHook) -> ssl.SSLContext | None:
        context = original(self)
        built.append(context)
        return context

    monkeypatch.setattr(SmtpHook, "_build_ssl_context", spy)
    if mode == "implicit":
        smtp_conn_factory(untrusted_smtp["implicit"])
    else:
        smtp_conn_factory(untrusted_smtp["starttls"], disable_ssl=True)
    manager = faults.manager(routed_to("email"))

    outcome = manager.handle(failure(), severity=Severity.HIGH)

    delivery = by_channel(outcome)["email"].delivery
    assert delivery is not None
    assert (delivery.ok, delivery.retryable) == (False, False), delivery
    assert "SSLCertVerificationError" in delivery.detail
    assert untrusted_smtp["recorder"].messages == []  # nothing went out in the clear either
    assert built and all(c is not None and c.verify_mode is ssl.CERT_REQUIRED for c in built)
    assert SMTP_PASSWORD not in delivery.detail


# --- redirects are never followed --------------------------------------------------------------


def _redirect_to(sink_port: int, status: int) -> Any:
    """A reply that sends the client to the same path on another local server, over plain http."""

    def respond(request: RecordedRequest) -> _Response:
        location = f"http://localhost:{sink_port}{request.path}"
        return _Response(status, b"moved", "text/plain; charset=utf-8", {"Location": location})

    return respond


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("via", ["api", "webhook"])
def test_redirects_are_not_followed_and_fail_the_delivery(
    faults: Faults,
    monkeypatch: pytest.MonkeyPatch,
    debug_logs: pytest.LogCaptureFixture,
    via: str,
    status: int,
) -> None:
    """A 30x to a host a direct request would also reach carries no credential there, and is a failure.

    Before the fix, urllib followed 301/302/303 with the ``Authorization`` header (and the
    webhook path) to the sink and the delivery was reported ``ok``.
    """
    if via == "webhook":
        faults.use_slack_webhook()
    with SlackServer(token=TOKEN) as slack_sink, PagerDutyServer() as pagerduty_sink:
        sinks = {"slack": slack_sink.port, "pagerduty": pagerduty_sink.port}
        monkeypatch.setattr(
            faults.slack, "_failure_response", lambda s, r: _redirect_to(slack_sink.port, s)(r)
        )
        monkeypatch.setattr(
            faults.pagerduty, "_failure_response", lambda s, r: _redirect_to(pagerduty_sink.port, s)(r)
        )
        faults.slack.fail_next(status, count=3)
        faults.pagerduty.fail_next(status, count=3)
        manager = faults.manager(routed_to("slack", "pagerduty"))

        outcome = manager.handle(leaky_failure(), severity=Severity.HIGH)

        assert slack_sink.requests == []  # no bot token, no webhook secret, no message
        assert pagerduty_sink.requests == []  # no routing key
    for channel in ("slack", "pagerduty"):
        delivery = by_channel(outcome)[channel].delivery
        assert delivery is not None
        assert (delivery.ok, delivery.retryable) == (False, False), delivery
        assert f"HTTP {status}" in delivery.detail
        assert (
            f"endpoint answered with a redirect to http://localhost:{sinks[channel]}; "
            "redirects are not followed" in delivery.detail
        ), delivery.detail
    assert len(faults.slack.requests) == 1  # not retried either
    assert len(faults.pagerduty.requests) == 1
    assert_results_clean([outcome])
    assert_history_clean(manager)
    assert_logs_clean(debug_logs)


# --- the redaction catalogue, end to end ----------------------------------------------------------


def _decoded(request: RecordedRequest) -> str:
    """A request as the service would read it: raw body, plus every string of a JSON body unescaped."""
    texts = [request.path, request.body.decode("utf-8", "replace")]
    pending = [request.json]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
        elif isinstance(value, str):
            texts.append(html.unescape(value))  # Slack mrkdwn escapes &, < and >
    return "\n".join(texts)


def _leaks(sample: Sample, text: str) -> list[str]:
    return [piece for piece in (sample.secret, *sample.fragments) if piece in text]


@pytest.mark.parametrize("via", ["api", "webhook"])
def test_no_catalogue_secret_reaches_any_service(
    faults: Faults, debug_logs: pytest.LogCaptureFixture, via: str
) -> None:
    """Every shape of docs/security.md, raised in an exception message, delivered through the real
    Slack, email and PagerDuty channels: no request and no email carries any part of it."""
    if via == "webhook":
        faults.use_slack_webhook()
    manager = faults.manager(routed_to("slack", "email", "pagerduty", severity="critical"))

    for i, sample in enumerate(SAMPLES):
        alert = failure(
            task_id=f"case_{i:02d}", message=f"case-{i:02d} {sample.text}", exception_type="RuntimeError"
        )
        outcome = manager.handle(alert, severity=Severity.CRITICAL)
        assert set(outcome.sent_to) == {"slack", "email", "pagerduty"}, (sample.shape, outcome)

    slack = "\n".join(_decoded(r) for r in faults.slack.requests)
    pagerduty = "\n".join(_decoded(r) for r in faults.pagerduty.requests)
    mail = "\n".join(_mail_text(m) for m in faults.smtp.messages)
    for name, text in {"slack": slack, "pagerduty": pagerduty, "email": mail}.items():
        # each message really went through this channel's renderer ...
        assert [i for i in range(len(SAMPLES)) if f"case-{i:02d}" not in text] == [], name
        # ... and none of its secret did
        leaked = {s.shape: _leaks(s, text) for s in SAMPLES if _leaks(s, text)}
        assert leaked == {}, (name, leaked)
    logged = "\n".join(logging.Formatter("%(message)s").format(r) for r in client_side_records(debug_logs))
    assert {s.shape: _leaks(s, logged) for s in SAMPLES if _leaks(s, logged)} == {}
    assert_history_clean(manager)
