"""PagerDuty delivery (Events API v2)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

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
from airflow_alerting.render.pagerduty import render_pagerduty_event

if TYPE_CHECKING:
    from airflow.sdk import Connection

DEFAULT_EVENTS_URL = "https://events.pagerduty.com"
ENQUEUE_PATH = "/v2/enqueue"


def events_url(
    host: str | None,
    *,
    schema: str | None = None,
    port: int | None = None,
    allowed_http_hosts: Iterable[str] = (),
) -> str:
    """The ``/v2/enqueue`` URL for a connection's host, refusing insecure endpoints.

    :param host: connection host: empty for PagerDuty, ``events.eu.pagerduty.com``, or a URL
        with scheme such as ``http://127.0.0.1:8080``
    :param schema: connection schema, used as the URL scheme when ``host`` has none and it is
        ``http`` or ``https``
    :param port: connection port, used when ``host`` carries none
    :param allowed_http_hosts: host names that may be reached over plain ``http``
    :return: the absolute enqueue URL
    :raises EndpointRefused: for non-https endpoints outside ``allowed_http_hosts``
    """
    base = (host or "").strip() or DEFAULT_EVENTS_URL
    if "://" not in base:
        scheme = schema if schema in ("http", "https") else "https"
        base = f"{scheme}://{base}"
    try:
        parts = urlsplit(base)
        hostname = parts.hostname or ""
        has_port = parts.port is not None
    except ValueError as exc:
        raise EndpointRefused("the connection host is not a valid URL") from exc
    netloc = parts.netloc
    if port and not has_port:
        netloc = f"[{hostname}]:{port}" if ":" in hostname else f"{hostname}:{port}"
    if not hostname:
        raise EndpointRefused("the connection host has no host name")
    require_secure_endpoint(base, allowed_http_hosts, "the routing key")
    scheme = parts.scheme.lower()
    path = parts.path.rstrip("/")
    if not path.endswith(ENQUEUE_PATH):
        path += ENQUEUE_PATH
    return urlunsplit((scheme, netloc, path, "", ""))


class PagerDutyChannel:
    """Trigger and resolve PagerDuty incidents through the Events API v2.

    The routing key is the connection's password and the endpoint its host (default
    ``https://events.pagerduty.com``).  The provider's synchronous ``PagerdutyEventsHook``
    has no endpoint override and insists on https, so the rendered event is POSTed here with
    ``requests``; the same routing key and ``dedup_key`` are used for trigger and resolve,
    which is what PagerDuty needs to close the incident.

    :param name: channel name used in routing, results and metrics
    :param pagerduty_conn_id: connection of type ``pagerduty_events``
    :param timeout: seconds to wait for PagerDuty to connect, and again to answer
    :param allowed_http_hosts: hosts that may be reached over plain http (local test servers)
    """

    def __init__(
        self,
        name: str = "pagerduty",
        *,
        pagerduty_conn_id: str = "pagerduty_events_default",
        timeout: float = 10.0,
        allowed_http_hosts: Iterable[str] = ("127.0.0.1", "localhost", "::1"),
    ) -> None:
        self.name = name
        self.pagerduty_conn_id = pagerduty_conn_id
        self.timeout = timeout
        self.allowed_http_hosts = tuple(allowed_http_hosts)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, pagerduty_conn_id={self.pagerduty_conn_id!r})"

    def deliver(self, notification: Notification) -> DeliveryResult:
        """Send a trigger (or, for recoveries, a resolve) event; never raises.

        :param notification: what to send
        :return: ``ok`` with ``external_id`` = the dedup key; 400 is final, 429/5xx/network
            errors are ``retryable``
        """
        routing_key: str | None = None
        try:
            connection = self._connection()
            routing_key = _routing_key(connection)
            if not routing_key:
                detail = f"pagerduty: connection {self.pagerduty_conn_id!r} has no routing key (password)"
                return result(self.name, ok=False, retryable=False, detail=detail)
            url = events_url(
                connection.host,
                schema=connection.schema,
                port=connection.port,
                allowed_http_hosts=self.allowed_http_hosts,
            )
            event = render_pagerduty_event(notification, routing_key)
            return self._post(url, event, secrets=[routing_key])
        except EndpointRefused as exc:
            detail = f"pagerduty: {exc}"
            return result(self.name, ok=False, retryable=False, detail=detail, secrets=[routing_key])
        except Exception as exc:  # the Channel contract: report, never raise into the task
            action = f"pagerduty via {self.pagerduty_conn_id!r}"
            return exception_failure(self.name, exc, action=action, secrets=[routing_key])

    def _connection(self) -> Connection:
        from airflow.sdk import BaseHook

        return BaseHook.get_connection(self.pagerduty_conn_id)

    def _post(self, url: str, event: dict[str, Any], *, secrets: list[str | None]) -> DeliveryResult:
        import requests

        action = f"pagerduty {event['event_action']}"
        try:
            # No redirects: following one could carry the routing key to a host we never vetted.
            response = requests.post(url, json=event, timeout=self.timeout, allow_redirects=False)
        except Exception as exc:
            return exception_failure(self.name, exc, action=action, secrets=secrets)
        body = _json(response)
        if response.status_code in (200, 201, 202):
            dedup = body.get("dedup_key")
            external_id = dedup if isinstance(dedup, str) and dedup else str(event["dedup_key"])
            return result(self.name, ok=True, detail=f"{action}: accepted", external_id=external_id)
        return http_failure(
            self.name,
            response.status_code,
            action=action,
            code=safe_code(body.get("message")),
            retry_after=parse_retry_after(header(response.headers, "Retry-After")),
            secrets=secrets,
        )


def _routing_key(connection: Connection) -> str | None:
    if connection.password:
        return str(connection.password).strip() or None
    key = connection.extra_dejson.get("routing_key") or connection.extra_dejson.get("integration_key")
    return str(key).strip() if key else None


def _json(response: Any) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
