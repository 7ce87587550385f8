"""What the pipeline would do with one alert now, and why: :func:`explain`.

The same stages as :class:`~airflow_alerting.manager.AlertManager` (classification,
fingerprint, correlation, silences, routing, the incident's throttle claim and the channel
plan), run on a state store that is only *read*: nothing is claimed, recorded or written, so
explaining an alert against production state changes nothing there.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from airflow_alerting import throttle
from airflow_alerting.fingerprint import fingerprint as compute_fingerprint
from airflow_alerting.incidents import lifecycle, notify
from airflow_alerting.incidents.correlate import correlation_key
from airflow_alerting.incidents.model import Incident, IncidentState, Occurrence
from airflow_alerting.incidents.silences import Silence, matching_silence
from airflow_alerting.manager_base import EDIT_CLAIM
from airflow_alerting.model import Alert, Decision, DecisionReason, NotificationAction, Severity
from airflow_alerting.policy import AlertPolicy
from airflow_alerting.simulation.run import channel_actions_for
from airflow_alerting.state.base import StateStore, StateUnavailableError

__all__ = ["ChannelVerdict", "Explanation", "IncidentProjection", "explain"]

#: open incidents looked through for the alert's correlation key (as should_throttle does)
_OPEN_INCIDENTS = 1000


@dataclass(frozen=True)
class ChannelVerdict:
    """What one routed channel would be told.

    :param channel: the channel name
    :param type: its type (``slack``, ``email``, ``pagerduty``)
    :param send: a message (or edit) would go out now
    :param action: what it would be (``announce``, ``update``, ``follow_up`` ...), ``None`` for nothing
    :param reason: the decision's reason (``first``, ``correlated``, ``throttled``, ``silenced`` ...)
    :param window: the throttle window of the incident on this channel
    :param detail: the decision in words
    """

    channel: str
    type: str
    send: bool
    action: str | None
    reason: str
    window: timedelta | None
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "type": self.type,
            "send": self.send,
            "action": self.action,
            "reason": self.reason,
            "window_seconds": self.window.total_seconds() if self.window is not None else None,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class IncidentProjection:
    """The incident the alert would join, as it would be afterwards.

    :param new: the alert would open a new incident
    :param id: the open incident it joins (``None`` when new)
    :param severity: the incident's severity after joining (blast radius applied)
    :param reasons: why the incident is above its first member's severity
    :param failures: failures it would count
    :param dag_count: DAGs it would affect
    :param announced_on: channels it is already announced on
    """

    new: bool
    id: str | None
    severity: Severity
    reasons: tuple[str, ...]
    failures: int
    dag_count: int
    announced_on: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "new": self.new,
            "id": self.id,
            "severity": self.severity.label,
            "reasons": list(self.reasons),
            "failures": self.failures,
            "dag_count": self.dag_count,
            "announced_on": list(self.announced_on),
        }


@dataclass(frozen=True)
class Explanation:
    """Everything :func:`explain` found, in pipeline order.

    :param source: ``dag.task[map_index]``
    :param kind: the alert kind
    :param final_try: Airflow will not run the task again (retries are never incidents)
    :param at: the time the decisions are made for
    :param severity: the classified severity
    :param reasons: every reason for it, in the order they applied
    :param rules: the classification rules that matched
    :param silent: the policy records the alert but never sends it
    :param fingerprint: the alert's fingerprint
    :param group_by: the fields the fingerprint is built from
    :param correlation_key: the incident key the failure joins on
    :param title: the incident's title
    :param incident: the incident it would join or open (``None`` for retries and silent alerts)
    :param escalation: the escalation rule in words
    :param route: the channels it routes to
    :param route_reason: which route chose them
    :param silence: the silence that would hold it back, in words
    :param channels: per routed channel, what it would be told
    :param state: where the state was read (``memory (fresh)``, ``sql`` ...)
    :param notes: what the explanation could not know
    """

    source: str
    kind: str
    final_try: bool
    at: datetime
    severity: Severity
    reasons: tuple[str, ...]
    rules: tuple[str, ...]
    silent: bool
    fingerprint: str
    group_by: tuple[str, ...]
    correlation_key: str
    title: str
    incident: IncidentProjection | None
    escalation: str
    route: tuple[str, ...]
    route_reason: str
    silence: str | None
    channels: tuple[ChannelVerdict, ...]
    state: str
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "kind": self.kind,
            "final_try": self.final_try,
            "at": self.at.isoformat(),
            "severity": self.severity.label,
            "reasons": list(self.reasons),
            "rules": list(self.rules),
            "silent": self.silent,
            "fingerprint": self.fingerprint,
            "group_by": list(self.group_by),
            "correlation_key": self.correlation_key,
            "title": self.title,
            "incident": self.incident.to_json() if self.incident is not None else None,
            "escalation": self.escalation,
            "route": list(self.route),
            "route_reason": self.route_reason,
            "silence": self.silence,
            "channels": [c.to_json() for c in self.channels],
            "state": self.state,
            "notes": list(self.notes),
        }


def _escalation_text(policy: AlertPolicy) -> str:
    rule = policy.escalation
    if not rule.enabled:
        return "disabled"
    minutes = int(rule.within.total_seconds() // 60)
    return (
        f"one level up (at most {rule.ceiling.label}) once the same fingerprint fails in {rule.after} "
        f"runs within {minutes} min; the store's count is not read (reading it would record it)"
    )


def _silence_text(silence: Silence) -> str:
    from airflow_alerting.incidents.operations import silence_detail

    return silence_detail(silence)


def explain(
    alert: Alert,
    policy: AlertPolicy,
    store: StateStore,
    *,
    now: datetime,
    state: str = "memory",
    slack_api: bool = True,
) -> Explanation:
    """Explain what the pipeline would do with ``alert`` at ``now``, reading ``store`` only.

    :param alert: the alert (its ``occurred_at`` is replaced by ``now``, as the manager does)
    :param policy: the policy
    :param store: the state to read: open incidents, channel throttle state, silences
    :param now: the time to decide for
    :param state: how the result names ``store``
    :param slack_api: Slack channels edit in place (Web API); ``False`` for incoming webhooks
    """
    alert = replace(alert, occurred_at=now)
    notes: list[str] = []
    classification = policy.classifier.classify(alert)
    fp = compute_fingerprint(alert, policy.group_by)
    key, title = correlation_key(alert, classification, fp, policy.incidents.correlate_by)
    base: dict[str, Any] = {
        "source": alert.source,
        "kind": alert.kind.value,
        "final_try": alert.is_final_try,
        "at": now,
        "severity": classification.severity,
        "reasons": classification.reasons,
        "rules": classification.rules,
        "silent": classification.silent,
        "fingerprint": fp,
        "group_by": policy.group_by,
        "correlation_key": key,
        "title": title,
        "escalation": _escalation_text(policy),
        "state": state,
    }
    if classification.silent:
        routing = policy.router.route(alert, classification.severity)
        held = tuple(
            ChannelVerdict(
                name, policy.channel_spec(name).type, False, None, "silent", None, "silent by policy"
            )
            for name in routing.channels
        )
        return Explanation(
            **base,
            incident=None,
            route=routing.channels,
            route_reason=routing.reason,
            silence=None,
            channels=held,
            notes=("recorded in the history, never sent",),
        )
    if not alert.is_final_try:
        return _explain_retry(alert, policy, store, now, fp, classification.severity, base, notes)

    occurrence = Occurrence(
        key=key,
        title=title,
        dag_id=alert.dag_id,
        task_id=alert.task_id,
        map_index=alert.map_index,
        run_id=alert.run_id,
        severity=classification.severity,
        at=now,
    )
    current = _open_incident(store, key, notes)
    joins = current is not None and not lifecycle.starts_new(current, occurrence, policy.incidents)
    if joins:
        assert current is not None
        if current.member_count > len(current.members):
            notes.append(
                f"the incident's DAG and task counts come from a sample of {len(current.members)} "
                f"of its {current.member_count} members"
            )
        members = {m.key: m for m in current.members}
        joined, _ = lifecycle.join(current, members, occurrence, policy.incidents)
    else:
        joined, _ = lifecycle.join(None, {}, occurrence, policy.incidents)
    incident = joined.incident
    projection = IncidentProjection(
        new=not joins,
        id=incident.id if joins else None,
        severity=incident.severity,
        reasons=incident.severity_reasons,
        failures=incident.failures,
        dag_count=incident.dag_count,
        announced_on=tuple(sorted(incident.announcements)),
    )
    routing = policy.router.route(alert, incident.severity)
    silence = None
    if not (incident.severity is Severity.CRITICAL and policy.silence_critical_bypass):
        silence = matching_silence(
            _silences(store, notes),
            alert,
            severity=occurrence.severity,
            incident_key=key,
            fingerprint=fp,
            now=now,
        )
    verdicts = []
    for name in routing.channels:
        kind = policy.channel_spec(name).type
        if silence is not None:
            verdicts.append(ChannelVerdict(name, kind, False, None, "silenced", None, _silence_text(silence)))
            continue
        verdicts.append(_channel(policy, store, incident, joins, name, kind, now, notes, slack_api))
    return Explanation(
        **base,
        incident=projection,
        route=routing.channels,
        route_reason=routing.reason,
        silence=_silence_text(silence) if silence is not None else None,
        channels=tuple(verdicts),
        notes=tuple(dict.fromkeys(notes)),
    )


def _open_incident(store: StateStore, key: str, notes: list[str]) -> Incident | None:
    try:
        found = store.incidents(
            states=(IncidentState.OPEN, IncidentState.ACKNOWLEDGED), limit=_OPEN_INCIDENTS
        )
    except StateUnavailableError as err:
        notes.append(f"open incidents unreadable ({err}): decided as if there were none")
        return None
    return next((i for i in found if i.key == key), None)


def _silences(store: StateStore, notes: list[str]) -> list[Silence]:
    try:
        return store.silences()
    except StateUnavailableError as err:
        notes.append(f"silences unreadable ({err}): decided as if there were none")
        return []


def _channel(
    policy: AlertPolicy,
    store: StateStore,
    incident: Incident,
    joins: bool,
    name: str,
    kind: str,
    now: datetime,
    notes: list[str],
    slack_api: bool,
) -> ChannelVerdict:
    """The claim's decision and the channel plan for (incident, channel), from stored state only."""
    actions = channel_actions_for(kind, slack_api=slack_api)
    window = notify.incident_window(
        incident,
        severity_window=policy.window_for(incident.severity),
        actions=actions,
        rules=policy.incidents,
    )
    stored = None
    if joins:
        try:
            stored = store.channel_state(incident.id, name)
        except StateUnavailableError as err:
            notes.append(f"throttle state unreadable ({err}): the manager would fail open and send")
            decision = Decision(True, DecisionReason.STATE_UNAVAILABLE, detail="state store unavailable")
            return ChannelVerdict(
                name, kind, True, "announce", decision.reason.value, window, decision.detail
            )
    decision = throttle.decide(
        stored, now=now, window=window, severity=incident.severity, escalated=name in incident.announcements
    )
    action, reason = notify.plan(decision, incident, name, actions)
    if action is not None:
        detail = {
            NotificationAction.ANNOUNCE: "a new message announcing the incident",
            NotificationAction.UPDATE: "the announcement edited in place",
            NotificationAction.FOLLOW_UP: "a follow-up message with what was folded in",
            NotificationAction.ESCALATE: "the severity rose: edited, and a reply in its thread",
            NotificationAction.RENOTIFY: "still failing and unacknowledged: announced again",
        }.get(action, action.value)
        return ChannelVerdict(name, kind, True, action.value, reason.value, window, detail)
    if reason is DecisionReason.CORRELATED and NotificationAction.UPDATE in actions:
        # the manager coalesces in-place edits under their own claim (manager_base.EDIT_CLAIM)
        interval = policy.incidents.update_interval
        try:
            edit_state = store.channel_state(incident.id + EDIT_CLAIM, name)
        except StateUnavailableError as err:
            notes.append(f"edit state unreadable ({err}): the manager would not edit now")
            edit_state = None
        else:
            edit = throttle.decide(edit_state, now=now, window=interval, severity=incident.severity)
            if edit.send and name in incident.announcements:
                return ChannelVerdict(
                    name, kind, True, "update", "updated", interval, "the announcement edited in place"
                )
        detail = (
            "folded into the announced incident; its message is edited at most once per "
            f"{int(interval.total_seconds())} s, the last edit deferred"
        )
    elif reason is DecisionReason.CORRELATED:
        detail = "folded into the announced incident (counted in its members)"
    else:
        detail = decision.detail or reason.value.replace("_", " ")
    return ChannelVerdict(name, kind, False, None, reason.value, window, detail)


def _explain_retry(
    alert: Alert,
    policy: AlertPolicy,
    store: StateStore,
    now: datetime,
    fp: str,
    severity: Severity,
    base: dict[str, Any],
    notes: list[str],
) -> Explanation:
    """A failure that will be retried: throttled per fingerprint, never part of an incident."""
    routing = policy.router.route(alert, severity)
    window = policy.window_for(severity)
    verdicts = []
    for name in routing.channels:
        kind = policy.channel_spec(name).type
        try:
            stored = store.channel_state(fp, name)
        except StateUnavailableError as err:
            notes.append(f"throttle state unreadable ({err}): the manager would fail open and send")
            stored = None
        decision = throttle.decide(stored, now=now, window=window, severity=severity)
        verdicts.append(
            ChannelVerdict(
                name,
                kind,
                decision.send,
                "announce" if decision.send else None,
                decision.reason.value,
                window,
                decision.detail or ("a retry notice" if decision.send else decision.reason.value),
            )
        )
    notes.append("a retry is never part of an incident: throttled per fingerprint")
    return Explanation(
        **base,
        incident=None,
        route=routing.channels,
        route_reason=routing.reason,
        silence=None,
        channels=tuple(verdicts),
        notes=tuple(dict.fromkeys(notes)),
    )
