"""The alert manager: sequences classify -> fingerprint -> route -> decide -> render -> deliver -> record.

Channels run concurrently and independently under one deadline: one failing or hanging
never blocks another, and nothing raises into the task.  A state store outage fails open
(send, bounded by an in-process cap) because a duplicate is a nuisance while a lost
critical alert is an incident.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow_alerting import metrics, throttle
from airflow_alerting.fingerprint import fingerprint as compute_fingerprint
from airflow_alerting.model import (
    Alert,
    AlertKind,
    AlertOutcome,
    ChannelOutcome,
    Classification,
    Decision,
    DecisionReason,
    DeliveryResult,
    Escalation,
    HistoryEntry,
    Notification,
    Severity,
    notification_from_json,
    notification_to_json,
)
from airflow_alerting.policy import AlertPolicy, PolicyError
from airflow_alerting.render.redact import sanitize
from airflow_alerting.state.base import OpenIncident, OutboxItem, StateStore, StateUnavailableError

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


def utcnow() -> datetime:
    """The managers' default clock."""
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class DeliveryOptions:
    """How hard the manager tries to deliver.

    :param attempts: tries per channel for retryable failures
    :param deadline: seconds for the whole alert (all channels, all attempts)
    :param backoff_base: first retry delay in seconds, doubled each attempt, with jitter
    :param backoff_cap: longest single retry delay
    """

    attempts: int = 3
    deadline: float = 30.0
    backoff_base: float = 0.5
    backoff_cap: float = 5.0


class _FailOpenCap:
    """Bounds sends made while the state store is down, per fingerprint and channel, in this process."""

    def __init__(self, limit_per_window: int = 3) -> None:
        self.limit = limit_per_window
        self._sent: dict[tuple[str, str], list[datetime]] = {}
        self._lock = threading.Lock()

    def allow(self, key: tuple[str, str], now: datetime, window: timedelta) -> bool:
        # a zero window (critical) still needs a bound during an outage storm: one minute
        horizon = now - max(window, timedelta(minutes=1))
        with self._lock:
            recent = [t for t in self._sent.get(key, []) if t > horizon]
            if len(recent) >= self.limit:
                self._sent[key] = recent
                return False
            self._sent[key] = [*recent, now]
            return True


class AlertManager:
    """Turns alerts into notifications according to an :class:`~airflow_alerting.policy.AlertPolicy`.

    Usable directly by code that builds its own alerts (:meth:`send_alert`, :meth:`should_throttle`),
    and used by :class:`~airflow_alerting.notifications.alert.AlertNotifier` for Airflow callbacks.

    :param policy: the routing policy; the defaults when omitted
    :param store: where throttle and incident state lives; from ``[alerting] state_backend`` when omitted
    :param channels: channel instances by name; built from the policy and ``[alerting]`` config on
        first use when omitted
    :param settings: the ``[alerting]`` configuration; read from Airflow's config when omitted
    :param clock: returns the current time (injectable for tests)
    :param delivery: retry and deadline options; from settings when omitted
    """

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
        self.clock = clock or (lambda: utcnow())
        self._delivery = delivery
        self._fail_open = _FailOpenCap()
        self._lock = threading.Lock()

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

    # --- public API -----------------------------------------------------------------------

    def handle(self, alert: Alert, *, severity: Severity | None = None) -> AlertOutcome:
        """Run ``alert`` through the whole pipeline and return what happened.  Never raises.

        :param alert: the alert
        :param severity: force this severity instead of classifying
        """
        try:
            # the manager's clock is the one authority on time (tests freeze it, stores compare with it)
            alert = replace(alert, occurred_at=self.clock())
            # one deadline for everything this callback does: deliveries, fallback, outbox sweep
            deadline = time.monotonic() + self.delivery.deadline
            if alert.kind.is_recovery:
                outcome = self._resolve(alert, deadline)
            else:
                outcome = self._notify(alert, severity, deadline)
        except Exception as err:  # the last line of defence: an alerting bug must not fail the task
            log.error("alerting pipeline failed for %s: %s", alert.source, _scrubbed_traceback(err))
            metrics.incr("errors")
            classification = Classification(
                severity or Severity.HIGH, (f"pipeline error: {type(err).__name__}",)
            )
            return AlertOutcome(alert, classification, "", ())
        # every callback also sweeps the outbox, so an outage heals at the next alert
        self.redeliver_outbox(deadline=deadline)
        return outcome

    def redeliver_outbox(self, limit: int = 20, *, deadline: float | None = None) -> list[ChannelOutcome]:
        """Try again to deliver notifications that failed earlier.  Never raises.

        Called after every alert and by the ``alerting_maintenance`` DAG.  An item that fails
        again backs off 2, 4, 8 ... 60 min until delivered or older than :data:`OUTBOX_MAX_AGE`.

        :param limit: items to take in one sweep
        :param deadline: ``time.monotonic()`` value to finish by; the delivery deadline from now if omitted
        """
        if deadline is None:
            deadline = time.monotonic() + self.delivery.deadline
        if deadline - time.monotonic() < MIN_SWEEP_SECONDS:
            return []  # not enough time left to deliver anything; the next sweep will
        now = self.clock()
        try:
            items = self.store.outbox_claim(now=now, limit=limit, lease=self.policy.lease)
        except StateUnavailableError as err:
            log.warning("cannot read the alert outbox: %s", err)
            return []
        except Exception:  # a sweep is housekeeping: it must never cost the alert that triggered it
            log.exception("outbox sweep failed")
            return []
        if not items:
            return []
        due: list[OutboxItem] = []
        notifications = []
        for item in items:
            notification = self._outbox_notification(item, now)
            if notification is not None:
                due.append(item)
                notifications.append(notification)
        items = due
        results = self._deliver_all(notifications, deadline)
        outcomes = []
        for item, notification, result in zip(items, notifications, results, strict=True):
            outcome = ChannelOutcome(notification.channel, notification.decision, result)
            outcomes.append(outcome)
            try:
                self._after_redelivery(item, notification, result, now)
            except StateUnavailableError as err:
                log.warning("could not update the alert outbox: %s", err)
            self._record([self._history_entry(now, notification, outcome)])
        return outcomes

    def _outbox_notification(self, item: OutboxItem, now: datetime) -> Notification | None:
        """The notification to deliver for ``item``, or ``None`` (and the item dropped) if it has none."""
        original = notification_from_json(item.notification)
        if original.decision.reason is not DecisionReason.SUMMARY:
            detail = f"first failed {item.created_at:%Y-%m-%d %H:%M} UTC; attempt {item.attempts + 1}"
            return replace(
                original,
                decision=replace(original.decision, reason=DecisionReason.REDELIVERED, detail=detail),
            )
        # a follow-up summary reports what is suppressed *now*; a regular notification that went
        # out since (window elapsed, escalation) already reported it, leaving nothing to say
        try:
            state = self.store.channel_state(original.fingerprint, original.channel)
        except StateUnavailableError as err:
            log.warning("cannot read state for a follow-up summary: %s", err)
            return None
        pending = state.settled(now).suppressed if state is not None else None
        if pending is None or pending.count == 0:
            self.store.outbox_remove(item.id)
            return None
        noun = "failure" if pending.count == 1 else "failures"
        # dag.task, not one arbitrary mapped instance of the burst
        title = f"{original.alert.incident_key}: {pending.count} more similar {noun} since the last alert"
        return replace(
            original,
            alert=replace(original.alert, title=title),
            decision=replace(original.decision, suppressed=pending, detail="follow-up summary"),
        )

    def _schedule_summary(self, notification: Notification, now: datetime) -> None:
        """Queue a follow-up summary of a burst, sent once it has settled (``policy.summary_after``)."""
        item = OutboxItem(
            id=uuid.uuid4().hex,
            channel=notification.channel,
            notification=notification_to_json(
                replace(
                    notification,
                    alert=replace(notification.alert, message=sanitize(notification.alert.message)),
                    decision=Decision(True, DecisionReason.SUMMARY),
                )
            ),
            created_at=now,
            next_attempt_at=now + self.policy.summary_after,
            incident_key=notification.alert.incident_key,
        )
        try:
            self.store.outbox_add(item)
        except StateUnavailableError as err:
            log.warning("could not schedule a follow-up summary: %s", err)

    def _after_redelivery(
        self, item: OutboxItem, notification: Notification, result: DeliveryResult, now: datetime
    ) -> None:
        if result.ok:
            self.store.outbox_remove(item.id)
            if notification.decision.reason is DecisionReason.SUMMARY:
                # reported: the next regular notification must not count these again
                self.store.clear_suppressed(
                    notification.fingerprint, notification.channel, notification.decision.suppressed.count
                )
                metrics.incr("summaries", "sent")
                return
            self._settle(notification, None, result, now)
            metrics.incr("outbox", "redelivered")
        elif now - item.created_at > OUTBOX_MAX_AGE:
            self.store.outbox_remove(item.id)
            metrics.incr("outbox", "expired")
            log.error(
                "giving up on alert %s to %s after %d attempts over %s: %s",
                notification.alert.source,
                notification.channel,
                item.attempts + result.attempts,
                _human(now - item.created_at),
                result.detail,
            )
        else:
            # wait as long as it has already waited, plus a minute: 2, 4, 8 ... 60 min between sweeps
            waited = now - item.created_at + timedelta(minutes=1)
            backoff = min(max(waited, timedelta(minutes=2)), timedelta(hours=1))
            self.store.outbox_update(
                replace(
                    item,
                    attempts=item.attempts + result.attempts,
                    next_attempt_at=now + backoff,
                    last_error=result.detail,
                )
            )

    def send_alert(
        self,
        title: str,
        message: str = "",
        *,
        severity: Severity | str | None = None,
        dag_id: str = "custom",
        task_id: str | None = None,
        tags: Sequence[str] = (),
        owner: str | None = None,
        exception: BaseException | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> AlertOutcome:
        """Send an alert built by user code through the same pipeline as Airflow's callbacks.

        :param title: one-line title
        :param message: details (untrusted text is fine: it is escaped, never templated)
        :param severity: force a severity; classified from the other fields when omitted
        :param dag_id: groups and routes the alert like a DAG id
        :param task_id: optional task id
        :param tags: routing and business-impact tags
        :param owner: routing owner
        :param exception: an exception to classify and describe
        :param params: extra values (e.g. ``business_impact``)
        """
        from airflow_alerting.context import alert_from_context

        base = alert_from_context({"exception": exception}, kind=AlertKind.CUSTOM) if exception else None
        alert = Alert(
            dag_id=dag_id,
            kind=AlertKind.CUSTOM,
            task_id=task_id,
            exception_type=base.exception_type if base else None,
            exception_mro=base.exception_mro if base else (),
            message=message or (base.message if base else ""),
            owner=owner,
            tags=frozenset(tags),
            params=dict(params or {}),
            occurred_at=self.clock(),
            detected_by="user",
            title=title,
        )
        return self.handle(alert, severity=Severity.parse(severity) if severity is not None else None)

    def should_throttle(self, alert: Alert, channel: str | None = None) -> bool:
        """Return ``True`` if ``alert`` would be held back (on ``channel``, or on every routed channel).

        Read-only: nothing is recorded.
        """
        classification = self.policy.classifier.classify(alert)
        if classification.silent:
            return True
        fp = compute_fingerprint(alert, self.policy.group_by)
        channels = (
            (channel,) if channel else self.policy.router.route(alert, classification.severity).channels
        )
        if not channels:
            return True
        now = self.clock()
        window = self.policy.window_for(classification.severity)
        try:
            states = [self.store.channel_state(fp, name) for name in channels]
        except StateUnavailableError:
            return False  # like handle(): with the state store down, alerts go out
        return all(
            not throttle.decide(state, now=now, window=window, severity=classification.severity).send
            for state in states
        )

    # --- the pipeline ---------------------------------------------------------------------

    def _notify(self, alert: Alert, forced: Severity | None, deadline: float) -> AlertOutcome:
        now = self.clock()
        if forced is not None:
            classification = Classification(forced, (f"severity {forced.label} given by the caller",))
        else:
            classification = self.policy.classifier.classify(alert)
        fp = compute_fingerprint(alert, self.policy.group_by)
        escalation: Escalation | None = None
        state_ok = True

        if alert.is_final_try:
            try:
                occurrence = self.store.record_occurrence(
                    fp,
                    alert.occurrence_id,
                    now=now,
                    window=self.policy.escalation.within,
                    group=alert.recurrence_group,
                )
            except StateUnavailableError as err:
                state_ok = False
                log.warning("alerting state unavailable (%s): failing open", err)
                metrics.incr("state_unavailable")
            else:
                if occurrence.duplicate:
                    self._log_classification(alert, classification, fp, None, "duplicate callback")
                    return self._finish(
                        alert, classification, fp, None, [], DecisionReason.DUPLICATE_CALLBACK
                    )
                escalation = self._escalation(classification, occurrence.count_in_window)

        severity = escalation.to_severity if escalation else classification.severity
        routing = self.policy.router.route(alert, severity)
        self._log_classification(alert, classification, fp, escalation, routing.reason)
        if classification.silent:
            return self._finish(alert, classification, fp, escalation, [], DecisionReason.SILENCED)
        if not routing.channels:
            return self._finish(alert, classification, fp, escalation, [], DecisionReason.NOT_ROUTED)

        window = self.policy.window_for(severity)
        to_send: list[tuple[Notification, str | None]] = []
        held: list[ChannelOutcome] = []
        for name in routing.channels:
            decision, token = self._claim(fp, name, alert, severity, window, escalation, now, state_ok)
            notification = Notification(
                alert=alert,
                classification=classification,
                fingerprint=fp,
                channel=name,
                decision=decision,
                escalation=escalation,
                airflow_url=self._airflow_url(alert),
            )
            if decision.send:
                to_send.append((notification, token))
                continue
            held.append(ChannelOutcome(name, decision))
            # the first occurrence held back after a send starts a burst: summarise it once it settles
            first_held = decision.reason in (DecisionReason.THROTTLED, DecisionReason.IN_FLIGHT)
            if first_held and decision.suppressed.count == 1 and self.policy.summary_after > timedelta(0):
                self._schedule_summary(notification, now)

        delivered = self._deliver_all([n for n, _ in to_send], deadline)
        outcomes = list(held)
        for (notification, token), result in zip(to_send, delivered, strict=True):
            self._settle(notification, token, result, now)
            outcomes.append(ChannelOutcome(notification.channel, notification.decision, result))
        outcomes.extend(self._fallback(severity, to_send, delivered, routing.channels, deadline))
        order = {name: i for i, name in enumerate(routing.channels)}
        outcomes.sort(key=lambda o: order.get(o.channel, len(order)))
        return self._finish(alert, classification, fp, escalation, outcomes, None)

    def _to_outbox(self, notification: Notification, result: DeliveryResult, now: datetime) -> bool:
        """Keep a notification that failed after its retries for a later sweep; ``True`` when queued."""
        if not result.retryable:
            return False  # a 4xx or a bad configuration will not heal by itself: recorded as failed
        item = OutboxItem(
            id=uuid.uuid4().hex,
            channel=notification.channel,
            # the stored copy holds only what a renderer would show: secrets masked
            notification=notification_to_json(
                replace(
                    notification,
                    alert=replace(notification.alert, message=sanitize(notification.alert.message)),
                )
            ),
            incident_key=notification.alert.incident_key,
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

    def _fallback(
        self,
        severity: Severity,
        sent: Sequence[tuple[Notification, str | None]],
        results: Sequence[DeliveryResult],
        routed: Sequence[str],
        deadline: float,
    ) -> list[ChannelOutcome]:
        """Deliver a critical alert to the fallback channel when one of its channels failed."""
        fallback = self.policy.fallback_channel
        failed = [n.channel for (n, _), r in zip(sent, results, strict=True) if not r.ok]
        # a routed fallback already got (or was throttled, or queued) this alert in this callback
        if fallback is None or severity is not Severity.CRITICAL or not failed or fallback in routed:
            return []
        template = sent[0][0]
        notification = replace(
            template,
            channel=fallback,
            decision=Decision(
                True,
                DecisionReason.FALLBACK,
                template.decision.suppressed,
                detail=f"{', '.join(failed)} failed",
            ),
        )
        result = self._deliver_all([notification], deadline)[0]
        self._settle(notification, None, result, self.clock())
        return [ChannelOutcome(fallback, notification.decision, result)]

    def _escalation(self, classification: Classification, count: int) -> Escalation | None:
        rule = self.policy.escalation
        if not rule.enabled or count < rule.after or classification.severity is Severity.CRITICAL:
            return None
        return Escalation(classification.severity, classification.severity.raised(), count, rule.within)

    def _claim(
        self,
        fp: str,
        channel: str,
        alert: Alert,
        severity: Severity,
        window: timedelta,
        escalation: Escalation | None,
        now: datetime,
        state_ok: bool,
    ) -> tuple[Decision, str | None]:
        if state_ok:
            try:
                claim = self.store.claim(
                    fp,
                    channel,
                    now=now,
                    window=window,
                    severity=severity,
                    escalated=escalation is not None,
                    source=alert.source,
                    lease=self.policy.lease,
                )
                return claim.decision, claim.token
            except StateUnavailableError as err:
                log.warning("alerting state unavailable (%s): failing open", err)
                metrics.incr("state_unavailable")
        if self._fail_open.allow((fp, channel), now, window):
            return Decision(True, DecisionReason.STATE_UNAVAILABLE, detail="state store unavailable"), None
        return Decision(False, DecisionReason.STATE_UNAVAILABLE_CAPPED, detail="fail-open cap reached"), None

    def _settle(
        self, notification: Notification, token: str | None, result: DeliveryResult, now: datetime
    ) -> None:
        """Record the outcome of a send: keep or give back the window, queue failures, open the incident.

        A retryable failure goes to the outbox and *keeps* the window: the message will still
        arrive, and releasing the window too would let the next occurrence go out beside it.
        A failure that cannot heal (a 4xx, a bad configuration) gives the window back, so the
        next occurrence is not silenced by a message that never arrived.
        """
        fp, name = notification.fingerprint, notification.channel
        queued = False if result.ok else self._to_outbox(notification, result, now)
        try:
            if token is not None:
                if result.ok or queued:
                    self.store.confirm(fp, name, token)
                else:
                    self.store.release(fp, name, token)
            failure = notification.alert.kind in (AlertKind.TASK_FAILURE, AlertKind.DAG_FAILURE)
            if result.ok and self.policy.resolve_on_success and failure:
                self.store.open_incident(
                    OpenIncident(
                        incident_key=notification.alert.incident_key,
                        fingerprint=fp,
                        channel=name,
                        severity=notification.severity,
                        opened_at=now,
                        external_id=result.external_id,
                    )
                )
        except StateUnavailableError as err:
            log.warning("could not record delivery of %s to %s: %s", fp, name, err)
            metrics.incr("state_unavailable")

    def _resolve(self, alert: Alert, deadline: float) -> AlertOutcome:
        now = self.clock()
        classification = Classification(Severity.LOW, ("the task succeeded",))
        if not self.policy.resolve_on_success:
            return AlertOutcome(alert, classification, "", ())
        try:
            incidents = self.store.pop_incidents(alert.incident_key)
        except StateUnavailableError as err:
            log.warning("alerting state unavailable (%s): cannot resolve %s", err, alert.incident_key)
            metrics.incr("state_unavailable")
            return AlertOutcome(alert, classification, "", ())
        try:
            superseded = self.store.outbox_drop(alert.incident_key)
        except StateUnavailableError as err:
            log.warning("could not clear the outbox for %s: %s", alert.incident_key, err)
            superseded = 0
        if superseded:
            # an alert still waiting for redelivery would arrive after the recovery and reopen it
            log.info(
                "%d undelivered alert(s) for %s dropped: the task recovered", superseded, alert.incident_key
            )
            metrics.incr("outbox", "superseded", count=superseded)
        if not incidents:
            return AlertOutcome(alert, classification, "", ())
        notifications = []
        for incident in incidents:
            took = now - incident.opened_at
            notifications.append(
                Notification(
                    alert=alert,
                    classification=Classification(
                        incident.severity, (f"the task succeeded after {_human(took)}: resolving",)
                    ),
                    fingerprint=incident.fingerprint,
                    channel=incident.channel,
                    decision=Decision(True, DecisionReason.RESOLVED),
                    airflow_url=self._airflow_url(alert),
                    resolved=True,
                    opened_at=incident.opened_at,
                )
            )
        results = self._deliver_all(notifications, deadline)
        outcomes = []
        for incident, notification, result in zip(incidents, notifications, results, strict=True):
            outcomes.append(ChannelOutcome(notification.channel, notification.decision, result))
            try:
                if result.ok:
                    seconds_open = (now - incident.opened_at).total_seconds()
                    metrics.timing(seconds_open, "resolution_time", incident.channel)
                    # resolved: the next occurrence is a new incident and must not be throttled
                    self.store.reset_window(incident.fingerprint, incident.channel)
                else:
                    # keep it open so the next success tries again: a missed resolve leaves a page ringing
                    self.store.open_incident(incident)
            except StateUnavailableError as err:
                log.warning("could not record the resolution of %s: %s", incident.fingerprint, err)
        fp = incidents[0].fingerprint
        return self._finish(
            alert, replace(classification, severity=incidents[0].severity), fp, None, outcomes, None
        )

    # --- delivery -------------------------------------------------------------------------

    def _deliver_all(self, notifications: Sequence[Notification], deadline: float) -> list[DeliveryResult]:
        """Deliver concurrently until ``deadline`` (monotonic); a hung channel yields a retryable failure."""
        if not notifications:
            return []
        pool = ThreadPoolExecutor(max_workers=len(notifications), thread_name_prefix="alerting")
        try:
            futures = [pool.submit(self._deliver_one, n, deadline) for n in notifications]
            wait_futures(futures, timeout=max(0.0, deadline - time.monotonic()))
            results = []
            for notification, future in zip(notifications, futures, strict=True):
                if future.done() and future.exception() is None:
                    results.append(future.result())
                else:
                    detail = (
                        "deadline exceeded"
                        if not future.done()
                        else f"channel crashed: {type(future.exception()).__name__}"
                    )
                    results.append(
                        DeliveryResult(notification.channel, ok=False, retryable=True, detail=detail)
                    )
            return results
        finally:
            # never wait for a hung channel: the callback must return within its deadline
            pool.shutdown(wait=False, cancel_futures=True)

    def _deliver_one(self, notification: Notification, deadline: float) -> DeliveryResult:
        channel = self.channel(notification.channel)
        if channel is None:
            return DeliveryResult(notification.channel, ok=False, detail="no such channel configured")
        options = self.delivery
        attempt = 0
        started = time.monotonic()
        while True:
            attempt += 1
            try:
                result = channel.deliver(notification)
            except Exception as err:  # a channel must not raise, but a buggy one must not cost the others
                log.error("channel %s raised: %s", notification.channel, _scrubbed_traceback(err))
                result = DeliveryResult(
                    notification.channel,
                    ok=False,
                    retryable=False,
                    detail=f"channel raised {type(err).__name__}",
                )
            if result.ok or not result.retryable or attempt >= options.attempts:
                break
            delay = min(options.backoff_cap, options.backoff_base * (2 ** (attempt - 1)))
            delay = random.uniform(
                delay / 2, delay
            )  # jitter: workers failing together must not retry together
            if result.retry_after is not None:
                delay = max(delay, result.retry_after)
            if time.monotonic() + delay >= deadline:
                break
            time.sleep(delay)
        metrics.timing(time.monotonic() - started, "delivery_latency", notification.channel)
        return replace(result, attempts=attempt)

    # --- recording ------------------------------------------------------------------------

    def _finish(
        self,
        alert: Alert,
        classification: Classification,
        fp: str,
        escalation: Escalation | None,
        outcomes: Sequence[ChannelOutcome],
        reason: DecisionReason | None,
    ) -> AlertOutcome:
        if reason is not None:
            outcomes = [ChannelOutcome(NO_CHANNEL, Decision(False, reason))]
        outcome = AlertOutcome(alert, classification, fp, tuple(outcomes), escalation)
        why = "; ".join((*classification.reasons, *([escalation.describe()] if escalation else [])))
        now = self.clock()
        self._record(
            [_history_entry(now, alert, fp, outcome.severity, item, why) for item in outcome.channels]
        )
        return outcome

    def _history_entry(self, now: datetime, notification: Notification, item: ChannelOutcome) -> HistoryEntry:
        why = "; ".join(notification.classification.reasons)
        return _history_entry(
            now, notification.alert, notification.fingerprint, notification.severity, item, why
        )

    def _record(self, entries: Sequence[HistoryEntry]) -> None:
        """Count every decision in metrics, log failed deliveries and append them to the history."""
        for entry in entries:
            if entry.delivered is True:
                metrics.incr("sent", entry.channel)
            elif entry.delivered is False:
                metrics.incr("failed", entry.channel)
                log.error("alert %s to %s not delivered: %s", entry.source, entry.channel, entry.detail)
            else:
                metrics.incr("suppressed", entry.reason)
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
    ) -> None:
        record = {
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
        log.info("%s", json.dumps(record, sort_keys=True))

    def _airflow_url(self, alert: Alert) -> str | None:
        """Link to the task instance (or DAG) in the UI; ``[alerting] base_url`` wins over Airflow's own."""
        # managers built for tests with explicit channels do not read Airflow's config
        configured = self._settings is not None or not self._explicit_channels
        base = self.settings.base_url.rstrip("/") if configured else ""
        if not base:
            return alert.log_url
        if alert.run_id and alert.task_id:
            return (
                f"{base}/dags/{quote(alert.dag_id)}/runs/{quote(alert.run_id)}/tasks/{quote(alert.task_id)}"
            )
        return f"{base}/dags/{quote(alert.dag_id)}"


def _history_entry(
    now: datetime, alert: Alert, fp: str, severity: Severity, item: ChannelOutcome, why: str
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
    )


def _scrubbed_traceback(err: BaseException) -> str:
    """The traceback with secrets masked: exception text can carry URLs with passwords or tokens."""
    import traceback

    return sanitize("".join(traceback.format_exception(err)))[-4000:]


def _human(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


_MANAGERS: dict[str, AlertManager] = {}
_MANAGERS_LOCK = threading.Lock()


def shared_manager(policy: AlertPolicy | None = None) -> AlertManager:
    """The process-wide manager for ``policy`` (or the configured policy), built on first use.

    One manager per policy per process, so channels, connections and the fail-open cap are
    reused by every callback.  With no policy: ``[alerting] policy_variable`` (read now, so
    operators can change it without redeploying), then ``[alerting] policy_file``, then the defaults.

    :param policy: an explicit policy, or ``None`` for the configured one
    """
    from airflow_alerting.config import load_settings

    settings = load_settings()
    if policy is None:
        policy, key = _configured_policy(settings)
    else:
        key = f"object:{id(policy)}"
    with _MANAGERS_LOCK:
        manager = _MANAGERS.get(key)
        if manager is None:
            manager = AlertManager(policy, settings=settings)
            _MANAGERS[key] = manager
        return manager


def _configured_policy(settings: AlertingSettings) -> tuple[AlertPolicy, str]:
    """The configured policy and a cache key that changes when the policy text does.

    A Variable policy that does not validate is logged and skipped: alerts keep flowing under
    the next policy rather than being lost to an operator's typo.
    """
    if settings.policy_variable:
        from airflow_alerting.state.variables import read_variable

        try:
            text = read_variable(settings.policy_variable)
        except StateUnavailableError as err:
            log.warning("could not read policy Variable %s: %s", settings.policy_variable, err)
            text = None
        if text:
            key = "variable:" + hashlib.sha256(text.encode()).hexdigest()
            with _MANAGERS_LOCK:
                if key in _MANAGERS:
                    return _MANAGERS[key].policy, key
            try:
                return AlertPolicy.from_yaml(text if "\n" in text else text + "\n"), key
            except PolicyError as err:
                log.error("policy in Variable %s is invalid, ignoring it: %s", settings.policy_variable, err)
    if settings.policy_file:
        return AlertPolicy.from_yaml(settings.policy_file), f"file:{settings.policy_file}"
    return AlertPolicy(), "default"
