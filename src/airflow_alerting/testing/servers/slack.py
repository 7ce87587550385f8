"""Local Slack: the Web API and incoming webhooks (:class:`SlackServer`)."""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from airflow_alerting.testing.servers.http import (
    RecordedRequest,
    _check_count,
    _Fault,
    _mime_type,
    _RecordingHTTPServer,
    _Response,
    _wait_until,
)
from airflow_alerting.testing.servers.slack_blocks import slack_block_errors

_SLACK_TEAM_ID = "T000"
_SLACK_BOT_USER_ID = "U0BOT"
_SLACK_BOT_ID = "B0BOT"

_SLACK_MAX_ATTACHMENTS = 100
_SLACK_JSON_FIELDS = ("blocks", "attachments", "metadata")

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

    ``chat.postMessage`` with ``thread_ts`` posts a thread reply; the parent must be a
    top-level message posted in the same channel, else ``thread_not_found``.  Answers carry the
    channel ID and ``ts`` as Slack's do.  :attr:`messages` records every call in order;
    :attr:`top_level_messages`, :attr:`edits`, :meth:`replies` and :meth:`current` are views
    for asserting on conversations.

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

    @property
    def top_level_messages(self) -> list[dict[str, Any]]:
        """The entries of :attr:`messages` that started a conversation: posts that are not thread
        replies (Web API and webhook); no ``chat.update`` calls."""
        with self._cond:
            return [
                copy.deepcopy(m)
                for m in self._messages
                if m.get("via") in ("api", "webhook") and m.get("thread_ts") in (None, "")
            ]

    @property
    def edits(self) -> list[dict[str, Any]]:
        """The entries of :attr:`messages` that are ``chat.update`` calls, oldest first."""
        with self._cond:
            return [copy.deepcopy(m) for m in self._messages if m.get("via") == "update"]

    def replies(self, ts: str) -> list[dict[str, Any]]:
        """The thread under message ``ts`` as it reads now (edits applied), oldest first.

        Like :meth:`current`, this is the remote state: it survives :meth:`clear`.

        :param ts: The parent message's ``ts``.
        :return: Each reply's posted arguments with its ``"ts"``; empty when there are none.
        """
        with self._cond:
            return [
                {**copy.deepcopy(message), "ts": reply_ts}
                for (_, reply_ts), message in self._posted.items()
                if message.get("thread_ts") == ts
            ]

    def current(self, ts: str) -> dict[str, Any]:
        """Message ``ts`` as it reads now: its posted arguments with every ``chat.update`` applied.

        ``ts`` values are unique across this server's channels, so no channel is needed.

        :param ts: The message's ``ts``.
        :return: A copy, with ``"ts"`` and ``"channel_id"`` (the ID ``chat.update`` takes) added.
        :raises KeyError: If no message with that ``ts`` was posted (or :meth:`reset` forgot it).
        """
        with self._cond:
            for (channel_id, message_ts), message in self._posted.items():
                if message_ts == ts:
                    return {**copy.deepcopy(message), "ts": ts, "channel_id": channel_id}
        raise KeyError(f"no Slack message with ts {ts!r}")

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
        channel_id = _slack_channel_id(channel)
        thread_ts = message.get("thread_ts")
        if thread_ts not in (None, ""):
            # A reply needs a top-level parent in the same channel; Slack has no nested threads, and
            # a reply to a reply (or to another channel's ts) is a bug in the client under test.
            parent = self._posted.get((channel_id, thread_ts)) if isinstance(thread_ts, str) else None
            if parent is None or parent.get("thread_ts") not in (None, ""):
                return self._error("thread_not_found")
        _check_slack_content(message)
        ts = self._next_ts()
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
