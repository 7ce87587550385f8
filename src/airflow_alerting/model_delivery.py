"""What the alert pipeline decides and delivers for an alert.

Throttle decisions, the notifications handed to channels, their delivery results, the
outcome returned to callers and the history entries the state stores keep.  Frozen
dataclasses and enums with no Airflow imports; every name is re-exported by
:mod:`airflow_alerting.model`.  Kept apart from it because DAG parsing never needs them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow_alerting.model import Alert, Classification, Severity

if TYPE_CHECKING:
    from airflow_alerting.incidents.model import Announcement, Incident


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
