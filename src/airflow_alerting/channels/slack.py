"""Slack delivery through the official Slack provider hooks."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

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
from airflow_alerting.model import DeliveryResult, Notification
from airflow_alerting.render.slack import SlackMessage, render_slack

if TYPE_CHECKING:
    from slack_sdk import WebClient
    from slack_sdk.errors import SlackApiError

log = logging.getLogger(__name__)

#: ``ok: false`` errors that Slack documents as transient (everything else is our fault or config)
_TRANSIENT_API_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)


class _MalformedConnection(ValueError):
    """A connection whose settings cannot be what its owner meant."""


def _require_valid_extra(conn: Any) -> None:
    # Airflow reads unparsable extra JSON as {}: the bot token would silently go to
    # https://slack.com/api/ instead of the base_url the operator configured
    raw = (getattr(conn, "extra", None) or "").strip()
    if raw and raw != "{}" and not getattr(conn, "extra_dejson", None):
        raise _MalformedConnection(f"connection {conn.conn_id!r} has an extra that is not valid JSON")


class SlackChannel:
    """Post notifications to Slack: Web API when its connection exists, else an incoming webhook.

    The Web API (``chat.postMessage`` with a bot token) is preferred because it returns the
    message ``ts`` -- needed later for threads, edits and buttons.  When the API connection
    does not exist the incoming-webhook connection is used instead.

    slack_sdk's own retry handlers are disabled: the alert manager owns retries, and two
    retry layers multiply into duplicate messages and unbounded callback time.

    :param name: channel name used in routing, results and metrics
    :param slack_conn_id: Slack API connection (password = bot token)
    :param webhook_conn_id: Slack incoming-webhook connection, the fallback
    :param channel: channel to post to through the Web API (webhooks post to their own channel)
    :param timeout: seconds to wait for Slack to connect and answer
    :param allowed_http_hosts: hosts that may be reached over plain http (local test servers)
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

    def deliver(self, notification: Notification) -> DeliveryResult:
        """Render and post one notification; never raises.

        :param notification: what to send
        :return: ``ok`` with ``external_id`` = message ``ts`` (Web API) or ``None`` (webhook);
            on failure ``retryable`` and ``retry_after`` say whether and when to try again
        """
        try:
            message = render_slack(notification)
            client = self._api_client()
            if client is not None:
                require_secure_endpoint(client.base_url, self.allowed_http_hosts, "the Slack bot token")
                return self._post_api(client, message)
            return self._post_webhook(message)
        except (EndpointRefused, _MalformedConnection) as exc:
            return result(self.name, ok=False, retryable=False, detail=f"slack: {exc}")
        except Exception as exc:  # the Channel contract: report, never raise into the task
            return exception_failure(self.name, exc, action="slack")

    def _api_client(self) -> WebClient | None:
        from airflow.providers.common.compat.sdk import AirflowNotFoundException
        from airflow.providers.slack.hooks.slack import SlackHook

        hook = SlackHook(slack_conn_id=self.slack_conn_id, timeout=self._hook_timeout, retry_handlers=[])
        try:
            # Resolving the client fetches the connection; a missing one (or one without a
            # token) is the documented signal to fall back to the webhook.
            client = hook.client
        except AirflowNotFoundException:
            log.debug("Slack API connection %r not usable; falling back to webhook", self.slack_conn_id)
            return None
        _require_valid_extra(hook.get_connection(self.slack_conn_id))
        return client

    def _post_api(self, client: WebClient, message: SlackMessage) -> DeliveryResult:
        from slack_sdk.errors import SlackApiError

        action = f"slack chat.postMessage to {self.channel}"
        secrets = [client.token]
        try:
            response = client.chat_postMessage(
                channel=self.channel,
                text=message.text,
                blocks=list(message.blocks),
                unfurl_links=False,
                unfurl_media=False,
            )
        except SlackApiError as err:
            return self._api_error(err, action, secrets)
        except Exception as exc:
            return exception_failure(self.name, exc, action=action, secrets=secrets)
        ts = response.get("ts")
        return result(
            self.name, ok=True, detail=f"{action}: ok", external_id=str(ts) if ts else None, secrets=secrets
        )

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
            self.name, status, action=action, code=code, retry_after=retry_after, secrets=secrets
        )

    def _post_webhook(self, message: SlackMessage) -> DeliveryResult:
        from airflow.providers.common.compat.sdk import AirflowNotFoundException
        from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

        action = "slack webhook"
        hook = SlackWebhookHook(
            slack_webhook_conn_id=self.webhook_conn_id,
            timeout=self._hook_timeout,
            retry_handlers=[],
        )
        try:
            client = hook.client
        except AirflowNotFoundException:
            detail = (
                f"slack: no usable connection: neither {self.slack_conn_id!r} (API token) "
                f"nor {self.webhook_conn_id!r} (webhook URL) is configured"
            )
            return result(self.name, ok=False, retryable=False, detail=detail)
        # The webhook URL *is* the credential; its path alone is enough to post.
        secrets = [client.url, urlsplit(client.url).path]
        require_secure_endpoint(client.url, self.allowed_http_hosts, "the webhook URL")
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
        )
