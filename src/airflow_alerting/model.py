"""The data that flows through the alert pipeline.

Everything here is a frozen dataclass or an enum with no Airflow imports, so every
stage can be unit-tested without an Airflow installation being initialised.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_alerting.incidents.model import Announcement, Incident

_EMPTY: Mapping[str, Any] = MappingProxyType({})


class Severity(enum.IntEnum):
    """How bad a failure is; higher is worse so severities compare naturally."""

    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @property
    def label(self) -> str:
        """Lower-case name used in policies, messages and metrics (``"high"``)."""
        return self.name.lower()

    def raised(self, levels: int = 1) -> Severity:
        """Return the severity ``levels`` steps higher, capped at :attr:`CRITICAL`."""
        return Severity(min(int(Severity.CRITICAL), max(int(Severity.LOW), int(self) + levels)))

    @classmethod
    def parse(cls, value: str | int | Severity) -> Severity:
        """Parse ``"high"``/``"HIGH"``/``3``/``Severity.HIGH``; raise ``ValueError`` naming the choices."""
        if isinstance(value, Severity):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(value)
        if isinstance(value, str) and value.strip().upper() in cls.__members__:
            return cls[value.strip().upper()]
        choices = ", ".join(s.label for s in cls)
        raise ValueError(f"unknown severity {value!r}; expected one of: {choices}")


class AlertKind(str, enum.Enum):
    """Which Airflow event produced the alert."""

    TASK_FAILURE = "task_failure"
    TASK_RETRY = "task_retry"
    TASK_SUCCESS = "task_success"
    DAG_FAILURE = "dag_failure"
    DAG_SUCCESS = "dag_success"
    #: an alert built by user code through :meth:`AlertManager.send_alert`
    CUSTOM = "custom"

    @property
    def is_recovery(self) -> bool:
        return self in (AlertKind.TASK_SUCCESS, AlertKind.DAG_SUCCESS)


@dataclass(frozen=True)
class Alert:
    """One occurrence of something worth telling a human about.

    Built from an Airflow callback context by :func:`airflow_alerting.context.alert_from_context`
    or directly by user code.  Text fields hold *untrusted* data (exception messages come from
    arbitrary code); renderers escape them and never treat them as templates.
    """

    dag_id: str
    kind: AlertKind = AlertKind.TASK_FAILURE
    task_id: str | None = None
    run_id: str | None = None
    map_index: int = -1
    try_number: int = 1
    #: Airflow's ``max_tries`` (== ``retries`` for a fresh task instance)
    max_tries: int = 0
    exception_type: str | None = None
    #: qualified names of the exception's classes, most derived first (its MRO without ``object``)
    exception_mro: tuple[str, ...] = ()
    message: str = ""
    owner: str | None = None
    tags: frozenset[str] = frozenset()
    params: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    #: number of tasks downstream of the failed one (all of them wait for it)
    downstream_count: int = 0
    logical_date: datetime | None = None
    occurred_at: datetime | None = None
    hostname: str | None = None
    log_url: str | None = None
    #: where the callback ran: ``"worker"``, ``"dag_processor"`` (scheduler-detected failures) or ``"user"``
    detected_by: str = "worker"
    #: the task's ``email`` addresses, used when no recipients are configured
    emails: tuple[str, ...] = ()
    #: alert title given by user code (``send_alert``); generated from the rest when empty
    title: str = ""

    @property
    def is_final_try(self) -> bool:
        """``True`` when Airflow will not run this task again.

        Decided from ``try_number`` vs ``max_tries`` rather than from the callback type,
        because Airflow has fired failure callbacks while retries remained (apache/airflow#65400).
        """
        if self.kind is AlertKind.TASK_RETRY:
            return False
        if self.kind is not AlertKind.TASK_FAILURE:
            # DAG-level contexts carry the last task's try numbers, which say nothing about the DAG run
            return True
        return self.try_number > self.max_tries

    @property
    def source(self) -> str:
        """``dag_id.task_id`` (plus ``[map_index]`` for mapped tasks), or the dag id alone."""
        if self.task_id is None:
            return self.dag_id
        suffix = f"[{self.map_index}]" if self.map_index >= 0 else ""
        return f"{self.dag_id}.{self.task_id}{suffix}"

    @property
    def incident_key(self) -> str:
        """Identity used to resolve open alerts when the task (or DAG) succeeds later.

        Deliberately ignores the run and map index: a later successful run recovers
        the failure of an earlier one.
        """
        return f"{self.dag_id}.{self.task_id}" if self.task_id else self.dag_id

    @property
    def occurrence_id(self) -> str:
        """Identity of this exact callback, used to make duplicate callbacks idempotent."""
        if self.kind is AlertKind.CUSTOM:
            # user code calling send_alert twice means two alerts, not a repeated callback
            stamp = self.occurred_at.isoformat() if self.occurred_at else ""
            return f"{self.dag_id}|{self.task_id}|custom|{stamp}"
        return (
            f"{self.dag_id}|{self.task_id}|{self.run_id}|{self.map_index}|{self.try_number}|{self.kind.value}"
        )

    @property
    def recurrence_group(self) -> str:
        """Occurrences that are one recurrence for escalation: every mapped instance and try of one run."""
        if self.kind is AlertKind.CUSTOM or self.run_id is None:
            return self.occurrence_id
        return f"{self.dag_id}|{self.task_id}|{self.run_id}|{self.kind.value}"


@dataclass(frozen=True)
class Classification:
    """A severity and the human-readable reasons that produced it."""

    severity: Severity
    reasons: tuple[str, ...]
    #: ``True`` when policy says this alert is recorded but never sent (e.g. a retry under ``retry: silent``)
    silent: bool = False
    #: names of the rules that matched, in order
    rules: tuple[str, ...] = ()


class DecisionReason(str, enum.Enum):
    """Why a notification was sent or held back; also the ``reason`` tag of the metrics."""

    FIRST = "first"
    NO_WINDOW = "no_window"
    WINDOW_ELAPSED = "window_elapsed"
    ESCALATED = "escalated"
    RESOLVED = "resolved"
    THROTTLED = "throttled"
    IN_FLIGHT = "in_flight"
    DUPLICATE_CALLBACK = "duplicate_callback"
    SILENCED = "silenced"
    NOT_ROUTED = "not_routed"
    NOTHING_TO_RESOLVE = "nothing_to_resolve"
    STATE_UNAVAILABLE = "state_unavailable"
    STATE_UNAVAILABLE_CAPPED = "state_unavailable_capped"
    #: delivered to the policy's fallback channel because a channel failed for a critical alert
    FALLBACK = "fallback"
    #: delivered later from the outbox after failing at alert time
    REDELIVERED = "redelivered"
    #: a follow-up summary of occurrences held back since the last notification
    SUMMARY = "summary"
    #: folded into an incident already announced on this channel (counted in its members)
    CORRELATED = "correlated"
    #: the announced message was edited in place to show the incident's current state
    UPDATED = "updated"
    #: an unacknowledged critical incident announced again after ``incidents.repeat_interval``
    REPEATED = "repeated"
    #: someone acknowledged the incident
    ACKNOWLEDGED = "acknowledged"


SENDING_REASONS = frozenset(
    {
        DecisionReason.FIRST,
        DecisionReason.NO_WINDOW,
        DecisionReason.WINDOW_ELAPSED,
        DecisionReason.ESCALATED,
        DecisionReason.RESOLVED,
        DecisionReason.STATE_UNAVAILABLE,
    }
)


@dataclass(frozen=True)
class SuppressionSummary:
    """What was folded into a notification because earlier occurrences were held back."""

    count: int = 0
    since: datetime | None = None
    until: datetime | None = None
    #: distinct ``dag.task`` sources of the suppressed occurrences (bounded)
    sources: tuple[str, ...] = ()

    @property
    def period(self) -> timedelta | None:
        if self.since is None or self.until is None:
            return None
        return self.until - self.since


@dataclass(frozen=True)
class Decision:
    """The throttle's verdict for one (fingerprint, channel)."""

    send: bool
    reason: DecisionReason
    suppressed: SuppressionSummary = field(default_factory=SuppressionSummary)
    detail: str = ""


class NotificationAction(str, enum.Enum):
    """What a notification does to the conversation about its incident on one channel.

    Channels declare the actions they can perform (:attr:`Channel.actions`); the manager sends
    each channel only what it can do, e.g. ``UPDATE`` only where a message can be edited.
    """

    #: the first message about an incident on this channel
    ANNOUNCE = "announce"
    #: edit the announced message in place: counts, affected DAGs and tasks, last seen
    UPDATE = "update"
    #: a new message saying what was folded in since the last one (channels that cannot edit)
    FOLLOW_UP = "follow_up"
    #: the incident's severity rose: edit, plus a reply in its thread
    ESCALATE = "escalate"
    #: an unacknowledged critical incident is still failing: tell again
    RENOTIFY = "renotify"
    #: someone acknowledged it
    ACKNOWLEDGE = "acknowledge"
    #: every member recovered (or someone resolved it)
    RESOLVE = "resolve"


@dataclass(frozen=True)
class Escalation:
    """Set when a recurring fingerprint was raised above its classified severity."""

    from_severity: Severity
    to_severity: Severity
    occurrences: int
    window: timedelta

    def describe(self) -> str:
        minutes = int(self.window.total_seconds() // 60)
        return (
            f"escalated from {self.from_severity.label} to {self.to_severity.label}: "
            f"{self.occurrences} occurrences within {minutes} min"
        )


@dataclass(frozen=True)
class Notification:
    """Everything a renderer needs to produce one channel's message."""

    alert: Alert
    classification: Classification
    fingerprint: str
    channel: str
    decision: Decision
    escalation: Escalation | None = None
    #: link to the task instance / DAG run in the Airflow UI, when ``[alerting] base_url`` is set
    airflow_url: str | None = None
    #: ``True`` for "it recovered" messages sent on success
    resolved: bool = False
    #: when the alert this notification resolves was first sent (for resolution time)
    opened_at: datetime | None = None
    #: the incident this notification is about (``None`` only for notifications built by old code)
    incident: Incident | None = None
    #: what to do on the channel: announce, edit in place, follow up, thread a reply ...
    action: NotificationAction = NotificationAction.ANNOUNCE
    #: where the incident was announced on this channel, for edits, threads and resolution
    announcement: Announcement | None = None

    @property
    def severity(self) -> Severity:
        if self.escalation is not None:
            return self.escalation.to_severity
        return self.classification.severity

    @property
    def dedup_key(self) -> str:
        """Stable key for the external incident (PagerDuty ``dedup_key``, e-mail thread).

        The incident's when there is one, so every failure of one incident, and its
        acknowledgement and resolution, reach the same PagerDuty incident.
        """
        if self.incident is not None:
            return self.incident.dedup_key
        return f"airflow-alerting/{self.fingerprint}"


@dataclass(frozen=True)
class DeliveryResult:
    """What a channel reports after trying to deliver one notification.

    :param ok: the receiving service accepted the message
    :param retryable: a later attempt may succeed (5xx, 429, timeouts, refused connections)
    :param detail: short human-readable explanation, already free of secrets
    :param external_id: id the service gave the message (Slack ``ts``, PagerDuty ``dedup_key``,
        e-mail ``Message-ID``)
    :param conversation: where ``external_id`` lives, when the service needs it to edit or thread
        (the Slack channel ID); for PagerDuty a digest of the routing key used
    """

    channel: str
    ok: bool
    retryable: bool = False
    detail: str = ""
    external_id: str | None = None
    attempts: int = 1
    retry_after: float | None = None
    conversation: str | None = None


@dataclass(frozen=True)
class ChannelOutcome:
    """The decision and, when something was sent, the delivery result for one channel."""

    channel: str
    decision: Decision
    delivery: DeliveryResult | None = None


@dataclass(frozen=True)
class AlertOutcome:
    """What the manager did with one alert; returned to callers and recorded in history."""

    alert: Alert
    classification: Classification
    fingerprint: str
    channels: tuple[ChannelOutcome, ...]
    escalation: Escalation | None = None
    #: the incident the alert joined (or, for a recovery, the incident it resolved)
    incident: Incident | None = None

    @property
    def severity(self) -> Severity:
        if self.escalation is not None:
            return self.escalation.to_severity
        return self.classification.severity

    @property
    def sent_to(self) -> tuple[str, ...]:
        return tuple(c.channel for c in self.channels if c.delivery is not None and c.delivery.ok)

    @property
    def failed(self) -> tuple[str, ...]:
        return tuple(c.channel for c in self.channels if c.delivery is not None and not c.delivery.ok)


@dataclass(frozen=True)
class HistoryEntry:
    """One recorded decision, kept (bounded) by the state store for analytics and audits."""

    at: datetime
    fingerprint: str
    source: str
    kind: str
    severity: str
    channel: str
    reason: str
    sent: bool
    delivered: bool | None = None
    detail: str = ""
    run_id: str | None = None
    #: the classification's reasons (and escalation), joined with "; "
    why: str = ""
    #: the incident the alert joined (or, for a recovery, resolved); ``None`` for retries and old entries
    incident_id: str | None = None
    #: the alert's DAG and task (``source`` adds the map index, and DAG ids may contain dots)
    dag_id: str | None = None
    task_id: str | None = None
    #: identity of the alert callback this decision was about (a digest of ``Alert.occurrence_id``);
    #: set only on decisions about a new failure, so analytics counts each alert once, not per channel
    alert_id: str | None = None
    #: the root cause as the incident names it (its title); ``None`` when there is no incident
    cause: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "at": self.at.isoformat(),
            "fingerprint": self.fingerprint,
            "source": self.source,
            "kind": self.kind,
            "severity": self.severity,
            "channel": self.channel,
            "reason": self.reason,
            "sent": self.sent,
            "delivered": self.delivered,
            "detail": self.detail,
            "run_id": self.run_id,
            "why": self.why,
        }
        # left out when unknown: the document stores keep hundreds of entries in one document
        optional = {
            "incident_id": self.incident_id,
            "dag_id": self.dag_id,
            "task_id": self.task_id,
            "alert_id": self.alert_id,
            "cause": self.cause,
        }
        data.update((k, v) for k, v in optional.items() if v is not None)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HistoryEntry:
        return cls(
            at=datetime.fromisoformat(str(data["at"])),
            fingerprint=str(data["fingerprint"]),
            source=str(data["source"]),
            kind=str(data["kind"]),
            severity=str(data["severity"]),
            channel=str(data["channel"]),
            reason=str(data["reason"]),
            sent=bool(data["sent"]),
            delivered=data.get("delivered"),
            detail=str(data.get("detail", "")),
            run_id=data.get("run_id"),
            why=str(data.get("why", "")),
            # entries written before these fields existed read as "unknown"
            incident_id=_optional_text(data.get("incident_id")),
            dag_id=_optional_text(data.get("dag_id")),
            task_id=_optional_text(data.get("task_id")),
            alert_id=_optional_text(data.get("alert_id")),
            cause=_optional_text(data.get("cause")),
        )


def _optional_text(value: Any) -> str | None:
    return None if value is None else str(value)


def iso(value: datetime | None) -> str | None:
    """ISO 8601 text for a datetime, ``None`` for ``None``."""
    return value.isoformat() if value is not None else None


def parse_datetime(value: Any) -> datetime | None:
    """Inverse of :func:`iso`; anything but a non-empty string reads as ``None``."""
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


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
    from airflow_alerting.incidents.model import Announcement, Incident

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
