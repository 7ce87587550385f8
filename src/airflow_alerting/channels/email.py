"""Email delivery through the official SMTP provider hook."""

from __future__ import annotations

import re
import smtplib
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from typing import TYPE_CHECKING, cast

from airflow_alerting.channels._results import exception_failure, result
from airflow_alerting.model import DeliveryResult, Notification
from airflow_alerting.render.email import EmailContent, header_safe, render_email
from airflow_alerting.render.redact import scrub

if TYPE_CHECKING:
    from airflow.providers.smtp.hooks.smtp import SmtpHook

FINGERPRINT_HEADER = "X-Airflow-Alert-Fingerprint"
_THREAD_DOMAIN = "airflow-alerting"
_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_UNSAFE_DOMAIN_CHARS = re.compile(r"[^A-Za-z0-9.-]")
_SERVER_TEXT_LIMIT = 120


def thread_id(fingerprint: str) -> str:
    """A stable pseudo Message-ID shared by every email about one fingerprint.

    Sent as ``References`` / ``In-Reply-To`` so clients that thread by references (Thunderbird,
    Apple Mail, Outlook) group occurrences and the recovery, even though the subjects of
    ``[HIGH]`` and ``[RESOLVED]`` mails differ and no mail ever carried this id.

    :param fingerprint: the alert fingerprint
    :return: ``<alert.FINGERPRINT@airflow-alerting>``
    """
    return f"<alert.{_UNSAFE_ID_CHARS.sub('_', fingerprint)}@{_THREAD_DOMAIN}>"


def _recipients(to: Sequence[str]) -> tuple[str, ...]:
    # A bare string is a Sequence[str] too; treat it as a comma/semicolon separated list
    # rather than as a sequence of one-character "addresses".
    items = re.split(r"[,;]", to) if isinstance(to, str) else list(to)
    return tuple(address for address in (header_safe(item) for item in items) if address)


def _bounded_hook(conn_id: str, timeout: float) -> SmtpHook:
    """An SmtpHook that gives up after ``timeout`` seconds and does not retry on its own.

    The hook takes its timeout (default 30 s) and a silent reconnect loop (5 tries) from the
    connection; the manager owns retries and the callback deadline, so both are overridden.
    """
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    class BoundedSmtpHook(SmtpHook):
        @property
        def timeout(self) -> int:
            return cast("int", timeout)  # smtplib accepts fractions of a second

        @property
        def smtp_retry_limit(self) -> int:
            return 0

    return BoundedSmtpHook(smtp_conn_id=conn_id)


def _server_text(message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
    text = scrub(" ".join(text.split()))
    return text if len(text) <= _SERVER_TEXT_LIMIT else text[: _SERVER_TEXT_LIMIT - 1] + "…"


class EmailChannel:
    """Send notifications as ``multipart/alternative`` (text + HTML) email over SMTP.

    Connection handling (TLS/STARTTLS, certificate verification, login, OAuth2, timeout) is
    the official :class:`~airflow.providers.smtp.hooks.smtp.SmtpHook`'s, configured through
    the Airflow connection.

    :param name: channel name used in routing, results and metrics
    :param smtp_conn_id: SMTP connection
    :param to: recipients; a string may list several separated by ``,`` or ``;``
    :param from_email: sender; defaults to the connection's ``from_email`` extra
    """

    def __init__(
        self,
        name: str = "email",
        *,
        smtp_conn_id: str = "smtp_default",
        to: Sequence[str] = (),
        from_email: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.smtp_conn_id = smtp_conn_id
        self.to = _recipients(to)
        self.from_email = header_safe(from_email) if from_email else None
        self.timeout = timeout

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, smtp_conn_id={self.smtp_conn_id!r}, to={self.to!r})"
        )

    def deliver(self, notification: Notification) -> DeliveryResult:
        """Render and send one notification; never raises.

        :param notification: what to send
        :return: ``ok`` with ``external_id`` = the Message-ID; SMTP 4xx replies and dropped
            connections are ``retryable``, 5xx replies are not
        """
        # configured recipients win; otherwise the task's own ``email`` argument, as Airflow does
        to = self.to or _recipients(notification.alert.emails)
        if not to:
            return result(self.name, ok=False, retryable=False, detail="email: no recipients configured")
        try:
            content = render_email(notification)
            return self._send(notification, content, to)
        except Exception as exc:  # the Channel contract: report, never raise into the task
            return exception_failure(self.name, exc, action="email")

    def _send(self, notification: Notification, content: EmailContent, to: tuple[str, ...]) -> DeliveryResult:
        from airflow.sdk import BaseHook

        action = f"email via {self.smtp_conn_id!r}"
        try:
            host = BaseHook.get_connection(self.smtp_conn_id).host
        except Exception as exc:  # a missing connection is reported, not raised
            return exception_failure(self.name, exc, action=action)
        if not host:
            # smtplib would report "please run connect() first", which looks transient; it is not
            return result(
                self.name, ok=False, retryable=False, detail=f"{action}: the connection has no host"
            )
        hook = _bounded_hook(self.smtp_conn_id, self.timeout)
        try:
            with hook:
                sender = self.from_email or header_safe(hook.from_email or "")
                if not sender:
                    detail = f"{action}: no sender: set from_email or the connection's 'from_email' extra"
                    return result(self.name, ok=False, retryable=False, detail=detail)
                message = self._message(notification, content, sender, to)
                # SmtpHook.send_email_smtp only builds single-part HTML mail, so the hook is used
                # for what it is good at -- connecting, STARTTLS, auth -- and our multipart
                # message goes through the client it connected.  It keeps that client in a
                # private attribute; there is no public accessor.
                client = cast("smtplib.SMTP", hook._smtp_client)
                refused = client.send_message(message, from_addr=sender, to_addrs=list(to))
        except smtplib.SMTPRecipientsRefused as exc:
            return self._refused(action, exc.recipients, hook)
        except smtplib.SMTPResponseException as exc:
            # Covers sender/data/auth/helo/connect errors: the reply code says whether to retry.
            code = exc.smtp_code
            detail = f"{action}: SMTP {code} {_server_text(exc.smtp_error)}".rstrip()
            transient = code < 0 or 400 <= code < 500
            return result(self.name, ok=False, retryable=transient, detail=detail, secrets=_secrets(hook))
        except smtplib.SMTPNotSupportedError as exc:
            detail = f"{action}: server does not support a required extension ({_server_text(str(exc))})"
            return result(self.name, ok=False, retryable=False, detail=detail, secrets=_secrets(hook))
        except Exception as exc:
            return exception_failure(self.name, exc, action=action, secrets=_secrets(hook))
        message_id = str(message["Message-ID"])
        detail = f"{action}: sent to {len(to) - len(refused)} of {len(to)} recipients"
        if refused:
            detail += "; refused: " + ", ".join(sorted(refused))
        return result(self.name, ok=True, detail=detail, external_id=message_id, secrets=_secrets(hook))

    def _message(
        self, notification: Notification, content: EmailContent, sender: str, to: tuple[str, ...]
    ) -> EmailMessage:
        message = EmailMessage()
        message["Subject"] = content.subject
        message["From"] = sender
        message["To"] = ", ".join(to)
        message["Date"] = formatdate(localtime=True)
        # The sender's domain (as mail servers expect) also spares make_msgid its DNS lookup of
        # the local host name, which can stall for seconds on badly configured workers.
        domain = _UNSAFE_DOMAIN_CHARS.sub("", parseaddr(sender)[1].rpartition("@")[2])
        message["Message-ID"] = make_msgid(domain=domain or _THREAD_DOMAIN)
        message["References"] = thread_id(notification.fingerprint)
        message["In-Reply-To"] = thread_id(notification.fingerprint)
        message[FINGERPRINT_HEADER] = header_safe(notification.fingerprint)
        # RFC 3834: tells vacation responders and ticket systems not to answer.
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(content.text)
        message.add_alternative(content.html, subtype="html")
        return message

    def _refused(
        self, action: str, recipients: dict[str, tuple[int, bytes]], hook: SmtpHook
    ) -> DeliveryResult:
        codes = sorted({code for code, _ in recipients.values()})
        transient = any(400 <= code < 500 for code in codes)
        detail = f"{action}: all recipients refused (SMTP {', '.join(str(c) for c in codes)})"
        return result(self.name, ok=False, retryable=transient, detail=detail, secrets=_secrets(hook))


def _secrets(hook: SmtpHook) -> list[str | None]:
    connection = hook.smtp_connection
    if connection is None:
        return []
    extra = connection.extra_dejson
    return [connection.password, extra.get("access_token"), extra.get("client_secret")]
