"""Local stand-ins for Slack, PagerDuty and an SMTP relay, for tests and demos.

Every server listens on ``127.0.0.1`` only, records what it receives, answers the way the
real service does (including its validation errors) and can be told to misbehave on the
next requests (HTTP errors, rate limiting, slow answers, SMTP rejections).  They let
integration tests, the demo and users' own DAG tests exercise real clients (``slack_sdk``,
the official Airflow hooks, ``smtplib``) without ever contacting an external host.

Example::

    with SlackServer() as slack, PagerDutyServer() as pagerduty:
        monkeypatch.setenv(*connection_env("slack_alerts", slack_api_connection(slack)))
        ...  # run the code under test
        assert slack.wait_for_messages(1)[0]["channel"] == "#alerts"
"""

from __future__ import annotations

import copy
import email
import email.policy
import hashlib
import json
import logging
import math
import socket
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, overload
from urllib.parse import parse_qsl, urlsplit

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "PagerDutyServer",
    "RecordedRequest",
    "SlackServer",
    "SmtpServer",
    "connection_env",
    "pagerduty_connection",
    "pagerduty_event_errors",
    "slack_api_connection",
    "slack_block_errors",
    "slack_webhook_connection",
    "smtp_connection",
]

log = logging.getLogger(__name__)

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


# --------------------------------------------------------------------------------------
# Slack
# --------------------------------------------------------------------------------------

_SLACK_TEAM_ID = "T000"
_SLACK_BOT_USER_ID = "U0BOT"
_SLACK_BOT_ID = "B0BOT"

_SLACK_MAX_BLOCKS = 50
_SLACK_MAX_ATTACHMENTS = 100
_SLACK_JSON_FIELDS = ("blocks", "attachments", "metadata")
# Known block types that are accepted without a closer look.
_SLACK_UNCHECKED_BLOCK_TYPES = frozenset({"divider", "input", "file", "rich_text", "video", "table"})
# Webhooks answer errors with a status and the error code as the body.
_SLACK_WEBHOOK_ERROR_STATUS = {
    "invalid_payload": 400,
    "no_text": 400,
    "invalid_blocks": 400,
    "invalid_blocks_format": 400,
    "too_many_attachments": 400,
    "invalid_token": 403,
    "action_prohibited": 403,
    "posting_to_general_channel_denied": 403,
    "no_service": 404,
    "no_service_id": 404,
    "no_team": 404,
    "team_disabled": 404,
    "channel_not_found": 404,
    "user_not_found": 404,
    "channel_is_archived": 410,
    "rate_limited": 429,
}
_SLACK_ID_PREFIXES = ("C", "G", "D")


def _slack_channel_id(channel: str) -> str:
    """Map a channel name to a stable fake ID; IDs pass through.

    Deterministic (a hash, not a counter) so demo output and test expectations do not
    depend on the order channels were first used in.
    """
    name = channel.lstrip("#")
    if name[:1] in _SLACK_ID_PREFIXES and name[1:].isalnum() and name.isupper() and len(name) >= 9:
        return name
    return "C" + hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()[:10].upper()


def _text_object_errors(obj: Any, ptr: str, max_len: int, *, plain_only: bool = False) -> list[str]:
    allowed = ("plain_text",) if plain_only else ("plain_text", "mrkdwn")
    if not isinstance(obj, dict) or obj.get("type") not in allowed:
        return [f"failed to match all allowed schemas [json-pointer:{ptr}]"]
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        return [f"must be more than 0 characters [json-pointer:{ptr}/text]"]
    if len(text) > max_len:
        return [f"must be less than {max_len + 1} characters [json-pointer:{ptr}/text]"]
    return []


def _max_len_errors(obj: dict[str, Any], key: str, max_len: int, ptr: str) -> list[str]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, str):
        return [f"must be a string [json-pointer:{ptr}/{key}]"]
    if len(value) > max_len:
        return [f"must be less than {max_len + 1} characters [json-pointer:{ptr}/{key}]"]
    return []


def _element_errors(element: Any, ptr: str) -> list[str]:
    if not isinstance(element, dict) or not isinstance(element.get("type"), str):
        return [f"must provide an object with a type [json-pointer:{ptr}]"]
    errors = _max_len_errors(element, "action_id", 255, ptr)
    if element["type"] == "button":
        errors += _text_object_errors(element.get("text"), f"{ptr}/text", 75, plain_only=True)
        errors += _max_len_errors(element, "value", 2000, ptr)
        errors += _max_len_errors(element, "url", 3000, ptr)
    elif element["type"] == "image":
        errors += _image_errors(element, ptr)
    return errors


def _image_errors(image: dict[str, Any], ptr: str) -> list[str]:
    errors = _max_len_errors(image, "image_url", 3000, ptr) + _max_len_errors(image, "alt_text", 2000, ptr)
    if not image.get("alt_text"):
        errors.append(f"missing required field: alt_text [json-pointer:{ptr}]")
    if not image.get("image_url") and not image.get("slack_file"):
        errors.append(f"missing required field: image_url [json-pointer:{ptr}]")
    return errors


def _list_errors(block: dict[str, Any], key: str, max_items: int, ptr: str) -> list[str] | None:
    """Errors for a required non-empty list field, or ``None`` when it is valid."""
    items = block.get(key)
    if not isinstance(items, list) or not items:
        return [f"must provide a non-empty array [json-pointer:{ptr}/{key}]"]
    if len(items) > max_items:
        return [f"no more than {max_items} items allowed [json-pointer:{ptr}/{key}]"]
    return None


def _section_errors(block: dict[str, Any], ptr: str) -> list[str]:
    if "text" not in block and "fields" not in block:
        return [f"must provide either text or fields [json-pointer:{ptr}]"]
    errors: list[str] = []
    if "text" in block:
        errors += _text_object_errors(block["text"], f"{ptr}/text", 3000)
    if "fields" in block:
        list_errors = _list_errors(block, "fields", 10, ptr)
        if list_errors is not None:
            return errors + list_errors
        for i, field_obj in enumerate(block["fields"]):
            errors += _text_object_errors(field_obj, f"{ptr}/fields/{i}", 2000)
    if "accessory" in block:
        errors += _element_errors(block["accessory"], f"{ptr}/accessory")
    return errors


def _header_errors(block: dict[str, Any], ptr: str) -> list[str]:
    return _text_object_errors(block.get("text"), f"{ptr}/text", 150, plain_only=True)


def _context_errors(block: dict[str, Any], ptr: str) -> list[str]:
    list_errors = _list_errors(block, "elements", 10, ptr)
    if list_errors is not None:
        return list_errors
    errors: list[str] = []
    for i, element in enumerate(block["elements"]):
        element_ptr = f"{ptr}/elements/{i}"
        if isinstance(element, dict) and element.get("type") == "image":
            errors += _image_errors(element, element_ptr)
        else:
            errors += _text_object_errors(element, element_ptr, 3000)
    return errors


def _actions_errors(block: dict[str, Any], ptr: str) -> list[str]:
    list_errors = _list_errors(block, "elements", 25, ptr)
    if list_errors is not None:
        return list_errors
    errors: list[str] = []
    for i, element in enumerate(block["elements"]):
        errors += _element_errors(element, f"{ptr}/elements/{i}")
    return errors


def _markdown_errors(block: dict[str, Any], ptr: str) -> list[str]:
    text = block.get("text")
    if not isinstance(text, str) or not text:
        return [f"must be more than 0 characters [json-pointer:{ptr}/text]"]
    # Slack caps the cumulative markdown of a message at 12,000 characters.
    if len(text) > 12000:
        return [f"must be less than 12001 characters [json-pointer:{ptr}/text]"]
    return []


def _image_block_errors(block: dict[str, Any], ptr: str) -> list[str]:
    return _image_errors(block, ptr)


_BLOCK_VALIDATORS: dict[str, Callable[[dict[str, Any], str], list[str]]] = {
    "section": _section_errors,
    "header": _header_errors,
    "context": _context_errors,
    "actions": _actions_errors,
    "markdown": _markdown_errors,
    "image": _image_block_errors,
}


def slack_block_errors(blocks: Any) -> list[str]:
    """Validate Block Kit blocks the way Slack does before accepting a message.

    Covers the limits alerting messages run into (block count, text lengths of sections,
    headers, fields, context and buttons, unique ``block_id``); unusual block types are
    accepted unchecked.

    :param blocks: The decoded ``blocks`` value of a message.
    :return: Slack-style error strings (``"... [json-pointer:/blocks/0/text]"``), empty if valid.
    """
    if not isinstance(blocks, list):
        return ["must provide an array [json-pointer:/blocks]"]
    if len(blocks) > _SLACK_MAX_BLOCKS:
        return [f"no more than {_SLACK_MAX_BLOCKS} items allowed [json-pointer:/blocks]"]
    errors: list[str] = []
    seen_ids: set[str] = set()
    for i, block in enumerate(blocks):
        ptr = f"/blocks/{i}"
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            errors.append(f"must provide an object with a type [json-pointer:{ptr}]")
            continue
        errors += _max_len_errors(block, "block_id", 255, ptr)
        block_id = block.get("block_id")
        if isinstance(block_id, str):
            if block_id in seen_ids:
                errors.append(f"duplicate block_id {block_id!r} [json-pointer:{ptr}/block_id]")
            seen_ids.add(block_id)
        validator = _BLOCK_VALIDATORS.get(block["type"])
        if validator is not None:
            errors += validator(block, ptr)
        elif block["type"] not in _SLACK_UNCHECKED_BLOCK_TYPES:
            errors.append(f"unsupported type: {block['type']} [json-pointer:{ptr}/type]")
    return errors


class _SlackRejection(Exception):
    """A message Slack would refuse, with its error code and Block Kit details."""

    def __init__(self, error: str, details: list[str]) -> None:
        super().__init__(error)
        self.error = error
        self.details = details


def _normalize_slack_message(args: dict[str, Any]) -> dict[str, Any]:
    """Copy message args, dropping the token and decoding JSON-string fields.

    slack_sdk and the Airflow notifier send ``blocks``/``attachments`` either as arrays or
    as JSON strings (SlackNotifier always json.dumps them); Slack accepts both.
    """
    message = {key: value for key, value in args.items() if key != "token"}
    for key in _SLACK_JSON_FIELDS:
        value = message.get(key)
        if not isinstance(value, str):
            continue
        if key == "blocks" and not value.strip():
            message[key] = []
            continue
        try:
            message[key] = json.loads(value)
        except ValueError:
            error = "invalid_blocks_format" if key == "blocks" else f"invalid_{key}"
            raise _SlackRejection(error, []) from None
    return message


def _check_slack_content(message: dict[str, Any]) -> None:
    blocks = message.get("blocks")
    attachments = message.get("attachments")
    text = message.get("text")
    if blocks is not None:
        errors = slack_block_errors(blocks)
        if errors:
            raise _SlackRejection("invalid_blocks", errors)
    if attachments is not None and (
        not isinstance(attachments, list) or len(attachments) > _SLACK_MAX_ATTACHMENTS
    ):
        raise _SlackRejection("too_many_attachments", [])
    has_text = isinstance(text, str) and bool(text.strip())
    if not has_text and not blocks and not attachments:
        raise _SlackRejection("no_text", [])


class SlackServer(_RecordingHTTPServer):
    """Local Slack: the Web API under ``/api/`` and incoming webhooks under ``/services/``.

    Web API methods: ``auth.test``, ``chat.postMessage`` and ``chat.update``; anything else
    answers ``unknown_method``.  Requests are accepted as JSON (what slack_sdk uses for chat
    methods), urlencoded or multipart forms; the token is taken from ``Authorization: Bearer``
    or a ``token`` form field.  Errors come back the Slack way: HTTP 200 with
    ``{"ok": false, "error": ...}``.

    Channel names (``#alerts`` or ``alerts``) get stable fake IDs (``C`` + 10 hex digits);
    channel IDs are passed through.  Every webhook path of the form
    ``/services/<team>/<bot>/<secret>`` is accepted, so several webhook connections can share
    one server; :attr:`webhook_url` is one such URL.

    :param token: The bot token the Web API accepts.
    """

    def __init__(self, token: str = "xoxb-test-token") -> None:
        super().__init__()
        self.token = token
        self._messages: list[dict[str, Any]] = []
        # (channel ID, ts) -> current message, so chat.update can check its target exists.
        self._posted: dict[tuple[str, str], dict[str, Any]] = {}
        self._last_ts_micros = 0

    @property
    def base_url(self) -> str:
        """Web API base URL with the trailing slash slack_sdk needs (``urljoin`` semantics)."""
        return f"{self._origin}/api/"

    @property
    def webhook_url(self) -> str:
        """An incoming-webhook URL served by this server."""
        return f"{self._origin}/services/{_SLACK_TEAM_ID}/B000/XXXX"

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Every successfully posted message, oldest first (a deep copy).

        ``chat.postMessage``: the arguments as sent (``channel`` as given, ``blocks`` and
        ``attachments`` decoded to lists, no ``token``) plus ``"ts"`` and ``"via": "api"``.
        Webhooks: the posted JSON plus ``"via": "webhook"``.  ``chat.update``: the arguments
        plus ``"via": "update"``.
        """
        with self._cond:
            return copy.deepcopy(self._messages)

    def wait_for_messages(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Block until at least ``count`` messages were posted.

        :param count: Minimum number of messages to wait for.
        :param timeout: Seconds to wait at most.
        :return: All messages so far (may be more than ``count``).
        :raises AssertionError: On timeout.
        """
        return _wait_until(self._cond, self._messages, count, timeout, "Slack messages")

    def slack_error_next(self, error: str = "channel_not_found", *, count: int = 1) -> None:
        """Make the next ``count`` requests fail with a Slack error code.

        Web API requests get HTTP 200 ``{"ok": false, "error": error}``; webhook requests get
        the status Slack uses for that error (e.g. 404 ``channel_not_found``, 410
        ``channel_is_archived``, default 400) with the code as the body.

        :param error: Slack error code, e.g. ``channel_not_found``, ``ratelimited``,
            ``is_archived``, ``msg_too_long``.
        :param count: How many consecutive requests get this answer.
        """
        _check_count(count)

        def respond(request: RecordedRequest) -> _Response:
            if self._is_webhook(request):
                return _Response.of_text(
                    _SLACK_WEBHOOK_ERROR_STATUS.get(error, 400), error, "text/html; charset=utf-8"
                )
            return _Response.of_json(200, {"ok": False, "error": error})

        self._add_fault(_Fault(remaining=count, respond=respond))

    # -- protocol ------------------------------------------------------------------------

    @staticmethod
    def _is_webhook(request: RecordedRequest) -> bool:
        return urlsplit(request.path).path.startswith("/services/")

    def _handle(self, request: RecordedRequest) -> _Response:
        path = urlsplit(request.path).path
        if path.startswith("/api/"):
            return self._handle_api(path.removeprefix("/api/"), request)
        if path.startswith("/services/"):
            return self._handle_webhook(path, request)
        return _Response.of_text(404, "not_found")

    def _failure_response(self, status: int, request: RecordedRequest) -> _Response:
        if self._is_webhook(request):
            text = "rate_limited" if status == 429 else "internal_error"
            return _Response.of_text(status, text, "text/html; charset=utf-8")
        return _Response.of_json(
            status, {"ok": False, "error": "ratelimited" if status == 429 else "internal_error"}
        )

    def _clear_recordings(self) -> None:
        self._messages.clear()

    def _reset_state(self) -> None:
        self._posted.clear()

    @staticmethod
    def _error(error: str, **extra: Any) -> _Response:
        return _Response.of_json(200, {"ok": False, "error": error, **extra})

    @staticmethod
    def _rejection(rejection: _SlackRejection) -> _Response:
        if not rejection.details:
            return SlackServer._error(rejection.error)
        return SlackServer._error(
            rejection.error,
            errors=rejection.details,
            response_metadata={"messages": [f"[ERROR] {detail}" for detail in rejection.details]},
        )

    def _handle_api(self, method: str, request: RecordedRequest) -> _Response:
        handlers: dict[str, Callable[[dict[str, Any]], _Response]] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.update": self._update_message,
        }
        handler = handlers.get(method)
        if handler is None:
            return self._error("unknown_method", req_method=method)
        args: dict[str, Any] = dict(parse_qsl(urlsplit(request.path).query, keep_blank_values=True))
        if "json" in _mime_type(request.headers):
            if request.json is None:
                return self._error("invalid_json")
            if not isinstance(request.json, dict):
                return self._error("json_not_object")
        if isinstance(request.json, dict):
            args.update(request.json)
        authorization = request.headers.get("authorization", "")
        token = authorization.removeprefix("Bearer ").strip() if authorization else args.get("token")
        if not token:
            return self._error("not_authed")
        if token != self.token:
            return self._error("invalid_auth")
        try:
            return handler(args)
        except _SlackRejection as rejection:
            return self._rejection(rejection)

    def _auth_test(self, args: dict[str, Any]) -> _Response:
        return _Response.of_json(
            200,
            {
                "ok": True,
                "url": "https://alerting-test.slack.com/",
                "team": "Alerting Test",
                "user": "airflow-alerts",
                "team_id": _SLACK_TEAM_ID,
                "user_id": _SLACK_BOT_USER_ID,
                "bot_id": _SLACK_BOT_ID,
                "is_enterprise_install": False,
            },
        )

    def _next_ts(self) -> str:
        # Slack ts values are "seconds.microseconds" and unique per channel; forcing them to
        # strictly increase keeps them unique even when two posts land in the same microsecond.
        micros = max(self._last_ts_micros + 1, time.time_ns() // 1000)
        self._last_ts_micros = micros
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    @staticmethod
    def _message_object(message: dict[str, Any], ts: str) -> dict[str, Any]:
        shown: dict[str, Any] = {
            "type": "message",
            "subtype": "bot_message",
            "text": message.get("text", ""),
            "user": _SLACK_BOT_USER_ID,
            "bot_id": _SLACK_BOT_ID,
            "team": _SLACK_TEAM_ID,
            "ts": ts,
        }
        for key in ("blocks", "attachments", "thread_ts", "metadata"):
            if key in message:
                shown[key] = message[key]
        return shown

    def _post_message(self, args: dict[str, Any]) -> _Response:
        message = _normalize_slack_message(args)
        channel = message.get("channel")
        if not isinstance(channel, str) or not channel.strip("# "):
            return self._error("channel_not_found")
        _check_slack_content(message)
        ts = self._next_ts()
        channel_id = _slack_channel_id(channel)
        self._posted[(channel_id, ts)] = dict(message)
        self._messages.append({**message, "ts": ts, "via": "api"})
        return _Response.of_json(
            200,
            {"ok": True, "channel": channel_id, "ts": ts, "message": self._message_object(message, ts)},
        )

    def _update_message(self, args: dict[str, Any]) -> _Response:
        message = _normalize_slack_message(args)
        channel = message.get("channel")
        if not isinstance(channel, str) or not channel.strip("# "):
            return self._error("channel_not_found")
        ts = message.get("ts")
        channel_id = _slack_channel_id(channel)
        current = self._posted.get((channel_id, ts)) if isinstance(ts, str) else None
        if current is None:
            return self._error("message_not_found")
        _check_slack_content(message)
        current.update({key: value for key, value in message.items() if key not in ("channel", "ts")})
        self._messages.append({**message, "via": "update"})
        return _Response.of_json(
            200,
            {
                "ok": True,
                "channel": channel_id,
                "ts": ts,
                "text": current.get("text", ""),
                "message": self._message_object(current, str(ts)),
            },
        )

    def _handle_webhook(self, path: str, request: RecordedRequest) -> _Response:
        segments = path.strip("/").split("/")
        if len(segments) != 4 or not all(segments):
            return _Response.of_text(404, "no_service", "text/html; charset=utf-8")
        if request.method != "POST":
            return _Response.of_text(405, "invalid_method", "text/html; charset=utf-8")
        payload = request.json
        # Legacy webhook clients post a form with the JSON in a "payload" field.
        if _mime_type(request.headers) == "application/x-www-form-urlencoded" and isinstance(payload, dict):
            payload = payload.get("payload")
        if not isinstance(payload, dict):
            return _Response.of_text(400, "invalid_payload", "text/html; charset=utf-8")
        try:
            message = _normalize_slack_message(payload)
            _check_slack_content(message)
        except _SlackRejection as rejection:
            status = _SLACK_WEBHOOK_ERROR_STATUS.get(rejection.error, 400)
            return _Response.of_text(status, rejection.error, "text/html; charset=utf-8")
        self._messages.append({**message, "via": "webhook"})
        return _Response.of_text(200, "ok", "text/html; charset=utf-8")


# --------------------------------------------------------------------------------------
# PagerDuty
# --------------------------------------------------------------------------------------

_PD_ACTIONS = ("trigger", "acknowledge", "resolve")
_PD_SEVERITIES = ("critical", "error", "warning", "info")
_PD_MAX_SUMMARY = 1024
_PD_MAX_DEDUP_KEY = 255
_PD_MAX_EVENT_BYTES = 512 * 1024


def pagerduty_event_errors(event: Any) -> list[str]:
    """Validate an Events API v2 event the way PagerDuty does.

    :param event: The decoded request body.
    :return: Error strings for the ``errors`` field of a 400 answer; empty if valid.
    """
    if not isinstance(event, dict):
        return ["Event object must be a JSON object"]
    errors: list[str] = []
    routing_key = event.get("routing_key")
    if not isinstance(routing_key, str) or not routing_key.strip():
        errors.append("'routing_key' is missing or blank")
    action = event.get("event_action")
    if action not in _PD_ACTIONS:
        errors.append("'event_action' is missing or invalid (must be one of trigger, acknowledge, resolve)")
    dedup_key = event.get("dedup_key")
    if dedup_key is not None and not isinstance(dedup_key, str):
        errors.append("'dedup_key' must be a string")
    elif isinstance(dedup_key, str) and len(dedup_key) > _PD_MAX_DEDUP_KEY:
        errors.append(f"'dedup_key' is too long (max {_PD_MAX_DEDUP_KEY} characters)")
    if action in ("acknowledge", "resolve") and not dedup_key:
        errors.append(f"'dedup_key' is required for event_action '{action}'")
    if action == "trigger":
        errors += _pagerduty_payload_errors(event.get("payload"))
    return errors


def _pagerduty_payload_errors(payload: Any) -> list[str]:
    if not isinstance(payload, dict):
        return ["'payload' is missing or not an object"]
    errors = [
        f"'payload.{name}' is missing or blank"
        for name in ("summary", "source", "severity")
        if not isinstance(payload.get(name), str) or not payload[name].strip()
    ]
    summary = payload.get("summary")
    if isinstance(summary, str) and len(summary) > _PD_MAX_SUMMARY:
        errors.append(f"'payload.summary' is too long (max {_PD_MAX_SUMMARY} characters)")
    severity = payload.get("severity")
    if isinstance(severity, str) and severity.strip() and severity not in _PD_SEVERITIES:
        errors.append(f"'payload.severity' must be one of {', '.join(_PD_SEVERITIES)}")
    return errors


class PagerDutyServer(_RecordingHTTPServer):
    """Local PagerDuty Events API v2: ``POST /v2/enqueue``.

    Accepted events get 202 ``{"status": "success", "message": "Event processed",
    "dedup_key": ...}`` (a key is generated for a trigger without one); invalid ones get 400
    ``{"status": "invalid event", "message": "Event object is invalid", "errors": [...]}``.
    Acknowledge and resolve only change an incident when sent with the routing key that
    triggered it; otherwise they are accepted and ignored, as by PagerDuty.
    """

    def __init__(self) -> None:
        super().__init__()
        self._events: list[dict[str, Any]] = []
        self._incidents: dict[str, str] = {}
        self._incident_routing_keys: dict[str, str] = {}

    @property
    def url(self) -> str:
        """Events API base URL (``http://127.0.0.1:PORT``); events go to ``url + "/v2/enqueue"``."""
        return self._origin

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every accepted event (the posted JSON), oldest first (a deep copy)."""
        with self._cond:
            return copy.deepcopy(self._events)

    @property
    def incidents(self) -> dict[str, str]:
        """``dedup_key`` -> ``"triggered"``, ``"acknowledged"`` or ``"resolved"`` (a copy)."""
        with self._cond:
            return dict(self._incidents)

    def wait_for_events(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Block until at least ``count`` events were accepted.

        :param count: Minimum number of events to wait for.
        :param timeout: Seconds to wait at most.
        :return: All accepted events so far (may be more than ``count``).
        :raises AssertionError: On timeout.
        """
        return _wait_until(self._cond, self._events, count, timeout, "PagerDuty events")

    def _failure_response(self, status: int, request: RecordedRequest) -> _Response:
        if status == 429:
            return _Response.of_json(
                429,
                {
                    "status": "throttle event",
                    "message": "Requests for this service are arriving too quickly. Please retry later.",
                },
            )
        return _Response.of_json(status, {"status": "error", "message": "Internal server error"})

    def _clear_recordings(self) -> None:
        self._events.clear()

    def _reset_state(self) -> None:
        self._incidents.clear()
        self._incident_routing_keys.clear()

    @staticmethod
    def _invalid(errors: list[str]) -> _Response:
        return _Response.of_json(
            400, {"status": "invalid event", "message": "Event object is invalid", "errors": errors}
        )

    def _handle(self, request: RecordedRequest) -> _Response:
        if urlsplit(request.path).path.rstrip("/") != "/v2/enqueue":
            return _Response.of_json(404, {"status": "error", "message": "Not found"})
        if request.method != "POST":
            return _Response.of_json(405, {"status": "error", "message": "Method not allowed"})
        if len(request.body) > _PD_MAX_EVENT_BYTES:
            return self._invalid([f"Event object is too large (max {_PD_MAX_EVENT_BYTES} bytes)"])
        if request.json is None:
            return self._invalid(["Event object is not valid JSON"])
        errors = pagerduty_event_errors(request.json)
        if errors:
            return self._invalid(errors)
        event: dict[str, Any] = request.json
        dedup_key = event.get("dedup_key") or uuid.uuid4().hex
        self._apply(event["event_action"], dedup_key, event["routing_key"])
        self._events.append(copy.deepcopy(event))
        return _Response.of_json(
            202, {"status": "success", "message": "Event processed", "dedup_key": dedup_key}
        )

    def _apply(self, action: str, dedup_key: str, routing_key: str) -> None:
        state = self._incidents.get(dedup_key)
        if action == "trigger":
            # A trigger for an open incident only adds an alert to it; after resolution the
            # same dedup_key opens a new incident.
            if state in (None, "resolved"):
                self._incidents[dedup_key] = "triggered"
                self._incident_routing_keys[dedup_key] = routing_key
            return
        if state is None or self._incident_routing_keys.get(dedup_key) != routing_key:
            return
        if action == "acknowledge" and state == "triggered":
            self._incidents[dedup_key] = "acknowledged"
        elif action == "resolve" and state != "resolved":
            self._incidents[dedup_key] = "resolved"


# --------------------------------------------------------------------------------------
# SMTP
# --------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------
# Airflow connections
# --------------------------------------------------------------------------------------


def slack_api_connection(server: SlackServer) -> dict[str, Any]:
    """Airflow ``slack`` connection (for ``SlackHook``) pointing at ``server``.

    :param server: A running :class:`SlackServer`.
    :return: Connection fields, ready for :func:`connection_env`.
    """
    return {"conn_type": "slack", "password": server.token, "extra": {"base_url": server.base_url}}


def slack_webhook_connection(server: SlackServer) -> dict[str, Any]:
    """Airflow ``slackwebhook`` connection (for ``SlackWebhookHook``) pointing at ``server``.

    :param server: A running :class:`SlackServer`.
    :return: Connection fields, ready for :func:`connection_env`.
    """
    return {"conn_type": "slackwebhook", "password": server.webhook_url}


def pagerduty_connection(
    server: PagerDutyServer, routing_key: str = "R0UTINGKEY0000000000000000000000"
) -> dict[str, Any]:
    """Airflow ``pagerduty_events`` connection whose host is the local events endpoint.

    :param server: A running :class:`PagerDutyServer`.
    :param routing_key: Integration (routing) key stored as the password.
    :return: Connection fields, ready for :func:`connection_env`.
    """
    return {"conn_type": "pagerduty_events", "password": routing_key, "host": server.url}


def smtp_connection(server: SmtpServer, from_email: str = "airflow@example.test") -> dict[str, Any]:
    """Airflow ``smtp`` connection for plain SMTP to ``server`` (TLS and SSL disabled).

    :param server: A running :class:`SmtpServer`.
    :param from_email: Sender address stored in the connection extra.
    :return: Connection fields, ready for :func:`connection_env`.
    """
    return {
        "conn_type": "smtp",
        "host": server.host,
        "port": server.port,
        "login": "",
        "password": "",
        "extra": {"disable_ssl": True, "disable_tls": True, "from_email": from_email},
    }


def connection_env(conn_id: str, conn: dict[str, Any]) -> tuple[str, str]:
    """Environment variable that defines an Airflow connection, as ``(name, value)``.

    Airflow reads ``AIRFLOW_CONN_<CONN_ID>`` variables holding JSON, so
    ``monkeypatch.setenv(*connection_env("slack_alerts", slack_api_connection(server)))``
    makes ``slack_alerts`` available to hooks without a metadata database.

    :param conn_id: Airflow connection ID.
    :param conn: Connection fields, e.g. from :func:`slack_api_connection`.
    :return: ``("AIRFLOW_CONN_" + conn_id.upper(), json.dumps(conn))``.
    """
    return "AIRFLOW_CONN_" + conn_id.upper(), json.dumps(conn)
