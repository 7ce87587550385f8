"""Counters, gauges and timers through Airflow's ``Stats`` (StatsD, DogStatsD or OpenTelemetry).

Every metric is declared once in :data:`CATALOGUE` (name, type, tags, description);
``docs/metrics.md`` is checked against it by ``tests/unit/test_metrics.py``. Emit with
:func:`count`, :func:`gauge` and :func:`timer`, naming a catalogue entry and giving its tags
as keywords; a name missing from the catalogue is dropped (and logged at debug level), so
nothing undocumented ever leaves the process.

Naming follows Airflow 3.2+'s own metrics: a fixed name (``alerting.alerts.sent``) whose
variable parts are *tags*, which reach backends that carry tags (DogStatsD, OpenTelemetry,
StatsD with ``[metrics] statsd_influxdb_enabled``). For plain StatsD, which drops tags, a
metric may also have a *legacy name* with its low-cardinality tags folded in
(``alerting.sent.{channel}``), sent in addition while ``[metrics] legacy_names_on`` is true:
the same switch and the same scheme (``metrics_template.yaml``'s ``legacy_name`` and
``name_variables``) as Airflow's ``ti.finish.{dag_id}.{task_id}.{state}``. Unlike Airflow's, legacy
names are sent without tags (only tag-less backends need them), and DAG ids are never folded
into names (unbounded cardinality), only tagged.

Metrics never raise: building names, importing Airflow's Stats (which fails on a bad
``[metrics]`` section) and the backend call all run in the alert pipeline, where a metric is
never worth an exception. Without a configured backend Airflow's ``NoStatsLogger`` makes
every call a no-op.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import re
import string
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

__all__ = [
    "CATALOGUE",
    "MetricSpec",
    "MetricType",
    "alert_handled",
    "count",
    "decision",
    "delivery_timed",
    "gauge",
    "incident_event",
    "incr",
    "metric_name",
    "timer",
    "timing",
]

log = logging.getLogger(__name__)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
#: tag values longer than this are cut: a tag is a dimension, not a message
_MAX_TAG_VALUE = 100
#: suppression reason for a failure routed nowhere because business hours lowered its severity
OUTSIDE_HOURS: Final = "outside_hours"
# classify.py's reason text when business hours lowered a severity (tested through the classifier)
_OUTSIDE_HOURS_REASON = "outside business hours"


class MetricType(str, enum.Enum):
    """How a metric is sent: Airflow's ``Stats.incr``, ``Stats.gauge`` or ``Stats.timing``."""

    COUNTER = "counter"
    GAUGE = "gauge"
    TIMER = "timer"


@dataclass(frozen=True)
class MetricSpec:
    """One metric this provider emits.

    :param name: full metric name (Airflow's ``statsd_prefix`` is put in front by the backend)
    :param type: counter, gauge or timer (timers are in milliseconds)
    :param description: what it counts or measures, as documented in ``docs/metrics.md``
    :param tags: tag keys it carries, on backends that support tags
    :param legacy_name: name for tag-less StatsD with some tags folded in as ``{tag}`` fields,
        sent besides :attr:`name` while ``[metrics] legacy_names_on`` is true; ``None`` for none
    """

    name: str
    type: MetricType
    description: str
    tags: tuple[str, ...] = ()
    legacy_name: str | None = None

    @property
    def name_variables(self) -> tuple[str, ...]:
        """The tags folded into :attr:`legacy_name`, in order."""
        if self.legacy_name is None:
            return ()
        return tuple(field for _, field, _, _ in string.Formatter().parse(self.legacy_name) if field)


def _spec(
    name: str, kind: MetricType, description: str, tags: tuple[str, ...] = (), legacy: str | None = None
) -> tuple[str, MetricSpec]:
    return name, MetricSpec(name, kind, description, tags, legacy)


_C, _G, _T = MetricType.COUNTER, MetricType.GAUGE, MetricType.TIMER
_DECISION_TAGS: Final = ("channel", "severity", "reason", "dag_id")

#: Every metric this provider emits, by name.
CATALOGUE: Final[Mapping[str, MetricSpec]] = MappingProxyType(
    dict(
        [
            # --- alerts -----------------------------------------------------------------------
            _spec(
                "alerting.alerts.classified",
                _C,
                "Alerts run through the pipeline (failures, retries, recoveries, custom alerts), "
                "by the severity they were classified (or escalated) to.",
                ("severity", "kind", "dag_id"),
                "alerting.classified.{severity}",
            ),
            _spec(
                "alerting.alerts.escalated",
                _C,
                "Alerts raised above their classified severity because they recurred; "
                "``severity`` is the severity escalated to.",
                ("severity", "dag_id"),
                "alerting.escalated.{severity}",
            ),
            _spec(
                "alerting.alerts.sent",
                _C,
                "Notifications delivered to a channel (announcements, updates, follow-ups, "
                "resolutions, redeliveries).",
                _DECISION_TAGS,
                "alerting.sent.{channel}",
            ),
            _spec(
                "alerting.alerts.suppressed",
                _C,
                "Notifications held back, by ``reason``: ``throttled``, ``correlated``, "
                "``silenced``, ``outside_hours`` (business hours lowered the severity below every "
                "route), ``not_routed``, ``duplicate_callback``, ``in_flight`` and the other "
                "decision reasons of ``DecisionReason``.",
                _DECISION_TAGS,
                "alerting.suppressed.{reason}",
            ),
            # --- delivery -----------------------------------------------------------------------
            _spec(
                "alerting.delivery.failures",
                _C,
                "Notifications that could not be delivered after every attempt (queued in the "
                "outbox when possible).",
                _DECISION_TAGS,
                "alerting.failed.{channel}",
            ),
            _spec(
                "alerting.delivery.latency",
                _T,
                "Time to deliver one notification to one channel, all attempts and back-off "
                "included; ``outcome`` is ``ok`` or ``failed``.",
                ("channel", "outcome"),
                "alerting.delivery_latency.{channel}",
            ),
            _spec(
                "alerting.callback.duration",
                _T,
                "Time one alert took in the callback (``AlertManager.handle``): classification, "
                "state, rendering, deliveries and the outbox sweep; ``store`` is the state store's "
                "class, ``kind`` the alert's kind.",
                ("kind", "store"),
            ),
            # --- outbox -------------------------------------------------------------------------
            _spec(
                "alerting.outbox.due",
                _G,
                "Outbox items due for delivery found by the last sweep, up to the sweep's limit "
                "(20 after an alert, 200 in the `alerting_maintenance` DAG; the limit itself means "
                "that many or more): the depth of the redelivery backlog.",
            ),
            _spec(
                "alerting.outbox.depth",
                _G,
                "Notifications waiting in the outbox, due or not, counted by each run of the "
                "`alerting_maintenance` DAG's `redeliver_outbox` (after its sweep).",
            ),
            _spec("alerting.outbox.added", _C, "Undelivered notifications queued for redelivery."),
            _spec(
                "alerting.outbox.lost",
                _C,
                "Undelivered notifications that could not be queued (state store unavailable).",
            ),
            _spec("alerting.outbox.redelivered", _C, "Queued notifications delivered by a later sweep."),
            _spec("alerting.outbox.expired", _C, "Queued notifications given up after the outbox age limit."),
            _spec(
                "alerting.outbox.quarantined",
                _C,
                "Outbox items no sweep can read (e.g. written by a newer version), taken out of the queue.",
            ),
            _spec(
                "alerting.outbox.superseded",
                _C,
                "Queued notifications dropped because their incident was resolved first.",
            ),
            _spec(
                "alerting.outbox.dropped",
                _C,
                "Outbox items evicted because the outbox reached its size cap.",
            ),
            _spec(
                "alerting.outbox.dropped_alerts",
                _C,
                "Of `alerting.outbox.dropped`, the items that were alerts rather than deferred "
                "edits or follow-up summaries (evicted last).",
            ),
            _spec("alerting.summaries.sent", _C, "Follow-up summaries of held-back failures delivered."),
            _spec("alerting.summaries.edited", _C, "Deferred in-place edits of an announcement delivered."),
            # --- incidents ----------------------------------------------------------------------
            _spec(
                "alerting.incidents.opened",
                _C,
                "Incidents opened (the first failure of a correlation key).",
                ("severity", "dag_id"),
            ),
            _spec(
                "alerting.incidents.raised",
                _C,
                "Incidents whose severity was raised by a new member (blast radius, escalation).",
                ("severity", "dag_id"),
            ),
            _spec("alerting.incidents.acknowledged", _C, "Incidents acknowledged.", ("severity",)),
            _spec(
                "alerting.incidents.resolved",
                _C,
                "Incidents resolved (every member recovered, or resolved by hand).",
                ("severity",),
            ),
            _spec(
                "alerting.incidents.time_to_acknowledge",
                _T,
                "From an incident's opening to its acknowledgement (MTTA is its mean).",
                ("severity",),
                "alerting.incident_time_to_acknowledge",
            ),
            _spec(
                "alerting.incidents.time_to_resolve",
                _T,
                "From an incident's opening to its resolution (MTTR is its mean).",
                ("severity",),
                "alerting.incident_time_to_resolve",
            ),
            # --- health of the provider itself -----------------------------------------------
            _spec("alerting.errors", _C, "Alerts the pipeline failed on (a bug; the task is unaffected)."),
            _spec(
                "alerting.config_errors",
                _C,
                "Unusable ``[alerting]`` values replaced by their default, or an unusable policy/"
                "silences source, by ``option``.",
                ("option",),
                "alerting.config_errors.{option}",
            ),
            _spec(
                "alerting.state_unavailable",
                _C,
                "State store operations that failed; alerting failed open for them.",
            ),
            _spec("alerting.state_shadowed", _C, "Writes to the Variables store found shadowed."),
            _spec("alerting.state_contended", _C, "Verified writes retried because another worker won."),
            _spec("alerting.state_corrupt", _C, "Unreadable state documents replaced."),
            _spec("alerting.claim_lost", _C, "Send claims lost to another worker at verification."),
            _spec(
                "alerting.incident_pointer_lost",
                _C,
                "Incident openings that lost the race for a correlation key to another worker "
                "(the failure joins the winner's incident).",
            ),
        ]
    )
)


def metric_name(*parts: object) -> str:
    """Join parts into a safe metric name (``alerting.sent.slack``), at most 250 characters.

    Anything outside ``[A-Za-z0-9_.-]`` (spaces, non-ASCII letters, lone surrogates) becomes
    ``_``; empty and ``None`` parts are left out, other non-strings converted with ``str()``.

    :param parts: name parts after ``alerting``
    """
    texts = ("" if p is None else p if isinstance(p, str) else str(p) for p in ("alerting", *parts))
    return ".".join(_UNSAFE.sub("_", text) for text in texts if text)[:250]


def _tag_value(value: object) -> str:
    # Tag values become part of a StatsD datagram (or of a name, when folded): only characters
    # every backend and Airflow's name validator accept, so ',', '=', ':', '|' never split it.
    text = value if isinstance(value, str) else str(value)
    return _UNSAFE.sub("_", text)[:_MAX_TAG_VALUE] or "_"


_INIT_LOCK = threading.Lock()
_initialized = False


def _stats() -> Any:
    """Airflow's ``Stats``, set up from ``[metrics]`` if the running process has not done so.

    The task runner and Airflow's daemons initialise the Task SDK's Stats, but an in-process
    ``dag.test()`` and DAG processor callbacks may not, and an uninitialised Stats sends nothing.
    """
    global _initialized
    try:
        from airflow.sdk._shared.observability.metrics import stats as module
    except ImportError:  # older task SDKs
        try:
            from airflow.stats import Stats
        except ImportError:
            return None
        return Stats
    if not _initialized:
        with _INIT_LOCK:
            if getattr(module, "_factory", None) is None:
                from airflow.sdk.configuration import conf
                from airflow.sdk.observability.metrics import stats_utils

                module.initialize(
                    factory=stats_utils.get_stats_factory(),
                    export_legacy_names=conf.getboolean("metrics", "legacy_names_on", fallback=True),
                )
            _initialized = True
    return module.Stats


_legacy_on: bool | None = None


def _legacy_names_on() -> bool:
    global _legacy_on
    if _legacy_on is None:
        # read once per process, like Airflow does when it initialises Stats
        try:
            from airflow.sdk.configuration import conf

            _legacy_on = conf.getboolean("metrics", "legacy_names_on", fallback=True)
        except Exception:
            _legacy_on = True
    return _legacy_on


def _send(kind: MetricType, name: str, value: float, tags: Mapping[str, object]) -> None:
    try:
        spec = CATALOGUE.get(name)
        if spec is None or spec.type is not kind:
            # undocumented (or mistyped) metrics never leave the process; the catalogue test
            # catches such call sites, this keeps a typo from ever reaching a dashboard
            log.debug("not emitting %s %r: not in the metrics catalogue", kind.value, name)
            return
        # in catalogue order, so a datagram's tags read the same whoever sent them
        clean = {k: _tag_value(tags[k]) for k in spec.tags if tags.get(k) is not None}
        stats = _stats()
        if stats is None:
            return
        method = {_C: "incr", _G: "gauge", _T: "timing"}[kind]
        emit = getattr(stats, method)
        if spec.legacy_name is not None and _legacy_names_on():
            folded = spec.name_variables
            # untagged: a legacy name exists for backends that drop tags anyway
            emit(spec.legacy_name.format(**{k: clean.get(k, "unknown") for k in folded}), value)
        if clean:
            emit(name, value, tags=clean)
        else:
            emit(name, value)
    except Exception:
        # a broken logging handler must not escape either
        with contextlib.suppress(Exception):
            log.debug("metrics backend rejected %s", name, exc_info=True)


def count(name: str, n: int = 1, **tags: object) -> None:
    """Add ``n`` to the counter ``name``; never raises.

    :param name: a :data:`CATALOGUE` counter, e.g. ``"alerting.alerts.sent"``
    :param n: how much to add
    :param tags: the metric's tags (others are ignored; ``None`` values are left out)
    """
    _send(MetricType.COUNTER, name, n, tags)


def gauge(name: str, value: float, **tags: object) -> None:
    """Set the gauge ``name`` to ``value``; never raises.

    :param name: a :data:`CATALOGUE` gauge, e.g. ``"alerting.outbox.due"``
    :param value: the current value
    :param tags: the metric's tags
    """
    _send(MetricType.GAUGE, name, value, tags)


def timer(name: str, seconds: float, **tags: object) -> None:
    """Record a duration in the timer ``name`` (sent in milliseconds, as Airflow's are); never raises.

    :param name: a :data:`CATALOGUE` timer, e.g. ``"alerting.delivery.latency"``
    :param seconds: the duration in seconds
    :param tags: the metric's tags
    """
    try:
        milliseconds = float(seconds) * 1000.0
    except Exception:
        return
    _send(MetricType.TIMER, name, milliseconds, tags)


# --- call-site helpers: one line at each call site, all the tag logic here ------------------


def decision(entry: Any) -> None:
    """Count one recorded per-channel decision (a ``HistoryEntry``) as sent, failed or suppressed.

    :param entry: the history entry: ``delivered`` ``True`` is a delivery, ``False`` a failure,
        ``None`` a notification held back for ``entry.reason``
    """
    try:
        reason = entry.reason
        tags = {
            "channel": entry.channel,
            "severity": entry.severity,
            "dag_id": getattr(entry, "dag_id", None),
        }
        if entry.delivered is True:
            name = "alerting.alerts.sent"
        elif entry.delivered is False:
            name = "alerting.delivery.failures"
        else:
            name = "alerting.alerts.suppressed"
            if reason == "not_routed" and _OUTSIDE_HOURS_REASON in (entry.why or ""):
                reason = OUTSIDE_HOURS
        count(name, reason=reason, **tags)
    except Exception:
        with contextlib.suppress(Exception):
            log.debug("could not count a decision", exc_info=True)


def delivery_timed(channel: str, seconds: float, ok: bool) -> None:
    """Record how long delivering one notification to ``channel`` took, all attempts included.

    :param channel: the channel's name
    :param seconds: the time taken
    :param ok: whether it was delivered in the end
    """
    timer("alerting.delivery.latency", seconds, channel=channel, outcome="ok" if ok else "failed")


def alert_handled(outcome: Any) -> None:
    """Count one alert (an ``AlertOutcome``) as classified, and as escalated when it was.

    :param outcome: what the manager did with the alert
    """
    try:
        dag_id = outcome.alert.dag_id
        count(
            "alerting.alerts.classified",
            severity=outcome.severity.label,
            kind=outcome.alert.kind.value,
            dag_id=dag_id,
        )
        if outcome.escalation is not None:
            count("alerting.alerts.escalated", severity=outcome.escalation.to_severity.label, dag_id=dag_id)
    except Exception:
        with contextlib.suppress(Exception):
            log.debug("could not count an alert", exc_info=True)


def incident_event(event: str, incident: Any, dag_id: str | None = None) -> None:
    """Count an incident event, and time it when it ends a wait (acknowledged, resolved).

    :param event: ``opened``, ``raised``, ``acknowledged`` or ``resolved``
    :param incident: the incident (its ``severity`` and, for the last two, its durations)
    :param dag_id: the DAG whose failure caused the event, when there is one
    """
    try:
        severity = incident.severity.label
        count(f"alerting.incidents.{event}", severity=severity, dag_id=dag_id)
        took = {
            "acknowledged": ("time_to_acknowledge", "alerting.incidents.time_to_acknowledge"),
            "resolved": ("time_to_resolve", "alerting.incidents.time_to_resolve"),
        }.get(event)
        if took is not None:
            duration = getattr(incident, took[0])
            if duration is not None:
                timer(took[1], duration.total_seconds(), severity=severity)
    except Exception:
        with contextlib.suppress(Exception):
            log.debug("could not count an incident event", exc_info=True)


# --- the original positional API, kept for existing call sites ------------------------------


def incr(*parts: object, count: int = 1) -> None:
    """Increment ``alerting.<parts>`` (untagged; its name must be in :data:`CATALOGUE`); never raises.

    :param parts: name parts after ``alerting``, e.g. ``("outbox", "added")``
    :param count: how much to add
    """
    name = ""
    try:
        name = metric_name(*parts)
        value = count if isinstance(count, int) else 1
    except Exception:
        return
    _send(MetricType.COUNTER, name, value, {})


def timing(seconds: float, *parts: object) -> None:
    """Record a duration (seconds) as ``alerting.<parts>`` (a :data:`CATALOGUE` timer); never raises.

    :param seconds: the duration
    :param parts: name parts after ``alerting``
    """
    try:
        name = metric_name(*parts)
    except Exception:
        return
    timer(name, seconds)
