"""What to tell one channel about an incident: pure decisions with reasons.

The throttle claim (:mod:`airflow_alerting.throttle`, keyed by incident and channel) says
*whether* this worker speaks now; these functions say *what* it says: announce the incident,
edit the announcement, follow up, reply that the severity rose, repeat an unacknowledged page.
"""

from __future__ import annotations

from collections.abc import Set
from datetime import timedelta

from airflow_alerting.incidents.lifecycle import IncidentRules
from airflow_alerting.incidents.model import Incident, IncidentState
from airflow_alerting.model import Decision, DecisionReason, NotificationAction, Severity

#: held-back decisions that mean "another message about this incident already went out"
_FOLDED = frozenset({DecisionReason.THROTTLED})


def pages_again(incident: Incident) -> bool:
    """An unacknowledged critical incident is repeated every ``repeat_interval`` while it fails."""
    return incident.severity is Severity.CRITICAL and incident.state is IncidentState.OPEN


def incident_window(
    incident: Incident, *, severity_window: timedelta, actions: Set[NotificationAction], rules: IncidentRules
) -> timedelta:
    """The throttle window for one channel's claims on ``incident``.

    - unacknowledged critical: ``repeat_interval`` (never zero: a critical incident pages once,
      then again only if nobody acknowledged it);
    - a channel that edits in place, or an acknowledged incident: once per incident (later
      failures become edits, or are counted);
    - otherwise the severity's throttle window, so channels that cannot edit get follow-ups at
      most that often.

    :param severity_window: the policy's throttle window for the incident's severity
    :param actions: what the channel can do
    """
    if pages_again(incident):
        return rules.repeat_interval
    if NotificationAction.UPDATE in actions or incident.state is IncidentState.ACKNOWLEDGED:
        return rules.retention
    return severity_window if severity_window > timedelta(0) else rules.repeat_interval


def plan(
    decision: Decision, incident: Incident, channel: str, actions: Set[NotificationAction]
) -> tuple[NotificationAction | None, DecisionReason]:
    """Turn a claim's decision into the action for ``channel`` (``None``: say nothing) and its reason.

    :param decision: the throttle claim's decision for (incident, channel)
    :param incident: the incident after the failure joined it
    :param channel: the channel name
    :param actions: what the channel can do
    """
    announced = channel in incident.announcements
    if not decision.send:
        folded = announced and decision.reason in _FOLDED
        return None, DecisionReason.CORRELATED if folded else decision.reason
    reason = decision.reason
    if not announced:
        action = NotificationAction.ANNOUNCE
    elif reason is DecisionReason.ESCALATED:
        action = NotificationAction.ESCALATE
    elif reason is DecisionReason.WINDOW_ELAPSED and pages_again(incident):
        action, reason = NotificationAction.RENOTIFY, DecisionReason.REPEATED
    elif NotificationAction.UPDATE in actions:
        action = NotificationAction.UPDATE
        reason = DecisionReason.UPDATED
    else:
        action = NotificationAction.FOLLOW_UP
    if action not in actions:
        # e.g. PagerDuty has no follow-up: its one incident already carries the dedup key
        return None, DecisionReason.CORRELATED
    return action, reason
