"""PagerDuty Events API v2 rendering.

https://developer.pagerduty.com/docs/events-api-v2/trigger-events/
"""

from __future__ import annotations

import hashlib
from typing import Any

from airflow_alerting.model import Notification, Severity
from airflow_alerting.render import text as t
from airflow_alerting.render.redact import sanitize

MAX_DEDUP_KEY = 255
MAX_SUMMARY = 1024
#: custom_details is free-form, but a page should not carry a whole log; 512 KB is the hard cap
MAX_DETAIL = 8000
MAX_FIELD = 255

SEVERITY_MAP: dict[Severity, str] = {
    Severity.CRITICAL: "critical",
    Severity.HIGH: "error",
    Severity.MEDIUM: "warning",
    Severity.LOW: "info",
}


def dedup_key(n: Notification) -> str:
    """The incident key sent to PagerDuty, at most 255 characters.

    :param n: the notification
    :return: ``n.dedup_key``, or a hash of it when it would be too long (trigger and resolve
        always compute the same value, so they still meet)
    """
    key = n.dedup_key
    if len(key) <= MAX_DEDUP_KEY:
        return key
    return "airflow-alerting/sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def _summary(n: Notification) -> str:
    summary = t.title(n)
    message = t.message(n)
    if message and not n.resolved:
        summary += ": " + message.splitlines()[0]
    return t.truncate(t.one_line(summary), MAX_SUMMARY)


def _custom_details(n: Notification) -> dict[str, Any]:
    alert = n.alert
    details: dict[str, Any] = {label.lower(): value for label, value in t.details(n)}
    details["severity"] = n.severity.label
    details["reasons"] = [sanitize(r) for r in n.classification.reasons]
    details["fingerprint"] = n.fingerprint
    details["kind"] = alert.kind.value
    details["detected_by"] = sanitize(alert.detected_by)
    if alert.tags:
        details["tags"] = sorted(sanitize(tag) for tag in alert.tags)
    if alert.logical_date is not None:
        details["logical_date"] = alert.logical_date.isoformat()
    for key, value in (
        ("error", t.error_text(n, MAX_DETAIL)),
        ("escalation", t.escalation_text(n)),
        ("suppressed", t.suppressed_text(n)),
    ):
        if value:
            details[key] = value
    return details


def render_pagerduty_event(n: Notification, routing_key: str) -> dict[str, Any]:
    """Build the Events API v2 request body for a notification.

    Recoveries (``n.resolved``) become ``resolve`` events carrying only the routing key and
    dedup key, which is all PagerDuty needs to close the incident opened by the trigger.

    :param n: the notification
    :param routing_key: the integration's routing key (a secret; it only goes into the body)
    :return: the JSON-serialisable event
    """
    if n.resolved:
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": dedup_key(n)}
    alert = n.alert
    payload: dict[str, Any] = {
        "summary": _summary(n),
        "source": t.truncate(sanitize(alert.hostname), MAX_FIELD) or "airflow",
        "severity": SEVERITY_MAP[n.severity],
        "component": t.truncate(sanitize(alert.dag_id), MAX_FIELD),
        "group": t.truncate(sanitize(alert.task_id or alert.dag_id), MAX_FIELD),
        "custom_details": _custom_details(n),
    }
    if alert.exception_type:
        payload["class"] = t.truncate(sanitize(alert.exception_type), MAX_FIELD)
    if alert.occurred_at is not None:
        payload["timestamp"] = alert.occurred_at.isoformat()
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key(n),
        "payload": payload,
        "client": "Airflow",
    }
    url = t.link(n)
    if url:
        event["links"] = [{"href": url, "text": t.link_label(n)}]
    return event
