"""Replaying a storm: :func:`replay`, :class:`ReplayReport`, :func:`summarise`."""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

from airflow_alerting.model import Notification, NotificationAction
from airflow_alerting.testing.storm.causes import _RUN_EPOCH
from airflow_alerting.testing.storm.generate import Storm, storm_alert

if TYPE_CHECKING:
    from airflow_alerting.incidents.model import Incident
    from airflow_alerting.manager import AlertManager
    from airflow_alerting.testing import FrozenClock

#: actions a human sees as a new message: top-level posts and thread replies
MESSAGE_ACTIONS = frozenset(
    {
        NotificationAction.ANNOUNCE,
        NotificationAction.FOLLOW_UP,
        NotificationAction.ESCALATE,
        NotificationAction.RENOTIFY,
        NotificationAction.RESOLVE,
    }
)
#: actions that change a message already posted
EDIT_ACTIONS = frozenset({NotificationAction.UPDATE, NotificationAction.ACKNOWLEDGE})

#: how long after the last failure :func:`replay` sweeps the outbox (deferred edits are due by then)
SETTLE = timedelta(minutes=5)
#: outbox sweeps :func:`replay` makes at most while settling
_MAX_SWEEPS = 10_000


class _Recording(Protocol):
    """What :func:`replay` needs of a channel: :class:`~airflow_alerting.testing.RecordingChannel`."""

    name: str
    notifications: list[Notification]


@dataclass(frozen=True)
class ReplayReport:
    """What a storm replay produced, against what the stock approach would have sent.

    :param failures: failures replayed
    :param causes: distinct root causes in the storm (the floor: one message per cause)
    :param notifications: per channel, what it recorded during the replay, in order
    :param actions: per channel, notifications by action
    :param messages: per channel, new messages a human sees (:data:`MESSAGE_ACTIONS`)
    :param edits: per channel, edits of messages already posted (:data:`EDIT_ACTIONS`)
    :param stock_messages: per channel, one message per failure the default matrix routes there
        (Airflow's stock notifiers: every failure, no correlation, no throttling)
    :param incidents: the store's incidents after the replay
    :param cause_incidents: per cause, the incidents its failures joined (from notifications and members)
    :param unaccounted: failures neither announced nor counted in any incident's ``failures``
    :param double_counted: failures counted in more than one incident (or more than once)
    :param unnamed_causes: per channel, causes whose title no message on it carries
    :param handle_seconds: wall time of each ``handle()``, in replay order
    """

    failures: int
    causes: int
    notifications: Mapping[str, tuple[Notification, ...]]
    actions: Mapping[str, Mapping[NotificationAction, int]]
    messages: Mapping[str, int]
    edits: Mapping[str, int]
    stock_messages: Mapping[str, int]
    incidents: tuple[Incident, ...]
    cause_incidents: Mapping[str, tuple[str, ...]]
    unaccounted: int
    double_counted: int
    unnamed_causes: Mapping[str, tuple[str, ...]]
    handle_seconds: tuple[float, ...] = field(default=(), repr=False)

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.notifications) | set(self.stock_messages)))

    def floor_ratio(self, channel: str) -> float:
        """Messages on ``channel`` per distinct cause: 1.0 is one message per root cause."""
        return self.messages.get(channel, 0) / self.causes if self.causes else math.inf

    def stock_ratio(self, channel: str) -> float:
        """What the stock approach sends on ``channel`` per distinct cause."""
        return self.stock_messages.get(channel, 0) / self.causes if self.causes else math.inf

    def latency(self, quantile: float) -> float:
        """The ``quantile`` (0-1) of ``handle()`` wall time in seconds (linear interpolation)."""
        return _quantile(self.handle_seconds, quantile)

    def incident_of(self, cause: str) -> Incident | None:
        """The store's incident for ``cause`` when its failures joined exactly one, else ``None``."""
        ids = self.cause_incidents.get(cause, ())
        if len(ids) != 1:
            return None
        return next((i for i in self.incidents if i.id == ids[0]), None)

    def format(self) -> str:
        """The report as text: per channel ours vs stock, then the correctness counts."""
        lines = [
            f"{self.failures} failures, {self.causes} distinct causes, {len(self.incidents)} incidents",
            f"{'channel':<10} {'messages':>8} {'edits':>6} {'stock':>7} {'/cause':>7} {'stock/cause':>11}"
            "  actions",
        ]
        for name in self.channels:
            acts = ", ".join(f"{a.value}={n}" for a, n in sorted(self.actions.get(name, {}).items()) if n)
            lines.append(
                f"{name:<10} {self.messages.get(name, 0):>8} {self.edits.get(name, 0):>6} "
                f"{self.stock_messages.get(name, 0):>7} {self.floor_ratio(name):>7.2f} "
                f"{self.stock_ratio(name):>11.2f}  {acts or '-'}"
            )
        unnamed = ", ".join(f"{name}={len(causes)}" for name, causes in sorted(self.unnamed_causes.items()))
        lines.append(
            f"unaccounted={self.unaccounted} double_counted={self.double_counted} "
            f"unnamed causes: {unnamed or '-'}"
        )
        if self.handle_seconds:
            lines.append(
                "handle(): p50={:.2f} ms p95={:.2f} ms p99={:.2f} ms".format(
                    *(1000 * self.latency(q) for q in (0.5, 0.95, 0.99))
                )
            )
        return "\n".join(lines) + "\n"


def _quantile(values: Sequence[float], quantile: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * min(1.0, max(0.0, quantile))
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def replay(
    storm: Storm,
    manager: AlertManager,
    clock: FrozenClock,
    *,
    channels: Mapping[str, _Recording] | None = None,
    settle: timedelta = SETTLE,
) -> ReplayReport:
    """Feed ``storm`` to ``manager`` in time order and report what it sent.

    The clock is advanced to each failure's time before its ``handle()``; the storm starts at
    the clock's time on entry.  Then the storm settles: the clock moves ``settle`` past the last
    failure and the outbox is swept until nothing is due, as the maintenance DAG would, so
    deferred edits (the incident's final state) and follow-ups go out.  Only notifications
    recorded during the replay count.

    :param storm: the storm
    :param manager: the manager under test (built with ``clock``, a store and recording channels)
    :param clock: the manager's clock
    :param channels: the recording channels by name; found through ``manager.channel()`` for every
        channel the policy routes to when omitted
    :param settle: how long after the last failure the outbox is swept; zero skips the sweep
    """
    recorders = dict(channels) if channels is not None else _recording_channels(manager)
    before = {name: len(ch.notifications) for name, ch in recorders.items()}
    start = clock.now
    timings: list[float] = []
    for event in storm.events:
        due = start + event.offset
        if due > clock.now:
            clock.advance(due - clock.now)
        alert = storm_alert(event, start)
        began = time.perf_counter()
        manager.handle(alert)
        timings.append(time.perf_counter() - began)
    if settle > timedelta(0):
        clock.advance(settle)
        # each sweep takes a bounded batch; stop when nothing more is due (or nothing changes)
        for _ in range(_MAX_SWEEPS):
            if not manager.redeliver_outbox(limit=100):
                break
    recorded = {name: tuple(ch.notifications[before[name] :]) for name, ch in recorders.items()}
    return summarise(storm, recorded, _store_incidents(manager), manager=manager, handle_seconds=timings)


def _recording_channels(manager: AlertManager) -> dict[str, _Recording]:
    names = set(manager.policy.router.channel_names())
    if manager.policy.fallback_channel:
        names.add(manager.policy.fallback_channel)
    found: dict[str, _Recording] = {}
    for name in sorted(names):
        channel: Any = manager.channel(name)
        if channel is not None and isinstance(getattr(channel, "notifications", None), list):
            found[name] = channel
    return found


def _store_incidents(manager: AlertManager) -> list[Incident]:
    incidents = getattr(manager.store, "incidents", None)
    if incidents is None:
        return []  # a store from before incidents: everything is unaccounted unless announced
    found: list[Incident] = incidents(limit=10_000)
    return found


def summarise(
    storm: Storm,
    notifications: Mapping[str, Sequence[Notification]],
    incidents: Iterable[Incident],
    *,
    manager: AlertManager | None = None,
    handle_seconds: Sequence[float] = (),
) -> ReplayReport:
    """Build the :class:`ReplayReport` of a replay from what the channels recorded and the store holds.

    :param storm: the storm that was replayed
    :param notifications: per channel, the notifications recorded during the replay
    :param incidents: the store's incidents afterwards
    :param manager: the manager (its policy decides the stock comparison; the default policy when omitted)
    :param handle_seconds: wall time of each ``handle()``
    """
    incidents = tuple(incidents)
    cause_of = {e.occurrence_id: e.cause for e in storm.events}
    cause_of_member: dict[str, str] = {e.member_key: e.cause for e in storm.events}
    actions: dict[str, Mapping[NotificationAction, int]] = {}
    messages: dict[str, int] = {}
    edits: dict[str, int] = {}
    for name, recorded in notifications.items():
        counts = Counter(n.action for n in recorded)
        actions[name] = MappingProxyType({a: counts.get(a, 0) for a in NotificationAction})
        messages[name] = sum(n for a, n in counts.items() if a in MESSAGE_ACTIONS)
        edits[name] = sum(n for a, n in counts.items() if a in EDIT_ACTIONS)

    cause_incidents: dict[str, set[str]] = defaultdict(set)
    for recorded in notifications.values():
        for n in recorded:
            cause = cause_of.get(n.alert.occurrence_id)
            if cause is not None and n.incident is not None:
                cause_incidents[cause].add(n.incident.id)
    for incident in incidents:
        for member in incident.members:
            member_cause = cause_of_member.get(member.key)
            if member_cause is not None:
                cause_incidents[member_cause].add(incident.id)

    unaccounted, double_counted = _accounting(storm, notifications, incidents)
    return ReplayReport(
        failures=storm.failures,
        causes=len(storm.causes),
        notifications=MappingProxyType({k: tuple(v) for k, v in notifications.items()}),
        actions=MappingProxyType(actions),
        messages=MappingProxyType(messages),
        edits=MappingProxyType(edits),
        stock_messages=MappingProxyType(_stock_messages(storm, manager)),
        incidents=incidents,
        cause_incidents=MappingProxyType(
            {c: tuple(sorted(ids)) for c, ids in sorted(cause_incidents.items())}
        ),
        unaccounted=unaccounted,
        double_counted=double_counted,
        unnamed_causes=MappingProxyType(_unnamed(storm, notifications, cause_of)),
        handle_seconds=tuple(handle_seconds),
    )


def _accounting(
    storm: Storm, notifications: Mapping[str, Sequence[Notification]], incidents: Sequence[Incident]
) -> tuple[int, int]:
    """``(unaccounted, double_counted)`` from the incidents' counts and their member samples.

    Two views, the larger wins: the totals (sum of ``failures`` against the number of failures),
    and per member (each visible member's ``failures`` against the storm's failures of that task
    instance).  Snapshots carry a sample of members, so members outside every sample are checked
    only in bulk, against the failures the sampled-out members account for.
    """
    expected = Counter(e.member_key for e in storm.events)
    claimed: Counter[str] = Counter()
    hidden = 0  # failures of members outside a truncated sample
    unattributed = 0  # failures a complete member list does not explain: counted twice
    for incident in incidents:
        visible = 0
        for member in incident.members:
            claimed[member.key] += member.failures
            visible += member.failures
        if incident.member_count > len(incident.members):
            hidden += max(0, incident.failures - visible)
        else:
            unattributed += max(0, incident.failures - visible)
    total = sum(i.failures for i in incidents)
    over = sum(max(0, n - expected[k]) for k, n in claimed.items() if k in expected)
    under_visible = sum(max(0, n - claimed[k]) for k, n in expected.items() if k in claimed)
    expected_hidden = sum(n for k, n in expected.items() if k not in claimed)
    missing = max(storm.failures - total, under_visible + max(0, expected_hidden - hidden))
    # a failure announced on its own (old code: no incident at all) reached a human all the same
    announced = {
        n.alert.occurrence_id
        for recorded in notifications.values()
        for n in recorded
        if n.action is NotificationAction.ANNOUNCE
    }
    not_announced = sum(1 for e in storm.events if e.occurrence_id not in announced)
    return min(missing, not_announced), max(total - storm.failures, over + unattributed)


def _stock_messages(storm: Storm, manager: AlertManager | None) -> dict[str, int]:
    from airflow_alerting.policy import AlertPolicy

    policy = manager.policy if manager is not None else AlertPolicy()
    start = _RUN_EPOCH
    counts: Counter[str] = Counter()
    for event in storm.events:
        alert = storm_alert(event, start)
        classification = policy.classifier.classify(alert)
        if classification.silent:
            continue
        counts.update(policy.router.route(alert, classification.severity).channels)
    return dict(sorted(counts.items()))


def _signatures(storm: Storm) -> dict[str, set[str]] | None:
    """Per cause, the cause signatures of its failures; ``None`` without the signature module."""
    try:
        from airflow_alerting.incidents.signature import cause_signature
    except ImportError:
        return None
    found: dict[str, set[str]] = defaultdict(set)
    seen: set[tuple[str, str]] = set()
    for e in storm.events:
        if (e.exception_type, e.message) in seen:
            continue
        seen.add((e.exception_type, e.message))
        found[e.cause].add(cause_signature(e.exception_type, e.message))
    return found


def _unnamed(
    storm: Storm, notifications: Mapping[str, Sequence[Notification]], cause_of: Mapping[str, str]
) -> dict[str, tuple[str, ...]]:
    """Per channel, the causes no message on it names.

    A message names a cause when its incident's title carries the cause's signature (the title is
    the signature, plus a scope when correlation is narrower).  Without the signature module (or
    for notifications without an incident) a message names the cause of the failure it is about.
    """
    signatures = _signatures(storm)
    result: dict[str, tuple[str, ...]] = {}
    for name, recorded in notifications.items():
        said = [n for n in recorded if n.action in MESSAGE_ACTIONS]
        named = {
            cause_of[n.alert.occurrence_id]
            for n in said
            if n.incident is None and n.alert.occurrence_id in cause_of
        }
        titles = {n.incident.title for n in said if n.incident is not None}
        if signatures is None:
            named |= {cause_of[n.alert.occurrence_id] for n in said if n.alert.occurrence_id in cause_of}
        else:
            for cause, sigs in signatures.items():
                if sigs & titles or any(sig and sig in title for sig in sigs for title in titles):
                    named.add(cause)
        result[name] = tuple(sorted(c for c in storm.causes if c not in named))
    return result
