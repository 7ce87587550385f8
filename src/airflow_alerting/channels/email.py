"""Email delivery through the official SMTP provider hook."""

from __future__ import annotations

import re
import smtplib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from typing import TYPE_CHECKING, Any, cast

from airflow_alerting.channels._connections import ConnectionSnapshot, ConnectionUnusable, lookup
from airflow_alerting.channels._results import exception_failure, result
from airflow_alerting.channels.base import POSTING_ACTIONS
from airflow_alerting.model import DeliveryResult, Notification, NotificationAction
from airflow_alerting.render.email import EmailContent, header_safe, is_reply, render_email
from airflow_alerting.render.redact import scrub

if TYPE_CHECKING:
    from airflow.providers.smtp.hooks.smtp import SmtpHook

FINGERPRINT_HEADER = "X-Airflow-Alert-Fingerprint"
#: the incident an e-mail is about, for mail filters and ticket systems
INCIDENT_HEADER = "X-Airflow-Alert-Incident"
_THREAD_DOMAIN = "airflow-alerting"
_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_UNSAFE_DOMAIN_CHARS = re.compile(r"[^A-Za-z0-9.-]")
#: what a stored Message-ID must look like to be sent back in In-Reply-To/References
_MESSAGE_ID = re.compile(r"<[^<>\s@]{1,200}@[^<>\s@]{1,200}>")
_SERVER_TEXT_LIMIT = 120


def incident_message_id(incident_id: str, action: NotificationAction, domain: str) -> str:
    """A fresh Message-ID for one e-mail about an incident.

    ``<INCIDENT.ACTION.RANDOM@DOMAIN>``: the incident id and action make a message's place
    in the conversation readable in raw headers and logs; the random part keeps every message
    unique (mail systems drop duplicates of a Message-ID); the domain is the sender's, as
    mail servers and spam filters expect, falling back to ``airflow-alerting``.

    :param incident_id: the incident
    :param action: what the message does (``announce``, ``follow_up`` ...)
    :param domain: the From address's domain, possibly empty
    :return: the Message-ID, angle brackets included
    """
    local = f"{_UNSAFE_ID_CHARS.sub('_', incident_id)[:64]}.{action.value}.{uuid.uuid4().hex[:16]}"
    return f"<{local}@{_UNSAFE_DOMAIN_CHARS.sub('', domain)[:200] or _THREAD_DOMAIN}>"


def _thread_ref(ref: str | None) -> str | None:
    # The announcement's Message-ID comes back from the state store; anything that is not a
    # plain msg-id (a corrupted record, CR/LF) is not sent rather than risk a malformed header.
    if not ref:
        return None
    candidate = header_safe(ref).strip()
    return candidate if _MESSAGE_ID.fullmatch(candidate) else None


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


def _bounded_hook(conn_id: str, timeout: float, connection: ConnectionSnapshot) -> SmtpHook:
    """An SmtpHook on ``connection`` that gives up after ``timeout`` seconds and does not retry on its own.

    The hook takes its timeout (default 30 s) and a silent reconnect loop (5 tries) from the
    connection; the manager owns retries and the callback deadline, so both are overridden.
    It is handed the connection already read (by :meth:`EmailChannel.prepare`, on the calling
    thread) instead of fetching it: a delivery thread must make no Task SDK call.
    """
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    class BoundedSmtpHook(SmtpHook):
        @classmethod
        def get_connection(cls, conn_id: str) -> Any:
            return connection

        @property
        def timeout(self) -> int:
            return cast("int", timeout)  # smtplib accepts fractions of a second

        @property
        def smtp_retry_limit(self) -> int:
            return 0

    return BoundedSmtpHook(smtp_conn_id=conn_id)


@dataclass(frozen=True)
class _Prepared:
    """What a delivery needs from Airflow: the SMTP connection's settings, or why there are none."""

    connection: ConnectionSnapshot | None = None
    #: the result every delivery returns when the connection is unusable
    failure: DeliveryResult | None = None


_SURROGATE = re.compile("[\ud800-\udfff]")


def utf8_safe(text: str) -> str:
    r"""``text`` with each lone surrogate written out, so that it can be encoded as UTF-8.

    ``os.fsdecode`` turns the bytes of a file name that are not UTF-8 into lone surrogates
    (``b"\xe9"`` -> ``"\udce9"``), and exception messages carry such names.  UTF-8 cannot
    encode them, so the ``email`` package would raise and the alert would be lost.  A
    surrogate made by ``surrogateescape`` is shown as the byte it stands for (``\xe9``), any
    other as its code point (``\ud800``).

    :param text: body text
    :return: the text; unchanged when it has no lone surrogates
    """

    def written_out(match: re.Match[str]) -> str:
        code = ord(match.group())
        return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"

    return _SURROGATE.sub(written_out, text)


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

    Incidents are one conversation: the announcement gets a fresh ``Message-ID``
    (:func:`incident_message_id`, returned as ``external_id``), and every later message
    (follow-up, escalation, re-notification, resolution) replies to it with ``In-Reply-To`` and
    ``References`` under the same subject prefixed ``"Re: "``.  Mail cannot be edited, so the
    channel declares :data:`~airflow_alerting.channels.base.POSTING_ACTIONS`.

    :meth:`prepare` reads the SMTP connection on the calling thread; deliveries until the next
    ``prepare`` use what it read and make no Task SDK call.
    """

    #: e-mail cannot be edited or acknowledged: new messages in the incident's thread only
    actions = POSTING_ACTIONS

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
        # replaced whole by each prepare(), never changed: a delivery running in a worker thread
        # keeps the snapshot it read while the next alert prepares on the calling thread
        self._prepared: _Prepared | None = None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, smtp_conn_id={self.smtp_conn_id!r}, to={self.to!r})"
        )

    def prepare(self) -> None:
        """Read the SMTP connection now, on the calling thread, for the deliveries that follow; never raises.

        Its settings (or the failure that stands for them) are kept until the next ``prepare``,
        so a connection edited in the UI is used from the next alert on.
        """
        self._prepared = self._resolve()

    def _resolve(self) -> _Prepared:
        action = f"email via {self.smtp_conn_id!r}"
        try:
            connection = lookup(self.smtp_conn_id, timeout=self.timeout)
        except ConnectionUnusable as exc:
            detail = f"{action}: {exc}"
            return _Prepared(failure=result(self.name, ok=False, retryable=exc.retryable, detail=detail))
        except Exception as exc:  # prepare() and deliver() report, never raise
            return _Prepared(failure=exception_failure(self.name, exc, action=action))
        if not connection.host:
            # smtplib would report "please run connect() first", which looks transient; it is not
            detail = f"{action}: the connection has no host: set it to the mail server's host name"
            return _Prepared(failure=result(self.name, ok=False, retryable=False, detail=detail))
        return _Prepared(connection=connection)

    def deliver(self, notification: Notification) -> DeliveryResult:
        """Render and send one notification; never raises.

        Uses what the last :meth:`prepare` read (no Task SDK call); unprepared, reads the
        connection itself.

        :param notification: what to send
        :return: ``ok`` with ``external_id`` = the Message-ID; SMTP 4xx replies and dropped
            connections are ``retryable``, 5xx replies are not
        """
        # configured recipients win; otherwise the task's own ``email`` argument, as Airflow does
        to = self.to or _recipients(notification.alert.emails)
        if not to:
            return result(self.name, ok=False, retryable=False, detail="email: no recipients configured")
        # one read of the snapshot: a prepare() for another alert may replace it meanwhile
        prepared = self._prepared or self._resolve()
        if prepared.failure is not None or prepared.connection is None:
            # _resolve sets a failure whenever it has no connection
            return prepared.failure or result(self.name, ok=False, detail="email: connection not read")
        try:
            content = render_email(notification)
            return self._send(notification, content, to, prepared.connection)
        except Exception as exc:  # the Channel contract: report, never raise into the task
            return exception_failure(self.name, exc, action="email")

    def _send(
        self,
        notification: Notification,
        content: EmailContent,
        to: tuple[str, ...],
        connection: ConnectionSnapshot,
    ) -> DeliveryResult:
        action = f"email via {self.smtp_conn_id!r}"
        hook = _bounded_hook(self.smtp_conn_id, self.timeout, connection)
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
        incident = notification.incident
        if incident is None:
            message["Message-ID"] = make_msgid(domain=domain or _THREAD_DOMAIN)
            message["References"] = thread_id(notification.fingerprint)
            message["In-Reply-To"] = thread_id(notification.fingerprint)
        else:
            message["Message-ID"] = incident_message_id(incident.id, notification.action, domain)
            # The announcement is the root of the conversation: it references nothing, and
            # everything after it replies to it (render_email prefixed the subject "Re: ").
            parent = _thread_ref(notification.announcement.ref) if notification.announcement else None
            if parent is not None and is_reply(notification):
                message["In-Reply-To"] = parent
                message["References"] = parent
            message[INCIDENT_HEADER] = header_safe(incident.id)
        message[FINGERPRINT_HEADER] = header_safe(notification.fingerprint)
        # RFC 3834: tells vacation responders and ticket systems not to answer.
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(utf8_safe(content.text))
        message.add_alternative(utf8_safe(content.html), subtype="html")
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
