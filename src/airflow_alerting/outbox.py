"""The outbox sweep: redelivery of what failed, and the deferred edits and follow-ups that are due.

Every callback sweeps it after its own alert, and the ``alerting_maintenance`` DAG sweeps it on a
schedule, so an outage heals at the next alert and a quiet system still catches up.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import replace
from datetime import datetime, timedelta

from airflow_alerting import metrics
from airflow_alerting.delivery import scrubbed_traceback
from airflow_alerting.manager_base import MIN_SWEEP_SECONDS, OUTBOX_MAX_AGE, ManagerBase, human
from airflow_alerting.model import (
    ChannelOutcome,
    DecisionReason,
    DeliveryResult,
    HistoryEntry,
    Notification,
    NotificationAction,
    SuppressionSummary,
    notification_from_json,
)
from airflow_alerting.render.redact import sanitize
from airflow_alerting.state.base import OutboxItem, StateUnavailableError

log = logging.getLogger("airflow_alerting")


class OutboxSweeper(ManagerBase):
    """Redelivers the outbox (part of :class:`~airflow_alerting.manager.AlertManager`)."""

    def redeliver_outbox(self, limit: int = 20, *, deadline: float | None = None) -> list[ChannelOutcome]:
        """Deliver what failed earlier, and due deferred edits and follow-ups.  Never raises.

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
        metrics.gauge("alerting.outbox.due", len(items))
        due: list[tuple[OutboxItem, Notification]] = []
        for item in items:
            try:
                notification = self._outbox_notification(item, now)
            except Exception as err:  # one unreadable item must not block the others
                self._quarantine(item, err, now)
                continue
            if notification is not None:
                due.append((item, notification))
        results = self._deliver_all([n for _, n in due], deadline)
        outcomes = []
        for (item, notification), result in zip(due, results, strict=True):
            outcome = ChannelOutcome(notification.channel, notification.decision, result)
            outcomes.append(outcome)
            try:
                self._after_redelivery(item, notification, result, now)
            except StateUnavailableError as err:
                log.warning("could not update the alert outbox: %s", err)
            self._record([self._history_entry(now, notification, outcome)])
        return outcomes

    def _quarantine(self, item: OutboxItem, err: Exception, now: datetime) -> None:
        """Take an item no sweep can deliver (e.g. written by a newer version) out of the queue.

        It is logged, counted and kept in the alert history with what is known of it, so it is
        seen rather than lost, and it no longer holds up the items behind it.
        """
        log.error("outbox item %s cannot be read, quarantined: %s", item.id, scrubbed_traceback(err))
        metrics.incr("outbox", "quarantined")
        self._store_call("outbox_remove", functools.partial(self.store.outbox_remove, item.id))
        entry = HistoryEntry(
            at=now,
            fingerprint=str(item.notification.get("fingerprint", ""))[:64],
            source=item.incident_key[:250] or "outbox",
            kind="outbox",
            severity="unknown",
            channel=item.channel,
            reason="quarantined",
            sent=True,
            delivered=False,
            detail=sanitize(f"unreadable outbox item {item.id}: {type(err).__name__}: {err}")[:300],
        )
        self._record([entry])

    def _outbox_notification(self, item: OutboxItem, now: datetime) -> Notification | None:
        """The notification to deliver for ``item``, or ``None`` (and the item dropped) if it has none."""
        original = notification_from_json(item.notification)
        if original.decision.reason is not DecisionReason.SUMMARY:
            detail = f"first failed {item.created_at:%Y-%m-%d %H:%M} UTC; attempt {item.attempts + 1}"
            fresh = self._fresh(original)
            if fresh is None:
                self.store.outbox_remove(item.id)
                return None
            return replace(
                fresh, decision=replace(fresh.decision, reason=DecisionReason.REDELIVERED, detail=detail)
            )
        claim_key = original.decision.detail or original.fingerprint
        fresh = self._fresh(original)
        if fresh is None or fresh.incident is None:
            self.store.outbox_remove(item.id)
            return None
        # a deferred message reports what is held back *now*; one that went out since already told it
        state = self.store.channel_state(claim_key, original.channel)
        pending = state.settled(now).suppressed if state is not None else SuppressionSummary()
        if original.action is NotificationAction.UPDATE:
            # an inline edit made after this was scheduled already showed a newer state, and any
            # failure held back after that edit scheduled a deferred edit of its own
            last_edit = state.settled(now).last_sent_at if state is not None else None
            if last_edit is not None and last_edit > item.created_at:
                self.store.outbox_remove(item.id)
                return None
        elif pending.count == 0:
            self.store.outbox_remove(item.id)
            return None
        if original.action is NotificationAction.FOLLOW_UP:
            # for channels and renderers that show only the alert: say what the follow-up is
            noun = "failure" if pending.count == 1 else "failures"
            title = f"{fresh.incident.title}: {pending.count} more similar {noun} since the last alert"
            fresh = replace(fresh, alert=replace(fresh.alert, title=title))
        # a deferred edit always writes the incident's current state: edits are idempotent
        return replace(fresh, decision=replace(fresh.decision, suppressed=pending, detail=claim_key))

    def _fresh(self, original: Notification) -> Notification | None:
        """``original`` with its incident as it is now; ``None`` when a resolution has superseded it."""
        if original.incident is None:
            return original
        current = self.store.incident(original.incident.id)
        if current is None:
            return original
        if not current.is_open and original.action is not NotificationAction.RESOLVE:
            return None  # the resolution told the final state
        announcement = current.announcements.get(original.channel, original.announcement)
        if original.action is NotificationAction.ANNOUNCE and original.channel in current.announcements:
            return None  # another worker announced it meanwhile
        return replace(original, incident=current, announcement=announcement)

    def _after_redelivery(
        self, item: OutboxItem, notification: Notification, result: DeliveryResult, now: datetime
    ) -> None:
        if result.ok:
            self.store.outbox_remove(item.id)
            if notification.decision.reason is DecisionReason.SUMMARY:
                if notification.action is NotificationAction.UPDATE:
                    # an edit shows the current state, not a count: nothing to take off
                    metrics.incr("summaries", "edited")
                    return
                # reported: the next regular message must not count these again
                self.store.clear_suppressed(
                    notification.decision.detail, notification.channel, notification.decision.suppressed.count
                )
                metrics.incr("summaries", "sent")
                return
            self._remember_announcement(notification, result, now)
            metrics.incr("outbox", "redelivered")
        elif now - item.created_at > OUTBOX_MAX_AGE:
            self.store.outbox_remove(item.id)
            metrics.incr("outbox", "expired")
            log.error(
                "giving up on alert %s to %s after %d attempts over %s: %s",
                notification.alert.source,
                notification.channel,
                item.attempts + result.attempts,
                human(now - item.created_at),
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
