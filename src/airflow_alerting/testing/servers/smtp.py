"""Local SMTP relay (:class:`SmtpServer`)."""

from __future__ import annotations

import email
import email.policy
import socket
import threading
import time
from collections import deque
from email.message import EmailMessage
from types import TracebackType
from typing import TYPE_CHECKING, Any

from airflow_alerting.testing.servers.http import _LOCALHOST, _check_count

if TYPE_CHECKING:
    from typing_extensions import Self


_SMTP_FAULT_TEXT = {
    421: "4.3.2 Service not available, closing transmission channel",
    450: "4.2.0 Mailbox temporarily unavailable",
    451: "4.3.0 Try again later",
    452: "4.3.1 Insufficient system storage",
    550: "5.7.1 Message rejected",
    552: "5.3.4 Message size exceeds fixed limit",
    554: "5.6.0 Transaction failed",
}


class _SmtpHandler:
    """aiosmtpd handler forwarding DATA to the owning :class:`SmtpServer`."""

    def __init__(self, owner: SmtpServer) -> None:
        self._owner = owner

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.original_content
        if not isinstance(content, bytes):
            content = envelope.content.encode() if isinstance(envelope.content, str) else b""
        return self._owner._accept(
            str(envelope.mail_from), [str(rcpt) for rcpt in envelope.rcpt_tos], content
        )


def _accept_any_login(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
    from aiosmtpd.smtp import AuthResult

    # Credentials are not checked: a connection copied from production (with login and
    # password) should work against the local server unchanged.
    return AuthResult(success=True)


def _make_controller(handler: _SmtpHandler, sock: socket.socket) -> Any:
    """Build an aiosmtpd Controller that serves on ``sock``, a socket we bound ourselves.

    aiosmtpd's Controller binds by port number and then connects to that port to check it
    is up, so port 0 cannot work with it directly.  Binding the socket first gives us the
    real port up front and removes the find-a-free-port-then-bind race between servers
    started in parallel.
    """
    import asyncio
    from collections.abc import Awaitable

    from aiosmtpd.controller import Controller

    class _SocketController(Controller):
        def _create_server(self) -> Awaitable[asyncio.AbstractServer]:
            return self.loop.create_server(self._factory_invoker, sock=sock, ssl=self.ssl_context)

    host, port = sock.getsockname()[:2]
    return _SocketController(
        handler,
        hostname=host,
        port=port,
        # Without it aiosmtpd calls socket.getfqdn() (a DNS lookup) for its greeting.
        server_hostname="localhost",
        authenticator=_accept_any_login,
        auth_require_tls=False,
        ready_timeout=5.0,
    )


class SmtpServer:
    """Local SMTP server (aiosmtpd) that records every accepted message.

    Plain SMTP only (no TLS): point a connection at it with ``disable_ssl`` and
    ``disable_tls`` (see :func:`smtp_connection`).  Any AUTH credentials are accepted.
    aiosmtpd is an optional dependency, installed with the ``testing`` extra.

    :param port: Port to listen on; ``None`` picks a free one.
    """

    host = _LOCALHOST

    def __init__(self, port: int | None = None) -> None:
        self._requested_port = port
        self._port: int | None = None
        self._controller: Any = None
        self._cond = threading.Condition()
        self._messages: list[EmailMessage] = []
        self._envelopes: list[tuple[str, list[str]]] = []
        self._faults: deque[list[int]] = deque()  # [code, remaining]

    def start(self) -> Self:
        """Start listening.

        :return: The server itself.
        :raises RuntimeError: If the server is already running.
        :raises ImportError: If aiosmtpd is not installed.
        """
        if self._controller is not None:
            raise RuntimeError("SmtpServer is already running")
        try:
            import aiosmtpd  # noqa: F401
        except ImportError as exc:
            raise ImportError(
                "SmtpServer needs aiosmtpd: pip install 'airflow-provider-alerting[testing]'"
            ) from exc
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        controller: Any = None
        try:
            # Lets a fixed port be reused right after a previous server's connections closed.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._requested_port or 0))
            controller = _make_controller(_SmtpHandler(self), sock)
            controller.start()
        except BaseException:
            if controller is not None:
                controller.stop(no_assert=True)
                # aiosmtpd only closes its loop when serving ran; don't leak it otherwise.
                if not controller.loop.is_closed():
                    controller.loop.close()
            sock.close()
            raise
        self._port = int(sock.getsockname()[1])
        self._controller = controller
        return self

    def stop(self) -> None:
        """Stop the server and release its port; does nothing if not running."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()
        self._port = None

    def __enter__(self) -> Self:
        if self._controller is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """TCP port the server listens on (only while running)."""
        if self._port is None:
            raise RuntimeError("SmtpServer is not running; call start() first")
        return self._port

    @property
    def messages(self) -> list[EmailMessage]:
        """Every accepted message, parsed with ``email.policy.default``, oldest first."""
        with self._cond:
            return list(self._messages)

    @property
    def envelopes(self) -> list[tuple[str, list[str]]]:
        """``(mail_from, rcpt_tos)`` of every accepted message, oldest first."""
        with self._cond:
            return [(mail_from, list(rcpt_tos)) for mail_from, rcpt_tos in self._envelopes]

    def thread(self, message_id: str) -> list[EmailMessage]:
        """The message ``message_id`` and every message that replies to it, oldest first.

        Threaded the way mail clients do it: a message belongs when its ``Message-ID`` is
        ``message_id`` or its ``In-Reply-To``/``References`` headers name it.  The headers
        themselves are on each message (``message["References"]``); a header the sender folded
        over two lines keeps a leading space there (``email``'s parser does), so strip it to compare.

        :param message_id: a Message-ID, angle brackets included
        :return: the messages of that thread
        """
        with self._cond:
            messages = list(self._messages)
        return [
            message
            for message in messages
            if str(message.get("Message-ID", "")).strip() == message_id
            or message_id in str(message.get("In-Reply-To", "")).split()
            or message_id in str(message.get("References", "")).split()
        ]

    def wait_for_messages(self, count: int, timeout: float = 5.0) -> list[EmailMessage]:
        """Block until at least ``count`` messages were accepted.

        :param count: Minimum number of messages to wait for.
        :param timeout: Seconds to wait at most.
        :return: All accepted messages so far.
        :raises AssertionError: On timeout.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._messages) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"expected at least {count} emails within {timeout:g}s, got {len(self._messages)}: "
                        f"{[message['Subject'] for message in self._messages]!r}"
                    )
                self._cond.wait(remaining)
            return list(self._messages)

    def clear(self) -> None:
        """Forget accepted messages and envelopes and drop pending faults."""
        with self._cond:
            self._messages.clear()
            self._envelopes.clear()
            self._faults.clear()

    def fail_next(self, code: int = 451, *, count: int = 1) -> None:
        """Reject the next ``count`` messages at DATA with an SMTP error.

        4xx codes are transient (e.g. ``451 4.3.0 Try again later``), 5xx permanent (e.g.
        ``550 5.7.1 Message rejected``).  Rejected messages are not recorded.

        :param code: SMTP reply code, 400-599.
        :param count: How many consecutive messages are rejected.
        """
        _check_count(count)
        if not 400 <= code <= 599:
            raise ValueError(f"code must be an SMTP error reply code (400-599), got {code}")
        with self._cond:
            self._faults.append([code, count])

    def _accept(self, mail_from: str, rcpt_tos: list[str], content: bytes) -> str:
        """Record a message or apply a pending fault; returns the SMTP reply for DATA."""
        with self._cond:
            if self._faults:
                fault = self._faults[0]
                fault[1] -= 1
                if fault[1] <= 0:
                    self._faults.popleft()
                code = fault[0]
                return f"{code} {_SMTP_FAULT_TEXT.get(code, f'{code // 100}.0.0 Rejected for testing')}"
            message = email.message_from_bytes(content, policy=email.policy.default)
            if not isinstance(message, EmailMessage):
                return "554 5.6.0 Could not parse message"
            self._messages.append(message)
            self._envelopes.append((mail_from, rcpt_tos))
            self._cond.notify_all()
            return "250 2.0.0 OK: queued"
