"""What every part of the alert manager shares: collaborators, claims, settling, the outbox queue, records.

:class:`~airflow_alerting.manager.AlertManager` is assembled from this base and two parts kept
in their own modules: :mod:`airflow_alerting.outbox` (redelivery and deferred messages) and
:mod:`airflow_alerting.incidents.operations` (recovery, acknowledgement, silences, digest).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow_alerting import metrics
from airflow_alerting.channels.base import channel_actions
from airflow_alerting.delivery import DeliveryOptions, deliver_all
from airflow_alerting.incidents.model import Announcement, Incident
from airflow_alerting.incidents.silences import Silence
from airflow_alerting.model import (
    Alert,
    AlertOutcome,
    ChannelOutcome,
    Classification,
    Decision,
    DecisionReason,
    DeliveryResult,
    Escalation,
    HistoryEntry,
    Notification,
    NotificationAction,
    Severity,
    notification_to_json,
)
from airflow_alerting.policy import AlertPolicy
from airflow_alerting.render.redact import sanitize
from airflow_alerting.state.base import OutboxItem, StateStore, StateUnavailableError

if TYPE_CHECKING:
    from airflow_alerting.channels.base import Channel
    from airflow_alerting.config import AlertingSettings

log = logging.getLogger("airflow_alerting")

#: the channel name recorded for alerts that no channel receives
NO_CHANNEL = "-"
#: an outbox sweep needs at least this much of the callback's deadline left to start
MIN_SWEEP_SECONDS = 1.0
#: how long an undeliverable notification stays in the outbox before it is given up (and logged)
OUTBOX_MAX_AGE = timedelta(hours=24)
#: how long silences read from the ``[alerting] silences_variable`` Variable are reused
SILENCE_CACHE_SECONDS = 30.0
#: the claim key suffix that coalesces in-place edits (no "#": keys travel in Execution API URLs)
EDIT_CLAIM = ".edit"


def utcnow() -> datetime:
    """The managers' default clock."""
    return datetime.now(timezone.utc)


def _default_clock() -> datetime:
    # ``airflow_alerting.manager.utcnow`` looked up at call time: a test harness replaces it to move
    # time for managers it did not build (e.g. ``shared_manager()`` inside a task callback)
    from airflow_alerting import manager

    return manager.utcnow()


class _FailOpenCap:
    """Bounds sends made while the state store is down, per key and channel, in this process."""

    def __init__(self, limit_per_window: int = 3) -> None:
        self.limit = limit_per_window
        self._sent: dict[tuple[str, str], list[datetime]] = {}
        self._lock = threading.Lock()

    def allow(self, key: tuple[str, str], now: datetime, window: timedelta) -> bool:
        # a zero window still needs a bound during an outage storm: one minute
        horizon = now - max(window, timedelta(minutes=1))
        with self._lock:
            recent = [t for t in self._sent.get(key, []) if t > horizon]
            if len(recent) >= self.limit:
                self._sent[key] = recent
                return False
            self._sent[key] = [*recent, now]
            return True


@dataclass(frozen=True)
class Pending:
    """A notification about to be delivered, with the claim it holds (if any)."""

    notification: Notification
    token: str | None = None
    #: the claim key the token belongs to (the incident id, its edit key, or a fingerprint)
    claim_key: str = ""


class ManagerBase:
    """The collaborators and the shared steps of the alert manager (see :class:`AlertManager`)."""

    def __init__(
        self,
        policy: AlertPolicy | None = None,
        *,
        store: StateStore | None = None,
        channels: Mapping[str, Channel] | None = None,
        settings: AlertingSettings | None = None,
        clock: Callable[[], datetime] | None = None,
        delivery: DeliveryOptions | None = None,
    ) -> None:
        self.policy = policy or AlertPolicy()
        self._settings = settings
        self._store = store
        self._channels: dict[str, Channel] = dict(channels or {})
        self._explicit_channels = channels is not None
        # looked up at call time, so a test harness can move time for managers it did not build
        self.clock = clock or _default_clock
        self._delivery = delivery
        self._fail_open = _FailOpenCap()
        self._lock = threading.Lock()
        self._variable_silences: tuple[float, list[Silence]] = (float("-inf"), [])

    # --- lazily built collaborators -----------------------------------------------------

    @property
    def settings(self) -> AlertingSettings:
        if self._settings is None:
            from airflow_alerting.config import load_settings

            self._settings = load_settings()
        return self._settings

    @property
    def store(self) -> StateStore:
        if self._store is None:
            from airflow_alerting.state import store_from_settings

            self._store = store_from_settings(self.settings)
        return self._store

    @property
    def delivery(self) -> DeliveryOptions:
        if self._delivery is None:
            self._delivery = DeliveryOptions(
                attempts=self.settings.delivery_attempts, deadline=self.settings.callback_deadline_seconds
            )
        return self._delivery

    def channel(self, name: str) -> Channel | None:
        """Return the channel called ``name``, building it from policy and config the first time."""
        with self._lock:
            if name in self._channels:
                return self._channels[name]
            if self._explicit_channels:
                return None
            from airflow_alerting.channels.factory import build_channel

            built = build_channel(self.policy.channel_spec(name), self.settings)
            self._channels[name] = built
            return built

    @property
    def _reads_airflow_config(self) -> bool:
        # managers built for tests with explicit channels and no settings do not touch Airflow's config
        return self._settings is not None or not self._explicit_channels

    # --- shared steps ---------------------------------------------------------------------

    def _deliver_all(self, notifications: Sequence[Notification], deadline: float) -> list[DeliveryResult]:
        return deliver_all(notifications, deadline, channel=self.channel, options=self.delivery)

    def _store_call(self, what: str, call: Callable[[], object]) -> None:
        try:
            call()
        except StateUnavailableError as err:
            log.warning("alerting state: %s failed: %s", what, err)

    def _claim(
        self,
        key: str,
        channel: str,
        alert: Alert,
        severity: Severity,
        window: timedelta,
        *,
        escalated: bool,
        now: datetime,
        state_ok: bool,
        cap_key: str | None = None,
    ) -> tuple[Decision, str | None]:
        if state_ok:
            try:
                claim = self.store.claim(
                    key,
                    channel,
                    now=now,
                    window=window,
                    severity=severity,
                    escalated=escalated,
                    source=alert.source,
                    lease=self.policy.lease,
                )
                return claim.decision, claim.token
            except StateUnavailableError as err:
                log.warning("alerting state unavailable (%s): failing open", err)
                metrics.incr("state_unavailable")
        if self._fail_open.allow((cap_key or key, channel), now, window):
            return Decision(True, DecisionReason.STATE_UNAVAILABLE, detail="state store unavailable"), None
        return Decision(False, DecisionReason.STATE_UNAVAILABLE_CAPPED, detail="fail-open cap reached"), None

    def _settle(self, pending: Pending, result: DeliveryResult, now: datetime) -> None:
        """Record the outcome of a send: keep or give back the window, queue failures, remember announcements.

        A retryable failure goes to the outbox and *keeps* the window: the message will still
        arrive, and releasing the window too would let the next occurrence go out beside it.
        A failure that cannot heal (a 4xx, a bad configuration) gives the window back, so the
        next occurrence is not silenced by a message that never arrived.
        """
        notification = pending.notification
        name = notification.channel
        queued = False if result.ok else self._to_outbox(notification, result, now)
        try:
            if pending.token is not None:
                if result.ok or queued:
                    self.store.confirm(pending.claim_key, name, pending.token)
                else:
                    self.store.release(pending.claim_key, name, pending.token)
            if result.ok:
                self._remember_announcement(notification, result, now)
        except StateUnavailableError as err:
            log.warning("could not record delivery of %s to %s: %s", notification.fingerprint, name, err)
            metrics.incr("state_unavailable")

    def _remember_announcement(
        self, notification: Notification, result: DeliveryResult, now: datetime
    ) -> None:
        incident = notification.incident
        if incident is None:
            return
        if notification.action is NotificationAction.ANNOUNCE:
            announcement = Announcement(
                channel=notification.channel,
                ref=result.external_id,
                conversation=result.conversation,
                severity=incident.severity,
                at=now,
            )
        elif (
            notification.action in (NotificationAction.ESCALATE, NotificationAction.RENOTIFY)
            and notification.announcement
        ):
            announcement = replace(notification.announcement, severity=incident.severity)
        else:
            return
        self.store.record_announcement(incident.id, announcement)
        editable = NotificationAction.UPDATE in channel_actions(self.channel(notification.channel))
        if notification.action is NotificationAction.ANNOUNCE and editable:
            # failures that joined while the announcement was in flight are not in it: edit them in
            current = self.store.incident(incident.id)
            if current is not None and current.failures > incident.failures:
                update = replace(
                    notification,
                    incident=current,
                    action=NotificationAction.UPDATE,
                    announcement=announcement,
                )
                self._schedule(update, incident.id + EDIT_CLAIM, now + self.policy.incidents.update_interval)

    def _to_outbox(self, notification: Notification, result: DeliveryResult, now: datetime) -> bool:
        """Keep a notification that failed after its retries for a later sweep; ``True`` when queued."""
        if not result.retryable:
            return False  # a 4xx or a bad configuration will not heal by itself: recorded as failed
        item = OutboxItem(
            id=uuid.uuid4().hex,
            channel=notification.channel,
            notification=storable(notification),
            incident_key=notification.incident.id
            if notification.incident
            else notification.alert.incident_key,
            created_at=now,
            next_attempt_at=now + timedelta(minutes=1),
            attempts=result.attempts,
            last_error=result.detail,
        )
        try:
            self.store.outbox_add(item)
        except StateUnavailableError as err:
            log.error(
                "alert %s to %s lost: not delivered and the outbox is unavailable (%s)",
                notification.alert.source,
                notification.channel,
                err,
            )
            metrics.incr("outbox", "lost")
            return False
        metrics.incr("outbox", "added")
        return True

    def _schedule(self, notification: Notification, claim_key: str, due: datetime) -> None:
        """Queue a deferred message: the last edit of a burst, or a follow-up once a burst settles."""
        assert notification.incident is not None
        item = OutboxItem(
            id=uuid.uuid4().hex,
            channel=notification.channel,
            notification=storable(
                replace(notification, decision=Decision(True, DecisionReason.SUMMARY, detail=claim_key))
            ),
            created_at=self.clock(),
            next_attempt_at=due,
            incident_key=notification.incident.id,
        )
        try:
            self.store.outbox_add(item)
        except StateUnavailableError as err:
            log.warning("could not schedule a follow-up: %s", err)

    def _finish(
        self,
        alert: Alert,
        classification: Classification,
        fp: str,
        escalation: Escalation | None,
        outcomes: Sequence[ChannelOutcome],
        reason: DecisionReason | None,
        incident: Incident | None = None,
    ) -> AlertOutcome:
        if reason is not None:
            outcomes = [ChannelOutcome(NO_CHANNEL, Decision(False, reason))]
        outcome = AlertOutcome(alert, classification, fp, tuple(outcomes), escalation, incident)
        why = "; ".join((*classification.reasons, *([escalation.describe()] if escalation else [])))
        now = self.clock()
        # a recovery is not an alert: analytics counts failures by this id
        alert_id = None if alert.kind.is_recovery else alert_identity(alert)
        self._record(
            [
                history_entry(
                    now, alert, fp, outcome.severity, item, why, incident=incident, alert_id=alert_id
                )
                for item in outcome.channels
            ]
        )
        metrics.alert_handled(outcome)
        return outcome

    def _history_entry(self, now: datetime, notification: Notification, item: ChannelOutcome) -> HistoryEntry:
        why = "; ".join(notification.classification.reasons)
        return history_entry(
            now,
            notification.alert,
            notification.fingerprint,
            notification.severity,
            item,
            why,
            incident=notification.incident,
        )

    def _record(self, entries: Sequence[HistoryEntry]) -> None:
        """Count every decision in metrics, log failed deliveries and append them to the history."""
        for entry in entries:
            metrics.decision(entry)
            if entry.delivered is False:
                log.error("alert %s to %s not delivered: %s", entry.source, entry.channel, entry.detail)
        try:
            self.store.append_history(entries)
        except StateUnavailableError as err:
            log.warning("could not record alert history: %s", err)

    def _log_classification(
        self,
        alert: Alert,
        classification: Classification,
        fp: str,
        escalation: Escalation | None,
        routing: str,
        incident: Incident | None = None,
    ) -> None:
        if not log.isEnabledFor(logging.INFO):
            return  # the JSON would be built for nobody: every alert pays for this line
        record: dict[str, Any] = {
            "event": "alert_classified",
            "source": alert.source,
            "kind": alert.kind.value,
            "run_id": alert.run_id,
            "try": f"{alert.try_number}/{alert.max_tries + 1}",
            "severity": (escalation.to_severity if escalation else classification.severity).label,
            "fingerprint": fp,
            "reasons": list(classification.reasons) + ([escalation.describe()] if escalation else []),
            "routing": routing,
        }
        if incident is not None:
            record.update(
                incident=incident.id,
                incident_severity=incident.severity.label,
                incident_reasons=list(incident.severity_reasons),
                incident_failures=incident.failures,
            )
        log.info("%s", json.dumps(record, sort_keys=True))

    def _airflow_url(self, alert: Alert) -> str | None:
        """Link to the task instance (or DAG) in the UI; ``[alerting] base_url`` wins over Airflow's own."""
        base = self.settings.base_url.rstrip("/") if self._reads_airflow_config else ""
        if not base:
            return alert.log_url
        if alert.run_id and alert.task_id:
            run, task = _quote(alert.run_id), _quote(alert.task_id)
            return f"{base}/dags/{_quote(alert.dag_id)}/runs/{run}/tasks/{task}"
        return f"{base}/dags/{_quote(alert.dag_id)}"


def _quote(value: str) -> str:
    # ids can carry lone surrogates (os.fsdecode of odd file names): escape, never crash
    return quote(value, safe="", errors="backslashreplace")


def storable(notification: Notification) -> dict[str, Any]:
    """The outbox copy holds only what a renderer would show: secrets masked."""
    alert = notification.alert
    return notification_to_json(replace(notification, alert=replace(alert, message=sanitize(alert.message))))


def alert_identity(alert: Alert) -> str:
    """A short digest of ``alert.occurrence_id``: one per callback, shared by its channels' entries."""
    return hashlib.sha256(alert.occurrence_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def history_entry(
    now: datetime,
    alert: Alert,
    fp: str,
    severity: Severity,
    item: ChannelOutcome,
    why: str,
    *,
    incident: Incident | None = None,
    alert_id: str | None = None,
) -> HistoryEntry:
    return HistoryEntry(
        at=now,
        fingerprint=fp,
        source=alert.source,
        kind=alert.kind.value,
        severity=severity.label,
        channel=item.channel,
        reason=item.decision.reason.value,
        sent=item.decision.send,
        delivered=item.delivery.ok if item.delivery is not None else None,
        detail=(item.delivery.detail if item.delivery else item.decision.detail)[:300],
        run_id=alert.run_id,
        why=why[:1000],
        incident_id=incident.id if incident is not None else None,
        dag_id=alert.dag_id,
        task_id=alert.task_id,
        alert_id=alert_id,
        # a signature is at most 300 characters; the cut bounds the document stores' history too
        cause=incident.title[:300] if incident is not None else None,
    )


def human(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"
