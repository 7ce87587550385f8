"""Incident operations of the alert manager: recovery, acknowledgement, resolution, silences, digest.

Part of :class:`~airflow_alerting.manager.AlertManager`; the rules themselves are the pure
functions of :mod:`airflow_alerting.incidents.lifecycle`, applied by the state store.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from airflow_alerting import metrics
from airflow_alerting.channels.base import channel_actions
from airflow_alerting.incidents.model import Incident, Occurrence
from airflow_alerting.incidents.silences import Silence, matching_silence
from airflow_alerting.manager_base import SILENCE_CACHE_SECONDS, ManagerBase, Pending, history_entry, human
from airflow_alerting.model import (
    Alert,
    AlertKind,
    AlertOutcome,
    ChannelOutcome,
    Classification,
    Decision,
    DecisionReason,
    Notification,
    NotificationAction,
    Severity,
)
from airflow_alerting.state.base import StateUnavailableError

if TYPE_CHECKING:
    from airflow_alerting.analytics import Trend

log = logging.getLogger("airflow_alerting")


class IncidentOperations(ManagerBase):
    """What happens to incidents besides failures joining them (part of ``AlertManager``)."""

    def acknowledge(self, incident: Incident | str, *, by: str = "") -> Incident | None:
        """Acknowledge an open incident: PagerDuty ``acknowledge``, Slack marked, who and when recorded.

        Stops the repeats of an unacknowledged critical incident.  Never raises.

        :param incident: the incident or its id
        :param by: who acknowledged it
        :return: the acknowledged incident, or ``None`` when it is unknown, resolved or already acknowledged
        """
        incident_id = incident.id if isinstance(incident, Incident) else incident
        now = self.clock()
        try:
            acknowledged = self.store.acknowledge_incident(incident_id, by=by or "unknown", now=now)
        except StateUnavailableError as err:
            log.warning("cannot acknowledge incident %s: %s", incident_id, err)
            return None
        if acknowledged is None:
            return None
        metrics.incident_event("acknowledged", acknowledged)
        self._tell(acknowledged, NotificationAction.ACKNOWLEDGE, DecisionReason.ACKNOWLEDGED, now)
        return acknowledged

    def resolve(self, incident: Incident | str, *, by: str = "") -> Incident | None:
        """Resolve an open incident by hand and tell every channel that announced it.  Never raises.

        :param incident: the incident or its id
        :param by: who resolved it
        :return: the resolved incident, or ``None`` when it is unknown or already resolved
        """
        incident_id = incident.id if isinstance(incident, Incident) else incident
        now = self.clock()
        try:
            resolved = self.store.resolve_incident(incident_id, by=by or "unknown", now=now)
        except StateUnavailableError as err:
            log.warning("cannot resolve incident %s: %s", incident_id, err)
            return None
        if resolved is not None:
            self._announce_resolution(resolved, now, time.monotonic() + self.delivery.deadline)
        return resolved

    def add_silence(
        self,
        *,
        ends_at: datetime | None = None,
        duration: timedelta | None = None,
        starts_at: datetime | None = None,
        comment: str = "",
        author: str = "",
        dag_ids: Sequence[str] = (),
        task_ids: Sequence[str] = (),
        tags: Sequence[str] = (),
        severities: Sequence[Severity | str] = (),
        incident_keys: Sequence[str] = (),
        fingerprints: Sequence[str] = (),
    ) -> Silence:
        """Create a silence (or maintenance window) in the state store and return it.

        Matching failures still join incidents and are counted, and are reported by the digest.

        :param ends_at: when it ends; or give ``duration``
        :param duration: how long from ``starts_at``
        :param starts_at: when it starts; now when omitted
        :param comment: why
        :param author: who
        :raises airflow_alerting.incidents.silences.SilenceError: naming what is wrong
        """
        start = starts_at or self.clock()
        end = ends_at or (start + duration if duration is not None else None)
        if end is None:
            from airflow_alerting.incidents.silences import SilenceError

            raise SilenceError("silence.ends_at: give ends_at or duration")
        silence = Silence(
            id=uuid.uuid4().hex[:12],
            starts_at=start,
            ends_at=end,
            comment=comment,
            author=author,
            dag_ids=tuple(dag_ids),
            task_ids=tuple(task_ids),
            tags=tuple(tags),
            severities=tuple(Severity.parse(s) for s in severities),
            incident_keys=tuple(incident_keys),
            fingerprints=tuple(fingerprints),
        )
        self.store.add_silence(silence)
        return silence

    def expire_silence(self, silence_id: str) -> bool:
        """End a stored silence now; ``False`` when there is none or it already ended."""
        return self.store.expire_silence(silence_id, now=self.clock())

    def silences(self) -> list[Silence]:
        """Every silence that applies now or later: stored ones and those of the silences Variable."""
        now = self.clock()
        return [s for s in self._all_silences() if s.ends_at > now]

    def digest(self, *, trends: Sequence[Trend] = (), deadline: float | None = None) -> list[ChannelOutcome]:
        """Summarise the low-severity and silenced incidents seen since the last digest.  Never raises.

        Run by the ``alerting_maintenance`` DAG, so what routes nowhere (or was silenced) does not
        vanish unseen.  Sent to the policy's ``digest.channels``, only when there is such an
        incident: trending causes ride along, they do not make a digest of their own (a maintenance
        run would otherwise post whenever anything rose, however loudly it was already announced).

        :param trends: trending causes to list (:meth:`airflow_alerting.analytics.Analytics.trending`)
        :param deadline: ``time.monotonic()`` by which deliveries must end; the delivery deadline when omitted
        """
        from airflow_alerting.incidents.digest import digest_alert, digest_candidates

        if deadline is None:
            deadline = time.monotonic() + self.delivery.deadline
        now = self.clock()
        try:
            incidents = digest_candidates(self.store.incidents(limit=1000))
        except StateUnavailableError as err:
            log.warning("cannot read incidents for the digest: %s", err)
            return []
        if not incidents or not self.policy.digest_channels:
            return []
        alert = replace(digest_alert(incidents, now, trends), occurred_at=now)
        classification = Classification(Severity.LOW, ("digest of low-severity and silenced incidents",))
        notifications = [
            Notification(
                alert=alert,
                classification=classification,
                fingerprint="digest",
                channel=name,
                decision=Decision(True, DecisionReason.SUMMARY, detail="digest"),
            )
            for name in self.policy.digest_channels
        ]
        results = self._deliver_all(notifications, deadline)
        outcomes = [
            ChannelOutcome(n.channel, n.decision, r) for n, r in zip(notifications, results, strict=True)
        ]
        if any(r.ok for r in results):
            try:
                self.store.mark_digested([i.id for i in incidents], now=now)
            except StateUnavailableError as err:
                log.warning("could not mark incidents digested: %s", err)
        self._record([history_entry(now, alert, "digest", Severity.LOW, o, "digest") for o in outcomes])
        return outcomes

    def prune(self) -> int:
        """Apply every retention rule; return how many records were forgotten.

        Stale incidents and long-expired silences (``incidents.retention``), then throttle, claim,
        counter and outbox state idle for longer than that or the policy's longest window or
        escalation period, whichever is longer.
        """
        now = self.clock()
        rules = self.policy.incidents
        retention = max(rules.retention, self.policy.escalation.within, *self.policy.windows.values())
        pruned = self.store.prune_incidents(now=now, rules=rules)
        return pruned + self.store.prune_state(now=now, retention=retention)

    def _silence_for(self, alert: Alert, occurrence: Occurrence, fp: str) -> Silence | None:
        if occurrence.severity is Severity.CRITICAL and self.policy.silence_critical_bypass:
            return None
        return matching_silence(
            self._all_silences(),
            alert,
            severity=occurrence.severity,
            incident_key=occurrence.key,
            fingerprint=fp,
            now=occurrence.at,
        )

    def _all_silences(self) -> list[Silence]:
        """Stored silences plus those of ``[alerting] silences_variable`` (cached briefly)."""
        try:
            stored = self.store.silences()
        except StateUnavailableError as err:
            log.warning("cannot read silences: %s", err)
            stored = []
        return [*stored, *self.silences_from_variable()]

    def silences_from_variable(self) -> list[Silence]:
        """The silences of ``[alerting] silences_variable`` (cached for a short while); never raises.

        A Variable that cannot be read or parsed is logged; the last good silences stay in force.
        """
        if not self._reads_airflow_config:
            return []
        name = self.settings.silences_variable
        if not name:
            return []
        read_at, cached = self._variable_silences
        if time.monotonic() - read_at < SILENCE_CACHE_SECONDS:
            return cached
        from airflow_alerting.incidents.silences import SilenceError, parse_silences
        from airflow_alerting.state.variables import read_variable

        try:
            text = read_variable(name)
            silences = parse_silences(text, source=f"Variable {name}") if text else []
        except StateUnavailableError as err:
            log.warning("cannot read the silences Variable %s: %s", name, err)
            silences = cached
        except SilenceError as err:
            # an operator's typo must not silence everything, nor nothing: keep the last good list
            log.error("silences in Variable %s are invalid, keeping the previous ones: %s", name, err)
            metrics.count("alerting.config_errors", option="silences_variable")
            silences = cached
        self._variable_silences = (time.monotonic(), silences)
        return silences

    def _recover(self, alert: Alert, deadline: float) -> AlertOutcome:
        """A success: recover its members; resolve, once, every incident left with nothing failing."""
        now = self.clock()
        classification = Classification(Severity.LOW, ("the task succeeded",))
        if not self.policy.resolve_on_success:
            return AlertOutcome(alert, classification, "", ())
        task_id = alert.task_id if alert.kind is AlertKind.TASK_SUCCESS else None
        try:
            resolved = self.store.recover_members(alert.dag_id, task_id, alert.map_index, now=now)
        except StateUnavailableError as err:
            log.warning("alerting state unavailable (%s): cannot resolve %s", err, alert.incident_key)
            metrics.incr("state_unavailable")
            return AlertOutcome(alert, classification, "", ())
        outcomes: list[ChannelOutcome] = []
        for incident in resolved:
            outcomes.extend(self._announce_resolution(incident, now, deadline, alert))
        if not resolved:
            return AlertOutcome(alert, classification, "", ())
        first = resolved[0]
        took = first.time_to_resolve or timedelta(0)
        classification = Classification(
            first.severity, (f"every failure of the incident recovered after {human(took)}: resolving",)
        )
        return self._finish(alert, classification, first.id, None, outcomes, None, first)

    def _announce_resolution(
        self, incident: Incident, now: datetime, deadline: float, alert: Alert | None = None
    ) -> list[ChannelOutcome]:
        metrics.incident_event("resolved", incident)
        try:
            superseded = self.store.outbox_drop(incident.id)
        except StateUnavailableError as err:
            log.warning("could not clear the outbox for incident %s: %s", incident.id, err)
            superseded = 0
        if superseded:
            # a notification still waiting for redelivery would arrive after the resolution
            metrics.incr("outbox", "superseded", count=superseded)
        return self._tell(incident, NotificationAction.RESOLVE, DecisionReason.RESOLVED, now, deadline, alert)

    def _tell(
        self,
        incident: Incident,
        action: NotificationAction,
        reason: DecisionReason,
        now: datetime,
        deadline: float | None = None,
        alert: Alert | None = None,
    ) -> list[ChannelOutcome]:
        """Send ``action`` to every channel that announced ``incident`` and can perform it."""
        if deadline is None:
            deadline = time.monotonic() + self.delivery.deadline
        source = alert or _incident_alert(incident, now)
        notifications = [
            Notification(
                alert=source,
                classification=Classification(incident.severity, incident.severity_reasons),
                fingerprint=incident.id,
                channel=name,
                decision=Decision(True, reason),
                airflow_url=self._airflow_url(source) if alert is not None else None,
                resolved=action is NotificationAction.RESOLVE,
                opened_at=incident.opened_at,
                incident=incident,
                action=action,
                announcement=announcement,
            )
            for name, announcement in incident.announcements.items()
            if action in channel_actions(self.channel(name))
        ]
        results = self._deliver_all(notifications, deadline)
        outcomes = []
        for notification, result in zip(notifications, results, strict=True):
            self._settle(Pending(notification), result, now)
            outcomes.append(ChannelOutcome(notification.channel, notification.decision, result))
        if alert is None and outcomes:
            # operator actions have no callback of their own to record them
            why = f"{action.value} incident {incident.id}"
            self._record(
                [history_entry(now, source, incident.id, incident.severity, o, why) for o in outcomes]
            )
        return outcomes


def _incident_alert(incident: Incident, now: datetime) -> Alert:
    """An alert standing for a whole incident, for messages no callback caused (ack, manual resolve)."""
    member = incident.members[0] if incident.members else None
    return Alert(
        dag_id=member.dag_id if member else "incident",
        kind=AlertKind.CUSTOM,
        task_id=member.task_id if member else None,
        occurred_at=now,
        detected_by="user",
        title=incident.title,
    )


def silence_detail(silence: Silence) -> str:
    until = silence.ends_at.strftime("%Y-%m-%d %H:%M %Z")
    who = f" by {silence.author}" if silence.author else ""
    return f"silence {silence.id}{who} until {until}" + (f": {silence.comment}" if silence.comment else "")
