"""Replaying events through a policy: :func:`simulate` and :class:`SimulationResult`.

The events go through a real :class:`~airflow_alerting.manager.AlertManager` on a fresh
:class:`~airflow_alerting.state.memory.MemoryStore`, with a
:class:`~airflow_alerting.testing.FrozenClock` moved to each event's time and a
:class:`~airflow_alerting.testing.RecordingChannel` per channel that declares what the real
channel type can do (Slack edits in place, e-mail posts, PagerDuty keeps one incident), then the
outbox is swept once the last failure has settled, as in
:func:`~airflow_alerting.testing.storm.replay`.  Nothing leaves the process: no network, no
Airflow configuration, no metrics.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from airflow_alerting import metrics
from airflow_alerting.delivery import DeliveryOptions
from airflow_alerting.incidents.model import Incident
from airflow_alerting.incidents.signature import cause_signature
from airflow_alerting.incidents.silences import Silence
from airflow_alerting.manager_base import OUTBOX_MAX_AGE
from airflow_alerting.model import DecisionReason, NotificationAction
from airflow_alerting.policy import AlertPolicy
from airflow_alerting.render.redact import sanitize
from airflow_alerting.simulation.events import FailureEvent
from airflow_alerting.testing.storm.replay import EDIT_ACTIONS, MESSAGE_ACTIONS, SETTLE

__all__ = [
    "CauseCounts",
    "ChannelCounts",
    "IncidentSummary",
    "SimulationResult",
    "channel_actions_for",
    "settle_time",
    "simulate",
]

#: outbox sweeps made at most while the replay settles (each takes a batch of 100)
_MAX_SWEEPS = 10_000
#: incidents read back from the store after the replay
_MAX_INCIDENTS = 100_000
#: held-back reasons that mean "told already, this one was folded in"
_FOLDED = frozenset({DecisionReason.CORRELATED, DecisionReason.THROTTLED, DecisionReason.IN_FLIGHT})


def channel_actions_for(kind: str, *, slack_api: bool = True) -> frozenset[NotificationAction]:
    """What a channel of type ``kind`` can do, as the real channel classes declare it.

    :param kind: ``slack``, ``email`` or ``pagerduty``
    :param slack_api: Slack through the Web API (edits, threads); ``False`` for an incoming webhook
    """
    from airflow_alerting.channels.base import POSTING_ACTIONS
    from airflow_alerting.channels.pagerduty import PAGERDUTY_ACTIONS
    from airflow_alerting.channels.slack import API_ACTIONS, WEBHOOK_ACTIONS

    if kind == "slack":
        return API_ACTIONS if slack_api else WEBHOOK_ACTIONS
    if kind == "pagerduty":
        return PAGERDUTY_ACTIONS
    return POSTING_ACTIONS


@dataclass(frozen=True)
class ChannelCounts:
    """What one channel would have received.

    :param name: the channel
    :param messages: new messages a human sees (announcements, follow-ups, escalations, repeats, resolutions)
    :param edits: edits of a message already posted (updates, acknowledgements)
    :param follow_ups: of ``messages``, follow-ups summarising what was folded in
    :param folded: failures routed here that produced no message of their own (correlated or throttled)
    :param silenced: failures routed here that a silence held back
    :param stock: one message per final failure routed here (Airflow's stock notifiers)
    :param actions: notifications by action (``announce``, ``update`` ...)
    """

    name: str
    messages: int
    edits: int
    follow_ups: int
    folded: int
    silenced: int
    stock: int
    actions: Mapping[str, int]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "messages": self.messages,
            "edits": self.edits,
            "follow_ups": self.follow_ups,
            "folded": self.folded,
            "silenced": self.silenced,
            "stock": self.stock,
            "actions": dict(self.actions),
        }


@dataclass(frozen=True)
class IncidentSummary:
    """One incident the replay opened.

    :param id: its id in the simulated store
    :param title: the root cause in words
    :param severity: its final severity
    :param state: open, acknowledged or resolved at the end of the replay
    :param failures: failures it counted
    :param dag_count: distinct DAGs affected
    :param task_count: distinct tasks affected
    :param opened_at: first failure
    :param last_seen_at: latest failure
    :param announced_on: channels it was announced on
    """

    id: str
    title: str
    severity: str
    state: str
    failures: int
    dag_count: int
    task_count: int
    opened_at: datetime
    last_seen_at: datetime
    announced_on: tuple[str, ...]

    @classmethod
    def of(cls, incident: Incident) -> IncidentSummary:
        return cls(
            id=incident.id,
            title=incident.title,
            severity=incident.severity.label,
            state=incident.state.value,
            failures=incident.failures,
            dag_count=incident.dag_count,
            task_count=incident.task_count,
            opened_at=incident.opened_at,
            last_seen_at=incident.last_seen_at,
            announced_on=tuple(sorted(incident.announcements)),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "severity": self.severity,
            "state": self.state,
            "failures": self.failures,
            "dag_count": self.dag_count,
            "task_count": self.task_count,
            "opened_at": self.opened_at.isoformat(),
            "last_seen_at": self.last_seen_at.isoformat(),
            "announced_on": list(self.announced_on),
        }


@dataclass(frozen=True)
class CauseCounts:
    """One root cause (exception type and normalised message) across the replay.

    :param cause: the cause signature, as incidents title it
    :param failures: its failures
    :param dags: distinct DAGs it failed
    :param tasks: distinct ``dag.task`` it failed
    :param incidents: incidents its failures joined
    :param messages: new messages its failures caused, all channels together
    """

    cause: str
    failures: int
    dags: int
    tasks: int
    incidents: int
    messages: int

    def to_json(self) -> dict[str, Any]:
        return {
            "cause": self.cause,
            "failures": self.failures,
            "dags": self.dags,
            "tasks": self.tasks,
            "incidents": self.incidents,
            "messages": self.messages,
        }


@dataclass(frozen=True)
class SimulationResult:
    """What a policy would have done with the events.

    :param policy: a label for the policy (its file name, or ``configured``)
    :param events: events replayed
    :param failures: of them, final failures
    :param retries: of them, failures that would be retried
    :param recoveries: of them, successes
    :param start: the first event's time (``None`` without events)
    :param end: the last event's time
    :param channels: per channel, what it would have received, by name
    :param incidents: the incidents, most failures first
    :param causes: per cause, most failures first
    :param held: failures held back on some channel, by reason (``correlated``, ``silenced`` ...)
    """

    policy: str
    events: int
    failures: int
    retries: int
    recoveries: int
    start: datetime | None
    end: datetime | None
    channels: tuple[ChannelCounts, ...]
    incidents: tuple[IncidentSummary, ...]
    causes: tuple[CauseCounts, ...]
    held: Mapping[str, int] = field(default_factory=dict)

    def channel(self, name: str) -> ChannelCounts | None:
        """The counts of channel ``name``, or ``None`` when the policy never routes there."""
        return next((c for c in self.channels if c.name == name), None)

    @property
    def messages(self) -> int:
        """New messages on every channel together."""
        return sum(c.messages for c in self.channels)

    @property
    def stock(self) -> int:
        """What the stock one-message-per-failure approach sends on every channel together."""
        return sum(c.stock for c in self.channels)

    def to_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "events": self.events,
            "failures": self.failures,
            "retries": self.retries,
            "recoveries": self.recoveries,
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat() if self.end else None,
            "messages": self.messages,
            "stock": self.stock,
            "channels": [c.to_json() for c in self.channels],
            "incidents": [i.to_json() for i in self.incidents],
            "causes": [c.to_json() for c in self.causes],
            "held": dict(self.held),
        }


def settle_time(policy: AlertPolicy) -> timedelta:
    """How long after the last event every deferred message ``policy`` can schedule is due.

    A follow-up is due once the burst settles but never sooner than the channel's window (the
    severity's, or ``repeat_interval`` for an unacknowledged critical incident); a deferred edit
    after ``update_interval``.  At least :data:`~airflow_alerting.testing.storm.SETTLE`.

    :param policy: the policy
    """
    rules = policy.incidents
    longest = max(
        [*policy.windows.values(), policy.summary_after, rules.update_interval, rules.repeat_interval]
    )
    # the outbox gives up on an item after OUTBOX_MAX_AGE: nothing is due later than that
    return min(max(SETTLE, longest + timedelta(minutes=1)), OUTBOX_MAX_AGE - timedelta(minutes=1))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No metrics and no per-alert logging while simulating.

    A simulated alert must not count in the deployment's real metrics, and the manager's INFO
    line per alert would bury the report.  ``metrics._stats`` is the one seam metrics offer.
    """
    logger = logging.getLogger("airflow_alerting")
    level = logger.level
    stats = metrics._stats
    metrics._stats = lambda: None  # type: ignore[assignment]
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        metrics._stats = stats  # type: ignore[assignment]
        logger.setLevel(level)


def _cause(event: FailureEvent) -> str:
    # as correlation computes it (incidents.correlate.correlation_key): secrets go first
    cause = cause_signature(event.exception_type, sanitize(event.message))
    return cause if cause.strip() else f"{event.kind.value.replace('_', ' ')} without a message"


def simulate(
    events: Sequence[FailureEvent],
    policy: AlertPolicy,
    *,
    label: str = "policy",
    slack_api: bool = True,
    settle: timedelta | None = None,
    silences: Sequence[Silence] = (),
) -> SimulationResult:
    """Replay ``events`` through ``policy`` and count what each channel would have received.

    :param events: the events (see :func:`~airflow_alerting.simulation.events.read_events`), any order
    :param policy: the policy to try
    :param label: how the result names the policy
    :param slack_api: Slack channels edit in place (Web API); ``False`` simulates incoming webhooks
    :param settle: after the last event the clock moves this far and the outbox is swept, so the
        deferred edits and follow-ups that would go out are counted; zero skips it.  By default
        (:func:`settle_time`) far enough for every deferred message the policy can schedule.
    :param silences: silences in force during the replay (the simulated store starts without any)
    """
    from airflow_alerting.manager import AlertManager
    from airflow_alerting.testing import FrozenClock, MemoryStore, RecordingChannel

    ordered = sorted(events, key=lambda e: e.time)
    clock = FrozenClock(ordered[0].time) if ordered else FrozenClock()
    names = set(policy.router.channel_names())
    if policy.fallback_channel:
        names.add(policy.fallback_channel)
    recorders = {
        name: RecordingChannel(
            name, actions=channel_actions_for(policy.channel_spec(name).type, slack_api=slack_api)
        )
        for name in sorted(names)
    }
    manager = AlertManager(
        policy,
        store=MemoryStore(history_limit=0),
        channels=recorders,
        clock=clock,
        # recording channels never fail: one attempt, no back-off
        delivery=DeliveryOptions(attempts=1, deadline=30, backoff_base=0.0, backoff_cap=0.0),
    )
    for silence in silences:
        manager.store.add_silence(silence)
    folded: Counter[str] = Counter()
    silenced: Counter[str] = Counter()
    held: Counter[str] = Counter()
    stock: Counter[str] = Counter()
    cause_of: dict[str, str] = {}
    cause_failures: Counter[str] = Counter()
    cause_dags: dict[str, set[str]] = defaultdict(set)
    cause_tasks: dict[str, set[str]] = defaultdict(set)
    cause_incidents: dict[str, set[str]] = defaultdict(set)
    with _quiet():
        for event in ordered:
            if event.time > clock.now:
                clock.advance(event.time - clock.now)
            alert = event.alert()
            outcome = manager.handle(alert, severity=event.severity)
            if event.is_failure and alert.is_final_try:
                cause = _cause(event)
                cause_of[alert.occurrence_id] = cause
                cause_failures[cause] += 1
                cause_dags[cause].add(event.dag_id)
                cause_tasks[cause].add(f"{event.dag_id}.{event.task_id or ''}")
                if outcome.incident is not None:
                    cause_incidents[cause].add(outcome.incident.id)
                # the stock notifiers: one message per final failure on every routed channel
                classification = policy.classifier.classify(alert)
                if not classification.silent:
                    severity = event.severity or classification.severity
                    stock.update(policy.router.route(alert, severity).channels)
            for item in outcome.channels:
                if item.decision.send:
                    continue
                held[item.decision.reason.value] += 1
                if item.decision.reason in _FOLDED:
                    folded[item.channel] += 1
                elif item.decision.reason is DecisionReason.SILENCED:
                    silenced[item.channel] += 1
        settle = settle_time(policy) if settle is None else settle
        if settle > timedelta(0) and ordered:
            clock.advance(settle)
            for _ in range(_MAX_SWEEPS):
                if not manager.redeliver_outbox(limit=100):
                    break
    incidents = manager.store.incidents(limit=_MAX_INCIDENTS)
    channel_counts = []
    cause_messages: Counter[str] = Counter()
    for name, recorder in recorders.items():
        by_action = Counter(n.action for n in recorder.notifications)
        for n in recorder.notifications:
            if n.action in MESSAGE_ACTIONS and n.alert.occurrence_id in cause_of:
                cause_messages[cause_of[n.alert.occurrence_id]] += 1
        channel_counts.append(
            ChannelCounts(
                name=name,
                messages=sum(c for a, c in by_action.items() if a in MESSAGE_ACTIONS),
                edits=sum(c for a, c in by_action.items() if a in EDIT_ACTIONS),
                follow_ups=by_action.get(NotificationAction.FOLLOW_UP, 0),
                folded=folded.get(name, 0),
                silenced=silenced.get(name, 0),
                stock=stock.get(name, 0),
                actions={a.value: by_action.get(a, 0) for a in NotificationAction},
            )
        )
    causes = [
        CauseCounts(
            cause=cause,
            failures=count,
            dags=len(cause_dags[cause]),
            tasks=len(cause_tasks[cause]),
            incidents=len(cause_incidents[cause]),
            messages=cause_messages.get(cause, 0),
        )
        for cause, count in cause_failures.items()
    ]
    causes.sort(key=lambda c: (-c.failures, c.cause))
    summaries = sorted((IncidentSummary.of(i) for i in incidents), key=lambda i: (-i.failures, i.title))
    failures = [e for e in ordered if e.is_failure]
    final = sum(1 for e in failures if e.alert().is_final_try)
    return SimulationResult(
        policy=label,
        events=len(ordered),
        failures=final,
        retries=len(failures) - final,
        recoveries=len(ordered) - len(failures),
        start=ordered[0].time if ordered else None,
        end=ordered[-1].time if ordered else None,
        channels=tuple(channel_counts),
        incidents=tuple(summaries),
        causes=tuple(causes),
        held=dict(sorted(held.items())),
    )
