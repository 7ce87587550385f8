"""Shared machinery of the local HTTP servers: recorded requests, canned responses, faults.

:class:`_RecordingHTTPServer` runs a threaded HTTP server on ``127.0.0.1``, parses and
records every request, and lets tests inject faults (error answers, rate limiting, stalls)
before the protocol-specific subclass (Slack, PagerDuty) answers.
"""

from __future__ import annotations

import copy
import email
import email.policy
import json
import logging
import math
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, overload
from urllib.parse import parse_qsl

if TYPE_CHECKING:
    from typing_extensions import Self


# Logged under the package name, as before the module was split into a package.
log = logging.getLogger("airflow_alerting.testing.servers")

_T = TypeVar("_T")

_LOCALHOST = "127.0.0.1"
# Bodies above this are refused outright: the servers keep everything in memory.
_MAX_BODY_BYTES = 10 * 1024 * 1024
# How long stop() lets in-flight requests finish before cutting their sockets.
_STOP_GRACE_SECONDS = 2.0
# Keeps a client that opens a connection and never sends from pinning a handler thread.
_HANDLER_IDLE_TIMEOUT_SECONDS = 10.0
# serve_forever() only notices shutdown() between polls, so this bounds how long stop()
# takes; tests start and stop a server per test, where 50 ms each adds up.
_POLL_INTERVAL_SECONDS = 0.005


class _Headers(dict[str, str]):
    """Header mapping with case-insensitive lookups (keys stored lower-case).

    Clients disagree on spelling (urllib sends ``Content-type``, requests ``Content-Type``),
    and HTTP says header names are case-insensitive, so tests should not have to care.
    """

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__((key.lower(), value) for key, value in items)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return super().__contains__(key.lower() if isinstance(key, str) else key)

    @overload
    def get(self, key: str, default: None = None, /) -> str | None: ...

    @overload
    def get(self, key: str, default: str, /) -> str: ...

    @overload
    def get(self, key: str, default: _T, /) -> str | _T: ...

    def get(self, key: str, default: Any = None, /) -> Any:
        return super().get(key.lower(), default)


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request as received by a local server.

    :param method: HTTP method, e.g. ``"POST"``.
    :param path: Request target as sent, including any query string.
    :param headers: Request headers; lookups ignore case (keys are stored lower-case).
    :param body: Raw request body.
    :param json: The parsed JSON body if the body is JSON; for form posts
        (``application/x-www-form-urlencoded`` or ``multipart/form-data``) the form as a dict of
        ``str`` to ``str`` in which the JSON-typed fields (``payload``, ``blocks``, ``attachments``,
        ``metadata``) are decoded; otherwise ``None``.
    :param received_at: ``time.time()`` when the request was received.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any | None
    received_at: float


@dataclass
class _Response:
    status: int
    body: bytes
    content_type: str
    headers: dict[str, str]

    @classmethod
    def of_json(cls, status: int, payload: Any, headers: dict[str, str] | None = None) -> _Response:
        return cls(status, json.dumps(payload).encode(), "application/json; charset=utf-8", headers or {})

    @classmethod
    def of_text(cls, status: int, text: str, content_type: str = "text/plain; charset=utf-8") -> _Response:
        return cls(status, text.encode(), content_type, {})

    @classmethod
    def of_any(cls, status: int, body: Any) -> _Response:
        """Build a response from a user-supplied fault body (bytes/str as-is, else JSON)."""
        if isinstance(body, bytes):
            return cls(status, body, "application/octet-stream", {})
        if isinstance(body, str):
            return cls.of_text(status, body)
        return cls.of_json(status, body)


@dataclass
class _Fault:
    """A pending misbehaviour, consumed by the next ``remaining`` requests."""

    remaining: int
    respond: Callable[[RecordedRequest], _Response] | None = None
    stall_seconds: float = 0.0


def _check_count(count: int) -> None:
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")


def _retry_after_header(seconds: float) -> str:
    # Both services send whole seconds and clients parse them with int() (slack_sdk's
    # RateLimitErrorRetryHandler, SlackHook), so "0.5" would crash them rather than test them.
    if seconds < 0:
        raise ValueError(f"retry_after must be >= 0, got {seconds}")
    return str(math.ceil(seconds))


def _wait_until(
    cond: threading.Condition, items: list[_T], count: int, timeout: float, what: str
) -> list[_T]:
    """Block until ``items`` (guarded by ``cond``) holds ``count`` entries; return a copy."""
    deadline = time.monotonic() + timeout
    with cond:
        while len(items) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"expected at least {count} {what} within {timeout:g}s, got {len(items)}: "
                    f"{_truncate(repr(items), 2000)}"
                )
            cond.wait(remaining)
        return copy.deepcopy(items)


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------
# Request body parsing
# --------------------------------------------------------------------------------------

_FORM_JSON_FIELDS = ("payload", "blocks", "attachments", "metadata")


def _mime_type(headers: dict[str, str]) -> str:
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _parse_multipart(content_type: str, body: bytes) -> dict[str, str]:
    # The email parser understands MIME multipart; feeding it the HTTP Content-Type header
    # avoids the deprecated (and in 3.13 removed) cgi module.
    raw = b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    message = email.message_from_bytes(raw, policy=email.policy.HTTP)
    fields: dict[str, str] = {}
    if not isinstance(message, EmailMessage) or not message.is_multipart():
        return fields
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        data = part.get_payload(decode=True)
        fields[name] = data.decode("utf-8", "replace") if isinstance(data, bytes) else ""
    return fields


def _decode_form(fields: dict[str, str]) -> dict[str, Any]:
    decoded: dict[str, Any] = dict(fields)
    for key in _FORM_JSON_FIELDS:
        value = fields.get(key)
        if value is None:
            continue
        try:
            decoded[key] = json.loads(value)
        except ValueError:
            # Left as the raw string so the protocol layer can report it the way the
            # real service does (e.g. Slack's invalid_blocks_format).
            continue
    return decoded


def _parse_body(headers: dict[str, str], body: bytes) -> Any | None:
    mime = _mime_type(headers)
    if mime == "application/x-www-form-urlencoded":
        return _decode_form(dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)))
    if mime == "multipart/form-data":
        return _decode_form(_parse_multipart(headers.get("content-type", ""), body))
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


class _BadRequest(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        return _read_chunked(handler)
    try:
        length = int(handler.headers.get("Content-Length") or 0)
    except ValueError:
        raise _BadRequest(400, "invalid Content-Length") from None
    if length < 0:
        raise _BadRequest(400, "invalid Content-Length")
    if length > _MAX_BODY_BYTES:
        raise _BadRequest(413, "request body too large")
    return handler.rfile.read(length)


def _read_chunked(handler: BaseHTTPRequestHandler) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        size_line = handler.rfile.readline(1024)
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _BadRequest(400, "malformed chunked body") from None
        if size == 0:
            # Discard trailers up to the terminating blank line.
            while handler.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                continue
            return b"".join(chunks)
        total += size
        if total > _MAX_BODY_BYTES:
            raise _BadRequest(413, "request body too large")
        chunks.append(handler.rfile.read(size))
        handler.rfile.readline(1024)


# --------------------------------------------------------------------------------------
# Shared HTTP server machinery
# --------------------------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that never does DNS and can stop without leaking threads."""

    daemon_threads = True
    # stop() joins the workers itself, with a grace period and then by cutting sockets;
    # the stdlib join would wait forever on a client that never finishes its request.
    block_on_close = False

    def __init__(self, owner: _RecordingHTTPServer) -> None:
        self.owner = owner
        self._workers: dict[threading.Thread, socket.socket] = {}
        self._workers_lock = threading.Lock()
        super().__init__((_LOCALHOST, 0), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup: tests must not
        # depend on (or wait for) a resolver.
        TCPServer.server_bind(self)
        self.server_name = "localhost"
        self.server_port = int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"{type(self.owner).__name__}-request",
            daemon=True,
        )
        with self._workers_lock:
            self._workers = {t: s for t, s in self._workers.items() if t.is_alive()}
            self._workers[thread] = request
        thread.start()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The default prints a traceback to stderr, which would spam test output for every
        # client that disconnects early (e.g. after a deliberate read timeout).
        log.debug("error while serving %s", client_address, exc_info=True)

    def close_workers(self) -> None:
        with self._workers_lock:
            workers = list(self._workers.items())
            self._workers.clear()
        deadline = time.monotonic() + _STOP_GRACE_SECONDS
        for thread, _sock in workers:
            thread.join(max(0.0, deadline - time.monotonic()))
        for thread, sock in workers:
            if thread.is_alive():
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    log.debug("socket of a stuck request was already closed")
                thread.join(_STOP_GRACE_SECONDS)


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    # One request per connection: no keep-alive connections to pin handler threads at stop().
    protocol_version = "HTTP/1.0"
    timeout = _HANDLER_IDLE_TIMEOUT_SECONDS

    def _dispatch(self) -> None:
        self.server.owner._serve(self)

    do_GET = _dispatch
    do_POST = _dispatch
    do_PUT = _dispatch
    do_PATCH = _dispatch
    do_DELETE = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s: " + format, type(self.server.owner).__name__, *args)


def _write_response(handler: BaseHTTPRequestHandler, response: _Response) -> None:
    try:
        handler.send_response(response.status)
        handler.send_header("Content-Type", response.content_type)
        handler.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(response.body)
    except (BrokenPipeError, ConnectionResetError):
        # Expected when the client gave up first, e.g. on a read timeout during a stall.
        log.debug("client went away before the response was written")


class _RecordingHTTPServer(ABC):
    """Start/stop, request recording and fault injection shared by the HTTP servers."""

    def __init__(self) -> None:
        # One condition guards all recorded state and protocol state, and wakes waiters.
        self._cond = threading.Condition()
        self._requests: list[RecordedRequest] = []
        self._faults: deque[_Fault] = deque()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> Self:
        """Bind a free port on 127.0.0.1 and serve in a background thread.

        :return: The server itself, so ``server = SlackServer().start()`` works.
        :raises RuntimeError: If the server is already running.
        """
        if self._httpd is not None:
            raise RuntimeError(f"{type(self).__name__} is already running")
        self._stopping.clear()
        httpd = _HTTPServer(self)
        thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL_SECONDS},
            name=f"{type(self).__name__}-{httpd.server_port}",
            daemon=True,
        )
        thread.start()
        self._httpd, self._thread = httpd, thread
        return self

    def stop(self) -> None:
        """Stop serving, release the port and join every server thread.

        Requests still stalled by :meth:`stall_next` are dropped without an answer.
        Calling ``stop`` on a stopped server does nothing.
        """
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        httpd.close_workers()
        thread.join()
        self._httpd = self._thread = None

    def __enter__(self) -> Self:
        if self._httpd is None:
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
        if self._httpd is None:
            raise RuntimeError(f"{type(self).__name__} is not running; call start() first")
        return self._httpd.server_port

    @property
    def _origin(self) -> str:
        return f"http://{_LOCALHOST}:{self.port}"

    # -- recording -----------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received (including failed and rejected ones), oldest first."""
        with self._cond:
            return list(self._requests)

    def clear(self) -> None:
        """Forget recorded requests and messages/events and drop pending faults.

        The remote state a real service would keep (Slack's posted messages, PagerDuty's
        incidents) survives, so a test can post, ``clear()``, then assert only on the
        follow-up (update/resolve).  Use :meth:`reset` to forget that too.
        """
        with self._cond:
            self._requests.clear()
            self._faults.clear()
            self._clear_recordings()

    def reset(self) -> None:
        """Like :meth:`clear`, and also forget the remote state (posted messages, incidents)."""
        with self._cond:
            self.clear()
            self._reset_state()

    # -- fault injection -----------------------------------------------------------------

    def fail_next(
        self, status: int = 500, *, count: int = 1, body: Any = None, retry_after: float | None = None
    ) -> None:
        """Answer the next ``count`` requests (any endpoint) with an HTTP error.

        Faults queue up first-in first-out with those of :meth:`stall_next` (and
        ``slack_error_next``); the failed requests are still recorded in :attr:`requests`.

        :param status: HTTP status to answer with, e.g. 500, 503 or 429.
        :param count: How many consecutive requests get this answer.
        :param body: Response body: ``bytes``/``str`` are sent as-is, anything else as JSON.
            ``None`` sends the body the real service sends for that status.
        :param retry_after: If set, sent as the ``Retry-After`` header, in whole seconds
            (rounded up) as the real services do.
        """
        _check_count(count)
        if not 100 <= status <= 599:
            raise ValueError(f"status must be an HTTP status code, got {status}")
        headers = {} if retry_after is None else {"Retry-After": _retry_after_header(retry_after)}

        def respond(request: RecordedRequest) -> _Response:
            response = (
                self._failure_response(status, request) if body is None else _Response.of_any(status, body)
            )
            response.headers.update(headers)
            return response

        self._add_fault(_Fault(remaining=count, respond=respond))

    def stall_next(self, seconds: float, *, count: int = 1) -> None:
        """Delay the answer to the next ``count`` requests by ``seconds``.

        The request is processed (and a message/event recorded) at once; only the response
        is held back.  That is what makes a client read timeout dangerous in production: the
        service did act, and a blind retry duplicates the alert.

        :param seconds: How long to hold the response back.
        :param count: How many consecutive requests are delayed.
        """
        _check_count(count)
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")
        self._add_fault(_Fault(remaining=count, stall_seconds=seconds))

    def _add_fault(self, fault: _Fault) -> None:
        with self._cond:
            self._faults.append(fault)

    def _take_fault(self) -> _Fault | None:
        """Pop one use of the oldest pending fault (caller holds the lock)."""
        if not self._faults:
            return None
        fault = self._faults[0]
        fault.remaining -= 1
        if fault.remaining <= 0:
            self._faults.popleft()
        return fault

    # -- request handling ----------------------------------------------------------------

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        try:
            body = _read_body(handler)
        except _BadRequest as exc:
            _write_response(handler, _Response.of_text(exc.status, exc.reason))
            return
        headers = _Headers(handler.headers.items())
        request = RecordedRequest(
            method=handler.command,
            path=handler.path,
            headers=headers,
            body=body,
            json=_parse_body(headers, body),
            received_at=time.time(),
        )
        with self._cond:
            self._requests.append(request)
            fault = self._take_fault()
            try:
                if fault is not None and fault.respond is not None:
                    response = fault.respond(request)
                else:
                    response = self._handle(request)
            except Exception:
                # A bug here must surface as a loud 500, not as a silently dropped connection
                # that looks like a network problem to the client under test.
                log.exception("%s failed to handle %s %s", type(self).__name__, request.method, request.path)
                response = _Response.of_text(500, "local test server error, see the log")
            self._cond.notify_all()
        if fault is not None and fault.stall_seconds > 0 and self._stopping.wait(fault.stall_seconds):
            # stop() was called mid-stall: drop the connection instead of holding it open.
            return
        _write_response(handler, response)

    @abstractmethod
    def _handle(self, request: RecordedRequest) -> _Response:
        """Answer a request as the real service would (called with the lock held)."""

    @abstractmethod
    def _failure_response(self, status: int, request: RecordedRequest) -> _Response:
        """The body the real service sends with an injected error status."""

    @abstractmethod
    def _clear_recordings(self) -> None:
        """Empty the protocol-specific recordings in place (lock held)."""

    @abstractmethod
    def _reset_state(self) -> None:
        """Forget protocol state such as posted messages or incidents (lock held)."""
