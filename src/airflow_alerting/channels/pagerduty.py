"""PagerDuty delivery (Events API v2)."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from airflow_alerting.channels._connections import ConnectionSnapshot, ConnectionUnusable, lookup
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
from airflow_alerting.model import DeliveryResult, Notification, NotificationAction
from airflow_alerting.render.pagerduty import render_pagerduty_event

log = logging.getLogger(__name__)

DEFAULT_EVENTS_URL = "https://events.pagerduty.com"
ENQUEUE_PATH = "/v2/enqueue"

#: PagerDuty pages, acknowledges and resolves; it has no follow-up messages or edits
PAGERDUTY_ACTIONS = frozenset(
    {
        NotificationAction.ANNOUNCE,
        NotificationAction.ESCALATE,
        NotificationAction.RENOTIFY,
        NotificationAction.ACKNOWLEDGE,
        NotificationAction.RESOLVE,
    }
)


def routing_key_digest(routing_key: str) -> str:
    """The first 12 hex digits of the routing key's SHA-256: tells keys apart, reveals nothing.

    Stored as the announcement's ``conversation`` so a later acknowledge/resolve can notice the
    connection's key changed since the trigger (PagerDuty ignores events with another key).

    :param routing_key: the integration's routing key
    :return: 12 lower-case hex digits
    """
    return hashlib.sha256(routing_key.encode("utf-8", "surrogatepass")).hexdigest()[:12]


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
    :return: the absolute enqueue URL, validated by
        :func:`~airflow_alerting.channels._results.require_secure_endpoint`: post exactly this
    :raises EndpointRefused: for non-https endpoints outside ``allowed_http_hosts``, and for
        hosts that HTTP clients could read differently (user info, backslashes, fragments,
        whitespace, percent-encoded or non-canonical URLs)
    """
    base = (host or "").strip() or DEFAULT_EVENTS_URL
    if "://" not in base:
        scheme = schema if schema in ("http", "https") else "https"
        base = f"{scheme}://{base}"
    # The configured endpoint is checked as given (so nothing that reads differently is silently
    # dropped on the way), then again as the exact URL that will be requested.
    require_secure_endpoint(base, allowed_http_hosts, "the routing key")
    parts = urlsplit(base)
    netloc = parts.netloc
    if port and parts.port is None:
        netloc = f"{netloc}:{int(port)}"  # a plain host or [IPv6], as validated above
    path = parts.path.rstrip("/")
    if not path.endswith(ENQUEUE_PATH):
        path += ENQUEUE_PATH
    return require_secure_endpoint(
        urlunsplit((parts.scheme, netloc, path, "", "")), allowed_http_hosts, "the routing key"
    )


@dataclasses.dataclass(frozen=True)
class _Prepared:
    """What a delivery needs from Airflow: the routing key and endpoint, or why there are none."""

    routing_key: str | None = dataclasses.field(default=None, repr=False)
    url: str | None = None
    #: the result every delivery returns when the connection is unusable
    failure: DeliveryResult | None = None


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

    :meth:`prepare` reads the connection (routing key and endpoint) on the calling thread;
    deliveries until the next ``prepare`` use what it read and make no Task SDK call.

    An incident is one PagerDuty incident (its ``dedup_key``): announced, escalated and
    re-notified with ``trigger`` events, then acknowledged and resolved.  Triggers report a
    digest of the routing key as ``conversation`` (:func:`routing_key_digest`), so an
    acknowledge/resolve sent after the key changed is logged: PagerDuty would ignore it.
    """

    #: what PagerDuty can do with an incident (it has no follow-ups and no edits)
    actions = PAGERDUTY_ACTIONS

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
        # replaced whole by each prepare(), never changed: a delivery running in a worker thread
        # keeps the snapshot it read while the next alert prepares on the calling thread
        self._prepared: _Prepared | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, pagerduty_conn_id={self.pagerduty_conn_id!r})"

    def prepare(self) -> None:
        """Read the connection now, on the calling thread, for the deliveries that follow; never raises.

        The routing key and events URL (or the failure that stands for them) are kept until the
        next ``prepare``, so a connection edited in the UI is used from the next alert on.
        """
        self._prepared = self._resolve()

    def _resolve(self) -> _Prepared:
        action = f"pagerduty via {self.pagerduty_conn_id!r}"
        routing_key: str | None = None
        try:
            connection = lookup(self.pagerduty_conn_id, timeout=self.timeout)
            routing_key = _routing_key(connection)
            if not routing_key:
                detail = (
                    f"pagerduty: connection {self.pagerduty_conn_id!r} has no routing key (password): "
                    "set it to the integration's Events API v2 key"
                )
                return _Prepared(failure=result(self.name, ok=False, retryable=False, detail=detail))
            url = events_url(
                connection.host,
                schema=connection.schema,
                port=connection.port,
                allowed_http_hosts=self.allowed_http_hosts,
            )
        except ConnectionUnusable as exc:
            detail = f"{action}: {exc}"
            return _Prepared(failure=result(self.name, ok=False, retryable=exc.retryable, detail=detail))
        except EndpointRefused as exc:
            detail = f"pagerduty: {exc}"
            failure = result(self.name, ok=False, retryable=False, detail=detail, secrets=[routing_key])
            return _Prepared(failure=failure)
        except Exception as exc:  # prepare() and deliver() report, never raise
            return _Prepared(failure=exception_failure(self.name, exc, action=action, secrets=[routing_key]))
        return _Prepared(routing_key=routing_key, url=url)

    def deliver(self, notification: Notification) -> DeliveryResult:
        """Send a trigger, acknowledge or resolve event; never raises.

        Uses what the last :meth:`prepare` read (no Task SDK call); unprepared, reads the
        connection itself.

        :param notification: what to send
        :return: ``ok`` with ``external_id`` = the dedup key (and, for triggers, ``conversation``
            = :func:`routing_key_digest`); 400 is final, 429/5xx/network errors are ``retryable``
        """
        # one read of the snapshot: a prepare() for another alert may replace it meanwhile
        prepared = self._prepared or self._resolve()
        routing_key, url = prepared.routing_key, prepared.url
        if prepared.failure is not None or routing_key is None or url is None:
            # _resolve sets a failure whenever it has no key or no URL
            return prepared.failure or result(self.name, ok=False, detail="pagerduty: connection not read")
        try:
            event = render_pagerduty_event(notification, routing_key)
            digest = routing_key_digest(routing_key)
            key_changed = self._key_changed(notification, event, digest)
            outcome = self._post(url, event, secrets=[routing_key])
            return _with_conversation(outcome, event, digest, key_changed=key_changed)
        except Exception as exc:  # the Channel contract: report, never raise into the task
            action = f"pagerduty via {self.pagerduty_conn_id!r}"
            return exception_failure(self.name, exc, action=action, secrets=[routing_key])

    def _key_changed(self, notification: Notification, event: dict[str, Any], digest: str) -> bool:
        """Warn when an acknowledge/resolve goes out with another routing key than the trigger's.

        The event is still sent -- the old key may be gone, and there is nothing better to do --
        but PagerDuty only acts on it with the trigger's key, so the incident will stay open
        there until someone closes it by hand.
        """
        announced = notification.announcement.conversation if notification.announcement else None
        if event["event_action"] == "trigger" or not announced or announced == digest:
            return False
        log.warning(
            "pagerduty %s for %s: the routing key of connection %r changed since the incident was "
            "triggered (key digest %s, now %s); PagerDuty ignores events sent with another key, so "
            "the PagerDuty incident stays as it is until it is closed there",
            event["event_action"],
            event["dedup_key"],
            self.pagerduty_conn_id,
            announced,
            digest,
        )
        return True

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
            location=header(response.headers, "Location"),
        )


def _with_conversation(
    outcome: DeliveryResult, event: dict[str, Any], digest: str, *, key_changed: bool
) -> DeliveryResult:
    if not outcome.ok:
        return outcome
    if event["event_action"] == "trigger":
        # Stored with the announcement, so acknowledge/resolve can tell whether the key changed.
        return dataclasses.replace(outcome, conversation=digest)
    if key_changed:
        detail = f"{outcome.detail}; the routing key changed since the trigger, PagerDuty ignores this event"
        return dataclasses.replace(outcome, detail=detail)
    return outcome


def _routing_key(connection: ConnectionSnapshot) -> str | None:
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
