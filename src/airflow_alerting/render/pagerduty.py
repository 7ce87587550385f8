"""PagerDuty Events API v2 rendering.

https://developer.pagerduty.com/docs/events-api-v2/trigger-events/

Notifications about an :class:`~airflow_alerting.incidents.model.Incident` use the incident's
``dedup_key`` for every event, so one outage is one PagerDuty incident: ``ANNOUNCE``,
``ESCALATE`` and ``RENOTIFY`` are ``trigger`` events (adding an alert to the open incident),
``ACKNOWLEDGE`` and ``RESOLVE`` are ``acknowledge`` and ``resolve`` events.
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import urlsplit

from airflow_alerting.incidents.model import Incident
from airflow_alerting.model import Notification, NotificationAction, Severity
from airflow_alerting.render import _incident as inc
from airflow_alerting.render import text as t
from airflow_alerting.render.redact import sanitize

MAX_DEDUP_KEY = 255
MAX_SUMMARY = 1024
#: custom_details is free-form, but a page should not carry a whole log; 512 KB is the hard cap
MAX_DETAIL = 8000
MAX_FIELD = 255
#: affected DAGs named in an incident's custom_details (the snapshot carries at most 25)
DETAIL_DAGS = 25
#: affected task instances named in an incident's custom_details (the snapshot carries at most 50)
DETAIL_TASKS = 25

#: incident actions that become ``trigger`` events; the others map to their own event action
TRIGGER_ACTIONS = frozenset(
    {NotificationAction.ANNOUNCE, NotificationAction.ESCALATE, NotificationAction.RENOTIFY}
)
_EVENT_ACTION = {
    NotificationAction.ACKNOWLEDGE: "acknowledge",
    NotificationAction.RESOLVE: "resolve",
}

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


def event_action(n: Notification) -> str:
    """The Events API ``event_action`` a notification becomes: trigger, acknowledge or resolve.

    :param n: the notification
    :return: ``"resolve"`` for recoveries and ``RESOLVE``, ``"acknowledge"`` for ``ACKNOWLEDGE``,
        otherwise ``"trigger"`` (the channel does not declare ``FOLLOW_UP``/``UPDATE``; were
        they sent, a trigger only refreshes the open incident's alert, which is harmless)
    """
    if n.resolved:
        return "resolve"
    if n.incident is None:
        return "trigger"
    return _EVENT_ACTION.get(n.action, "trigger")


def _incident_summary(incident: Incident) -> str:
    # Title first: PagerDuty cuts long summaries in notifications, and the cause matters most.
    counts = f" ({inc.counts(incident)})"
    return t.truncate(inc.title(incident), MAX_SUMMARY - len(counts)) + counts


def _incident_details(n: Notification, incident: Incident) -> dict[str, Any]:
    dags, dags_more = inc.dag_sample(incident, DETAIL_DAGS)
    members, members_more = inc.member_sample(incident, DETAIL_TASKS)
    details: dict[str, Any] = {
        "incident": inc.name(incident.id),
        "summary": inc.counts(incident),
        "counts": {
            "failures": incident.failures,
            "tasks": incident.task_count,
            "task_instances": incident.member_count,
            "failing": incident.failing_count,
            "dags": incident.dag_count,
            "silenced": incident.silenced,
        },
        "dags": dags,
        "tasks": [t.truncate(inc.member_line(m), MAX_FIELD) for m in members],
        "first_seen": inc.when(incident.opened_at),
        "last_seen": inc.when(incident.last_seen_at),
        "severity": incident.severity.label,
        "severity_reasons": [
            t.truncate(t.one_line(sanitize(r)), MAX_FIELD) for r in incident.severity_reasons[-10:]
        ],
        "state": incident.state.value,
        "fingerprint": n.fingerprint,
    }
    if dags_more:
        details["dags_not_shown"] = dags_more
    if members_more:
        details["task_instances_not_shown"] = members_more
    note = inc.action_note(n, incident)
    if note:
        details["note"] = note
    error = t.error_text(n, MAX_DETAIL)
    if error:
        details["latest_error"] = error
        details["latest_failure"] = {label.lower(): value for label, value in t.details(n)}
    return details


def _render_incident_trigger(n: Notification, incident: Incident, routing_key: str) -> dict[str, Any]:
    alert = n.alert
    url = t.link(n)
    # The incident spans workers (and often DAGs): the Airflow deployment is its source.
    host = urlsplit(url).hostname if url else None
    payload: dict[str, Any] = {
        "summary": _incident_summary(incident),
        "source": t.truncate(host or "airflow", MAX_FIELD),
        "severity": SEVERITY_MAP[incident.severity],
        "custom_details": _incident_details(n, incident),
    }
    if incident.dag_count == 1 and incident.dag_ids:
        payload["component"] = t.truncate(inc.name(incident.dag_ids[0]), MAX_FIELD)
    if alert.exception_type:
        payload["class"] = t.truncate(sanitize(alert.exception_type), MAX_FIELD)
    payload["timestamp"] = (alert.occurred_at or incident.last_seen_at).isoformat()
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key(n),
        "payload": payload,
        "client": "Airflow",
    }
    if url:
        event["links"] = [{"href": url, "text": t.link_label(n)}]
    return event


def render_pagerduty_event(n: Notification, routing_key: str) -> dict[str, Any]:
    """Build the Events API v2 request body for a notification.

    Recoveries (``n.resolved``, or ``RESOLVE``) become ``resolve`` events, and ``ACKNOWLEDGE``
    ``acknowledge`` events, carrying only the routing key and dedup key, which is all PagerDuty
    needs to find the incident opened by the trigger.  Incident triggers summarise the incident
    (title and counts) and carry its counts, samples of DAGs and tasks, first/last seen,
    severity reasons and the latest error in ``custom_details``.

    :param n: the notification
    :param routing_key: the integration's routing key (a secret; it only goes into the body)
    :return: the JSON-serialisable event
    """
    action = event_action(n)
    if action != "trigger":
        return {"routing_key": routing_key, "event_action": action, "dedup_key": dedup_key(n)}
    if n.incident is not None:
        return _render_incident_trigger(n, n.incident, routing_key)
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
