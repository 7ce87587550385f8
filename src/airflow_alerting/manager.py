"""The alert manager: sequences classify -> fingerprint -> correlate -> decide -> render -> deliver -> record.

A final failure joins an **incident** (failures that share a root cause, across tasks and
DAGs); each channel is told about the incident once, and then only what changes: edits in
place where the channel can edit, follow-ups where it cannot, a reply when the severity
rises, a repeat while a critical incident stays unacknowledged, and one resolution when
every member has recovered.  The policy lives in the stages (:mod:`airflow_alerting.incidents`,
:mod:`airflow_alerting.throttle`, ...); this class only puts them in order.

Channels run concurrently and independently under one deadline: one failing or hanging
never blocks another, and nothing raises into the task.  A state store outage fails open
(send, bounded by an in-process cap) because a duplicate is a nuisance while a lost
critical alert is an incident.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow_alerting import metrics, throttle
from airflow_alerting.channels.base import channel_actions
from airflow_alerting.delivery import DeliveryOptions, scrubbed_traceback
from airflow_alerting.fingerprint import fingerprint as compute_fingerprint
from airflow_alerting.incidents import lifecycle, notify
from airflow_alerting.incidents.correlate import correlation_key
from airflow_alerting.incidents.model import Incident, IncidentJoin, IncidentState, Occurrence
from airflow_alerting.incidents.operations import IncidentOperations, silence_detail
from airflow_alerting.incidents.silences import Silence
from airflow_alerting.manager_base import (
    EDIT_CLAIM,
    MIN_SWEEP_SECONDS,
    NO_CHANNEL,
    OUTBOX_MAX_AGE,
    Pending,
    utcnow,
)
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
    Notification,
    NotificationAction,
    Severity,
)
from airflow_alerting.outbox import OutboxSweeper
from airflow_alerting.policy import AlertPolicy, PolicyError
from airflow_alerting.state.base import StateUnavailableError

if TYPE_CHECKING:
    from airflow_alerting.config import AlertingSettings

__all__ = [
    "MIN_SWEEP_SECONDS",
    "NO_CHANNEL",
    "OUTBOX_MAX_AGE",
    "AlertManager",
    "DeliveryOptions",
    "shared_manager",
    "utcnow",
]

log = logging.getLogger("airflow_alerting")


@dataclass(frozen=True)
class _Joined:
    """A failure after correlation: its incident, whether state is usable, the silence that matched."""

    incident: Incident
    state_ok: bool
    occurrence_silenced: Silence | None


class AlertManager(IncidentOperations, OutboxSweeper):
    """Turns alerts into notifications according to an :class:`~airflow_alerting.policy.AlertPolicy`.

    Usable directly by code that builds its own alerts (:meth:`send_alert`, :meth:`should_throttle`),
    by operators (:meth:`acknowledge`, :meth:`resolve`, :meth:`add_silence`), and by
    :class:`~airflow_alerting.notifications.alert.AlertNotifier` for Airflow callbacks.

    :param policy: the routing policy; the defaults when omitted
    :param store: where throttle and incident state lives; from ``[alerting] state_backend`` when omitted
    :param channels: channel instances by name; built from the policy and ``[alerting]`` config on
        first use when omitted
    :param settings: the ``[alerting]`` configuration; read from Airflow's config when omitted
    :param clock: returns the current time (injectable for tests); it decides windows, incidents,
        silences and business hours
    :param delivery: retry and deadline options; from settings when omitted
    """

    # --- public API -----------------------------------------------------------------------

    def handle(self, alert: Alert, *, severity: Severity | None = None) -> AlertOutcome:
        """Run ``alert`` through the whole pipeline and return what happened.  Never raises.

        :param alert: the alert
        :param severity: force this severity instead of classifying
        """
        started = time.perf_counter()
        try:
            # the manager's clock is the one authority on time (tests freeze it, stores compare with it)
            alert = replace(alert, occurred_at=self.clock())
            # one deadline for everything this callback does: deliveries, fallback, outbox sweep
            deadline = time.monotonic() + self.delivery.deadline
            if alert.kind.is_recovery:
                outcome = self._recover(alert, deadline)
            else:
                outcome = self._notify(alert, severity, deadline)
        except Exception as err:  # the last line of defence: an alerting bug must not fail the task
            log.error("alerting pipeline failed for %s: %s", alert.source, scrubbed_traceback(err))
            metrics.incr("errors")
            classification = Classification(
                severity or Severity.HIGH, (f"pipeline error: {type(err).__name__}",)
            )
            return AlertOutcome(alert, classification, "", ())
        # every callback also sweeps the outbox, so an outage heals at the next alert
        self.redeliver_outbox(deadline=deadline)
        metrics.timer(
            "alerting.callback.duration",
            time.perf_counter() - started,
            kind=alert.kind.value,
            store=type(self.store).__name__,
        )
        return outcome

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
        """Return ``True`` if ``alert`` would tell nobody new (on ``channel``, or on every routed channel).

        Read-only: nothing is recorded.  A failure that would join an incident already
        announced on the channel counts as throttled: it would only be folded in.
        """
        alert = replace(alert, occurred_at=alert.occurred_at or self.clock())
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
        try:
            key, _ = correlation_key(alert, classification, fp, self.policy.incidents.correlate_by)
            open_states = (IncidentState.OPEN, IncidentState.ACKNOWLEDGED)
            current = next(
                (i for i in self.store.incidents(states=open_states, limit=1000) if i.key == key), None
            )
            if current is None or lifecycle.starts_new(
                current, self._occurrence(alert, classification, fp), self.policy.incidents
            ):
                return False
            states = [self.store.channel_state(current.id, name) for name in channels]
        except StateUnavailableError:
            return False  # like handle(): with the state store down, alerts go out
        for name, state in zip(channels, states, strict=True):
            window = notify.incident_window(
                current,
                severity_window=self.policy.window_for(current.severity),
                actions=channel_actions(self.channel(name)),
                rules=self.policy.incidents,
            )
            if throttle.decide(state, now=now, window=window, severity=current.severity).send:
                return False
        return True

    # --- failures -------------------------------------------------------------------------

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
        if classification.silent:
            self._log_classification(alert, classification, fp, escalation, "silent by policy")
            return self._finish(alert, classification, fp, escalation, [], DecisionReason.SILENCED)
        if not alert.is_final_try:
            # a retry is not an incident: it cannot page or widen one, and its success recovers nothing
            return self._notify_retry(alert, classification, fp, deadline, now)

        joined = self._join(alert, classification, fp, escalation, state_ok)
        incident = joined.incident
        routing = self.policy.router.route(alert, incident.severity)
        self._log_classification(alert, classification, fp, escalation, routing.reason, incident)
        if joined.occurrence_silenced is not None:
            silence = joined.occurrence_silenced
            held = [
                ChannelOutcome(name, Decision(False, DecisionReason.SILENCED, detail=silence_detail(silence)))
                for name in routing.channels or (NO_CHANNEL,)
            ]
            return self._finish(alert, classification, fp, escalation, held, None, incident)
        if not routing.channels:
            return self._finish(
                alert, classification, fp, escalation, [], DecisionReason.NOT_ROUTED, incident
            )

        to_send: list[Pending] = []
        held = []
        for name in routing.channels:
            pending, outcome = self._decide_channel(
                alert, classification, fp, escalation, incident, name, now, joined.state_ok
            )
            if pending is not None:
                to_send.append(pending)
            if outcome is not None:
                held.append(outcome)
        results = self._deliver_all([p.notification for p in to_send], deadline)
        outcomes = list(held)
        for pending, result in zip(to_send, results, strict=True):
            self._settle(pending, result, now)
            outcomes.append(
                ChannelOutcome(pending.notification.channel, pending.notification.decision, result)
            )
        outcomes.extend(self._fallback(incident.severity, to_send, results, routing.channels, deadline))
        order = {name: i for i, name in enumerate(routing.channels)}
        outcomes.sort(key=lambda o: order.get(o.channel, len(order)))
        return self._finish(alert, classification, fp, escalation, outcomes, None, incident)

    def _occurrence(
        self,
        alert: Alert,
        classification: Classification,
        fp: str,
        escalation: Escalation | None = None,
        silenced: bool = False,
    ) -> Occurrence:
        key, title = correlation_key(alert, classification, fp, self.policy.incidents.correlate_by)
        return Occurrence(
            key=key,
            title=title,
            dag_id=alert.dag_id,
            task_id=alert.task_id,
            map_index=alert.map_index,
            run_id=alert.run_id,
            severity=escalation.to_severity if escalation else classification.severity,
            at=alert.occurred_at or self.clock(),
            reasons=(escalation.describe(),) if escalation else (),
            silenced=silenced,
        )

    def _join(
        self,
        alert: Alert,
        classification: Classification,
        fp: str,
        escalation: Escalation | None,
        state_ok: bool,
    ) -> _Joined:
        """Correlate the failure and join (or open) its incident; match silences."""
        occurrence = self._occurrence(alert, classification, fp, escalation)
        silence = self._silence_for(alert, occurrence, fp)
        occurrence = replace(occurrence, silenced=silence is not None)
        joined: IncidentJoin | None = None
        if state_ok:
            try:
                joined = self.store.join_incident(occurrence, self.policy.incidents)
            except StateUnavailableError as err:
                state_ok = False
                log.warning("alerting state unavailable (%s): failing open", err)
                metrics.incr("state_unavailable")
        if joined is None:
            # no shared state: this failure is an incident of its own, bounded by the fail-open cap
            joined, _ = lifecycle.join(None, {}, occurrence, self.policy.incidents)
        if joined.opened:
            metrics.incident_event("opened", joined.incident, alert.dag_id)
        if joined.raised:
            metrics.incident_event("raised", joined.incident, alert.dag_id)
        return _Joined(joined.incident, state_ok, silence)

    def _decide_channel(
        self,
        alert: Alert,
        classification: Classification,
        fp: str,
        escalation: Escalation | None,
        incident: Incident,
        name: str,
        now: datetime,
        state_ok: bool,
    ) -> tuple[Pending | None, ChannelOutcome | None]:
        """Claim (incident, channel) and decide what to tell ``name``: a notification, or why nothing."""
        actions = channel_actions(self.channel(name))
        window = notify.incident_window(
            incident,
            severity_window=self.policy.window_for(incident.severity),
            actions=actions,
            rules=self.policy.incidents,
        )
        decision, token = self._claim(
            incident.id,
            name,
            alert,
            incident.severity,
            window,
            escalated=name in incident.announcements,
            now=now,
            state_ok=state_ok,
            # without state every failure looks like a new incident: cap by cause, not by incident id
            cap_key=incident.key,
        )
        action, reason = notify.plan(decision, incident, name, actions)
        base = Notification(
            alert=alert,
            classification=classification,
            fingerprint=fp,
            channel=name,
            decision=replace(decision, reason=reason),
            escalation=escalation,
            airflow_url=self._airflow_url(alert),
            incident=incident,
            action=action or NotificationAction.UPDATE,
            announcement=incident.announcements.get(name),
        )
        if action is not None:
            return Pending(base, token, incident.id), None
        if token is not None:
            # claimed, but the channel has nothing to add (PagerDuty already holds the incident)
            self._store_call("confirm", lambda: self.store.confirm(incident.id, name, token))
        held = ChannelOutcome(name, base.decision)
        if reason is DecisionReason.CORRELATED and NotificationAction.UPDATE in actions:
            edit = self._coalesced_edit(base, now, state_ok)
            if edit is not None:
                return edit, None
        elif reason in (DecisionReason.CORRELATED, DecisionReason.IN_FLIGHT):
            # the first failure held back after a message starts a burst: follow up once it settles
            first_held = decision.suppressed.count == 1
            if (
                first_held
                and NotificationAction.FOLLOW_UP in actions
                and self.policy.summary_after > timedelta(0)
            ):
                # once the burst settles, but never more often than the channel's window allows
                follow_up = replace(base, action=NotificationAction.FOLLOW_UP)
                self._schedule(follow_up, incident.id, now + max(self.policy.summary_after, window))
        return None, held

    def _coalesced_edit(self, base: Notification, now: datetime, state_ok: bool) -> Pending | None:
        """Edit the announcement in place at most once per ``update_interval``; schedule the last edit.

        Slack's ``chat.update`` is rate limited, so 500 failures cost a handful of edits; an edit
        held back schedules one deferred edit, so the final state is always written.
        """
        assert base.incident is not None
        if base.announcement is None or not state_ok:
            return None  # the announcement is still in flight; its own delivery shows this state
        edit_key = base.incident.id + EDIT_CLAIM
        try:
            claim = self.store.claim(
                edit_key,
                base.channel,
                now=now,
                window=self.policy.incidents.update_interval,
                severity=base.incident.severity,
                escalated=False,
                source=base.alert.source,
                lease=self.policy.lease,
            )
        except StateUnavailableError:
            return None
        if claim.decision.send:
            decision = Decision(True, DecisionReason.UPDATED, base.decision.suppressed, "edited in place")
            return Pending(
                replace(base, action=NotificationAction.UPDATE, decision=decision), claim.token, edit_key
            )
        if claim.decision.suppressed.count == 1:
            self._schedule(
                replace(base, action=NotificationAction.UPDATE),
                edit_key,
                now + self.policy.incidents.update_interval,
            )
        return None

    def _notify_retry(
        self, alert: Alert, classification: Classification, fp: str, deadline: float, now: datetime
    ) -> AlertOutcome:
        """A failure that will be retried: throttled per fingerprint, never part of an incident."""
        routing = self.policy.router.route(alert, classification.severity)
        self._log_classification(alert, classification, fp, None, routing.reason)
        if not routing.channels:
            return self._finish(alert, classification, fp, None, [], DecisionReason.NOT_ROUTED)
        window = self.policy.window_for(classification.severity)
        to_send: list[Pending] = []
        outcomes: list[ChannelOutcome] = []
        for name in routing.channels:
            decision, token = self._claim(
                fp, name, alert, classification.severity, window, escalated=False, now=now, state_ok=True
            )
            notification = Notification(
                alert=alert,
                classification=classification,
                fingerprint=fp,
                channel=name,
                decision=decision,
                airflow_url=self._airflow_url(alert),
            )
            if decision.send:
                to_send.append(Pending(notification, token, fp))
            else:
                outcomes.append(ChannelOutcome(name, decision))
        results = self._deliver_all([p.notification for p in to_send], deadline)
        for pending, result in zip(to_send, results, strict=True):
            self._settle(pending, result, now)
            outcomes.append(
                ChannelOutcome(pending.notification.channel, pending.notification.decision, result)
            )
        return self._finish(alert, classification, fp, None, outcomes, None)

    def _escalation(self, classification: Classification, count: int) -> Escalation | None:
        rule = self.policy.escalation
        if not rule.enabled or count < rule.after or classification.severity >= rule.ceiling:
            return None
        raised = min(classification.severity.raised(), rule.ceiling)
        return Escalation(classification.severity, raised, count, rule.within)

    def _fallback(
        self,
        severity: Severity,
        sent: Sequence[Pending],
        results: Sequence[DeliveryResult],
        routed: Sequence[str],
        deadline: float,
    ) -> list[ChannelOutcome]:
        """Deliver a critical alert to the fallback channel when one of its channels failed."""
        fallback = self.policy.fallback_channel
        failed = [p.notification.channel for p, r in zip(sent, results, strict=True) if not r.ok]
        # a routed fallback already got (or was throttled, or queued) this alert in this callback
        if fallback is None or severity is not Severity.CRITICAL or not failed or fallback in routed:
            return []
        template = sent[0].notification
        notification = replace(
            template,
            channel=fallback,
            action=NotificationAction.ANNOUNCE,
            announcement=None,
            decision=Decision(
                True,
                DecisionReason.FALLBACK,
                template.decision.suppressed,
                detail=f"{', '.join(failed)} failed",
            ),
        )
        result = self._deliver_all([notification], deadline)[0]
        self._settle(Pending(notification), result, self.clock())
        return [ChannelOutcome(fallback, notification.decision, result)]


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
        policy, key = configured_policy(settings)
    else:
        key = f"object:{id(policy)}"
    with _MANAGERS_LOCK:
        manager = _MANAGERS.get(key)
        if manager is None:
            manager = AlertManager(policy, settings=settings)
            _MANAGERS[key] = manager
        return manager


def configured_policy(settings: AlertingSettings) -> tuple[AlertPolicy, str]:
    """The configured policy and a cache key that changes when the policy text does.

    A Variable policy that does not validate is logged and skipped: alerts keep flowing under
    the next policy rather than being lost to an operator's typo.

    :param settings: the ``[alerting]`` settings (:func:`airflow_alerting.config.load_settings`)
    :return: the policy and a key that changes when its source text does
    """
    if settings.policy_variable:
        from airflow_alerting.state.variables import read_variable

        try:
            text = read_variable(settings.policy_variable)
        except StateUnavailableError as err:
            log.warning("could not read policy Variable %s: %s", settings.policy_variable, err)
            text = None
        if text:
            key = "variable:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
            with _MANAGERS_LOCK:
                if key in _MANAGERS:
                    return _MANAGERS[key].policy, key
            try:
                return AlertPolicy.from_yaml(text if "\n" in text else text + "\n"), key
            except PolicyError as err:
                log.error("policy in Variable %s is invalid, ignoring it: %s", settings.policy_variable, err)
    if settings.policy_file:
        try:
            return AlertPolicy.from_yaml(settings.policy_file), f"file:{settings.policy_file}"
        except Exception as err:  # checked by load_settings, but it can change or vanish since
            log.error("policy file %s is unusable, using the default policy: %s", settings.policy_file, err)
            metrics.count("alerting.config_errors", option="policy_file")
    return AlertPolicy(), "default"
