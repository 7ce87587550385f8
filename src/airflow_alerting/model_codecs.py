"""JSON codecs for the pipeline's records, used by the state stores and the outbox.

The notification codec leaves the alert's params out: they were used by classification,
which is stored, and raw values can hold secrets.  Every name is re-exported by
:mod:`airflow_alerting.model`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from types import MappingProxyType
from typing import Any

from airflow_alerting.incidents.model import Announcement, Incident
from airflow_alerting.model import Alert, AlertKind, Classification, Severity, iso, parse_datetime
from airflow_alerting.model_delivery import (
    Decision,
    DecisionReason,
    Escalation,
    Notification,
    NotificationAction,
    SuppressionSummary,
)


def suppression_to_json(summary: SuppressionSummary) -> dict[str, Any]:
    """Serialise a suppression summary for the state stores."""
    return {
        "count": summary.count,
        "since": iso(summary.since),
        "until": iso(summary.until),
        "sources": list(summary.sources),
    }


def suppression_from_json(data: Any) -> SuppressionSummary:
    """Inverse of :func:`suppression_to_json`; anything malformed reads as "nothing suppressed"."""
    if not isinstance(data, Mapping):
        return SuppressionSummary()
    return SuppressionSummary(
        count=int(data.get("count", 0)),
        since=parse_datetime(data.get("since")),
        until=parse_datetime(data.get("until")),
        sources=tuple(str(s) for s in data.get("sources", ())),
    )


def notification_to_json(n: Notification) -> dict[str, Any]:
    """Serialise a notification (for the outbox); the alert's params are left out (they can hold secrets)."""
    a = n.alert
    return {
        "alert": {
            "dag_id": a.dag_id,
            "kind": a.kind.value,
            "task_id": a.task_id,
            "run_id": a.run_id,
            "map_index": a.map_index,
            "try_number": a.try_number,
            "max_tries": a.max_tries,
            "exception_type": a.exception_type,
            "exception_mro": list(a.exception_mro),
            "message": a.message,
            "owner": a.owner,
            "tags": sorted(a.tags),
            # params were used by classification, which is stored; raw values can hold secrets
            "params": {},
            "downstream_count": a.downstream_count,
            "logical_date": iso(a.logical_date),
            "occurred_at": iso(a.occurred_at),
            "hostname": a.hostname,
            "log_url": a.log_url,
            "detected_by": a.detected_by,
            "emails": list(a.emails),
            "title": a.title,
        },
        "classification": {
            "severity": n.classification.severity.label,
            "reasons": list(n.classification.reasons),
            "silent": n.classification.silent,
            "rules": list(n.classification.rules),
        },
        "fingerprint": n.fingerprint,
        "channel": n.channel,
        "decision": {
            "send": n.decision.send,
            "reason": n.decision.reason.value,
            "suppressed": suppression_to_json(n.decision.suppressed),
            "detail": n.decision.detail,
        },
        "escalation": None
        if n.escalation is None
        else {
            "from": n.escalation.from_severity.label,
            "to": n.escalation.to_severity.label,
            "occurrences": n.escalation.occurrences,
            "window_seconds": n.escalation.window.total_seconds(),
        },
        "airflow_url": n.airflow_url,
        "resolved": n.resolved,
        "opened_at": iso(n.opened_at),
        "incident": n.incident.to_json() if n.incident is not None else None,
        "action": n.action.value,
        "announcement": n.announcement.to_json() if n.announcement is not None else None,
    }


def notification_from_json(data: Mapping[str, Any]) -> Notification:
    """Inverse of :func:`notification_to_json`."""
    a = data["alert"]
    alert = Alert(
        dag_id=str(a["dag_id"]),
        kind=AlertKind(a["kind"]),
        task_id=a.get("task_id"),
        run_id=a.get("run_id"),
        map_index=int(a.get("map_index", -1)),
        try_number=int(a.get("try_number", 1)),
        max_tries=int(a.get("max_tries", 0)),
        exception_type=a.get("exception_type"),
        exception_mro=tuple(a.get("exception_mro", ())),
        message=str(a.get("message", "")),
        owner=a.get("owner"),
        tags=frozenset(a.get("tags", ())),
        params=MappingProxyType(dict(a.get("params", {}))),
        downstream_count=int(a.get("downstream_count", 0)),
        logical_date=parse_datetime(a.get("logical_date")),
        occurred_at=parse_datetime(a.get("occurred_at")),
        hostname=a.get("hostname"),
        log_url=a.get("log_url"),
        detected_by=str(a.get("detected_by", "worker")),
        emails=tuple(a.get("emails", ())),
        title=str(a.get("title", "")),
    )
    c = data["classification"]
    d = data["decision"]
    e = data.get("escalation")
    incident = data.get("incident")
    announcement = data.get("announcement")
    return Notification(
        alert=alert,
        classification=Classification(
            Severity.parse(c["severity"]),
            tuple(c.get("reasons", ())),
            bool(c.get("silent")),
            tuple(c.get("rules", ())),
        ),
        fingerprint=str(data["fingerprint"]),
        channel=str(data["channel"]),
        decision=Decision(
            bool(d["send"]),
            DecisionReason(d["reason"]),
            suppression_from_json(d.get("suppressed")),
            str(d.get("detail", "")),
        ),
        escalation=None
        if not e
        else Escalation(
            Severity.parse(e["from"]),
            Severity.parse(e["to"]),
            int(e["occurrences"]),
            timedelta(seconds=float(e["window_seconds"])),
        ),
        airflow_url=data.get("airflow_url"),
        resolved=bool(data.get("resolved")),
        opened_at=parse_datetime(data.get("opened_at")),
        incident=Incident.from_json(incident) if incident else None,
        action=NotificationAction(data.get("action", "announce")),
        announcement=Announcement.from_json(announcement) if announcement else None,
    )
