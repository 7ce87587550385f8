"""Slack delivery through the official Slack provider hooks."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from airflow_alerting.channels._connections import ConnectionMissing, ConnectionUnusable, lookup
from airflow_alerting.channels._redirects import refuse_redirects
from airflow_alerting.channels._results import (
    EndpointRefused,
    exception_failure,
    header,
    http_failure,
    parse_retry_after,
    require_secure_endpoint,
    result,
    safe_code,
)
from airflow_alerting.channels.base import POSTING_ACTIONS
from airflow_alerting.model import DeliveryResult, Notification, NotificationAction
from airflow_alerting.render.slack import (
    SlackMessage,
    render_slack,
    render_slack_incident,
    render_slack_reply,
)

if TYPE_CHECKING:
    from slack_sdk import WebClient
    from slack_sdk.errors import SlackApiError
    from slack_sdk.webhook import WebhookClient

log = logging.getLogger(__name__)

#: ``ok: false`` errors that Slack documents as transient (everything else is our fault or config)
_TRANSIENT_API_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)

#: what the Web API (bot token) can do: post, edit in place, thread replies; never ``FOLLOW_UP``,
#: which exists for channels that cannot edit
API_ACTIONS = frozenset(NotificationAction) - {NotificationAction.FOLLOW_UP}
#: what an incoming webhook can do: post new top-level messages only
WEBHOOK_ACTIONS = POSTING_ACTIONS
_API = "api"
_WEBHOOK = "webhook"
#: actions that edit the announced message and also reply in its thread
_THREADED_ACTIONS = frozenset(
    {NotificationAction.ESCALATE, NotificationAction.RENOTIFY, NotificationAction.RESOLVE}
)
#: replies that must reach people not following the thread ("Also sent to the channel")
_BROADCAST_ACTIONS = frozenset({NotificationAction.ESCALATE, NotificationAction.RENOTIFY})
#: Slack's answers when the announced message (or its thread) no longer exists
_GONE_ERRORS = frozenset({"message_not_found", "thread_not_found", "channel_not_found"})
#: the longest detail a result carries (as in _results.result)
_DETAIL_LIMIT = 300


def _joined(detail: str, note: str) -> str:
    # Both parts are already secret-free result details; only the length needs keeping in bounds.
    text = f"{detail} ({note})"
    return text if len(text) <= _DETAIL_LIMIT else text[: _DETAIL_LIMIT - 1] + "…"


class _MalformedConnection(ValueError):
    """A connection whose settings cannot be what its owner meant."""


def _require_valid_extra(conn: Any) -> None:
    # Airflow reads unparsable extra JSON as {}: the bot token would silently go to
    # https://slack.com/api/ instead of the base_url the operator configured
    raw = (getattr(conn, "extra", None) or "").strip()
    if raw and raw != "{}" and not getattr(conn, "extra_dejson", None):
        raise _MalformedConnection(f"connection {conn.conn_id!r} has an extra that is not valid JSON")


@dataclass(frozen=True)
class _Prepared:
    """What a delivery needs from Airflow: the client of the transport to use, or why there is none.

    The clients are built from the connections (redirects refused, endpoints checked) and hold
    the credentials; nothing is left to look up when delivering.
    """

    #: ``"api"``, ``"webhook"``, or ``None`` when the look-up could not tell
    transport: str | None = None
    api: WebClient | None = field(default=None, repr=False)
    webhook: WebhookClient | None = field(default=None, repr=False)
    #: the result every delivery returns when neither client could be built
    failure: DeliveryResult | None = None


class SlackChannel:
    """Post notifications to Slack: Web API when its connection exists, else an incoming webhook.

    The Web API (``chat.postMessage`` with a bot token) is preferred because it returns the
    message ``ts`` -- needed later for threads, edits and buttons.  When the API connection
    does not exist the incoming-webhook connection is used instead.

    slack_sdk's own retry handlers are disabled: the alert manager owns retries, and two
    retry layers multiply into duplicate messages and unbounded callback time.

    Incident notifications (see :attr:`actions`): through the Web API ``ANNOUNCE`` posts the
    incident message and returns its ``ts`` and channel ID; ``UPDATE`` and ``ACKNOWLEDGE`` edit
    it; ``ESCALATE``, ``RENOTIFY`` and ``RESOLVE`` edit it (best effort) and reply in its
    thread.  A webhook posts every action as a new top-level message.

    :param name: channel name used in routing, results and metrics
    :param slack_conn_id: Slack API connection (password = bot token)
    :param webhook_conn_id: Slack incoming-webhook connection, the fallback
    :param channel: channel to post to through the Web API (webhooks post to their own channel)
    :param timeout: seconds to wait for Slack to connect and answer
    :param allowed_http_hosts: hosts that may be reached over plain http (local test servers)

    :meth:`prepare` reads the connections and builds the client on the calling thread;
    deliveries until the next ``prepare`` use that client and make no Task SDK call.
    """

    def __init__(
        self,
        name: str = "slack",
        *,
        slack_conn_id: str = "slack_api_default",
        webhook_conn_id: str = "slack_default",
        channel: str = "#alerts",
        timeout: float = 10.0,
        allowed_http_hosts: Iterable[str] = ("127.0.0.1", "localhost", "::1"),
    ) -> None:
        self.name = name
        self.slack_conn_id = slack_conn_id
        self.webhook_conn_id = webhook_conn_id
        self.channel = channel
        self.timeout = timeout
        self.allowed_http_hosts = tuple(allowed_http_hosts)
        # "api" or "webhook": the transport last resolved (by `actions` or a delivery), None until then
        self._transport: str | None = None
        # replaced whole by each prepare(), never changed: a delivery running in a worker thread
        # keeps the snapshot it read while the next alert prepares on the calling thread
        self._prepared: _Prepared | None = None

    @property
    def actions(self) -> frozenset[NotificationAction]:
        """What this channel can do, for the connection it will actually use.

        :data:`API_ACTIONS` (edits and threads) when the API connection resolves to a client,
        else :data:`WEBHOOK_ACTIONS` (new posts only).  The connection is looked up once and the
        choice cached; every delivery refreshes it with the transport it really used, so a
        connection added or removed later is picked up after one delivery.

        When the lookup itself fails (metadata database or secrets backend unavailable) the
        choice stays unknown and :data:`WEBHOOK_ACTIONS` is declared without caching: every
        action in it can be carried out by either transport, whereas declaring ``UPDATE`` for
        what turns out to be a webhook would post a new message per update.  Conversely a
        channel handed an action it did not declare still delivers it as well as it can
        (webhook: a new message; API: ``FOLLOW_UP`` as a new message).

        :return: the declared :class:`~airflow_alerting.model.NotificationAction` values
        """
        transport = self._transport or self._resolve_transport()
        return API_ACTIONS if transport == _API else WEBHOOK_ACTIONS

    def _resolve_transport(self) -> str | None:
        try:
            client = self._api_client()
        except _MalformedConnection:
            # The API connection exists; delivery will refuse it rather than fall back.
            self._transport = _API
            return _API
        except Exception as exc:  # a property must not raise; decide on the next call
            log.warning("slack channel %r: cannot look up its connection (%s)", self.name, type(exc).__name__)
            return None
        self._transport = _API if client is not None else _WEBHOOK
        return self._transport

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, slack_conn_id={self.slack_conn_id!r}, "
            f"webhook_conn_id={self.webhook_conn_id!r}, channel={self.channel!r})"
        )

    @property
    def _hook_timeout(self) -> int:
        # The hooks annotate the timeout as int, but slack_sdk hands it to urllib, which takes
        # fractions of a second; keep the caller's value rather than rounding it.
        return cast("int", self.timeout)

    def prepare(self) -> None:
        """Read the connections and build the client now, on the calling thread; never raises.

        The client (or the failure that stands for it) is kept until the next ``prepare``, so a
        connection edited in the UI is used from the next alert on; the transport it chose also
        refreshes :attr:`actions`.
        """
        prepared = self._resolve()
        if prepared.transport is not None:
            self._transport = prepared.transport
        self._prepared = prepared

    def _resolve(self) -> _Prepared:
        transport: str | None = None
        try:
            api = self._api_client()
            if api is not None:
                transport = _API
                require_secure_endpoint(api.base_url, self.allowed_http_hosts, "the Slack bot token")
                return _Prepared(_API, api=api)
            # the API connection is definitively absent: the webhook is the documented fallback
            transport = _WEBHOOK
            webhook = self._webhook_client()
            if webhook is None:
                detail = (
                    f"slack: no usable connection: neither {self.slack_conn_id!r} (API token) "
                    f"nor {self.webhook_conn_id!r} (webhook URL) is configured; add one in "
                    "Admin > Connections or with `airflow connections add`"
                )
                return _Prepared(
                    _WEBHOOK, failure=result(self.name, ok=False, retryable=False, detail=detail)
                )
            return _Prepared(_WEBHOOK, webhook=webhook)
        except _MalformedConnection as exc:
            # The API connection exists; delivery refuses it rather than fall back.
            return _Prepared(
                _API, failure=result(self.name, ok=False, retryable=False, detail=f"slack: {exc}")
            )
        except EndpointRefused as exc:
            failure = result(self.name, ok=False, retryable=False, detail=f"slack: {exc}")
            return _Prepared(transport, failure=failure)
        except ConnectionUnusable as exc:
            # a failed look-up (not a missing connection): which transport applies is unknown
            # for the API connection, and either way the alert must be kept for another attempt
            failure = result(self.name, ok=False, retryable=exc.retryable, detail=f"slack: {exc}")
            return _Prepared(transport, failure=failure)
        except Exception as exc:  # prepare() and deliver() report, never raise
            return _Prepared(transport, failure=exception_failure(self.name, exc, action="slack"))

    def deliver(self, notification: Notification) -> DeliveryResult:
        """Render and post one notification; never raises.

        Uses the client the last :meth:`prepare` built (no Task SDK call); unprepared, reads the
        connections itself.

        :param notification: what to send; its ``action`` says whether to post, edit or reply
        :return: ``ok`` with ``external_id`` = message ``ts`` and ``conversation`` = channel ID (Web
            API; for thread replies the reply's ``ts``) or ``None`` (webhook); on failure
            ``retryable`` and ``retry_after`` say whether and when to try again
        """
        # one read of the snapshot: a prepare() for another alert may replace it meanwhile
        prepared = self._prepared or self._resolve()
        if prepared.transport is not None:
            self._transport = prepared.transport
        try:
            if prepared.api is not None:
                return self._deliver_api(prepared.api, notification)
            if prepared.webhook is not None:
                # A webhook can neither edit nor thread: every action is a message of its own.
                return self._post_webhook(prepared.webhook, render_slack(notification))
        except Exception as exc:  # the Channel contract: report, never raise into the task
            return exception_failure(self.name, exc, action="slack")
        # _resolve sets a failure whenever it has no client
        return prepared.failure or result(self.name, ok=False, detail="slack: connection not read")

    def _api_client(self) -> WebClient | None:
        """The Web API client for :attr:`slack_conn_id`, or ``None`` when there is no API connection.

        :return: the client (redirects refused), ``None`` when the connection does not exist or
            has no token -- the documented signal to fall back to the webhook
        :raises ConnectionUnusable: when the look-up failed (the connection may well exist)
        :raises _MalformedConnection: when its extra is not valid JSON
        """
        from airflow.providers.common.compat.sdk import AirflowNotFoundException
        from airflow.providers.slack.hooks.slack import SlackHook

        try:
            connection = lookup(self.slack_conn_id, timeout=self.timeout)
        except ConnectionMissing as exc:
            if exc.malformed:  # falling back hides a broken connection someone meant to use
                log.warning("slack channel %r: %s; falling back to the webhook", self.name, exc)
            else:
                log.debug("Slack API connection %r not defined; falling back to webhook", self.slack_conn_id)
            return None

        class PreparedSlackHook(SlackHook):
            @classmethod
            def get_connection(cls, conn_id: str) -> Any:
                return connection  # read once, above: the hook must not ask the Task SDK again

        hook = PreparedSlackHook(
            slack_conn_id=self.slack_conn_id, timeout=self._hook_timeout, retry_handlers=[]
        )
        try:
            client = hook.client
        except AirflowNotFoundException:  # the hook's word for a connection without a token
            log.debug("Slack API connection %r has no token; falling back to webhook", self.slack_conn_id)
            return None
        _require_valid_extra(connection)
        # A redirect would carry the bot token to a host require_secure_endpoint never saw.
        refuse_redirects(client)
        return client

    def _webhook_client(self) -> WebhookClient | None:
        """The incoming-webhook client for :attr:`webhook_conn_id`, or ``None`` when there is none.

        :return: the client (endpoint checked, redirects refused), ``None`` when the connection
            does not exist or has no webhook URL
        :raises ConnectionUnusable: when the look-up failed
        :raises EndpointRefused: when the webhook URL is not one to send the secret to
        """
        from airflow.providers.common.compat.sdk import AirflowNotFoundException
        from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

        try:
            connection = lookup(self.webhook_conn_id, timeout=self.timeout)
        except ConnectionMissing as exc:
            if exc.malformed:
                log.warning("slack channel %r: %s", self.name, exc)
            return None

        class PreparedWebhookHook(SlackWebhookHook):
            @classmethod
            def get_connection(cls, conn_id: str) -> Any:
                return connection  # read once, above: the hook must not ask the Task SDK again

        hook = PreparedWebhookHook(
            slack_webhook_conn_id=self.webhook_conn_id, timeout=self._hook_timeout, retry_handlers=[]
        )
        try:
            client = hook.client
        except AirflowNotFoundException:  # the hook's word for a connection without a URL
            return None
        require_secure_endpoint(client.url, self.allowed_http_hosts, "the webhook URL")
        # A redirect would carry the webhook path (the secret) to a host never validated.
        refuse_redirects(client)
        return client

    def _deliver_api(self, client: WebClient, n: Notification) -> DeliveryResult:
        action = n.action
        if n.incident is None or action in (NotificationAction.ANNOUNCE, NotificationAction.FOLLOW_UP):
            return self._post_api(client, render_slack(n))[0]
        announced = n.announcement
        ref = announced.ref if announced is not None else None
        # chat.update needs the channel ID the announcement returned, not the configured name
        conversation = announced.conversation if announced is not None else None
        if action not in _THREADED_ACTIONS:  # UPDATE, ACKNOWLEDGE: the edit is the whole delivery
            if not ref or not conversation:
                detail = (
                    f"slack chat.update ({action.value}): incident {n.incident.id} has no announced "
                    "Slack message (ts and channel ID) to edit"
                )
                return result(self.name, ok=False, retryable=False, detail=detail)
            return self._update_api(client, conversation, ref, render_slack_incident(n))[0]
        if not ref or not conversation:
            # never announced here (or announced through a webhook): tell it as a new message
            return self._post_api(client, render_slack(n))[0]
        edit, edit_code = self._update_api(client, conversation, ref, render_slack_incident(n))
        if not edit.ok:
            # The reply below is what tells people; a stale original is a cosmetic problem.
            log.warning("slack channel %r: editing the announced message failed: %s", self.name, edit.detail)
        gone = edit_code if edit_code in _GONE_ERRORS else None
        reply: DeliveryResult | None = None
        if gone is None:
            reply, reply_code = self._post_api(
                client,
                render_slack_reply(n),
                channel=conversation,
                thread_ts=ref,
                broadcast=action in _BROADCAST_ACTIONS,
            )
            gone = reply_code if reply_code in _GONE_ERRORS else None
        if reply is None or gone is not None:
            # The announced message was deleted: a thread on it would be lost, a new message is not.
            posted = self._post_api(client, render_slack(n))[0]
            return replace(posted, detail=_joined(posted.detail, f"announced message gone: {gone}"))
        if not edit.ok:
            return replace(reply, detail=_joined(reply.detail, f"edit failed: {edit.detail}"))
        return reply

    def _api_call(
        self, client: WebClient, action: str, call: Callable[[], Any]
    ) -> tuple[Any, DeliveryResult | None, str | None]:
        """Run one Web API call: ``(response, None, None)`` or ``(None, failure, Slack error code)``."""
        from slack_sdk.errors import SlackApiError

        secrets = [client.token]
        try:
            return call(), None, None
        except SlackApiError as err:
            data = getattr(err.response, "data", None)
            code = safe_code(data.get("error")) if isinstance(data, dict) else None
            return None, self._api_error(err, action, secrets), code
        except Exception as exc:
            return None, exception_failure(self.name, exc, action=action, secrets=secrets), None

    def _post_api(
        self,
        client: WebClient,
        message: SlackMessage,
        *,
        channel: str | None = None,
        thread_ts: str | None = None,
        broadcast: bool = False,
    ) -> tuple[DeliveryResult, str | None]:
        target = channel or self.channel
        action = f"slack chat.postMessage to {target}" + (f" in thread {thread_ts}" if thread_ts else "")
        extra: dict[str, Any] = {}
        if thread_ts:
            extra["thread_ts"] = thread_ts
            if broadcast:
                extra["reply_broadcast"] = True
        response, failure, code = self._api_call(
            client,
            action,
            lambda: client.chat_postMessage(
                channel=target,
                text=message.text,
                blocks=list(message.blocks),
                unfurl_links=False,
                unfurl_media=False,
                **extra,
            ),
        )
        if failure is not None:
            return failure, code
        ts, channel_id = response.get("ts"), response.get("channel")
        ok = result(
            self.name,
            ok=True,
            detail=f"{action}: ok",
            external_id=str(ts) if ts else None,
            secrets=[client.token],
        )
        return replace(ok, conversation=str(channel_id) if channel_id else None), None

    def _update_api(
        self, client: WebClient, conversation: str, ts: str, message: SlackMessage
    ) -> tuple[DeliveryResult, str | None]:
        action = f"slack chat.update of {ts} in {conversation}"
        _, failure, code = self._api_call(
            client,
            action,
            lambda: client.chat_update(
                channel=conversation, ts=ts, text=message.text, blocks=list(message.blocks)
            ),
        )
        if failure is not None:
            return failure, code
        ok = result(self.name, ok=True, detail=f"{action}: ok", external_id=ts, secrets=[client.token])
        return replace(ok, conversation=conversation), None

    def _api_error(self, err: SlackApiError, action: str, secrets: list[str | None]) -> DeliveryResult:
        response = err.response
        status = int(getattr(response, "status_code", 0) or 0)
        data = getattr(response, "data", None)
        code = safe_code(data.get("error")) if isinstance(data, dict) else None
        retry_after = parse_retry_after(header(getattr(response, "headers", None), "Retry-After"))
        if status == 200:
            # Slack reports most errors as HTTP 200 with {"ok": false, "error": "..."}.
            return result(
                self.name,
                ok=False,
                retryable=code in _TRANSIENT_API_ERRORS,
                detail=f"{action}: {code or 'error'}",
                retry_after=retry_after,
                secrets=secrets,
            )
        return http_failure(
            self.name,
            status,
            action=action,
            code=code,
            retry_after=retry_after,
            secrets=secrets,
            location=header(getattr(response, "headers", None), "Location"),
        )

    def _post_webhook(self, client: WebhookClient, message: SlackMessage) -> DeliveryResult:
        action = "slack webhook"
        # The webhook URL *is* the credential; its path alone is enough to post.
        secrets = [client.url, urlsplit(client.url).path]
        # The hook's own send() turns every non-200 into a bare AirflowException, dropping the
        # status code and Retry-After header we need to classify the failure; its client (built
        # from the connection by the hook) returns them.
        try:
            response: Any = client.send(text=message.text, blocks=list(message.blocks))
        except Exception as exc:
            return exception_failure(self.name, exc, action=action, secrets=secrets)
        status = int(response.status_code)
        if status == 200:
            return result(self.name, ok=True, detail=f"{action}: ok", secrets=secrets)
        return http_failure(
            self.name,
            status,
            action=action,
            code=safe_code(response.body),
            retry_after=parse_retry_after(header(response.headers, "Retry-After")),
            secrets=secrets,
            location=header(response.headers, "Location"),
        )
